"""The data and the measuring that ``sensorthings_latency.py`` and ``features_latency.py`` share: 500
open-data counters with two fields every 15 minutes for the last 30 days (1.44M rows) in an embedded
warehouse, the API in-process (ASGI, no token), and the requests both compare against (SensorThings'
Masterportal extent request, REST ``/observations`` of the last 15 minutes in the same bbox)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from fastapi import FastAPI

from urbanstack import warehouse as wh
from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.settings import Settings

SLUG, TOOL_NAME, DATASET = "benchtown", "zaehler", "counts"
REF = f"{SLUG}/{TOOL_NAME}/{DATASET}"
SENSORS, STEP, DAYS = 500, 900, 30
BBOX = "8.0,51.0,9.0,52.5"
POLYGON = "POLYGON ((8.0 51.0, 9.0 51.0, 9.0 52.5, 8.0 52.5, 8.0 51.0))"
# Masterportal's extent request: Things in a polygon, Locations and the latest Observation expanded
EXTENT = (f"/v1.1/Things?$filter=st_intersects(Locations/location,geography'{POLYGON}')"
          "&$expand=Locations,Datastreams/Observations($orderby=phenomenonTime%20desc;$top=1)")
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


@dataclass(frozen=True)
class Bench:
    runs: int
    end: datetime     # the newest reading's time
    app: FastAPI
    args: argparse.Namespace


def bench(description: str, prefix: str, options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
          ) -> Bench:
    """Reads ``--runs`` and ``--path`` (the chDB folder; default a fresh temporary one) and the
    script's own ``options``, fills the warehouse and returns the API app over it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", default=None)
    options(parser)
    args = parser.parse_args()
    client = wh.connect(f"chdb://{args.path or tempfile.mkdtemp(prefix=prefix)}")
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    prepare(client, end)
    app = create_app(Settings.from_env(), Catalogue([TOWN], [TOOL]), client, keycloak_url="http://keycloak.invalid",
                     audience="{tenant}-api")
    return Bench(args.runs, end, app, args)


def sta_extent(api) -> None:
    """All 500 Things of the extent request, following @iot.nextLink (5 pages)."""
    url = EXTENT
    things = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        things += len(body["value"])
        url = body.get("@iot.nextLink", "").replace("http://testserver", "")
    assert things == SENSORS, things


def rest_latest(api, end: datetime) -> None:
    """REST ``/observations`` of the last 15 minutes in the bbox: one reading of every sensor."""
    response = api.get(f"/api/v1/datasets/{REF}/observations", params={
        "bbox": BBOX, "from": (end - timedelta(minutes=14)).isoformat(),
        "to": (end + timedelta(minutes=1)).isoformat(), "limit": 10000})
    assert response.status_code == 200 and len(response.json()["rows"]) == SENSORS, response.text[:300]


def timed(function, runs: int, cpu=time.process_time) -> tuple[list[float], float | None]:
    """Wall-clock samples in ms and the mean CPU time per request in ms (``cpu`` returns the
    seconds used so far by whatever serves the request, or None where that cannot be read; by
    default this process, which includes the in-process test client)."""
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


def print_table(results: list[str]) -> None:
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| request | runs | p50 | p95 | CPU per request |\n|---|---|---|---|---|")
    print("\n".join(results))
