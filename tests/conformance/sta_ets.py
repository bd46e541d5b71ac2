"""Runs the OGC conformance test suite for SensorThings (``versions.STA_ETS``) against this
service: ``make conformance-sta``.

Level 1 (Sensing Core, the default): a fresh embedded warehouse gets one municipality with the
example CityTool "Passantenfrequenz & Wetter", whose pedestrian counts are open data (read
without a token, as the suite reads) and hold a day of readings of three counters.

Levels 2 and 3 (Create-Update-Delete, Filtering Extension) write: they need the local platform
(``urbanstack dev up``: Kafka). A fresh municipality with the built-in CityTool ``sensorthings``
gets its topics, Kafka user and tables as the operator provisions them; a sink in this process
writes its topics into the embedded warehouse, and the API's writes go through the ingest
service's producer, as in ``urbanstack serve``. The municipality is seeded by POSTing a Thing
with a Location, a Datastream and Observations (Sensing Core reads them; the other classes
delete everything and create their own). The suite sends no token: the harness answers its
requests as a gov-editor of that municipality (a fixed principal here; the token check itself is
tested with Keycloak in tests/integration/test_sensorthings_created.py).

The API app serves on 127.0.0.1 at a free port; the suite's all-in-one jar comes from Maven
Central into the cache (``URBANSTACK_CACHE_DIR``) and runs with the machine's Java. The script
prints the counts and every test that did not pass, with the path of the suite's full report,
and exits 0 when every test of the levels asked for passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
from pathlib import Path

import ets_runner
import yaml

from urbanstack import versions
from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOOL = "passantenfrequenz-wetter"


def suite_jar(settings: Settings) -> Path:
    return ets_runner.suite_jar(settings, versions.STA_ETS, "sta-ets")


def sample_world(warehouse_client, empty: bool = False) -> Catalogue:
    tool = parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{TOOL}.yaml").read_text()))
    municipality = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": "guetersloh"},
        "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": ["admin@guetersloh.example.org"],
                 "tools": [{"name": TOOL}],
                 "shares": [{"tool": TOOL, "dataset": "pedestrian_counts", "public": True,
                             "licence": "dl-de/zero-2-0"}]}})
    ensure(WarehouseProvisioner(lambda: warehouse_client, embedded=True), plan(municipality, [tool]).warehouse, {})
    if empty:
        return Catalogue([municipality], [tool])
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    rows = []
    for sensor, (lon, lat) in (("berliner-strasse", (8.383, 51.906)), ("koenigstrasse", (8.389, 51.909)),
                               ("kolbeplatz", (8.380, 51.904))):
        for step in range(96):
            rows.append([f"{sensor}-{step}", "hystreet", sensor, start + dt.timedelta(minutes=15 * step), lon, lat,
                         (step * 37) % 400, sensor])
    warehouse_client.insert(f"{naming.database('guetersloh')}.{naming.table(TOOL, 'pedestrian_counts')}", rows,
                            column_names=["event_id", "source", "sensor_id", "observed_at", "lon", "lat",
                                          "pedestrians", "location_name"])
    return Catalogue([municipality], [tool])


SENSORTHINGS = "sensorthings"
SEED = {"name": "Kolbeplatz", "description": "A pedestrian counter", "properties": {"owner": "harness"},
        "Locations": [{"name": "Kolbeplatz", "description": "Kolbeplatz, Gütersloh", "encodingType": "application/geo+json",
                       "location": {"type": "Point", "coordinates": [8.380, 51.904]}}],
        "Datastreams": [{"name": "pedestrians", "description": "Pedestrians per 15 minutes",
                         "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CountObservation",
                         "unitOfMeasurement": {"name": "persons", "symbol": "persons", "definition": None},
                         "ObservedProperty": {"name": "pedestrians", "definition": "urn:example:pedestrians",
                                              "description": "People passing"},
                         "Sensor": {"name": "counter", "description": "Laser counter",
                                    "encodingType": "application/pdf", "metadata": "counter.pdf"},
                         "Observations": [{"phenomenonTime": f"2026-01-0{day}T10:00:00Z", "result": day * 10}
                                          for day in range(1, 4)]}]}


class Writable:
    """A municipality with the CityTool sensorthings on the local platform's Kafka, a sink in this
    process and the ingest service's producer for the API's writes."""

    def __init__(self, settings: Settings, warehouse_client):
        import secrets
        import uuid

        from urbanstack.devplatform import credentials, kafka
        from urbanstack.devplatform import platform as dev_platform
        from urbanstack.operator.provisioners.streaming import StreamingProvisioner
        from urbanstack.runtime.api import TokenVerifier
        from urbanstack.runtime.ingest.push import create_push_app
        from urbanstack.runtime.ingest.tenants import DailyQuota, StaticCredentials, TenantPublishers
        from urbanstack.runtime.sink import Sink, SinkConfig

        dev_platform.up(settings, ["kafka"])
        self.settings = credentials.fill(settings)
        self.slug = f"sta-ets-{uuid.uuid4().hex[:8]}"
        tool = parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{SENSORTHINGS}.yaml").read_text()))
        self.municipality = Municipality.model_validate({
            "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": self.slug},
            "spec": {"displayName": "STA conformance", "ags": "05754008", "admins": [f"admin@{self.slug}.example.org"],
                     # The suite sends thousands of requests within minutes: more than a small plan's queries.
                     "plan": {"name": "large"}, "tools": [{"name": SENSORTHINGS}]}})
        desired = plan(self.municipality, [tool])
        ensure(WarehouseProvisioner(lambda: warehouse_client, embedded=True), desired.warehouse, {})
        self.catalogue = Catalogue([self.municipality], [tool])
        admin = kafka.admin_config(self.settings)
        self.streaming = StreamingProvisioner(admin)
        self.part = desired.streaming
        password = secrets.token_urlsafe(18)
        ensure(self.streaming, self.part, {self.part.password_key: password})
        creds = StaticCredentials({self.slug: {"kafka-username": self.part.user, "kafka-password": password}})
        self.sink = Sink(admin, warehouse_client, SinkConfig(group_id=f"sta-ets-{self.slug}",
                                                             topic_pattern=rf"^{self.slug}\.[^.]+\.[^.]+$",
                                                             schema_refresh_seconds=1.0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop,), daemon=True)
        self.thread.start()
        self.publishers = TenantPublishers(self.settings, creds)
        self.ingest = create_push_app(self.catalogue, self.publishers, creds, quota=DailyQuota(),
                                      verifier=TokenVerifier("http://127.0.0.1:9/unused", "{tenant}-api"))

    def attach(self, app) -> None:
        """The suite's requests act as a gov-editor of the municipality."""
        from urbanstack.runtime.api.auth import ROLE_PERMISSIONS, Principal

        editor = Principal(self.slug, frozenset({"gov-editor"}), "sta-ets", ROLE_PERMISSIONS["gov-editor"])
        app.state.verifier = type("HarnessVerifier", (), {"verify": lambda _self, token: editor})()
        app.state.sensorthings_writes = self.ingest.state.writes

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.publishers.close()
        self.streaming.delete(self.part, keep_data=False)


class AsEditor:
    """Adds the harness's bearer token to every request that has none (the suite sends none)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], (b"authorization", b"Bearer harness")]}
        await self.app(scope, receive, send)


def seed(port: int) -> None:
    import requests

    answer = requests.post(f"http://127.0.0.1:{port}/v1.1/Things", json=SEED, timeout=60)
    if answer.status_code != 201:
        raise SystemExit(f"seeding the municipality failed: {answer.status_code} {answer.text[:300]}")


# Failures of the suite itself, not of the service: (test, text of its failure) -> why.
SUITE_DEFECTS = {
    ("checkQueriesPriorityOrdering", 'JSONObject["result"] is not a string'):
        "the suite POSTs numeric results (\"result\": 6) and reads them back with JSONObject.getString, which "
        "its bundled org.json (20240303) refuses for numbers; a result keeps its type (the standard's JSON "
        "encoding), so every server that answers 6 as 6 fails here — the count and the Observation it "
        "checks are right",
}


def report(results: Path, level: int) -> tuple[int, int, int, list[str], int]:
    """(passed, failed, skipped, lines, suite defects among the failed) of the tests of conformance
    levels up to ``level``; the suite lists the higher levels as skipped."""
    def counted(method) -> bool:
        groups = method.get("groups") or ""
        return groups.startswith("level-") and int(groups[6:]) <= level

    counts, lines = ets_runner.tally(results, counted, SUITE_DEFECTS)
    return counts["PASS"], counts["FAIL"], counts["SKIP"], lines, counts["DEFECT"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, choices=(1, 2, 3), default=1,
                        help="test the conformance classes up to: 1 Sensing Core, 2 Create-Update-Delete, "
                             "3 Filtering Extension (levels 2 and 3 write through the local platform's Kafka; "
                             "they first delete every entity and create their own)")
    parser.add_argument("--empty", action="store_true",
                        help="start without entities (level 1: no sample readings; levels 2-3: no seeded Thing)")
    args = parser.parse_args()
    settings = Settings.from_env()
    ets_runner.need_java()
    writable: list[Writable] = []

    def world(client) -> Catalogue:
        if args.level == 1:
            return sample_world(client, args.empty)
        writable.append(Writable(settings, client))
        return writable[0].catalogue

    def hooks(app) -> ets_runner.Hooks:
        if not writable:
            return ets_runner.Hooks()
        writable[0].attach(app)
        return ets_runner.Hooks(wrap=AsEditor, started=(lambda port: None) if args.empty else seed,
                                close=writable[0].close)

    run = ets_runner.run_suite(settings, "sta-ets", world, suite_jar(settings), "/v1.1", {"ics": str(args.level)},
                               hooks=hooks)
    passed, failed, skipped, failures, defects = report(run.results, args.level)
    print(f"{versions.STA_ETS} against /v1.1, conformance levels 1-{args.level}: {passed} passed, "
          f"{failed} failed ({defects} of them defects of the suite), {skipped} skipped in {run.seconds:.0f} s")
    ets_runner.print_failures(failures, run.results)
    return 0 if failed == defects and skipped == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
