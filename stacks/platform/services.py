"""The data plane: api, sink and connectors from the one runtime image.

Each Deployment runs one ``urbanstack`` command (``COMMANDS``) and sets exactly
the environment variables that command reads (``FIELDS`` in ``urbanstack/settings.py``,
``SinkConfig.ENV`` in ``runtime/sink.py``); credentials only as ``secretKeyRef``. The tests check every variable against the code.

The HTTP services answer ``/healthz`` on their ``http`` port; the sink serves no
HTTP, only Prometheus metrics on loopback, which its probes ask from inside the pod.

All run as the runtime ServiceAccount, bound to ``rbac.runtime_cluster_role()``
verbatim (read the custom resources; ``get`` only the ``urbanstack-ingest``
Secrets). Only the pods that read the Kubernetes API get its token mounted.

Rolling updates start a new pod before stopping an old one
(``maxUnavailable: 0``), and where an HPA owns the replica count the Deployment
leaves ``replicas`` unset, so an upgrade never scales a service down.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.autoscaling.v2 import HorizontalPodAutoscaler
from pulumi_kubernetes.core.v1 import Service, ServiceAccount
from pulumi_kubernetes.networking.v1 import Ingress
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget
from pulumi_kubernetes.rbac.v1 import ClusterRole, ClusterRoleBinding

from urbanstack.operator import rbac
from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.backends import Backends
from urbanstack.stacks.platform.config import (AUTOSCALED, KUBERNETES_API_READERS, NAMESPACE, RUNTIME_SERVICES,
                                               PlatformConfig)

SERVICE_ACCOUNT = common.name("runtime")
CPU_TARGET = 70
# The `urbanstack` subcommand each Deployment runs. The connectors are the
# ingest service: push endpoints and the pull scheduler that runs the connectors.
COMMANDS = {"api": "api", "sink": "sink", "connectors": "ingest"}
# Components that serve HTTP on the ``http`` port (the sink does not).
HTTP_SERVICES = ("api", "connectors")
# Where ingest keeps its pull cursors (<state dir>/ingest/cursors.json): the only
# writable place besides /tmp. An emptyDir: it survives container restarts, not
# a new pod (docs/deploy.md).
STATE_DIR = "/var/lib/urbanstack"
STATE_VOLUME = {"name": "state", "emptyDir": {"sizeLimit": "64Mi"}}
STATE_MOUNT = {"name": "state", "mountPath": STATE_DIR}
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
    if component == "sink":
        env.append(common.env_value("URBANSTACK_SINK_METRICS_PORT", str(SINK_METRICS_PORT)))
    if component == "api" and cfg.api_anonymous_queries_per_hour is not None:
        env.append(common.env_value("URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR",
                                    str(cfg.api_anonymous_queries_per_hour)))
    if component in ("api", "connectors"):
        env.append(common.env_value("URBANSTACK_TRUSTED_PROXIES", cfg.trusted_proxies))
    return env + backends.env_for(component)


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
    if component in HTTP_SERVICES:
        container["ports"] = [{"name": "http", "containerPort": common.HTTP_PORT, "protocol": "TCP"}]
        # runtime/api/app.py serves /readyz; the ingest app only /healthz.
        ready = "/readyz" if component == "api" else "/healthz"
        container |= {"startupProbe": common.http_probe("/healthz", period=5, failures=24),
                      "livenessProbe": common.http_probe("/healthz", period=20, failures=3),
                      "readinessProbe": common.http_probe(ready, period=5, failures=2)}
    else:
        container |= {"startupProbe": _metrics_probe(period=5, failures=24),
                      "livenessProbe": _metrics_probe(period=20, failures=3),
                      "readinessProbe": _metrics_probe(period=10, failures=2)}
    if component == "connectors":
        container["volumeMounts"].append(STATE_MOUNT)
        volumes.append(STATE_VOLUME)
    spec = {
        "selector": {"matchLabels": common.selector(component)},
        "strategy": common.ZERO_DOWNTIME,
        "minReadySeconds": 5,
        "template": {
            "metadata": {"labels": common.labels(component, cfg.runtime_image)},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
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


def _ingress(cfg: PlatformConfig, backends: Backends, depends_on: list[pulumi.Resource]) -> Ingress:
    ing = cfg.ingress
    annotations = {"nginx.ingress.kubernetes.io/ssl-redirect": "true"}
    if ing.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = ing.cluster_issuer

    def rule(host: str, service: str, port: dict) -> dict:
        return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": port}}}]}}

    rules = [rule(ing.api_host, common.name("api"), {"name": "http"})]
    rules += [rule(backend.public_host, backend.public_service, {"number": backend.ports[0]})
              for backend in backends.by_name.values() if backend.public_host]
    return Ingress(
        "urbanstack",
        metadata=common.metadata(cfg, "urbanstack", "ingress", annotations=annotations),
        spec={
            "ingressClassName": ing.class_name,
            "tls": [{"hosts": [r["host"] for r in rules], "secretName": ing.tls_secret_name}],
            "rules": rules,
        },
        opts=common.options(depends_on=depends_on),
    )


def _identity(cfg: PlatformConfig, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    # Pods opt in to the token (KUBERNETES_API_READERS); the account mounts none by default.
    account = ServiceAccount(SERVICE_ACCOUNT, metadata=common.metadata(cfg, SERVICE_ACCOUNT, "runtime"),
                             automount_service_account_token=False, opts=common.options(depends_on=after))
    manifest = rbac.runtime_cluster_role()
    role = ClusterRole(
        rbac.RUNTIME_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.RUNTIME_CLUSTER_ROLE_NAME, "runtime", namespace=None),
        rules=manifest["rules"],
    )
    binding = ClusterRoleBinding(
        rbac.RUNTIME_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.RUNTIME_CLUSTER_ROLE_NAME, "runtime", namespace=None),
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                  "name": rbac.RUNTIME_CLUSTER_ROLE_NAME},
        subjects=[{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        opts=common.options(depends_on=[role, account]),
    )
    declared = {"serviceAccount": account, "clusterRole": role, "clusterRoleBinding": binding}
    return declared | _gov_hub_identity(cfg, after)


def _gov_hub_identity(cfg: PlatformConfig, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    """The Gov Hub's own identity: it server-side applies spec.tools and spec.shares of
    Municipalities and reads CityTools (rbac.GOV_HUB_RULES), nothing else. The Deployment
    that serves the Gov Hub runs as this account, with its token mounted."""
    account = ServiceAccount(rbac.GOV_HUB_SERVICE_ACCOUNT,
                             metadata=common.metadata(cfg, rbac.GOV_HUB_SERVICE_ACCOUNT, "gov-hub"),
                             automount_service_account_token=False, opts=common.options(depends_on=after))
    role = ClusterRole(
        rbac.GOV_HUB_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.GOV_HUB_CLUSTER_ROLE_NAME, "gov-hub", namespace=None),
        rules=rbac.gov_hub_cluster_role()["rules"],
    )
    binding = ClusterRoleBinding(
        rbac.GOV_HUB_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.GOV_HUB_CLUSTER_ROLE_NAME, "gov-hub", namespace=None),
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                  "name": rbac.GOV_HUB_CLUSTER_ROLE_NAME},
        subjects=[{"kind": "ServiceAccount", "name": rbac.GOV_HUB_SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        opts=common.options(depends_on=[role, account]),
    )
    return {"govHubServiceAccount": account, "govHubClusterRole": role, "govHubClusterRoleBinding": binding}


def install(cfg: PlatformConfig, backends: Backends, *, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    declared: dict[str, pulumi.Resource] = _identity(cfg, after)
    services = []
    for component in RUNTIME_SERVICES:
        deployment = _deployment(cfg, backends, component,
                                 [*after, declared["clusterRoleBinding"], *backends.resources])
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
    declared["ingress"] = _ingress(cfg, backends, [*after, *services])
    return declared
