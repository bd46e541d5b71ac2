"""Run the real operator (Kopf, in a thread of the test process) against the
local platform, as its own least-privilege identity, and wait on statuses."""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
import uuid
from pathlib import Path

import kubernetes
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GROUP, VERSION = "urbanstack.io", "v1alpha1"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


class OperatorThread:
    """kopf.operator() on its own event loop; stop() ends it like a SIGTERM would."""

    def __init__(self):
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 60) -> "OperatorThread":
        import kopf

        def target():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(kopf.operator(clusterwide=True, standalone=True,
                                                      stop_flag=self._stop, ready_flag=self._ready))
            except BaseException as exc:  # noqa: BLE001 - surfaced to the test
                self.error = exc
            finally:
                loop.close()

        self._thread = threading.Thread(target=target, name="operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"operator did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "operator did not stop"


class Cluster:
    """Admin-side view used by the tests to apply resources and read status."""

    def __init__(self, api_client: kubernetes.client.ApiClient):
        self.api = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)

    def apply(self, plural: str, body: dict) -> dict:
        name = body["metadata"]["name"]
        try:
            current = self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self.custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
        return self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"spec": body["spec"]})

    def patch_spec(self, plural: str, name: str, spec: dict) -> dict:
        return self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"spec": spec})

    def get(self, plural: str, name: str) -> dict | None:
        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, plural: str, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def wait_gone(self, plural: str, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(plural, name) is None:
                return
            time.sleep(0.5)
        raise AssertionError(f"{plural}/{name} still exists after {timeout:.0f} s: {self.get(plural, name)}")

    def wait_for(self, plural: str, name: str, predicate, timeout: float = 120, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        obj = None
        while time.monotonic() < deadline:
            obj = self.get(plural, name)
            if obj is not None and predicate(obj):
                return obj
            time.sleep(0.5)
        raise AssertionError(f"{plural}/{name}: {what} not reached in {timeout:.0f} s; status: "
                             f"{(obj or {}).get('status')}")


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def is_ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return (status.get("observedGeneration") == obj["metadata"]["generation"]
            and conditions(obj).get("Ready", {}).get("status") == "True")


def unique_municipality(example_file: str, prefix: str) -> dict:
    """An example under a fresh name. Keycloak keeps organization names, domains
    and e-mail addresses unique, so those are made unique too."""
    body = copy.deepcopy(example(example_file))
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    body["metadata"] = {"name": name}
    spec = body["spec"]
    spec["displayName"] = f"{spec['displayName']} ({name})"
    spec["admins"] = [f"admin@{name}.example.org"]
    if spec.get("identity", {}).get("domains"):
        spec["identity"]["domains"] = [f"{name}.example.org"]
    return body


def operator_kubeconfig(settings) -> str:
    return str(settings.state_dir / "kube" / "operator.kubeconfig")


def use_operator_identity(settings) -> None:
    os.environ["KUBECONFIG"] = operator_kubeconfig(settings)
