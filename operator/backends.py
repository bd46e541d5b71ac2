"""Connections to the four backends, built once per operator process.

Admin credentials come from environment variables (mounted from Kubernetes
Secrets in a cluster) or, on the local platform, from its 0600 credential files.
They are handed to clients and never logged.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import kubernetes

from urbanstack import kubeclient, warehouse
from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.devplatform import keycloak as dev_keycloak
from urbanstack.operator.provisioners.runtime import RuntimeProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner, server_login
from urbanstack.settings import Settings

_shared_lock = threading.Lock()


def kafka_admin_config(settings: Settings) -> dict[str, str]:
    user = os.environ.get("URBANSTACK_KAFKA_ADMIN_USER", dev_kafka.ADMIN_USER)
    password = os.environ.get("URBANSTACK_KAFKA_ADMIN_PASSWORD") or dev_kafka.admin_password(settings)
    return dev_kafka.client_config(settings, user, password)


def keycloak_admin_credentials(settings: Settings) -> tuple[str, str]:
    user = os.environ.get("URBANSTACK_KEYCLOAK_ADMIN_USER", dev_keycloak.ADMIN_USER)
    password = os.environ.get("URBANSTACK_KEYCLOAK_ADMIN_PASSWORD") or dev_keycloak.admin_password(settings)
    return user, password


def operator_kubeconfig(settings: Settings) -> str | None:
    """In a cluster: None (in-cluster service account). Locally: the operator's
    own least-privilege identity, not the admin's."""
    if kubeclient.in_cluster():
        return None
    return os.environ.get("URBANSTACK_OPERATOR_KUBECONFIG") or str(settings.state_dir / "kube" / "operator.kubeconfig")


def kube_api_client(settings: Settings) -> kubernetes.client.ApiClient:
    return kubeclient.api_client(operator_kubeconfig(settings))


@dataclass
class Backends:
    settings: Settings
    kube: kubernetes.client.ApiClient
    runtime: RuntimeProvisioner
    streaming: StreamingProvisioner
    warehouse: WarehouseProvisioner
    identity: object
    locks: dict[str, threading.Lock] = field(default_factory=dict)

    def lock(self, slug: str) -> threading.Lock:
        """One reconcile at a time per municipality (handlers and the drift timer)."""
        with _shared_lock:
            return self.locks.setdefault(slug, threading.Lock())

    @classmethod
    def from_settings(cls, settings: Settings, *, warehouse_client=None, kube=None) -> "Backends":
        from urbanstack.operator.provisioners.identity import IdentityProvisioner

        kube = kube or kube_api_client(settings)
        url = settings.warehouse_url
        if warehouse_client is None:
            factory = lambda: warehouse.shared(url)  # noqa: E731 - opened lazily, retried on failure
        else:
            factory = lambda: warehouse_client  # noqa: E731
        user, password = keycloak_admin_credentials(settings)
        return cls(
            settings=settings,
            kube=kube,
            runtime=RuntimeProvisioner(kube),
            streaming=StreamingProvisioner(kafka_admin_config(settings)),
            warehouse=WarehouseProvisioner(factory, embedded=warehouse.is_embedded(url),
                                           login=None if warehouse.is_embedded(url) else server_login(url)),
            identity=IdentityProvisioner(settings.keycloak_url, user, password),
        )
