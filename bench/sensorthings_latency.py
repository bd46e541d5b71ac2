"""SensorThings latency against the REST API's equivalent, in the same run: 500 counters with
two fields every 15 minutes for the last 30 days (1.44M rows) in the embedded warehouse, open
data (no token, as Masterportal reads), the API in-process (ASGI).

    .venv/bin/python bench/sensorthings_latency.py [--runs 20] [--path <chdb dir>]

1. Masterportal's extent request: Things in a polygon with Locations and the latest Observation
   of every Datastream expanded, its first page (100 Things) and following @iot.nextLink until
   all 500 Things are read (5 pages) — against REST ``/observations`` of the last 15 minutes in
   the same bbox (one page of 500 rows).
2. Masterportal's 24-hour chart of one Datastream — against REST ``/observations`` of that
   sensor over 24 hours.

``--frost URL`` times the same request strings against a FROST-Server in the same run (the
side-by-side anchor; bench/frost_anchor.py builds, starts and fills one: when URL is that
anchor's, its Observations are first reloaded to end at the same minute as ours). FROST is
reached over HTTP on 127.0.0.1 with one keep-alive connection; our API in-process.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from urbanstack import warehouse as wh
from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.settings import Settings

SLUG, TOOL_NAME, DATASET = "benchtown", "zaehler", "counts"
SENSORS, STEP, DAYS = 500, 900, 30
POLYGON = "POLYGON ((8.0 51.0, 9.0 51.0, 9.0 52.5, 8.0 52.5, 8.0 51.0))"
TOOL = CityTool.model_validate({
    "metadata": {"name": TOOL_NAME},
    "spec": {"displayName": "Zähler", "version": "1.0.0", "owner": SLUG, "audience": "both",
             "datasets": [{"name": DATASET, "retentionDays": 3650, "fields": [
                 {"name": "pedestrians", "type": "UInt32", "unit": "persons"},
                 {"name": "temperature", "type": "Float64", "unit": "°C"}]}]}})
TOWN = Municipality.model_validate({
    "metadata": {"name": SLUG},
    "spec": {"displayName": "Benchtown", "ags": "05754008", "admins": ["ops@benchtown.example.org"],
             "tools": [{"name": TOOL_NAME}],
             "shares": [{"tool": TOOL_NAME, "dataset": DATASET, "public": True, "licence": "dl-de/zero-2-0"}]}})


def prepare(client, end: datetime) -> None:
    desired = plan(TOWN, [TOOL]).warehouse
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired, {})
    table = f"`{desired.database}`.`{desired.tables[0].name}`"
    rows = SENSORS * DAYS * 86_400 // STEP
    client.command(f"TRUNCATE TABLE {table}")
    began = time.perf_counter()
    start = (end - timedelta(days=DAYS)).strftime("%Y-%m-%d %H:%M:%S")
    client.command(f"""
        INSERT INTO {table} (event_id, source, sensor_id, observed_at, lon, lat, pedestrians, temperature)
        SELECT toString(number), 'bench', concat('s', leftPad(toString(number % {SENSORS}), 3, '0')),
               toDateTime64('{start}', 3, 'UTC') + toIntervalSecond(intDiv(number, {SENSORS}) * {STEP} + {STEP}),
               8.3 + (number % {SENSORS}) / 2000, 51.9 + (number % {SENSORS} % 7) / 100, number % 397,
               10 + 10 * sin(number / 8640)
        FROM numbers({rows})""", settings={"insert_deduplicate": 0})
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    print(f"inserted {rows:,} rows in {time.perf_counter() - began:.1f} s")


def timed(function, runs: int, cpu=time.process_time) -> tuple[list[float], float | None]:
    """Wall-clock samples in ms and the mean CPU time per request in ms (``cpu`` returns the
    seconds used so far by whatever serves the request, or None where that cannot be read)."""
    function()  # warm: caches, the sensor index, the first query plans
    samples = []
    cpu_before = cpu()
    for _ in range(runs):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000)
    cpu_after = cpu()
    return samples, None if cpu_before is None else (cpu_after - cpu_before) * 1000 / runs


def line(name: str, measured: tuple[list[float], float | None]) -> str:
    samples, cpu_ms = measured
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    cpu = "–" if cpu_ms is None else f"{cpu_ms:.1f} ms"
    return f"| {name} | {len(samples)} | {statistics.median(samples):.1f} ms | {p95:.1f} ms | {cpu} |"


def anchor_state(root: str) -> dict | None:
    """bench/frost_anchor.py's state when ``root`` is the FROST it started, else None."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import frost_anchor

    state = frost_anchor.home(frost_anchor.VERSION) / "run" / "state.json"
    if state.exists() and frost_anchor.json.loads(state.read_text())["url"] == root:
        return frost_anchor.json.loads(state.read_text())
    return None


def reload_frost(root: str, end: datetime) -> None:
    if anchor_state(root):
        import frost_anchor

        frost_anchor.load(frost_anchor.VERSION, end)
    else:
        print(f"{root} is not bench/frost_anchor.py's FROST: its data is timed as it is")


def server_cpu(state: dict | None):
    """CPU seconds of FROST's JVM and of every process of its PostgreSQL cluster (the postmaster and
    its backends), read from /proc; None for a FROST this bench did not start."""
    if state is None:
        return lambda: None
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> tuple[int, float]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid, utime + stime

    def total() -> float:
        seconds = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid, cpu = used(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if int(entry.name) in (state["tomcat_pid"], state["pg_pid"]) or ppid == state["pg_pid"]:
                seconds += cpu
        return seconds

    return total


def frost_results(root: str, first_page: str, runs: int) -> list[str]:
    """The same request strings against FROST-Server (nextLinks are followed as FROST writes them)."""
    cpu = server_cpu(anchor_state(root))
    with httpx.Client(timeout=120) as frost:
        def get(url: str) -> dict:
            response = frost.get(url if url.startswith("http") else root + url)
            assert response.status_code == 200, response.text[:300]
            return response.json()

        def extent_page() -> None:
            body = get(first_page)
            assert len(body["value"]) == 100 and all(len(s["Observations"]) == 1 for t in body["value"]
                                                     for s in t["Datastreams"])

        def extent() -> None:
            url, things = first_page, 0
            while url:
                body = get(url)
                things += len(body["value"])
                url = body.get("@iot.nextLink")
            assert things == SENSORS, things

        streams = get("/v1.1/Datastreams?$filter=name%20eq%20%27pedestrians%20%E2%80%93%20s042%27")["value"]
        chart_url = (f"/v1.1/Datastreams({streams[0]['@iot.id']})/Observations?$filter=(resultTime%20gt%20now()%20"
                     "sub%20duration%27PT24H%27)&$orderby=phenomenonTime%20asc")

        def chart() -> None:
            body = get(chart_url)
            assert len(body["value"]) == 96 and "@iot.nextLink" not in body, len(body["value"])

        return [line("FROST extent, first page: 100 Things, latest Observation expanded", timed(extent_page, runs, cpu)),
                line("FROST extent: 500 Things, latest Observation expanded (5 pages)", timed(extent, runs, cpu)),
                line("FROST 24-hour chart of one Datastream", timed(chart, runs, cpu))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", default=None)
    parser.add_argument("--frost", metavar="URL", default=None,
                        help="FROST-Server root (…/FROST-Server) to time the same requests against")
    args = parser.parse_args()
    client = wh.connect(f"chdb://{args.path or tempfile.mkdtemp(prefix='sta-bench-')}")
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    prepare(client, end)
    if args.frost:
        reload_frost(args.frost.rstrip("/"), end)
    catalogue = Catalogue([TOWN], [TOOL])
    app = create_app(Settings.from_env(), catalogue, client, keycloak_url="http://keycloak.invalid",
                     audience="{tenant}-api")
    ref = f"{SLUG}/{TOOL_NAME}/{DATASET}"
    with TestClient(app) as api:
        first_page = (f"/v1.1/Things?$filter=st_intersects(Locations/location,geography'{POLYGON}')"
                      "&$expand=Locations,Datastreams/Observations($orderby=phenomenonTime%20desc;$top=1)")

        def extent_page() -> None:
            body = api.get(first_page).json()
            assert len(body["value"]) == 100 and all(len(s["Observations"]) == 1 for t in body["value"]
                                                     for s in t["Datastreams"])

        def extent() -> None:
            url = first_page
            things = 0
            while url:
                response = api.get(url)
                assert response.status_code == 200, response.text[:300]
                body = response.json()
                things += len(body["value"])
                url = body.get("@iot.nextLink", "").replace("http://testserver", "")
            assert things == SENSORS, things

        def extent_rest() -> None:
            response = api.get(f"/api/v1/datasets/{ref}/observations", params={
                "bbox": "8.0,51.0,9.0,52.5", "from": (end - timedelta(minutes=14)).isoformat(),
                "to": (end + timedelta(minutes=1)).isoformat(), "limit": 10000})
            assert response.status_code == 200 and len(response.json()["rows"]) == SENSORS, response.text[:300]

        streams = api.get("/v1.1/Datastreams", params={"$filter": "name eq 'pedestrians – s042'"}).json()["value"]
        chart_url = (f"/v1.1/Datastreams({streams[0]['@iot.id']})/Observations?$filter=(resultTime%20gt%20now()%20"
                     "sub%20duration%27PT24H%27)&$orderby=phenomenonTime%20asc")

        def chart() -> None:
            body = api.get(chart_url).json()
            assert len(body["value"]) == 96 and "@iot.nextLink" not in body, len(body["value"])

        def chart_rest() -> None:
            response = api.get(f"/api/v1/datasets/{ref}/observations", params={
                "sensor_id": "s042", "from": (datetime.now(timezone.utc) - timedelta(hours=24)).isoformat(),
                "field": "pedestrians"})
            assert response.status_code == 200 and len(response.json()["rows"]) == 96, response.text[:300]

        results = [line("STA extent, first page: 100 Things, latest Observation expanded", timed(extent_page, args.runs)),
                   line("STA extent: 500 Things, latest Observation expanded (5 pages)", timed(extent, args.runs)),
                   line("REST: observations of the last 15 min in the bbox", timed(extent_rest, args.runs)),
                   line("STA 24-hour chart of one Datastream", timed(chart, args.runs)),
                   line("REST: 24 hours of one sensor", timed(chart_rest, args.runs))]
        if args.frost:
            results += frost_results(args.frost.rstrip("/"), first_page, args.runs)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| request | runs | p50 | p95 | CPU per request |\n|---|---|---|---|---|")
    print("\n".join(results))


if __name__ == "__main__":
    main()
