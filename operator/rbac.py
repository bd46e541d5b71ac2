"""The Kubernetes permissions the operator needs, and nothing more.

These lists are the single source of the operator's rights: the local platform
binds them to the operator's identity (so the integration tests fail if the code
needs a right that is missing here) and the Pulumi stack installs the same rules.
Add a rule here in the same change that makes the code need it.

Three roles, because RBAC cannot scope a ClusterRole by label or name prefix:

- ``urbanstack-operator-cluster`` (bound cluster-wide): the custom resources, namespaces,
  and binding one role, ``urbanstack-operator-tenant``, in a namespace;
- ``urbanstack-operator-watch`` (bound cluster-wide): ``list``/``watch`` (never ``get``) of the
  non-Secret kinds the plan creates, for the drift sweep's watch cache;
- ``urbanstack-operator-tenant`` (bound nowhere cluster-wide): what the operator
  manages inside a tenant namespace — Secrets among them. The plan puts a
  RoleBinding to it for the operator's identity into every namespace it creates
  (:func:`tenant_role_binding`), right after the namespace, so the operator reads
  Secrets only in the namespaces it owns, never in kube-system or anywhere else.

docs/operator.md says what remains broad and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

READ = ("get", "list", "watch")
MANAGE = ("get", "list", "watch", "create", "patch", "update", "delete")
TENANT_CLUSTER_ROLE_NAME = "urbanstack-operator-tenant"


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
    Rule(("",), ("namespaces",), MANAGE,
         "one namespace per municipality; namespace names are not known in advance, and create, list and "
         "watch cannot be limited by name, so this is cluster-wide"),
    Rule(("rbac.authorization.k8s.io",), ("rolebindings",), ("get", "create", "patch"),
         "give itself the tenant role in each namespace it creates (server-side apply: get, create, patch)"),
    Rule(("rbac.authorization.k8s.io",), ("clusterroles",), ("bind",),
         "bind exactly the tenant role, which it does not hold cluster-wide", resource_names=(TENANT_CLUSTER_ROLE_NAME,)),
)

# Not "urbanstack-operator", the name of the earlier role that held Secrets cluster-wide:
# a local platform set up before keeps that role and binding until it is purged.
CLUSTER_ROLE_NAME = "urbanstack-operator-cluster"

# The drift sweep's watch cache (operator/kubecache.py): list and watch, cluster-wide, of what the
# plan creates in tenant namespaces, Secrets excepted. A role of its own, bound cluster-wide to the
# operator, so an installation that runs without the cache (URBANSTACK_KUBE_WATCH=0) binds nothing.
WATCH_RULES: tuple[Rule, ...] = tuple(
    Rule((group,), resources, ("list", "watch"),
         "the drift sweep's watch cache: listed once, then watched, selected by the operator's managed-by "
         "label (RBAC cannot limit a listing by label: other namespaces' ConfigMaps could be listed)")
    for group, resources in (("", ("resourcequotas", "limitranges", "configmaps", "services")),
                             ("networking.k8s.io", ("networkpolicies",)), ("apps", ("deployments",)),
                             ("rbac.authorization.k8s.io", ("rolebindings",))))

WATCH_CLUSTER_ROLE_NAME = "urbanstack-operator-watch"


def watch_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": WATCH_CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in WATCH_RULES],
    }


# Inside a tenant namespace only, through the RoleBinding the plan creates there.
TENANT_RULES: tuple[Rule, ...] = (
    Rule(("",), ("resourcequotas", "limitranges", "secrets", "services", "configmaps"), MANAGE,
         "quota, defaults, tenant credentials, tool services and settings in tenant namespaces"),
    Rule(("networking.k8s.io",), ("networkpolicies",), MANAGE, "default-deny network policy per tenant"),
    Rule(("apps",), ("deployments",), MANAGE, "CityTool deployments in tenant namespaces"),
)

# Who the operator is: in a cluster the stack's service account, on the local platform
# the user of its own kubeconfig (urbanstack/devplatform/bootstrap.py).
OPERATOR_SERVICE_ACCOUNT = ("urbanstack-system", "urbanstack-operator")
OPERATOR_USER = "urbanstack-operator"
TENANT_ROLE_BINDING = "urbanstack-operator"


def cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in RULES],
    }


def tenant_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": TENANT_CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in TENANT_RULES],
    }


def tenant_role_binding(namespace: str, labels: dict[str, str]) -> dict:
    """The operator's rights in one tenant namespace: the tenant role, for its own identity only."""
    account_namespace, account = OPERATOR_SERVICE_ACCOUNT
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": TENANT_ROLE_BINDING, "namespace": namespace, "labels": dict(labels)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TENANT_CLUSTER_ROLE_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace},
                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
    }


# naming.namespace: every namespace the operator creates is called muni-<slug>.
OWNED_NAMESPACE_PREFIX = "muni-"
ADMISSION_POLICY_NAME = "urbanstack-operator-namespaces"


def operator_usernames() -> tuple[str, ...]:
    account_namespace, account = OPERATOR_SERVICE_ACCOUNT
    return (f"system:serviceaccount:{account_namespace}:{account}", OPERATOR_USER)


def admission_policy() -> list[dict]:
    """What RBAC cannot say: the operator creates, changes and deletes only namespaces named
    ``muni-*``, and binds its tenant role only inside them. A ValidatingAdmissionPolicy (and its
    binding) checked by the API server on every such write of the operator's identities; so
    it cannot bind itself into kube-system, nor touch kube-system as a namespace."""
    users = ", ".join(f"'{name}'" for name in operator_usernames())
    return [{
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": ADMISSION_POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                 "resources": ["namespaces"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"],
                 "operations": ["CREATE", "UPDATE"], "resources": ["rolebindings"]}]},
            "matchConditions": [{"name": "operator", "expression": f"request.userInfo.username in [{users}]"}],
            "validations": [{
                "expression": f"request.resource.resource == 'namespaces' "
                              f"? (object != null ? object : oldObject).metadata.name.startsWith('{OWNED_NAMESPACE_PREFIX}') "
                              f": request.namespace.startsWith('{OWNED_NAMESPACE_PREFIX}')",
                "message": f"the urbanstack operator manages only namespaces named {OWNED_NAMESPACE_PREFIX}* "
                           f"and binds its role only inside them (operator/rbac.py)",
            }],
        },
    }, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": ADMISSION_POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "spec": {"policyName": ADMISSION_POLICY_NAME, "validationActions": ["Deny"]},
    }]


def await_tenant_access(api_client, namespace: str, timeout: float = 10.0) -> None:
    """Return once the API server applies a just-created tenant RoleBinding to this identity
    (its authorizer learns of new bindings through a watch, a moment after the write)."""
    from kubernetes import client

    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb="create", resource="secrets")))
    api = client.AuthorizationV1Api(api_client)
    deadline = time.monotonic() + timeout
    while not api.create_self_subject_access_review(review).status.allowed:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the RoleBinding {TENANT_ROLE_BINDING} in {namespace} gave the operator no access to "
                               f"Secrets after {timeout:.0f} s; is the ClusterRole {TENANT_CLUSTER_ROLE_NAME} "
                               f"installed (operator/rbac.py)?")
        time.sleep(0.05)


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


# The Gov Hub changes exactly two fields of a Municipality (spec.tools and spec.shares) by
# server-side apply as its own field manager, and reads the CityTool catalogue. It never
# creates or deletes a Municipality, never writes status and reads no Secret.
GOV_HUB_RULES: tuple[Rule, ...] = (
    Rule(("urbanstack.io",), ("municipalities",), ("get", "list", "watch", "patch"),
         "a gov-admin switches City Tools and shares on and off: server-side apply of spec.tools and spec.shares"),
    Rule(("urbanstack.io",), ("citytools",), READ, "the catalogue of City Tools the hub offers"),
)

GOV_HUB_CLUSTER_ROLE_NAME = "urbanstack-gov-hub"
# On the local platform the user of state/kube/govhub.kubeconfig; in a cluster the stack's service account.
GOV_HUB_USER = "urbanstack-gov-hub"
GOV_HUB_SERVICE_ACCOUNT = "urbanstack-gov-hub"
# The field manager of the hub's server-side applies (managedFields shows who changed what).
GOV_HUB_FIELD_MANAGER = "urbanstack-gov-hub"


def gov_hub_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": GOV_HUB_CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in GOV_HUB_RULES],
    }


# The upload page (``urbanstack hub`` with URBANSTACK_INGEST on) imports through the ingest
# service's own code in the hub's process: it produces as the municipality's Kafka user, read
# from the same one Secret the ingest service reads, by name, never list/watch. A role of its
# own, so an installation without the upload page binds nothing and the hub reads no Secret.
GOV_HUB_UPLOAD_RULES: tuple[Rule, ...] = (
    Rule(("",), ("secrets",), ("get",),
         "the Gov Hub's upload page produces with the municipality's own Kafka user, as the ingest service does",
         resource_names=(INGEST_SECRET,)),
)

GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME = "urbanstack-gov-hub-uploads"


def gov_hub_upload_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME,
                     "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in GOV_HUB_UPLOAD_RULES],
    }


# Self-service signup: approving a request creates the Municipality (create-only, so a second
# approval for the same slug fails instead of overwriting) and follows its status. It may read
# the catalogue of City Tools the form offers. It never deletes, never writes status, reads no Secret.
SIGNUP_RULES: tuple[Rule, ...] = (
    Rule(("urbanstack.io",), ("municipalities",), ("create", "get", "list", "watch", "patch"),
         "platform ops approve a request: the Municipality is created as the signup's field manager, its "
         "conditions are followed"),
    Rule(("urbanstack.io",), ("citytools",), READ, "the City Tools an applicant may choose"),
)

SIGNUP_CLUSTER_ROLE_NAME = "urbanstack-signup"
# On the local platform the user of state/kube/signup.kubeconfig; in a cluster the stack's service account.
SIGNUP_USER = "urbanstack-signup"
SIGNUP_SERVICE_ACCOUNT = "urbanstack-signup"
SIGNUP_FIELD_MANAGER = "urbanstack-signup"


def signup_cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": SIGNUP_CLUSTER_ROLE_NAME, "labels": {"app.kubernetes.io/part-of": "urbanstack"}},
        "rules": [rule.to_manifest() for rule in SIGNUP_RULES],
    }
