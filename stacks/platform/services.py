"""The data plane: api, sink, connectors and hub from the one runtime image.

Every service answers ``/healthz``, ``/readyz`` and ``/metrics`` on
``URBANSTACK_HTTP_PORT``. Rolling updates start a new pod before stopping an
old one (``maxUnavailable: 0``), and where an HPA owns the replica count the
Deployment leaves ``replicas`` unset, so an upgrade never scales a service down.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.autoscaling.v2 import HorizontalPodAutoscaler
from pulumi_kubernetes.core.v1 import Service, ServiceAccount
from pulumi_kubernetes.networking.v1 import Ingress
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget

from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.backends import Backends
from urbanstack.stacks.platform.config import AUTOSCALED, NAMESPACE, RUNTIME_SERVICES, PlatformConfig

SERVICE_ACCOUNT = common.name("runtime")
CPU_TARGET = 70


def _env(cfg: PlatformConfig, backends: Backends, component: str) -> list[dict]:
    env = [common.env_value("URBANSTACK_HTTP_HOST", "0.0.0.0"),
           common.env_value("URBANSTACK_HTTP_PORT", str(common.HTTP_PORT))]
    if component in ("api", "hub"):
        env += [common.env_value("URBANSTACK_PUBLIC_API_URL", f"https://{cfg.ingress.api_host}"),
                common.env_value("URBANSTACK_PUBLIC_HUB_URL", f"https://{cfg.ingress.hub_host}")]
    if component == "hub":
        env.append(common.env_value("URBANSTACK_API_URL", f"http://{common.name('api')}.{NAMESPACE}.svc"))
    return env + backends.env_for(component)


def _deployment(cfg: PlatformConfig, backends: Backends, component: str,
                depends_on: list[pulumi.Resource]) -> Deployment:
    container = {
        "name": component,
        "image": cfg.runtime_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["urbanstack"],
        "args": [component],
        "ports": [{"name": "http", "containerPort": common.HTTP_PORT, "protocol": "TCP"}],
        "env": _env(cfg, backends, component),
        "resources": cfg.resources[component],
        "startupProbe": common.http_probe("/healthz", period=5, failures=24),
        "livenessProbe": common.http_probe("/healthz", period=20, failures=3),
        "readinessProbe": common.http_probe("/readyz", period=5, failures=2),
        "securityContext": common.CONTAINER_SECURITY,
        "volumeMounts": [common.TMP_MOUNT],
    }
    spec = {
        "selector": {"matchLabels": common.selector(component)},
        "strategy": common.ZERO_DOWNTIME,
        "minReadySeconds": 5,
        "template": {
            "metadata": {"labels": common.labels(component, cfg.runtime_image)},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                # No runtime service talks to the Kubernetes API.
                "automountServiceAccountToken": False,
                "securityContext": common.POD_SECURITY,
                "affinity": common.spread(component),
                "containers": [container],
                "volumes": [common.TMP_VOLUME],
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

    rules = [rule(ing.api_host, common.name("api"), {"name": "http"}),
             rule(ing.hub_host, common.name("hub"), {"name": "http"})]
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


def install(cfg: PlatformConfig, backends: Backends, *, after: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    account = ServiceAccount(SERVICE_ACCOUNT, metadata=common.metadata(cfg, SERVICE_ACCOUNT, "runtime"),
                             automount_service_account_token=False, opts=common.options(depends_on=after))
    declared: dict[str, pulumi.Resource] = {"serviceAccount": account}
    services = []
    for component in RUNTIME_SERVICES:
        deployment = _deployment(cfg, backends, component, [*after, account, *backends.resources])
        service = Service(
            common.name(component),
            metadata=common.metadata(cfg, common.name(component), component),
            spec={"type": "ClusterIP", "selector": common.selector(component),
                  "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
            opts=common.options(depends_on=after),
        )
        budget = PodDisruptionBudget(
            common.name(component),
            metadata=common.metadata(cfg, common.name(component), component),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": common.selector(component)}},
            opts=common.options(depends_on=after),
        )
        declared |= {f"{component}Deployment": deployment, f"{component}Service": service,
                     f"{component}PodDisruptionBudget": budget}
        if component in AUTOSCALED:
            declared[f"{component}Autoscaler"] = _autoscaler(cfg, component, deployment)
        services.append(service)
    declared["ingress"] = _ingress(cfg, backends, [*after, *services])
    return declared
