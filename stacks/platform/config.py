"""The stack's configuration: one immutable object, read once from Pulumi config.

Every key lives in the project's namespace (``urbanstack-platform:<key>``);
``docs/deploy.md`` lists them. Credentials are only ever read with
``require_secret``, so they stay Pulumi secrets (encrypted in the stack file and
state) until they land in a Kubernetes Secret. A value that would leak a
credential into plain config (a URL with ``user:password@``) is refused.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pulumi

from urbanstack.settings import KAFKA_SECURITY_PROTOCOLS, trusted_networks

PROJECT = "urbanstack-platform"
NAMESPACE = "urbanstack-system"
# The hub serves the web pages (`urbanstack hub`: the Gov Hub, later the Citizen Hub).
RUNTIME_SERVICES = ("api", "sink", "connectors", "hub")
# The sink scales with Kafka partitions, the api and the hub with requests. Connectors
# poll their sources on a schedule: more replicas would only fetch twice.
AUTOSCALED = ("api", "sink", "hub")
BACKEND_MODES = ("external", "in-cluster")
# The runtime services that read the Kubernetes API (the catalogue of
# municipalities and tools; ingest and the hub's upload page also the tenant's
# urbanstack-ingest Secret; the hub patches spec.tools and spec.shares).
KUBERNETES_API_READERS = ("api", "connectors", "hub")

DEFAULT_RESOURCES = {
    "operator": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    "api": {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}},
    "sink": {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "connectors": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    "hub": {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}},
}
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_VERSION_TAG = re.compile(r":v?\d+(\.\d+){1,2}([-+.][0-9A-Za-z.-]+)?$")


class ConfigError(ValueError):
    """A stack configuration that cannot produce a safe installation."""


def check_pinned_image(key: str, image: str) -> str:
    """An image must name an exact build: a digest or a version tag, never a moving tag."""
    if _DIGEST.search(image) or _VERSION_TAG.search(image.rsplit("/", 1)[-1]):
        return image
    raise ConfigError(f"{key} must be pinned by version (repo/name:1.2.3) or digest (repo/name@sha256:…), "
                      f"got {image!r}")


def check_no_credentials(key: str, url: str) -> str:
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.username or parts.password:
        raise ConfigError(f"{key} must not carry credentials ({parts.scheme}://user:password@… ); "
                          f"set the user as plain config and the password with `pulumi config set --secret`")
    return url


def url_port(url: str, default: int) -> int:
    return urlsplit(url if "://" in url else f"//{url}").port or default


@dataclass(frozen=True)
class Ingress:
    class_name: str
    api_host: str
    tls_secret_name: str
    controller_namespace: str
    # cert-manager issues the certificate into tls_secret_name when set;
    # otherwise the Secret must exist (docs/deploy.md shows both).
    cluster_issuer: str | None = None


@dataclass(frozen=True)
class Hub:
    """What ``urbanstack hub`` needs that the platform's operator provides: Secrets that
    exist in the namespace before the hub starts (their values never pass through Pulumi)."""
    # The metadata store: a PostgreSQL database. URBANSTACK_METADATA_URL (the application
    # role) and, optionally, URBANSTACK_METADATA_MIGRATION_URL (the schema owner, who runs
    # the migrations at start), both postgresql+psycopg://user:password@host:port/db.
    metadata_secret: str = "urbanstack-metadata"
    metadata_url_key: str = "url"
    metadata_migration_url_key: str | None = "migration-url"
    # Where the hub may reach PostgreSQL (NetworkPolicy egress).
    metadata_port: int = 5432
    # The Gov Hub's confidential client in Keycloak's master realm (people management).
    keycloak_client_id: str = "urbanstack-gov-hub"
    keycloak_secret: str = "urbanstack-gov-hub-keycloak"
    keycloak_secret_key: str = "client-secret"
    # The key that signs the signup form's proof-of-work challenges (URBANSTACK_SIGNUP_SECRET):
    # one for all hub replicas, so a challenge from one pod verifies on another.
    signup_secret: str = "urbanstack-signup"
    signup_secret_key: str = "proof-key"
    # A ConfigMap the platform's operator creates with Destatis' municipality directory
    # (``gemeinden.csv.gz``, the derived CSV gzipped) and the Kreis names (``kreise.csv``),
    # mounted into the hub for the signup's search. None: the signup says it is unavailable.
    directory_config_map: str | None = None


@dataclass(frozen=True)
class Mail:
    """The mail relay every e-mail of the platform goes through: signup confirmations (hub),
    Keycloak's invitations (realm ``smtpServer``, set by the operator and on the imported platform
    realm). The password only by reference to a Secret."""
    host: str
    port: int = 587
    from_address: str = ""
    user: str = ""
    password_secret: str | None = None
    password_secret_key: str = "password"
    starttls: bool = True

    def env(self) -> list[dict]:
        """URBANSTACK_SMTP_* (urbanstack/settings.py) for the hub and the operator."""
        env = [common_env("URBANSTACK_SMTP_HOST", self.host), common_env("URBANSTACK_SMTP_PORT", str(self.port)),
               common_env("URBANSTACK_SMTP_FROM", self.from_address),
               common_env("URBANSTACK_SMTP_STARTTLS", "1" if self.starttls else "0")]
        if self.user:
            env.append(common_env("URBANSTACK_SMTP_USER", self.user))
        if self.password_secret:
            env.append({"name": "URBANSTACK_SMTP_PASSWORD", "valueFrom": {"secretKeyRef": {
                "name": self.password_secret, "key": self.password_secret_key}}})
        return env


def common_env(name: str, value: str) -> dict:
    return {"name": name, "value": value}


def _mail(raw: dict | None) -> Mail | None:
    if not raw:
        return None
    known = {"host": "host", "port": "port", "from": "from_address", "user": "user",
             "passwordSecret": "password_secret", "passwordSecretKey": "password_secret_key", "starttls": "starttls"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"mail: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    mail = Mail(**{known[key]: value for key, value in raw.items()})
    if not mail.host or not mail.from_address or "@" not in mail.from_address:
        raise ConfigError("mail needs host and from (the sender address), e.g. "
                          "{host: relay.example.org, port: 587, from: no-reply@example.org}")
    try:
        port = int(mail.port)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(f"mail.port must be a TCP port, got {mail.port!r}")
    if mail.password_secret is not None and not _SECRET_NAME.match(str(mail.password_secret)):
        raise ConfigError(f"mail.passwordSecret must name a Secret in {NAMESPACE}, got {mail.password_secret!r}")
    if not _SECRET_KEY.match(str(mail.password_secret_key)):
        raise ConfigError(f"mail.passwordSecretKey must be a key of the Secret, got {mail.password_secret_key!r}")
    if mail.password_secret and not mail.user:
        raise ConfigError("mail.passwordSecret needs mail.user (the relay's user name)")
    starttls = mail.starttls if isinstance(mail.starttls, bool) else str(mail.starttls).lower() in ("1", "true", "yes")
    if mail.password_secret and not starttls:
        raise ConfigError("mail.starttls must be on when the relay gets a password (never in clear text)")
    return dataclasses.replace(mail, port=port, starttls=starttls)


def _hub(raw: dict) -> Hub:
    known = {"metadataSecret": "metadata_secret", "metadataUrlKey": "metadata_url_key",
             "metadataMigrationUrlKey": "metadata_migration_url_key", "metadataPort": "metadata_port",
             "keycloakClientId": "keycloak_client_id", "keycloakSecret": "keycloak_secret",
             "keycloakSecretKey": "keycloak_secret_key", "signupSecret": "signup_secret",
             "signupSecretKey": "signup_secret_key", "directoryConfigMap": "directory_config_map"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"hub: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {known[key]: value for key, value in raw.items()}
    if values.get("metadata_migration_url_key") == "":
        values["metadata_migration_url_key"] = None  # migrations as the application role
    hub = Hub(**values)
    for key in ("metadataSecret", "keycloakSecret", "signupSecret", "directoryConfigMap"):
        if key == "directoryConfigMap" and hub.directory_config_map is None:
            continue
        if not _SECRET_NAME.match(str(getattr(hub, known[key]))):
            raise ConfigError(f"hub.{key} must name a Secret in {NAMESPACE} (lower-case letters, digits, '-', '.'), "
                              f"got {getattr(hub, known[key])!r}")
    for key in ("metadataUrlKey", "metadataMigrationUrlKey", "keycloakSecretKey", "signupSecretKey"):
        value = getattr(hub, known[key])
        if value is not None and not _SECRET_KEY.match(str(value)):
            raise ConfigError(f"hub.{key} must be a key of the Secret (letters, digits, '-', '_', '.'), got {value!r}")
    try:
        port = int(hub.metadata_port)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(f"hub.metadataPort must be a TCP port, got {hub.metadata_port!r}")
    return dataclasses.replace(hub, metadata_port=port)


MQTT_MODES = ("external", "in-cluster")
# eclipse-mosquitto's image keeps its plugins in /usr/lib; Debian's (dev platform) elsewhere.
MQTT_PLUGIN = "/usr/lib/mosquitto_dynamic_security.so"
MQTT_WEBSOCKETS_PATH = "/mqtt"


@dataclass(frozen=True)
class Mqtt:
    """The MQTT broker SensorThings subscribers use (docs/sensorthings.md, *MQTT*): mosquitto with
    its dynamic-security plugin. The operator provisions each municipality's broker client as its
    admin and the sink publishes stored Observations as it. ``external``: a broker someone else
    runs; ``in-cluster``: one mosquitto pod the stack declares, reached by MQTT inside the cluster
    and, with ``websockets``, by MQTT over WebSockets through the platform's Ingress (TLS) at
    ``MQTT_WEBSOCKETS_PATH`` on the platform's host (a reserved first segment of the Citizen Hub)."""
    mode: str
    admin_user: str
    admin_password: pulumi.Output
    host: str = ""
    port: int = 1883
    image: str = "eclipse-mosquitto:2.0.20"
    storage: str = "1Gi"
    websockets: bool = True
    plugin_path: str = MQTT_PLUGIN


@dataclass(frozen=True)
class External:
    kafka_bootstrap: str
    kafka_security_protocol: str
    # PEM of the CA that signed the brokers' certificates (SASL_SSL); None: the image's CA store.
    kafka_ca_certificate: str | None
    kafka_username: str
    kafka_password: pulumi.Output
    keycloak_url: str
    keycloak_admin_user: str
    keycloak_admin_password: pulumi.Output
    warehouse_url: str
    warehouse_user: str
    warehouse_password: pulumi.Output

    @property
    def kafka_ports(self) -> tuple[int, ...]:
        return tuple(sorted({url_port(server, 9092) for server in self.kafka_bootstrap.split(",")}))

    @property
    def keycloak_port(self) -> int:
        return url_port(self.keycloak_url, 443 if self.keycloak_url.startswith("https") else 80)

    @property
    def warehouse_port(self) -> int:
        return url_port(self.warehouse_url, 8443 if self.warehouse_url.startswith("https") else 8123)


@dataclass(frozen=True)
class KeycloakDatabase:
    host: str
    database: str
    username: str
    password: pulumi.Output


@dataclass(frozen=True)
class InCluster:
    keycloak_instances: int
    keycloak_hostname: str
    keycloak_database: KeycloakDatabase
    keycloak_operator_namespace: str
    kafka_version: str
    kafka_replicas: int
    kafka_storage: str
    strimzi_operator_namespace: str
    clickhouse_replicas: int
    clickhouse_storage: str
    clickhouse_operator_namespace: str
    warehouse_password: pulumi.Output


@dataclass(frozen=True)
class PlatformConfig:
    operator_image: str
    runtime_image: str
    replicas: dict[str, int]
    max_replicas: dict[str, int]
    resources: dict[str, dict]
    ingress: Ingress
    backends: str
    external: External | None
    in_cluster: InCluster | None
    api_server_cidrs: tuple[str, ...]
    api_server_ports: tuple[int, ...]
    monitoring_namespace: str | None
    skip_await: bool
    crds_dir: Path
    # URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR; None: the code's default.
    api_anonymous_queries_per_hour: int | None = None
    # URBANSTACK_TRUSTED_PROXIES: the ingress controller's pod addresses or CIDRs. Required:
    # the code trusts no proxy by default, and every client would count as the controller.
    trusted_proxies: str = ""
    hub: Hub = Hub()
    mail: Mail | None = None  # None: no e-mail (the signup cannot confirm, invitations are not sent)
    mqtt: Mqtt | None = None  # None: no MQTT (SensorThings clients poll; docs/deploy.md, "MQTT")


def image_version(image: str) -> str:
    """The tag, or the digest's first 12 hex digits: a valid app.kubernetes.io/version label."""
    if "@sha256:" in image:
        return image.rsplit("@sha256:", 1)[1][:12]
    return image.rsplit("/", 1)[-1].split(":", 1)[1]


def _checkout_crds() -> Path:
    # stacks/platform/config.py → the repository's crds/ folder.
    return Path(__file__).resolve().parents[2] / "crds"


def _external(cfg: pulumi.Config) -> External:
    raw = cfg.require_object("external")
    protocol = raw.get("kafkaSecurityProtocol", KAFKA_SECURITY_PROTOCOLS[0])
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(f"external.kafkaSecurityProtocol {protocol!r} is not supported: Urban Stack's Kafka clients "
                          f"speak {' or '.join(KAFKA_SECURITY_PROTOCOLS)} with SCRAM-SHA-512")
    ca = raw.get("kafkaCaCertificate")
    if ca and protocol != "SASL_SSL":
        raise ConfigError("external.kafkaCaCertificate needs kafkaSecurityProtocol SASL_SSL")
    if ca and "-----BEGIN CERTIFICATE-----" not in ca:
        raise ConfigError("external.kafkaCaCertificate must be the PEM text of the CA certificate")
    try:
        return External(
            kafka_bootstrap=raw["kafkaBootstrap"],
            kafka_security_protocol=protocol,
            kafka_ca_certificate=ca or None,
            kafka_username=raw["kafkaUsername"],
            kafka_password=cfg.require_secret("kafkaPassword"),
            keycloak_url=check_no_credentials("external.keycloakUrl", raw["keycloakUrl"]),
            keycloak_admin_user=raw["keycloakAdminUser"],
            keycloak_admin_password=cfg.require_secret("keycloakAdminPassword"),
            warehouse_url=check_no_credentials("external.warehouseUrl", raw["warehouseUrl"]),
            warehouse_user=raw["warehouseUser"],
            warehouse_password=cfg.require_secret("warehousePassword"),
        )
    except KeyError as missing:
        raise ConfigError(f"external.{missing.args[0]} is required when backends is 'external'") from None


def _in_cluster(cfg: pulumi.Config) -> InCluster:
    raw = cfg.get_object("inCluster") or {}
    try:
        database = raw["keycloakDatabase"]
        in_cluster = InCluster(
            keycloak_instances=int(raw.get("keycloakInstances", 2)),
            keycloak_hostname=raw["keycloakHostname"],
            keycloak_database=KeycloakDatabase(host=database["host"], database=database.get("database", "keycloak"),
                                               username=database.get("username", "keycloak"),
                                               password=cfg.require_secret("keycloakDbPassword")),
            keycloak_operator_namespace=raw.get("keycloakOperatorNamespace", "keycloak"),
            kafka_version=raw.get("kafkaVersion", "4.1.1"),
            kafka_replicas=int(raw.get("kafkaReplicas", 3)),
            kafka_storage=raw.get("kafkaStorage", "100Gi"),
            strimzi_operator_namespace=raw.get("strimziOperatorNamespace", "strimzi"),
            clickhouse_replicas=int(raw.get("clickhouseReplicas", 1)),
            clickhouse_storage=raw.get("clickhouseStorage", "200Gi"),
            clickhouse_operator_namespace=raw.get("clickhouseOperatorNamespace", "kube-system"),
            warehouse_password=cfg.require_secret("warehousePassword"),
        )
    except KeyError as missing:
        raise ConfigError(f"inCluster.{missing.args[0]} is required when backends is 'in-cluster'") from None
    for key in ("keycloakOperatorNamespace", "strimziOperatorNamespace", "clickhouseOperatorNamespace"):
        if raw.get(key) == NAMESPACE:
            # The backend's NetworkPolicy admits its operator's whole namespace.
            raise ConfigError(f"inCluster.{key} must not be {NAMESPACE}: run the backend operators in their own "
                              f"namespace and let them watch {NAMESPACE}")
    return in_cluster


def _mqtt(cfg: pulumi.Config) -> Mqtt | None:
    raw = cfg.get_object("mqtt")
    if not raw:
        return None
    known = {"mode": "mode", "host": "host", "port": "port", "adminUser": "admin_user", "image": "image",
             "storage": "storage", "websockets": "websockets", "pluginPath": "plugin_path"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"mqtt: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {known[key]: value for key, value in raw.items()}
    mode = values.setdefault("mode", "in-cluster")
    if mode not in MQTT_MODES:
        raise ConfigError(f"mqtt.mode must be one of {', '.join(MQTT_MODES)}, got {mode!r}")
    values.setdefault("admin_user", "urbanstack-admin")
    if mode == "external" and not values.get("host"):
        raise ConfigError("mqtt.host is required when mqtt.mode is 'external' (the broker's host name)")
    if mode == "in-cluster" and values.get("host"):
        raise ConfigError("mqtt.host is only for mqtt.mode 'external': the in-cluster broker's address is its Service")
    try:
        port = int(values.get("port", 1883))
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(f"mqtt.port must be a TCP port, got {values.get('port')!r}")
    websockets = values.setdefault("websockets", mode == "in-cluster")
    if not isinstance(websockets, bool):
        raise ConfigError(f"mqtt.websockets must be true or false, got {websockets!r}")
    if websockets and mode != "in-cluster":
        raise ConfigError("mqtt.websockets is for the in-cluster broker (the Ingress routes /mqtt to it); an external "
                          "broker publishes its own WebSockets endpoint: set mqtt.websockets: false")
    values["port"] = port
    if mode == "in-cluster":
        check_pinned_image("mqtt.image", str(values.get("image", Mqtt.image)))
    return Mqtt(admin_password=cfg.require_secret("mqttAdminPassword"), **values)


def load(cfg: pulumi.Config | None = None) -> PlatformConfig:
    cfg = cfg or pulumi.Config(PROJECT)
    backends = cfg.get("backends") or "external"
    if backends not in BACKEND_MODES:
        raise ConfigError(f"backends must be one of {', '.join(BACKEND_MODES)}, got {backends!r}")
    replicas = {name: 1 for name in RUNTIME_SERVICES} | (cfg.get_object("replicas") or {})
    max_replicas = {name: max(replicas[name], 3) for name in AUTOSCALED} | (cfg.get_object("maxReplicas") or {})
    for name in AUTOSCALED:
        if max_replicas[name] < replicas[name]:
            raise ConfigError(f"maxReplicas.{name} ({max_replicas[name]}) is below replicas.{name} ({replicas[name]})")
    overrides = cfg.get_object("resources") or {}
    resources = {name: overrides.get(name, default) for name, default in DEFAULT_RESOURCES.items()}
    ingress = cfg.require_object("ingress")
    api_server = cfg.get_object("apiServer") or {}
    try:
        ingress_config = Ingress(
            class_name=ingress["className"], api_host=ingress["apiHost"],
            tls_secret_name=ingress["tlsSecretName"],
            controller_namespace=ingress.get("controllerNamespace", "ingress-nginx"),
            cluster_issuer=ingress.get("clusterIssuer"))
    except KeyError as missing:
        raise ConfigError(f"ingress.{missing.args[0]} is required: the platform is only served over TLS") from None
    crds_dir = cfg.get("crdsDir")
    trusted_proxies = cfg.get("trustedProxies") or ""
    try:
        networks = trusted_networks(trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"trustedProxies: {exc}") from None
    if not networks:
        raise ConfigError("trustedProxies is required: the ingress controller's pod addresses or CIDRs (e.g. "
                          "10.244.0.0/16), so the API's per-address limits see the clients, not the controller")
    quota = cfg.get_int("apiAnonymousQueriesPerHour")
    if quota is not None and quota < 0:
        raise ConfigError(f"apiAnonymousQueriesPerHour must be 0 (no limit) or positive, got {quota}")
    return PlatformConfig(
        operator_image=check_pinned_image("operatorImage", cfg.require("operatorImage")),
        runtime_image=check_pinned_image("runtimeImage", cfg.require("runtimeImage")),
        replicas=replicas,
        max_replicas=max_replicas,
        resources=resources,
        ingress=ingress_config,
        backends=backends,
        external=_external(cfg) if backends == "external" else None,
        in_cluster=_in_cluster(cfg) if backends == "in-cluster" else None,
        api_server_cidrs=tuple(api_server.get("cidrs", ["0.0.0.0/0"])),
        api_server_ports=tuple(int(port) for port in api_server.get("ports", [443, 6443])),
        monitoring_namespace=cfg.get("monitoringNamespace"),
        skip_await=cfg.get_bool("skipAwait") or False,
        crds_dir=Path(crds_dir).resolve() if crds_dir else _checkout_crds(),
        api_anonymous_queries_per_hour=quota,
        trusted_proxies=trusted_proxies,
        hub=_hub(cfg.get_object("hub") or {}),
        mail=_mail(cfg.get_object("mail")),
        mqtt=_mqtt(cfg),
    )
