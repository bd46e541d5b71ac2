"""Query latency through the API with auth: hourly averages over a year of 100 sensors
at 5-minute resolution (~10.5M rows) in the embedded warehouse.

    .venv/bin/python bench/query_latency.py [--runs 50] [--path <chdb dir>]

The table is created by the operator's plan and provisioner; rows are generated
inside the engine (INSERT … SELECT FROM numbers()) and kept between runs. Every
request carries a freshly verified RS256 token; the API runs in-process (ASGI).
"""

from __future__ import annotations

import argparse
import json
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
    WarehouseProvisioner(lambda: client, embedded=True).apply(desired, "unused")  # also resets the TTL
    table = f"`{desired.database}`.`{desired.tables[0].name}`"
    if client.command(f"SELECT count() FROM {table}") == ROWS:
        return
    client.command(f"TRUNCATE TABLE {table}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
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
    with TestClient(app) as api:
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(3):
            response = api.get(url, params=params, headers=headers)
            assert response.status_code == 200, response.text
        assert len(response.json()["rows"]) == 8760, len(response.json()["rows"])
        timings = []
        for _ in range(args.runs):
            began = time.perf_counter()
            response = api.get(url, params=params, headers=headers)
            timings.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)]
    print(f"rows {ROWS:,}; {args.runs} requests of 8760 hourly averages (all {SENSORS} sensors, one year)")
    print(f"p50 {statistics.median(timings):.1f} ms  p95 {p95:.1f} ms  min {timings[0]:.1f} ms  "
          f"max {timings[-1]:.1f} ms")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")


if __name__ == "__main__":
    main()
