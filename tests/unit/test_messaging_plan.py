"""The MQTT provisioner's plan and diff (pure), and the Observation messages the publisher builds."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from urbanstack.operator.models import parse_municipality
from urbanstack.operator.provisioners.messaging import (OPEN_GROUP, SUBSCRIBER_ROLE, Broker, messaging_differences,
                                                        messaging_part)
from urbanstack.runtime.api.sensorthings.graph import observation_id, stable_id
from urbanstack.runtime.mqtt.publisher import messages, topic_of
from urbanstack.runtime.sink import TableSchema, ticks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def guetersloh():
    manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
    return parse_municipality(copy.deepcopy(manifest))


DATASETS = [("passantenfrequenz-wetter", "pedestrian_counts"), ("passantenfrequenz-wetter", "weather"),
            ("pegel-warnung", "water_levels")]


def test_plan_names_readers_of_every_dataset():
    part = messaging_part(guetersloh(), DATASETS)
    readers = dict(part.readers)
    assert readers["dataset:guetersloh/pegel-warnung/water_levels"] == ("guetersloh", "bielefeld",
                                                                        "rheda-wiedenbrueck")
    assert readers["dataset:guetersloh/passantenfrequenz-wetter/weather"] == ("guetersloh",)
    assert part.public == ("dataset:guetersloh/passantenfrequenz-wetter/pedestrian_counts",)
    assert part.user == "muni-guetersloh" and part.password_key == "mqtt-password"


def _in_sync(part) -> Broker:
    groups = {part.group: {SUBSCRIBER_ROLE}, OPEN_GROUP: {SUBSCRIBER_ROLE, *part.public}}
    for role, slugs in part.readers:
        for slug in slugs:
            groups.setdefault(f"municipality:{slug}", set()).add(role)
    return Broker(roles=frozenset({SUBSCRIBER_ROLE, *part.roles}),
                  groups={g: frozenset(r) for g, r in groups.items()}, anonymous_group=OPEN_GROUP,
                  client_groups=frozenset({part.group, OPEN_GROUP}), authenticates=True)


def test_empty_broker_is_provisioned_in_dependency_order():
    part = messaging_part(guetersloh(), DATASETS)
    diff = messaging_differences(part, Broker(frozenset(), {}, None, None, None))
    actions = [d.action for d in diff]
    # Roles and groups before the client that joins them and the grants that name them.
    assert actions.index("create_role") < actions.index("create_client") < actions.index("add_group_role")
    assert actions.index("create_group") < actions.index("create_client")
    assert ("municipality:bielefeld", "dataset:guetersloh/pegel-warnung/water_levels") in \
        [d.payload for d in diff if d.action == "add_group_role"]
    assert messaging_differences(part, _in_sync(part)).in_sync


def test_drift_is_found_and_a_revoked_share_removed():
    part = messaging_part(guetersloh(), DATASETS)
    broker = _in_sync(part)
    groups = dict(broker.groups)
    # Someone gave Bielefeld the private weather, and Gütersloh's password was changed on the broker.
    groups["municipality:bielefeld"] = groups["municipality:bielefeld"] | {
        "dataset:guetersloh/passantenfrequenz-wetter/weather", "dataset:bielefeld/x/y"}
    drifted = Broker(broker.roles | {"dataset:guetersloh/old/gone"}, groups, "somebody-else",
                     broker.client_groups - {OPEN_GROUP}, False)
    diff = messaging_differences(part, drifted)
    found = {(d.action, str(d.payload)) for d in diff}
    assert ("remove_group_role", str(("municipality:bielefeld", "dataset:guetersloh/passantenfrequenz-wetter/weather"))) \
        in found
    assert not any("bielefeld/x/y" in payload for _action, payload in found)   # another owner's role: not ours
    assert ("delete_role", "dataset:guetersloh/old/gone") in found
    assert {"set_password", "set_anonymous_group", "add_group_client"} <= {action for action, _ in found}
    assert "rejected" in diff.summary() and "password" in diff.summary()


def test_the_sweeps_view_per_tenant_gives_the_diff_of_the_whole_configuration():
    """The sweep compares each tenant with only its part of the broker (its roles, the groups that
    hold or want them): at 1,000 tenants a scan of every group and role per tenant was quadratic.
    The diff must be what the whole configuration gives, for ``bad`` next to ``bad-oeynhausen``."""
    from urbanstack.operator.provisioners.messaging import BrokerSnapshot

    def town(slug, shares=()):
        manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
        manifest["metadata"]["name"] = slug
        manifest["spec"]["shares"] = list(shares)
        return messaging_part(parse_municipality(manifest), DATASETS)

    parts = [town("bad", [{"tool": "pegel-warnung", "dataset": "water_levels", "municipalities": ["bad-oeynhausen"]}]),
             town("bad-oeynhausen"), guetersloh_part := messaging_part(guetersloh(), DATASETS)]
    roles, groups = {SUBSCRIBER_ROLE}, {OPEN_GROUP: {SUBSCRIBER_ROLE}}
    for part in parts:
        whole = _in_sync(part)
        roles |= whole.roles
        for group, granted in whole.groups.items():
            groups.setdefault(group, set()).update(granted)
    # Drift: bad lost a share, holds a stray role in another tenant's group, and has an extra role.
    groups["municipality:bad-oeynhausen"].discard("dataset:bad/pegel-warnung/water_levels")
    groups["municipality:guetersloh"].add("dataset:bad/passantenfrequenz-wetter/weather")
    roles.add("dataset:bad/old/gone")
    snapshot = BrokerSnapshot(roles=frozenset(roles), groups={g: frozenset(r) for g, r in groups.items()},
                              anonymous_group=OPEN_GROUP,
                              clients={p.user: frozenset({p.group, OPEN_GROUP}) for p in parts})
    for part in parts:
        whole = Broker(snapshot.roles, snapshot.groups, OPEN_GROUP, snapshot.clients[part.user], None)
        assert list(messaging_differences(part, snapshot.broker_for(part))) == \
            list(messaging_differences(part, whole)), part.slug
    bad = {(d.action, str(d.payload)) for d in messaging_differences(parts[0], snapshot.broker_for(parts[0]))}
    assert bad == {("add_group_role", str(("municipality:bad-oeynhausen", "dataset:bad/pegel-warnung/water_levels"))),
                   ("remove_group_role", str(("municipality:guetersloh", "dataset:bad/passantenfrequenz-wetter/weather"))),
                   ("delete_role", "dataset:bad/old/gone")}
    assert messaging_differences(guetersloh_part, snapshot.broker_for(guetersloh_part)).in_sync


def test_messages_carry_the_observation_as_the_api_writes_it():
    schema = TableSchema.from_columns("guetersloh", "passantenfrequenz_wetter__pedestrian_counts", [
        ("event_id", "String", "", ""), ("source", "LowCardinality(String)", "", ""),
        ("sensor_id", "LowCardinality(String)", "", ""), ("observed_at", "DateTime64(3, 'UTC')", "", ""),
        ("lon", "Nullable(Float64)", "", ""), ("lat", "Nullable(Float64)", "", ""),
        ("pedestrians", "UInt32", "", "[persons]"), ("temperature", "Nullable(Float64)", "", ""),
        ("location_name", "String", "", "")])
    at = datetime(2026, 12, 6, 3, 15, 0, 123000, tzinfo=timezone.utc)
    columns = [["e1"], ["hystreet"], ["100"], [ticks(at, 3)], [8.38], [51.9], [42], [None], ["Berliner Straße"]]
    out = messages("http://127.0.0.1:8080/v1.1", "guetersloh/passantenfrequenz-wetter/pedestrian_counts", schema,
                   columns)
    assert len(out) == 2   # the empty temperature is no Observation
    topic, payload = out[0]
    ref = "guetersloh/passantenfrequenz-wetter/pedestrian_counts"
    assert topic == topic_of(stable_id("Datastream", ref, "100", "pedestrians"))
    body = json.loads(payload)
    oid = observation_id(ref, "100", "pedestrians", "e1")
    assert body == {
        "@iot.selfLink": f"http://127.0.0.1:8080/v1.1/Observations({oid})", "@iot.id": oid,
        "phenomenonTime": "2026-12-06T03:15:00.123Z", "resultTime": "2026-12-06T03:15:00.123Z", "result": 42,
        "parameters": {"eventId": "e1"},
        "Datastream@iot.navigationLink": f"http://127.0.0.1:8080/v1.1/Observations({oid})/Datastream",
        "FeatureOfInterest@iot.navigationLink": f"http://127.0.0.1:8080/v1.1/Observations({oid})/FeatureOfInterest"}
    assert json.loads(out[1][1])["result"] == "Berliner Straße"


def test_values_are_written_as_the_warehouse_writes_them():
    from datetime import date

    from urbanstack.runtime.mqtt.publisher import _text

    assert _text(True, "Bool") == "true" and _text(0.1, "Float64") == "0.1" and _text(7, "UInt8") == "7"
    assert _text(date(2026, 12, 6), "Date") == "2026-12-06"
    assert _text(datetime(2026, 12, 6, 3, 4, 5, 678901, tzinfo=timezone.utc),
                 "Nullable(DateTime64(3, 'UTC'))") == "2026-12-06 03:04:05.678"
    assert _text(None, "String") is None and _text("", "String") == ""


def test_the_sink_publishes_only_with_a_configured_broker_identity(caplog):
    import dataclasses
    import logging

    from urbanstack.runtime.sink import mqtt_publisher
    from urbanstack.settings import Settings

    bare = dataclasses.replace(Settings.from_env({}), mqtt_admin_user="", mqtt_admin_password="")
    with caplog.at_level(logging.INFO):
        assert mqtt_publisher(bare) is None
    assert "URBANSTACK_MQTT_ADMIN_USER" in caplog.text


def test_the_broker_is_one_more_backend_of_the_reconcile_where_configured():
    from test_operator_reconcile import FakeBackends, FakeProvisioner, _load

    from urbanstack.operator.reconcile import finalize, parse_tools, reconcile

    body = _load("municipality-guetersloh.yaml")
    tools = parse_tools([_load("citytool-passantenfrequenz-wetter.yaml"), _load("citytool-pegel-warnung.yaml")])
    backends = FakeBackends()
    backends.messaging = FakeProvisioner("MQTT", "MessagingReady")
    backends.messaging.down = True
    outcome = reconcile(body, tools, backends)
    found = {c["type"]: c for c in outcome.status["conditions"]}
    assert found["MessagingReady"]["status"] == "False" and found["Ready"]["status"] == "False"
    assert "MQTT is unavailable" in found["MessagingReady"]["message"] and outcome.retry
    backends.messaging.down = False
    outcome = reconcile(body, tools, backends)
    assert outcome.status["phase"] == "Ready"
    assert backends.messaging.state["part"].user == "muni-guetersloh"   # what the Secret's password logs in as
    finalize(body, tools, backends)
    assert backends.messaging.deleted == [True]


def test_a_tenants_repairs_go_to_the_broker_in_one_message_and_a_refusal_names_its_command():
    """One round trip per tenant; "already exists" counts as done, any other refusal fails the
    apply (after the plugin ran every command) and says which command and why."""
    import pytest

    from urbanstack.operator.provisioners.messaging import MessagingProvisioner

    part = messaging_part(guetersloh(), DATASETS)
    diff = messaging_differences(part, Broker(frozenset(), {}, None, None, None))
    provisioner = MessagingProvisioner("127.0.0.1", 1, "admin", "unused")
    sent: list[list[dict]] = []

    def broker(commands, *, check=True):
        sent.append(commands)
        return [{"error": "Role already exists"} if c["command"] == "createRole" else {} for c in commands]

    provisioner._run = broker
    actions = provisioner.apply(part, diff, {"mqtt-password": "pw"})
    assert len(sent) == 1 and len(sent[0]) == len(diff.items) == len(actions)
    assert [c["command"] for c in sent[0]][:2] == ["createRole", "createRole"]

    def refusing(commands, *, check=True):
        return [{"error": "Group not found"} if c["command"] == "addGroupRole" else {} for c in commands]

    provisioner._run = refusing
    with pytest.raises(RuntimeError, match="refused addGroupRole: Group not found"):
        provisioner.apply(part, diff, {"mqtt-password": "pw"})
