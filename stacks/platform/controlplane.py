"""The operator: two Kopf replicas that elect one leader through a peering object.

Its ClusterRoles are ``urbanstack.operator.rbac`` verbatim — the same rules the
local platform binds in the integration tests, so a missing right fails there
and a superfluous one is never granted here. ``urbanstack-operator`` and
``urbanstack-operator-watch`` (list/watch for the drift sweep's cache) are bound
cluster-wide; ``urbanstack-operator-tenant`` is bound by the operator itself in
each tenant namespace it creates, to the service account declared here
(``rbac.OPERATOR_SERVICE_ACCOUNT``). ``rbac.admission_policy()`` limits both to
namespaces named ``muni-*``, which RBAC alone cannot.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.admissionregistration.v1 import ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.core.v1 import ServiceAccount
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget
from pulumi_kubernetes.rbac.v1 import ClusterRole, ClusterRoleBinding

from urbanstack.operator import rbac
from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.backends import Backends
from urbanstack.stacks.platform.config import NAMESPACE, PlatformConfig

COMPONENT = "operator"
REPLICAS = 2
SERVICE_ACCOUNT = common.name(COMPONENT)
# The name the operator's startup handler gives Kopf (operator/handlers.py).
PEERING = "urbanstack"


def install(cfg: PlatformConfig, backends: Backends, *, after: list[pulumi.Resource],
            crds: list[pulumi.Resource]) -> dict[str, pulumi.Resource]:
    account = ServiceAccount(
        SERVICE_ACCOUNT, metadata=common.metadata(cfg, SERVICE_ACCOUNT, COMPONENT), automount_service_account_token=True,
        opts=common.options(depends_on=after))
    manifest = rbac.cluster_role()
    role = ClusterRole(
        rbac.CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.CLUSTER_ROLE_NAME, COMPONENT, namespace=None),
        rules=manifest["rules"],
    )
    # Bound nowhere here: the operator binds it in each namespace it creates.
    tenant_role = ClusterRole(
        rbac.TENANT_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.TENANT_CLUSTER_ROLE_NAME, COMPONENT, namespace=None),
        rules=rbac.tenant_cluster_role()["rules"],
    )
    policy_manifest, policy_binding_manifest = rbac.admission_policy()
    policy = ValidatingAdmissionPolicy(
        rbac.ADMISSION_POLICY_NAME,
        metadata=common.metadata(cfg, rbac.ADMISSION_POLICY_NAME, COMPONENT, namespace=None),
        spec=policy_manifest["spec"])
    policy_binding = ValidatingAdmissionPolicyBinding(
        rbac.ADMISSION_POLICY_NAME,
        metadata=common.metadata(cfg, rbac.ADMISSION_POLICY_NAME, COMPONENT, namespace=None),
        spec=policy_binding_manifest["spec"], opts=common.options(depends_on=[policy]))
    binding = ClusterRoleBinding(
        rbac.CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.CLUSTER_ROLE_NAME, COMPONENT, namespace=None),
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac.CLUSTER_ROLE_NAME},
        subjects=[{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        opts=common.options(depends_on=[role, account]),
    )
    watch_role = ClusterRole(
        rbac.WATCH_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.WATCH_CLUSTER_ROLE_NAME, COMPONENT, namespace=None),
        rules=rbac.watch_cluster_role()["rules"],
    )
    watch_binding = ClusterRoleBinding(
        rbac.WATCH_CLUSTER_ROLE_NAME,
        metadata=common.metadata(cfg, rbac.WATCH_CLUSTER_ROLE_NAME, COMPONENT, namespace=None),
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac.WATCH_CLUSTER_ROLE_NAME},
        subjects=[{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        opts=common.options(depends_on=[watch_role, account]),
    )
    # The ClusterRole may patch peerings but not create them: the stack owns the object.
    peering = CustomResource(
        f"peering-{PEERING}", api_version="kopf.dev/v1", kind="ClusterKopfPeering",
        metadata=common.metadata(cfg, PEERING, COMPONENT, namespace=None),
        opts=common.options(depends_on=crds),
    )
    container = {
        "name": COMPONENT,
        "image": cfg.operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["urbanstack"],
        # The default liveness address is loopback, which the kubelet cannot reach.
        "args": ["operator", "run", f"--liveness=http://0.0.0.0:{common.HTTP_PORT}/healthz"],
        "ports": [{"name": "http", "containerPort": common.HTTP_PORT, "protocol": "TCP"}],
        # The relay for the realms' smtpServer (invitations); the password only from its Secret.
        "env": [*backends.env_for(COMPONENT), *(cfg.mail.env() if cfg.mail else [])],
        "resources": cfg.resources[COMPONENT],
        # Kopf has one health endpoint: it answers once the operator watches the API.
        "startupProbe": common.http_probe("/healthz", period=5, failures=24),
        "livenessProbe": common.http_probe("/healthz", period=20, failures=3),
        "readinessProbe": common.http_probe("/healthz", period=10, failures=3),
        "securityContext": common.CONTAINER_SECURITY,
        "volumeMounts": [common.TMP_MOUNT, *backends.mounts_for(COMPONENT)],
    }
    deployment = Deployment(
        common.name(COMPONENT),
        metadata=common.metadata(cfg, common.name(COMPONENT), COMPONENT, image=cfg.operator_image),
        spec={
            "replicas": REPLICAS,
            "selector": {"matchLabels": common.selector(COMPONENT)},
            "strategy": common.ZERO_DOWNTIME,
            "template": {
                "metadata": {"labels": common.labels(COMPONENT, cfg.operator_image)},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "securityContext": common.POD_SECURITY,
                    "affinity": common.spread(COMPONENT),
                    # Kopf's peering hands over leadership within its lifetime; give it time to go.
                    "terminationGracePeriodSeconds": 60,
                    "containers": [container],
                    "volumes": [common.TMP_VOLUME, *backends.volumes_for(COMPONENT)],
                },
            },
        },
        opts=common.options(depends_on=[*after, binding, watch_binding, tenant_role, policy_binding, peering,
                                        *backends.resources, *crds]),
    )
    budget = PodDisruptionBudget(
        common.name(COMPONENT),
        metadata=common.metadata(cfg, common.name(COMPONENT), COMPONENT),
        spec={"minAvailable": 1, "selector": {"matchLabels": common.selector(COMPONENT)}},
        opts=common.options(depends_on=after),
    )
    return {"serviceAccount": account, "clusterRole": role, "tenantClusterRole": tenant_role,
            "admissionPolicy": policy, "admissionPolicyBinding": policy_binding,
            "clusterRoleBinding": binding, "watchClusterRole": watch_role, "watchClusterRoleBinding": watch_binding,
            "peering": peering,
            "deployment": deployment, "podDisruptionBudget": budget}
