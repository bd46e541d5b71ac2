"""City Tools on the real platform: the operator provisions four municipalities with
Pegel-Warnung (Kafka topics and ACLs, Keycloak clients, the credentials Secret, the settings
ConfigMap and the tool Deployment, which stays Pending without a kubelet); each tool then runs
as a local process with exactly the environment its Deployment would get (`urbanstack tool
run`'s code path), against the real Kafka and the platform's SMTP server.

- least privilege: the tool identity of a municipality nobody shares with is refused the
  neighbours' topics by Kafka's ACLs and their tables by the Data Hub engine;
- acceptance: the real PEGELONLINE measurement and a rising-and-falling hydrograph of a
  Gütersloh gauge give Gütersloh and the two neighbours it shares with exactly one warning,
  one alarm and one all-clear each, all valid CAP 1.2; readings sent twice (and a tool
  restarted) change nothing; the e-mail arrives; signed webhooks arrive; the Gov Hub shows the
  stored warnings on the page the tool contributes; the outsider sees nothing.

The CityTool gets a unique name so this module never changes the example `pegel-warnung`
other tests use; `--module` tells the process which code runs it (as an image would).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import kubernetes
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from operator_harness import (ROOT, Cluster, OperatorThread, example, is_ready, operator_kubeconfig,
                              unique_municipality, use_operator_identity)

pytestmark = pytest.mark.platform

M = "municipalities"
MODULE = "urbanstack.citytools.pegel_warnung"
XSD = ROOT / "tests" / "fixtures" / "cap" / "CAP-v1.2.xsd"
GAUGE = "gt-dalke-hydrograph"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Hooks(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@dataclasses.dataclass
class World:
    cluster: Cluster
    kube: object
    platform: object
    tool: str
    gue: str
    rh: str
    bi: str
    outsider: str
    hook_url: str
    logs: Path
    processes: dict
    smtp_port: int | None = None
    ports: dict = dataclasses.field(default_factory=dict)

    def municipalities(self):
        return (self.gue, self.rh, self.bi, self.outsider)


def _municipality(file: str, prefix: str, tool: str, settings: dict) -> dict:
    body = unique_municipality(file, prefix)
    spec = body["spec"]
    spec["tools"] = [{"name": tool, "settings": settings}]
    spec["shares"] = []
    spec["deletionPolicy"] = "Delete"
    spec.pop("retentionDays", None)
    return body


@pytest.fixture(scope="module")
def world(platform, warehouse, kube_api, tmp_path_factory):
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends

    cluster = Cluster(kube_api)
    citytool = example("citytool-pegel-warnung.yaml")
    tool = f"pw-{uuid.uuid4().hex[:6]}"
    citytool["metadata"] = {"name": tool}
    cluster.apply("citytools", citytool)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/leitstelle"

    def settings(name, warn, alarm, **more):
        return {"warnLevelCm": warn, "alarmLevelCm": alarm, "subscribers": [f"leitstelle@{name}.example.org"],
                **more}

    gue = _municipality("municipality-guetersloh.yaml", "pwg", tool, {})
    rh = _municipality("municipality-rheda-wiedenbrueck.yaml", "pwr", tool, {})
    bi = _municipality("municipality-bielefeld.yaml", "pwb", tool, {})
    outsider = _municipality("municipality-rheda-wiedenbrueck.yaml", "pwo", tool, {})
    names = {key: body["metadata"]["name"] for key, body in (("gue", gue), ("rh", rh), ("bi", bi),
                                                              ("outsider", outsider))}
    gue["spec"]["tools"][0]["settings"] = settings(names["gue"], 180, 240, webhooks=[hook_url])
    rh["spec"]["tools"][0]["settings"] = settings(names["rh"], 120, 170)
    bi["spec"]["tools"][0]["settings"] = settings(names["bi"], 150, 210)
    outsider["spec"]["tools"][0]["settings"] = settings(names["outsider"], 100, 150)
    gue["spec"]["shares"] = [{"tool": tool, "dataset": "water_levels", "municipalities": [names["rh"], names["bi"]]}]
    bi["spec"]["shares"] = [{"tool": tool, "dataset": "water_levels", "municipalities": [names["gue"], names["rh"]]}]
    bodies = (gue, rh, bi, outsider)
    for body in bodies:
        cluster.apply(M, body)

    use_operator_identity(platform)
    backends = Backends.from_settings(dataclasses.replace(platform, drift_interval=30.0), warehouse_client=warehouse,
                                      kube=kubernetes.config.new_client_from_config(
                                          config_file=operator_kubeconfig(platform)))
    handlers.configure(dataclasses.replace(platform, drift_interval=30.0), backends,
                       MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv"))
    runner = OperatorThread().start()
    world = World(cluster, kube_api, platform, tool, names["gue"], names["rh"], names["bi"], names["outsider"],
                  hook_url, tmp_path_factory.mktemp("tool-logs"), {})
    try:
        for name in world.municipalities():
            cluster.wait_for(M, name, is_ready, timeout=300, what=f"{name} Ready")
            _wait_for_deployment(world, name)
        yield world
    finally:
        for process in world.processes.values():
            process.terminate()
            process.wait(timeout=30)
        server.shutdown()
        for body in bodies:
            cluster.delete(M, body["metadata"]["name"])
        try:
            for body in bodies:
                cluster.wait_gone(M, body["metadata"]["name"], timeout=240)
        finally:
            runner.stop()
            cluster.delete("citytools", tool)


def _wait_for_deployment(world: World, municipality: str, tool: str | None = None, timeout: float = 120) -> None:
    """The tool Deployment as this branch's operator plans it. Another engineer's operator test
    running at the same moment (older code) reconciles every municipality too; wait it out."""
    apps = kubernetes.client.AppsV1Api(world.kube)
    deadline = time.monotonic() + timeout
    while True:
        deployment = apps.read_namespaced_deployment(f"tool-{tool or world.tool}", f"muni-{municipality}")
        names = {v.name for v in deployment.spec.template.spec.containers[0].env or []}
        if "URBANSTACK_KAFKA_PASSWORD" in names:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Deployment of {municipality} lacks the Kafka credentials: another operator "
                                 "with older code is reconciling it; rerun this module alone")
        time.sleep(2)


def _environment(world: World, municipality: str, folder: Path, tool: str | None = None) -> dict:
    from urbanstack.toolkit import local

    folder.mkdir(parents=True, exist_ok=True)
    return local.deployment_environment(world.kube, municipality, tool or world.tool, folder)


def _context(world: World, municipality: str, folder: Path, tool: str | None = None):
    from urbanstack.toolkit import ToolContext

    env = _environment(world, municipality, folder, tool)
    env["URBANSTACK_KAFKA_BOOTSTRAP"] = world.platform.kafka_bootstrap
    return ToolContext.from_environment(env)


def _start(world: World, municipality: str) -> int:
    from urbanstack.toolkit import local

    port = _free_port()
    caller = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "URBANSTACK_TOOL_PORT": str(port), "LOG_LEVEL": "INFO",
              "URBANSTACK_SMTP_PORT": str(world.smtp_port or world.platform.smtp_port)}
    log = open(world.logs / f"{municipality}.log", "ab")
    world.processes[municipality] = local.start(world.kube, municipality, world.tool,
                                                bootstrap=world.platform.kafka_bootstrap, module=MODULE,
                                                caller_env=caller, stdout=log, stderr=log)
    try:
        local.wait_healthy(world.processes[municipality], port)
    except Exception as exc:
        raise AssertionError(f"{exc}: {(world.logs / f'{municipality}.log').read_text()}") from None
    world.ports[municipality] = port
    return port


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _warnings(world: World, municipality: str) -> list[dict]:
    """Every warning in the municipality's warnings topic, read as the platform admin."""
    from urbanstack.devplatform import kafka
    from urbanstack.toolkit.streams import decode

    topic = f"{municipality}.{world.tool}.warnings"
    consumer = Consumer(kafka.admin_config(world.platform) | {"group.id": f"test-{uuid.uuid4().hex}",
                                                              "enable.auto.commit": False, "log_level": 0})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, 0, low)])
        events, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=1):
                if message.error() is None:
                    events += [e.to_dict() for e in decode(message.value())]
                if message.offset() >= high - 1:
                    return events
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def _readings(world: World, shared_fixtures: Path | None):
    """The real PEGELONLINE measurement (as a station of the sample station list) and a
    hydrograph of one Gütersloh gauge, 15-minute steps, 60 → 300 → 50 cm."""
    from urbanstack.runtime.connectors import pegelonline
    from urbanstack.runtime.events import Observation

    events = []
    if shared_fixtures is not None:
        stations, _ = pegelonline.parse_stations(
            (shared_fixtures / "water_levels" / "pegelonline_v2_stations_2014-04.json").read_bytes())
        station = next(s for s in stations if s.lon is not None)
        parsed = pegelonline.parse_measurements(
            (shared_fixtures / "water_levels" / "pegelonline_v2_currentmeasurement_openhab.json").read_bytes(),
            world.gue, station)
        assert not parsed.rejected and len(parsed.events) == 1
        events += parsed.events
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=12)
    levels = list(range(60, 301, 20)) + list(range(280, 49, -20))
    events += [Observation(tenant=world.gue, dataset="water_levels", source="hydrograph", sensor_id=GAUGE,
                           observed_at=start + timedelta(minutes=15 * i),
                           fields={"water_level": float(level), "station_name": "Gütersloh (Dalke)",
                                   "water_name": "Dalke"}, units={"water_level": "cm"}, lon=8.3853, lat=51.9069)
               for i, level in enumerate(levels)]
    return events


def _stored_warnings(world: World, warehouse, municipality: str) -> list[tuple[str, str]]:
    """Run the platform's sink over the municipality's warnings topic until it caught up, then read
    the hydrograph gauge's warnings from the warehouse table (FINAL: duplicates collapsed)."""
    from sink_harness import drain
    from urbanstack.devplatform import kafka
    from urbanstack.operator import naming
    from urbanstack.runtime.sink import Sink, SinkConfig

    topic = f"{municipality}.{world.tool}.warnings"
    admin = kafka.admin_config(world.platform)
    config = SinkConfig(group_id=f"test-sink-{uuid.uuid4().hex[:8]}", topic_pattern=f"^{re.escape(topic)}$",
                        retry_initial_seconds=0.05)
    sink = Sink(admin, warehouse, config)
    sink.start()
    try:
        drain(sink, admin, config.group_id, [topic])
    finally:
        sink.close()
    table = f"`{naming.database(municipality)}`.`{naming.table(world.tool, 'warnings')}`"
    rows = warehouse.query(f"SELECT level, msg_type FROM {table} FINAL WHERE gauge = '{GAUGE}' "
                           "ORDER BY observed_at").result_rows
    return [tuple(row) for row in rows]


def _gov_hub(world: World, warehouse, folder: Path):
    """The Gov Hub over the platform's catalogue and warehouse, with this module's tool registered
    under its unique name; returns ``client(slug)``, a signed-in gov-viewer of that municipality."""
    from fastapi.testclient import TestClient
    from hub_sessions import signed_in_cookie

    from urbanstack import serve
    from urbanstack.citytools.pegel_warnung.pages import PAGES
    from urbanstack.runtime.api import Catalogue
    from urbanstack.runtime.api.query import QueryEngine
    from urbanstack.runtime.hubs.gov import create_gov_hub
    from urbanstack.runtime.store import open_store
    from urbanstack.runtime.web.oidc import Keycloak
    from urbanstack.toolkit import pages

    pages.register(world.tool, PAGES)
    catalogue = Catalogue()
    serve.refresh_catalogue(catalogue, kubernetes.client.CustomObjectsApi(world.kube))
    store = open_store(f"sqlite:///{folder / 'store.db'}")
    store.upgrade()
    app = create_gov_hub(world.platform, catalogue, QueryEngine(warehouse, catalogue), store,
                         Keycloak(world.platform.keycloak_url, None))

    def client(slug: str) -> TestClient:
        cookie, token, _ = signed_in_cookie(store, slug, ("gov-viewer",), subject=f"viewer-{slug}")
        signed_in = TestClient(app, follow_redirects=False)
        signed_in.cookies.set(cookie, token)
        return signed_in

    return client


def _publish_as(world: World, municipality: str, events, folder: Path) -> None:
    from urbanstack.toolkit import streams

    ctx = _context(world, municipality, folder)
    with streams.publisher(ctx) as producer:
        streams.publish(ctx, producer, events)


# Least privilege ---------------------------------------------------------------------------

def test_the_tool_identity_reaches_only_what_the_operator_granted(world, tmp_path):
    from urbanstack.toolkit import streams
    from urbanstack.toolkit.warehouse import principal

    outsider = _context(world, world.outsider, tmp_path / "o")
    rheda = _context(world, world.rh, tmp_path / "r")
    # What each may read of the dataset: the broker answers, from the operator's ACLs.
    assert set(streams.readable_topics(outsider, "water_levels").values()) == {world.outsider}
    assert set(streams.readable_topics(rheda, "water_levels").values()) == {world.rh, world.gue, world.bi}

    # Reading Gütersloh's topic directly, as the outsider: refused by Kafka.
    topic = f"{world.gue}.{world.tool}.water_levels"
    consumer = Consumer(outsider.kafka_config() | {"group.id": outsider.group("probe"), "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        assert metadata.topics[topic].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        consumer.subscribe([topic])
        errors, deadline = [], time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            errors += [m.error().code() for m in consumer.consume(10, timeout=1) if m.error() is not None]
        assert KafkaError.TOPIC_AUTHORIZATION_FAILED in errors
        consumer.unsubscribe()
        # the same calls on its own topic work
        own = f"{world.outsider}.{world.tool}.water_levels"
        assert consumer.list_topics(own, timeout=10).topics[own].error is None
        consumer.get_watermark_offsets(TopicPartition(own, 0), timeout=10)
    finally:
        consumer.close()
    # A shared topic is readable, never writable, for the neighbour.
    producer = Producer(rheda.kafka_config() | {"log_level": 0, "message.timeout.ms": 10000})
    failures = []
    producer.produce(topic, b"{}", on_delivery=lambda err, msg: failures.append(err))
    producer.flush(20)
    assert failures and failures[0] is not None and failures[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The warehouse through the Data Hub engine: Gütersloh's table is shared with Rheda, not the outsider.
    from urbanstack import serve
    from urbanstack.runtime.api import Catalogue
    from urbanstack.runtime.api.query import QueryError, parse_ref
    from urbanstack.toolkit.warehouse import engine

    catalogue = Catalogue()
    serve.refresh_catalogue(catalogue, kubernetes.client.CustomObjectsApi(world.kube))
    data_hub = engine(None, catalogue)
    ref = parse_ref(f"{world.gue}/{world.tool}/water_levels", "dataset")
    assert data_hub.dataset(principal(rheda), ref).owner == world.gue
    with pytest.raises(QueryError) as refused:
        data_hub.dataset(principal(outsider), ref)
    assert refused.value.status == 404   # reported like a dataset that does not exist
    assert f"{world.gue}/{world.tool}/water_levels" not in {d.ref for d in data_hub.datasets(principal(outsider))}


# Acceptance --------------------------------------------------------------------------------

def test_flood_warnings_cross_municipal_borders_exactly_once(world, warehouse, mailbox, request, tmp_path):
    from lxml import etree

    from urbanstack.toolkit import notify

    # The real PEGELONLINE sample belongs to its publishers and is never committed: without
    # ../shared the hydrograph runs alone (and the real gauge's assertions say so).
    shared = request.getfixturevalue("shared_fixtures") if (ROOT.parent / "shared" / "fixtures").is_dir() else None
    world.smtp_port = mailbox.settings.smtp_port
    ports = {name: _start(world, name) for name in world.municipalities()}
    readings = _readings(world, shared)
    _publish_as(world, world.gue, readings, tmp_path / "g")

    expected = {world.gue: 3, world.rh: 3, world.bi: 3}
    deadline, found = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        found = {name: [w for w in _warnings(world, name) if w["fields"]["gauge"] == GAUGE] for name in expected}
        if all(len(found[name]) >= count for name, count in expected.items()):
            break
        time.sleep(1)
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    for name in expected:
        assert [(w["fields"]["level"], w["fields"]["msg_type"]) for w in found[name]] == [
            ("warning", "Alert"), ("alarm", "Update"), ("all_clear", "Cancel")], name
        for warning in found[name]:
            schema.assertValid(etree.fromstring(warning["fields"]["cap"].encode()))
            assert warning["fields"]["gauge_owner"] == world.gue and warning["tenant"] == name
    # The real measurement (238 cm): a warning in Gütersloh (warn 180, alarm 240), an alarm downstream.
    real = {name: [w["fields"]["level"] for w in _warnings(world, name) if w["fields"]["gauge"] != GAUGE]
            for name in expected}
    assert real == ({world.gue: ["warning"], world.rh: ["alarm"], world.bi: ["alarm"]} if shared is not None
                    else {name: [] for name in expected})
    assert _warnings(world, world.outsider) == []          # nobody shares with it: it sees nothing
    assert _metric(ports[world.outsider], "pegel_warnung_readings_total") == 0

    # The warnings are a dataset like any other: the sink stores them in the municipality's table.
    assert _stored_warnings(world, warehouse, world.gue) == [("warning", "Alert"), ("alarm", "Update"),
                                                             ("all_clear", "Cancel")]

    # The Gov Hub shows them on the page the tool contributes, to Gütersloh's staff; the outsider sees none.
    gov_hub = _gov_hub(world, warehouse, tmp_path)
    page = gov_hub(world.gue).get(f"/gov/{world.gue}/tools/{world.tool}/?lang=en")
    assert page.status_code == 200, page.text[:300]
    for warning in found[world.gue]:
        assert warning["fields"]["identifier"] in page.text
    assert "Flood alarm" in page.text and "All-clear" in page.text and "Gütersloh (Dalke)" in page.text
    outsider = gov_hub(world.outsider)
    own = outsider.get(f"/gov/{world.outsider}/tools/{world.tool}/?lang=en")
    assert own.status_code == 200 and "has raised no message" in own.text and "Dalke" not in own.text
    assert outsider.get(f"/gov/{world.gue}/tools/{world.tool}/").status_code == 303   # to Gütersloh's sign-in

    # E-mail to the subscribed staff, and the signed webhook.
    for name in expected:
        for subject in ("Hochwasserwarnung", "Hochwasseralarm", "Entwarnung"):
            mail = mailbox.box.wait_for(f"leitstelle@{name}.example.org", timeout=60,
                                        subject_contains=f"{subject}: Gütersloh (Dalke)")
            assert f"Pegel Gütersloh (Dalke) ({world.gue})" in mail.text()
        assert len([m for m in mailbox.box.messages(f"leitstelle@{name}.example.org")
                    if "Gütersloh (Dalke)" in m.subject]) == 3
    hooks = [h for h in Hooks.received if h[0] == "/leitstelle"]
    webhooks = 4 if shared is not None else 3   # Gütersloh: the hydrograph's three, the real gauge's warning
    assert len(hooks) == webhooks
    env = _environment(world, world.gue, tmp_path / "secret")
    secret = notify.subscription_secret(env["URBANSTACK_CLIENT_SECRET"], world.hook_url)
    for _, headers, body in hooks:
        assert notify.verify(secret, body, headers[notify.SIGNATURE_HEADER])
        schema.assertValid(etree.fromstring(body))

    # The same readings again, after restarting one tool: nothing new anywhere.
    counts = {name: len(_warnings(world, name)) for name in world.municipalities()}
    world.processes[world.rh].terminate()
    world.processes[world.rh].wait(timeout=30)
    ports[world.rh] = _start(world, world.rh)
    before = {name: _metric(ports[name], "pegel_warnung_readings_total") for name in expected}
    _publish_as(world, world.gue, readings, tmp_path / "g2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = {name: _metric(ports[name], "pegel_warnung_readings_total") for name in expected}
        if all(now[name] >= before[name] + len(readings) for name in expected):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the tools did not read the readings again: {before} → {now}")
    time.sleep(2)  # a decision would be published within a poll; give it the time to show
    assert {name: len(_warnings(world, name)) for name in world.municipalities()} == counts
    assert len(_stored_warnings(world, warehouse, world.gue)) == 3
    assert len([h for h in Hooks.received if h[0] == "/leitstelle"]) == webhooks


# A scaffolded tool runs ------------------------------------------------------------------------

def test_a_scaffolded_tool_is_provisioned_and_runs_with_its_deployments_credentials(world, tmp_path):

    from urbanstack.cli import main
    from urbanstack.runtime.events import Observation
    from urbanstack.toolkit import local, streams
    import yaml

    name = f"sc-{uuid.uuid4().hex[:6]}"
    target = tmp_path / name
    assert main(["tool", "new", name, "--dir", str(target), "--owner", world.outsider]) == 0
    manifest = yaml.safe_load((target / "citytool.yaml").read_text())
    world.cluster.apply("citytools", manifest)
    try:
        spec = world.cluster.get(M, world.outsider)["spec"]
        world.cluster.patch_spec(M, world.outsider, {"tools": spec["tools"] + [{"name": name, "settings": {}}]})
        world.cluster.wait_for(M, world.outsider, is_ready, timeout=240, what=f"{world.outsider} Ready with {name}")
        _wait_for_deployment(world, world.outsider, name)
        port = _free_port()
        log = open(tmp_path / "scaffold.log", "ab")
        caller = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "URBANSTACK_TOOL_PORT": str(port),
                  "PYTHONPATH": str(target)}
        process = local.start(world.kube, world.outsider, name, bootstrap=world.platform.kafka_bootstrap,
                              caller_env=caller, stdout=log, stderr=log)   # module: <name>.tool, as scaffolded
        try:
            events = [Observation(tenant=world.outsider, dataset="readings", source="test", sensor_id="s1",
                                  observed_at=datetime(2026, 12, 1, 12, minute, tzinfo=timezone.utc),
                                  fields={"value": float(value)}) for minute, value in ((0, 2), (1, 4))]
            ctx = _context(world, world.outsider, tmp_path / "ctx", name)
            with streams.publisher(ctx) as producer:
                streams.publish(ctx, producer, events)
            metric = f"{name.replace('-', '_')}_mean_value"
            deadline, value = time.monotonic() + 60, None
            while time.monotonic() < deadline and value != 3.0:
                assert process.poll() is None, (tmp_path / "scaffold.log").read_text()
                try:
                    value = _metric(port, metric)
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            assert value == 3.0, (tmp_path / "scaffold.log").read_text()
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        spec = world.cluster.get(M, world.outsider)["spec"]
        world.cluster.patch_spec(M, world.outsider, {"tools": [t for t in spec["tools"] if t["name"] != name]})
        world.cluster.wait_for(M, world.outsider, is_ready, timeout=240, what="tool switched off again")
        world.cluster.delete("citytools", name)


def test_tool_commands_read_the_operators_objects_and_name_what_is_missing(world, tmp_path, capsys):
    from urbanstack.cli import main
    from urbanstack.toolkit import notify

    kubeconfig = str(world.platform.kubeconfig)
    url = "https://leitstelle.example.org/cap"
    assert main(["tool", "webhook-secret", world.tool, "--municipality", world.gue, "--url", url,
                 "--kubeconfig", kubeconfig]) == 0
    secret = notify.subscription_secret(_environment(world, world.gue, tmp_path / "e")["URBANSTACK_CLIENT_SECRET"], url)
    assert capsys.readouterr().out.strip() == secret

    assert main(["tool", "run", "nicht-aktiviert", "--municipality", world.gue, "--kubeconfig", kubeconfig]) == 2
    error = capsys.readouterr().err
    assert f"no Deployment muni-{world.gue}/tool-nicht-aktiviert" in error and "spec.tools" in error


def test_a_withdrawn_share_is_revoked_and_the_neighbours_tool_reads_on_without_it(world, tmp_path):
    from urbanstack.runtime.events import Observation
    from urbanstack.toolkit import streams

    if world.rh not in world.ports:
        world.smtp_port = world.smtp_port or world.platform.smtp_port
        _start(world, world.rh)
    rheda = _context(world, world.rh, tmp_path / "r")
    assert world.gue in streams.readable_topics(rheda, "water_levels").values()
    world.cluster.patch_spec(M, world.gue, {"shares": []})
    world.cluster.wait_for(M, world.gue, is_ready, timeout=240, what="Ready without the share")
    assert world.gue not in streams.readable_topics(rheda, "water_levels").values()   # the ACL is gone

    port = world.ports[world.rh]
    before = _metric(port, 'pegel_warnung_readings_total{owner="%s"}' % world.gue)
    own_before = _metric(port, 'pegel_warnung_readings_total{owner="%s"}' % world.rh)
    late = datetime.now(timezone.utc).replace(microsecond=0)
    _publish_as(world, world.gue, [Observation(
        tenant=world.gue, dataset="water_levels", source="hydrograph", sensor_id=GAUGE, observed_at=late,
        fields={"water_level": 400.0}, lon=8.3853, lat=51.9069)], tmp_path / "g")
    _publish_as(world, world.rh, [Observation(
        tenant=world.rh, dataset="water_levels", source="test", sensor_id="rh-ems", observed_at=late,
        fields={"water_level": 10.0})], tmp_path / "r2")
    deadline = time.monotonic() + 60
    while _metric(port, 'pegel_warnung_readings_total{owner="%s"}' % world.rh) < own_before + 1:
        assert time.monotonic() < deadline, (world.logs / f"{world.rh}.log").read_text()
        time.sleep(0.5)
    assert world.processes[world.rh].poll() is None                     # still running
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert _metric(port, 'pegel_warnung_readings_total{owner="%s"}' % world.gue) == before   # no longer read
