"""Apache Kafka in KRaft mode from Maven Central jars.

The client listener speaks SASL/SCRAM-SHA-512 and the StandardAuthorizer is on,
so per-tenant users and ACLs are the real thing. The controller listener uses
SASL/PLAIN with the same admin (SCRAM cannot authenticate controllers). The
admin's SCRAM credential is written at storage-format time, before the broker
first starts, so there is never an unauthenticated listener.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from urbanstack import versions
from urbanstack.settings import KAFKA_SASL_MECHANISM
from urbanstack.devplatform import maven, secrets
from urbanstack.devplatform.progress import Step
from urbanstack.devplatform.service import Service, port_open

ADMIN_USER = "admin"
MECHANISM = KAFKA_SASL_MECHANISM

_LOG4J = """status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.stdout.type = Console
appender.stdout.name = stdout
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = file, stdout
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.stdout.ref = stdout
rootLogger.appenderRef.stdout.level = WARN
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


_SNAPSHOT_INTERVAL = "metadata.log.max.snapshot.interval.ms"
# Written by "StorageTool format --standalone"; holds only the voter set, not the admin credential.
_BOOTSTRAP_SNAPSHOT = "00000000000000000000-0000000000.checkpoint"

_ADMIN_LOST = (
    "Kafka is running but rejects the platform admin's SCRAM credential; most likely its metadata lost the "
    "admin (a Kafka 4.1 bug when a restart replays a metadata log without snapshot in which SCRAM users were "
    "deleted). Such Kafka data cannot be repaired; run `urbanstack dev down`, delete {data} (Kafka topics, "
    "users and ACLs are lost) and run `urbanstack dev up` again, which re-formats it."
)


def lib_dir(cache_dir: Path) -> Path:
    return cache_dir / "kafka" / versions.KAFKA / "lib"


def admin_password(settings) -> str:
    return secrets.get_or_create(settings.secrets_dir, "kafka-admin-password")


def admin_config(settings) -> dict[str, str]:
    """confluent-kafka configuration for the platform's Kafka super user."""
    return client_config(settings, ADMIN_USER, admin_password(settings))


def client_config(settings, username: str, password: str) -> dict[str, str]:
    return settings.kafka_config(username, password)


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise RuntimeError("Kafka needs Java 17+; install a JDK (apt-get install default-jdk-headless)")
    return java


class Kafka(Service):
    name = "kafka"

    @property
    def home(self) -> Path:
        return self.settings.state_dir / "kafka"

    def install(self) -> None:
        lib = lib_dir(self.settings.cache_dir)
        if lib.is_dir() and any(lib.glob("kafka_*.jar")):
            return
        coords = [
            f"org.apache.kafka:kafka_{versions.KAFKA_SCALA}:{versions.KAFKA}",
            f"org.apache.logging.log4j:log4j-core:{versions.LOG4J}",
            # Kafka 4.1 pulls slf4j-api 1.7.x, whose log4j binding is log4j-slf4j-impl.
            f"org.apache.logging.log4j:log4j-slf4j-impl:{versions.LOG4J}",
        ]
        with Step(f"Kafka {versions.KAFKA}: resolving jars from Maven Central"):
            maven.copy_dependencies(lib.parent / "resolve", coords, lib)

    def _properties(self) -> str:
        s = self.settings
        password = admin_password(s)
        plain_jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                      f'username="{ADMIN_USER}" password="{password}" user_{ADMIN_USER}="{password}";')
        scram_jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                      f'username="{ADMIN_USER}" password="{password}";')
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{s.kafka_controller_port}",
            "listeners": f"CLIENT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{s.kafka_port}",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain_jaas,
            "listener.name.client.scram-sha-512.sasl.jaas.config": scram_jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER}",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "60000",
            # Kafka 4.1's ScramDelta.apply() drops a mechanism's whole user map as soon as a deletion
            # leaves it empty, so rebuilding the metadata image from a snapshot-less log that deleted
            # any SCRAM user can silently lose the admin credential (written at offset 8 by format):
            # after a restart every login then fails with "invalid credentials". Once a snapshot that
            # holds the admin exists, restarts load it first and are safe. The default snapshot interval
            # is an hour; take one every few seconds (ready() waits for the first) and keep few of them.
            _SNAPSHOT_INTERVAL: "5000",
            "metadata.max.retention.ms": "300000",
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def prepare(self) -> None:
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)  # server.properties holds the admin password
        config = home / "server.properties"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._properties())
        (home / "log4j2.properties").write_text(_LOG4J.format(log_dir=self.settings.logs_dir / "kafka"))
        if (home / "data" / "meta.properties").exists():
            return
        cluster_id_file = home / "cluster-id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_cluster_id())
        scram = f"{MECHANISM}=[name={ADMIN_USER},password={admin_password(self.settings)}]"
        cmd = self._java_command("kafka.tools.StorageTool") + [
            "format", "-t", cluster_id_file.read_text().strip(), "-c", str(config),
            "--standalone", "--ignore-formatted", "--add-scram", scram,
        ]
        with Step("Kafka: formatting KRaft storage"):
            result = subprocess.run(cmd, capture_output=True, text=True, env=self._env())
        if result.returncode != 0:
            # Never echo the command: it carries the admin credential.
            raise RuntimeError(f"formatting Kafka storage failed: {result.stdout[-800:]} {result.stderr[-800:]}"
                               .replace(admin_password(self.settings), "***"))

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _java_command(self, main_class: str) -> list[str]:
        s = self.settings
        (s.logs_dir / "kafka").mkdir(parents=True, exist_ok=True)
        return [
            _java(), f"-Xmx{s.kafka_heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={s.logs_dir / 'kafka'}",
            "-cp", str(lib_dir(s.cache_dir) / "*"), main_class,
        ]

    def command(self):
        return self._java_command("kafka.Kafka") + [str(self.home / "server.properties")], self._env()

    def ready(self) -> bool:
        if not port_open(self.settings.kafka_port):
            return False
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import AdminClient

        rejected = []
        config = admin_config(self.settings) | {
            "socket.timeout.ms": 3000,
            "error_cb": lambda err: rejected.append(err) if err.code() == KafkaError._AUTHENTICATION else None,
        }
        client = AdminClient(config)
        try:
            metadata = client.list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
            client.poll(0)
            if rejected:  # the broker only accepts clients once its metadata is loaded: not transient
                raise RuntimeError(_ADMIN_LOST.format(data=self.home / "data")) from None
            return False
        # Not ready before the first metadata snapshot exists (see metadata.log.max.snapshot.interval.ms).
        return bool(metadata.brokers) and self._metadata_snapshot_written()

    def _metadata_snapshot_written(self) -> bool:
        if _SNAPSHOT_INTERVAL not in (self.home / "server.properties").read_text():
            return True  # a Kafka started before this fix snapshots hourly: do not make ``up`` wait for it
        log_dir = self.home / "data" / "__cluster_metadata-0"
        return any(path.name != _BOOTSTRAP_SNAPSHOT for path in log_dir.glob("*.checkpoint"))

    def endpoint(self) -> str:
        return f"{self.settings.kafka_bootstrap} (SASL_PLAINTEXT, {MECHANISM}, admin user '{ADMIN_USER}')"


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
