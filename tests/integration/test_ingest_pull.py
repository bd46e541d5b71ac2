"""Pull ingest against the real platform (Kafka with the tenant's own user, the tenant's
``urbanstack-ingest`` Secret read by the runtime's identity).

PEGELONLINE itself is unreachable here, so a local HTTP server on 127.0.0.1 serves
``stations.json?includeTimeseries=true&includeCurrentMeasurement=true`` in the real
format: the station catalogue and a current measurement from ``../shared/fixtures``
when present, else the project's own sample in tests/fixtures/connectors.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from ingest_harness import (WATER_TOOL, deprovision, ingest_secret, manifest, provision, read_events,
                            runtime_credentials, tool)
from sink_harness import end_offsets

from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.runtime.api import Catalogue, TokenVerifier
from urbanstack.runtime.connectors import pegelonline
from urbanstack.runtime.connectors.cursor import FileCursorStore
from urbanstack.runtime.ingest.pull import PullScheduler
from urbanstack.runtime.ingest.push import create_push_app
from urbanstack.runtime.ingest.tenants import TenantPublishers

pytestmark = pytest.mark.platform

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "fixtures" / "water_levels"
PROJECT_SAMPLE = ROOT / "tests" / "fixtures" / "connectors" / "pegelonline_stations_with_measurements.json"
PATH = "/webservices/rest-api/v2/stations.json"


def upstream_stations() -> list[dict]:
    if (SHARED / "pegelonline_v2_stations_2014-04.json").is_file():
        stations = json.loads((SHARED / "pegelonline_v2_stations_2014-04.json").read_text())[:3]
        current = json.loads((SHARED / "pegelonline_v2_currentmeasurement_openhab.json").read_text())
        for station in stations:
            station["timeseries"] = [{"shortname": "W", "longname": "WASSERSTAND ROHDATEN", "unit": "cm",
                                      "equidistance": 15, "currentMeasurement": dict(current)}]
        return stations
    return json.loads(PROJECT_SAMPLE.read_text())


class Upstream:
    """stations.json on 127.0.0.1; ``fail`` answers that many requests with HTTP 500
    (``-1``: all of them)."""

    def __init__(self):
        self.stations = upstream_stations()
        self.fail = 0
        self.requests: list[dict] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                upstream.requests.append(parse_qs(parts.query))
                if parts.path != PATH:
                    self.send_error(404)
                    return
                if upstream.fail:
                    upstream.fail -= 1 if upstream.fail > 0 else 0
                    self.send_error(500, "Internal Server Error")
                    return
                body = json.dumps(upstream.stations).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def admin_config(platform):
    return dev_kafka.admin_config(platform)


@pytest.fixture(scope="module")
def tenant(platform, kube_api, admin_config, upstream):
    source = {"name": "pegel-lokal", "connector": "pegelonline", "url": f"{upstream.url}{PATH}",
              "tool": "pegel", "dataset": "water_levels", "intervalSeconds": 60, "params": {"waters": "EMS"}}
    tools = [tool(WATER_TOOL)]
    created = provision(kube_api, admin_config, manifest("ip", ["pegel"], sources=[source]), tools)
    try:
        yield created, tools
    finally:
        deprovision(kube_api, admin_config, created)


@pytest.fixture(scope="module")
def scheduler(platform, tenant, tmp_path_factory):
    created, tools = tenant
    credentials = runtime_credentials(platform)
    publishers = TenantPublishers(platform, credentials)
    catalogue = Catalogue([created.municipality], tools)
    pull = PullScheduler(catalogue, publishers, credentials,
                         FileCursorStore(tmp_path_factory.mktemp("ingest") / "cursors.json"),
                         allow_private_networks=True, retries=3, backoff=0.01)
    yield pull, catalogue, credentials
    publishers.close()


def expected_events(stations) -> int:
    return len(pegelonline.parse_stations_with_measurements(json.dumps(stations), "x").events)


def test_each_upstream_reading_is_published_once(scheduler, tenant, upstream, admin_config):
    pull, _, _ = scheduler
    created, _ = tenant
    [source] = pull.sources()
    topic = created.topic("pegel", "water_levels")
    count = expected_events(upstream.stations)
    assert count >= 2

    first = pull.run_source(source)
    assert (first.state, first.last_published) == ("ok", count), first
    events = read_events(admin_config, topic, count)
    assert len(events) == count and {e["tenant"] for e in events} == {created.slug}
    assert upstream.requests[-1]["includeCurrentMeasurement"] == ["true"]
    assert upstream.requests[-1]["waters"] == ["EMS"]
    dlq = sum(end_offsets(admin_config, created.dlq).values())

    again = pull.run_source(source)
    assert (again.state, again.last_published) == ("ok", 0)

    station = upstream.stations[0]
    current = next(ts for ts in station["timeseries"] if ts["shortname"] == "W")["currentMeasurement"]
    newer = copy.deepcopy(current)
    later = datetime.fromisoformat(current["timestamp"]) + timedelta(minutes=15)
    newer["timestamp"] = later.isoformat()
    newer["value"] = current["value"] + 7
    assert newer["timestamp"] != current["timestamp"]
    for ts in station["timeseries"]:
        if ts.get("currentMeasurement"):
            ts["currentMeasurement"] = {**ts["currentMeasurement"], "timestamp": newer["timestamp"]}
    next(ts for ts in station["timeseries"] if ts["shortname"] == "W")["currentMeasurement"] = newer

    third = pull.run_source(source)
    assert (third.state, third.last_published) == ("ok", 1)
    assert pull.run_source(source).last_published == 0
    events = read_events(admin_config, topic, count + 1)
    assert len(events) == count + 1
    assert [e["fields"]["water_level"] for e in events if e["sensor_id"] == station["uuid"]][-1] == newer["value"]
    # Broken upstream records reach the DLQ once, not on every poll.
    assert sum(end_offsets(admin_config, created.dlq).values()) == dlq


def test_an_upstream_500_is_retried_and_shown_in_status(scheduler, tenant, upstream, platform, kube_api):
    pull, catalogue, credentials = scheduler
    created, _ = tenant
    [source] = pull.sources()

    upstream.fail, asked = 2, len(upstream.requests)
    recovered = pull.run_source(source)
    assert recovered.state == "ok" and len(upstream.requests) - asked == 3

    upstream.fail, asked = -1, len(upstream.requests)
    failed = pull.run_source(source)
    assert len(upstream.requests) - asked == 3
    assert failed.state == "error" and "HTTP 500" in failed.last_error and failed.consecutive_failures == 1
    assert "?" not in failed.last_error  # no query string (it may hold tokens) in status

    app = create_push_app(catalogue, TenantPublishers(platform, credentials), credentials,
                          verifier=TokenVerifier(platform.keycloak_url, "{tenant}-api"),
                          sources_status=pull.status)
    key = ingest_secret(kube_api, created.slug)["webhook-key"]
    with TestClient(app) as client:
        [shown] = client.get("/ingest/v1/sources", headers={"X-Ingest-Key": key}).json()
        assert shown["source"] == "pegel-lokal" and shown["state"] == "error"
        assert "HTTP 500" in shown["last_error"] and shown["last_success_at"]
        assert client.get("/ingest/v1/sources").status_code == 401

    upstream.fail = 0
    assert pull.run_source(source).state == "ok"  # nothing new upstream: nothing published

    # The loop: a new source starts at once, then waits for its interval.
    assert pull.run_due() == [source]
    deadline = time.monotonic() + 10
    while pull.status(created.slug)[0]["next_run_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pull.run_due() == []
