"""Throwaway tenants for the ingest tests, provisioned by the operator's own plan and
provisioners: the namespace with the credentials and ``urbanstack-ingest`` Secrets
(Kubernetes), then the topics, SCRAM user and ACLs (Kafka) with the password from
that Secret — the order the operator's reconcile uses."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import kubernetes
from kubernetes.client.rest import ApiException

from urbanstack import kubeclient
from urbanstack.operator import naming
from urbanstack.operator.models import CityTool, Municipality, parse_citytool, parse_municipality
from urbanstack.operator.plan import DesiredState, plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.runtime import RuntimeProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.rbac import INGEST_SECRET
from urbanstack.runtime.events import BATCH_SCHEMA_VERSION, ObservationBatch
from urbanstack.runtime.ingest.tenants import KubernetesCredentials

from sink_harness import read_topic

LORAWAN_TOOL = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "CityTool", "metadata": {"name": "raumklima"},
    "spec": {"displayName": "Raumklima", "description": "LoRaWAN room sensors.", "version": "0.1.0",
             "owner": "guetersloh", "audience": "gov",
             "datasets": [{"name": "lorawan", "partitions": 1, "fields": [
                 {"name": "temperature", "type": "Float64", "unit": "°C"},
                 {"name": "humidity", "type": "Float64", "unit": "%"},
                 {"name": "battery", "type": "Float64", "unit": "V"},
                 {"name": "door_open", "type": "UInt8"},
                 {"name": "status", "type": "String"}]}]},
}

WATER_TOOL = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "CityTool", "metadata": {"name": "pegel"},
    "spec": {"displayName": "Pegel", "version": "0.1.0", "owner": "guetersloh", "audience": "gov",
             "datasets": [{"name": "water_levels", "partitions": 1, "fields": [
                 {"name": "water_level", "type": "Float64", "unit": "cm"},
                 {"name": "discharge", "type": "Float64", "unit": "m³/s"},
                 {"name": "station_name", "type": "String"},
                 {"name": "water_name", "type": "String"}]}]},
}


def tool(manifest: dict) -> CityTool:
    return parse_citytool(manifest)


def manifest(prefix: str, tools: list[str], **spec) -> dict:
    slug = f"{prefix}{uuid.uuid4().hex[:8]}"
    return {"apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
            "spec": {"displayName": f"Test {slug}", "ags": "05754008", "admins": [f"admin@{slug}.example.org"],
                     "tools": [{"name": name} for name in tools], **spec}}


@dataclass
class Tenant:
    slug: str
    municipality: Municipality
    desired: DesiredState
    manifest: dict

    def topic(self, tool_name: str, dataset: str) -> str:
        return naming.topic(self.slug, tool_name, dataset)

    @property
    def dlq(self) -> str:
        return naming.dlq_topic(self.slug)


def provision(kube_api, admin_config: dict, body: dict, tools: list[CityTool]) -> Tenant:
    municipality = parse_municipality(body)
    desired = plan(municipality, tools)
    fixed = {"kafka-username": desired.streaming.user, "warehouse-username": desired.warehouse.access.user}
    runtime = RuntimeProvisioner(kube_api)
    ensure(runtime, desired.runtime, fixed)
    ensure(StreamingProvisioner(admin_config), desired.streaming, runtime.read_credentials(desired.runtime))
    return Tenant(slug=municipality.slug, municipality=municipality, desired=desired, manifest=body)


def deprovision(kube_api, admin_config: dict, tenant: Tenant) -> None:
    StreamingProvisioner(admin_config).delete(tenant.desired.streaming, keep_data=False)
    try:
        kubernetes.client.CoreV1Api(kube_api).delete_namespace(tenant.desired.runtime.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def ingest_secret(kube_api, slug: str) -> dict[str, str]:
    """Read as the admin, the way an operator hands the key to the municipality."""
    secret = kubernetes.client.CoreV1Api(kube_api).read_namespaced_secret(INGEST_SECRET, naming.namespace(slug))
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def runtime_credentials(settings, **kwargs) -> KubernetesCredentials:
    """The ingest service's view: the runtime's own least-privilege identity."""
    api = kubeclient.api_client(str(settings.state_dir / "kube" / "runtime.kubeconfig"))
    return KubernetesCredentials(api, **kwargs)


def events_of(messages) -> list[dict]:
    """Readings in the messages: single events (schema 1) and columnar batches (schema 2)."""
    found = []
    for message in messages:
        data = json.loads(message.value())
        if data.get("v") == BATCH_SCHEMA_VERSION:
            batch = ObservationBatch.from_dict(data)
            found += [batch.row(index) for index in range(len(batch))]
        else:
            found.append(data)
    return found


def read_events(admin_config: dict, topic: str, expected: int, timeout: float = 20.0) -> list[dict]:
    """Every reading on ``topic`` from the start; waits until ``expected`` are there, then
    reads a little longer (more than expected would be a bug worth seeing)."""
    return events_of(read_topic(admin_config, topic, expected, timeout, count=lambda found: len(events_of(found))))


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def push_service(tenants: list[Tenant], tools: list[dict], **options) -> Iterator[tuple[str, int]]:
    """The push endpoints in a uvicorn process of their own (``push_server.py``); yields
    its base URL and pid. ``options``: ``kafka`` (producer settings over the tenant's
    own) and ``metadata_timeout``, as :class:`TenantPublishers` takes them."""
    port = free_port()
    spec = {"port": port, "municipalities": [tenant.manifest for tenant in tenants], "tools": tools, **options}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("push_server.py")), json.dumps(spec)],
                                   stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the push service did not start: {log.read().decode()[-3000:]}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    try:   # not listening yet: wait a moment, or see it exit
                        process.wait(0.2)
                    except subprocess.TimeoutExpired:
                        pass
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def memory_kib(pid: int) -> dict[str, int]:
    """Resident (``VmRSS``) and peak resident (``VmHWM``) memory of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
            if line.startswith(("VmRSS:", "VmHWM:"))}
