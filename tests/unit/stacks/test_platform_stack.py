"""What an ops reviewer checks in the platform stack, for the dev and prod configs."""

from __future__ import annotations

import copy
import json
import runpy

import pytest
import yaml
import pulumi
from stack_harness import PROGRAM, ROOT, SECRETS, stack_values, synthesize, use_mocks
from stack_review import binding_problems, container_problems, env_problems, rbac_problems, rollout_problems

from urbanstack.operator import rbac

NAMESPACE = "urbanstack-system"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # how Pulumi marks a secret value on the wire
SECRET_MARK = "1b47061264138c4ac30d75fd1eb44270"


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

def test_cluster_role_is_operator_rbac_verbatim(stack):
    role = stack.one("ClusterRole", rbac.CLUSTER_ROLE_NAME)
    assert role.inputs["rules"] == rbac.cluster_role()["rules"]
    assert len(stack.of_kind("ClusterRole")) == 1
    assert not stack.of_kind("Role")


def test_cluster_role_is_least_privilege(stack):
    assert rbac_problems(stack.one("ClusterRole", rbac.CLUSTER_ROLE_NAME).inputs["rules"]) == []


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


def test_bindings_only_to_the_operator_service_account(stack):
    bindings = stack.of_kind("ClusterRoleBinding") + stack.of_kind("RoleBinding")
    assert [b.inputs["roleRef"]["name"] for b in bindings] == [rbac.CLUSTER_ROLE_NAME]
    for binding in bindings:
        assert binding_problems(binding.inputs, "urbanstack-operator", NAMESPACE) == []
    stack.one("ServiceAccount", "urbanstack-operator")
    bad = copy.deepcopy(bindings[0].inputs)
    bad["subjects"].append({"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"})
    assert binding_problems(bad, "urbanstack-operator", NAMESPACE)


# --- workloads -------------------------------------------------------------

def test_every_container_is_bounded_probed_and_hardened(stack):
    problems = [problem for workload, pod in pod_specs(stack) for problem in container_problems(pod, workload)]
    assert problems == []
    assert {workload for workload, _ in pod_specs(stack)} == {
        "urbanstack-operator", "urbanstack-api", "urbanstack-sink", "urbanstack-connectors", "urbanstack-hub"}


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


def test_rolling_updates_never_drop_below_desired_replicas(stack):
    deployments = stack.of_kind("Deployment")
    assert deployments
    assert [problem for d in deployments for problem in rollout_problems(d.inputs)] == []
    bad = copy.deepcopy(deployments[0].inputs)
    bad["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%"
    assert rollout_problems(bad)
    bad["spec"]["strategy"] = {"type": "Recreate"}
    assert rollout_problems(bad)


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
    assert sorted(autoscalers) == ["urbanstack-api", "urbanstack-hub", "urbanstack-sink"]
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


def test_secret_values_appear_only_inside_pulumi_secrets(stack):
    for declared in stack.declared:
        text = json.dumps(declared.inputs)
        leaked = [key for key, value in SECRETS.items() if value in text]
        if declared.kind != "Secret":
            assert leaked == [], f"{declared.kind}/{declared.name} holds {leaked}"
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
    for component in ("operator", "api", "sink", "connectors", "hub"):
        assert f"urbanstack-{component}" in policies
    controller = stack.config.ingress.controller_namespace
    for component in ("api", "hub"):
        sources = [peer for rule in policies[f"urbanstack-{component}"]["ingress"] for peer in rule["from"]]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": controller}}} in sources
    for component in ("operator", "sink", "connectors"):
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
    egress = json.dumps(policies["urbanstack-connectors"]["egress"])
    assert "strimzi.io/cluster" in egress
    assert "clickhouse.altinity.com/chi" not in egress and "keycloak" not in egress
    hub = json.dumps(policies["urbanstack-hub"]["egress"])
    assert "strimzi.io/cluster" not in hub and "clickhouse.altinity.com/chi" not in hub


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


def test_in_cluster_runtime_services_are_no_kafka_super_users(prod):
    kafka = prod.of_kind("Kafka")[0].inputs
    super_users = kafka["spec"]["kafka"]["authorization"]["superUsers"]

    def kafka_user(deployment, variable):
        container = prod.one("Deployment", deployment).inputs["spec"]["template"]["spec"]["containers"][0]
        return next(e["value"] for e in container["env"] if e["name"] == variable)

    assert f"User:{kafka_user('urbanstack-operator', 'URBANSTACK_KAFKA_ADMIN_USER')}" in super_users
    for deployment in ("urbanstack-api", "urbanstack-sink", "urbanstack-connectors"):
        assert f"User:{kafka_user(deployment, 'URBANSTACK_KAFKA_USER')}" not in super_users, deployment
    runtime_user = prod.one("KafkaUser", "urbanstack-runtime").inputs["spec"]
    operations = {op for acl in runtime_user["authorization"]["acls"] for op in acl["operations"]}
    assert operations <= {"Describe", "Read", "Write"}


def test_external_backends_declare_no_third_party_resources(dev):
    assert not {"Keycloak", "Kafka", "KafkaNodePool", "ClickHouseInstallation"} & {d.kind for d in dev.declared}
    assert [s.inputs["metadata"]["name"] for s in dev.of_kind("Secret")] == ["urbanstack-backends"]


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

    for name in ("urbanstack-api", "urbanstack-hub", "urbanstack-sink"):
        assert minimum(prod, name) >= 2 and minimum(prod, name) > minimum(dev, name), name
    prod_ingress = prod.one("Ingress", "urbanstack").inputs
    assert "cert-manager.io/cluster-issuer" in prod_ingress["metadata"]["annotations"]
    assert prod_ingress["spec"]["tls"][0]["secretName"] != dev.one("Ingress", "urbanstack").inputs["spec"]["tls"][0][
        "secretName"]
    assert "@sha256:" in prod.one("Deployment", "urbanstack-api").inputs["spec"]["template"]["spec"]["containers"][0][
        "image"]
    assert prod.config.backends == "in-cluster" and dev.config.backends == "external"
