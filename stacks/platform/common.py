"""What every object of the platform shares: labels, metadata, pod hardening."""

from __future__ import annotations

import pulumi

from urbanstack.stacks.platform.config import NAMESPACE, PlatformConfig, image_version

PART_OF = "urbanstack"
HTTP_PORT = 8080
# The images create this user (docker/*.Dockerfile); a numeric id lets the
# kubelet verify runAsNonRoot without reading /etc/passwd.
RUN_AS = 10001


def name(component: str) -> str:
    return f"urbanstack-{component}"


def selector(component: str) -> dict[str, str]:
    """Immutable Deployment selectors: never the version, which changes on upgrade."""
    return {"app.kubernetes.io/name": name(component), "app.kubernetes.io/instance": PART_OF}


def labels(component: str, image: str | None = None) -> dict[str, str]:
    result = selector(component) | {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if image:
        result["app.kubernetes.io/version"] = image_version(image)
    return result


def metadata(cfg: PlatformConfig, object_name: str, component: str, *, namespace: str | None = NAMESPACE,
             image: str | None = None, annotations: dict[str, str] | None = None) -> dict:
    """``namespace=None`` for cluster-scoped objects."""
    annotations = dict(annotations or {})
    if cfg.skip_await:
        # A dev cluster without kubelet never runs a pod: Pulumi would wait forever.
        annotations["pulumi.com/skipAwait"] = "true"
    result: dict = {"name": object_name, "labels": labels(component, image)}
    if namespace:
        result["namespace"] = namespace
    if annotations:
        result["annotations"] = annotations
    return result


def options(*, depends_on: list[pulumi.Resource] | None = None, **kwargs) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(depends_on=depends_on or [], **kwargs)


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}

CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# The only writable place in a read-only container; Python and Kopf need a temp dir.
TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}

ZERO_DOWNTIME = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def http_probe(path: str, *, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def spread(component: str) -> dict:
    """Prefer replicas on different nodes, so one node's loss keeps the service up."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": selector(component)}},
    }]}}


def env_value(env_name: str, value: str) -> dict:
    return {"name": env_name, "value": value}


def env_secret(env_name: str, secret: str, key: str) -> dict:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
