"""The whole installation, in dependency order; returns what the stack exports."""

from __future__ import annotations

from pulumi_kubernetes.core.v1 import Namespace

from urbanstack.stacks.platform import backends, common, controlplane, crds, network, services
from urbanstack.stacks.platform.config import NAMESPACE, RUNTIME_SERVICES, PlatformConfig


def deploy(cfg: PlatformConfig) -> dict[str, object]:
    meta = common.metadata(cfg, NAMESPACE, "platform", namespace=None)
    # The platform's own pods meet the restricted Pod Security Standard; the
    # in-cluster backends' pods come from other operators, which only promise baseline.
    enforce = "restricted" if cfg.backends == "external" else "baseline"
    meta["labels"] |= {"pod-security.kubernetes.io/enforce": enforce,
                       "pod-security.kubernetes.io/warn": "restricted",
                       "pod-security.kubernetes.io/audit": "restricted"}
    namespace = Namespace(NAMESPACE, metadata=meta)
    after = [namespace]
    definitions = crds.install(cfg)
    wiring = backends.install(cfg, after=after)
    policies = network.install(cfg, wiring, after=after)
    operator = controlplane.install(cfg, wiring, after=after, crds=list(definitions.values()))
    runtime = services.install(cfg, wiring, after=after)
    return {
        "namespace": NAMESPACE,
        "crds": sorted(definitions),
        "operatorDeployment": operator["deployment"].metadata["name"],
        "runtimeDeployments": [runtime[f"{name}Deployment"].metadata["name"] for name in RUNTIME_SERVICES],
        "apiUrl": f"https://{cfg.ingress.api_host}",
        "govHubUrl": f"https://{cfg.ingress.api_host}/gov/",
        "backends": cfg.backends,
        "networkPolicies": sorted(policies),
    }
