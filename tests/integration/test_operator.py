"""The operator against the real platform: a Municipality becomes Ready in every
backend, follows spec changes, repairs drift, survives outages and restarts, and
cleans up as its deletionPolicy says."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import kubernetes
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.devplatform import platform as dev_platform
from urbanstack.devplatform import processes
from urbanstack.operator.provisioners.base import ensure

from operator_harness import GROUP, ROOT, VERSION, Cluster, OperatorThread, conditions, example, is_ready
from operator_harness import unique_municipality
from operator_harness import operator_kubeconfig, use_operator_identity

pytestmark = pytest.mark.platform

DRIFT_INTERVAL = 5.0
M = "municipalities"


@pytest.fixture(scope="module")
def cluster(kube_api) -> Cluster:
    return Cluster(kube_api)


@pytest.fixture(scope="module")
def operator(platform, warehouse, cluster):
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends

    use_operator_identity(platform)
    settings = dataclasses.replace(platform, drift_interval=DRIFT_INTERVAL)
    kube = kubernetes.config.new_client_from_config(config_file=operator_kubeconfig(platform))
    backends = Backends.from_settings(settings, warehouse_client=warehouse, kube=kube)
    directory = MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv")
    handlers.configure(settings, backends, directory)
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        cluster.apply("citytools", example(tool))
    holder = RunningOperator(backends, OperatorThread().start())
    yield holder
    holder.runner.stop()


@dataclasses.dataclass
class RunningOperator:
    backends: object
    runner: OperatorThread


def _secret(cluster: Cluster, obj: dict) -> dict[str, str]:
    import base64

    namespace, name = obj["status"]["endpoints"]["credentialsSecret"].split("/")
    data = cluster.core.read_namespaced_secret(name, namespace).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _namespace_exists(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.core.read_namespace(namespace)
    except kubernetes.client.rest.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _secret_values(identity) -> dict[str, str]:
    """Placeholder client secrets: observing only reads whether the secrets match."""
    return {client.secret_key: "not-the-secret" for client in identity.clients if client.secret_key}


def _produce(settings, user: str, password: str, topic: str) -> str | None:
    """None if the write was accepted, else the Kafka error name."""
    errors: list[str] = []
    producer = Producer(dev_kafka.client_config(settings, user, password) | {"message.timeout.ms": 10000,
                                                                              "log_level": 0})
    producer.produce(topic, b"probe", on_delivery=lambda err, msg: errors.append(err.name()) if err else None)
    producer.flush(20)
    return errors[0] if errors else None


def _topics(settings, prefix: str) -> set[str]:
    admin = AdminClient(dev_kafka.admin_config(settings))
    return {t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)}


def _tables(warehouse, database: str) -> set[str]:
    rows = warehouse.query("SELECT name FROM system.tables WHERE database = {db:String}",
                           parameters={"db": database}).result_rows
    return {r[0] for r in rows}


def _with_rollups(tables: list[str]) -> set[str]:
    """Each dataset table comes with its hourly rollup and the view that feeds it."""
    return {name for table in tables for name in (table, f"{table}__hourly", f"{table}__hourly_mv")}


def _wait_event(cluster: Cluster, name: str, reason: str, timeout: float = 20) -> bool:
    """Kopf posts events from a queue, a moment after the handler returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = cluster.core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
        if any(e.reason == reason for e in events.items):
            return True
        time.sleep(0.5)
    return False


@pytest.fixture()
def cleanup(cluster):
    names: list[str] = []
    yield names
    for name in names:
        obj = cluster.get(M, name)
        if obj is not None:
            cluster.patch_spec(M, name, {"deletionPolicy": "Delete"})
            cluster.delete(M, name)
    for name in names:
        cluster.wait_gone(M, name, timeout=180)


def test_municipality_becomes_ready_in_every_backend(operator, cluster, platform, warehouse, keycloak_admin,
                                                     cleanup):
    gt = unique_municipality("municipality-guetersloh.yaml", "gt")
    bi = unique_municipality("municipality-bielefeld.yaml", "bi")
    cleanup += [gt["metadata"]["name"], bi["metadata"]["name"]]
    cluster.apply(M, gt)
    cluster.apply(M, bi)
    ready = cluster.wait_for(M, gt["metadata"]["name"], is_ready, what="Ready")
    other = cluster.wait_for(M, bi["metadata"]["name"], is_ready, what="Ready")
    for type_ in ("IdentityReady", "StreamingReady", "WarehouseReady", "RuntimeReady", "MessagingReady", "Ready",
                  "Synced"):
        cond = conditions(ready)[type_]
        assert cond["status"] == "True", cond
        assert cond["observedGeneration"] == ready["metadata"]["generation"]
        assert cond["reason"] and cond["message"]
    assert ready["status"]["phase"] == "Ready"

    # Keycloak: a staff member given gov-viewer signs in and gets a verifiable token for the tenant's API.
    from test_identity_provisioner import _add_viewer, _allow_password_grant, _password_grant, _verified_claims

    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools

    tools = parse_tools(cluster.custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", "citytools")["items"])
    identity = plan(parse_municipality(gt), tools).identity
    username, password = _add_viewer(keycloak_admin, identity)
    hub = _allow_password_grant(keycloak_admin, identity)
    response = _password_grant(platform, identity, hub, username, password)
    assert response.status_code == 200, response.text
    api_client = f"{gt['metadata']['name']}-api"
    claims = _verified_claims(platform, identity, response.json()["access_token"], audience=api_client)
    assert claims["organization"] == [gt["metadata"]["name"]]
    assert "gov-viewer" in claims["resource_access"][api_client]["roles"]
    ensure(operator.backends.identity, identity, _secret(cluster, ready))  # password grant off again

    names = ready["status"]["names"]
    # Kafka: the tenant's own SCRAM user writes to its topic and not to Bielefeld's.
    credentials = _secret(cluster, ready)
    own_topic = next(t for t in names["topics"] if t.endswith("pedestrian_counts"))
    other_topic = next(t for t in other["status"]["names"]["topics"] if not t.endswith(".dlq"))
    assert _produce(platform, credentials["kafka-username"], credentials["kafka-password"], own_topic) is None
    assert _produce(platform, credentials["kafka-username"], credentials["kafka-password"],
                    other_topic) == "TOPIC_AUTHORIZATION_FAILED"
    # MQTT: the tenant's broker client logs in with the Secret's password (docs/sensorthings.md, MQTT).
    from urbanstack.runtime.mqtt.client import authenticates

    assert authenticates(platform.mqtt_server, platform.mqtt_port, credentials["kafka-username"],
                         credentials["mqtt-password"])
    assert credentials["mqtt-password"] not in str(ready["status"])
    # Warehouse: database and one table per enabled dataset.
    assert _tables(warehouse, names["database"]) == _with_rollups(names["tables"])
    # Kubernetes: namespace with quota, limits, default-deny policy and the credentials Secret.
    namespace = names["namespace"]
    assert cluster.core.read_namespace(namespace).metadata.labels["urbanstack.io/municipality"]
    assert cluster.core.read_namespaced_resource_quota("tenant-quota", namespace).spec.hard
    assert cluster.core.read_namespaced_limit_range("tenant-limits", namespace).spec.limits
    policies = kubernetes.client.NetworkingV1Api(cluster.api).list_namespaced_network_policy(namespace).items
    assert any(p.metadata.name == "default-deny" for p in policies)
    # Status never carries a secret.
    assert credentials["kafka-password"] not in str(ready["status"])
    # Events tell what was done.
    assert _wait_event(cluster, gt["metadata"]["name"], "Provisioned")


def _ready(cluster: Cluster, cleanup: list[str], example_file: str, prefix: str) -> tuple[dict, str, dict]:
    """A fresh municipality from an example, applied and Ready (deleted after the test):
    the body applied, its name, and the object as it was when Ready."""
    body = unique_municipality(example_file, prefix)
    name = body["metadata"]["name"]
    cleanup.append(name)
    cluster.apply(M, body)
    return body, name, cluster.wait_for(M, name, is_ready, what="Ready")


def test_spec_changes_reach_the_backends(operator, cluster, platform, warehouse, cleanup):
    body, name, first = _ready(cluster, cleanup, "municipality-rheda-wiedenbrueck.yaml", "rw")
    tools = [t["name"] for t in body["spec"]["tools"]]
    new_tool = "passantenfrequenz-wetter" if "passantenfrequenz-wetter" not in tools else "pegel-warnung"
    updated = cluster.patch_spec(M, name, {"tools": body["spec"]["tools"] + [{"name": new_tool}],
                                           "retentionDays": 400})
    assert updated["metadata"]["generation"] == first["metadata"]["generation"] + 1
    second = cluster.wait_for(M, name, is_ready, what="Ready at the new generation")
    assert second["status"]["observedGeneration"] == updated["metadata"]["generation"]
    names = second["status"]["names"]
    assert any(new_tool in t for t in names["topics"])
    assert _tables(warehouse, names["database"]) == _with_rollups(names["tables"])
    engine = warehouse.query("SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                             parameters={"db": names["database"], "t": names["tables"][0]}).result_rows[0][0]
    assert "toIntervalDay(400)" in engine
    admin = AdminClient(dev_kafka.admin_config(platform))
    from confluent_kafka.admin import ConfigResource

    topic = names["topics"][0]
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    config = list(described.values())[0].result(timeout=10)
    assert config["retention.ms"].value == str(400 * 86_400_000)


def test_drift_is_repaired(operator, cluster, platform, warehouse, cleanup):
    body, name, ready = _ready(cluster, cleanup, "municipality-guetersloh.yaml", "dr")
    names = ready["status"]["names"]
    topic, table = names["topics"][0], names["tables"][0]
    admin = AdminClient(dev_kafka.admin_config(platform))
    admin.delete_topics([topic])[topic].result(timeout=10)
    warehouse.command(f"DROP TABLE `{names['database']}`.`{table}`")
    cluster.core.delete_namespaced_resource_quota("tenant-quota", names["namespace"])
    deadline = time.monotonic() + DRIFT_INTERVAL * 6 + 30
    while time.monotonic() < deadline:
        if (topic in _topics(platform, topic) and table in _tables(warehouse, names["database"])
                and cluster.core.list_namespaced_resource_quota(names["namespace"]).items):
            break
        time.sleep(1)
    else:
        raise AssertionError("drift was not repaired")
    assert _wait_event(cluster, name, "DriftRepaired")


def test_invalid_ags_fails_clearly_and_creates_nothing(operator, cluster, platform, warehouse, cleanup):
    body = unique_municipality("municipality-guetersloh.yaml", "bad")
    body["spec"]["ags"] = "05754999"  # well-formed, but no municipality has it
    name = body["metadata"]["name"]
    cleanup.append(name)
    cluster.apply(M, body)
    failed = cluster.wait_for(M, name, lambda o: (o.get("status") or {}).get("phase") == "Failed", what="Failed")
    message = conditions(failed)["Ready"]["message"]
    assert "05754999" in message
    assert conditions(failed)["Ready"]["reason"] == "InvalidSpec"
    with pytest.raises(kubernetes.client.rest.ApiException):
        cluster.core.read_namespace(f"muni-{name}")
    assert not _topics(platform, f"{name}.")
    assert not warehouse.query("SELECT 1 FROM system.databases WHERE name = {db:String}",
                               parameters={"db": name.replace("-", "_")}).result_rows


def test_deletion_policies(operator, cluster, platform, warehouse):
    retained = unique_municipality("municipality-guetersloh.yaml", "keep")
    removed = unique_municipality("municipality-guetersloh.yaml", "gone")
    removed["spec"]["deletionPolicy"] = "Delete"
    for body in (retained, removed):
        cluster.apply(M, body)
    kept = cluster.wait_for(M, retained["metadata"]["name"], is_ready, what="Ready")
    gone = cluster.wait_for(M, removed["metadata"]["name"], is_ready, what="Ready")
    kept_creds = _secret(cluster, kept)
    for body in (retained, removed):
        cluster.delete(M, body["metadata"]["name"])
    for body in (retained, removed):
        cluster.wait_gone(M, body["metadata"]["name"], timeout=180)

    # Retain: data stays, access is gone.
    names = kept["status"]["names"]
    assert set(names["topics"]) <= _topics(platform, names["topics"][0].split(".")[0] + ".")
    assert _tables(warehouse, names["database"]) == _with_rollups(names["tables"])
    assert _produce(platform, kept_creds["kafka-username"], kept_creds["kafka-password"],
                    names["topics"][0]) is not None
    # Delete: nothing left in any backend.
    names = gone["status"]["names"]
    assert not _topics(platform, names["topics"][0].split(".")[0] + ".")
    assert not _tables(warehouse, names["database"])
    # Retain kept the organization (its records), and the next apply could adopt it.
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools

    tools = parse_tools(cluster.custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", "citytools")["items"])
    identity = plan(parse_municipality(retained), tools).identity
    kept_identity = operator.backends.identity.observe(identity, _secret_values(identity))
    assert not kept_identity.about(f"organization {identity.organization.alias}", "exists")
    # Clean up what Retain kept.
    operator.backends.identity.delete(identity, keep_data=False)
    admin = AdminClient(dev_kafka.admin_config(platform))
    for future in admin.delete_topics(list(kept["status"]["names"]["topics"])).values():
        future.result(timeout=10)
    warehouse.command(f"DROP DATABASE IF EXISTS `{kept['status']['names']['database']}`")


def test_a_municipality_deleted_while_it_waits_in_the_queue_is_never_provisioned(operator, cluster, platform):
    """A batch applied and withdrawn at once: a municipality deleted before its reconcile's turn
    goes straight to the deletion handler instead of being provisioned and torn down again."""
    from urbanstack.operator import handlers
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools
    from urbanstack.operator.workqueue import CHANGE, CREATE

    queue = handlers.state.queue
    assert queue is not None, "the default (bulk) mode runs every reconcile through the work queue"
    body = unique_municipality("municipality-guetersloh.yaml", "queued")
    body["spec"]["deletionPolicy"] = "Delete"
    name = body["metadata"]["name"]
    tool_items = cluster.custom.list_cluster_custom_object(GROUP, VERSION, "citytools")["items"]
    planned = plan(parse_municipality(body), parse_tools(tool_items))
    # (A CityTool's roll-out, still running on a fresh platform, goes through the same queue and the
    # same check: it must not provision the municipality either.)
    namespace = planned.runtime.namespace
    namespace_events: list[tuple[str, bool]] = []   # (event type, the test's own sentinel)
    sentinel_seen = threading.Event()
    watch = kubernetes.watch.Watch()

    def follow_namespace():
        for event in watch.stream(cluster.core.list_namespace, timeout_seconds=180,
                                  field_selector=f"metadata.name={namespace}"):
            own = (event["object"].metadata.labels or {}).get("urbanstack-test/sentinel") == "true"
            namespace_events.append((event["type"], own))
            if own:
                sentinel_seen.set()

    watcher = threading.Thread(target=follow_namespace, daemon=True)
    watcher.start()
    release = threading.Event()
    blockers = [queue.submit(f"test-blocker-{uuid.uuid4().hex[:6]}", CHANGE, lambda: release.wait(120))
                for _ in range(queue.workers)]
    try:
        cluster.apply(M, body)
        deadline = time.monotonic() + 60
        while not queue.is_queued(name, CREATE):
            assert time.monotonic() < deadline, "the creation never reached the work queue"
            time.sleep(0.1)
        cluster.delete(M, name)
    finally:
        release.set()
    for blocker in blockers:
        blocker.result(timeout=60)
    cluster.wait_gone(M, name, timeout=120)
    # A watch delivers events in order: once the test's own namespace of that name is seen, anything
    # the operator did to it earlier has been seen too. (A namespace the operator made and is still
    # deleting makes the create fail: that, too, means it was provisioned.)
    try:
        cluster.core.create_namespace({"metadata": {"name": namespace,
                                                    "labels": {"urbanstack-test/sentinel": "true"}}})
    except kubernetes.client.rest.ApiException as exc:
        assert exc.status != 409, f"namespace {namespace} exists: the operator provisioned the deleted municipality"
        raise
    try:
        assert sentinel_seen.wait(60), "the namespace watch did not see the test's own namespace"
    finally:
        watch.stop()
        cluster.core.delete_namespace(namespace)
    operator_events = [kind for kind, own in namespace_events if not own]
    assert operator_events == [], f"the namespace was created although the municipality was deleted first: " \
                                  f"{operator_events}"
    assert not _topics(platform, planned.streaming.topic_prefix), "Kafka topics were created"


def test_operator_restart_converges_without_duplicates(operator, cluster, platform, keycloak_admin, cleanup):
    body = unique_municipality("municipality-guetersloh.yaml", "rs")
    name = body["metadata"]["name"]
    cleanup.append(name)
    operator.runner.stop()
    cluster.apply(M, body)
    operator.runner = OperatorThread().start()
    # Stop it in the middle of the first reconcile: the namespace is there, the rest is not Ready yet.
    cluster.wait_for(M, name, lambda o: _namespace_exists(cluster, f"muni-{name}"), what="namespace created")
    operator.runner.stop()
    operator.runner = OperatorThread().start()
    ready = cluster.wait_for(M, name, is_ready, what="Ready after restarts")
    names = ready["status"]["names"]
    assert sorted(_topics(platform, names["topics"][0].split(".")[0] + ".")) == sorted(names["topics"])
    realm = names["realm"]
    keycloak_admin.change_current_realm(realm)
    try:
        clients = [c["clientId"] for c in keycloak_admin.get_clients() if c["clientId"].startswith(f"{name}-")]
        assert len(clients) == len(set(clients)) and clients
        if names.get("organization"):
            orgs = [o for o in keycloak_admin.get_organizations() if o.get("alias") == names["organization"]]
            assert len(orgs) == 1
    finally:
        keycloak_admin.change_current_realm("master")


def test_keycloak_outage_is_visible_and_recovers(operator, cluster, platform, cleanup):
    body = unique_municipality("municipality-guetersloh.yaml", "kc")
    name = body["metadata"]["name"]
    cleanup.append(name)
    processes.stop("keycloak", platform.run_dir)
    try:
        cluster.apply(M, body)
        down = cluster.wait_for(M, name, lambda o: conditions(o).get("IdentityReady", {}).get("reason")
                                == "BackendUnavailable", what="IdentityReady=False", timeout=120)
        found = conditions(down)
        assert found["IdentityReady"]["status"] == "False"
        assert "Keycloak" in found["IdentityReady"]["message"]
        assert found["StreamingReady"]["status"] == "True"
        assert found["Ready"]["status"] == "False"
        assert found["Synced"]["status"] == "False"
    finally:
        dev_platform.up(platform, ["keycloak"])
    cluster.wait_for(M, name, is_ready, what="Ready after Keycloak came back", timeout=240)


def test_citytool_deletion_is_blocked_while_enabled(operator, cluster, cleanup):
    tool = example("citytool-pegel-warnung.yaml")
    tool["metadata"] = {"name": f"pw-{uuid.uuid4().hex[:6]}"}
    cluster.apply("citytools", tool)
    body = unique_municipality("municipality-rheda-wiedenbrueck.yaml", "uses")
    body["spec"]["tools"] = [{"name": tool["metadata"]["name"]}]
    cleanup.append(body["metadata"]["name"])
    cluster.apply(M, body)
    cluster.wait_for(M, body["metadata"]["name"], is_ready, what="Ready")
    installed = cluster.wait_for("citytools", tool["metadata"]["name"],
                                 lambda o: body["metadata"]["name"] in (o.get("status") or {}).get("installedIn", []),
                                 what="installedIn")
    assert installed
    # A change of the tool rolls out through the work queue like other bulk work, not inside the
    # tool's handler: while every worker is busy it waits there, and the tool says it is not done.
    from urbanstack.operator import handlers
    from urbanstack.operator.workqueue import CHANGE, CREATE

    queue = handlers.state.queue
    release = threading.Event()
    blockers = [queue.submit(f"test-blocker-{uuid.uuid4().hex[:6]}", CHANGE, lambda: release.wait(120))
                for _ in range(queue.workers)]
    try:
        changed = cluster.custom.patch_cluster_custom_object(
            GROUP, VERSION, "citytools", tool["metadata"]["name"], {"spec": {"description": "Changed."}})
        generation = changed["metadata"]["generation"]
        deadline = time.monotonic() + 60
        while not queue.is_queued(body["metadata"]["name"], CREATE):
            assert time.monotonic() < deadline, "the roll-out never reached the work queue"
            time.sleep(0.1)
        waiting = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "citytools", tool["metadata"]["name"])
        assert conditions(waiting)["Ready"].get("observedGeneration") != generation
    finally:
        release.set()
    rolled = cluster.wait_for("citytools", tool["metadata"]["name"], lambda o: conditions(o).get(
        "Ready", {}).get("observedGeneration") == generation, what="the roll-out of the change")
    assert conditions(rolled)["Ready"]["reason"] == "RolledOut"
    assert rolled["status"]["installedIn"] == [body["metadata"]["name"]]
    cluster.delete("citytools", tool["metadata"]["name"])
    blocked = cluster.wait_for("citytools", tool["metadata"]["name"],
                               lambda o: conditions(o).get("Ready", {}).get("reason") == "StillInUse",
                               what="StillInUse")
    assert body["metadata"]["name"] in conditions(blocked)["Ready"]["message"]
    cluster.patch_spec(M, body["metadata"]["name"], {"tools": []})
    cluster.wait_gone("citytools", tool["metadata"]["name"], timeout=120)


def test_a_spec_changed_and_changed_back_at_once_is_still_observed(operator, cluster, cleanup):
    """An edit undone at once (a form that saves, then reverts) while the operator is busy with
    this municipality: Kopf handles the first change, then compares the reverted spec with the
    one it handled and finds no difference. The generation moved on twice, so `kubectl wait
    --for=jsonpath=.status.observedGeneration=N`, every client that waits for Ready at its own
    generation, and the drift sweep (which leaves out municipalities not observed at their
    generation) depend on the operator still reporting on the latest generation."""
    _, name, first = _ready(cluster, cleanup, "municipality-rheda-wiedenbrueck.yaml", "rb")
    shown = first["spec"]["displayName"]
    cluster.patch_spec(M, name, {"retentionDays": 400})   # a reconcile that takes seconds …
    cluster.patch_spec(M, name, {"displayName": shown + " (Entwurf)"})   # … while this is made
    back = cluster.patch_spec(M, name, {"displayName": shown})           # and undone
    assert back["metadata"]["generation"] == first["metadata"]["generation"] + 3
    observed = cluster.wait_for(M, name, is_ready, timeout=60,
                                what="Ready at the generation of the reverted spec")
    assert observed["status"]["observedGeneration"] == back["metadata"]["generation"]
    assert observed["spec"]["displayName"] == shown and observed["spec"]["retentionDays"] == 400
