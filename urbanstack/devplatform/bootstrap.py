"""Install what the operator needs into the local cluster: the CRDs and the
least-privilege ClusterRoles of the operator, the data plane and the Gov Hub, each
bound to its own identity."""

from __future__ import annotations

import time

import kubernetes
from kubernetes import dynamic

from urbanstack.settings import Settings

FIELD_MANAGER = "urbanstack-dev"
RUNTIME_USER = "urbanstack-runtime"
# The operator's earlier ClusterRole (and binding) of this name held Secrets in every
# namespace; local platforms set up before the narrowing still have it, so it is removed.
LEGACY_OPERATOR_ROLE = "urbanstack-operator"


def _binding(role: str, user: str) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def manifests() -> list[dict]:
    from urbanstack.operator import crdgen, rbac

    return [*crdgen.crds().values(),
            rbac.cluster_role(), _binding(rbac.CLUSTER_ROLE_NAME, rbac.OPERATOR_USER), rbac.tenant_cluster_role(),
            rbac.watch_cluster_role(), _binding(rbac.WATCH_CLUSTER_ROLE_NAME, rbac.OPERATOR_USER),
            rbac.runtime_cluster_role(), _binding(rbac.RUNTIME_CLUSTER_ROLE_NAME, RUNTIME_USER),
            rbac.gov_hub_cluster_role(), _binding(rbac.GOV_HUB_CLUSTER_ROLE_NAME, rbac.GOV_HUB_USER),
            # `urbanstack hub` offers the upload page (URBANSTACK_INGEST defaults to on).
            rbac.gov_hub_upload_cluster_role(),
            _binding(rbac.GOV_HUB_UPLOAD_CLUSTER_ROLE_NAME, rbac.GOV_HUB_USER),
            rbac.signup_cluster_role(), _binding(rbac.SIGNUP_CLUSTER_ROLE_NAME, rbac.SIGNUP_USER),
            *rbac.admission_policy()]


def apply(settings: Settings, timeout: float = 60.0) -> list[str]:
    api = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    client = dynamic.DynamicClient(api)
    applied = []
    for manifest in manifests():
        resource = client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        resource.server_side_apply(body=manifest, name=manifest["metadata"]["name"],
                                   field_manager=FIELD_MANAGER, force_conflicts=True)
        applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    rbac_api = kubernetes.client.RbacAuthorizationV1Api(api)
    for remove in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        try:
            remove(LEGACY_OPERATOR_ROLE)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    for manifest in manifests():
        if manifest["kind"] != "CustomResourceDefinition":
            continue
        while True:
            crd = extensions.read_custom_resource_definition(manifest["metadata"]["name"])
            if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {manifest['metadata']['name']} was not established after {timeout:.0f} s")
            time.sleep(0.2)
    return applied
