"""What an ops reviewer checks in the platform stack, for the dev and prod configs."""

from __future__ import annotations

import copy
import dataclasses
import json
import runpy

import pytest
import yaml
import pulumi
from stack_harness import PROGRAM, ROOT, SECRETS, stack_values, synthesize, use_mocks
from stack_review import (binding_problems, code_env_reads, container_problems, env_problems, rbac_problems,
                          rollout_problems, secret_access_problems, service_account_problems, unread_env_problems)

from urbanstack import settings as settings_module
from urbanstack.operator import rbac
from urbanstack.runtime.sink import SinkConfig

NAMESPACE = "urbanstack-system"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # how Pulumi marks a secret value on the wire
SECRET_MARK = "1b47061264138c4ac30d75fd1eb44270"
RUNTIME_ACCOUNT = "urbanstack-runtime"
RUNTIME_DEPLOYMENTS = ("urbanstack-api", "urbanstack-sink", "urbanstack-connectors")
HUB = "urbanstack-hub"
HUB_ACCOUNT = rbac.GOV_HUB_SERVICE_ACCOUNT
# The pods whose code reads the Kubernetes API: the API's and ingest's catalogue
# (urbanstack/serve.py, runtime/ingest/service.py) and ingest's urbanstack-ingest Secrets.
API_READERS = ("urbanstack-api", "urbanstack-connectors")
# The code each Deployment runs (its `urbanstack` subcommand and what that calls);
# the environment variables it may set are derived from this code, not listed here.
CODE = {
    "urbanstack-operator": ("urbanstack/cli.py", "operator/*.py", "operator/provisioners/*.py"),
    "urbanstack-api": ("urbanstack/cli.py", "urbanstack/serve.py", "runtime/api/*.py"),
    "urbanstack-sink": ("urbanstack/cli.py", "runtime/sink.py"),
    "urbanstack-connectors": ("urbanstack/cli.py", "urbanstack/serve.py", "runtime/ingest/*.py",
                              "runtime/connectors/*.py"),
    "urbanstack-hub": ("urbanstack/cli.py", "urbanstack/serve.py", "runtime/api/*.py", "runtime/ingest/*.py",
                       "runtime/hubs/**/*.py", "runtime/web/*.py", "runtime/store/*.py"),
    # The in-cluster MQTT broker (prod stack): mosquitto reads its file, not the environment.
    "urbanstack-mqtt": (),
}


def pod_specs(installation):
    for workload in installation.declared:
        if workload.kind in WORKLOADS:
            yield workload.inputs["metadata"]["name"], workload.inputs["spec"]["template"]["spec"]


def containers(installation):
    for workload, pod in pod_specs(installation):
        for container in pod["containers"]:
            yield workload, container


# --- entry point -----------------------------------------------------------

def test_pulumi_entry_point_declares_the_platform():
    """`pulumi up` runs stacks/platform/__main__.py as a script, not as a module."""
    mocks = use_mocks(stack_values("dev"), {k: v for k, v in SECRETS.items() if k != "keycloakDbPassword"})

    @pulumi.runtime.test
    def run():
        runpy.run_path(str(PROGRAM), run_name="__main__")

    run()
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "Ingress"} <= {d.kind for d in mocks.declared}


def test_namespace_enforces_pod_security(dev, prod):
    def labels(installation):
        return installation.one("Namespace", NAMESPACE).inputs["metadata"]["labels"]

    assert labels(dev)["pod-security.kubernetes.io/enforce"] == "restricted"
    # Third-party backend pods share the namespace in prod; they are warned about, not refused.
    assert labels(prod)["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels(prod)["pod-security.kubernetes.io/warn"] == "restricted"


# --- CRDs ------------------------------------------------------------------

def test_installed_crds_are_exactly_the_files_in_crds(stack):
    files = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            files[document["metadata"]["name"]] = document["spec"]
    declared = {crd.inputs["metadata"]["name"]: crd.inputs["spec"] for crd in stack.of_kind("CustomResourceDefinition")}
    assert sorted(declared) == sorted(files)
    for name, spec in files.items():
        # Numbers come back as floats from the mock; JSON compares them as equal.
        assert json.loads(json.dumps(declared[name])) == json.loads(json.dumps(spec)), name


def test_operator_peering_object_exists_for_the_installed_peering_crd(stack):
    assert "clusterkopfpeerings.kopf.dev" in {crd.inputs["metadata"]["name"]
                                                for crd in stack.of_kind("CustomResourceDefinition")}
    assert [p.inputs["metadata"]["name"] for p in stack.of_kind("ClusterKopfPeering")] == ["urbanstack"]


# --- RBAC ------------------------------------------------------------------

def test_cluster_roles_are_operator_and_runtime_rbac_verbatim(stack):
    assert stack.one("ClusterRole", rbac.CLUSTER_ROLE_NAME).inputs["rules"] == rbac.cluster_role()["rules"]
    assert (stack.one("ClusterRole", rbac.RUNTIME_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.runtime_cluster_role()["rules"])
    assert (stack.one("ClusterRole", rbac.TENANT_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.tenant_cluster_role()["rules"])
    assert (stack.one("ClusterRole", rbac.WATCH_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.watch_cluster_role()["rules"])
    assert (stack.one("ClusterRole", rbac.GOV_HUB_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.gov_hub_cluster_role()["rules"])
    assert (stack.one("ClusterRole", rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.gov_hub_upload_cluster_role()["rules"])
    assert (stack.one("ClusterRole", rbac.SIGNUP_CLUSTER_ROLE_NAME).inputs["rules"]
            == rbac.signup_cluster_role()["rules"])
    assert len(stack.of_kind("ClusterRole")) == 7
    assert not stack.of_kind("Role")
    # The comparison notices a right added on the way (the runtime reading every Secret).
    widened = copy.deepcopy(rbac.runtime_cluster_role()["rules"])
    widened[-1]["verbs"].append("list")
    assert widened != rbac.runtime_cluster_role()["rules"]


def test_cluster_roles_are_least_privilege(stack):
    for name in (rbac.CLUSTER_ROLE_NAME, rbac.RUNTIME_CLUSTER_ROLE_NAME, rbac.TENANT_CLUSTER_ROLE_NAME,
                 rbac.GOV_HUB_CLUSTER_ROLE_NAME, rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME, rbac.SIGNUP_CLUSTER_ROLE_NAME):
        assert rbac_problems(stack.one("ClusterRole", name).inputs["rules"]) == [], name


def test_the_operator_reads_secrets_only_through_the_binding_in_namespaces_it_creates(stack):
    """Cluster-wide it may bind the tenant role and nothing else; the binding the plan puts into
    each tenant namespace names the operator's service account as the stack declares it."""
    rules = stack.one("ClusterRole", rbac.CLUSTER_ROLE_NAME).inputs["rules"]
    assert not [rule for rule in rules if "secrets" in rule["resources"]]
    [bind] = [rule for rule in rules if "bind" in rule["verbs"]]
    assert bind["resourceNames"] == [rbac.TENANT_CLUSTER_ROLE_NAME]
    assert not [b for b in stack.of_kind("ClusterRoleBinding") + stack.of_kind("RoleBinding")
                if b.inputs["roleRef"]["name"] == rbac.TENANT_CLUSTER_ROLE_NAME]
    binding = rbac.tenant_role_binding("muni-guetersloh", {})
    account = stack.one("ServiceAccount", "urbanstack-operator").inputs["metadata"]
    assert {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]} in binding["subjects"]
    assert binding["roleRef"]["name"] == rbac.TENANT_CLUSTER_ROLE_NAME
    # Unnamed `bind` (any role) is still a takeover right.
    assert rbac_problems([{**bind, "resourceNames": []}])
    # What RBAC cannot say, admission does: only muni-* namespaces, for the operator's identities.
    policy, policy_binding = rbac.admission_policy()
    assert stack.one("ValidatingAdmissionPolicy", rbac.ADMISSION_POLICY_NAME).inputs["spec"] == json.loads(
        json.dumps(policy["spec"]))
    assert (stack.one("ValidatingAdmissionPolicyBinding", rbac.ADMISSION_POLICY_NAME).inputs["spec"]
            == policy_binding["spec"])
    assert f"system:serviceaccount:{account['namespace']}:{account['name']}" in json.dumps(policy["spec"])


def test_runtime_reads_only_the_named_ingest_secret(stack):
    rules = stack.one("ClusterRole", rbac.RUNTIME_CLUSTER_ROLE_NAME).inputs["rules"]
    assert secret_access_problems(rules) == []
    assert [rule["resourceNames"] for rule in rules if "secrets" in rule["resources"]] == [[rbac.INGEST_SECRET]]
    # Deliberately bad: every Secret of every tenant, and listing them.
    bad = copy.deepcopy(rules)
    del bad[-1]["resourceNames"]
    bad.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]})
    problems = "\n".join(secret_access_problems(bad))
    for expected in ("rule 1: reaches every Secret", "rule 2: verb list", "rule 2: verb watch"):
        assert expected in problems


def test_rbac_checker_catches_wildcards_and_takeover_rights():
    rules = rbac.cluster_role()["rules"] + [
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": ["*"], "resources": ["nodes"], "verbs": ["*"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate", "bind"]},
    ]
    problems = rbac_problems(rules)
    for expected in ("grants pods/exec", "wildcard in apiGroups", "verb *", "grants nodes",
                     "grants clusterroles", "verb escalate", "verb bind"):
        assert any(expected in problem for problem in problems), expected


def test_each_role_is_bound_to_its_own_service_account_only(stack):
    bindings = stack.of_kind("ClusterRoleBinding") + stack.of_kind("RoleBinding")
    holders = {rbac.CLUSTER_ROLE_NAME: "urbanstack-operator", rbac.WATCH_CLUSTER_ROLE_NAME: "urbanstack-operator",
               rbac.RUNTIME_CLUSTER_ROLE_NAME: RUNTIME_ACCOUNT,
               rbac.GOV_HUB_CLUSTER_ROLE_NAME: rbac.GOV_HUB_SERVICE_ACCOUNT,
               rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME: rbac.GOV_HUB_SERVICE_ACCOUNT,
               rbac.SIGNUP_CLUSTER_ROLE_NAME: rbac.SIGNUP_SERVICE_ACCOUNT}
    assert sorted(b.inputs["roleRef"]["name"] for b in bindings) == sorted(holders)
    for binding in bindings:
        holder = holders[binding.inputs["roleRef"]["name"]]
        stack.one("ServiceAccount", holder)
        assert binding.inputs["subjects"], binding.name
        assert binding_problems(binding.inputs, holder, NAMESPACE) == []
    runtime = next(b.inputs for b in bindings if b.inputs["roleRef"]["name"] == rbac.RUNTIME_CLUSTER_ROLE_NAME)
    for subject in ({"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"},
                    {"kind": "ServiceAccount", "name": "urbanstack-operator", "namespace": NAMESPACE},
                    {"kind": "ServiceAccount", "name": RUNTIME_ACCOUNT, "namespace": "default"}):
        bad = copy.deepcopy(runtime)
        bad["subjects"].append(subject)
        assert binding_problems(bad, RUNTIME_ACCOUNT, NAMESPACE), subject


def test_runtime_deployments_run_as_the_runtime_account_with_a_token_only_where_needed(stack):
    account = stack.one("ServiceAccount", RUNTIME_ACCOUNT).inputs
    assert account["automountServiceAccountToken"] is False
    for name in RUNTIME_DEPLOYMENTS:
        deployment = stack.one("Deployment", name).inputs
        assert service_account_problems(deployment, RUNTIME_ACCOUNT, name in API_READERS) == [], name
    # Deliberately bad: the namespace's default account; the sink (Kafka and the
    # warehouse only) with a token; the API without the token it needs.
    for name, change, expected in (
            ("urbanstack-api", {"serviceAccountName": "default"}, "runs as 'default'"),
            ("urbanstack-sink", {"automountServiceAccountToken": True}, "mounts an API token it does not use"),
            ("urbanstack-api", {"automountServiceAccountToken": False}, "mounts no token")):
        bad = copy.deepcopy(stack.one("Deployment", name).inputs)
        bad["spec"]["template"]["spec"] |= change
        problems = service_account_problems(bad, RUNTIME_ACCOUNT, name in API_READERS)
        assert any(expected in problem for problem in problems), (name, problems)


def test_api_readers_can_reach_the_api_server_and_others_cannot(stack):
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in stack.of_kind("NetworkPolicy")}
    ports = set(stack.config.api_server_ports)

    def reaches_api_server(name):
        return any(any("ipBlock" in peer for peer in rule["to"]) and {p["port"] for p in rule["ports"]} == ports
                   for rule in policies[name]["egress"])

    for name in RUNTIME_DEPLOYMENTS:
        assert reaches_api_server(name) == (name in API_READERS), name


# --- workloads -------------------------------------------------------------

def test_every_container_is_bounded_probed_and_hardened(stack):
    problems = [problem for workload, pod in pod_specs(stack) for problem in container_problems(pod, workload)]
    assert problems == []
    broker = {"urbanstack-mqtt"} if stack.config.mqtt and stack.config.mqtt.mode == "in-cluster" else set()
    assert {workload for workload, _ in pod_specs(stack)} == {
        "urbanstack-operator", "urbanstack-api", "urbanstack-sink", "urbanstack-connectors", HUB} | broker


def test_container_checker_catches_a_careless_pod(dev):
    pod = copy.deepcopy(dict(pod_specs(dev))["urbanstack-api"])
    container = pod["containers"][0]
    del container["resources"]["limits"]
    del container["readinessProbe"]
    container["securityContext"] |= {"readOnlyRootFilesystem": False, "runAsNonRoot": False,
                                     "capabilities": {"add": ["NET_ADMIN"]}}
    pod["securityContext"] |= {"runAsNonRoot": False}
    container["image"] = "registry.local/urbanstack/runtime:latest"
    problems = "\n".join(container_problems(pod, "urbanstack-api"))
    for expected in ("no cpu limits", "no memory limits", "no readinessProbe", "may run as root",
                     "writable root filesystem", "capabilities not dropped", "not pinned"):
        assert expected in problems


@pytest.mark.parametrize("workload", [
    "urbanstack-operator", "urbanstack-api", "urbanstack-sink", "urbanstack-connectors", HUB])
def test_each_deployment_runs_a_command_the_cli_has(dev, workload):
    import argparse

    from urbanstack import cli

    container = dict(containers(dev))[workload]
    assert container["command"] == ["urbanstack"]
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert container["args"][0] in commands


def test_rolling_updates_never_drop_below_desired_replicas(stack):
    deployments = stack.of_kind("Deployment")
    assert deployments
    assert [problem for d in deployments for problem in rollout_problems(d.inputs)] == []
    serving = stack.one("Deployment", "urbanstack-api").inputs
    bad = copy.deepcopy(serving)
    bad["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%"
    assert rollout_problems(bad)
    bad["spec"]["strategy"] = {"type": "Recreate"}
    assert rollout_problems(bad)


def test_the_in_cluster_mqtt_broker_is_one_pod_that_keeps_its_clients(prod):
    broker = prod.one("Deployment", "urbanstack-mqtt").inputs
    pod = broker["spec"]["template"]["spec"]
    # One broker owns the dynamic-security file on its claim; Recreate is the only roll possible.
    assert broker["spec"]["replicas"] == 1 and broker["spec"]["strategy"] == {"type": "Recreate"}
    claim = prod.one("PersistentVolumeClaim", "urbanstack-mqtt-data").inputs
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == [
        claim["metadata"]["name"]]
    # The first access-control file is written by the runtime image, never replaced, admin from the Secret.
    (seed,) = pod["initContainers"]
    assert seed["image"] == prod.config.runtime_image
    assert seed["command"] + seed["args"] == ["urbanstack", "mqtt", "seed", "/mosquitto/data/dynamic-security.json"]
    password = {e["name"]: e for e in seed["env"]}["URBANSTACK_MQTT_ADMIN_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "urbanstack-mqtt", "key": "admin-password"}
    config = prod.one("ConfigMap", "urbanstack-mqtt-config").inputs["data"]["mosquitto.conf"]
    assert "plugin_opt_config_file /mosquitto/data/dynamic-security.json" in config
    assert "listener 1883\n" in config and "listener 8080\nprotocol websockets" in config
    assert not pod["automountServiceAccountToken"]
    # The operator administers broker clients and the sink publishes; nobody else gets the admin.
    for workload, container in containers(prod):
        names = {e["name"] for e in container.get("env", [])}
        assert ("URBANSTACK_MQTT_ADMIN_PASSWORD" in names) == (workload in ("urbanstack-operator", "urbanstack-sink")), \
            workload
    sink = {e["name"]: e for e in prod.one("Deployment", "urbanstack-sink").inputs["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert sink["URBANSTACK_MQTT_HOST"]["value"] == "urbanstack-mqtt.urbanstack-system.svc"
    assert sink["URBANSTACK_STA_URL"]["value"] == f"https://{prod.config.ingress.api_host}/v1.1"


def test_mqtt_subscribers_outside_reach_the_broker_only_over_websockets_through_the_tls_ingress(prod):
    ingress = prod.one("Ingress", "urbanstack-mqtt").inputs
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == prod.config.ingress.api_host
    assert [(p["path"], p["backend"]["service"]) for p in rule["http"]["paths"]] == [
        ("/mqtt", {"name": "urbanstack-mqtt", "port": {"name": "websockets"}})]
    assert ingress["spec"]["tls"][0]["hosts"] == [prod.config.ingress.api_host]
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    policy = prod.one("NetworkPolicy", "urbanstack-backend-mqtt").inputs["spec"]
    by_port = {}
    for rule in policy["ingress"]:
        for port in rule.get("ports", [{"port": "any"}]):
            by_port.setdefault(port["port"], []).append(rule["from"])
    # Plain MQTT only from the operator and the sink; the ingress controller only to WebSockets.
    assert by_port[1883] == [[{"podSelector": {"matchExpressions": [{
        "key": "app.kubernetes.io/name", "operator": "In", "values": ["urbanstack-operator", "urbanstack-sink"]}]}}]]
    assert by_port[8080] == [[{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": prod.config.ingress.controller_namespace}}}]]
    assert "/mqtt" not in {p["path"] for i in prod.of_kind("Ingress") if i.name != "urbanstack-mqtt"
                           for r in i.inputs["spec"]["rules"] for p in r["http"]["paths"]}


@pytest.mark.parametrize("raw, message", [
    ({"mode": "external"}, "mqtt.host is required"),
    ({"mode": "in-cluster", "host": "broker"}, "only for mqtt.mode 'external'"),
    ({"mode": "nats"}, "mqtt.mode must be one of"),
    ({"mode": "external", "host": "b", "port": 70000, "websockets": False}, "TCP port"),
    ({"mode": "external", "host": "b", "websockets": True}, "set mqtt.websockets: false"),
    ({"mode": "in-cluster", "image": "eclipse-mosquitto:latest"}, "pinned"),
    ({"mode": "in-cluster", "colour": "blue"}, "unknown key"),
])
def test_bad_mqtt_settings_are_refused_with_what_to_change(raw, message):
    values = stack_values("prod") | {"mqtt": raw}
    with pytest.raises(Exception, match=message):
        synthesize(values, {k: v for k, v in SECRETS.items() if k != "kafkaPassword"})


def test_the_dev_stack_points_the_operator_and_sink_at_the_local_broker(dev):
    for name in ("urbanstack-operator", "urbanstack-sink"):
        env = {e["name"]: e for e in dev.one("Deployment", name).inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["URBANSTACK_MQTT_HOST"]["value"], env["URBANSTACK_MQTT_PORT"]["value"]) == ("127.0.0.1", "11883")
        assert env["URBANSTACK_MQTT_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "urbanstack-mqtt"
    assert not dev.of_kind("PersistentVolumeClaim") and not [d for d in dev.of_kind("Deployment")
                                                           if d.name == "urbanstack-mqtt"]


def test_operator_runs_two_peered_replicas_with_a_disruption_budget(stack):
    operator = stack.one("Deployment", "urbanstack-operator").inputs
    assert operator["spec"]["replicas"] == 2
    pod = operator["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "urbanstack-operator"
    container = pod["containers"][0]
    assert container["command"] + container["args"][:2] == ["urbanstack", "operator", "run"]
    assert "--standalone" not in container["args"]
    # Kopf's liveness endpoint must listen where the kubelet's probe knocks.
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    budget = stack.one("PodDisruptionBudget", "urbanstack-operator").inputs["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]


def test_autoscaled_services_leave_replicas_to_their_autoscaler(stack):
    autoscalers = {hpa.inputs["spec"]["scaleTargetRef"]["name"]: hpa for hpa in stack.of_kind("HorizontalPodAutoscaler")}
    assert sorted(autoscalers) == ["urbanstack-api", HUB, "urbanstack-sink"]
    for name, hpa in autoscalers.items():
        assert hpa.api_version == "autoscaling/v2"
        assert 1 <= hpa.inputs["spec"]["minReplicas"] <= hpa.inputs["spec"]["maxReplicas"]
        # An upgrade re-applying a fixed count would scale a busy service down.
        assert "replicas" not in stack.one("Deployment", name).inputs["spec"]
    assert stack.one("Deployment", "urbanstack-connectors").inputs["spec"]["replicas"] >= 1


# --- secrets ---------------------------------------------------------------

def test_credentials_reach_containers_only_through_secret_key_refs(stack):
    problems = [f"{workload}: {problem}" for workload, container in containers(stack)
                for problem in env_problems(container.get("env", []), list(SECRETS.values()))]
    assert problems == []


def test_env_checker_catches_plain_credentials():
    env = [{"name": "URBANSTACK_KAFKA_PASSWORD", "value": SECRETS["kafkaPassword"]},
           {"name": "URBANSTACK_WAREHOUSE_URL", "value": "http://default:hunter2@clickhouse:8123"},
           {"name": "URBANSTACK_KEYCLOAK_URL", "value": f"http://kc/?{SECRETS['keycloakAdminPassword']}"}]
    problems = env_problems(env, list(SECRETS.values()))
    assert len(problems) == 4, problems


def read_by_code(workload: str) -> set[str]:
    """What the workload's code reads: every Settings field (Settings.from_env reads
    them all, through FIELDS), the sink's SinkConfig.ENV table, and the os.environ
    reads found in the syntax tree of the modules it runs."""
    names = {settings_module.FIELDS[field.name].env for field in dataclasses.fields(settings_module.Settings)}
    if workload == "urbanstack-sink":
        names |= {variable for variable, _doc in SinkConfig.ENV.values()}
    return names | code_env_reads(path for pattern in CODE[workload] for path in sorted(ROOT.glob(pattern)))


def test_every_variable_a_deployment_sets_is_read_by_its_code(stack):
    assert sorted(CODE) == sorted({*(name for name, _ in pod_specs(stack)), "urbanstack-mqtt"})
    problems = [problem for workload, container in containers(stack)
                for problem in unread_env_problems(container.get("env", []), read_by_code(workload), workload)]
    assert problems == []


def test_env_derivation_finds_what_the_code_reads_and_nothing_else():
    ingest = read_by_code("urbanstack-connectors")
    # Read through a helper (_flag), through argparse defaults, and through Settings.
    assert {"URBANSTACK_INGEST_PULL", "URBANSTACK_INGEST_PORT", "URBANSTACK_HTTP_HOST",
            "URBANSTACK_KAFKA_BOOTSTRAP", "URBANSTACK_STATE_DIR"} <= ingest
    assert {"URBANSTACK_KAFKA_ADMIN_USER", "URBANSTACK_KAFKA_ADMIN_PASSWORD"} <= read_by_code("urbanstack-operator")
    assert "URBANSTACK_SINK_GROUP" in read_by_code("urbanstack-sink")
    assert "URBANSTACK_SINK_GROUP" not in read_by_code("urbanstack-api")
    # Names the operator writes into tool pods, and names nobody reads, are not reads.
    assert "URBANSTACK_AGS" not in read_by_code("urbanstack-operator")
    for invented in ("URBANSTACK_PUBLIC_API_URL", "URBANSTACK_KAFKA_PASSWORD"):
        assert all(invented not in read_by_code(workload) for workload in CODE), invented


def test_env_checker_catches_variables_nobody_reads(dev):
    container = copy.deepcopy(dict(containers(dev))["urbanstack-api"])
    container["env"] += [{"name": "URBANSTACK_PUBLIC_API_URL", "value": "https://api.example.org"},
                         {"name": "URBANSTACK_SINK_GROUP", "value": "api-is-no-sink"},
                         copy.deepcopy(container["env"][0])]
    problems = "\n".join(unread_env_problems(container["env"], read_by_code("urbanstack-api"), "urbanstack-api"))
    assert "sets URBANSTACK_PUBLIC_API_URL, which its code does not read" in problems
    assert "sets URBANSTACK_SINK_GROUP, which its code does not read" in problems
    assert f"sets {container['env'][0]['name']} twice" in problems


def test_warehouse_is_a_server_url_from_a_secret(stack):
    """chDB lets one process own a data path: api, sink and operator pods need a ClickHouse server."""
    secrets = {s.inputs["metadata"]["name"]: s for s in stack.of_kind("Secret")}
    for workload, container in containers(stack):
        env = {variable["name"]: variable for variable in container.get("env", [])}
        if workload in ("urbanstack-operator", "urbanstack-api", "urbanstack-sink", HUB):
            reference = env["URBANSTACK_WAREHOUSE_URL"]["valueFrom"]["secretKeyRef"]
            assert reference["name"] in secrets, workload
        else:
            assert "URBANSTACK_WAREHOUSE_URL" not in env, f"{workload} does not use the warehouse"


@pytest.mark.parametrize("password", ["pl@in:p/w#?%", "warehouse-Secret-c0ffee"])
def test_warehouse_url_secret_keeps_any_password_intact(password):
    from urllib.parse import unquote, urlsplit

    from urbanstack.stacks.platform import backends

    url = {}

    @pulumi.runtime.test
    def run():
        secret = pulumi.Output.secret(password)
        return backends.warehouse_url("http://clickhouse.example:8123", "urban user", secret).apply(
            lambda value: url.setdefault("value", value))

    use_mocks(stack_values("dev"), {})
    run()
    parts = urlsplit(url["value"])
    assert (unquote(parts.username), unquote(parts.password)) == ("urban user", password)
    assert (parts.scheme, parts.hostname, parts.port) == ("http", "clickhouse.example", 8123)


def test_secret_values_appear_only_inside_pulumi_secrets(stack):
    for declared in stack.declared:
        text = json.dumps(declared.inputs)
        leaked = [key for key, value in SECRETS.items() if value in text]
        if declared.kind != "Secret":
            assert leaked == [], f"{declared.kind}/{declared.name} holds {leaked}"
            continue
        if declared.inputs.get("type") == "kubernetes.io/service-account-token":
            assert not {"data", "stringData"} & set(declared.inputs), declared.name  # Kubernetes fills it in
            continue
        data = declared.inputs["stringData"]
        assert data[SECRET_SIGNATURE] == SECRET_MARK, f"Secret {declared.name} is not a Pulumi secret"


def test_backend_credentials_are_read_as_pulumi_secrets(stack):
    assert stack.secret_flags and all(stack.secret_flags.values()), stack.secret_flags


def test_stack_files_hold_no_plain_credentials():
    for path in PROGRAM.glob("Pulumi.*.yaml"):
        config = yaml.safe_load(path.read_text(encoding="utf-8")).get("config", {})
        for key, value in config.items():
            if any(word in key.lower() for word in ("password", "secret", "token")):
                assert isinstance(value, dict) and "secure" in value, f"{path.name}: {key} is not a secret"


def test_urls_with_credentials_are_refused():
    values = stack_values("dev")
    values["external"] = values["external"] | {"warehouseUrl": "http://default:hunter2@clickhouse:8123"}
    with pytest.raises(Exception, match="must not carry credentials"):
        synthesize(values)


def test_kafka_protocols_the_code_cannot_speak_are_refused():
    values = stack_values("dev")
    values["external"] = values["external"] | {"kafkaSecurityProtocol": "PLAINTEXT"}
    with pytest.raises(Exception, match="speak SASL_PLAINTEXT or SASL_SSL"):
        synthesize(values)


CA = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"


def test_kafka_over_tls_mounts_the_ca_where_kafka_clients_run():
    values = stack_values("dev")
    values["external"] = values["external"] | {"kafkaSecurityProtocol": "SASL_SSL", "kafkaCaCertificate": CA}
    installation = synthesize(values)
    assert installation.one("ConfigMap", "urbanstack-kafka-ca").inputs["data"] == {"ca.crt": CA}
    pods = dict(pod_specs(installation))
    for workload in ("urbanstack-operator", "urbanstack-sink", "urbanstack-connectors", "urbanstack-api", HUB):
        [container] = pods[workload]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        uses_kafka = workload != "urbanstack-api"
        assert (env.get("URBANSTACK_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL") == uses_kafka, workload
        assert ("URBANSTACK_KAFKA_CA_FILE" in env) == uses_kafka, workload
        if uses_kafka:
            [mount] = [m for m in container["volumeMounts"] if m["name"] == "kafka-ca"]
            assert f"{mount['mountPath']}/ca.crt" == env["URBANSTACK_KAFKA_CA_FILE"] and mount["readOnly"]
            assert {"name": "kafka-ca", "configMap": {"name": "urbanstack-kafka-ca"}} in pods[workload]["volumes"]
    values["external"] = values["external"] | {"kafkaSecurityProtocol": "SASL_PLAINTEXT"}
    with pytest.raises(Exception, match="kafkaCaCertificate needs kafkaSecurityProtocol SASL_SSL"):
        synthesize(values)


def test_api_limits_and_trusted_proxies_reach_the_processes_that_read_them(dev, prod):
    def env(installation, workload):
        return {e["name"]: e.get("value") for e in dict(containers(installation))[workload]["env"]}

    assert env(prod, "urbanstack-api")["URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR"] == "600"
    for workload in ("urbanstack-api", "urbanstack-connectors", HUB):
        assert env(prod, workload)["URBANSTACK_TRUSTED_PROXIES"] == "10.244.0.0/16"
    assert "URBANSTACK_TRUSTED_PROXIES" not in env(prod, "urbanstack-sink")
    # The code trusts no proxy by default: behind the ingress every client would be the controller.
    for wrong, message in ((None, "trustedProxies is required"), ("*", "is not an address or CIDR")):
        values = {k: v for k, v in stack_values("dev").items() if k != "trustedProxies"}
        with pytest.raises(Exception, match=message):
            synthesize(values if wrong is None else values | {"trustedProxies": wrong})
    assert "URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR" not in env(prod, "urbanstack-connectors")
    with pytest.raises(Exception, match="apiAnonymousQueriesPerHour"):
        synthesize(stack_values("dev") | {"apiAnonymousQueriesPerHour": -1})


@pytest.mark.parametrize("image", ["registry.local/urbanstack/runtime:latest", "registry.local/urbanstack/runtime",
                                   "registry.local:5000/urbanstack/runtime"])
def test_moving_image_tags_are_refused(image):
    with pytest.raises(Exception, match="must be pinned"):
        synthesize(stack_values("dev") | {"runtimeImage": image})


# --- network ---------------------------------------------------------------

def test_network_is_default_deny_with_one_allow_list_per_component(stack):
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in stack.of_kind("NetworkPolicy")}
    deny = policies["urbanstack-default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for component in ("operator", "api", "sink", "connectors"):
        assert f"urbanstack-{component}" in policies
    controller = stack.config.ingress.controller_namespace
    # What the Ingress routes to: the API, the push endpoints (/ingest), the hub's pages.
    for component in ("api", "connectors", "hub"):
        sources = [peer for rule in policies[f"urbanstack-{component}"]["ingress"] for peer in rule["from"]]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": controller}}} in sources
    for component in ("operator", "sink"):
        sources = [peer for rule in policies[f"urbanstack-{component}"]["ingress"] for peer in rule["from"]]
        assert controller not in json.dumps(sources), f"{component} is reachable from the ingress controller"
    operator_egress = policies["urbanstack-operator"]["egress"]
    api_server = [rule for rule in operator_egress if any("ipBlock" in peer for peer in rule["to"])
                  and {port["port"] for port in rule["ports"]} == set(stack.config.api_server_ports)]
    assert api_server, "the operator cannot reach the API server"
    for name, spec in policies.items():
        for rule in spec.get("egress", []):
            opens_the_world = any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule["to"])
            assert not opens_the_world or rule.get("ports"), f"{name}: egress to anywhere on any port"


def test_components_reach_only_the_backends_they_use(prod):
    policies = {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in prod.of_kind("NetworkPolicy")}
    markers = {"kafka": "strimzi.io/cluster", "warehouse": "clickhouse.altinity.com/chi", "keycloak": "keycloak"}
    # What each command's code talks to: ingest checks tokens and produces, the API
    # queries and checks tokens, the sink consumes and inserts.
    uses = {"connectors": {"kafka", "keycloak"}, "api": {"warehouse", "keycloak"}, "sink": {"kafka", "warehouse"},
            "hub": {"kafka", "warehouse", "keycloak"}}
    for component, backends in uses.items():
        egress = json.dumps(policies[f"urbanstack-{component}"]["egress"])
        assert {name for name, marker in markers.items() if marker in egress} == backends, component


# --- backends --------------------------------------------------------------

def test_in_cluster_backends_are_their_operators_resources(prod):
    kinds = {(d.api_version, d.kind) for d in prod.declared}
    assert {("k8s.keycloak.org/v2alpha1", "Keycloak"), ("kafka.strimzi.io/v1beta2", "Kafka"),
            ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
            ("clickhouse.altinity.com/v1", "ClickHouseInstallation")} <= kinds
    kafka = prod.of_kind("Kafka")[0].inputs
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["spec"]["kafka"]["listeners"][0]["authentication"]["type"] == "scram-sha-512"
    pool = prod.of_kind("KafkaNodePool")[0].inputs
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]


def test_in_cluster_runtime_services_hold_no_kafka_super_user_credentials(prod):
    kafka = prod.of_kind("Kafka")[0].inputs
    super_users = kafka["spec"]["kafka"]["authorization"]["superUsers"]
    operator = dict(containers(prod))["urbanstack-operator"]
    admin = next(e["value"] for e in operator["env"] if e["name"] == "URBANSTACK_KAFKA_ADMIN_USER")
    assert f"User:{admin}" in super_users
    for deployment in RUNTIME_DEPLOYMENTS:
        text = json.dumps(dict(containers(prod))[deployment])
        # Strimzi writes a user's password into a Secret named like the user.
        assert "URBANSTACK_KAFKA_ADMIN" not in text and f'"name": "{admin}"' not in text, deployment
    runtime_user = prod.one("KafkaUser", "urbanstack-runtime").inputs["spec"]
    operations = {op for acl in runtime_user["authorization"]["acls"] for op in acl["operations"]}
    assert operations <= {"Describe", "Read", "Write"}


def test_external_backends_declare_no_third_party_resources(dev):
    assert not {"Keycloak", "Kafka", "KafkaNodePool", "ClickHouseInstallation"} & {d.kind for d in dev.declared}
    assert [s.inputs["metadata"]["name"] for s in dev.of_kind("Secret")
            if s.inputs.get("type") != "kubernetes.io/service-account-token"] == ["urbanstack-backends",
                                                                                   "urbanstack-mqtt"]
    assert not dev.of_kind("KeycloakRealmImport")


# --- labels, awaiting, dev vs prod -----------------------------------------

def test_everything_is_labelled(stack):
    for declared in stack.declared:
        labels = declared.inputs["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{declared.kind}/{declared.name} lacks {key}"


def test_only_the_dev_stack_skips_awaiting(dev, prod):
    assert all(d.inputs["metadata"].get("annotations", {}).get("pulumi.com/skipAwait") == "true"
               for d in dev.declared)
    assert not any("pulumi.com/skipAwait" in d.inputs["metadata"].get("annotations", {}) for d in prod.declared)


def test_ingress_serves_every_host_over_tls(stack):
    ingress = stack.one("Ingress", "urbanstack").inputs["spec"]
    hosts = {rule["host"] for rule in ingress["rules"]}
    assert hosts <= {host for tls in ingress["tls"] for host in tls["hosts"]}
    assert all(tls["secretName"] for tls in ingress["tls"])
    assert ingress["ingressClassName"]


def test_prod_differs_from_dev_where_it_should(dev, prod):
    def minimum(installation, name):
        return installation.one("HorizontalPodAutoscaler", name).inputs["spec"]["minReplicas"]

    for name in ("urbanstack-api", "urbanstack-sink", HUB):
        assert minimum(prod, name) >= 2 and minimum(prod, name) > minimum(dev, name), name
    prod_ingress = prod.one("Ingress", "urbanstack").inputs
    assert "cert-manager.io/cluster-issuer" in prod_ingress["metadata"]["annotations"]
    assert prod_ingress["spec"]["tls"][0]["secretName"] != dev.one("Ingress", "urbanstack").inputs["spec"]["tls"][0][
        "secretName"]
    assert "@sha256:" in prod.one("Deployment", "urbanstack-api").inputs["spec"]["template"]["spec"]["containers"][0][
        "image"]
    assert prod.config.backends == "in-cluster" and dev.config.backends == "external"


def test_the_sink_logs_in_to_kafka_as_its_own_user(dev, prod):
    """runtime/sink.py kafka_client_config reads URBANSTACK_SINK_KAFKA_USER/PASSWORD; in-cluster
    they name the least-privilege `urbanstack-runtime` KafkaUser, from its Secret."""
    def sink_env(installation):
        [env] = [container.get("env", []) for workload, container in containers(installation)
                 if workload == "urbanstack-sink"]
        return {item["name"]: item for item in env}

    env = sink_env(prod)
    assert env["URBANSTACK_SINK_KAFKA_USER"]["value"] == "urbanstack-runtime"
    assert env["URBANSTACK_SINK_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "urbanstack-runtime",
                                                                                  "key": "password"}
    assert "URBANSTACK_KAFKA_ADMIN_PASSWORD" not in env
    external = sink_env(dev)
    assert "secretKeyRef" in external["URBANSTACK_SINK_KAFKA_PASSWORD"]["valueFrom"]
    for workload, container in containers(prod):
        if workload != "urbanstack-sink":
            assert not any(item["name"].startswith("URBANSTACK_SINK_KAFKA") for item in container.get("env", []))


# --- the hub (`urbanstack hub`: the Gov Hub's pages) -------------------------

def hub_env(installation) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dict(containers(installation))[HUB]["env"]}


def test_the_hub_runs_as_the_gov_hub_account_with_its_token_and_nothing_else_does(stack):
    account = stack.one("ServiceAccount", HUB_ACCOUNT).inputs
    assert account["automountServiceAccountToken"] is False  # only the hub's pod opts in
    hub = stack.one("Deployment", HUB).inputs
    assert service_account_problems(hub, HUB_ACCOUNT, token_needed=True) == []
    assert hub["spec"]["template"]["spec"]["containers"][0]["args"] == ["hub"]
    for workload, pod in pod_specs(stack):
        if workload != HUB:
            assert pod.get("serviceAccountName") != HUB_ACCOUNT, workload
    # Deliberately bad: the hub as the runtime account (which may not patch municipalities).
    bad = copy.deepcopy(hub)
    bad["spec"]["template"]["spec"]["serviceAccountName"] = RUNTIME_ACCOUNT
    assert service_account_problems(bad, HUB_ACCOUNT, token_needed=True)


def test_the_hubs_upload_role_reads_only_the_named_ingest_secret(stack):
    rules = stack.one("ClusterRole", rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME).inputs["rules"]
    assert secret_access_problems(rules) == []
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                      "resourceNames": [rbac.INGEST_SECRET]}]
    # The hub's main role still reads no Secret.
    main = stack.one("ClusterRole", rbac.GOV_HUB_CLUSTER_ROLE_NAME).inputs["rules"]
    assert not [rule for rule in main if "secrets" in rule["resources"]]


def test_the_hub_gets_exactly_what_urbanstack_hub_reads(dev, prod):
    expected = {"URBANSTACK_HTTP_HOST", "URBANSTACK_HUB_PORT", "URBANSTACK_STATE_DIR", "URBANSTACK_TRUSTED_PROXIES",
                "URBANSTACK_METADATA_URL", "URBANSTACK_METADATA_MIGRATION_URL",
                "URBANSTACK_GOV_HUB_KEYCLOAK_USER", "URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD",
                "URBANSTACK_KEYCLOAK_URL", "URBANSTACK_WAREHOUSE_URL", "URBANSTACK_KAFKA_BOOTSTRAP",
                "URBANSTACK_SIGNUP_KUBECONFIG", "URBANSTACK_SIGNUP_SECRET"}
    for installation in (dev, prod):
        env = hub_env(installation)
        assert expected <= set(env), expected - set(env)
        assert not {name for name in env if "ADMIN" in name or name.startswith("URBANSTACK_SINK_")}, sorted(env)
        assert env["URBANSTACK_HTTP_HOST"]["value"] == "0.0.0.0"
        [port] = dict(containers(installation))[HUB]["ports"]
        assert env["URBANSTACK_HUB_PORT"]["value"] == str(int(port["containerPort"]))
        assert env["URBANSTACK_GOV_HUB_KEYCLOAK_USER"]["value"] == "urbanstack-gov-hub"
        # Credentials by reference to the Secrets the platform's operator provides, never inlined.
        refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in (
            "URBANSTACK_METADATA_URL", "URBANSTACK_METADATA_MIGRATION_URL", "URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD",
            "URBANSTACK_SIGNUP_SECRET")}
        assert refs == {"URBANSTACK_METADATA_URL": {"name": "urbanstack-metadata", "key": "url"},
                        "URBANSTACK_METADATA_MIGRATION_URL": {"name": "urbanstack-metadata", "key": "migration-url"},
                        "URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD": {"name": "urbanstack-gov-hub-keycloak",
                                                                 "key": "client-secret"},
                        "URBANSTACK_SIGNUP_SECRET": {"name": "urbanstack-signup", "key": "proof-key"}}
        assert all("value" not in env[name] for name in refs)
        assert "secretKeyRef" in env["URBANSTACK_WAREHOUSE_URL"]["valueFrom"]
        # The state dir (uploads between preview and import) is the pod's writable emptyDir.
        [mount] = [m for m in dict(containers(installation))[HUB]["volumeMounts"] if m["name"] == "state"]
        assert mount["mountPath"] == env["URBANSTACK_STATE_DIR"]["value"]
    # Browsers are sent to URBANSTACK_KEYCLOAK_URL to sign in: in-cluster Keycloak by its public host.
    assert hub_env(prod)["URBANSTACK_KEYCLOAK_URL"]["value"] == "https://auth.urbanstack.example.org"
    assert hub_env(dev)["URBANSTACK_KEYCLOAK_URL"]["value"] == dev.config.external.keycloak_url


def test_hub_secret_names_and_keys_are_configurable():
    values = stack_values("dev") | {"hub": {"metadataSecret": "hub-db", "metadataUrlKey": "app",
                                            "metadataMigrationUrlKey": "", "keycloakSecret": "kc-hub",
                                            "keycloakSecretKey": "secret", "keycloakClientId": "our-hub",
                                            "metadataPort": 6432}}
    installation = synthesize(values)
    env = hub_env(installation)
    assert env["URBANSTACK_METADATA_URL"]["valueFrom"]["secretKeyRef"] == {"name": "hub-db", "key": "app"}
    assert "URBANSTACK_METADATA_MIGRATION_URL" not in env  # migrations as the application role
    assert env["URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kc-hub",
                                                                                       "key": "secret"}
    assert env["URBANSTACK_GOV_HUB_KEYCLOAK_USER"]["value"] == "our-hub"
    policy = installation.one("NetworkPolicy", HUB).inputs["spec"]
    assert any({"protocol": "TCP", "port": 6432} in rule["ports"] for rule in policy["egress"])
    for bad, message in (({"metadataSecret": "Hub_DB"}, "hub.metadataSecret must name a Secret"),
                         ({"metadataPort": "postgres"}, "hub.metadataPort must be a TCP port"),
                         ({"metadataUrl": "postgresql://u:p@db/x"}, "hub: unknown key")):
        with pytest.raises(Exception, match=message):
            synthesize(stack_values("dev") | {"hub": bad})


def test_the_hub_is_probed_where_its_process_answers(stack):
    from urbanstack import serve

    container = dict(containers(stack))[HUB]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in serve.HUB_API_PREFIXES


def test_the_hub_has_a_service_a_budget_and_an_autoscaler(stack):
    selector = stack.one("Deployment", HUB).inputs["spec"]["selector"]["matchLabels"]
    service = stack.one("Service", HUB).inputs["spec"]
    assert service["selector"] == selector and service["ports"][0]["targetPort"] == "http"
    budget = stack.one("PodDisruptionBudget", HUB).inputs["spec"]
    assert budget["selector"]["matchLabels"] == selector and budget["maxUnavailable"] == 1
    assert stack.one("HorizontalPodAutoscaler", HUB).inputs["spec"]["scaleTargetRef"]["name"] == HUB


def _route(installation, host: str, path: str) -> str | None:
    """The Service an Ingress controller picks: the longest matching Prefix path over every
    Ingress of the host, matched element by element as the Ingress API defines it."""
    best = (-1, None)
    for ingress in installation.of_kind("Ingress"):
        for rule in ingress.inputs["spec"]["rules"]:
            if rule["host"] != host:
                continue
            for entry in rule["http"]["paths"]:
                prefix = entry["path"].rstrip("/")
                if path == prefix or path.startswith(prefix + "/") or prefix == "":
                    if len(prefix) > best[0]:
                        best = (len(prefix), entry["backend"]["service"]["name"])
    return best[1]


def test_one_host_routes_the_api_the_push_endpoints_and_the_pages(stack):
    from urbanstack import serve

    host = stack.config.ingress.api_host
    expected = {"/api/v1/datasets": "urbanstack-api", "/graphql": "urbanstack-api", "/readyz": "urbanstack-api",
                "/openapi.json": "urbanstack-api", "/docs": "urbanstack-api", "/v1.1/Things": "urbanstack-api",
                "/ogcapi/collections": "urbanstack-api",
                "/ingest/v1/guetersloh/raumklima/luft": "urbanstack-connectors",
                "/gov/guetersloh/": HUB, "/": HUB, "/static/hub.css": HUB, "/apiary": HUB}
    assert {path: _route(stack, host, path) for path in expected} == expected
    # The same split as `urbanstack serve` makes on one origin (serve.PathDispatch).
    dispatch = serve.PathDispatch("api", "web")
    for path, service in expected.items():
        goes_to_api = any(path == p.rstrip("/") or path.startswith(p) for p in dispatch.api_prefixes)
        assert goes_to_api == (service != HUB), path
    hub_ingress = stack.one("Ingress", HUB).inputs
    assert hub_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_cookie"
    assert hub_ingress["spec"]["tls"][0]["hosts"] == [host]
    assert "upstream-hash-by" not in json.dumps(stack.one("Ingress", "urbanstack").inputs["metadata"])


def test_the_hub_reaches_its_backends_the_api_server_and_postgresql(stack):
    policy = stack.one("NetworkPolicy", HUB).inputs["spec"]
    egress = json.dumps(policy["egress"])
    assert all(str(port) in egress for port in stack.config.api_server_ports)
    assert any({"protocol": "TCP", "port": 5432} in rule["ports"] and
               rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}] for rule in policy["egress"])
    controller = stack.config.ingress.controller_namespace
    assert controller in json.dumps(policy["ingress"])


# --- self-service signup -----------------------------------------------------

def test_the_signup_creates_municipalities_as_its_own_account_from_the_hubs_pod(stack):
    """/signup and /ops run in the hub's process, but approving creates a Municipality, which the
    Gov Hub's account may not: the hub reaches the API as urbanstack-signup through a kubeconfig
    and that account's token, mounted read-only. No pod runs as that account."""
    from urbanstack.stacks.platform import services

    account = stack.one("ServiceAccount", rbac.SIGNUP_SERVICE_ACCOUNT).inputs
    assert account["automountServiceAccountToken"] is False
    assert not [w for w, pod in pod_specs(stack) if pod.get("serviceAccountName") == rbac.SIGNUP_SERVICE_ACCOUNT]
    rules = stack.one("ClusterRole", rbac.SIGNUP_CLUSTER_ROLE_NAME).inputs["rules"]
    assert not [rule for rule in rules if "secrets" in rule["resources"] or "delete" in rule["verbs"]]
    assert [r for r in rules if "municipalities" in r["resources"] and "create" in r["verbs"]]
    assert not [r for r in stack.one("ClusterRole", rbac.GOV_HUB_CLUSTER_ROLE_NAME).inputs["rules"]
                if "create" in r["verbs"] and "municipalities" in r["resources"]]

    token = stack.one("Secret", services.SIGNUP_TOKEN_SECRET).inputs
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == rbac.SIGNUP_SERVICE_ACCOUNT
    kubeconfig = yaml.safe_load(stack.one("ConfigMap", services.SIGNUP_KUBECONFIG_MAP).inputs["data"]["kubeconfig"])
    [user] = kubeconfig["users"]
    [cluster] = kubeconfig["clusters"]
    assert user["user"] == {"tokenFile": f"{services.SIGNUP_DIR}/token"} and "token" not in user["user"]
    assert cluster["cluster"]["server"] == "https://kubernetes.default.svc"
    assert cluster["cluster"]["certificate-authority"] == f"{services.SIGNUP_DIR}/ca.crt"

    hub = stack.one("Deployment", HUB).inputs["spec"]["template"]["spec"]
    [container] = hub["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "signup"]
    assert mount == {"name": "signup", "mountPath": services.SIGNUP_DIR, "readOnly": True}
    [volume] = [v for v in hub["volumes"] if v["name"] == "signup"]
    sources = volume["projected"]["sources"]
    assert {"secret": services.SIGNUP_TOKEN_SECRET, "configMap": services.SIGNUP_KUBECONFIG_MAP} == {
        kind: source[kind]["name"] for source in sources for kind in source}
    files = {item["path"] for source in sources for kind in source for item in source[kind]["items"]}
    assert files == {"token", "ca.crt", "kubeconfig"}
    env = {e["name"]: e for e in container["env"]}
    assert env["URBANSTACK_SIGNUP_KUBECONFIG"]["value"] == f"{services.SIGNUP_DIR}/kubeconfig"
    # No other pod gets the signup's token.
    for workload, pod in pod_specs(stack):
        if workload != HUB:
            assert "signup" not in json.dumps(pod.get("volumes", [])), workload


def test_the_signup_reads_its_kubeconfig_from_the_setting_inside_a_cluster(monkeypatch, tmp_path):
    """The hub's pod runs as the Gov Hub's account; URBANSTACK_SIGNUP_KUBECONFIG wins over it."""
    from urbanstack import serve
    from urbanstack.settings import Settings

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    mounted = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path),
                                 "URBANSTACK_SIGNUP_KUBECONFIG": "/var/run/urbanstack/signup/kubeconfig"})
    assert serve.signup_kubeconfig(mounted) == "/var/run/urbanstack/signup/kubeconfig"
    assert serve.signup_kubeconfig(Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path)})) is None


def test_in_cluster_keycloak_imports_the_platform_realm_for_the_ops_console(prod):
    from urbanstack.runtime.hubs.signup import ops_auth

    [imported] = prod.of_kind("KeycloakRealmImport")
    spec = imported.inputs["spec"]
    assert spec["keycloakCRName"] == prod.one("Keycloak", "urbanstack-keycloak").inputs["metadata"]["name"]
    realm = spec["realm"]
    assert realm == ops_auth.platform_realm_import([f"https://{prod.config.ingress.api_host}/ops/*"])
    assert realm["realm"] == ops_auth.PLATFORM_REALM and realm["registrationAllowed"] is False
    assert [role["name"] for role in realm["roles"]["realm"]] == [ops_auth.PLATFORM_ADMIN]
    [client] = realm["clients"]
    assert client["clientId"] == ops_auth.OPS_CLIENT and client["publicClient"] is True
    assert client["redirectUris"] == ["https://api.urbanstack.example.org/ops/*"]  # the platform's host only
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert not client["directAccessGrantsEnabled"] and not client["implicitFlowEnabled"]
    assert "users" not in realm  # people are added by hand, never by the stack


def test_the_signups_proof_key_secret_is_configurable():
    installation = synthesize(stack_values("dev") | {"hub": {"signupSecret": "signup-pow", "signupSecretKey": "k"}})
    env = hub_env(installation)
    assert env["URBANSTACK_SIGNUP_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "signup-pow", "key": "k"}
    with pytest.raises(Exception, match="hub.signupSecret must name a Secret"):
        synthesize(stack_values("dev") | {"hub": {"signupSecret": "Signup_Key"}})


def test_in_cluster_keycloak_mounts_our_login_theme_from_a_configmap(prod):
    """Every file of the login theme is in a ConfigMap, mounted read-only into Keycloak's themes
    folder under the theme's content-hashed name, which the platform realm (and the operator's
    realms) name as their login theme."""
    from urbanstack import keycloak_theme

    theme = keycloak_theme.name()
    keycloak = prod.one("Keycloak", "urbanstack-keycloak").inputs["spec"]
    pod = keycloak["unsupported"]["podTemplate"]["spec"]
    [volume] = pod["volumes"]
    [mount] = pod["containers"][0]["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": f"/opt/keycloak/themes/{theme}", "readOnly": True}
    config_map = prod.one("ConfigMap", volume["configMap"]["name"]).inputs["data"]
    shipped = {item["path"]: config_map[item["key"]] for item in volume["configMap"]["items"]}
    assert shipped == {path: content.decode() for path, content in keycloak_theme.files().items()}
    [imported] = prod.of_kind("KeycloakRealmImport")
    assert imported.inputs["spec"]["realm"]["loginTheme"] == theme


def test_the_signup_directory_comes_from_the_configmap_the_platforms_operator_names(stack):
    """Without ``hub.directoryConfigMap`` the hub has no directory (the signup says so); with it,
    the ConfigMap's gzipped municipality directory and Kreis names are mounted read-only into the
    hub and named by URBANSTACK_MUNICIPALITY_DIRECTORY / URBANSTACK_DISTRICT_DIRECTORY."""
    assert "URBANSTACK_MUNICIPALITY_DIRECTORY" not in hub_env(stack)
    installation = synthesize(stack_values("dev") | {"hub": {"directoryConfigMap": "destatis-directory"}})
    env = hub_env(installation)
    assert env["URBANSTACK_MUNICIPALITY_DIRECTORY"]["value"] == "/etc/urbanstack/directory/gemeinden.csv.gz"
    assert env["URBANSTACK_DISTRICT_DIRECTORY"]["value"] == "/etc/urbanstack/directory/kreise.csv"
    pod = installation.one("Deployment", HUB).inputs["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "directory"]
    assert volume["configMap"]["name"] == "destatis-directory"
    assert {item["path"] for item in volume["configMap"]["items"]} == {"gemeinden.csv.gz", "kreise.csv"}
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "directory"]
    assert mount == {"name": "directory", "mountPath": "/etc/urbanstack/directory", "readOnly": True}
    with pytest.raises(Exception, match="hub.directoryConfigMap must name"):
        synthesize(stack_values("dev") | {"hub": {"directoryConfigMap": "Destatis_Dir"}})


MAIL = {"host": "relay.example.org", "port": 587, "from": "no-reply@example.org", "user": "urbanstack",
        "passwordSecret": "urbanstack-smtp", "passwordSecretKey": "pw"}


def test_the_mail_relay_reaches_hub_operator_and_platform_realm_with_the_password_by_reference():
    """hub (signup confirmations) and operator (realm smtpServer) get URBANSTACK_SMTP_* with the
    password from its Secret; the imported platform realm sends through the same relay, its
    password a placeholder the Keycloak operator fills from that Secret. No password in any value."""
    installation = synthesize(stack_values("prod") | {"mail": MAIL})
    operator = dict(containers(installation))["urbanstack-operator"]
    for env in (hub_env(installation), {v["name"]: v for v in operator["env"]}):
        assert env["URBANSTACK_SMTP_HOST"]["value"] == "relay.example.org"
        assert env["URBANSTACK_SMTP_PORT"]["value"] == "587"
        assert env["URBANSTACK_SMTP_FROM"]["value"] == "no-reply@example.org"
        assert env["URBANSTACK_SMTP_USER"]["value"] == "urbanstack"
        assert env["URBANSTACK_SMTP_STARTTLS"]["value"] == "1"
        assert env["URBANSTACK_SMTP_PASSWORD"] == {"name": "URBANSTACK_SMTP_PASSWORD", "valueFrom": {
            "secretKeyRef": {"name": "urbanstack-smtp", "key": "pw"}}}
    [imported] = installation.of_kind("KeycloakRealmImport")
    smtp = imported.inputs["spec"]["realm"]["smtpServer"]
    assert smtp | {"password": "-"} == {"host": "relay.example.org", "port": "587", "from": "no-reply@example.org",
                                         "fromDisplayName": "Urban Stack", "starttls": "true", "ssl": "false",
                                         "auth": "true", "user": "urbanstack", "password": "-"}
    assert smtp["password"] == "${URBANSTACK_SMTP_PASSWORD}"
    assert imported.inputs["spec"]["placeholders"] == {
        "URBANSTACK_SMTP_PASSWORD": {"secret": {"name": "urbanstack-smtp", "key": "pw"}}}


def test_without_a_relay_nothing_mails_and_a_bad_relay_is_refused(prod):
    assert "URBANSTACK_SMTP_HOST" not in hub_env(prod)
    [imported] = prod.of_kind("KeycloakRealmImport")
    assert "smtpServer" not in imported.inputs["spec"]["realm"] and "placeholders" not in imported.inputs["spec"]
    for bad, message in (({"host": "relay.example.org"}, "mail needs host and from"),
                         (MAIL | {"starttls": False}, "starttls must be on"),
                         (MAIL | {"port": "smtp"}, "mail.port must be a TCP port"),
                         (MAIL | {"passwordSecret": "Bad_Name"}, "mail.passwordSecret must name a Secret"),
                         (MAIL | {"tls": True}, "unknown key")):
        with pytest.raises(Exception, match=message):
            synthesize(stack_values("prod") | {"mail": bad})

def test_the_meter_topic_and_its_least_privilege_users_are_declared_in_cluster(prod):
    """The same topic, group and rights as runtime/metering (tested against the real Kafka in
    tests/integration/test_metering_acls.py): the writer only writes, the reader only reads."""
    from urbanstack.runtime.metering.emitter import METER_TOPIC
    from urbanstack.runtime.metering.identities import METER_GROUP, METER_READER, METER_WRITER, meter_acls

    topic = prod.one("KafkaTopic", "urbanstack-meter").inputs["spec"]
    assert topic["topicName"] == METER_TOPIC
    assert topic["config"]["retention.ms"] == 90 * 24 * 3600 * 1000

    def rights(name):
        spec = prod.one("KafkaUser", name).inputs["spec"]
        assert spec["authentication"]["type"] == "scram-sha-512"
        return {(acl["resource"]["type"], acl["resource"]["name"], acl["resource"]["patternType"], op.upper())
                for acl in spec["authorization"]["acls"] for op in acl["operations"]}

    expected = {}
    for binding in meter_acls():
        user = binding.principal.removeprefix("User:")
        expected.setdefault(user, set()).add((binding.restype.name.lower(), binding.name,
                                              binding.resource_pattern_type.name.lower(), binding.operation.name))
    assert rights(METER_WRITER) == expected[METER_WRITER] == {("topic", METER_TOPIC, "literal", "DESCRIBE"),
                                                               ("topic", METER_TOPIC, "literal", "WRITE")}
    assert rights(METER_READER) == expected[METER_READER]
    assert ("group", METER_GROUP, "literal", "READ") in rights(METER_READER)
