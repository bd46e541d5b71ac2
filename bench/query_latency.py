"""Query latency through the API with auth: hourly averages over a year of 100 sensors
at 5-minute resolution (~10.5M rows) in the embedded warehouse.

    .venv/bin/python bench/query_latency.py [--runs 50] [--table-runs 10] [--path <chdb dir>]

The table, its hourly rollup and the view between them are created by the
operator's plan and provisioner; rows are generated inside the engine (INSERT …
SELECT FROM numbers()) and kept between runs (a data path from before rollups is
backfilled once by the provisioner). Every request carries a freshly verified
RS256 token; the API runs in-process (ASGI). The same request is then timed with
the engine's rollups switched off (the table answers, as before rollups), and a
p95 query, which always reads the table; ``--table-runs 0`` skips both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import uuid

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from urbanstack import warehouse as wh
from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue, TokenVerifier, create_app
from urbanstack.settings import Settings

SLUG = "benchtown"
SENSORS = 100
STEP_SECONDS = 300
YEAR_SECONDS = 365 * 86_400
ROWS = SENSORS * YEAR_SECONDS // STEP_SECONDS
KEYCLOAK = "http://keycloak.invalid"

TOOL = CityTool.model_validate({
    "metadata": {"name": "klima"},
    "spec": {"displayName": "Klima", "version": "1.0.0", "owner": SLUG, "audience": "gov",
             "datasets": [{"name": "air", "retentionDays": 3650, "fields": [{"name": "temperature", "type": "Float64", "unit": "°C"}]}]}})
TOWN = Municipality.model_validate({
    "metadata": {"name": SLUG},
    "spec": {"displayName": "Benchtown", "ags": "05754008", "admins": ["ops@benchtown.example.org"],
             "tools": [{"name": "klima"}]}})


def prepare(client) -> None:
    desired = plan(TOWN, [TOOL]).warehouse
    began = time.perf_counter()
    actions = ensure(WarehouseProvisioner(lambda: client, embedded=True), desired, {})  # also resets the TTL
    if any(action.startswith("backfilled") for action in actions):
        print(f"backfilled the hourly rollup in {time.perf_counter() - began:.1f} s")
    table = f"`{desired.database}`.`{desired.tables[0].name}`"
    rollup = f"`{desired.database}`.`{desired.tables[0].rollup.name}`"
    if (client.command(f"SELECT count() FROM {table}") == ROWS
            and client.command(f"SELECT sum(rows) FROM {rollup}") == ROWS):
        return
    client.command(f"TRUNCATE TABLE {table}")
    client.command(f"TRUNCATE TABLE {rollup}")  # the view fills it again from the insert below
    began = time.perf_counter()
    client.command(f"""
        INSERT INTO {table} (event_id, source, sensor_id, observed_at, lon, lat, temperature)
        SELECT toString(number), 'bench', concat('s', leftPad(toString(number % {SENSORS}), 3, '0')),
               toDateTime64('2025-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(intDiv(number, {SENSORS}) * {STEP_SECONDS}),
               8.38 + (number % {SENSORS}) / 1000, 51.90, 10 + 10 * sin(number / 8640)
        FROM numbers({ROWS})""", settings={"insert_deduplicate": 0})  # a re-run inserts the same blocks again
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    print(f"inserted {ROWS:,} rows in {time.perf_counter() - began:.1f} s")


def verifier() -> tuple[TokenVerifier, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "use": "sig"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [jwk]}))
    now = int(time.time())
    token = jwt.encode({"iss": f"{KEYCLOAK}/realms/urbanstack", "sub": str(uuid.uuid4()), "aud": f"{SLUG}-api",
                        "organization": [SLUG], "typ": "Bearer", "azp": f"{SLUG}-gov-hub",
                        "resource_access": {f"{SLUG}-api": {"roles": ["gov-viewer"]}}, "iat": now,
                        "exp": now + 3600}, key, algorithm="RS256", headers={"kid": "k1"})
    return TokenVerifier(KEYCLOAK, "{tenant}-api", http_client=httpx.Client(transport=transport)), token


def same_answer(table: list[dict], rollup: list[dict]) -> bool:
    """Equal rows; averages of these irrational readings may differ in the last bits, because the
    two plans add the same numbers in a different order."""
    return len(table) == len(rollup) and all(
        a["bucket"] == b["bucket"] and a["events"] == b["events"]
        and all(math.isclose(a["values"][k], b["values"][k], rel_tol=1e-12) for k in a["values"])
        for a, b in zip(table, rollup))


def report(what: str, timings: list[float]) -> None:
    p95 = timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)]
    print(what)
    print(f"  p50 {statistics.median(timings):.1f} ms  p95 {p95:.1f} ms  min {timings[0]:.1f} ms  "
          f"max {timings[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--table-runs", type=int, default=10, help="requests timed without rollups (0: skip)")
    parser.add_argument("--path", default=str(Settings.from_env().state_dir / "bench-query-warehouse"))
    args = parser.parse_args()
    client = wh.connect(f"chdb://{args.path}")
    prepare(client)
    token_verifier, token = verifier()
    app = create_app(Settings.from_env(), Catalogue([TOWN], [TOOL]), client, keycloak_url=KEYCLOAK,
                     audience="{tenant}-api", verifier=token_verifier)
    params = {"field": "temperature", "aggregate": "avg", "bucket": "hour", "from": "2025-01-01T00:00:00Z",
              "to": "2026-01-01T00:00:00Z", "limit": 10_000}
    url = f"/api/v1/datasets/{SLUG}/klima/air/series"
    engine = app.state.engine
    with TestClient(app) as api:
        headers = {"Authorization": f"Bearer {token}"}

        def timed(runs: int, request_params: dict) -> tuple[list[float], dict]:
            body = {}
            for _ in range(3):
                response = api.get(url, params=request_params, headers=headers)
                assert response.status_code == 200, response.text
                body = response.json()
            timings = []
            for _ in range(runs):
                began = time.perf_counter()
                response = api.get(url, params=request_params, headers=headers)
                timings.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200
            return sorted(timings), body

        timings, fast = timed(args.runs, params)
        assert len(fast["rows"]) == 8760, len(fast["rows"])
        assert engine.plans["rollup"] >= args.runs and not engine.plans["table"], dict(engine.plans)
        report(f"{args.runs} requests of 8760 hourly averages (all {SENSORS} sensors, one year), from the rollup",
               timings)
        if args.table_runs:
            engine.rollups = False
            timings, slow = timed(args.table_runs, params)
            assert same_answer(slow["rows"], fast["rows"]), "rollup and table disagree"
            report(f"{args.table_runs} requests of the same, from the table (rollups off)", timings)
            engine.rollups = True
            timings, _ = timed(args.table_runs, {**params, "aggregate": ["avg", "p95"]})
            report(f"{args.table_runs} requests of hourly averages and 95th percentiles (always the table)", timings)
    print(f"rows {ROWS:,}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")


if __name__ == "__main__":
    main()
