"""SensorThings over MQTT on the real platform: Kafka → sink → warehouse → mosquitto → paho-mqtt.

Two throwaway municipalities: a Gütersloh-like owner (pedestrian counts as open data, water
levels shared with the second one, weather private) and a Bielefeld-like neighbour. Their broker
clients, groups and roles are provisioned by the operator's MQTT provisioner; the sink runs
in-process with the publisher. Subscribers are paho-mqtt clients, as a city's dashboard would be.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest
from fastapi.testclient import TestClient

import sink_harness as harness
from urbanstack.devplatform import kafka, mosquitto
from urbanstack.operator.models import parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.messaging import MessagingProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import create_app
from urbanstack.runtime.api.catalogue import Catalogue
from urbanstack.runtime.api.quota import QueryQuota
from urbanstack.runtime.api.sensorthings.graph import stable_id
from urbanstack.runtime.events import Observation
from urbanstack.runtime.mqtt.client import authenticates
from urbanstack.runtime.mqtt.publisher import ObservationPublisher, topic_of
from urbanstack.runtime.producer import Publisher
from urbanstack.runtime.sink import Sink, SinkConfig

pytestmark = pytest.mark.platform

PEDESTRIANS = ("passantenfrequenz-wetter", "pedestrian_counts")
WEATHER = ("passantenfrequenz-wetter", "weather")
WATER = ("pegel-warnung", "water_levels")
BASE = "http://testserver/v1.1"   # the TestClient's origin: payloads and GET answers name the same links


@pytest.fixture(scope="module")
def broker(platform):
    """The platform's mosquitto, started as `urbanstack dev up` starts it (a no-op when it runs)."""
    mosquitto.ensure_running(platform)
    return platform


class Subscriber:
    """A paho-mqtt client subscribed to every SensorThings topic, keeping what arrives."""

    def __init__(self, settings, user: str | None = None, password: str | None = None, topic: str = "v1.1/#"):
        self.received: list[tuple[str, dict, float]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=0)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, json.loads(m.payload), time.monotonic()))
        self.client.connect(settings.mqtt_server, settings.mqtt_port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK within 10 s"

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


DATASET_OF: dict[str, str] = {}


def _municipality(name: str, slug: str, shares: list) -> dict:
    manifest = harness._yaml(name)
    manifest["metadata"]["name"] = slug
    manifest["spec"]["shares"] = shares
    return manifest


@pytest.fixture
def cities(broker, warehouse):
    admin = kafka.admin_config(broker)
    owner_slug, neighbour_slug = f"mq{uuid.uuid4().hex[:8]}", f"bi{uuid.uuid4().hex[:8]}"
    owner_manifest, tools = harness.new_tenant()
    owner_manifest["metadata"]["name"] = owner_slug
    owner_manifest["spec"]["shares"] = [
        {"tool": PEDESTRIANS[0], "dataset": PEDESTRIANS[1], "public": True, "licence": "dl-de/zero-2-0"},
        {"tool": WATER[0], "dataset": WATER[1], "municipalities": [neighbour_slug]}]
    neighbour_manifest = _municipality("municipality-bielefeld.yaml", neighbour_slug, [])
    owner = plan(parse_municipality(owner_manifest), tools)
    neighbour = plan(parse_municipality(copy.deepcopy(neighbour_manifest)), tools)
    passwords = {owner_slug: secrets.token_urlsafe(18), neighbour_slug: secrets.token_urlsafe(18)}
    ensure(StreamingProvisioner(admin), owner.streaming, {owner.streaming.password_key: passwords[owner_slug]})
    ensure(WarehouseProvisioner(lambda: warehouse, embedded=True), owner.warehouse, {})
    provisioner = MessagingProvisioner(broker.mqtt_server, broker.mqtt_port, *broker.mqtt_admin())
    for desired in (owner, neighbour):
        ensure(provisioner, desired.messaging, {"mqtt-password": passwords[desired.slug]})
    catalogue = Catalogue([parse_municipality(owner_manifest), parse_municipality(neighbour_manifest)], tools)
    yield {"owner": owner, "neighbour": neighbour, "passwords": passwords, "admin": admin,
           "provisioner": provisioner, "catalogue": catalogue, "warehouse": warehouse}
    for desired in (owner, neighbour):
        provisioner.delete(desired.messaging, keep_data=False)
    provisioner.close()
    StreamingProvisioner(admin).delete(owner.streaming, keep_data=False)
    WarehouseProvisioner(lambda: warehouse, embedded=True).delete(owner.warehouse, keep_data=False)


def _events(slug: str, at: datetime) -> dict[tuple[str, str], list[Observation]]:
    return {
        PEDESTRIANS: [Observation(tenant=slug, dataset=PEDESTRIANS[1], source="hystreet", sensor_id="p1",
                                  observed_at=at, fields={"pedestrians": 17, "location_name": "Berliner Straße"},
                                  units={"pedestrians": "persons"})],
        WEATHER: [Observation(tenant=slug, dataset=WEATHER[1], source="dwd", sensor_id="w1", observed_at=at,
                              fields={"temperature": 4.5})],
        WATER: [Observation(tenant=slug, dataset=WATER[1], source="pegel", sensor_id="g1", observed_at=at,
                            fields={"water_level": 123.5, "station_name": "Dalke"})],
    }


def _sink(cities, publisher: ObservationPublisher) -> Sink:
    owner = cities["owner"]
    config = SinkConfig(group_id=f"test-sink-{uuid.uuid4().hex[:8]}",
                        topic_pattern=rf"^{owner.slug}\.[^.]+\.[^.]+$", batch_seconds=0.2)
    sink = Sink(cities["admin"], cities["warehouse"], config, on_stored=publisher.stored)
    sink.start()
    for _ in range(15):          # joined the group and assigned, before the readings go out
        sink.step(timeout=0.2)
    return sink


def _produce(cities, events) -> float:
    sent = time.monotonic()
    with Publisher(cities["admin"]) as producer:
        for (tool, _dataset), batch in events.items():
            producer.publish_events(batch, tenant=cities["owner"].slug, tool=tool)
    return sent


def _run_until(sink: Sink, done, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        sink.step(timeout=0.1)


def _datasets(subscriber: Subscriber, since: int = 0) -> list[str]:
    return sorted(DATASET_OF.get(topic, topic) for topic, _body, _t in subscriber.received[since:])


def test_subscribers_receive_what_they_may_read_as_the_api_writes_it(cities, broker, warehouse):
    owner, neighbour, passwords = cities["owner"], cities["neighbour"], cities["passwords"]
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    first, second = _events(owner.slug, at), _events(owner.slug, at + timedelta(minutes=1))
    for (tool, dataset), batch in first.items():
        for event in batch:
            for field in event.fields:
                DATASET_OF[topic_of(stable_id("Datastream", f"{owner.slug}/{tool}/{dataset}", event.sensor_id,
                                              field))] = dataset

    subscribers = {
        "owner": Subscriber(broker, owner.messaging.user, passwords[owner.slug]),
        "neighbour": Subscriber(broker, neighbour.messaging.user, passwords[neighbour.slug]),
        "anonymous": Subscriber(broker),
        # A tenant may name a topic of data it cannot read: it subscribes, and receives nothing.
        "neighbour-direct": Subscriber(broker, neighbour.messaging.user, passwords[neighbour.slug],
                                       topic=topic_of(stable_id("Datastream", f"{owner.slug}/{WEATHER[0]}/{WEATHER[1]}",
                                                                "w1", "temperature"))),
    }
    owner_sees = sorted(["pedestrian_counts"] * 2 + ["weather"] + ["water_levels"] * 2)
    neighbour_sees = sorted(["pedestrian_counts"] * 2 + ["water_levels"] * 2)     # shared + open data
    anonymous_sees = ["pedestrian_counts"] * 2                                      # open data only
    user, password = broker.mqtt_admin()
    publisher = ObservationPublisher(broker.mqtt_server, broker.mqtt_port, user, password, BASE).start()
    try:
        sink = _sink(cities, publisher)
        # New Datastreams: their topics join the dataset roles first (subscribers are reconnected once).
        _produce(cities, first)
        _run_until(sink, lambda: _datasets(subscribers["owner"]) == owner_sees
                   and _datasets(subscribers["neighbour"]) == neighbour_sees
                   and _datasets(subscribers["anonymous"]) == anonymous_sees)
        counts = {name: len(s.received) for name, s in subscribers.items()}
        # The next readings of the same sensors: the steady state a dashboard lives in.
        sent = _produce(cities, second)
        _run_until(sink, lambda: len(subscribers["anonymous"].received) >= counts["anonymous"] + 2
                   and len(subscribers["owner"].received) >= counts["owner"] + 5
                   and len(subscribers["neighbour"].received) >= counts["neighbour"] + 4)
        for _ in range(10):   # a little longer: anything more would be a leak worth seeing
            sink.step(timeout=0.1)
        sink.close()
    finally:
        publisher.close()
        for subscriber in subscribers.values():
            subscriber.close()

    assert _datasets(subscribers["owner"], counts["owner"]) == owner_sees
    assert _datasets(subscribers["neighbour"], counts["neighbour"]) == neighbour_sees
    assert _datasets(subscribers["anonymous"], counts["anonymous"]) == anonymous_sees
    assert [_datasets(s) for s in subscribers.values()] == [sorted(owner_sees * 2), sorted(neighbour_sees * 2),
                                                            sorted(anonymous_sees * 2), []]
    arrived = min(t for _topic, _body, t in subscribers["anonymous"].received[counts["anonymous"]:])
    print(f"\nproduce → MQTT message at an anonymous subscriber (known Datastream): {arrived - sent:.2f} s")

    # Each payload is the Observation a GET returns, link for link.
    app = create_app(broker, cities["catalogue"], warehouse, keycloak_url="http://127.0.0.1:9", audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))
    with TestClient(app) as client:
        for topic, body, _t in subscribers["anonymous"].received:
            answer = client.get(f"/v1.1/Observations({body['@iot.id']})")
            assert answer.status_code == 200, answer.text
            assert answer.json() == body
            stream = client.get(f"/v1.1/Observations({body['@iot.id']})/Datastream").json()
            assert topic == topic_of(stream["@iot.id"])
        assert {body["result"] for _t, body, _ in subscribers["anonymous"].received} == {17, "Berliner Straße"}


def test_wrong_or_missing_credentials_and_publishing_are_refused(cities, broker):
    owner, passwords = cities["owner"], cities["passwords"]
    host, port = broker.mqtt_server, broker.mqtt_port
    assert authenticates(host, port, owner.messaging.user, passwords[owner.slug])
    assert not authenticates(host, port, owner.messaging.user, "not-the-password")
    assert not authenticates(host, port, "muni-nobody", "whatever")

    # A tenant (and anyone) publishing under v1.1/ reaches nobody: only the platform's publisher may.
    topic = topic_of(stable_id("Datastream", f"{owner.slug}/{PEDESTRIANS[0]}/{PEDESTRIANS[1]}", "p1", "pedestrians"))
    connection = cities["provisioner"].connection
    connection.command("addRoleACL", rolename=f"dataset:{owner.slug}/{PEDESTRIANS[0]}/{PEDESTRIANS[1]}",
                       acltype="publishClientReceive", topic=topic, priority=0, allow=True)
    listener = Subscriber(broker)          # after the ACL change, which disconnects the role's clients
    forgers = []
    for who in ((owner.messaging.user, passwords[owner.slug]), (None, None)):
        forger = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        if who[0]:
            forger.username_pw_set(*who)
        forger.connect(host, port)
        forger.loop_start()
        forger.publish(topic, b'{"result": "forged"}', qos=1).wait_for_publish(5)
        forgers.append(forger)
    connection.publish(topic, b'{"result": "real"}', qos=1)
    connection.flush()
    deadline = time.monotonic() + 5
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for forger in forgers:
        forger.disconnect()
        forger.loop_stop()
    listener.close()
    assert [body for _topic, body, _t in listener.received] == [{"result": "real"}]


def test_drift_is_repaired_and_deletion_removes_access(cities, broker):
    owner, neighbour, passwords = cities["owner"], cities["neighbour"], cities["passwords"]
    provisioner: MessagingProvisioner = cities["provisioner"]
    credentials = {"mqtt-password": passwords[owner.slug]}
    assert provisioner.observe(owner.messaging, credentials).in_sync
    water = f"dataset:{owner.slug}/{WATER[0]}/{WATER[1]}"
    weather = f"dataset:{owner.slug}/{WEATHER[0]}/{WEATHER[1]}"
    # Someone changes the password, takes the share away and hands out the private weather.
    provisioner.connection.command("setClientPassword", username=owner.messaging.user, password="changed-by-hand")
    provisioner.connection.command("removeGroupRole", groupname=neighbour.messaging.group, rolename=water)
    provisioner.connection.command("addGroupRole", groupname=neighbour.messaging.group, rolename=weather)
    provisioner.connection.command("removeGroupClient", groupname=owner.messaging.group,
                                   username=owner.messaging.user)
    # The drift sweep's one listing of the broker sees all but the password (a login per tenant,
    # left to the rotating audit's full observe).
    swept = provisioner.observe_from(provisioner.snapshot([owner.messaging, neighbour.messaging]), owner.messaging)
    assert {(d.action, str(d.payload)) for d in swept} == {
        ("add_group_role", str((neighbour.messaging.group, water))),
        ("remove_group_role", str((neighbour.messaging.group, weather))),
        ("add_group_client", owner.messaging.group)}, swept.summary()
    diff = provisioner.observe(owner.messaging, credentials)
    assert {(d.action, str(d.payload)) for d in diff} >= {
        ("set_password", "None"), ("add_group_role", str((neighbour.messaging.group, water))),
        ("remove_group_role", str((neighbour.messaging.group, weather))), ("add_group_client", owner.messaging.group)}
    assert passwords[owner.slug] not in diff.summary() and "changed-by-hand" not in diff.summary()
    actions = provisioner.apply(owner.messaging, diff, credentials)
    assert actions and not any(passwords[owner.slug] in action for action in actions)
    assert provisioner.observe(owner.messaging, credentials).in_sync
    snapshot = provisioner.snapshot([owner.messaging, neighbour.messaging])
    assert all(provisioner.observe_from(snapshot, d.messaging).in_sync for d in (owner, neighbour)), \
        "the sweep would see drift in a repaired broker"
    assert authenticates(broker.mqtt_server, broker.mqtt_port, owner.messaging.user, passwords[owner.slug])

    provisioner.delete(owner.messaging, keep_data=True)
    assert not authenticates(broker.mqtt_server, broker.mqtt_port, owner.messaging.user, passwords[owner.slug])
    roles = provisioner.connection.command("listRoles", verbose=False, count=-1, offset=0)["roles"]
    assert not [role for role in roles if role.startswith(f"dataset:{owner.slug}/")]


@pytest.fixture
def own_broker(tmp_path, settings):
    """A broker of this test alone (own state folder and port), so it can be stopped."""
    from mail_fixtures import _free_port

    from urbanstack.devplatform import credentials
    from urbanstack.devplatform import platform as dev_platform
    from urbanstack.settings import Settings

    own = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path / "state"), "URBANSTACK_MQTT_PORT": str(_free_port()),
                             "URBANSTACK_READY_TIMEOUT": "30"})
    dev_platform.up(own, ["mosquitto"])
    try:
        yield credentials.fill(own)
    finally:
        dev_platform.down(own, purge=True)


def test_readings_stored_during_a_broker_outage_are_announced_after_it_within_a_bound(own_broker):
    from urbanstack.devplatform import platform as dev_platform
    from urbanstack.devplatform import processes
    from urbanstack.runtime.sink import Rows, TableSchema, route, ticks

    settings = own_broker
    slug = f"mq{uuid.uuid4().hex[:8]}"
    manifest, tools = harness.new_tenant()
    manifest["metadata"]["name"] = slug
    desired = plan(parse_municipality(manifest), tools)   # pedestrian counts are open data in the example
    provisioner = MessagingProvisioner(settings.mqtt_server, settings.mqtt_port, *settings.mqtt_admin())
    ensure(provisioner, desired.messaging, {"mqtt-password": "pw-" + secrets.token_urlsafe(12)})
    provisioner.close()
    target = route(f"{slug}.{PEDESTRIANS[0]}.{PEDESTRIANS[1]}")
    schema = TableSchema.from_columns(target.database, target.table, [
        ("event_id", "String", "", ""), ("source", "LowCardinality(String)", "", ""), ("sensor_id", "String", "", ""),
        ("observed_at", "DateTime64(3, 'UTC')", "", ""), ("lon", "Nullable(Float64)", "", ""),
        ("lat", "Nullable(Float64)", "", ""), ("pedestrians", "UInt32", "", "[persons]")])
    at = ticks(datetime.now(timezone.utc), 3)

    def rows(*sensors: str) -> Rows:
        return Rows([[f"e-{s}" for s in sensors], ["x"] * len(sensors), list(sensors), [at] * len(sensors),
                     [None] * len(sensors), [None] * len(sensors), [7] * len(sensors)])

    listener = Subscriber(settings)
    listener.client.reconnect_delay_set(1, 2)
    user, password = settings.mqtt_admin()
    publisher = ObservationPublisher(settings.mqtt_server, settings.mqtt_port, user, password, BASE,
                                     max_pending_rows=3).start()
    try:
        publisher.stored(target, schema, rows("a"))
        deadline = time.monotonic() + 20
        while len(listener.received) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [body["parameters"]["eventId"] for _t, body, _ in listener.received] == ["e-a"]

        processes.stop("mosquitto", settings.run_dir)
        publisher.stored(target, schema, rows("b", "c"))       # waits: 2 of at most 3 rows
        publisher.stored(target, schema, rows("d", "e"))       # would make 4: dropped and counted
        assert publisher.dropped == 2
        dev_platform.up(settings, ["mosquitto"])
        deadline = time.monotonic() + 30
        while len(listener.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        publisher.close()
        listener.close()
    assert sorted(body["parameters"]["eventId"] for _t, body, _ in listener.received) == ["e-a", "e-b", "e-c"]
    assert publisher.idle()


def test_logins_and_commands_work_when_the_process_holds_over_a_thousand_files(broker):
    """The operator with the embedded ClickHouse engine keeps a file open per table: from ~250
    municipalities on its new sockets are numbered above 1023, which paho's select()-based loop
    could not wait on (every MQTT login check timed out and the municipality went not Ready)."""
    import os
    import resource

    from urbanstack.devplatform import credentials
    from urbanstack.runtime.mqtt.client import Connection

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}; the test needs 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while True:   # until the next descriptor is numbered 1024 or higher
            fd = os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd >= 1030:
                break
        settings = credentials.fill(broker)
        host, port = settings.mqtt_server, settings.mqtt_port
        assert authenticates(host, port, None, None, timeout=10), "anonymous login (open data) refused"
        assert not authenticates(host, port, "muni-nobody", "whatever", timeout=10)
        connection = Connection(host, port, settings.mqtt_admin_user, settings.mqtt_admin_password)
        try:
            assert connection.wait_connected(10), "the admin connection was never established"
            assert "roles" in connection.command("listRoles", verbose=False, count=-1, offset=0)
        finally:
            connection.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
