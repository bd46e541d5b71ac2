"""One immutable settings object, built from ``URBANSTACK_*`` environment variables.

Every variable has a declared default (see ``FIELDS``); ``urbanstack settings``
prints the values in force, with passwords masked. The backends' credentials are
settings too (in a cluster they come from Kubernetes Secrets): the operator, the
sink and ingest read them only from here and never from the local platform's
files. A service that lacks its identity refuses to start and names the variables
to set (:class:`MissingSetting`); only the local development entry points
(``urbanstack serve``/``demo`` on the local platform) fill them in from
``urbanstack.devplatform``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
KAFKA_SECURITY_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
DRIFT_MODES = ("bulk", "per-tenant")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
MASK = "***"


class MissingSetting(ValueError):
    """A service started without a setting it cannot do without; the message names the variables."""


def _home(environ) -> Path:
    return Path(environ.get("HOME") or os.path.expanduser("~"))


@dataclass(frozen=True)
class Field:
    env: str
    default: str
    doc: str
    secret: bool = False


FIELDS: dict[str, Field] = {
    "state_dir": Field("URBANSTACK_STATE_DIR", "~/.local/state/urbanstack",
                       "Data, logs, pid files and generated credentials of the local platform."),
    "cache_dir": Field("URBANSTACK_CACHE_DIR", "~/.cache/urbanstack",
                       "Downloads and builds, keyed by version; shared by every checkout."),
    "warehouse_url": Field("URBANSTACK_WAREHOUSE_URL", "",
                           "ClickHouse server URL (http://user:pass@host:8123) or chdb://<path>; "
                           "empty means the embedded chDB under <state_dir>/warehouse."),
    # Ports stay below Linux's ephemeral range (32768+): a probe of a closed port
    # up there can connect to itself and look like a broken server.
    "etcd_port": Field("URBANSTACK_ETCD_PORT", "23790", "etcd client port (peer +10, metrics +20)."),
    "apiserver_port": Field("URBANSTACK_APISERVER_PORT", "16443", "kube-apiserver secure port."),
    "controller_manager_port": Field("URBANSTACK_CONTROLLER_MANAGER_PORT", "16444",
                                     "kube-controller-manager secure (health) port."),
    "kafka_port": Field("URBANSTACK_KAFKA_PORT", "19092", "Kafka SASL/SCRAM client listener."),
    "kafka_controller_port": Field("URBANSTACK_KAFKA_CONTROLLER_PORT", "19093", "Kafka KRaft controller listener."),
    "keycloak_port": Field("URBANSTACK_KEYCLOAK_PORT", "18080", "Keycloak HTTP port."),
    "keycloak_management_port": Field("URBANSTACK_KEYCLOAK_MANAGEMENT_PORT", "19000",
                                      "Keycloak management port (health endpoints)."),
    "postgres_port": Field("URBANSTACK_POSTGRES_PORT", "15432",
                           "Port of the local platform's PostgreSQL (its own cluster, not Debian's on 5432)."),
    "smtp_host": Field("URBANSTACK_SMTP_HOST", "",
                       "Mail relay for every e-mail the platform sends (Keycloak's invitations, signup "
                       "confirmations); empty means the local platform's SMTP server on 127.0.0.1."),
    "smtp_port": Field("URBANSTACK_SMTP_PORT", "11025",
                       "Port of the mail relay; on the local platform the port its SMTP server listens on."),
    "smtp_user": Field("URBANSTACK_SMTP_USER", "", "User of the mail relay (empty: no authentication)."),
    "smtp_password": Field("URBANSTACK_SMTP_PASSWORD", "", "Password of URBANSTACK_SMTP_USER.", secret=True),
    "smtp_from": Field("URBANSTACK_SMTP_FROM", "no-reply@urbanstack.localhost",
                       "Sender address of the platform's e-mail."),
    "smtp_starttls": Field("URBANSTACK_SMTP_STARTTLS", "0",
                           "1: upgrade the relay connection with STARTTLS (required before a password is sent to "
                           "a relay that is not on loopback)."),
    "municipality_directory": Field("URBANSTACK_MUNICIPALITY_DIRECTORY", "",
                                    "Destatis municipality directory (derived CSV: ags,ars,name,...,population); "
                                    "when set, an AGS must name a real Gemeinde. Empty: check the format only."),
    "district_directory": Field("URBANSTACK_DISTRICT_DIRECTORY", "",
                                "Names of the Kreise for the signup search: Destatis' GV-ISys workbook (the "
                                "AuszugGV…xlsx the municipality directory is derived from) or a CSV kreis,name; "
                                "empty: a Kreis is shown by its key."),
    "signup_retention_days": Field("URBANSTACK_SIGNUP_RETENTION_DAYS", "30",
                                   "Days after which the personal data of rejected or abandoned signup requests "
                                   "(never confirmed) is deleted."),
    "signup_secret": Field("URBANSTACK_SIGNUP_SECRET", "",
                           "Key that signs the signup form's proof-of-work challenges; empty: a random key per "
                           "process (challenges then do not survive a restart, and replicas must share one).",
                           secret=True),
    "ready_timeout": Field("URBANSTACK_READY_TIMEOUT", "240",
                           "Seconds to wait for one service to become ready before giving up."),
    "drift_interval": Field("URBANSTACK_DRIFT_INTERVAL", "60",
                            "Seconds between the operator's re-observations that repair drift."),
    "drift_mode": Field("URBANSTACK_DRIFT_MODE", "bulk",
                        "How the operator observes drift: 'bulk' (one listing per backend per interval for every "
                        "municipality, a reconcile only for those that differ) or 'per-tenant' (the previous "
                        "design: every municipality re-observes every backend on its own timer)."),
    "drift_audit_interval": Field("URBANSTACK_DRIFT_AUDIT_INTERVAL", "86400",
                                  "Seconds within which every municipality also gets a full re-observation of "
                                  "what the bulk listings cannot show (passwords, Keycloak roles and scope "
                                  "mappings, client secrets, members); spread over the drift sweeps; 0: never."),
    "kube_watch": Field("URBANSTACK_KUBE_WATCH", "1",
                        "1: the bulk drift sweep compares Kubernetes objects with a watch-fed cache (cluster-wide "
                        "list/watch of the operator's labelled non-Secret objects) and repairs a change it sees at "
                        "once; 0: it reads each tenant namespace's objects on every sweep (the previous design)."),
    "operator_workers": Field("URBANSTACK_OPERATOR_WORKERS", "6",
                              "Reconciles the operator runs at once (its work queue: changes first, then "
                              "creations, then drift repairs)."),
    "kafka_bootstrap_servers": Field("URBANSTACK_KAFKA_BOOTSTRAP", "",
                                     "Kafka bootstrap servers; empty means the local platform's broker."),
    "keycloak_server_url": Field("URBANSTACK_KEYCLOAK_URL", "",
                                 "Keycloak base URL; empty means the local platform's Keycloak."),
    "kafka_heap": Field("URBANSTACK_KAFKA_HEAP", "512m", "Kafka JVM maximum heap."),
    "keycloak_heap": Field("URBANSTACK_KEYCLOAK_HEAP", "768m", "Keycloak JVM maximum heap."),
    "api_anonymous_queries_per_hour": Field("URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR", "600",
                                            "API data queries per hour without a token (open data), per client "
                                            "IPv4 address or IPv6 /64, counted per API process; 0: no limit."),
    "trusted_proxies": Field("URBANSTACK_TRUSTED_PROXIES", "",
                             "Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For the HTTP "
                             "services believe (empty: none, the peer is the client); behind an ingress, the "
                             "controller's pod network, so per-address limits see the clients."),
    "kafka_security_protocol": Field("URBANSTACK_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT",
                                     "How every Kafka client connects: SASL_PLAINTEXT or SASL_SSL (SCRAM-SHA-512 "
                                     "either way)."),
    "kafka_ca_file": Field("URBANSTACK_KAFKA_CA_FILE", "",
                           "PEM file of the CA that signed the brokers' certificates (SASL_SSL); empty: the "
                           "system's CA store."),
    "kafka_admin_user": Field("URBANSTACK_KAFKA_ADMIN_USER", "",
                              "The operator's Kafka user (creates topics, tenant users and ACLs)."),
    "kafka_admin_password": Field("URBANSTACK_KAFKA_ADMIN_PASSWORD", "", "Password of URBANSTACK_KAFKA_ADMIN_USER.",
                                  secret=True),
    "sink_kafka_user": Field("URBANSTACK_SINK_KAFKA_USER", "",
                             "The sink's own Kafka user (describe, read and write topics, read groups)."),
    "sink_kafka_password": Field("URBANSTACK_SINK_KAFKA_PASSWORD", "", "Password of URBANSTACK_SINK_KAFKA_USER.",
                                 secret=True),
    "mqtt_host": Field("URBANSTACK_MQTT_HOST", "",
                       "MQTT broker (mosquitto with its dynamic-security plugin) that SensorThings subscribers "
                       "read new Observations from; empty means the local platform's on 127.0.0.1."),
    "mqtt_port": Field("URBANSTACK_MQTT_PORT", "11883",
                       "Port of the MQTT broker; on the local platform the port its mosquitto listens on."),
    "sta_url": Field("URBANSTACK_STA_URL", "",
                     "Public address of the SensorThings API (…/v1.1) for the @iot.selfLink of Observations "
                     "published over MQTT; empty means http://127.0.0.1:<URBANSTACK_HTTP_PORT>/v1.1."),
    "mqtt_admin_user": Field("URBANSTACK_MQTT_ADMIN_USER", "",
                             "The broker's dynamic-security admin: the operator provisions tenant clients and "
                             "roles as it, the sink publishes Observations and adds topic ACLs as it."),
    "mqtt_admin_password": Field("URBANSTACK_MQTT_ADMIN_PASSWORD", "", "Password of URBANSTACK_MQTT_ADMIN_USER.",
                                 secret=True),
    "keycloak_admin_user": Field("URBANSTACK_KEYCLOAK_ADMIN_USER", "",
                                 "The operator's Keycloak admin (realms, clients, users)."),
    "keycloak_admin_password": Field("URBANSTACK_KEYCLOAK_ADMIN_PASSWORD", "",
                                     "Password of URBANSTACK_KEYCLOAK_ADMIN_USER.", secret=True),
    "gov_hub_keycloak_user": Field("URBANSTACK_GOV_HUB_KEYCLOAK_USER", "",
                                   "The Gov Hub's own Keycloak identity: a confidential service-account client in "
                                   "the master realm (people management: users, role mappings, organization "
                                   "members of the tenants' realms it was granted)."),
    "gov_hub_keycloak_password": Field("URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD", "",
                                       "Client secret of URBANSTACK_GOV_HUB_KEYCLOAK_USER.", secret=True),
    "operator_kubeconfig": Field("URBANSTACK_OPERATOR_KUBECONFIG", "",
                                 "Outside a cluster: the operator's kubeconfig; empty means "
                                 "<state_dir>/kube/operator.kubeconfig. In a pod: its service account."),
    "runtime_kubeconfig": Field("URBANSTACK_RUNTIME_KUBECONFIG", "",
                                "Outside a cluster: the data plane's kubeconfig; empty means "
                                "<state_dir>/kube/runtime.kubeconfig. In a pod: its service account."),
    "govhub_kubeconfig": Field("URBANSTACK_GOVHUB_KUBECONFIG", "",
                               "Outside a cluster: the Gov Hub's kubeconfig (patches spec.tools and spec.shares); "
                               "empty means <state_dir>/kube/govhub.kubeconfig. In a pod: its service account."),
    "signup_kubeconfig": Field("URBANSTACK_SIGNUP_KUBECONFIG", "",
                               "Outside a cluster: the signup's kubeconfig (creates Municipalities on approval); "
                               "empty means <state_dir>/kube/signup.kubeconfig. In a pod: its service account."),
    "http_host": Field("URBANSTACK_HTTP_HOST", "127.0.0.1", "Address `serve`, `api`, `ingest` and `hub` listen on."),
    "http_port": Field("URBANSTACK_HTTP_PORT", "8080", "Port of `serve` and `api`."),
    "ingest_port": Field("URBANSTACK_INGEST_PORT", "8081", "Port of `ingest`."),
    "hub_port": Field("URBANSTACK_HUB_PORT", "8082", "Port of `hub` (the web pages: Gov Hub, published dashboards)."),
    "ingest": Field("URBANSTACK_INGEST", "1", "1: `serve` also mounts the push endpoints under /ingest and runs "
                    "the pull scheduler, and `serve` and `hub` offer the Gov Hub's upload page (it produces as the "
                    "municipality's own Kafka user); 0: none of these."),
    "ingest_pull": Field("URBANSTACK_INGEST_PULL", "1", "0: `ingest` serves push only, no pull scheduler."),
    "ingest_allow_private_sources": Field("URBANSTACK_INGEST_ALLOW_PRIVATE_SOURCES", "0",
                                          "1: pull sources may be on loopback or private addresses (a trusted "
                                          "municipal network, local tests)."),
    "metadata_url": Field("URBANSTACK_METADATA_URL", "",
                          "The hubs' metadata store (dashboards, sessions, audit): sqlite:///<path> or "
                          "postgresql+psycopg://user:pass@host:port/db; empty means "
                          "sqlite:///<state_dir>/metadata.sqlite3."),
    "metadata_migration_url": Field("URBANSTACK_METADATA_MIGRATION_URL", "",
                                    "Who runs the metadata store's migrations (on PostgreSQL the schema owner, "
                                    "while URBANSTACK_METADATA_URL is the application role); empty: the same "
                                    "as URBANSTACK_METADATA_URL."),
    "ingest_audience": Field("URBANSTACK_INGEST_AUDIENCE", "{tenant}-api",
                             "Client that tokens for the push endpoints must be issued for ({tenant}: the "
                             "municipality)."),
}


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    cache_dir: Path
    warehouse_url: str
    etcd_port: int
    apiserver_port: int
    controller_manager_port: int
    kafka_port: int
    kafka_controller_port: int
    keycloak_port: int
    keycloak_management_port: int
    municipality_directory: str
    ready_timeout: float
    drift_interval: float
    kafka_bootstrap_servers: str
    keycloak_server_url: str
    kafka_heap: str
    keycloak_heap: str
    api_anonymous_queries_per_hour: int = 600
    trusted_proxies: str = ""
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_ca_file: str = ""
    kafka_admin_user: str = ""
    kafka_admin_password: str = ""
    sink_kafka_user: str = ""
    sink_kafka_password: str = ""
    mqtt_host: str = ""
    mqtt_port: int = 11883
    sta_url: str = ""
    mqtt_admin_user: str = ""
    mqtt_admin_password: str = ""
    keycloak_admin_user: str = ""
    keycloak_admin_password: str = ""
    gov_hub_keycloak_user: str = ""
    gov_hub_keycloak_password: str = ""
    operator_kubeconfig: str = ""
    runtime_kubeconfig: str = ""
    govhub_kubeconfig: str = ""
    signup_kubeconfig: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ingest_port: int = 8081
    hub_port: int = 8082
    ingest: bool = True
    ingest_pull: bool = True
    ingest_allow_private_sources: bool = False
    ingest_audience: str = "{tenant}-api"
    postgres_port: int = 15432
    district_directory: str = ""
    signup_retention_days: int = 30
    signup_secret: str = ""
    smtp_host: str = ""
    smtp_port: int = 11025
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "no-reply@urbanstack.localhost"
    smtp_starttls: bool = False
    metadata_url: str = ""
    metadata_migration_url: str = ""
    drift_mode: str = "bulk"
    drift_audit_interval: float = 86400.0
    kube_watch: bool = True
    operator_workers: int = 6

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            spec = FIELDS[field.name]
            raw = environ.get(spec.env, spec.default)
            try:
                if field.type in ("Path",):
                    values[field.name] = Path(raw.replace("~", str(_home(environ)), 1) if raw.startswith("~") else raw).resolve()
                elif field.type == "int":
                    values[field.name] = int(raw)
                elif field.type == "float":
                    values[field.name] = float(raw)
                elif field.type == "bool":
                    values[field.name] = _flag(spec.env, raw)
                else:
                    values[field.name] = raw
            except ValueError:
                if field.type == "bool":
                    raise
                raise ValueError(f"{spec.env} must be a number, got {raw!r}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(f"URBANSTACK_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
                             f"got {settings.kafka_security_protocol!r}")
        if settings.kafka_ca_file and settings.kafka_security_protocol != "SASL_SSL":
            raise ValueError("URBANSTACK_KAFKA_CA_FILE is set but URBANSTACK_KAFKA_SECURITY_PROTOCOL is "
                             f"{settings.kafka_security_protocol}; set it to SASL_SSL or unset the CA file")
        if settings.drift_mode not in DRIFT_MODES:
            raise ValueError(f"URBANSTACK_DRIFT_MODE must be one of {', '.join(DRIFT_MODES)}, got {settings.drift_mode!r}")
        if settings.operator_workers < 1:
            raise ValueError(f"URBANSTACK_OPERATOR_WORKERS must be at least 1, got {settings.operator_workers}")
        settings.trusted_networks  # noqa: B018 - refuse a bad proxy list at start, not at the first request
        if not settings.warehouse_url:
            settings = dataclasses.replace(settings, warehouse_url=f"chdb://{settings.state_dir / 'warehouse'}")
        if not settings.metadata_url:
            settings = dataclasses.replace(settings,
                                           metadata_url=f"sqlite:///{settings.state_dir / 'metadata.sqlite3'}")
        return settings

    def __repr__(self) -> str:  # passwords never reach a log line, not even by accident
        return f"Settings({', '.join(f'{name}={shown(self, name)!r}' for name in FIELDS)})"

    # Derived locations -------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kube" / "admin.kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def keycloak_url(self) -> str:
        return (self.keycloak_server_url or f"http://127.0.0.1:{self.keycloak_port}").rstrip("/")

    @property
    def smtp_server(self) -> str:
        """Host of the mail relay: the configured one, or the local platform's on loopback."""
        return self.smtp_host or "127.0.0.1"

    @property
    def mail_dir(self) -> Path:
        """Where the local platform's SMTP server keeps every message (one .eml file each)."""
        return self.state_dir / "mail"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return trusted_networks(self.trusted_proxies)

    # Credentials -------------------------------------------------------
    def kafka_config(self, username: str, password: str) -> dict[str, str]:
        """confluent-kafka settings for one SCRAM identity; every Kafka client is built here."""
        config = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": KAFKA_SASL_MECHANISM,
            "sasl.username": username,
            "sasl.password": password,
        }
        if self.kafka_security_protocol == "SASL_SSL":
            # librdkafka's "probe" looks in the usual system CA locations.
            config["ssl.ca.location"] = self.kafka_ca_file or "probe"
        return config

    def kafka_admin_config(self) -> dict[str, str]:
        """The operator's Kafka identity."""
        return self.kafka_config(*self._identity("kafka_admin", "the operator creates topics, users and ACLs as it"))

    def sink_kafka_config(self) -> dict[str, str]:
        """The sink's Kafka identity."""
        return self.kafka_config(*self._identity("sink_kafka", "the sink consumes tenant topics and writes the "
                                                               "DLQ as it"))

    def keycloak_admin(self) -> tuple[str, str]:
        """The operator's Keycloak admin (user, password)."""
        return self._identity("keycloak_admin", "the operator manages realms, clients and users as it")

    def mqtt_admin(self) -> tuple[str, str]:
        """The MQTT broker's dynamic-security admin (user, password)."""
        return self._identity("mqtt_admin", "the operator provisions MQTT clients and the sink publishes as it")

    @property
    def sta_base(self) -> str:
        """Where the SensorThings API is reached from outside, without a trailing slash."""
        return (self.sta_url or f"http://127.0.0.1:{self.http_port}/v1.1").rstrip("/")

    @property
    def mqtt_server(self) -> str:
        """Host of the MQTT broker: the configured one, or the local platform's on loopback."""
        return self.mqtt_host or "127.0.0.1"

    def gov_hub_keycloak(self) -> tuple[str, str]:
        """The Gov Hub's Keycloak service-account client (client id, secret)."""
        return self._identity("gov_hub_keycloak", "the Gov Hub manages a municipality's people as it")

    def _identity(self, prefix: str, purpose: str) -> tuple[str, str]:
        user, password = getattr(self, f"{prefix}_user"), getattr(self, f"{prefix}_password")
        missing = [FIELDS[name].env for name, value in ((f"{prefix}_user", user), (f"{prefix}_password", password))
                   if not value]
        if missing:
            raise MissingSetting(f"set {' and '.join(missing)}: {purpose} (in a cluster from a Secret; on the local "
                                 f"platform `urbanstack serve` fills it in)")
        return user, password


def trusted_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``URBANSTACK_TRUSTED_PROXIES`` as networks (a bare address is a /32 or /128)."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"URBANSTACK_TRUSTED_PROXIES: {item!r} is not an address or CIDR (e.g. 10.0.0.7 or "
                             f"10.244.0.0/16); '*' is not accepted, since trusting every peer lets any client "
                             f"choose its own address") from None
    return tuple(networks)


def _flag(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"{variable} must be 1 or 0, got {raw!r}")


_URLS_WITH_PASSWORDS = ("warehouse_url", "metadata_url", "metadata_migration_url")


def shown(settings: Settings, name: str) -> str:
    """A setting's value as logs and ``urbanstack settings`` may show it: passwords masked,
    also inside a warehouse URL."""
    from urbanstack import warehouse

    value = getattr(settings, name)
    if FIELDS[name].secret:
        return MASK if value else ""
    return warehouse.redact(value) if name in _URLS_WITH_PASSWORDS else str(value)


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value in force, meaning) for every setting; passwords masked."""
    return [(spec.env, shown(settings, name), spec.doc) for name, spec in FIELDS.items()]
