"""Keycloak, Kafka and ClickHouse: external services, or in-cluster through their operators.

Either way the result is the same ``Backend`` wiring: environment variables
(credentials only as ``secretKeyRef``), and the network peers and ports that
the NetworkPolicies open for the components that use the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import ConfigMap, Secret

from urbanstack import keycloak_theme
from urbanstack.runtime.hubs.signup import ops_auth
from urbanstack.stacks.platform import common
from urbanstack.stacks.platform.config import NAMESPACE, ConfigError, PlatformConfig

ANYWHERE = ({"ipBlock": {"cidr": "0.0.0.0/0"}},)

# Which component talks to which backend; NetworkPolicies open nothing else.
# The API reads the warehouse, never Kafka; ingest (the connectors Deployment)
# checks tokens against Keycloak and produces to Kafka, never touches the warehouse.
# The hub queries the warehouse (through the API's engine), signs people in and manages
# them in Keycloak, and its upload page produces to Kafka as the municipality's user.
USERS = {
    "kafka": ("operator", "sink", "connectors", "hub"),
    "keycloak": ("operator", "api", "connectors", "hub"),
    "warehouse": ("operator", "api", "sink", "hub"),
    # Optional (stack config ``mqtt``): the operator provisions broker clients, the sink publishes.
    "mqtt": ("operator", "sink"),
}

KEYCLOAK_NAME = "urbanstack-keycloak"
PLATFORM_REALM_IMPORT = "urbanstack-platform-realm"
KAFKA_CLUSTER = "urbanstack"
KAFKA_USER = "urbanstack-platform"
KAFKA_RUNTIME_USER = "urbanstack-runtime"
# Metering (docs/metering.md): the same names as runtime/metering (emitter.METER_TOPIC, identities.*).
METER_TOPIC = "_urbanstack-meter"
METER_GROUP = "urbanstack-metering"
METER_WRITER = "urbanstack-meter-writer"
METER_READER = "urbanstack-meter-reader"
METER_RETENTION_MS = 90 * 24 * 3600 * 1000
CLICKHOUSE_NAME = "urbanstack"
CLICKHOUSE_USER = "urbanstack"
EXTERNAL_SECRET = "urbanstack-backends"
WAREHOUSE_SECRET = "urbanstack-warehouse"
KEYCLOAK_DB_SECRET = "urbanstack-keycloak-db"
KAFKA_CA_CONFIGMAP = "urbanstack-kafka-ca"
KAFKA_CA_DIR = "/etc/urbanstack/kafka-ca"


@dataclass(frozen=True)
class Backend:
    name: str
    # Where the backend is, for every component that uses it.
    env: tuple[dict, ...]
    # The runtime services' credentials.
    client_env: tuple[dict, ...]
    # Only the operator administers a backend (realms, topics, databases).
    admin_env: tuple[dict, ...]
    peers: tuple[dict, ...]
    ports: tuple[int, ...]
    # In-cluster only: the backend's own pods, which the default deny also covers.
    pod_selector: dict | None = None
    operator_namespace: str | None = None
    extra_egress: tuple[dict, ...] = ()
    # Users' browsers reach it through the platform's Ingress (Keycloak's login pages).
    public_host: str | None = None
    public_service: str | None = None
    # Files every user of the backend mounts (the Kafka brokers' CA).
    volumes: tuple[dict, ...] = ()
    mounts: tuple[dict, ...] = ()
    # Ports the platform's Ingress routes to on its own host (the broker's WebSockets listener).
    public_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Backends:
    by_name: dict[str, Backend]
    resources: tuple[pulumi.Resource, ...]

    def env_for(self, component: str) -> list[dict]:
        env = []
        for backend_name, users in USERS.items():
            if component in users and backend_name in self.by_name:
                backend = self.by_name[backend_name]
                env += backend.env
                if component == "operator":
                    env += backend.admin_env
                elif backend_name not in ("kafka", "mqtt") or component == "sink":
                    # Of the Kafka users only the sink logs in as the platform: ingest produces
                    # as each municipality's own Kafka user (runtime/ingest/tenants.py).
                    env += backend.client_env
        return env

    def _used_by(self, component: str) -> list[Backend]:
        return [self.by_name[name] for name, users in USERS.items() if component in users and name in self.by_name]

    def volumes_for(self, component: str) -> list[dict]:
        return [volume for backend in self._used_by(component) for volume in backend.volumes]

    def mounts_for(self, component: str) -> list[dict]:
        return [mount for backend in self._used_by(component) for mount in backend.mounts]


def _kafka_admin_env(user: str, secret: str, key: str) -> tuple[dict, ...]:
    return (common.env_value("URBANSTACK_KAFKA_ADMIN_USER", user),
            common.env_secret("URBANSTACK_KAFKA_ADMIN_PASSWORD", secret, key))


def _kafka_sink_env(user: str, secret: str, key: str) -> tuple[dict, ...]:
    # runtime/sink.py kafka_client_config: the sink's own Kafka identity.
    return (common.env_value("URBANSTACK_SINK_KAFKA_USER", user),
            common.env_secret("URBANSTACK_SINK_KAFKA_PASSWORD", secret, key))


def warehouse_url(url: str, user: str, password: pulumi.Output) -> pulumi.Output:
    """The ClickHouse server URL with user:password, as a Pulumi secret for a Secret's data.

    The code reads one variable, URBANSTACK_WAREHOUSE_URL (``urbanstack.settings``),
    so the whole URL lives in a Secret. User and password are percent-encoded
    (clickhouse-connect decodes them), so any password character is safe."""
    parts = urlsplit(url)
    return pulumi.Output.secret(password).apply(lambda secret: urlunsplit(parts._replace(
        netloc=f"{quote(user, safe='')}:{quote(secret, safe='')}@{parts.netloc}")))


def _warehouse_env(secret: str, key: str) -> tuple[dict, ...]:
    # Never the embedded chDB in a cluster: one process may own its path, and
    # api, sink and operator are separate pods.
    return (common.env_secret("URBANSTACK_WAREHOUSE_URL", secret, key),)


def _external(cfg: PlatformConfig, after: list[pulumi.Resource]) -> Backends:
    ext = cfg.external
    assert ext is not None
    secret = Secret(
        EXTERNAL_SECRET,
        metadata=common.metadata(cfg, EXTERNAL_SECRET, "backends"),
        type="Opaque",
        string_data={"kafka-password": ext.kafka_password, "keycloak-admin-password": ext.keycloak_admin_password,
                     "warehouse-url": warehouse_url(ext.warehouse_url, ext.warehouse_user, ext.warehouse_password)},
        opts=common.options(depends_on=after),
    )
    # The operator administers Kafka as the configured user; with external backends the
    # sink uses the same user (docs/deploy.md): one set of Kafka credentials to configure.
    kafka_admin = _kafka_admin_env(ext.kafka_username, EXTERNAL_SECRET, "kafka-password")
    kafka_sink = _kafka_sink_env(ext.kafka_username, EXTERNAL_SECRET, "kafka-password")
    warehouse_env = _warehouse_env(EXTERNAL_SECRET, "warehouse-url")
    kafka_env = [common.env_value("URBANSTACK_KAFKA_BOOTSTRAP", ext.kafka_bootstrap),
                 common.env_value("URBANSTACK_KAFKA_SECURITY_PROTOCOL", ext.kafka_security_protocol)]
    resources: list[pulumi.Resource] = [secret]
    volumes, mounts = (), ()
    if ext.kafka_ca_certificate:
        # A CA certificate is public: a ConfigMap, mounted read-only where Kafka clients run.
        resources.append(ConfigMap(KAFKA_CA_CONFIGMAP, metadata=common.metadata(cfg, KAFKA_CA_CONFIGMAP, "backends"),
                                   data={"ca.crt": ext.kafka_ca_certificate}, opts=common.options(depends_on=after)))
        kafka_env.append(common.env_value("URBANSTACK_KAFKA_CA_FILE", f"{KAFKA_CA_DIR}/ca.crt"))
        volumes = ({"name": "kafka-ca", "configMap": {"name": KAFKA_CA_CONFIGMAP}},)
        mounts = ({"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True},)
    by_name = {
        "kafka": Backend(
            "kafka", env=tuple(kafka_env),
            client_env=kafka_sink, admin_env=kafka_admin, peers=ANYWHERE, ports=ext.kafka_ports,
            volumes=volumes, mounts=mounts),
        "keycloak": Backend(
            "keycloak",
            env=(common.env_value("URBANSTACK_KEYCLOAK_URL", ext.keycloak_url),),
            client_env=(),
            admin_env=(common.env_value("URBANSTACK_KEYCLOAK_ADMIN_USER", ext.keycloak_admin_user),
                       common.env_secret("URBANSTACK_KEYCLOAK_ADMIN_PASSWORD", EXTERNAL_SECRET,
                                         "keycloak-admin-password")),
            peers=ANYWHERE, ports=(ext.keycloak_port,)),
        "warehouse": Backend("warehouse", env=(), client_env=warehouse_env, admin_env=warehouse_env,
                             peers=ANYWHERE, ports=(ext.warehouse_port,)),
    }
    return Backends(by_name, tuple(resources))


def _custom(cfg: PlatformConfig, api_version: str, kind: str, object_name: str, spec: dict, *,
            depends_on: list[pulumi.Resource], labels: dict | None = None,
            annotations: dict | None = None) -> CustomResource:
    meta = common.metadata(cfg, object_name, "backends", annotations=annotations)
    meta["labels"] |= labels or {}
    return CustomResource(f"{kind.lower()}-{object_name}", api_version=api_version, kind=kind, metadata=meta,
                          spec=spec, opts=common.options(depends_on=depends_on))


def _realm_smtp(cfg: PlatformConfig) -> dict | None:
    """The platform realm's smtpServer from the stack's mail relay (None: none configured)."""
    from urbanstack.operator.plan import RealmMail

    mail = cfg.mail
    if mail is None:
        return None
    value = RealmMail(host=mail.host, port=mail.port, from_address=mail.from_address, user=mail.user,
                      starttls=mail.starttls).realm_value()
    if mail.password_secret:
        value["password"] = "${URBANSTACK_SMTP_PASSWORD}"
    return value


def _theme_key(path: str) -> str:
    """A ConfigMap key for a theme file (keys may not contain ``/``)."""
    return path.replace("/", "__")


def _keycloak(cfg: PlatformConfig, after: list[pulumi.Resource]) -> tuple[Backend, list[pulumi.Resource]]:
    ic = cfg.in_cluster
    assert ic is not None
    db = ic.keycloak_database
    db_secret = Secret(KEYCLOAK_DB_SECRET, metadata=common.metadata(cfg, KEYCLOAK_DB_SECRET, "backends"),
                       type="Opaque", string_data={"username": db.username, "password": db.password},
                       opts=common.options(depends_on=after))
    theme, theme_map = keycloak_theme.name(), f"{KEYCLOAK_NAME}-login-theme"
    # Our login theme (urbanstack.keycloak_theme) from a ConfigMap, mounted at its content-hashed
    # name: a changed theme is a new folder (and a rolled pod), never a stale cache.
    theme_files = ConfigMap(theme_map, metadata=common.metadata(cfg, theme_map, "backends"),
                            data={_theme_key(path): content.decode() for path, content in keycloak_theme.files().items()},
                            opts=common.options(depends_on=after))
    keycloak = _custom(cfg, "k8s.keycloak.org/v2alpha1", "Keycloak", KEYCLOAK_NAME, {
        "instances": ic.keycloak_instances,
        "db": {"vendor": "postgres", "host": db.host, "database": db.database,
               "usernameSecret": {"name": KEYCLOAK_DB_SECRET, "key": "username"},
               "passwordSecret": {"name": KEYCLOAK_DB_SECRET, "key": "password"}},
        # TLS ends at the ingress; inside the cluster the NetworkPolicies fence Keycloak in.
        "http": {"httpEnabled": True},
        "hostname": {"hostname": f"https://{ic.keycloak_hostname}"},
        "proxy": {"headers": "xforwarded"},
        # The platform's Ingress routes the hostname, with the platform's TLS settings.
        "ingress": {"enabled": False},
        "unsupported": {"podTemplate": {"spec": {
            "volumes": [{"name": "login-theme", "configMap": {"name": theme_map, "items": [
                {"key": _theme_key(path), "path": path} for path in keycloak_theme.files()]}}],
            "containers": [{"volumeMounts": [{"name": "login-theme", "mountPath": f"/opt/keycloak/themes/{theme}",
                                              "readOnly": True}]}],
        }}},
    }, depends_on=[*after, db_secret, theme_files])
    # The platform's own realm (ops console, role platform-admin), imported once by the Keycloak
    # operator; the tenants' realms are the Urban Stack operator's. People are added by hand.
    platform_realm = _custom(cfg, "k8s.keycloak.org/v2alpha1", "KeycloakRealmImport", PLATFORM_REALM_IMPORT, {
        "keycloakCRName": KEYCLOAK_NAME,
        "realm": ops_auth.platform_realm_import([f"https://{cfg.ingress.api_host}/ops/*"], smtp=_realm_smtp(cfg)),
        # The relay's password reaches the import only from its Secret (Keycloak's placeholders).
        **({"placeholders": {"URBANSTACK_SMTP_PASSWORD": {"secret": {
            "name": cfg.mail.password_secret, "key": cfg.mail.password_secret_key}}}}
           if cfg.mail and cfg.mail.password_secret else {}),
    }, depends_on=[keycloak])
    # The Keycloak operator generates the bootstrap admin into <name>-initial-admin.
    admin_secret = f"{KEYCLOAK_NAME}-initial-admin"
    backend = Backend(
        "keycloak",
        env=(common.env_value("URBANSTACK_KEYCLOAK_URL", f"http://{KEYCLOAK_NAME}-service.{NAMESPACE}.svc:8080"),),
        client_env=(),
        admin_env=(common.env_secret("URBANSTACK_KEYCLOAK_ADMIN_USER", admin_secret, "username"),
                   common.env_secret("URBANSTACK_KEYCLOAK_ADMIN_PASSWORD", admin_secret, "password")),
        peers=({"podSelector": {"matchLabels": {"app": "keycloak", "app.kubernetes.io/instance": KEYCLOAK_NAME}}},),
        ports=(8080,),
        pod_selector={"app": "keycloak", "app.kubernetes.io/instance": KEYCLOAK_NAME},
        operator_namespace=ic.keycloak_operator_namespace,
        extra_egress=({"to": list(ANYWHERE), "ports": [{"protocol": "TCP", "port": 5432}]},),
        public_host=ic.keycloak_hostname,
        public_service=f"{KEYCLOAK_NAME}-service",
    )
    return backend, [db_secret, theme_files, keycloak, platform_realm]


def _kafka(cfg: PlatformConfig, after: list[pulumi.Resource]) -> tuple[Backend, list[pulumi.Resource]]:
    ic = cfg.in_cluster
    assert ic is not None
    cluster_label = {"strimzi.io/cluster": KAFKA_CLUSTER}
    replication = min(3, ic.kafka_replicas)
    pool = _custom(cfg, "kafka.strimzi.io/v1beta2", "KafkaNodePool", f"{KAFKA_CLUSTER}-dual-role", {
        # KRaft: every node is controller and broker; the metadata log shares the data volume.
        "replicas": ic.kafka_replicas,
        "roles": ["controller", "broker"],
        "storage": {"type": "jbod", "volumes": [{"id": 0, "type": "persistent-claim", "size": ic.kafka_storage,
                                                 "deleteClaim": False, "kraftMetadata": "shared"}]},
    }, labels=cluster_label, depends_on=after)
    kafka = _custom(cfg, "kafka.strimzi.io/v1beta2", "Kafka", KAFKA_CLUSTER, {
        "kafka": {
            "version": ic.kafka_version,
            "listeners": [{"name": "scram", "port": 9092, "type": "internal", "tls": False,
                           "authentication": {"type": "scram-sha-512"}}],
            # The operator creates tenant users, topics and ACLs, so the platform user is a super user.
            "authorization": {"type": "simple", "superUsers": [f"User:{KAFKA_USER}"]},
            "config": {"offsets.topic.replication.factor": replication,
                       "transaction.state.log.replication.factor": replication,
                       "transaction.state.log.min.isr": max(1, replication - 1),
                       "default.replication.factor": replication,
                       "min.insync.replicas": max(1, replication - 1)},
        },
        "entityOperator": {"userOperator": {}},
    }, annotations={"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}, depends_on=[*after, pool])
    # Strimzi's user operator generates each password into a Secret named like the user.
    admin = _custom(cfg, "kafka.strimzi.io/v1beta2", "KafkaUser", KAFKA_USER,
                    {"authentication": {"type": "scram-sha-512"}}, labels=cluster_label, depends_on=[*after, kafka])
    # The sink's identity: read and write events (DLQ), no topic, user or ACL administration.
    runtime = _custom(cfg, "kafka.strimzi.io/v1beta2", "KafkaUser", KAFKA_RUNTIME_USER, {
        "authentication": {"type": "scram-sha-512"},
        "authorization": {"type": "simple", "acls": [
            {"resource": {"type": "topic", "name": "*", "patternType": "literal"},
             "operations": ["Describe", "Read", "Write"]},
            {"resource": {"type": "group", "name": "*", "patternType": "literal"}, "operations": ["Describe", "Read"]},
        ]},
    }, labels=cluster_label, depends_on=[*after, kafka])
    kafka_admin = _kafka_admin_env(KAFKA_USER, KAFKA_USER, "password")
    backend = Backend(
        "kafka",
        env=(common.env_value("URBANSTACK_KAFKA_BOOTSTRAP", f"{KAFKA_CLUSTER}-kafka-bootstrap.{NAMESPACE}.svc:9092"),),
        client_env=_kafka_sink_env(KAFKA_RUNTIME_USER, KAFKA_RUNTIME_USER, "password"),
        admin_env=kafka_admin,
        peers=({"podSelector": {"matchLabels": cluster_label | {"strimzi.io/broker-role": "true"}}},),
        ports=(9092,),
        pod_selector=cluster_label,
        operator_namespace=ic.strimzi_operator_namespace,
        # The entity operator reconciles KafkaUsers through the API server.
        extra_egress=({"to": [{"ipBlock": {"cidr": cidr}} for cidr in cfg.api_server_cidrs],
                       "ports": [{"protocol": "TCP", "port": port} for port in cfg.api_server_ports]},),
    )
    meter = _meter_topic_and_users(cfg, cluster_label, replication, after=[*after, kafka])
    return backend, [pool, kafka, admin, runtime, *meter]


def _meter_topic_and_users(cfg: PlatformConfig, cluster_label: dict, replication: int, *,
                           after: list[pulumi.Resource]) -> list[pulumi.Resource]:
    """The meter topic (Kubernetes names cannot start with "_": topicName carries it) and two
    identities: the writer may only write it, the reader only read it in the metering group."""
    topic = _custom(cfg, "kafka.strimzi.io/v1beta2", "KafkaTopic", "urbanstack-meter", {
        "topicName": METER_TOPIC, "partitions": 6, "replicas": replication,
        "config": {"retention.ms": METER_RETENTION_MS, "cleanup.policy": "delete"},
    }, labels=cluster_label, depends_on=after)

    def user(name: str, acls: list[dict]) -> pulumi.Resource:
        return _custom(cfg, "kafka.strimzi.io/v1beta2", "KafkaUser", name, {
            "authentication": {"type": "scram-sha-512"}, "authorization": {"type": "simple", "acls": acls},
        }, labels=cluster_label, depends_on=after)

    literal_topic = {"type": "topic", "name": METER_TOPIC, "patternType": "literal"}
    writer = user(METER_WRITER, [{"resource": literal_topic, "operations": ["Describe", "Write"]}])
    reader = user(METER_READER, [{"resource": literal_topic, "operations": ["Describe", "Read"]},
                                 {"resource": {"type": "group", "name": METER_GROUP, "patternType": "literal"},
                                  "operations": ["Read"]}])
    return [topic, writer, reader]


def _clickhouse(cfg: PlatformConfig, after: list[pulumi.Resource]) -> tuple[Backend, list[pulumi.Resource]]:
    ic = cfg.in_cluster
    assert ic is not None
    if ic.clickhouse_replicas != 1:
        raise ConfigError("inCluster.clickhouseReplicas > 1 needs ClickHouse Keeper, which this stack does not "
                          "declare yet; use 1, or an external warehouse")
    server = f"http://clickhouse-{CLICKHOUSE_NAME}.{NAMESPACE}.svc:8123"
    secret = Secret(WAREHOUSE_SECRET, metadata=common.metadata(cfg, WAREHOUSE_SECRET, "backends"), type="Opaque",
                    string_data={"password": ic.warehouse_password,
                                 "url": warehouse_url(server, CLICKHOUSE_USER, ic.warehouse_password)},
                    opts=common.options(depends_on=after))
    chi = _custom(cfg, "clickhouse.altinity.com/v1", "ClickHouseInstallation", CLICKHOUSE_NAME, {
        "configuration": {
            "users": {
                f"{CLICKHOUSE_USER}/k8s_secret_password": f"{NAMESPACE}/{WAREHOUSE_SECRET}/password",
                f"{CLICKHOUSE_USER}/networks/ip": ["0.0.0.0/0", "::/0"],
                # The operator creates per-tenant users, roles, grants and quotas with SQL.
                f"{CLICKHOUSE_USER}/access_management": 1,
            },
            "clusters": [{"name": "main", "layout": {"shardsCount": 1, "replicasCount": ic.clickhouse_replicas},
                          "templates": {"dataVolumeClaimTemplate": "data"}}],
        },
        "templates": {"volumeClaimTemplates": [{
            "name": "data",
            # Keep the data when the installation is deleted; deletionPolicy decides about tenants.
            "reclaimPolicy": "Retain",
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": ic.clickhouse_storage}}},
        }]},
    }, depends_on=[*after, secret])
    selector = {"clickhouse.altinity.com/chi": CLICKHOUSE_NAME}
    warehouse_env = _warehouse_env(WAREHOUSE_SECRET, "url")
    backend = Backend(
        "warehouse",
        env=(),
        client_env=warehouse_env,
        admin_env=warehouse_env,
        peers=({"podSelector": {"matchLabels": selector}},),
        ports=(8123,),
        pod_selector=selector,
        operator_namespace=ic.clickhouse_operator_namespace,
    )
    return backend, [secret, chi]


def install(cfg: PlatformConfig, *, after: list[pulumi.Resource]) -> Backends:
    """``after``: what every namespaced object waits for (the namespace)."""
    if cfg.backends == "external":
        wired = _external(cfg, after)
        by_name, resources = dict(wired.by_name), list(wired.resources)
    else:
        by_name, resources = {}, []
        for build in (_keycloak, _kafka, _clickhouse):
            backend, declared = build(cfg, after)
            by_name[backend.name] = backend
            resources += declared
    if cfg.mqtt is not None:
        from urbanstack.stacks.platform import messaging

        wiring, declared = messaging.install(cfg, after)
        by_name["mqtt"] = Backend("mqtt", **wiring)
        resources += declared
    return Backends(by_name, tuple(resources))
