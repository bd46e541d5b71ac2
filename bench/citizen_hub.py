"""Citizen Hub: anonymous start and catalogue pages under concurrent clients (p50/p95), and the
download throughput of a year of readings, next to the bare API call in the same run.

A throwaway world in a chDB path of this process (Gütersloh with open pedestrian counts),
the web app ``urbanstack serve`` builds (API + Gov Hub + Citizen Hub behind PathDispatch) on
uvicorn on 127.0.0.1, and an httpx client pool in another process.

    .venv/bin/python bench/citizen_hub.py --clients 100 --requests 2000 --rows 1000000

The bare API call is ``/api/v1/datasets/…/export`` (refused above its export limit of
100,000 rows), so it is timed on the first 100,000 rows; the portal streams the whole year.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import platform as host
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _serve(rows: int, port_queue) -> None:
    import numpy as np
    import uvicorn

    from citizen_world import PEGEL, TOOL, CitizenWorld  # noqa: F401
    from urbanstack import serve, warehouse
    from urbanstack.operator import naming
    from urbanstack.runtime.api import create_app
    from urbanstack.runtime.store import open_store, upgrade
    from urbanstack.settings import Settings

    state = tempfile.mkdtemp(prefix="citizen-bench-")
    client = warehouse.connect(f"chdb://{state}/warehouse")
    world = CitizenWorld(client)
    # A year of readings: `rows` pedestrian counts over 365 days from 2025-03-01, in chunks.
    start = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
    step = 365 * 86400 / rows
    chunk = 200_000
    table = f"{naming.database(world.gue)}.{naming.table(TOOL, 'pedestrian_counts')}"
    for low in range(0, rows, chunk):
        n = min(chunk, rows - low)
        idx = np.arange(low, low + n)
        client.insert(table, [[f"y-{i}" for i in idx], ["bench"] * n, [f"s-{i % 20}" for i in idx],
                              [start + dt.timedelta(seconds=float(i * step)) for i in idx], [8.38] * n, [51.9] * n,
                              (idx % 500).tolist(), [f"s-{i % 20}" for i in idx]],
                      column_names=["event_id", "source", "sensor_id", "observed_at", "lon", "lat", "pedestrians",
                                    "location_name"], column_oriented=True)
    url = f"sqlite:///{state}/metadata.sqlite3"
    upgrade(url)
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": state,
                                  "URBANSTACK_MUNICIPALITY_DIRECTORY": str(ROOT / "tests/fixtures/municipalities.derived.csv"),
                                  "URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR": "1000000"})
    api = create_app(settings, world.catalogue, client, keycloak_url="http://127.0.0.1:9", audience="{tenant}-api")
    app = serve.PathDispatch(api, serve.web_app(settings, world.catalogue, api, open_store(url)))
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_queue.put((sock.getsockname()[1], world.gue, TOOL))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])


async def _pages(base: str, paths: list[str], clients: int, requests: int) -> dict[str, list[float]]:
    import httpx

    times: dict[str, list[float]] = {p: [] for p in paths}
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(paths[i % len(paths)])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def worker():
            while not queue.empty():
                path = queue.get_nowait()
                began = time.perf_counter()
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code)
                times[path].append(time.perf_counter() - began)
        await asyncio.gather(*(worker() for _ in range(clients)))
    return times


def _download(base: str, path: str) -> tuple[int, float, int]:
    import httpx

    began, size, lines = time.perf_counter(), 0, 0
    with httpx.stream("GET", base + path, timeout=600) as response:
        assert response.status_code == 200, (path, response.status_code, response.read()[:300])
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, time.perf_counter() - began, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(args.rows, ports), daemon=True)
    server.start()
    port, slug, tool = ports.get(timeout=1800)
    base = f"http://127.0.0.1:{port}"
    time.sleep(1)
    print(f"machine: {host.processor() or host.machine()}, {os.cpu_count()} CPUs, Python {host.python_version()}")
    paths = [f"/{slug}/", f"/{slug}/data/"]
    asyncio.run(_pages(base, paths, 10, 50))   # warm-up (fills the TTL cache)
    for path, samples in asyncio.run(_pages(base, paths, args.clients, args.requests)).items():
        samples.sort()
        print(f"{path:40s} n={len(samples)} p50={statistics.median(samples) * 1000:.1f} ms "
              f"p95={samples[int(len(samples) * .95) - 1] * 1000:.1f} ms")
    size, seconds, lines = _download(base, f"/{slug}/data/{tool}/pedestrian_counts/download?format=csv")
    print(f"portal download, whole year: {lines - 1} rows, {size / 1e6:.1f} MB in {seconds:.1f} s = "
          f"{size / 1e6 / seconds:.1f} MB/s")
    first = "2025-03-01T00:00:00Z"
    end = (dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=365 * 99_000 / args.rows)).isoformat()
    size, seconds, lines = _download(base, f"/api/v1/datasets/{slug}/{tool}/pedestrian_counts/export?format=csv"
                                           f"&from={first}&to={end.replace('+00:00', 'Z')}")
    print(f"bare API export (its limit: 100,000 rows): {lines - 1} rows, {size / 1e6:.1f} MB in {seconds:.1f} s = "
          f"{size / 1e6 / seconds:.1f} MB/s")
    size, seconds, lines = _download(base, f"/{slug}/data/{tool}/pedestrian_counts/download?format=csv"
                                           f"&from=2025-03-01&to={(dt.date(2025, 3, 1) + dt.timedelta(days=int(365 * 99_000 / args.rows) - 1)).isoformat()}")
    print(f"portal download, same range as the API call: {lines - 1} rows, {size / 1e6:.1f} MB in {seconds:.1f} s = "
          f"{size / 1e6 / seconds:.1f} MB/s")
    server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
