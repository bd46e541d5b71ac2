"""Worst-case cost of one API request: wall time, peak memory of the serving process and how
long other callers wait meanwhile (GraphQL and REST export; issue #17).

    .venv/bin/python bench/request_bounds.py [--path <chdb dir>] [--skip N ...]

The API runs under uvicorn in this process with the embedded warehouse, as ``urbanstack
serve`` does, so the peak resident memory (VmHWM, reset before each request) is the serving
process's, chDB included. While each request runs, a second client keeps asking for
``/healthz`` and for a small REST series; their slowest answers show whether the request
holds up everybody else. The dataset: 100 sensors, one reading a minute for 7 days
(1,008,000 rows) with a number and a 500-character text per row. Requests carry a
verified RS256 token (bench/query_latency.py's verifier).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import threading
import time

import httpx
from query_latency import verifier

from urbanstack import warehouse as wh
from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.serve import http_server
from urbanstack.settings import Settings

SLUG = "benchtown"  # the municipality of query_latency's token
SENSORS = 100
ROWS = SENSORS * 7 * 1440
KEYCLOAK = "http://keycloak.invalid"
TOOL = CityTool.model_validate({
    "metadata": {"name": "bounds"},
    "spec": {"displayName": "Bounds", "version": "1.0.0", "owner": SLUG, "audience": "gov",
             "datasets": [{"name": "air", "retentionDays": 3650, "fields": [
                 {"name": "temperature", "type": "Float64", "unit": "°C"}, {"name": "note", "type": "String"}]}]}})
TOWN = Municipality.model_validate({
    "metadata": {"name": SLUG},
    "spec": {"displayName": "Benchtown", "ags": "05754008", "admins": ["ops@benchtown.example.org"],
             "tools": [{"name": "bounds"}], "plan": {"queriesPerHour": 1_000_000}}})
DATASET = f'{{owner: "{SLUG}", tool: "bounds", name: "air"}}'
SERIES = f"/api/v1/datasets/{SLUG}/bounds/air/series"
EXPORT = f"/api/v1/datasets/{SLUG}/bounds/air/export"
WEEK = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-08T00:00:00Z"}


def prepare(client) -> None:
    desired = plan(TOWN, [TOOL]).warehouse
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired, {})
    table = f"`{desired.database}`.`{desired.tables[0].name}`"
    if client.command(f"SELECT count() FROM {table}") == ROWS:
        return
    client.command(f"TRUNCATE TABLE {table}")
    client.command(f"""
        INSERT INTO {table} (event_id, source, sensor_id, observed_at, lon, lat, temperature, note)
        SELECT toString(number), 'bench', concat('s', leftPad(toString(number % {SENSORS}), 3, '0')),
               toDateTime64('2025-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(intDiv(number, {SENSORS}) * 60),
               8.38 + (number % {SENSORS}) / 1000, 51.90, 10 + 10 * sin(number / 8640),
               concat(toString(number), ' ', repeat('x', 500))
        FROM numbers({ROWS})""", settings={"insert_deduplicate": 0})
    client.command(f"OPTIMIZE TABLE {table} FINAL")


def _status(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(name)


def _aliases(count: int, field: str) -> str:
    return "{" + " ".join(f"a{i}: {field}" for i in range(count)) + "}"


def _series(count: int, big: bool) -> str:
    """``count`` aliased series: small ones (a day of hourly averages, the defaults) or the biggest one
    field may ask for (10,000 rows of minute × sensor buckets with 9 aggregates each)."""
    if not big:
        return _aliases(count, f'series(dataset: {DATASET}, fields: ["temperature"], start: "2025-01-01T00:00:00Z", '
                               f'end: "2025-01-02T00:00:00Z") {{ points {{ bucket values {{ value }} }} }}')
    aggregates = "[count, sum, avg, min, max, p50, p90, p95, p99]"
    return _aliases(count, f'series(dataset: {DATASET}, fields: ["temperature"], aggregates: {aggregates}, '
                           f'bucket: minute, bySensor: true, limit: 10000, start: "2025-01-01T00:00:00Z", '
                           f'end: "2025-01-08T00:00:00Z") {{ points {{ bucket sensorId events values {{ value }} }} }}')


def measure(base: str, headers: dict, name: str, request) -> None:
    """Runs ``request(client)`` while another client polls; prints time, peak memory, slowest poll."""
    done = threading.Event()
    slowest = {"/healthz": 0.0, "series": 0.0}

    def poll():
        with httpx.Client(base_url=base, headers=headers, timeout=120) as other:
            while not done.is_set():
                for what, url, params in (("/healthz", "/healthz", None),
                                          ("series", SERIES, {**WEEK, "field": "temperature", "bucket": "day"})):
                    began = time.perf_counter()
                    other.get(url, params=params).raise_for_status()
                    slowest[what] = max(slowest[what], time.perf_counter() - began)

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM) to the current resident size
    baseline = _status("VmRSS")
    poller = threading.Thread(target=poll)
    poller.start()
    began = time.perf_counter()
    with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
        try:
            outcome = request(client)
        except httpx.TransportError as error:
            outcome = f"connection closed ({type(error).__name__})"
    elapsed = time.perf_counter() - began
    done.set()
    poller.join()
    peak = _status("VmHWM") - baseline
    print(f"{name:58} {outcome:34} {elapsed * 1000:9.0f} ms  peak +{peak / 2**20:6.0f} MiB  "
          f"slowest /healthz {slowest['/healthz'] * 1000:6.0f} ms, REST series {slowest['series'] * 1000:6.0f} ms")


def _graphql(document: str):
    def send(client: httpx.Client) -> str:
        response = client.post("/graphql", json={"query": document})
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        errors = body.get("errors") or ([body["error"]] if "error" in body else [])
        data = body.get("data") or {}
        return f"{response.status_code} " + (errors[0]["message"][:30] if errors else f"{len(data)} fields")
    return send


def _download(url: str, params: dict):
    def send(client: httpx.Client) -> str:
        size = 0
        with client.stream("GET", url, params=params) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
        return f"{response.status_code} {size / 2**20:.1f} MiB"
    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=str(Settings.from_env().state_dir / "bench-bounds-warehouse"))
    parser.add_argument("--skip", type=int, nargs="*", default=[], help="numbers of requests not to send")
    args = parser.parse_args()
    client = wh.connect(f"chdb://{args.path}")
    prepare(client)
    token_verifier, token = verifier()
    settings = Settings.from_env()
    app = create_app(settings, Catalogue([TOWN], [TOOL]), client, keycloak_url=KEYCLOAK, audience="{tenant}-api",
                     verifier=token_verifier)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = http_server(app, settings, "127.0.0.1", port)
    server.config.access_log = False
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    export = {**WEEK, "sensor_id": [f"s{i:03d}" for i in range(15)]}  # 151,200 rows: over the export limit
    smaller = {**export, "sensor_id": export["sensor_id"][:9]}        # 90,720 rows
    scenarios = [
        ("GraphQL 150,000 __typename aliases (2.3 MB body)", _graphql(_aliases(150_000, "__typename"))),
        ("GraphQL 50,000 __typename aliases (0.8 MB body)", _graphql(_aliases(50_000, "__typename"))),
        ("GraphQL 700 aliased small series", _graphql(_series(700, big=False))),
        ("GraphQL 20 aliased small series (cost 20)", _graphql(_series(20, big=False))),
        ("GraphQL 2 aliased big series (cost 18)", _graphql(_series(2, big=True))),
        ("GraphQL 20 aliased big series (cost 180)", _graphql(_series(20, big=True))),
        ("REST export CSV, 90,720 rows with 500-char text", _download(EXPORT, {**smaller, "format": "csv"})),
        ("REST export GeoJSON, 90,720 rows with 500-char text", _download(EXPORT, {**smaller, "format": "geojson"})),
        ("REST export CSV, 151,200 rows (over the row limit)", _download(EXPORT, {**export, "format": "csv"})),
        ("REST series minute × sensor, 9 aggregates, 10,000 rows",
         _download(SERIES, {**WEEK, "field": "temperature", "bucket": "minute", "by_sensor": "true", "limit": 10_000,
                            "aggregate": ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"]})),
    ]
    for number, (name, request) in enumerate(scenarios, 1):
        if number not in args.skip:
            measure(base, headers, f"{number:2}. {name}", request)
    server.should_exit = True
    thread.join(10)
    print(f"rows {ROWS:,}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
