"""Gov Hub upload page against real Kafka: the ingest service's own preview and import
(``Uploads``) with the session's municipality, a throwaway tenant with its topics and
SCRAM user provisioned by the operator's provisioners."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from hub_sessions import signed_in_cookie
from ingest_harness import LORAWAN_TOOL, deprovision, manifest, provision, read_events, runtime_credentials, tool

from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.runtime.api import Catalogue, TokenVerifier
from urbanstack.runtime.api.query import QueryEngine
from urbanstack.runtime.hubs.gov.app import create_gov_hub
from urbanstack.runtime.ingest.push import create_push_app
from urbanstack.runtime.ingest.tenants import DailyQuota, TenantPublishers
from urbanstack.runtime.store import open_store
from urbanstack.runtime.web.oidc import Keycloak

pytestmark = pytest.mark.platform
TOOL = "raumklima"
# Project-owned sample: German decimals, a broken value in row 4.
CSV = ("Messstelle;Zeitpunkt;Temperatur;Feuchte\n"
       "Rathaus;01.03.2026 08:00;12,5;61,0\n"
       "Rathaus;01.03.2026 09:00;13,25;60,5\n"
       "Bücherei;01.03.2026 08:00;kaputt;58,0\n"
       "Bücherei;01.03.2026 09:00;11,75;57,5\n").encode("utf-8")


@pytest.fixture(scope="module")
def world(platform, kube_api, warehouse, tmp_path_factory):
    admin_config = dev_kafka.admin_config(platform)
    tools = [tool(LORAWAN_TOOL)]
    tenant = provision(kube_api, admin_config, manifest("gu", [TOOL]), tools)
    credentials = runtime_credentials(platform)
    publishers = TenantPublishers(platform, credentials)
    try:
        catalogue = Catalogue([tenant.municipality], tools)
        verifier = TokenVerifier(platform.keycloak_url, "{tenant}-api")
        push = create_push_app(catalogue, publishers, credentials, verifier=verifier, quota=DailyQuota())
        store = open_store(f"sqlite:///{tmp_path_factory.mktemp('upload') / 'meta.sqlite3'}")
        store.upgrade()
        app = create_gov_hub(platform, catalogue, QueryEngine(warehouse, catalogue), store,
                             Keycloak(platform.keycloak_url, verifier), extras={"ingest": push.state.uploads})
        with TestClient(app) as client:
            yield client, store, tenant, admin_config
    finally:
        publishers.close()
        deprovision(kube_api, admin_config, tenant)


def _signed_in(client, store, slug, roles=("gov-editor", "gov-viewer")) -> str:
    name, token, csrf = signed_in_cookie(store, slug, roles, subject="editor-1")
    client.cookies.clear()
    client.cookies.set(name, token)
    return csrf


def test_preview_override_import_and_rejections(world):
    client, store, tenant, admin_config = world
    csrf = _signed_in(client, store, tenant.slug)
    page = client.get(f"/gov/{tenant.slug}/upload")
    assert page.status_code == 200 and f"{TOOL}/lorawan" in page.text
    preview = client.post(f"/gov/{tenant.slug}/upload", data={"dataset": f"{TOOL}/lorawan", "csrf_token": csrf},
                          files={"file": ("messwerte.csv", CSV, "text/csv")})
    assert preview.status_code == 200, preview.text
    assert "Temperatur" in preview.text and "Feuchte" in preview.text and "Messstelle" in preview.text
    upload_id = re.search(r"/upload/([A-Za-z0-9_-]+)/import", preview.text).group(1)
    # Override: the decimal mark told explicitly.
    again = client.post(f"/gov/{tenant.slug}/upload/{upload_id}/preview",
                        data={"decimal": ",", "header_row": "1", "csrf_token": csrf})
    assert again.status_code == 200 and "Temperatur" in again.text
    imported = client.post(f"/gov/{tenant.slug}/upload/{upload_id}/import", data={
        "csrf_token": csrf, "decimal": ",", "header_row": "1", "field": ["Temperatur", "Feuchte"],
        "target:Temperatur": "temperature", "target:Feuchte": "humidity",
        "sensor_column": "Messstelle", "timestamp_column": "Zeitpunkt"})
    assert imported.status_code == 200, imported.text
    stored = int(re.search(r'<dd class="stored">(\d+)</dd>', imported.text).group(1))
    rejected = int(re.search(r'<dd class="rejected">(\d+)</dd>', imported.text).group(1))
    assert (stored, rejected) == (3, 1)
    reasons = re.search(r'<table class="rejections">.*?</table>', imported.text, re.S).group(0)
    assert "Temperatur" in reasons or "kaputt" in reasons    # where and why
    events = [e for e in read_events(admin_config, tenant.topic(TOOL, "lorawan"), 3) if e["source"] == "upload"]
    assert len(events) == 3
    # The file is gone after the import.
    assert client.post(f"/gov/{tenant.slug}/upload/{upload_id}/import",
                       data={"csrf_token": csrf, "field": ["Temperatur"]}).status_code == 404


def test_too_large_csrf_and_roles(world):
    client, store, tenant, _ = world
    csrf = _signed_in(client, store, tenant.slug)
    big = b"a;b\n" + b"1;2\n" * (13 * 1024 * 1024 + 1)
    refused = client.post(f"/gov/{tenant.slug}/upload", data={"dataset": f"{TOOL}/lorawan", "csrf_token": csrf},
                          files={"file": ("big.csv", big, "text/csv")})
    assert refused.status_code == 413
    assert "50 MB" in refused.text
    no_csrf = client.post(f"/gov/{tenant.slug}/upload", data={"dataset": f"{TOOL}/lorawan"},
                          files={"file": ("x.csv", CSV, "text/csv")})
    assert no_csrf.status_code == 403
    csrf = _signed_in(client, store, tenant.slug, roles=("gov-viewer",))
    assert client.get(f"/gov/{tenant.slug}/upload").status_code == 403
