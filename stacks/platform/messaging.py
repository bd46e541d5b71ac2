"""The MQTT broker of the SensorThings API (``mqtt`` in the stack config; docs/deploy.md, "MQTT").

``external``: the operator and the sink reach a broker someone else runs (mosquitto 2 with its
dynamic-security plugin, the admin's password from ``mqttAdminPassword``).

``in-cluster``: one mosquitto pod declared here — mosquitto is not clustered, so one replica
with its access-control file on a volume (the operator writes every municipality's client into
it); its init container (the runtime image, ``urbanstack mqtt seed``) writes the first file with
the admin and deny-by-default, and never replaces it. Plain MQTT on 1883 only inside the cluster
(NetworkPolicy: operator and sink); subscribers outside reach it as MQTT over WebSockets through
the platform's Ingress at ``/mqtt`` on the platform's host, so TLS ends where it does for every
other path. Nothing is persisted but that file (no retained messages, no sessions).
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.core.v1 import ConfigMap, PersistentVolumeClaim, Secret, Service

from urbanstack.runtime.mqtt import security
from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.config import NAMESPACE, Mqtt, PlatformConfig

NAME = "urbanstack-mqtt"
SECRET = "urbanstack-mqtt"
MQTT_PORT = 1883
WEBSOCKETS_PORT = 8080
DATA_DIR = "/mosquitto/data"
SECURITY_FILE = f"{DATA_DIR}/dynamic-security.json"
# eclipse-mosquitto's image runs as this user.
MOSQUITTO_UID = 1883


def env(mqtt: Mqtt, host: str, port: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """(where the broker is, its admin) as URBANSTACK_MQTT_* (urbanstack/settings.py)."""
    where = (common.env_value("URBANSTACK_MQTT_HOST", host), common.env_value("URBANSTACK_MQTT_PORT", str(port)))
    admin = (common.env_value("URBANSTACK_MQTT_ADMIN_USER", mqtt.admin_user),
             common.env_secret("URBANSTACK_MQTT_ADMIN_PASSWORD", SECRET, "admin-password"))
    return where, admin


def broker_config(mqtt: Mqtt) -> str:
    """mosquitto.conf of the in-cluster broker (the same limits as the local platform's)."""
    listeners = [f"listener {MQTT_PORT}"]
    if mqtt.websockets:
        listeners += [f"listener {WEBSOCKETS_PORT}", "protocol websockets"]
    return security.broker_config("declared by the platform stack (stacks/platform/messaging.py)", listeners,
                                  mqtt.plugin_path, SECURITY_FILE)


def selector() -> dict[str, str]:
    return common.selector("mqtt")


def install(cfg: PlatformConfig, after: list[pulumi.Resource]) -> tuple[dict, list[pulumi.Resource]]:
    """The broker's wiring (keyword arguments of ``backends.Backend``) and what was declared."""
    mqtt = cfg.mqtt
    assert mqtt is not None
    secret = Secret(SECRET, metadata=common.metadata(cfg, SECRET, "mqtt"), type="Opaque",
                    string_data={"admin-password": mqtt.admin_password}, opts=common.options(depends_on=after))
    if mqtt.mode == "external":
        where, admin = env(mqtt, mqtt.host, mqtt.port)
        return ({"env": where, "client_env": admin, "admin_env": admin,
                 "peers": ({"ipBlock": {"cidr": "0.0.0.0/0"}},), "ports": (mqtt.port,)}, [secret])
    config = ConfigMap(f"{NAME}-config", metadata=common.metadata(cfg, f"{NAME}-config", "mqtt"),
                       data={"mosquitto.conf": broker_config(mqtt)}, opts=common.options(depends_on=after))
    claim = PersistentVolumeClaim(f"{NAME}-data", metadata=common.metadata(cfg, f"{NAME}-data", "mqtt"), spec={
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": mqtt.storage}}},
        opts=common.options(depends_on=after))
    where, admin = env(mqtt, f"{NAME}.{NAMESPACE}.svc", MQTT_PORT)
    security = {**common.CONTAINER_SECURITY, "runAsUser": MOSQUITTO_UID, "runAsGroup": MOSQUITTO_UID}
    data_mount = {"name": "data", "mountPath": DATA_DIR}
    ports = [{"name": "mqtt", "containerPort": MQTT_PORT, "protocol": "TCP"}]
    if mqtt.websockets:
        ports.append({"name": "websockets", "containerPort": WEBSOCKETS_PORT, "protocol": "TCP"})
    probe = {"tcpSocket": {"port": "mqtt"}, "timeoutSeconds": 3}
    deployment = Deployment(NAME, metadata=common.metadata(cfg, NAME, "mqtt", image=mqtt.image), spec={
        "replicas": 1,
        # One broker owns the access-control file: the old pod stops before the new one starts.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": selector()},
        "template": {
            "metadata": {"labels": common.labels("mqtt", mqtt.image)},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {**common.POD_SECURITY, "runAsUser": MOSQUITTO_UID, "runAsGroup": MOSQUITTO_UID,
                                    "fsGroup": MOSQUITTO_UID},
                "initContainers": [{
                    "name": "seed",
                    "image": cfg.runtime_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["urbanstack"],
                    "args": ["mqtt", "seed", SECURITY_FILE],
                    "env": [*where, *admin],
                    "securityContext": security,
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "200m", "memory": "128Mi"}},
                    "volumeMounts": [data_mount, common.TMP_MOUNT],
                }],
                "containers": [{
                    "name": "mosquitto",
                    "image": mqtt.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"],
                    "ports": ports,
                    "securityContext": security,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "startupProbe": probe | {"periodSeconds": 2, "failureThreshold": 30},
                    "livenessProbe": probe | {"periodSeconds": 20, "failureThreshold": 3},
                    "readinessProbe": probe | {"periodSeconds": 5, "failureThreshold": 2},
                    "volumeMounts": [data_mount, {"name": "config", "mountPath": "/mosquitto/config",
                                                  "readOnly": True}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"{NAME}-data"}},
                            {"name": "config", "configMap": {"name": f"{NAME}-config"}}, common.TMP_VOLUME],
            },
        },
    }, opts=common.options(depends_on=[*after, secret, config, claim]))
    service = Service(NAME, metadata=common.metadata(cfg, NAME, "mqtt"), spec={
        "type": "ClusterIP", "selector": selector(),
        "ports": [{"name": port["name"], "port": port["containerPort"], "targetPort": port["name"],
                   "protocol": "TCP"} for port in ports]}, opts=common.options(depends_on=after))
    wiring = {"env": where, "client_env": admin, "admin_env": admin,
              "peers": ({"podSelector": {"matchLabels": selector()}},), "ports": (MQTT_PORT,),
              "pod_selector": selector(),
              "public_ports": (WEBSOCKETS_PORT,) if mqtt.websockets else ()}
    return wiring, [secret, config, claim, deployment, service]
