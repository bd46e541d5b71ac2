"""The local Kubernetes API server behaves like a real cluster's control plane."""

from __future__ import annotations

import threading
import time
import uuid

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.platform

GROUP = "probe.urbanstack.io"


def _crd(plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"plural": plural, "singular": plural[:-1], "kind": plural.capitalize()[:-1]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {
                            "colour": {"type": "string", "enum": ["red", "green"]},
                            "size": {"type": "integer", "minimum": 1}}},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }


def _wait_established(ext, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} never became Established")


def test_version_is_stamped(kube_api):
    info = kubernetes.client.VersionApi(kube_api).get_code()
    assert info.git_version.startswith("v1."), info.git_version
    assert info.git_version != "v0.0.0-master"


def test_crd_object_roundtrip_and_watch(kube_api):
    ext = kubernetes.client.ApiextensionsV1Api(kube_api)
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    plural = f"widgets{uuid.uuid4().hex[:6]}s"
    crd = _crd(plural)
    ext.create_custom_resource_definition(crd)
    try:
        _wait_established(ext, crd["metadata"]["name"])
        body = {"apiVersion": f"{GROUP}/v1", "kind": crd["spec"]["names"]["kind"],
                "metadata": {"name": "one"}, "spec": {"colour": "red", "size": 3}}
        created = custom.create_cluster_custom_object(GROUP, "v1", plural, body)
        read = custom.get_cluster_custom_object(GROUP, "v1", plural, "one")
        assert read["spec"] == {"colour": "red", "size": 3}
        assert read["metadata"]["generation"] == 1

        # The schema is enforced by the API server.
        bad = dict(body, metadata={"name": "bad"}, spec={"colour": "blue", "size": 0})
        with pytest.raises(ApiException) as rejected:
            custom.create_cluster_custom_object(GROUP, "v1", plural, bad)
        assert rejected.value.status == 422

        # A watch started now sees the update arrive.
        seen: list[dict] = []
        watch = kubernetes.watch.Watch()

        def consume():
            for event in watch.stream(custom.list_cluster_custom_object, GROUP, "v1", plural,
                                      resource_version=created["metadata"]["resourceVersion"],
                                      timeout_seconds=20):
                if event["type"] == "MODIFIED":
                    seen.append(event["object"])
                    watch.stop()

        thread = threading.Thread(target=consume)
        thread.start()
        custom.patch_cluster_custom_object(GROUP, "v1", plural, "one", {"spec": {"colour": "green"}})
        thread.join(timeout=25)
        assert seen, "the watch did not deliver the update"
        assert seen[0]["spec"]["colour"] == "green"
        assert seen[0]["metadata"]["generation"] == 2

        # Status goes through the status subresource and does not bump generation.
        custom.patch_cluster_custom_object_status(GROUP, "v1", plural, "one", {"status": {"phase": "Ready"}})
        after = custom.get_cluster_custom_object(GROUP, "v1", plural, "one")
        assert after["status"]["phase"] == "Ready"
        assert after["metadata"]["generation"] == 2
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


def test_namespace_finishes_deleting(kube_api):
    core = kubernetes.client.CoreV1Api(kube_api)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}, "data": {"a": "b"}})
    # The controller manager creates the default service account in new namespaces.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("no 'default' service account: is kube-controller-manager running?")

    core.delete_namespace(name)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            ns = core.read_namespace(name)
        except ApiException as exc:
            assert exc.status == 404
            return
        assert ns.status.phase == "Terminating"
        time.sleep(0.5)
    raise AssertionError(f"namespace {name} was still terminating after 90 s")


def test_rbac_is_enforced(platform):
    """The operator's own identity has exactly its ClusterRole's rights: it manages
    namespaces, but cannot read pods or nodes, nor grant itself more; the data
    plane's identity reads municipalities and nothing else."""
    def client(who: str):
        return kubernetes.config.new_client_from_config(
            config_file=str(platform.state_dir / "kube" / f"{who}.kubeconfig"))

    operator = client("operator")
    kubernetes.client.CoreV1Api(operator).list_namespace(limit=1)  # granted by operator/rbac.py
    for forbidden in (lambda: kubernetes.client.CoreV1Api(operator).list_pod_for_all_namespaces(limit=1),
                      lambda: kubernetes.client.CoreV1Api(operator).list_node(limit=1),
                      lambda: kubernetes.client.RbacAuthorizationV1Api(operator).create_cluster_role_binding({
                          "metadata": {"name": f"escalate-{uuid.uuid4().hex[:6]}"},
                          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": "cluster-admin"},
                          "subjects": [{"kind": "User", "name": "urbanstack-operator",
                                        "apiGroup": "rbac.authorization.k8s.io"}]})):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403

    runtime = client("runtime")
    kubernetes.client.CustomObjectsApi(runtime).list_cluster_custom_object("urbanstack.io", "v1alpha1",
                                                                           "municipalities")
    with pytest.raises(ApiException) as denied:
        kubernetes.client.CoreV1Api(runtime).list_secret_for_all_namespaces(limit=1)
    assert denied.value.status == 403


def test_operator_reads_secrets_only_in_the_namespaces_it_provisions(platform, kube_api):
    """The operator's rights from operator/rbac.py, held by its in-cluster service account
    (impersonated; the cluster-wide role is installed under this test's own name, so the
    local platform's binding is untouched): it provisions a municipality's namespace with its
    Secrets, and is refused every Secret it did not create there — kube-system's included —
    as well as binding itself into kube-system or changing that namespace (admission policy)."""
    from urbanstack.operator import rbac
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.provisioners.base import ensure
    from urbanstack.operator.provisioners.runtime import RuntimeProvisioner
    from ingest_harness import manifest

    suffix = uuid.uuid4().hex[:6]
    account_namespace, account = rbac.OPERATOR_SERVICE_ACCOUNT
    admin_rbac, admin_core = kubernetes.client.RbacAuthorizationV1Api(kube_api), kubernetes.client.CoreV1Api(kube_api)
    role = f"urbanstack-operator-test-{suffix}"
    dynamic = kubernetes.dynamic.DynamicClient(kube_api)
    for body in (rbac.tenant_cluster_role(), rbac.cluster_role() | {"metadata": {"name": role}},
                 *rbac.admission_policy()):
        dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"]).server_side_apply(
            body=body, name=body["metadata"]["name"], field_manager="urbanstack-test", force_conflicts=True)
    admin_rbac.create_cluster_role_binding({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}]})
    foreign = admin_core.create_namespaced_secret("kube-system", {
        "metadata": {"name": f"urbanstack-test-{suffix}"}, "stringData": {"token": "not-for-the-operator"}})
    operator = kubernetes.config.new_client_from_config(config_file=str(platform.kubeconfig))
    operator.set_default_header("Impersonate-User", f"system:serviceaccount:{account_namespace}:{account}")
    desired = plan(parse_municipality(manifest("rbac", [])), [])
    try:
        provisioner = RuntimeProvisioner(operator)
        fixed = {"kafka-username": desired.streaming.user}
        actions = ensure(provisioner, desired.runtime, fixed)
        credentials = provisioner.read_credentials(desired.runtime)
        assert f"created RoleBinding {rbac.TENANT_ROLE_BINDING}" in actions
        assert provisioner.observe(desired.runtime, fixed).in_sync
        stored = admin_core.read_namespaced_secret(desired.runtime.secret.name, desired.runtime.namespace)
        assert set(stored.data) == set(credentials)

        core = kubernetes.client.CoreV1Api(operator)
        self_binding = rbac.tenant_role_binding("kube-system", {})
        bind_into_kube_system = lambda: kubernetes.client.RbacAuthorizationV1Api(  # noqa: E731
            operator).create_namespaced_role_binding("kube-system", self_binding, dry_run="All")
        deadline = time.monotonic() + 30   # the API server loads a new policy through a watch
        while True:
            try:
                bind_into_kube_system()
            except ApiException as refused:
                assert refused.status in (403, 422) and "only namespaces named muni-" in refused.body
                break
            assert time.monotonic() < deadline, "the admission policy never refused the operator's binding"
            time.sleep(0.2)
        with pytest.raises(ApiException) as refused:
            core.patch_namespace("kube-system", {"metadata": {"labels": {"owned": "by-the-operator"}}}, dry_run="All")
        assert "only namespaces named muni-" in refused.value.body
        for forbidden in (lambda: core.read_namespaced_secret(foreign.metadata.name, "kube-system"),
                          lambda: core.list_namespaced_secret("kube-system", limit=1),
                          lambda: core.list_secret_for_all_namespaces(limit=1),
                          lambda: core.create_namespaced_secret("kube-system", {"metadata": {"name": "x"}}),
                          # the tenant role is for namespaces the plan creates, not one it names itself
                          lambda: kubernetes.client.RbacAuthorizationV1Api(operator).create_namespaced_role_binding(
                              "kube-system", {"metadata": {"name": f"x-{suffix}"}, "roleRef": {
                                  "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "cluster-admin"}, "subjects": rbac.tenant_role_binding("x", {})["subjects"]})):
            with pytest.raises(ApiException) as denied:
                forbidden()
            assert denied.value.status == 403
        assert provisioner.delete(desired.runtime, keep_data=True) == [f"deleted namespace {desired.runtime.namespace}"]
    finally:
        for cleanup in (lambda: admin_core.delete_namespace(desired.runtime.namespace),
                        lambda: admin_core.delete_namespaced_secret(foreign.metadata.name, "kube-system"),
                        lambda: admin_rbac.delete_cluster_role_binding(role),
                        lambda: admin_rbac.delete_cluster_role(role)):
            try:
                cleanup()
            except ApiException as exc:
                if exc.status != 404:
                    raise
