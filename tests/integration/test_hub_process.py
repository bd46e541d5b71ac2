"""`urbanstack hub`: the web pages as their own process. Its app (``serve.hub_app``) answers
health, readiness and the Gov Hub's pages; the command refuses the embedded warehouse, which
belongs to `urbanstack serve`, before it touches anything."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from urbanstack import serve
from urbanstack.operator.models import parse_municipality
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.store import open_store
from urbanstack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_urbanstack_hub_refuses_the_embedded_warehouse_with_a_clear_message(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("URBANSTACK_")}
    env |= {"URBANSTACK_STATE_DIR": str(tmp_path / "state"), "URBANSTACK_WAREHOUSE_URL": f"chdb://{tmp_path / 'wh'}"}
    done = subprocess.run([sys.executable, "-m", "urbanstack.cli", "hub"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done
    assert ("'urbanstack hub' needs a ClickHouse server URL in URBANSTACK_WAREHOUSE_URL; with the embedded "
            "warehouse run 'urbanstack serve'") in done.stderr
    assert "Traceback" not in done.stderr
    # Refused before anything was opened: no metadata store, no chDB data path.
    assert not (tmp_path / "state" / "metadata.sqlite3").exists() and not (tmp_path / "wh").exists()


def test_the_hub_app_answers_health_readiness_and_the_gov_hub(warehouse, tmp_path):
    settings = dataclasses.replace(Settings.from_env({"HOME": str(tmp_path)}), state_dir=tmp_path,
                                   keycloak_server_url="http://127.0.0.1:9")  # no sign-in in this test
    manifest = yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml").read_text(encoding="utf-8"))
    catalogue = Catalogue([parse_municipality(manifest)], [])
    store = open_store(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    store.upgrade()
    try:
        with TestClient(serve.hub_app(settings, catalogue, warehouse, store)) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").json() == {"status": "ready"}
            assert "urbanstack_api_requests" in client.get("/metrics").text
            page = client.get("/gov/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "Gütersloh" in page.text and 'href="/gov/guetersloh/login' in page.text
            # Without a session a municipality's pages lead to the sign-in, not to data.
            start = client.get("/gov/guetersloh/", follow_redirects=False)
            assert start.status_code in (302, 303) and "/gov/guetersloh/login" in start.headers["location"]
            # The signup and the ops console share the origin; the console wants a platform sign-in.
            form = client.get("/signup/")
            assert form.status_code == 200 and 'action="/signup/"' in form.text
            assert "default-src 'self'" in form.headers["content-security-policy"]
            ops = client.get("/ops/", follow_redirects=False)
            assert ops.status_code == 303 and ops.headers["location"].startswith("/ops/login")
            assert client.get("/signupx").status_code == 404  # only the prefixes themselves
            # The API itself is `urbanstack api`'s: the hub process does not serve it.
            assert client.get("/api/v1/datasets").status_code == 404
            assert client.get("/graphql").status_code == 404
    finally:
        store.close()
