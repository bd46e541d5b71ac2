"""Push ingest against the real platform: Keycloak tokens (a throwaway realm), webhook
keys the operator's provisioner wrote into each tenant's ``urbanstack-ingest`` Secret,
read by the runtime's own Kubernetes identity, and Kafka with each tenant's own SCRAM
user. Two tenants, A and B, both with the ``raumklima`` LoRaWAN tool."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from ingest_harness import (LORAWAN_TOOL, deprovision, free_port, ingest_secret, manifest, memory_kib, provision,
                            push_service, read_events, runtime_credentials, tool)
from sink_harness import end_offsets, headers, read_topic

from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.runtime.events import ObservationBatch
from urbanstack.runtime.api import Catalogue, TokenVerifier
from urbanstack.runtime.ingest.push import MAX_RECORDS, create_push_app
from urbanstack.runtime.ingest.tenants import DailyQuota, TenantPublishers
from urbanstack.runtime.producer import DLQ_RECORDS_PER_CALL, REPORT_MARGIN

pytestmark = pytest.mark.platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "connectors"
TTS = (FIXTURES / "tts_v3_uplink_decoded.json").read_bytes()
TOOL = "raumklima"
ROUTE = f"/ingest/v1/{TOOL}/lorawan"
B_EVENTS_PER_DAY = 5


@pytest.fixture(scope="module")
def admin_config(platform):
    return dev_kafka.admin_config(platform)


@pytest.fixture(scope="module")
def tenants(platform, kube_api, admin_config):
    tools = [tool(LORAWAN_TOOL)]
    a = provision(kube_api, admin_config, manifest("ia", [TOOL]), tools)
    b = None
    try:
        b = provision(kube_api, admin_config, manifest("ib", [TOOL], plan={"eventsPerDay": B_EVENTS_PER_DAY}), tools)
        yield a, b, tools
    finally:
        for tenant in (a, b):
            if tenant is not None:
                deprovision(kube_api, admin_config, tenant)


@pytest.fixture(scope="module")
def realm(platform, keycloak_admin, tenants):
    """Tokens shaped like the identity provisioner's: issued to a hub client of the
    tenant (``azp``), with its organization (hard-coded claim here), the tenant's API
    audience and roles as client roles of ``<slug>-api``."""
    a, b, _ = tenants
    name = f"ingesttest-{uuid.uuid4().hex[:8]}"
    keycloak_admin.create_realm({"realm": name, "enabled": True}, skip_exists=False)
    keycloak_admin.change_current_realm(name)
    try:
        passwords = {username: uuid.uuid4().hex for username in ("editor", "viewer")}
        users = {}
        for username in passwords:
            users[username] = keycloak_admin.create_user({
                "username": username, "email": f"{username}@example.org", "firstName": "Erika",
                "lastName": "Muster", "enabled": True, "emailVerified": True,
                "credentials": [{"type": "password", "value": passwords[username], "temporary": False}]})
        secrets = {}
        for tenant in (a, b):
            api = f"{tenant.slug}-api"
            keycloak_admin.create_client({"clientId": api, "enabled": True, "publicClient": False,
                                          "bearerOnly": False, "standardFlowEnabled": False})
            api_id = keycloak_admin.get_client_id(api)
            for role in ("gov-editor", "gov-viewer"):
                keycloak_admin.create_client_role(api_id, {"name": role})
            keycloak_admin.assign_client_role(users["editor"], api_id, [keycloak_admin.get_client_role(api_id, "gov-editor")])
            keycloak_admin.assign_client_role(users["viewer"], api_id, [keycloak_admin.get_client_role(api_id, "gov-viewer")])
            hubs = {f"{tenant.slug}-gov-hub": {}}
            if tenant is a:  # this hub's tokens live one second
                hubs[f"{tenant.slug}-citizen-hub"] = {"access.token.lifespan": "1"}
            for client_id, attributes in hubs.items():
                mappers = [
                    {"name": "organization", "protocol": "openid-connect",
                     "protocolMapper": "oidc-hardcoded-claim-mapper",
                     "config": {"claim.name": "organization", "claim.value": tenant.slug, "jsonType.label": "String",
                                "access.token.claim": "true"}},
                    {"name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                     "config": {"included.client.audience": api, "access.token.claim": "true"}}]
                keycloak_admin.create_client({"clientId": client_id, "enabled": True, "publicClient": False,
                                              "directAccessGrantsEnabled": True, "standardFlowEnabled": False,
                                              "attributes": attributes, "protocolMappers": mappers})
                secrets[client_id] = keycloak_admin.get_client_secrets(keycloak_admin.get_client_id(client_id))["value"]

        def token(client_id: str, username: str = "editor") -> str:
            client_id = client_id.replace("hub-a", f"{a.slug}-gov-hub").replace("hub-b", f"{b.slug}-gov-hub")
            client_id = client_id.replace("short-a", f"{a.slug}-citizen-hub")
            response = httpx.post(f"{platform.keycloak_url}/realms/{name}/protocol/openid-connect/token", data={
                "grant_type": "password", "client_id": client_id, "client_secret": secrets[client_id],
                "username": username, "password": passwords[username]})
            assert response.status_code == 200, response.text
            return response.json()["access_token"]

        yield name, token
    finally:
        keycloak_admin.change_current_realm("master")
        keycloak_admin.delete_realm(name)


@pytest.fixture(scope="module")
def service(platform, tenants, realm):
    a, b, tools = tenants
    name, _ = realm
    credentials = runtime_credentials(platform)
    quota = DailyQuota()
    publishers = TenantPublishers(platform, credentials)
    verifier = TokenVerifier(platform.keycloak_url, "{tenant}-api", shared_realms=(name,), leeway=0)
    app = create_push_app(Catalogue([a.municipality, b.municipality], tools), publishers, credentials,
                          verifier=verifier, quota=quota)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, quota
    publishers.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def offsets(admin_config, *tenants) -> dict[str, dict[int, int]]:
    return {topic: end_offsets(admin_config, topic)
            for tenant in tenants for topic in (tenant.topic(TOOL, "lorawan"), tenant.dlq)}


def uplink(device: str) -> bytes:
    body = json.loads(TTS)
    body["end_device_ids"]["device_id"] = device
    return json.dumps(body).encode()


def test_a_tenant_token_pushes_tts_uplinks_to_its_own_topic(service, tenants, realm, admin_config):
    client, _ = service
    a, b, _ = tenants
    _, token = realm
    device = f"dev-{uuid.uuid4().hex[:6]}"
    before = offsets(admin_config, b)
    response = client.post(f"{ROUTE}/ttn-uplink", content=uplink(device), headers=bearer(token("hub-a")))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1 and response.json()["tenant"] == a.slug
    events = read_events(admin_config, a.topic(TOOL, "lorawan"), 1)
    mine = [e for e in events if e["sensor_id"] == device]
    assert len(mine) == 1
    assert mine[0]["tenant"] == a.slug and mine[0]["fields"]["temperature"] == 21.5
    assert offsets(admin_config, b) == before  # nothing went to the other tenant


def test_the_webhook_key_identifies_the_tenant(service, tenants, kube_api, admin_config):
    client, _ = service
    a, _, _ = tenants
    key = ingest_secret(kube_api, a.slug)["webhook-key"]
    assert key.startswith(f"{a.slug}.")
    device = f"key-{uuid.uuid4().hex[:6]}"
    response = client.post(f"{ROUTE}/ttn-uplink", content=uplink(device), headers={"X-Ingest-Key": key})
    assert response.status_code == 202, response.text
    events = read_events(admin_config, a.topic(TOOL, "lorawan"), 2)
    assert [e["tenant"] for e in events if e["sensor_id"] == device] == [a.slug]


def test_another_tenant_cannot_write_into_a_topic(service, tenants, realm, kube_api, admin_config):
    client, _ = service
    a, b, _ = tenants
    _, token = realm
    before = offsets(admin_config, a)
    # B's token on the same route writes to B's topic: the URL cannot choose the tenant.
    response = client.post(f"{ROUTE}/ttn-uplink", content=uplink("from-b"), headers=bearer(token("hub-b")))
    assert response.status_code == 202 and response.json()["tenant"] == b.slug
    assert response.json()["topic"] == b.topic(TOOL, "lorawan")
    # B's key with A's name in front of it is not A's key.
    b_secret = ingest_secret(kube_api, b.slug)["webhook-key"].split(".", 1)[1]
    forged = client.post(f"{ROUTE}/ttn-uplink", content=uplink("forged"),
                         headers={"X-Ingest-Key": f"{a.slug}.{b_secret}"})
    assert forged.status_code == 401
    # An observation naming tenant A, pushed with B's key, is rejected, not published for A.
    record = {"tenant": a.slug, "source": "test", "sensor_id": "x", "observed_at": "2024-10-27T01:00:00Z",
              "fields": {"temperature": 1.0}}
    smuggled = client.post(f"{ROUTE}/observations", content=json.dumps(record),
                           headers={"X-Ingest-Key": ingest_secret(kube_api, b.slug)["webhook-key"]})
    assert smuggled.status_code == 202 and smuggled.json()["accepted"] == 0 and smuggled.json()["rejected"] == 1
    assert "credential belongs to" in smuggled.json()["rejections"][0]["reason"]
    assert offsets(admin_config, a) == before


def test_forged_expired_and_wrong_credentials_are_refused_without_publishing(service, tenants, realm,
                                                                             kube_api, admin_config):
    client, _ = service
    a, b, _ = tenants
    name, token = realm
    before = offsets(admin_config, a, b)
    short = token("short-a")  # this client's tokens live one second
    header, payload, signature = token("hub-a").split(".")
    tampered = f"{header}.{payload}.{signature[:-6]}AAAAAA"
    claims = jwt.decode(token("hub-a"), options={"verify_signature": False})
    from cryptography.hazmat.primitives.asymmetric import rsa
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    self_signed = jwt.encode({**claims, "exp": int(time.time()) + 600}, own_key, algorithm="RS256",
                             headers={"kid": jwt.get_unverified_header(token("hub-a"))["kid"]})
    wait_until_expired(short)
    for headers_, why in ((bearer(tampered), "signature"), (bearer(self_signed), "signature"),
                          (bearer(short), "expired"), ({"X-Ingest-Key": f"{a.slug}.{'x' * 43}"}, "webhook key"),
                          ({"X-Ingest-Key": "not-a-key"}, "webhook key"), ({}, "Bearer")):
        response = client.post(f"{ROUTE}/ttn-uplink", content=uplink("refused"), headers=headers_)
        assert response.status_code == 401, (why, response.text)
        assert why in response.json()["error"]["message"]
    assert offsets(admin_config, a, b) == before


def wait_until_expired(token: str) -> None:
    """Until the clock has passed the token's ``exp`` (the verifier runs with no leeway):
    the condition itself, read from the token, instead of a guessed pause."""
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert expires - time.time() < 30, "the short-lived client's tokens should live about a second"
    while time.time() <= expires:
        time.sleep(0.05)


def test_a_viewer_may_not_write(service, realm):
    client, _ = service
    _, token = realm
    response = client.post(f"{ROUTE}/ttn-uplink", content=uplink("viewer"), headers=bearer(token("hub-a", "viewer")))
    assert response.status_code == 403 and "gov-editor" in response.json()["error"]["message"]


def test_tools_and_datasets_must_belong_to_the_tenant(service, realm):
    client, _ = service
    _, token = realm
    missing_tool = client.post("/ingest/v1/pegel-warnung/water_levels/observations", content=b"{}",
                               headers=bearer(token("hub-a")))
    assert missing_tool.status_code == 404 and "not enabled" in missing_tool.json()["error"]["message"]
    missing_dataset = client.post(f"/ingest/v1/{TOOL}/weather/observations", content=b"{}",
                                  headers=bearer(token("hub-a")))
    assert missing_dataset.status_code == 404 and "no dataset" in missing_dataset.json()["error"]["message"]


def test_malformed_records_go_to_the_dlq_with_a_reason(service, tenants, realm, admin_config):
    client, _ = service
    a, _, _ = tenants
    _, token = realm
    dlq_before = sum(end_offsets(admin_config, a.dlq).values())
    marker = uuid.uuid4().hex[:8]
    lines = [
        {"source": "test", "sensor_id": f"ok-{marker}", "observed_at": "2024-10-27T01:00:00Z",
         "fields": {"temperature": 20.5}, "units": {"temperature": "°C"}},
        {"source": "test", "sensor_id": f"naive-{marker}", "observed_at": "2024-10-27T01:00:00",
         "fields": {"temperature": 20.5}},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    response = client.post(f"{ROUTE}/observations", content=body, headers=bearer(token("hub-a")))
    assert response.status_code == 202, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 2)
    no_payload = json.loads(TTS)
    no_payload["uplink_message"].pop("decoded_payload")
    response = client.post(f"{ROUTE}/ttn-uplink", content=json.dumps(no_payload), headers=bearer(token("hub-a")))
    assert (response.json()["accepted"], response.json()["rejected"]) == (0, 1)
    dead = read_topic(admin_config, a.dlq, dlq_before + 3)[dlq_before:]
    reasons = [headers(m)["error"] for m in dead]
    assert len(dead) == 3 and all(headers(m)["stage"] == "connector" for m in dead)
    assert any("no time zone" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert any("payload formatter" in r for r in reasons)
    assert any(f"naive-{marker}".encode() in m.value() for m in dead)


def test_the_daily_quota_answers_429_and_publishes_nothing(service, tenants, realm, admin_config):
    client, quota = service
    _, b, _ = tenants
    _, token = realm
    left = B_EVENTS_PER_DAY - quota.used(b.slug)
    records = [{"source": "test", "sensor_id": f"q{i}", "observed_at": "2024-10-27T01:00:00Z",
                "fields": {"temperature": float(i)}} for i in range(left + 1)]
    before = offsets(admin_config, b)
    response = client.post(f"{ROUTE}/observations", content=json.dumps(records), headers=bearer(token("hub-b")))
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "eventsPerDay" in response.json()["error"]["message"]
    assert offsets(admin_config, b) == before
    response = client.post(f"{ROUTE}/observations", content=json.dumps(records[:left]),
                           headers=bearer(token("hub-b")))
    assert response.status_code == 202 and response.json()["accepted"] == left


def test_kafka_unreachable_is_503_and_nothing_is_counted(platform, tenants, realm):
    """A producer whose broker does not answer (nothing listens on the port): 503 with
    Retry-After, and the quota reservation is given back."""
    a, b, tools = tenants
    name, token = realm
    credentials = runtime_credentials(platform)
    quota = DailyQuota()
    publishers = TenantPublishers(platform, credentials, metadata_timeout=2,
                                  extra_config={"bootstrap.servers": f"127.0.0.1:{free_port()}",
                                                "message.timeout.ms": 3000})
    app = create_push_app(Catalogue([a.municipality, b.municipality], tools), publishers, credentials,
                          verifier=TokenVerifier(platform.keycloak_url, "{tenant}-api", shared_realms=(name,)),
                          quota=quota)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(f"{ROUTE}/ttn-uplink", content=uplink("outage"), headers=bearer(token("hub-a")))
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] and "send the same request again" in response.json()["error"]["message"]
    assert quota.used(a.slug) == 0


def test_a_spreadsheet_is_previewed_then_imported(service, tenants, realm, admin_config):
    """The project's own Gütersloh-style CSV (Windows-1252, title rows, German numbers);
    its columns are mapped onto the LoRaWAN dataset only to exercise the route."""
    client, _ = service
    a, _, _ = tenants
    _, token = realm
    data = (FIXTURES / "upload_guetersloh_cp1252.csv").read_bytes()
    before = offsets(admin_config, a)
    preview = client.post(f"{ROUTE}/upload/preview", params={"filename": "jahrbuch.csv"}, content=data,
                          headers=bearer(token("hub-a")))
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert (shown["encoding"], shown["header_row"], shown["data_start_row"]) == ("cp1252", 3, 4)
    assert "temperature" in shown["dataset_fields"]
    assert {c["name"]: c["unit"] for c in shown["columns"]}["Fläche (km²)"] == "km²"
    assert offsets(admin_config, a) == before  # the preview stored nothing
    told = client.post(f"{ROUTE}/upload/preview", params={"filename": "jahrbuch.csv", "header_row": 3},
                       content=data, headers=bearer(token("hub-a")))
    assert told.status_code == 200 and (told.json()["header_row"], told.json()["data_start_row"]) == (3, 4)
    outside = client.post(f"{ROUTE}/upload/preview", params={"filename": "jahrbuch.csv", "header_row": 999},
                          content=data, headers=bearer(token("hub-a")))
    assert outside.status_code == 422 and "header_row 999 is out of range" in outside.json()["error"]["message"]
    bad = client.post(f"{ROUTE}/upload", params={"field": "Bogus", "sensor_column": "Stadtteil",
                                                 "timestamp_column": "Stichtag"},
                      content=data, headers=bearer(token("hub-a")))
    assert bad.status_code == 422 and "no column 'Bogus'" in bad.json()["error"]["message"]
    imported = client.post(f"{ROUTE}/upload", params={"field": "Fläche (km²)=humidity", "sensor_column": "Stadtteil",
                                                      "timestamp_column": "Stichtag", "filename": "jahrbuch.csv"},
                           content=data, headers=bearer(token("hub-a")))
    assert imported.status_code == 202, imported.text
    assert (imported.json()["accepted"], imported.json()["rejected"]) == (4, 1)
    events = [e for e in read_events(admin_config, a.topic(TOOL, "lorawan"), 4) if e["source"] == "upload"]
    assert {e["sensor_id"]: e["fields"]["humidity"] for e in events}["Innenstadt"] == 12.45


def test_a_columnar_batch_is_published_whole_or_refused_whole(service, tenants, realm, admin_config):
    client, _ = service
    a, b, _ = tenants
    _, token = realm
    topic = a.topic(TOOL, "lorawan")
    before = sum(end_offsets(admin_config, topic).values())
    marker = uuid.uuid4().hex[:8]
    batch = {"v": 2, "source": "bulk", "units": {"temperature": "°C"},
             "sensor_id": [f"b-{marker}-{i % 3}" for i in range(30)],
             "observed_at": [f"2024-10-27T01:{i:02d}:00Z" for i in range(30)],
             "fields": {"temperature": [20.0 + i / 10 for i in range(30)]}}
    response = client.post(f"{ROUTE}/observations", content=json.dumps(batch), headers=bearer(token("hub-a")))
    assert response.status_code == 202, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (30, 0)
    messages = read_topic(admin_config, topic, 1)
    rows = [event for m in messages if m.offset() >= 0
            for event in (ObservationBatch.from_dict(json.loads(m.value())).observations()
                          if json.loads(m.value()).get("v") == 2 else [])
            if event.sensor_id.startswith(f"b-{marker}")]
    assert len(rows) == 30 and {e.tenant for e in rows} == {a.slug}

    # One bad row refuses the whole batch with its column and row; nothing more is published.
    after = sum(end_offsets(admin_config, topic).values())
    assert after > before
    broken = {**batch, "observed_at": batch["observed_at"][:7] + ["2024-10-27 01:07"] + batch["observed_at"][8:]}
    response = client.post(f"{ROUTE}/observations", content=json.dumps(broken), headers=bearer(token("hub-a")))
    assert response.status_code == 422
    assert "observed_at[7]" in response.json()["error"]["message"]
    # A batch naming another municipality is refused: the tenant comes from the credential.
    response = client.post(f"{ROUTE}/observations", content=json.dumps({**batch, "tenant": b.slug}),
                           headers=bearer(token("hub-a")))
    assert response.status_code == 422 and b.slug in response.json()["error"]["message"]
    assert sum(end_offsets(admin_config, topic).values()) == after


def test_an_uplink_without_decoded_payload_is_decoded_by_the_pinned_codec(service, tenants, realm, admin_config):
    """A Milesight EM300-TH frame (channel 01 battery 92 %, 03 temperature 0x0134 = 30.8 °C,
    04 humidity 0x65 = 50.5 %), no payload formatter in TTS: `?codec=` decodes it."""
    import base64

    client, _ = service
    a, _, _ = tenants
    _, token = realm
    device = f"em300-{uuid.uuid4().hex[:8]}"
    body = json.loads(uplink(device))
    body["uplink_message"].pop("decoded_payload", None)
    body["uplink_message"]["f_port"] = 85
    body["uplink_message"]["frm_payload"] = base64.b64encode(bytes.fromhex("01755c03673401046865")).decode()
    unknown = client.post(f"{ROUTE}/ttn-uplink", params={"codec": "acme-9000"}, content=json.dumps(body),
                          headers=bearer(token("hub-a")))
    assert unknown.status_code == 422 and "milesight-em300-th" in unknown.json()["error"]["message"]
    response = client.post(f"{ROUTE}/ttn-uplink", params={"codec": "milesight-em300-th"}, content=json.dumps(body),
                           headers=bearer(token("hub-a")))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    mine = [e for e in read_events(admin_config, a.topic(TOOL, "lorawan"), 1) if e["sensor_id"] == device]
    assert len(mine) == 1
    assert (mine[0]["fields"]["temperature"], mine[0]["fields"]["humidity"]) == (30.8, 50.5)
    assert mine[0]["units"]["temperature"] == "°C"


# Bounded work per upload (issue 17 §1) and uploads that never store wrong numbers silently (issue 9 §1).

def _memory_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")))


def _peak_growth_mb(send) -> tuple[float, Any]:
    """Run ``send`` (the app runs in this process) and return how far the resident set peaked
    above where it was: writing 5 to clear_refs resets the peak (VmHWM) to the current size."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kb("VmRSS")
    result = send()
    return (_memory_kb("VmHWM") - before) / 1024, result


UPLOAD_GROWTH_MB = 200


def test_workbook_bombs_are_refused_within_bounded_memory(service, tenants, kube_api, admin_config):
    """A webhook key is enough to send them. Before the bounds, the merged range grew the
    process by gigabytes and the 4 million cells by 1.3 GB."""
    from workbooks import cell_bomb, merge_bomb

    client, _ = service
    a, _, _ = tenants
    key = {"X-Ingest-Key": ingest_secret(kube_api, a.slug)["webhook-key"]}
    before = offsets(admin_config, a)
    for bomb, limit in ((merge_bomb(), "at most 100,000 merged cells are read per sheet"),
                        (cell_bomb(), "at most 100-fold is read")):
        for route, params in (("upload/preview", {"filename": "x.xlsx"}),
                              ("upload", {"filename": "x.xlsx", "field": "column 1", "sensor_id": "s",
                                          "reference_date": "2024-01-01"})):
            grown, response = _peak_growth_mb(lambda: client.post(f"{ROUTE}/{route}", params=params, content=bomb,
                                                                  headers=key))
            assert response.status_code == 413, response.text
            assert response.json()["error"]["code"] == "too_large" and limit in response.json()["error"]["message"]
            assert grown < UPLOAD_GROWTH_MB, (route, limit, grown)
    assert offsets(admin_config, a) == before


def test_a_large_csv_preview_reads_only_its_head(service, tenants, kube_api, shared_fixtures):
    """A valid 50 MB CSV: the preview used to parse all of it (1.1 GB)."""
    client, _ = service
    a, _, _ = tenants
    june = shared_fixtures / "pedestrian" / "besucherzahlen-moers-juni-2022-stundlich.csv"
    lines = june.read_bytes().split(b"\r\n")
    body = b"\r\n".join(lines[1:])
    data = lines[0] + b"\r\n" + body * (50 * 1024 * 1024 // len(body))
    grown, response = _peak_growth_mb(lambda: client.post(
        f"{ROUTE}/upload/preview", params={"filename": "big.csv"}, content=data,
        headers={"X-Ingest-Key": ingest_secret(kube_api, a.slug)["webhook-key"]}))
    assert response.status_code == 200, response.text
    assert (response.json()["rows_read"], response.json()["complete"]) == (1000, False)
    assert grown < UPLOAD_GROWTH_MB, grown
    too_big = client.post(f"{ROUTE}/upload/preview", content=(data[:1024 * 1024] for _ in range(51)),
                          headers={"X-Ingest-Key": ingest_secret(kube_api, a.slug)["webhook-key"]})
    assert too_big.status_code == 413 and "the most accepted per upload" in too_big.json()["error"]["message"]


def test_uploads_say_what_is_wrong_with_a_file(service, realm, shared_fixtures):
    client, _ = service
    _, token = realm
    june = (shared_fixtures / "pedestrian" / "besucherzahlen-moers-juni-2022-stundlich.csv").read_bytes()
    header = june.split(b"\r\n")[0] + b"\r\n"
    for data, code in ((b"", "empty_file"), (header, "header_only"), (bytes(range(256)) * 40, "not_text")):
        response = client.post(f"{ROUTE}/upload/preview", content=data, headers=bearer(token("hub-a")))
        assert response.status_code == 422 and response.json()["error"]["code"] == code, response.text
    unicode = client.post(f"{ROUTE}/upload/preview", content=june.decode("cp1252").encode("utf-16"),
                          headers=bearer(token("hub-a")))
    assert unicode.status_code == 200 and unicode.json()["encoding"] == "utf-16"
    assert unicode.json()["rows"][0]["Lage"] == "Steinstraße, Moers"
    wrong = client.post(f"{ROUTE}/upload/preview", params={"decimal": "Bogus=."}, content=june,
                        headers=bearer(token("hub-a")))
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_options"


def test_the_shifted_moers_july_export_is_realigned_in_preview_and_import(service, tenants, realm, admin_config,
                                                                         shared_fixtures):
    client, _ = service
    a, _, _ = tenants
    _, token = realm
    data = (shared_fixtures / "pedestrian" / "besucherzahlen-moers-juli-2022-stundlich.csv").read_bytes()
    preview = client.post(f"{ROUTE}/upload/preview", content=data, headers=bearer(token("hub-a")))
    assert preview.status_code == 200
    assert any("one column to the left" in w for w in preview.json()["warnings"])
    sensor = f"moers-{uuid.uuid4().hex[:8]}"
    imported = client.post(f"{ROUTE}/upload", params={
        "field": ["Fußgänger insgesamt Richtung Neumarkt=humidity", "Erwachsene=temperature"],
        "sensor_column": "Lage", "sensor_map": f"Steinstraße, Moers={sensor}",
        "timestamp_column": "Zeitpunkt der Messung"}, content=data, headers=bearer(token("hub-a")))
    assert imported.status_code == 202, imported.text
    assert (imported.json()["accepted"], imported.json()["rejected"]) == (744, 0)
    assert any("one column to the left" in w for w in imported.json()["warnings"])
    events = [e for e in read_events(admin_config, a.topic(TOOL, "lorawan"), 744) if e["sensor_id"] == sensor]
    nine = next(e for e in events if e["observed_at"].startswith("2022-07-09T09:00"))
    assert (nine["fields"]["humidity"], nine["fields"]["temperature"]) == (818, 1480)


def record(sensor: str, value: float) -> dict:
    return {"source": "test", "sensor_id": sensor, "observed_at": "2024-10-27T01:00:00Z",
            "fields": {"temperature": value}}


def ndjson(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def test_kafka_not_answering_is_503_and_a_tenants_requests_do_not_queue(tenants, kube_api):
    """The real service (uvicorn, own process) with nothing listening on the broker port.
    An uplink whose record is rejected waits for its DLQ message's delivery timeout; an
    uplink with data sent right after it fails at the topic's metadata lookup and is
    answered first. Before, the tenant's lock made the second wait for the whole of the
    first's wait, then its own; and the lookup took a fixed 30 s. Both answers are 503
    with Retry-After, within the configured bound: metadata 2 s + delivery 6 s + the
    producer's report margin (3 s); the assertion allows 10 s more for a loaded machine."""
    a, _, _ = tenants
    key = ingest_secret(kube_api, a.slug)["webhook-key"]
    bound = 2 + 6 + REPORT_MARGIN + 10
    undecodable = json.loads(uplink("outage-dlq"))
    undecodable["uplink_message"].pop("decoded_payload")
    finished: list[tuple[str, httpx.Response, float]] = []

    with push_service([a], [LORAWAN_TOOL], metadata_timeout=2,
                      kafka={"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 6000}) as (url, _):
        def send(name: str, body: bytes) -> None:
            started = time.monotonic()
            response = httpx.post(f"{url}{ROUTE}/ttn-uplink", content=body, headers={"X-Ingest-Key": key},
                                  timeout=120)
            finished.append((name, response, time.monotonic() - started))

        requests = [threading.Thread(target=send, args=("rejected-only", json.dumps(undecodable).encode())),
                    threading.Thread(target=send, args=("with-data", uplink("outage-data")))]
        for request in requests:
            request.start()
        for request in requests:
            request.join()

    assert [name for name, _, _ in finished] == ["with-data", "rejected-only"]
    for name, response, took in finished:
        assert response.status_code == 503, (name, response.text)
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "unavailable"
        assert "send the same request again" in response.json()["error"]["message"]
        assert took < bound, (name, took)
    messages = {name: response.json()["error"]["message"] for name, response, _ in finished}
    assert "none were stored" in messages["with-data"]            # the lookup failed: nothing was sent
    assert "may have been stored" in messages["rejected-only"]    # a timed-out message may have been written


RSS_BOUND_MIB = 100   # measured +39 MiB for these requests; before: +495 MiB for the million lines


def test_a_million_rejected_lines_are_refused_and_a_full_request_is_capped_and_counted(platform, kube_api,
                                                                                        admin_config):
    """Issue #17 §4: a million lines of `{}` (2.9 MB) became a million DLQ messages and
    +430 MB in the serving process, and rejected records were not counted. Against the
    real service in its own process: the million-line body is refused at record
    MAX_RECORDS + 1 (413 naming the limit; nothing published, nothing counted); a body
    of exactly MAX_RECORDS rejected records is accepted with DLQ_RECORDS_PER_CALL DLQ
    messages plus one summary and counts MAX_RECORDS against eventsPerDay; the process's
    peak RSS stays within RSS_BOUND_MIB of what it held before."""
    tenant = provision(kube_api, admin_config, manifest("ic", [TOOL], plan={"eventsPerDay": MAX_RECORDS + 3}),
                       [tool(LORAWAN_TOOL)])
    try:
        key = ingest_secret(kube_api, tenant.slug)["webhook-key"]
        route = f"{ROUTE}/observations"
        with push_service([tenant], [LORAWAN_TOOL]) as (url, pid), \
                httpx.Client(base_url=url, headers={"X-Ingest-Key": key}, timeout=300) as client:
            warm = client.post(route, content=ndjson([record("warm", 1.0)]))   # the producer is made and connected
            assert warm.status_code == 202, warm.text
            before = memory_kib(pid)

            million = client.post(route, content=b"{}\n" * 1_000_000)
            assert million.status_code == 413, million.text[:500]
            assert f"at most {MAX_RECORDS} are accepted per request" in million.json()["error"]["message"]
            assert sum(end_offsets(admin_config, tenant.dlq).values()) == 0

            full = client.post(route, content=b"{}\n" * MAX_RECORDS)
            assert full.status_code == 202, full.text[:500]
            assert (full.json()["accepted"], full.json()["rejected"]) == (0, MAX_RECORDS)
            assert any("one summary message" in warning for warning in full.json()["warnings"])
            peak_growth_mib = (memory_kib(pid)["VmHWM"] - before["VmRSS"]) / 1024

            # Counted: 1 + MAX_RECORDS of MAX_RECORDS + 3 are used, so 3 more are too many, 2 fit.
            over = client.post(route, content=ndjson([record(f"q{i}", 1.0) for i in range(3)]))
            assert over.status_code == 429, over.text
            assert f"{MAX_RECORDS + 1} records were received today" in over.json()["error"]["message"]
            assert client.post(route, content=ndjson([record(f"q{i}", 1.0) for i in range(2)])).status_code == 202

        assert sum(end_offsets(admin_config, tenant.dlq).values()) == DLQ_RECORDS_PER_CALL + 1
        dead = read_topic(admin_config, tenant.dlq, DLQ_RECORDS_PER_CALL + 1)
        assert [headers(m)["where"] for m in dead[:2]] == ["line 1", "line 2"] and dead[0].value() == b"{}"
        summary = dead[-1]
        omitted = MAX_RECORDS - DLQ_RECORDS_PER_CALL
        assert headers(summary)["omitted"] == str(omitted)
        assert headers(summary)["where"] == f"line {DLQ_RECORDS_PER_CALL + 1} … line {MAX_RECORDS}"
        counted = json.loads(summary.value())
        assert counted["omitted"] == omitted and sum(r["count"] for r in counted["reasons"]) == omitted
        assert peak_growth_mib < RSS_BOUND_MIB, peak_growth_mib
    finally:
        deprovision(kube_api, admin_config, tenant)
