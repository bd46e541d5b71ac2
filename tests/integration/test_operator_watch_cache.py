"""The drift sweep's watch cache against the real kube-apiserver, as the operator's own identity:
it sees a tenant's objects deleted behind its back, it survives a dropped connection (and sees
what was deleted meanwhile), and the running operator repairs such a deletion from a watch
event, long before its next sweep."""

from __future__ import annotations

import copy
import dataclasses
import socket
import threading
import time

import kubernetes
import pytest

from urbanstack.operator.kubecache import KubeCache
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.runtime import RuntimeProvisioner

from operator_harness import (ROOT, Cluster, OperatorThread, example, is_ready, operator_kubeconfig,
                              unique_municipality, use_operator_identity)

pytestmark = pytest.mark.platform

TOOLS = [parse_citytool(example(name)) for name in ("citytool-passantenfrequenz-wetter.yaml",
                                                    "citytool-pegel-warnung.yaml")]


class DroppingProxy:
    """A TCP proxy on loopback in front of the API server whose connections the test can cut,
    as a network failure or an API server restart would (TLS passes through untouched)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepting = threading.Event()
        self.accepting.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.accepting.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self, refuse: bool = True) -> None:
        """Close every open connection; with ``refuse``, new ones are closed at once until ``resume``."""
        if refuse:
            self.accepting.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def resume(self) -> None:
        self.accepting.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


def _until(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s")


@pytest.fixture(scope="module")
def operator_rights(platform):
    """The ClusterRole as this branch defines it (the platform is shared: another checkout's
    `dev up` may have installed its own version of the rules meanwhile)."""
    from urbanstack.devplatform import bootstrap

    bootstrap.apply(platform)
    return platform


def test_the_cache_sees_deletions_and_recovers_after_the_connection_drops(operator_rights, kube_api):
    platform = operator_rights
    body = unique_municipality("municipality-guetersloh.yaml", "wc")
    desired = plan(parse_municipality(body), TOOLS)
    part = desired.runtime
    fixed = {"kafka-username": desired.streaming.user, "warehouse-username": desired.warehouse.access.user}
    admin = kubernetes.client.CoreV1Api(kube_api)
    operator = kubernetes.config.new_client_from_config(config_file=operator_kubeconfig(platform))
    provisioner = RuntimeProvisioner(operator)
    ensure(provisioner, part, fixed)

    host, port = operator.configuration.host.removeprefix("https://").rsplit(":", 1)
    proxy = DroppingProxy((host, int(port)))
    through_proxy = copy.copy(operator.configuration)
    through_proxy.host = f"https://127.0.0.1:{proxy.port}"
    through_proxy.refresh_api_key_hook = None   # it reloads the kubeconfig, server address included
    cache = KubeCache(kubernetes.client.ApiClient(through_proxy))
    reported: list[str] = []
    cache.listeners.append(reported.append)
    cache.start()
    try:
        assert cache.wait_synced(60), "the operator's identity could not list and watch its kinds"
        provisioner.cache = cache
        assert provisioner.snapshot([part]) is cache
        assert provisioner.observe_from(cache, part).in_sync, provisioner.observe_from(cache, part).summary()

        admin.delete_namespaced_resource_quota("tenant-quota", part.namespace)
        _until(lambda: provisioner.observe_from(cache, part).about("ResourceQuota tenant-quota", "exists"),
               "the deleted ResourceQuota seen by the cache", timeout=10)
        assert part.namespace in reported

        # The connection drops; a ConfigMap is deleted while the cache cannot watch.
        reconnects = cache.reconnects
        proxy.cut()
        configmap = next(obj for obj in part.objects if obj.kind == "ConfigMap")
        admin.delete_namespaced_config_map(configmap.name, part.namespace)
        _until(lambda: cache.reconnects > reconnects, "the dropped watch noticed", timeout=10)
        assert provisioner.snapshot([part]) is not cache   # while not watched the sweep reads per tenant
        proxy.resume()
        _until(lambda: cache.synced, "the cache watching again", timeout=60)
        assert provisioner.snapshot([part]) is cache
        _until(lambda: provisioner.observe_from(cache, part).about(f"ConfigMap {configmap.name}", "exists"),
               "the ConfigMap deleted meanwhile seen by the cache", timeout=10)

        # Repaired; the cache follows the repair, and afterwards nothing is left to repair.
        ensure(provisioner, part, fixed)
        _until(lambda: provisioner.observe_from(cache, part).in_sync, "in sync after the repair", timeout=10)
    finally:
        cache.stop()
        proxy.close()
        provisioner.cache = None
        provisioner.delete(part, keep_data=False)


def test_the_operator_repairs_a_deleted_quota_and_configmap_from_the_watch(operator_rights, warehouse, kube_api):
    """Drift interval 10 minutes: the repair comes from the watch event, not from a sweep."""
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends

    platform = operator_rights
    cluster = Cluster(kube_api)
    use_operator_identity(platform)
    settings = dataclasses.replace(platform, drift_interval=600.0, drift_mode="bulk", kube_watch=True)
    kube = kubernetes.config.new_client_from_config(config_file=operator_kubeconfig(platform))
    backends = Backends.from_settings(settings, warehouse_client=warehouse, kube=kube)
    handlers.configure(settings, backends,
                       MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv"))
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        cluster.apply("citytools", example(tool))
    body = unique_municipality("municipality-guetersloh.yaml", "ww")
    body["spec"]["deletionPolicy"] = "Delete"
    name = body["metadata"]["name"]
    runner = OperatorThread().start()
    try:
        cluster.apply("municipalities", body)
        ready = cluster.wait_for("municipalities", name, is_ready, timeout=180, what="Ready")
        namespace = ready["status"]["names"]["namespace"]
        _until(lambda: backends.runtime.cache is not None and backends.runtime.cache.synced, "cache synced")
        handlers.state.sweeper.sweep()   # the first sweep (due 30 s after start) would do the same
        configmap = next(i.metadata.name for i in cluster.core.list_namespaced_config_map(namespace).items
                         if i.metadata.labels and i.metadata.labels.get("urbanstack.io/tool"))
        deleted = time.monotonic()
        cluster.core.delete_namespaced_resource_quota("tenant-quota", namespace)
        cluster.core.delete_namespaced_config_map(configmap, namespace)

        def repaired():
            names = {i.metadata.name for i in cluster.core.list_namespaced_config_map(namespace).items}
            return configmap in names and cluster.core.list_namespaced_resource_quota(namespace).items

        _until(repaired, "ResourceQuota and ConfigMap repaired", timeout=60)
        assert time.monotonic() - deleted < 60
    finally:
        cluster.delete("municipalities", name)
        try:
            cluster.wait_gone("municipalities", name, timeout=180)
        finally:
            runner.stop()
