"""The Kubernetes permissions the operator needs, and nothing more.

This list is the single source of the operator's ClusterRole: the local
platform binds it to the operator's identity (so the integration tests fail if
the code needs a right that is missing here) and the Pulumi stack installs the
same rules. Add a rule here in the same change that makes the code need it.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")
MANAGE = ("get", "list", "watch", "create", "patch", "update", "delete")


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()

    def to_manifest(self) -> dict:
        manifest = {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}
        if self.resource_names:
            manifest["resourceNames"] = list(self.resource_names)
        return manifest


RULES: tuple[Rule, ...] = (
    Rule(("urbanstack.io",), ("municipalities", "citytools"), ("get", "list", "watch", "patch", "update"),
         "watch the custom resources; Kopf patches finalizers and its progress annotations"),
    Rule(("urbanstack.io",), ("municipalities/status", "citytools/status"), ("get", "patch", "update"),
         "write conditions, phase, endpoints and usage through the status subresource"),
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), READ,
         "Kopf discovers the resources it serves"),
    Rule(("kopf.dev",), ("clusterkopfpeerings",), ("get", "list", "watch", "patch"),
         "peering between operator replicas, so exactly one reconciles"),
    Rule(("",), ("events",), ("create", "patch"), "Kubernetes events on the custom resources"),
    Rule(("events.k8s.io",), ("events",), ("create", "patch"), "Kubernetes events (new API group)"),
    Rule(("",), ("namespaces",), MANAGE, "one namespace per municipality"),
    Rule(("",), ("resourcequotas", "limitranges", "secrets", "services", "configmaps"), MANAGE,
         "quota, defaults, tenant credentials, tool services and settings in tenant namespaces"),
    Rule(("networking.k8s.io",), ("networkpolicies",), MANAGE, "default-deny network policy per tenant"),
    Rule(("apps",), ("deployments",), MANAGE, "CityTool deployments in tenant namespaces"),
)

CLUSTER_ROLE_NAME = "urbanstack-operator"


def cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in RULES],
    }


# Name of the Secret in every tenant namespace that the ingest service may read
# (webhook key, the tenant's Kafka credentials, pull-source tokens). One fixed
# name in every namespace is what lets a ClusterRole grant ``get`` on exactly
# that Secret through resourceNames, and on no other Secret of the tenant.
INGEST_SECRET = "urbanstack-ingest"

# The data plane (API catalogue, sink, ingest) reads the custom resources, and the
# ingest service reads one Secret per tenant namespace by name (never list/watch).
RUNTIME_RULES: tuple[Rule, ...] = (
    Rule(("urbanstack.io",), ("municipalities", "citytools"), READ,
         "the API's catalogue of datasets, shares and licences"),
    Rule(("",), ("secrets",), ("get",),
         "the ingest service checks webhook keys and produces with the tenant's own Kafka user",
         resource_names=(INGEST_SECRET,)),
)

RUNTIME_CLUSTER_ROLE_NAME = "urbanstack-runtime"


def runtime_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": RUNTIME_CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in RUNTIME_RULES],
    }
