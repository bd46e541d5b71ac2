"""The data plane: api, sink, connectors and hub from the one runtime image.

Each Deployment runs one ``urbanstack`` command (``COMMANDS``) and sets exactly
the environment variables that command reads (``FIELDS`` in ``urbanstack/settings.py``,
``SinkConfig.ENV`` in ``runtime/sink.py``); credentials only as ``secretKeyRef``. The tests check every variable against the code.

The HTTP services answer ``/healthz`` on their ``http`` port; the sink serves no
HTTP, only Prometheus metrics on loopback, which its probes ask from inside the pod.

All but the hub run as the runtime ServiceAccount, bound to ``rbac.runtime_cluster_role()``
verbatim (read the custom resources; ``get`` only the ``urbanstack-ingest``
Secrets). Only the pods that read the Kubernetes API get its token mounted. The hub
(``urbanstack hub``, the web pages) runs as the Gov Hub's own ServiceAccount with its
token: ``rbac.gov_hub_cluster_role()`` and, for the upload page,
``rbac.gov_hub_upload_cluster_role()``. The signup in the same process creates Municipalities
as its own account ``urbanstack-signup`` (``rbac.signup_cluster_role()``), through a kubeconfig
and that account's token mounted into the hub's pod; no pod runs as it.

One host serves API and pages, as ``urbanstack serve`` does on one origin: the API's
paths (``serve.API_PREFIXES``) go to the api, ``/ingest`` to the connectors (push
endpoints), everything else to the hub.

Rolling updates start a new pod before stopping an old one
(``maxUnavailable: 0``), and where an HPA owns the replica count the Deployment
leaves ``replicas`` unset, so an upgrade never scales a service down.
"""

from __future__ import annotations

import pulumi
import yaml
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.autoscaling.v2 import HorizontalPodAutoscaler
from pulumi_kubernetes.core.v1 import ConfigMap, Secret, Service, ServiceAccount
from pulumi_kubernetes.networking.v1 import Ingress
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget
from pulumi_kubernetes.rbac.v1 import ClusterRole, ClusterRoleBinding

from urbanstack import serve
from urbanstack.operator import rbac
from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.backends import Backends
from urbanstack.stacks.platform.config import (AUTOSCALED, KUBERNETES_API_READERS, NAMESPACE, RUNTIME_SERVICES,
                                               PlatformConfig)

SERVICE_ACCOUNT = common.name("runtime")
CPU_TARGET = 70
# The `urbanstack` subcommand each Deployment runs. The connectors are the
# ingest service: push endpoints and the pull scheduler that runs the connectors.
DIRECTORY_DIR = "/etc/urbanstack/directory"
COMMANDS = {"api": "api", "sink": "sink", "connectors": "ingest", "hub": "hub"}
# Components that serve HTTP on the ``http`` port (the sink does not).
HTTP_SERVICES = ("api", "connectors", "hub")
# Whose ServiceAccount each pod runs as.
SERVICE_ACCOUNTS = {"api": SERVICE_ACCOUNT, "sink": SERVICE_ACCOUNT, "connectors": SERVICE_ACCOUNT,
                    "hub": rbac.GOV_HUB_SERVICE_ACCOUNT}
# Components with a writable state dir: ingest's pull cursors, the hub's uploads between
# preview and import (<state dir>/hub-uploads).
STATEFUL = ("connectors", "hub")
# The hub's upload keeps a file between preview and import in its pod, so a browser's
# requests should stay on one pod: ingress-nginx hashes on the Cookie header (the session
# cookie is the only cookie the platform sets; requests without one are spread round-robin).
HUB_AFFINITY = {"nginx.ingress.kubernetes.io/upstream-hash-by": "$http_cookie"}
# An MQTT connection is idle between keep-alives (60 s by default in clients): nginx's 60 s read
# timeout would cut it; an hour lets clients with any usual keep-alive stay connected.
MQTT_TIMEOUTS = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                 "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600"}
# Where ingest keeps its pull cursors (<state dir>/ingest/cursors.json): the only
# writable place besides /tmp. An emptyDir: it survives container restarts, not
# a new pod (docs/deploy.md).
STATE_DIR = "/var/lib/urbanstack"
STATE_VOLUME = {"name": "state", "emptyDir": {"sizeLimit": "64Mi"}}
STATE_MOUNT = {"name": "state", "mountPath": STATE_DIR}
# The signup's identity in the hub's pod (_signup_identity): kubeconfig, CA and token in one folder.
SIGNUP_TOKEN_SECRET = f"{rbac.SIGNUP_SERVICE_ACCOUNT}-token"
SIGNUP_KUBECONFIG_MAP = f"{rbac.SIGNUP_SERVICE_ACCOUNT}-kubeconfig"
SIGNUP_DIR = "/var/run/urbanstack/signup"
SIGNUP_VOLUME = {"name": "signup", "projected": {"defaultMode": 0o440, "sources": [
    {"secret": {"name": SIGNUP_TOKEN_SECRET, "items": [{"key": "token", "path": "token"},
                                                       {"key": "ca.crt", "path": "ca.crt"}]}},
    {"configMap": {"name": SIGNUP_KUBECONFIG_MAP, "items": [{"key": "kubeconfig", "path": "kubeconfig"}]}}]}}
SIGNUP_MOUNT = {"name": "signup", "mountPath": SIGNUP_DIR, "readOnly": True}
# URBANSTACK_SINK_METRICS_PORT: the sink binds it on 127.0.0.1 only.
SINK_METRICS_PORT = 9400


def _env(cfg: PlatformConfig, backends: Backends, component: str) -> list[dict]:
    env = []
    if component == "api":
        # urbanstack/cli.py: `api` listens on --host/--port from these.
        env += [common.env_value("URBANSTACK_HTTP_HOST", "0.0.0.0"),
                common.env_value("URBANSTACK_HTTP_PORT", str(common.HTTP_PORT))]
    if component == "connectors":
        # urbanstack/cli.py: `ingest` takes its port from its own variable.
        env += [common.env_value("URBANSTACK_HTTP_HOST", "0.0.0.0"),
                common.env_value("URBANSTACK_INGEST_PORT", str(common.HTTP_PORT)),
                common.env_value("URBANSTACK_STATE_DIR", STATE_DIR)]
    if component == "hub":
        env += _hub_env(cfg)
    if component == "sink":
        env.append(common.env_value("URBANSTACK_SINK_METRICS_PORT", str(SINK_METRICS_PORT)))
        if cfg.mqtt is not None:
            # The selfLinks of the Observations the sink publishes: the API as clients reach it.
            env.append(common.env_value("URBANSTACK_STA_URL", f"https://{cfg.ingress.api_host}/v1.1"))
    if component == "api" and cfg.api_anonymous_queries_per_hour is not None:
        env.append(common.env_value("URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR",
                                    str(cfg.api_anonymous_queries_per_hour)))
    if component in ("api", "connectors", "hub"):
        env.append(common.env_value("URBANSTACK_TRUSTED_PROXIES", cfg.trusted_proxies))
    backend_env = backends.env_for(component)
    keycloak = backends.by_name["keycloak"]
    if component == "hub" and keycloak.public_host:
        # The hub sends browsers to Keycloak's sign-in page at URBANSTACK_KEYCLOAK_URL, so
        # an in-cluster Keycloak is addressed by its public host (through the Ingress).
        backend_env = [common.env_value(e["name"], f"https://{keycloak.public_host}")
                       if e["name"] == "URBANSTACK_KEYCLOAK_URL" else e for e in backend_env]
    return env + backend_env


def _hub_env(cfg: PlatformConfig) -> list[dict]:
    """urbanstack/cli.py `hub` and serve.run_hub: port, uploads' state dir, the metadata store
    and the Gov Hub's Keycloak client, credentials from the Secrets the operator provides."""
    hub = cfg.hub
    env = [common.env_value("URBANSTACK_HTTP_HOST", "0.0.0.0"),
           common.env_value("URBANSTACK_HUB_PORT", str(common.HTTP_PORT)),
           common.env_value("URBANSTACK_STATE_DIR", STATE_DIR),
           common.env_secret("URBANSTACK_METADATA_URL", hub.metadata_secret, hub.metadata_url_key)]
    if hub.metadata_migration_url_key:
        env.append(common.env_secret("URBANSTACK_METADATA_MIGRATION_URL", hub.metadata_secret,
                                     hub.metadata_migration_url_key))
    return env + [common.env_value("URBANSTACK_GOV_HUB_KEYCLOAK_USER", hub.keycloak_client_id),
                  common.env_secret("URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD", hub.keycloak_secret,
                                    hub.keycloak_secret_key),
                  # The signup (/signup, /ops) in the same process: its own cluster identity, one
                  # proof-of-work key for every replica.
                  common.env_value("URBANSTACK_SIGNUP_KUBECONFIG", f"{SIGNUP_DIR}/kubeconfig"),
                  common.env_secret("URBANSTACK_SIGNUP_SECRET", hub.signup_secret, hub.signup_secret_key),
                  *([common.env_value("URBANSTACK_MUNICIPALITY_DIRECTORY", f"{DIRECTORY_DIR}/gemeinden.csv.gz"),
                     common.env_value("URBANSTACK_DISTRICT_DIRECTORY", f"{DIRECTORY_DIR}/kreise.csv")]
                    if hub.directory_config_map else []),
                  *(cfg.mail.env() if cfg.mail else [])]


def _metrics_probe(*, period: int, failures: int) -> dict:
    """The sink's loopback metrics endpoint, asked from inside the container."""
    check = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{SINK_METRICS_PORT}/metrics', timeout=3)"
    return {"exec": {"command": ["python", "-c", check]}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def _deployment(cfg: PlatformConfig, backends: Backends, component: str,
                depends_on: list[pulumi.Resource]) -> Deployment:
    container = {
        "name": component,
        "image": cfg.runtime_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["urbanstack"],
        "args": [COMMANDS[component]],
        "env": _env(cfg, backends, component),
        "resources": cfg.resources[component],
        "securityContext": common.CONTAINER_SECURITY,
        "volumeMounts": [common.TMP_MOUNT, *backends.mounts_for(component)],
    }
    volumes = [common.TMP_VOLUME, *backends.volumes_for(component)]
    if component == "hub" and cfg.hub.directory_config_map:
        # Destatis' directory for the signup's search, from the ConfigMap the platform's operator made.
        volumes.append({"name": "directory", "configMap": {"name": cfg.hub.directory_config_map, "items": [
            {"key": "gemeinden.csv.gz", "path": "gemeinden.csv.gz"}, {"key": "kreise.csv", "path": "kreise.csv"}]}})
        container["volumeMounts"].append({"name": "directory", "mountPath": DIRECTORY_DIR, "readOnly": True})
    if component in HTTP_SERVICES:
        container["ports"] = [{"name": "http", "containerPort": common.HTTP_PORT, "protocol": "TCP"}]
        # runtime/api/app.py serves /readyz (the hub process too: serve.HUB_API_PREFIXES);
        # the ingest app only /healthz.
        ready = "/readyz" if component in ("api", "hub") else "/healthz"
        container |= {"startupProbe": common.http_probe("/healthz", period=5, failures=24),
                      "livenessProbe": common.http_probe("/healthz", period=20, failures=3),
                      "readinessProbe": common.http_probe(ready, period=5, failures=2)}
    else:
        container |= {"startupProbe": _metrics_probe(period=5, failures=24),
                      "livenessProbe": _metrics_probe(period=20, failures=3),
                      "readinessProbe": _metrics_probe(period=10, failures=2)}
    if component in STATEFUL:
        container["volumeMounts"].append(STATE_MOUNT)
        volumes.append(STATE_VOLUME)
    if component == "hub":
        container["volumeMounts"].append(SIGNUP_MOUNT)
        volumes.append(SIGNUP_VOLUME)
    spec = {
        "selector": {"matchLabels": common.selector(component)},
        "strategy": common.ZERO_DOWNTIME,
        "minReadySeconds": 5,
        "template": {
            "metadata": {"labels": common.labels(component, cfg.runtime_image)},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNTS[component],
                # The API token only where the code reads the Kubernetes API.
                "automountServiceAccountToken": component in KUBERNETES_API_READERS,
                "securityContext": common.POD_SECURITY,
                "affinity": common.spread(component),
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if component not in AUTOSCALED:
        spec["replicas"] = cfg.replicas[component]
    return Deployment(common.name(component),
                      metadata=common.metadata(cfg, common.name(component), component, image=cfg.runtime_image),
                      spec=spec, opts=common.options(depends_on=depends_on))


def _autoscaler(cfg: PlatformConfig, component: str, deployment: Deployment) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(
        common.name(component),
        metadata=common.metadata(cfg, common.name(component), component),
        spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": common.name(component)},
            "minReplicas": cfg.replicas[component],
            "maxReplicas": cfg.max_replicas[component],
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET}}}],
            # Scale down slowly: a short lull should not cost warm pods.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        },
        opts=common.options(depends_on=[deployment]),
    )


def api_paths() -> list[tuple[str, str]]:
    """(path prefix, component) on the platform's host: the API's paths as ``urbanstack serve``
    dispatches them (``serve.API_PREFIXES``), ``/ingest`` to the push endpoints."""
    return [(prefix.rstrip("/"), "connectors" if prefix.rstrip("/") == "/ingest" else "api")
            for prefix in serve.API_PREFIXES]


def _path(path: str, service: str, port: dict) -> dict:
    return {"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": port}}}


def _ingresses(cfg: PlatformConfig, backends: Backends, depends_on: list[pulumi.Resource]) -> dict[str, Ingress]:
    """Two Ingresses for the platform's host (controllers merge them; the longest prefix
    wins): ``urbanstack`` routes the API's paths and the backends' public hosts,
    ``urbanstack-hub`` everything else to the hub, with its own affinity annotation."""
    ing = cfg.ingress
    annotations = {"nginx.ingress.kubernetes.io/ssl-redirect": "true"}
    if ing.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = ing.cluster_issuer
    http = {"name": "http"}
    rules = [{"host": ing.api_host, "http": {"paths": [_path(path, common.name(component), http)
                                                        for path, component in api_paths()]}}]
    rules += [{"host": backend.public_host, "http": {"paths": [
        _path("/", backend.public_service, {"number": backend.ports[0]})]}}
        for backend in backends.by_name.values() if backend.public_host]
    hub_rules = [{"host": ing.api_host, "http": {"paths": [_path("/", common.name("hub"), http)]}}]

    def ingress(name: str, component: str, rules: list[dict], extra: dict[str, str]) -> Ingress:
        return Ingress(
            name,
            metadata=common.metadata(cfg, name, component, annotations=annotations | extra),
            spec={
                "ingressClassName": ing.class_name,
                "tls": [{"hosts": [r["host"] for r in rules], "secretName": ing.tls_secret_name}],
                "rules": rules,
            },
            opts=common.options(depends_on=depends_on),
        )

    declared = {"ingress": ingress("urbanstack", "ingress", rules, {}),
                "hubIngress": ingress(common.name("hub"), "hub", hub_rules, HUB_AFFINITY)}
    mqtt = backends.by_name.get("mqtt")
    if mqtt is not None and mqtt.public_ports:
        # MQTT over WebSockets at /mqtt (nginx passes the Upgrade through), TLS like every other
        # path; an Ingress of its own so that its long-lived connections get their own timeouts.
        from urbanstack.stacks.platform import messaging
        from urbanstack.stacks.platform.config import MQTT_WEBSOCKETS_PATH

        mqtt_rules = [{"host": ing.api_host, "http": {"paths": [
            _path(MQTT_WEBSOCKETS_PATH, messaging.NAME, {"name": "websockets"})]}}]
        declared["mqttIngress"] = ingress(messaging.NAME, "mqtt", mqtt_rules, MQTT_TIMEOUTS)
    return declared


def _account(cfg: PlatformConfig, account: str, component: str, after: list[pulumi.Resource]) -> ServiceAccount:
    # Pods opt in to the token (KUBERNETES_API_READERS); an account mounts none by default.
    return ServiceAccount(account, metadata=common.metadata(cfg, account, component),
                          automount_service_account_token=False, opts=common.options(depends_on=after))


def _bound_role(cfg: PlatformConfig, role_name: str, component: str, rules: list[dict], account_name: str,
                account: ServiceAccount) -> tuple[ClusterRole, ClusterRoleBinding]:
    """A ClusterRole with ``rules`` (``operator.rbac`` verbatim), bound to one ServiceAccount of the namespace."""
    role = ClusterRole(role_name, metadata=common.metadata(cfg, role_name, component, namespace=None), rules=rules)
    binding = ClusterRoleBinding(
        role_name,
        metadata=common.metadata(cfg, role_name, component, namespace=None),
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        subjects=[{"kind": "ServiceAccount", "name": account_name, "namespace": NAMESPACE}],
        opts=common.options(depends_on=[role, account]),
    )
    return role, binding


def _identity(cfg: PlatformConfig, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    account = _account(cfg, SERVICE_ACCOUNT, "runtime", after)
    role, binding = _bound_role(cfg, rbac.RUNTIME_CLUSTER_ROLE_NAME, "runtime", rbac.runtime_cluster_role()["rules"],
                                SERVICE_ACCOUNT, account)
    declared = {"serviceAccount": account, "clusterRole": role, "clusterRoleBinding": binding}
    return declared | _gov_hub_identity(cfg, after) | _signup_identity(cfg, after)


def _gov_hub_identity(cfg: PlatformConfig, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    """The Gov Hub's own identity: it server-side applies spec.tools and spec.shares of
    Municipalities and reads CityTools (rbac.GOV_HUB_RULES); for the upload page it reads
    the tenants' ``urbanstack-ingest`` Secret by name (rbac.GOV_HUB_UPLOAD_RULES), nothing
    else. The hub Deployment runs as this account, with its token mounted."""
    account = _account(cfg, rbac.GOV_HUB_SERVICE_ACCOUNT, "gov-hub", after)
    role, binding = _bound_role(cfg, rbac.GOV_HUB_CLUSTER_ROLE_NAME, "gov-hub", rbac.gov_hub_cluster_role()["rules"],
                                rbac.GOV_HUB_SERVICE_ACCOUNT, account)
    upload_role, upload_binding = _bound_role(cfg, rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME, "gov-hub",
                                              rbac.gov_hub_upload_cluster_role()["rules"],
                                              rbac.GOV_HUB_SERVICE_ACCOUNT, account)
    return {"govHubServiceAccount": account, "govHubClusterRole": role, "govHubClusterRoleBinding": binding,
            "govHubUploadClusterRole": upload_role, "govHubUploadClusterRoleBinding": upload_binding}


def signup_kubeconfig() -> str:
    """The signup's kubeconfig in the hub's pod: the API server by its in-cluster name, the CA and
    the token of the ``urbanstack-signup`` account from the files of SIGNUP_VOLUME."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "signup",
        "clusters": [{"name": "in-cluster", "cluster": {"server": "https://kubernetes.default.svc",
                                                        "certificate-authority": f"{SIGNUP_DIR}/ca.crt"}}],
        "users": [{"name": rbac.SIGNUP_SERVICE_ACCOUNT, "user": {"tokenFile": f"{SIGNUP_DIR}/token"}}],
        "contexts": [{"name": "signup", "context": {"cluster": "in-cluster", "user": rbac.SIGNUP_SERVICE_ACCOUNT}}],
    }, sort_keys=False)


def _signup_identity(cfg: PlatformConfig, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    """The signup's own identity (``/signup`` and ``/ops`` run in the hub's process): approving a
    request creates a Municipality, which the Gov Hub's account may not. Its account holds
    rbac.SIGNUP_RULES (create, never delete; no Secrets); the hub's pod reaches the API as it
    through a kubeconfig (ConfigMap) and the account's token (a service-account-token Secret),
    both in SIGNUP_VOLUME. No pod runs as this account."""
    account = _account(cfg, rbac.SIGNUP_SERVICE_ACCOUNT, "signup", after)
    role, binding = _bound_role(cfg, rbac.SIGNUP_CLUSTER_ROLE_NAME, "signup", rbac.signup_cluster_role()["rules"],
                                rbac.SIGNUP_SERVICE_ACCOUNT, account)
    token = Secret(SIGNUP_TOKEN_SECRET, type="kubernetes.io/service-account-token",
                   metadata=common.metadata(cfg, SIGNUP_TOKEN_SECRET, "signup", annotations={
                       "kubernetes.io/service-account.name": rbac.SIGNUP_SERVICE_ACCOUNT}),
                   opts=common.options(depends_on=[account]))
    kubeconfig = ConfigMap(SIGNUP_KUBECONFIG_MAP, metadata=common.metadata(cfg, SIGNUP_KUBECONFIG_MAP, "signup"),
                           data={"kubeconfig": signup_kubeconfig()}, opts=common.options(depends_on=after))
    return {"signupServiceAccount": account, "signupClusterRole": role, "signupClusterRoleBinding": binding,
            "signupToken": token, "signupKubeconfig": kubeconfig}


def install(cfg: PlatformConfig, backends: Backends, *, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    declared: dict[str, pulumi.Resource] = _identity(cfg, after)
    services = []
    for component in RUNTIME_SERVICES:
        bindings = ([declared["govHubClusterRoleBinding"], declared["govHubUploadClusterRoleBinding"],
                     declared["signupClusterRoleBinding"], declared["signupToken"], declared["signupKubeconfig"]]
                    if component == "hub" else [declared["clusterRoleBinding"]])
        deployment = _deployment(cfg, backends, component, [*after, *bindings, *backends.resources])
        budget = PodDisruptionBudget(
            common.name(component),
            metadata=common.metadata(cfg, common.name(component), component),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": common.selector(component)}},
            opts=common.options(depends_on=after),
        )
        declared |= {f"{component}Deployment": deployment, f"{component}PodDisruptionBudget": budget}
        if component in AUTOSCALED:
            declared[f"{component}Autoscaler"] = _autoscaler(cfg, component, deployment)
        if component not in HTTP_SERVICES:
            continue
        service = Service(
            common.name(component),
            metadata=common.metadata(cfg, common.name(component), component),
            spec={"type": "ClusterIP", "selector": common.selector(component),
                  "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
            opts=common.options(depends_on=after),
        )
        declared[f"{component}Service"] = service
        services.append(service)
    declared |= _ingresses(cfg, backends, [*after, *services])
    return declared
