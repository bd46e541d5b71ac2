"""The Gov Hub's Kubernetes identity holds exactly what its pages need, and a field-manager
conflict from the API server becomes a message that names who else manages the field."""

from __future__ import annotations

import json

from kubernetes.client.rest import ApiException

from urbanstack.devplatform import bootstrap, kube
from urbanstack.operator import rbac
from urbanstack.runtime.hubs.gov.kube import FieldConflict, StaleObject, _explain


def test_the_gov_hub_role_patches_municipalities_and_reads_citytools_only():
    rules = rbac.gov_hub_cluster_role()["rules"]
    assert rules == [
        {"apiGroups": ["urbanstack.io"], "resources": ["municipalities"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["urbanstack.io"], "resources": ["citytools"], "verbs": ["get", "list", "watch"]},
    ]
    granted = {(resource, verb) for rule in rules for resource in rule["resources"] for verb in rule["verbs"]}
    for forbidden in (("municipalities", "delete"), ("municipalities", "create"), ("municipalities", "update"),
                      ("municipalities/status", "patch"), ("citytools", "patch"), ("secrets", "get")):
        assert forbidden not in granted


def test_dev_bootstrap_binds_the_role_to_the_hub_user_with_its_own_token():
    manifests = {(m["kind"], m["metadata"]["name"]): m for m in bootstrap.manifests()}
    binding = manifests[("ClusterRoleBinding", rbac.GOV_HUB_CLUSTER_ROLE_NAME)]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": rbac.GOV_HUB_USER}]
    assert manifests[("ClusterRole", rbac.GOV_HUB_CLUSTER_ROLE_NAME)] == rbac.gov_hub_cluster_role()
    assert kube.TOKEN_USERS["govhub"] == (rbac.GOV_HUB_USER, "")  # no group: no rights but its role


def _error(status: int, body: dict) -> ApiException:
    error = ApiException(status=status, reason="x")
    error.body = json.dumps(body)
    return error


def test_a_field_manager_conflict_names_the_other_manager_and_the_field():
    conflict = _explain(_error(409, {"kind": "Status", "reason": "Conflict", "details": {"causes": [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-client-side-apply" using '
                                                      'urbanstack.io/v1alpha1', "field": ".spec.tools"}]}}))
    assert isinstance(conflict, FieldConflict)
    assert conflict.managers == ["kubectl-client-side-apply"] and conflict.fields == ["spec.tools"]
    assert "'kubectl-client-side-apply'" in str(conflict) and "spec.tools" in str(conflict)
    stale = _explain(_error(409, {"kind": "Status", "reason": "Conflict",
                                  "message": "the object has been modified"}))
    assert isinstance(stale, StaleObject) and "Reload" in str(stale)
