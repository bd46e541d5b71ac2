"""Each backend's diff from what its server reports, without a server: every attribute the
plan sets is observed as a difference with the action that repairs it, and nothing else.
(The real backends repeat this in tests/integration: test_operator_drift.py and friends.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import Diff, Difference, dispatch
from urbanstack.operator.provisioners.streaming import _acl_binding, _acl_key, streaming_differences
from urbanstack.operator.provisioners.warehouse import AccessRows, access_differences

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return yaml.safe_load((ROOT / "examples" / name).read_text(encoding="utf-8"))


TOOLS = [parse_citytool(_load("citytool-passantenfrequenz-wetter.yaml")),
         parse_citytool(_load("citytool-pegel-warnung.yaml"))]


def desired(**spec):
    manifest = _load("municipality-guetersloh.yaml")
    manifest["spec"].update(spec)
    return plan(parse_municipality(manifest), TOOLS)


# The contract ---------------------------------------------------------------------------

def test_dispatch_runs_exactly_the_diffs_actions_in_order():
    ran = []
    diff = Diff((Difference("a", "x", 1, 0, "first"), Difference("b", "y", 2, 0, "second"),
                 Difference("c", "z", 3, 0, "first")))
    done = dispatch("Test", {"first": lambda d: ran.append(d.object) or f"did {d.object}",
                             "second": lambda d: ran.append(d.object)}, diff)
    assert ran == ["a", "b", "c"] and done == ["did a", "did c"]
    assert dispatch("Test", {}, Diff()) == []


def test_an_action_without_a_handler_is_an_error_naming_it():
    with pytest.raises(RuntimeError, match="no action 'grow'.*topic t partitions: wanted 3, found 1"):
        dispatch("Kafka", {}, Diff((Difference("topic t", "partitions", 3, 1, "grow"),)))


def test_summary_names_object_attribute_wanted_and_found():
    diff = Diff(tuple(Difference(f"topic t{i}", "exists", True, False, "create_topic") for i in range(7)))
    assert diff.summary() == ("; ".join(f"topic t{i} exists: wanted True, found False" for i in range(5))
                              + " and 2 more")
    assert Diff().summary() == "in sync" and Diff().in_sync


# Kafka --------------------------------------------------------------------------------------

def _broker(part):
    """What a broker in sync with ``part`` reports."""
    return dict(partitions={t.name: t.partitions for t in part.topics},
                configs={t.name: dict(t.config) for t in part.topics}, mechanisms={part.mechanism},
                authenticates=True, acls={_acl_key(_acl_binding(a)) for a in part.acls})


def _kafka(part, **changes):
    return streaming_differences(part, **(_broker(part) | changes))


def test_kafka_in_sync_is_an_empty_diff():
    assert _kafka(desired().streaming).in_sync


def test_kafka_each_drifted_attribute_is_a_difference_with_its_action():
    part = desired().streaming
    topic = part.topics[0]
    broker = _broker(part)
    cases = {
        "missing topic": (dict(partitions={k: v for k, v in broker["partitions"].items() if k != topic.name}),
                          (f"topic {topic.name}", "exists", True, False, "create_topic")),
        "fewer partitions": (dict(partitions=broker["partitions"] | {topic.name: 1}),
                             (f"topic {topic.name}", "partitions", topic.partitions, 1, "add_partitions")),
        "retention changed": (dict(configs=broker["configs"] | {topic.name: topic.config | {"retention.ms": "1"}}),
                              (f"topic {topic.name}", "config retention.ms", topic.config["retention.ms"], "1",
                               "set_config")),
        "no SCRAM credential": (dict(mechanisms={"SCRAM-SHA-256"}, authenticates=None),
                                (f"SCRAM user {part.user}", "credential SCRAM-SHA-512", "present", "absent",
                                 "set_password")),
        "password changed": (dict(authenticates=False),
                             (f"SCRAM user {part.user}", "password", "the tenant Secret's password authenticates",
                              "rejected", "set_password")),
    }
    if topic.partitions == 1:
        cases.pop("fewer partitions")
    for name, (change, expected) in cases.items():
        diff = _kafka(part, **change)
        assert [(d.object, d.attribute, d.wanted, d.found, d.action) for d in diff] == [expected], name


def test_kafka_more_partitions_than_planned_is_not_a_difference():
    part = desired().streaming
    broker = _broker(part)
    assert _kafka(part, partitions={k: v + 2 for k, v in broker["partitions"].items()}).in_sync


def test_kafka_acls_are_granted_and_revoked():
    part = desired().streaming
    suspended = desired(suspended=True).streaming
    # The broker still has the active tenant's ACLs: suspension revokes the write ACLs, nothing else.
    diff = _kafka(suspended, acls=_broker(part)["acls"])
    assert {d.action for d in diff} == {"delete_acl"}
    assert sorted(key[4] for key in (d.payload for d in diff)) == ["WRITE"]
    # Resuming grants them again.
    diff = _kafka(part, acls=_broker(suspended)["acls"])
    assert [d.action for d in diff] == ["create_acl"] and diff.items[0].payload.operation.name == "WRITE"
    assert "ACL ALLOW WRITE on TOPIC PREFIXED guetersloh." in diff.items[0].object


def test_the_sweeps_indexed_kafka_snapshot_answers_like_a_scan_of_every_topic_and_binding():
    """The sweep compares every tenant with one listing; its indexes must give each tenant exactly
    its own topics and bindings: ``bad``'s not ``bad-oeynhausen``'s, and a share another tenant
    grants it is that tenant's to observe."""
    from urbanstack.operator.provisioners.streaming import KafkaSnapshot, StreamingProvisioner

    parts = []
    for slug in ("bad", "bad-oeynhausen", "guetersloh"):
        manifest = _load("municipality-guetersloh.yaml")
        manifest["metadata"]["name"] = slug
        parts.append(plan(parse_municipality(manifest), TOOLS).streaming)
    partitions = {t.name: t.partitions for p in parts for t in p.topics} | {"bad-oeynhausen.x.y": 1, "unrelated": 1}
    acls = {_acl_key(_acl_binding(a)) for p in parts for a in p.acls}
    # bindings for bad-oeynhausen on one of bad's topics that bad's plan does not grant (bad owns and
    # revokes them), and bad lost one of its own bindings.
    shared = parts[0].topics[0].name
    acls.add(("TOPIC", "LITERAL", shared, parts[1].principal, "READ", "ALLOW", "*"))
    acls.add(("TOPIC", "LITERAL", shared, parts[1].principal, "WRITE", "ALLOW", "*"))
    acls.discard(next(iter(_acl_key(_acl_binding(a)) for a in parts[0].acls)))
    snapshot = KafkaSnapshot(partitions=partitions, configs={t.name: dict(t.config) for p in parts for t in p.topics},
                             acls=sorted(acls), mechanisms={p.user: {p.mechanism} for p in parts})
    provisioner = StreamingProvisioner({})

    def scanned(part):
        prefix = part.topic_prefix
        from urbanstack.operator.provisioners.streaming import _share_from_another
        mine = {k for k in acls if k[3] == part.principal and not _share_from_another(k, prefix)}
        mine |= {k for k in acls if k[0] == "TOPIC" and k[1] == "LITERAL" and k[2].startswith(prefix)}
        return streaming_differences(part, {n: c for n, c in partitions.items() if n.startswith(prefix)},
                                     snapshot.configs, {part.mechanism}, None, mine)

    for part in parts:
        indexed = provisioner.observe_from(snapshot, part)
        assert [(d.object, d.action) for d in indexed] == [(d.object, d.action) for d in scanned(part)], part.user
    bad, oeynhausen, guetersloh = (provisioner.observe_from(snapshot, p) for p in parts)
    assert sorted(d.action for d in bad) == ["create_acl", "delete_acl", "delete_acl"], "lost one back, strays revoked"
    # A write is no share: the grantee revokes it too; the read is left to the topic's owner.
    assert [(d.action, d.payload[4]) for d in oeynhausen] == [("delete_acl", "WRITE")]
    assert guetersloh.in_sync


def test_the_sweep_describes_every_topic_config_within_its_rotation_and_new_ones_at_once():
    """Describing 5,000 topics' configs every minute was most of the idle operator's Kafka cost:
    each sweep describes one slot of them, a topic not seen yet at once, one a repair changed at the
    next sweep, and a tenant's full observe refreshes what the sweep keeps."""
    from urbanstack.operator.provisioners.streaming import StreamingProvisioner, _config_slot

    provisioner = StreamingProvisioner({})
    described: list[list[str]] = []
    provisioner._configs = lambda names: described.append(sorted(names)) or {n: {"retention.ms": "1"} for n in names}
    topics = sorted(f"t{i}.tool.ds" for i in range(50))
    assert sorted(provisioner._rotating_configs(topics)) == topics and described[-1] == topics   # all unseen
    seen_within = set()
    for _ in range(provisioner.config_slots):
        configs = provisioner._rotating_configs(topics)
        assert sorted(configs) == topics, "every planned topic has a config to compare, fresh or kept"
        seen_within.update(described[-1])
        assert len(described[-1]) < len(topics), "a sweep describes a slot, not everything"
    assert seen_within == set(topics), f"not described within {provisioner.config_slots} sweeps"

    new = "new.tool.ds"
    provisioner._rotating_configs(topics + [new])
    assert new in described[-1], "a new topic is described at its first sweep"
    provisioner._forget_configs([topics[0]])          # a repair changed its config
    provisioner._rotating_configs(topics + [new])
    assert topics[0] in described[-1]
    slot = provisioner._config_sweeps % provisioner.config_slots
    kept = next(t for t in topics if _config_slot(t, provisioner.config_slots) != slot)
    provisioner._remember_configs({kept: {"retention.ms": "2"}})   # a full observe read it
    configs = provisioner._rotating_configs(topics + [new])
    assert kept not in described[-1] and configs[kept] == {"retention.ms": "2"}


# ClickHouse server: users, roles, grants, quotas, row policies --------------------------------

def _server(part) -> AccessRows:
    """What a ClickHouse server in sync with ``part`` reports in its system tables."""
    access = part.access
    return AccessRows(roles={access.role}, user=(False, (access.role,), part.database), user_roles={access.role},
                      grants=access.privileges(),
                      quota=((access.role,), {3600: (access.queries_per_hour, access.errors_per_hour)}),
                      row_policies=set())


def _access(part, rows, login=True):
    return [(d.object, d.attribute, d.action, d.payload) for d in access_differences(part.access, part.database,
                                                                                      rows, login)]


def test_server_access_in_sync_is_an_empty_diff():
    part = desired().warehouse
    assert _access(part, _server(part)) == []


def test_suspension_revokes_insert_and_resuming_grants_it():
    active, suspended = desired().warehouse, desired(suspended=True).warehouse
    assert _access(suspended, _server(active)) == [
        ("grant INSERT on guetersloh.*", "to muni_guetersloh__role", "execute",
         ("REVOKE INSERT ON `guetersloh`.* FROM `muni_guetersloh__role`",))]
    assert _access(active, _server(suspended)) == [
        ("grant INSERT on guetersloh.*", "to muni_guetersloh__role", "execute",
         ("GRANT INSERT ON `guetersloh`.* TO `muni_guetersloh__role`",))]


def test_a_share_taken_back_is_revoked_and_a_new_one_granted():
    shared = desired().warehouse
    unshared = desired(shares=[]).warehouse
    revoked = _access(unshared, _server(shared))
    assert {d[2] for d in revoked} == {"execute"}
    statements = sorted(d[3][0] for d in revoked)
    assert "REVOKE SELECT ON `guetersloh`.`pegel_warnung__water_levels` FROM `muni_bielefeld__role`" in statements
    assert ("REVOKE SELECT ON `guetersloh`.`passantenfrequenz_wetter__pedestrian_counts` "
            "FROM `urbanstack_public_reader`") in statements
    assert all(s.startswith("REVOKE SELECT ON `guetersloh`.`") for s in statements)
    granted = sorted(d[3][0] for d in _access(shared, _server(unshared)))
    assert granted == sorted(s.replace("REVOKE", "GRANT").replace(" FROM ", " TO ") for s in statements)


def test_grants_owned_elsewhere_are_left_alone_and_global_ones_revoked():
    part = desired().warehouse
    rows = _server(part)
    # Bielefeld shared a table with Gütersloh: Bielefeld's provisioner owns that grant.
    # A global SELECT to the tenant's user would read every tenant: revoked.
    rows = dataclasses.replace(rows, grants=rows.grants | {("muni_guetersloh__role", "bielefeld", "t", "SELECT")})
    assert _access(part, rows) == []
    rows = dataclasses.replace(rows, grants=rows.grants | {("muni_guetersloh", None, None, "SELECT")})
    assert _access(part, rows) == [("grant SELECT on *.*", "to muni_guetersloh", "execute",
                                    ("REVOKE SELECT ON *.* FROM `muni_guetersloh`",))]


def test_quota_changes_and_binding_are_repaired():
    part = desired().warehouse
    bigger = desired(plan={"name": "large"}).warehouse
    assert bigger.access.queries_per_hour != part.access.queries_per_hour
    limits = _server(bigger).quota[1]
    for rows in (_server(part),                                                        # limits changed
                 dataclasses.replace(_server(bigger), quota=(("someone_else",), limits)),  # bound elsewhere
                 dataclasses.replace(_server(bigger), quota=None)):                     # dropped
        found = _access(bigger, rows)
        assert [(d[0], d[2]) for d in found] == [(f"quota {bigger.access.quota}", "execute")]
        assert found[0][3] == (bigger.access.quota_sql(),)


def test_missing_role_row_policies_and_role_grants():
    part = desired().warehouse
    access = part.access
    rows = dataclasses.replace(_server(part), roles=set(), user_roles={"admin_role"},
                               row_policies={("hide", "guetersloh", "pegel_warnung__water_levels")})
    assert _access(part, rows) == [
        (f"role {access.role}", "exists", "execute", ("CREATE ROLE IF NOT EXISTS `muni_guetersloh__role`",)),
        ("row policy hide on guetersloh.pegel_warnung__water_levels", "exists", "execute",
         ("DROP ROW POLICY IF EXISTS `hide` ON `guetersloh`.`pegel_warnung__water_levels`",)),
        (f"user {access.user}", f"role {access.role}", "execute",
         ("GRANT `muni_guetersloh__role` TO `muni_guetersloh`",)),
        (f"user {access.user}", "role admin_role", "execute", ("REVOKE `admin_role` FROM `muni_guetersloh`",)),
    ]


@pytest.mark.parametrize("user,login,attribute", [
    (None, None, "exists"),
    ((False, ("muni_guetersloh__role",), "default"), True, "defaults"),
    ((True, (), "guetersloh"), True, "defaults"),
    ((False, ("muni_guetersloh__role",), "guetersloh"), False, "password"),
])
def test_user_is_recreated_from_the_secret_when_missing_misconfigured_or_its_password_fails(user, login, attribute):
    part = desired().warehouse
    found = _access(part, dataclasses.replace(_server(part), user=user), login=login)
    assert found == [(f"user {part.access.user}", attribute, "create_user", None)]
