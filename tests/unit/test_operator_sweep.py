"""The drift sweep's contract with in-memory provisioners (the real listings are exercised against
the real backends in tests/integration/test_operator_drift.py and test_operator.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from urbanstack.operator.plan import KafkaAcl
from urbanstack.operator.provisioners.base import BackendUnavailable, Diff, Difference
from urbanstack.operator.provisioners.streaming import KafkaSnapshot, StreamingProvisioner, _acl_binding, _acl_key
from urbanstack.operator.sweep import DriftSweeper

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [yaml.safe_load((ROOT / "examples" / n).read_text())
         for n in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml")]
for tool in TOOLS:
    tool["metadata"]["generation"] = 1


def _municipality(name: str, phase: str = "Ready") -> dict:
    body = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml").read_text()))
    body["metadata"] = {"name": name, "uid": f"uid-{name}", "generation": 2}
    body["spec"]["identity"] = {"strategy": "organization", "domains": [f"{name}.example.org"]}
    body["spec"].pop("shares", None)
    body["status"] = {"phase": phase, "observedGeneration": 2}
    return body


class Listing:
    """A provisioner with the optional bulk interface: one snapshot call per sweep."""

    def __init__(self, name, drifted=(), down=False):
        self.name, self.drifted, self.down = name, set(drifted), down
        self.snapshots = 0
        self.compared: list[str] = []

    def snapshot(self, parts):
        if self.down:
            raise BackendUnavailable(self.name, "connection refused")
        self.snapshots += 1
        return {"parts": len(parts)}

    def observe_from(self, snapshot, part):
        slug = getattr(part, "slug", None) or part.labels["urbanstack.io/municipality"] if hasattr(part, "labels") \
            else None
        self.compared.append(slug)
        if slug in self.drifted:
            return Diff((Difference("topic x", "exists", True, False, "create_topic"),))
        return Diff()


class PerTenant:
    """A provisioner without the bulk interface (as a new backend may be)."""
    name = "MQTT"


class Backends:
    def __init__(self, runtime, others=()):
        self.runtime = runtime
        self.streaming = self.warehouse = self.identity = Listing("unused")
        self._others = list(others)

    def extra_parts(self, desired):
        return [(p, desired.runtime) for p in self._others]


def _sweeper(backends, municipalities, submitted, audit_interval=0.0):
    return DriftSweeper(backends, interval=60, audit_interval=audit_interval,
                        list_municipalities=lambda: municipalities, list_tools=lambda: TOOLS,
                        submit=lambda name, why: submitted.append((name, why)))


def test_one_listing_per_backend_and_a_reconcile_only_for_what_differs():
    runtime = Listing("Kubernetes", drifted={"m-007"})
    backends = Backends(runtime)
    municipalities = [_municipality(f"m-{i:03d}") for i in range(50)]
    submitted: list = []
    report = _sweeper(backends, municipalities, submitted).sweep()
    assert runtime.snapshots == 1 and len(runtime.compared) == 50
    assert report.tenants == 50
    assert [name for name, _ in submitted] == ["m-007"]
    assert "topic x exists" in submitted[0][1]


def test_per_tenant_reads_overlap_and_still_compare_everyone_once():
    runtime = Listing("Kubernetes", drifted={"m-3"})
    runtime.reads_per_tenant = True
    submitted: list = []
    report = _sweeper(Backends(runtime), [_municipality(f"m-{i}") for i in range(20)], submitted).sweep()
    assert sorted(runtime.compared) == sorted(f"m-{i}" for i in range(20)) and report.tenants == 20
    assert [name for name, _ in submitted] == ["m-3"]


def test_municipalities_still_on_the_change_path_are_not_swept():
    backends = Backends(Listing("Kubernetes"))
    creating = _municipality("new", phase="Provisioning")
    changed = _municipality("changed")
    changed["metadata"]["generation"] = 3     # the change reconcile has not finished yet
    deleting = _municipality("gone")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    report = _sweeper(backends, [creating, changed, deleting, _municipality("ready")], []).sweep()
    assert report.tenants == 1


def test_a_backend_without_the_bulk_interface_is_observed_per_municipality_as_before():
    backends = Backends(Listing("Kubernetes"), others=[PerTenant()])
    submitted: list = []
    _sweeper(backends, [_municipality("a"), _municipality("b")], submitted).sweep()
    assert sorted(name for name, _ in submitted) == ["a", "b"]
    assert all("MQTT: observed per municipality" in why for _, why in submitted)


def test_an_unavailable_backend_is_reported_and_the_others_still_compared():
    down, up = Listing("Keycloak", down=True), Listing("Kafka", drifted={"a"})
    backends = Backends(Listing("Kubernetes"), others=[down, up])
    submitted: list = []
    report = _sweeper(backends, [_municipality("a"), _municipality("b")], submitted).sweep()
    assert "Keycloak" in report.unavailable and [n for n, _ in submitted] == ["a"]


def test_the_audit_rotates_so_everyone_is_fully_observed_once_per_audit_interval():
    backends = Backends(Listing("Kubernetes"))
    municipalities = [_municipality(f"m-{i}") for i in range(10)]
    submitted: list = []
    sweeper = _sweeper(backends, municipalities, submitted, audit_interval=600)   # 10 sweeps of 60 s
    seen = []
    for _ in range(10):
        seen += sweeper.sweep().audited
    assert sorted(seen) == sorted(m["metadata"]["name"] for m in municipalities)
    assert all(why == "audit" for _, why in submitted)


def test_kafka_bulk_comparison_attributes_acls_like_the_per_tenant_observe():
    """A prefixed grant on another tenant's topics to this tenant's principal is revoked by this
    tenant; a share another tenant grants it is not this tenant's to judge."""
    from urbanstack.operator.models import parse_citytool, parse_municipality
    from urbanstack.operator.plan import plan

    tools = {t.name: t for t in (parse_citytool(copy.deepcopy(t)) for t in TOOLS)}
    part = plan(parse_municipality(_municipality("aa")), tools).streaming
    planned = {_acl_key(_acl_binding(a)) for a in part.acls}
    foreign_share = _acl_key(_acl_binding(KafkaAcl("TOPIC", "LITERAL", "bb.pegel-warnung.water_levels", part.principal,
                                                   "READ")))
    wildcard = _acl_key(_acl_binding(KafkaAcl("TOPIC", "PREFIXED", "bb.", part.principal, "READ")))
    snapshot = KafkaSnapshot(partitions={t.name: t.partitions for t in part.topics},
                             configs={t.name: dict(t.config) for t in part.topics},
                             acls=sorted(planned | {foreign_share, wildcard}),
                             mechanisms={part.user: {part.mechanism}})
    diff = StreamingProvisioner.observe_from(None, snapshot, part)
    assert [(d.action, d.payload) for d in diff] == [("delete_acl", wildcard)]


def test_a_change_the_watch_reports_is_compared_at_once_and_queued_only_if_it_differs():
    """The watch cache reports a namespace; only that municipality is compared again (not everyone),
    and queued if it differs; a namespace no swept municipality owns is ignored."""
    runtime = Listing("Kubernetes")
    backends = Backends(runtime)
    submitted: list = []
    sweeper = _sweeper(backends, [_municipality(f"m-{i:03d}") for i in range(5)], submitted)
    sweeper.sweep()
    runtime.compared.clear()
    runtime.drifted = {"m-003"}
    sweeper.changed("muni-m-003")
    sweeper.changed("muni-m-001")
    sweeper.changed("kube-system")
    assert sorted(sweeper.check_changed()) == ["m-003"]
    assert sorted(runtime.compared) == ["m-001", "m-003"]
    assert [name for name, _why in submitted] == ["m-003"]
    assert sweeper.check_changed() == {}   # reported once, compared once
