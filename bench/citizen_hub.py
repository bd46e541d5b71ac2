"""Citizen Hub: anonymous start and catalogue pages under concurrent clients (p50/p95), and the
download throughput of a year of readings, next to the bare API in the same run.

The web app ``urbanstack serve`` builds (API + Gov Hub + Citizen Hub behind PathDispatch) runs
on uvicorn on 127.0.0.1 in a child process, over a chDB path that is kept between runs
(``--state``): Gütersloh's open pedestrian counts get a year of ``--rows`` readings, generated
inside chDB with ``INSERT … SELECT … FROM numbers()`` the first time only.

Downloads are read with ``curl | wc`` (httpx when curl is missing). Load generator: ``hey`` (Go, keep-alive connections; ``go install github.com/rakyll/hey@latest``)
when it is on PATH or in ~/go/bin, else a lean asyncio keep-alive client on raw sockets (Python,
so it competes for the same cores; the output says which). Requests carrying a ``Cookie`` header
bypass the page cache (it only keeps anonymous answers), which gives the uncached figure in the
same run.

    .venv/bin/python bench/citizen_hub.py --clients 100 --requests 5000 --rows 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import platform as host
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
YEAR_START = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)


def _serve(rows: int, state: str, queue) -> None:
    import uvicorn

    import citizen_world
    from urbanstack import serve, warehouse
    from urbanstack.operator import naming
    from urbanstack.runtime.api import create_app
    from urbanstack.runtime.store import open_store, upgrade
    from urbanstack.settings import Settings

    Path(state).mkdir(parents=True, exist_ok=True)
    client = warehouse.connect(f"chdb://{state}/warehouse")
    # the same municipality slugs every run, so the year generated once is found again
    citizen_world.uuid.uuid4 = lambda: uuid.UUID("00000000-0000-4000-8000-00000000be0c")
    world = citizen_world.CitizenWorld(client)
    table = f"`{naming.database(world.gue)}`.`{naming.table(citizen_world.TOOL, 'pedestrian_counts')}`"
    year = ("observed_at >= toDateTime64('2025-03-01 00:00:00', 3, 'UTC') "
            "AND observed_at < toDateTime64('2026-03-01 00:00:00', 3, 'UTC')")
    have = client.query(f"SELECT count() FROM {table} WHERE {year}").result_rows[0][0]
    if have != rows:
        began = time.perf_counter()
        client.command(f"ALTER TABLE {table} DELETE WHERE {year} SETTINGS mutations_sync = 1")
        step_ms = 365 * 86_400_000 // rows
        client.command(
            f"INSERT INTO {table} (event_id, source, sensor_id, observed_at, lon, lat, pedestrians, location_name) "
            f"SELECT concat('y-', toString(number)), 'bench', concat('s-', toString(number % 20)), "
            f"toDateTime64('2025-03-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(number * {step_ms}), "
            f"8.38 + (number % 20) / 1000, 51.9 + (number % 20) / 1000, toUInt32(number % 500), "
            f"concat('Zähler ', toString(number % 20)) FROM numbers({rows})",
            settings={"max_insert_block_size": 1_000_000})
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        print(f"generated {rows:,} readings in {time.perf_counter() - began:.0f} s", flush=True)
    expected = client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]   # the year + the demo's 1,920
    url = f"sqlite:///{state}/metadata.sqlite3"
    upgrade(url)
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": state,
                                  "URBANSTACK_MUNICIPALITY_DIRECTORY": str(ROOT / "tests/fixtures/municipalities.derived.csv"),
                                  "URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR": "100000000"})
    api = create_app(settings, world.catalogue, client, keycloak_url="http://127.0.0.1:9", audience="{tenant}-api")
    app = serve.PathDispatch(api, serve.web_app(settings, world.catalogue, api, open_store(url)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    queue.put((port, world.gue, citizen_world.TOOL, expected, os.getpid()))
    # host and port as `urbanstack serve` binds (asyncio then sets TCP_NODELAY on every connection;
    # a socket made by hand with proto 0 does not get it: 40 ms Nagle/delayed-ACK stalls)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")).run()


def _hey() -> str | None:
    return shutil.which("hey") or next((str(p) for p in [Path.home() / "go/bin/hey"] if p.exists()), None)


def _hey_run(hey: str, url: str, clients: int, requests: int, headers: list[str]) -> dict[str, float]:
    args = [hey, "-c", str(clients), "-n", str(requests)]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=900).stdout
    figures = {}
    for name, pattern in (("p50", r"50%+ in ([\d.]+) secs"), ("p95", r"95%+ in ([\d.]+) secs"),
                          ("p99", r"99%+ in ([\d.]+) secs"), ("rps", r"Requests/sec:\s+([\d.]+)")):
        match = re.search(pattern, out)
        figures[name] = float(match.group(1)) * (1 if name == "rps" else 1000) if match else float("nan")
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    figures["statuses"] = ", ".join(f"{code}×{count}" for code, count in statuses)
    return figures


async def _raw_client(port: int, path: str, clients: int, requests: int, headers: list[str]) -> dict[str, float]:
    """Keep-alive GETs on raw sockets: read the head, then Content-Length bytes."""
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
    times: list[float] = []
    remaining = [requests]
    statuses: dict[str, int] = {}

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while remaining[0] > 0:
            remaining[0] -= 1
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            times.append(time.perf_counter() - began)
            code = head[9:12].decode()
            statuses[code] = statuses.get(code, 0) + 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    times.sort()
    return {"p50": statistics.median(times) * 1000, "p95": times[int(len(times) * .95) - 1] * 1000,
            "p99": times[int(len(times) * .99) - 1] * 1000, "rps": len(times) / elapsed,
            "statuses": ", ".join(f"{c}×{n}" for c, n in sorted(statuses.items()))}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _download(base: str, path: str, pid: int) -> dict:
    import httpx

    samples: list[float] = []
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            samples.append(_rss_mb(pid))

    rss_before = _rss_mb(pid)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    began, size, lines = time.perf_counter(), 0, 0
    try:
        curl = shutil.which("curl")
        if curl:   # C on both ends of the pipe: the client takes little of the shared cores
            shell = f"set -o pipefail; {curl} -sS --fail -o - '{base + path}' | wc -lc"
            counted = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=900, check=True)
            lines, size = (int(v) for v in counted.stdout.split()[:2])
        else:
            with httpx.stream("GET", base + path, timeout=900) as response:
                assert response.status_code == 200, (path, response.status_code, response.read()[:300])
                for chunk in response.iter_raw(1 << 20):
                    size += len(chunk)
                    lines += chunk.count(b"\n")
    finally:
        done.set()
        watcher.join()
    seconds = time.perf_counter() - began
    return {"size": size, "seconds": seconds, "lines": lines, "mbps": size / 1e6 / seconds,
            "rss_before": rss_before, "rss_max": max(samples or [rss_before]), "rss_after": _rss_mb(pid)}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--state", default=str(Path.home() / ".cache" / "urbanstack-bench" / "citizen-hub"))
    parser.add_argument("--generator", choices=["auto", "hey", "python"], default="auto")
    parser.add_argument("--skip-downloads", action="store_true")
    parser.add_argument("--skip-pages", action="store_true")
    args = parser.parse_args()
    queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(args.rows, args.state, queue), daemon=True)
    server.start()
    port, slug, tool, expected, pid = queue.get(timeout=3600)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    hey = _hey() if args.generator in ("auto", "hey") else None
    print(f"machine: {host.processor() or host.machine()}, {os.cpu_count()} CPUs, Python {host.python_version()}, "
          f"load average {_load()} at start")
    print(f"load generator: {'hey (' + hey + ')' if hey else 'Python asyncio raw sockets'}, "
          f"{args.clients} clients, {args.requests} requests per line, keep-alive")

    def measure(path: str, headers: list[str]) -> dict:
        if hey:
            return _hey_run(hey, base + path, args.clients, args.requests, headers)
        return asyncio.run(_raw_client(port, path, args.clients, args.requests, headers))

    lines = [("bare API: /healthz", "/healthz", []),
             ("bare API: /api/v1/datasets", "/api/v1/datasets", []),
             ("start page, uncached (Cookie)", f"/{slug}/", ["Cookie: bench=1"]),
             ("catalogue, uncached (Cookie)", f"/{slug}/data/", ["Cookie: bench=1"]),
             ("start page, anonymous", f"/{slug}/", []),
             ("catalogue, anonymous", f"/{slug}/data/", []),
             ("start page, If-None-Match (304)", f"/{slug}/", None)]
    import httpx
    etag = httpx.get(f"{base}/{slug}/").headers["etag"]
    if not args.skip_pages:
        measure(f"/{slug}/", [])     # warm-up
    for name, path, headers in ([] if args.skip_pages else lines):
        figures = measure(path, headers if headers is not None else [f"If-None-Match: {etag}"])
        print(f"{name:36s} p50 {figures['p50']:7.1f} ms  p95 {figures['p95']:7.1f} ms  p99 {figures['p99']:7.1f} ms  "
              f"{figures['rps']:7.0f} req/s  [{figures['statuses']}]  load {_load()}")
    if args.skip_downloads:
        server.terminate()
        return 0
    print(f"warehouse: {expected:,} readings in the dataset (count with FINAL)")
    download = f"/{slug}/data/{tool}/pedestrian_counts/download"
    days = max(1, int(365 * 99_000 / args.rows))
    last_day = (dt.date(2025, 3, 1) + dt.timedelta(days=days - 1)).isoformat()
    api_to = (dt.datetime(2025, 3, 1) + dt.timedelta(days=days) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    runs = [("portal CSV, whole dataset", f"{download}?format=csv", expected),
            ("portal JSON, whole dataset", f"{download}?format=json", None),
            (f"bare API export CSV, {days} days (Python rows)",
             f"/api/v1/datasets/{slug}/{tool}/pedestrian_counts/export?format=csv&from=2025-02-28T23:00:00Z&to={api_to}",
             None),
            (f"portal CSV, same {days} days", f"{download}?format=csv&from=2025-03-01&to={last_day}", None),
            (f"portal GeoJSON, same {days} days (Python rows)",
             f"{download}?format=geojson&from=2025-03-01&to={last_day}", None)]
    for name, path, rows in runs:
        result = _download(base, path, pid)
        check = ""
        if rows is not None:
            got = result["lines"] - 1
            check = f", rows {got:,} {'=' if got == rows else '!='} warehouse {rows:,}"
        print(f"{name:44s} {result['size'] / 1e6:8.1f} MB in {result['seconds']:6.1f} s = {result['mbps']:6.1f} MB/s"
              f"{check}; server RSS {result['rss_before']:.0f} → max {result['rss_max']:.0f} → "
              f"{result['rss_after']:.0f} MB; load {_load()}")
    server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
