"""The reconcile loop's contract, with in-memory provisioners (the real ones are
exercised against the real backends in tests/integration/test_operator.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from urbanstack.operator.ags import MunicipalityDirectory
from urbanstack.operator.provisioners.base import BackendUnavailable, Conflict, Diff, Difference
from urbanstack.operator.reconcile import finalize, parse_tools, reconcile
from urbanstack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return yaml.safe_load((ROOT / "examples" / name).read_text())


class FakeProvisioner:
    """Keeps the applied part in memory; its diff is "everything" until the part was applied."""

    def __init__(self, name, condition):
        self.name = name
        self.condition = condition
        self.state: dict = {}
        self.down = False
        self.conflict = False
        self.applied: list[Diff] = []
        self.observed: list[Diff] = []
        self.deleted: list[bool] = []

    def observe(self, part, credentials):
        if self.down:
            raise BackendUnavailable(self.name, "connection refused")
        if self.conflict:
            raise Conflict(f"{self.name} object belongs to municipality 'other'")
        diff = Diff() if self.state.get("part") == part else Diff((
            Difference("everything", "exists", True, False, "create", part),))
        self.observed.append(diff)
        return diff

    def apply(self, part, diff, credentials):
        if self.down:
            raise BackendUnavailable(self.name, "connection refused")
        self.applied.append(diff)
        for difference in diff:
            self.state["part"] = difference.payload
        return [f"{self.name} applied"]

    def delete(self, part, *, keep_data):
        self.deleted.append(keep_data)
        return []

    def endpoints(self, part):
        return {"issuer": "http://kc/realms/x"}


class FakeRuntime(FakeProvisioner):
    def read_credentials(self, part):
        return {key: "generated" for key in part.secret.keys} if "part" in self.state else None


class FakeBackends:
    def __init__(self):
        self.settings = Settings.from_env({"HOME": "/tmp"})
        self.runtime = FakeRuntime("Kubernetes", "RuntimeReady")
        self.streaming = FakeProvisioner("Kafka", "StreamingReady")
        self.warehouse = FakeProvisioner("ClickHouse", "WarehouseReady")
        self.identity = FakeProvisioner("Keycloak", "IdentityReady")


@pytest.fixture()
def world():
    body = _load("municipality-guetersloh.yaml")
    body["metadata"]["generation"] = 3
    tools = parse_tools([_load("citytool-passantenfrequenz-wetter.yaml"), _load("citytool-pegel-warnung.yaml")])
    return body, tools, FakeBackends()


def _conditions(outcome):
    return {c["type"]: c for c in outcome.status["conditions"]}


def test_all_backends_provisioned_means_ready(world):
    body, tools, backends = world
    outcome = reconcile(body, tools, backends)
    found = _conditions(outcome)
    assert {t: c["status"] for t, c in found.items()} == {
        "RuntimeReady": "True", "StreamingReady": "True", "WarehouseReady": "True", "IdentityReady": "True",
        "Ready": "True", "Synced": "True"}
    assert all(c["observedGeneration"] == 3 for c in found.values())
    assert outcome.status["phase"] == "Ready" and not outcome.retry
    assert outcome.status["names"]["namespace"] == "muni-guetersloh"
    assert outcome.status["endpoints"]["issuer"] == "http://kc/realms/x"
    assert any(e.reason == "Provisioned" for e in outcome.events)


def test_second_pass_changes_nothing_and_keeps_transition_times(world):
    body, tools, backends = world
    first = reconcile(body, tools, backends)
    # Transition times from long ago: a pass that rewrote them would show today's time (a 1-second
    # clock could not tell a rewrite within the same second).
    earlier = [dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in first.status["conditions"]]
    second = reconcile(dict(body, status={"conditions": earlier}), tools, backends)
    assert [len(p.applied) for p in (backends.runtime, backends.streaming, backends.warehouse,
                                     backends.identity)] == [1, 1, 1, 1]  # observed in sync: nothing applied
    assert {c["lastTransitionTime"] for c in second.status["conditions"]} == {"2020-01-01T00:00:00Z"}
    assert not second.events


def test_apply_gets_exactly_the_diff_observe_returned(world):
    body, tools, backends = world
    reconcile(body, tools, backends)
    for provisioner in (backends.runtime, backends.streaming, backends.warehouse, backends.identity):
        assert provisioner.applied == provisioner.observed[:1]
        assert provisioner.applied[0].items[0].action == "create"


def test_changed_condition_gets_a_new_transition_time(world):
    body, tools, backends = world
    first = reconcile(body, tools, backends)
    earlier = [dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in first.status["conditions"]]
    backends.warehouse.down = True
    second = _conditions(reconcile(dict(body, status={"conditions": earlier}), tools, backends))
    assert second["WarehouseReady"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert second["StreamingReady"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_conflict_is_its_own_reason(world):
    body, tools, backends = world
    backends.identity.conflict = True
    outcome = reconcile(body, tools, backends)
    found = _conditions(outcome)
    assert found["IdentityReady"]["status"] == "False"
    assert found["IdentityReady"]["reason"] == "ResourceConflict"
    assert "belongs to municipality 'other'" in found["IdentityReady"]["message"]
    assert found["StreamingReady"]["status"] == "True"
    assert outcome.retry and [e.reason for e in outcome.events if e.type == "Warning"] == ["ResourceConflict"]


def test_outage_of_one_backend_is_named_and_retried_while_others_proceed(world):
    body, tools, backends = world
    backends.identity.down = True
    outcome = reconcile(body, tools, backends)
    found = _conditions(outcome)
    assert found["IdentityReady"]["status"] == "False"
    assert found["IdentityReady"]["reason"] == "BackendUnavailable"
    assert "Keycloak" in found["IdentityReady"]["message"]
    assert found["StreamingReady"]["status"] == "True"
    assert found["Ready"]["status"] == "False" and found["Synced"]["status"] == "False"
    assert outcome.retry and outcome.status["phase"] == "Provisioning"


def test_ready_municipality_that_loses_a_backend_is_degraded(world):
    body, tools, backends = world
    first = reconcile(body, tools, backends)
    backends.warehouse.down = True
    second = reconcile(dict(body, status=first.status), tools, backends)
    assert second.status["phase"] == "Degraded"


def test_kubernetes_outage_leaves_other_backends_waiting(world):
    body, tools, backends = world
    backends.runtime.down = True
    outcome = reconcile(body, tools, backends)
    found = _conditions(outcome)
    assert found["RuntimeReady"]["status"] == "False"
    assert found["StreamingReady"]["status"] == "Unknown"
    assert found["StreamingReady"]["reason"] == "WaitingForCredentials"
    assert backends.streaming.applied == []


def test_unknown_ags_is_a_permanent_error_that_touches_no_backend(world):
    body, tools, backends = world
    body = copy.deepcopy(body)
    body["spec"]["ags"] = "05754999"
    directory = MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv")
    outcome = reconcile(body, tools, backends, directory)
    assert outcome.permanent_error and "05754999" in outcome.permanent_error
    assert outcome.status["phase"] == "Failed"
    assert _conditions(outcome)["Ready"]["reason"] == "InvalidSpec"
    assert backends.runtime.applied == backends.streaming.applied == []


def test_missing_tool_waits_instead_of_failing(world):
    body, _, backends = world
    outcome = reconcile(body, {}, backends)
    assert outcome.retry and not outcome.permanent_error
    assert _conditions(outcome)["Ready"]["reason"] == "CityToolMissing"
    assert outcome.status["phase"] == "Pending"


def test_drift_repair_is_reported_as_a_warning_event(world):
    body, tools, backends = world
    first = reconcile(body, tools, backends)
    backends.streaming.state.clear()  # someone deleted the topics
    again = reconcile(dict(body, status=first.status), tools, backends, drift_check=True)
    assert [e.reason for e in again.events] == ["DriftRepaired"]
    assert "Kafka drifted (everything exists: wanted True, found False)" in again.events[0].message
    assert len(backends.streaming.applied) == 2 and len(backends.warehouse.applied) == 1


def test_suspended_is_its_own_phase(world):
    body, tools, backends = world
    body = copy.deepcopy(body)
    body["spec"]["suspended"] = True
    outcome = reconcile(body, tools, backends)
    assert outcome.status["phase"] == "Suspended"
    assert _conditions(outcome)["StreamingReady"]["reason"] == "Suspended"


@pytest.mark.parametrize("policy,keep", [("Retain", True), ("Delete", False), (None, True)])
def test_finalize_honours_deletion_policy(world, policy, keep):
    body, tools, backends = world
    body = copy.deepcopy(body)
    body["spec"].pop("deletionPolicy", None)
    if policy:
        body["spec"]["deletionPolicy"] = policy
    finalize(body, tools, backends)
    assert backends.streaming.deleted == [keep]
    assert backends.warehouse.deleted == [keep]
    assert backends.identity.deleted == [keep]
    assert backends.runtime.deleted == [keep]
