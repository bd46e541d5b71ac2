"""Connections to the four backends, built once per operator process.

Admin credentials come from ``Settings`` (in a cluster, environment variables
mounted from Kubernetes Secrets); without them the operator refuses to start and
names the variables. They are handed to clients and never logged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import kubernetes

from urbanstack import kubeclient, warehouse
from urbanstack.operator.provisioners.runtime import RuntimeProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner, server_login
from urbanstack.settings import Settings

_shared_lock = threading.Lock()


def operator_kubeconfig(settings: Settings) -> str | None:
    """In a cluster: None (in-cluster service account). Locally: the operator's
    own least-privilege identity, not the admin's."""
    if kubeclient.in_cluster():
        return None
    return settings.operator_kubeconfig or str(settings.state_dir / "kube" / "operator.kubeconfig")


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
    mail: object = None  # plan.RealmMail: the relay every realm sends its e-mail through
    endpoints: object = None  # plan.ToolEndpoints: where tool Deployments find Kafka and the relay
    messaging: object = None  # provisioners.messaging.MessagingProvisioner; None without a configured MQTT broker
    locks: dict[str, threading.Lock] = field(default_factory=dict)

    def lock(self, slug: str) -> threading.Lock:
        """One reconcile at a time per municipality (handlers and the drift timer)."""
        with _shared_lock:
            return self.locks.setdefault(slug, threading.Lock())

    @classmethod
    def from_settings(cls, settings: Settings, *, warehouse_client=None, kube=None) -> "Backends":
        from urbanstack.operator.plan import RealmMail, ToolEndpoints
        from urbanstack.operator.provisioners.identity import IdentityProvisioner

        # Both identities first: a missing one stops the start with the variables to set.
        kafka_config, (user, password) = settings.kafka_admin_config(), settings.keycloak_admin()
        kube = kube or kube_api_client(settings)
        url = settings.warehouse_url
        if warehouse_client is None:
            factory = lambda: warehouse.shared(url)  # noqa: E731 - opened lazily, retried on failure
        else:
            factory = lambda: warehouse_client  # noqa: E731
        return cls(
            settings=settings,
            kube=kube,
            runtime=RuntimeProvisioner(kube),
            streaming=StreamingProvisioner(kafka_config),
            warehouse=WarehouseProvisioner(factory, embedded=warehouse.is_embedded(url),
                                           login=None if warehouse.is_embedded(url) else server_login(url)),
            identity=IdentityProvisioner(settings.keycloak_url, user, password,
                                         smtp_password=settings.smtp_password),
            mail=RealmMail.from_settings(settings),
            endpoints=ToolEndpoints.from_settings(settings),
            messaging=messaging_provisioner(settings),
        )


def messaging_provisioner(settings: Settings):
    """The MQTT provisioner when the broker's admin is configured (URBANSTACK_MQTT_ADMIN_USER and
    …_PASSWORD; on the local platform filled in); otherwise None, said once in the log."""
    import logging

    from urbanstack.operator.provisioners.messaging import MessagingProvisioner
    from urbanstack.settings import MissingSetting

    try:
        user, password = settings.mqtt_admin()
    except MissingSetting as exc:
        logging.getLogger(__name__).warning("MQTT: no broker clients are provisioned: %s", exc)
        return None
    return MessagingProvisioner(settings.mqtt_server, settings.mqtt_port, user, password)
