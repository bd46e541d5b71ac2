"""The Data Hub part of ``make demo``: sample pedestrian counts and temperatures
go through Kafka and the sink into Gütersloh's warehouse, and come back as one
joined query through REST and through GraphQL, with a Keycloak token."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
import time
from pathlib import Path

import httpx
import kubernetes
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from urbanstack import warehouse
from urbanstack.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_SAMPLE = ROOT.parent / "shared" / "fixtures" / "pedestrian" / "besucherzahlen-moers-juli-2022-stundlich.csv"
OWN_SAMPLE = ROOT / "tests" / "fixtures" / "connectors" / "hystreet_export_dst_latin1.csv"
TOOL = "passantenfrequenz-wetter"
# The samples are from 2022 and 2024: a retention of ten years keeps them.
DEMO_RETENTION_DAYS = 3650


def _sample() -> tuple[Path, str]:
    if SHARED_SAMPLE.exists():
        return SHARED_SAMPLE, "hystreet export of Steinstraße, Moers, July 2022 (../shared/fixtures)"
    return OWN_SAMPLE, "the project's own small hystreet export (../shared/fixtures is absent)"


def _secret(core: kubernetes.client.CoreV1Api, municipality: dict) -> dict[str, str]:
    namespace, name = municipality["status"]["endpoints"]["credentialsSecret"].split("/")
    data = core.read_namespaced_secret(name, namespace).data
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _viewer_token(settings: Settings, municipality: dict) -> str:
    """A throwaway gov-viewer of the municipality, signed in with the password grant.

    The tenant's clients refuse the password grant (it skips MFA); the demo turns
    it on for the Gov Hub client for one request and off again right after — the
    operator would undo it at its next drift check anyway."""
    slug = municipality["metadata"]["name"]
    names = municipality["status"]["names"]
    user, password = settings.keycloak_admin()
    admin = KeycloakAdmin(connection=KeycloakOpenIDConnection(
        server_url=settings.keycloak_url, username=user, password=password, realm_name=names["realm"],
        user_realm_name="master"))
    username = f"demo-viewer@{slug}.example.org"
    viewer_password = secrets.token_urlsafe(18)
    user_id = admin.get_user_id(username)
    if user_id is None:
        user_id = admin.create_user({"username": username, "email": username, "enabled": True,
                                     "emailVerified": True, "firstName": "Demo", "lastName": "Viewer"})
    admin.set_user_password(user_id, viewer_password, temporary=False)
    api = admin.get_client_id(f"{slug}-api")
    admin.assign_client_role(user_id, api, [admin.get_client_role(api, "gov-viewer")])
    if names.get("organization"):
        org = next(o for o in admin.get_organizations({"q": f"slug:{names['organization']}"})
                   if o["alias"] == names["organization"])
        try:
            admin.organization_user_add(user_id, org["id"])
        except Exception:  # noqa: BLE001 - already a member
            pass
    hub = f"{slug}-gov-hub"
    hub_id = admin.get_client_id(hub)
    admin.update_client(hub_id, {"clientId": hub, "directAccessGrantsEnabled": True})
    try:
        response = httpx.post(f"{settings.keycloak_url}/realms/{names['realm']}/protocol/openid-connect/token",
                              data={"grant_type": "password", "client_id": hub, "username": username,
                                    "password": viewer_password, "scope": "openid"}, timeout=10)
        response.raise_for_status()
        return response.json()["access_token"]
    finally:
        admin.update_client(hub_id, {"clientId": hub, "directAccessGrantsEnabled": False})


def _local_day(instant: str) -> str:
    """Buckets come back as the UTC instant of local midnight; show the local day."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(ZoneInfo("Europe/Berlin"))
    return moment.strftime("%a %d.%m.%Y")


def _count(client, database: str, table: str) -> int:
    return client.command(f"SELECT count() FROM `{database}`.`{table}`")


def run(settings: Settings, custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api,
        slug: str = "guetersloh", port: int = 8080) -> int:
    import uvicorn

    from urbanstack.runtime.api import Catalogue, create_app
    from urbanstack.runtime.connectors import hystreet
    from urbanstack.runtime.producer import Publisher
    from urbanstack.runtime.sink import SinkConfig, run_sink
    from urbanstack.serve import refresh_catalogue

    group, version = "urbanstack.io", "v1alpha1"
    municipality = custom.get_cluster_custom_object(group, version, "municipalities", slug)
    if (municipality["spec"].get("retentionDays") or 0) < DEMO_RETENTION_DAYS:
        print(f"\n{slug}: retentionDays → {DEMO_RETENTION_DAYS}, so the sample years fit (the operator changes "
              "topic retention and table TTL)")
        custom.patch_cluster_custom_object(group, version, "municipalities", slug,
                                           {"spec": {"retentionDays": DEMO_RETENTION_DAYS}})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            municipality = custom.get_cluster_custom_object(group, version, "municipalities", slug)
            status = municipality.get("status") or {}
            if status.get("observedGeneration") == municipality["metadata"]["generation"] and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
                break
            time.sleep(1)
    client = warehouse.shared(settings.warehouse_url)
    stop = threading.Event()
    # Only this tenant's topics: the demo should not wait on other tenants' backlog.
    config = dataclasses.replace(SinkConfig.from_env(), topic_pattern=rf"^{slug}\.[a-z0-9-]+\.[a-z0-9_]+$")
    sink = threading.Thread(target=run_sink, args=(settings, stop, config), kwargs={"warehouse_client": client},
                            name="sink", daemon=True)
    sink.start()
    catalogue = Catalogue()
    refresh_catalogue(catalogue, custom)
    app = create_app(settings, catalogue, client, keycloak_url=settings.keycloak_url, audience="{tenant}-api")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    api = threading.Thread(target=server.run, name="api", daemon=True)
    api.start()
    try:
        path, label = _sample()
        data = path.read_bytes()
        counts = hystreet.parse_csv_export(data, slug)
        temperatures = hystreet.parse_csv_weather(data, slug)
        credentials = _secret(core, municipality)
        tenant_kafka = settings.kafka_config(credentials["kafka-username"], credentials["kafka-password"])
        with Publisher(tenant_kafka) as publisher:
            for result in (counts, temperatures):
                publisher.publish(result, tenant=slug, tool=TOOL)
        print(f"\npublished {len(counts.events)} pedestrian counts and {len(temperatures.events)} temperatures "
              f"({len(counts.rejected) + len(temperatures.rejected)} rejected records to {slug}.dlq) from {label}, "
              f"as Kafka user {credentials['kafka-username']}")
        database = municipality["status"]["names"]["database"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = (_count(client, database, "passantenfrequenz_wetter__pedestrian_counts"),
                      _count(client, database, "passantenfrequenz_wetter__weather"))
            if stored[0] >= len(counts.events) and stored[1] >= len(temperatures.events):
                break
            time.sleep(0.5)
        print(f"the sink stored {stored[0]} + {stored[1]} rows in ClickHouse database {database}")

        token = _viewer_token(settings, municipality)
        first = min(e.observed_at for e in counts.events).strftime("%Y-%m-%dT00:00:00Z")
        last_day = max(e.observed_at for e in counts.events)
        end = last_day.strftime("%Y-%m-%dT23:59:59Z")
        left, right = f"{slug}/{TOOL}/pedestrian_counts", f"{slug}/{TOOL}/weather"
        base = f"http://127.0.0.1:{port}"
        while not server.started:
            time.sleep(0.1)
        rest = httpx.get(f"{base}/api/v1/join", headers={"Authorization": f"Bearer {token}"}, timeout=30, params={
            "left": left, "left_field": "pedestrians", "left_aggregate": "sum",
            "right": right, "right_field": "temperature", "right_aggregate": ["min", "max"],
            "bucket": "day", "from": first, "to": end, "timezone": "Europe/Berlin", "limit": 10})
        rest.raise_for_status()
        print("\nREST  GET /api/v1/join (pedestrians per day × temperature, Europe/Berlin), first days:")
        print(f"  {'day':14} {'pedestrians':>11} {'min °C':>7} {'max °C':>7}")
        for row in rest.json()["rows"][:7]:
            values = [*row["left"].values(), *row["right"].values()]
            print(f"  {_local_day(row['bucket']):14} {values[0]:11.0f} {values[1]:7.1f} {values[2]:7.1f}")
        query = """query($left: String!, $right: String!, $start: DateTime!, $end: DateTime!) {
          join(left: {dataset: {owner: "%s", tool: "%s", name: $left}, fields: ["pedestrians"], aggregates: [sum]},
               right: {dataset: {owner: "%s", tool: "%s", name: $right}, fields: ["temperature"], aggregates: [avg]},
               bucket: day, start: $start, end: $end, timezone: "Europe/Berlin", limit: 3) {
            points { bucket left { name value } right { name value } } } }""" % (slug, TOOL, slug, TOOL)
        graphql = httpx.post(f"{base}/graphql", headers={"Authorization": f"Bearer {token}"}, timeout=30, json={
            "query": query, "variables": {"left": "pedestrian_counts", "right": "weather", "start": first,
                                          "end": end}})
        graphql.raise_for_status()
        body = graphql.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL answered with errors: {body['errors']}")
        print("\nGraphQL join (same data, average temperature):")
        for point in body["data"]["join"]["points"]:
            print(f"  {_local_day(point['bucket'])}  pedestrians {point['left'][0]['value']:.0f}  "
                  f"avg {point['right'][0]['value']:.1f} °C")
        anonymous = httpx.get(f"{base}/api/v1/datasets/{right}/series", timeout=30,
                              params={"field": "temperature", "bucket": "day", "from": first, "to": end})
        print(f"\nwithout a token, Gütersloh's weather (not open data) answers HTTP {anonymous.status_code}; "
              f"its pedestrian counts are open data (DL-DE Zero 2.0): HTTP "
              f"{httpx.get(f'{base}/api/v1/datasets/{left}/series', timeout=30, params={'field': 'pedestrians', 'bucket': 'day', 'from': first, 'to': end}).status_code}")
        return 0
    finally:
        server.should_exit = True
        stop.set()
        api.join(10)
        sink.join(30)
