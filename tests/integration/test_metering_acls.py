"""The meter topic's least-privilege identities on the real Kafka (SCRAM, StandardAuthorizer):
the writer may only produce to the meter topic, the reader only consume it in its group."""

from __future__ import annotations

import secrets
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, AdminClient, \
    ResourcePatternType, ResourceType, UserScramCredentialDeletion, ScramMechanism

from urbanstack.devplatform import kafka
from urbanstack.runtime.metering.consumer import ensure_meter_topic
from urbanstack.runtime.metering.identities import ensure_meter_identities

pytestmark = pytest.mark.platform


def _produce(config, topic) -> KafkaError | None:
    """None when the record was acknowledged, else the refusal (a delivery or a fatal client error)."""
    delivered, fatal = [], []
    producer = Producer({**config, "enable.idempotence": True, "acks": "all", "message.timeout.ms": 10000,
                         "error_cb": lambda err: fatal.append(err) if err.fatal() else None, "log_level": 0})
    try:
        producer.produce(topic, b"x", on_delivery=lambda err, msg: delivered.append(err))
        producer.flush(15)
    except (KafkaException, SystemError) as exc:   # a fatal error surfaces from flush
        cause = exc if isinstance(exc, KafkaException) else exc.__cause__ or exc.__context__
        if isinstance(cause, KafkaException):
            return cause.args[0]
        raise
    if fatal:
        return fatal[0]
    return delivered[0] if delivered else KafkaError(KafkaError._MSG_TIMED_OUT)


def _consume(config, topic, group) -> KafkaError | bytes | None:
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest", "log_level": 0})
    consumer.subscribe([topic])
    try:
        for _ in range(20):
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                return message.error()
            return message.value()
    except KafkaException as exc:
        return exc.args[0]
    finally:
        consumer.close()
    return None


def test_the_meter_writer_only_writes_the_meter_topic_and_the_reader_only_reads_it(platform):
    admin_config = kafka.admin_config(platform)
    suffix = uuid.uuid4().hex[:8]
    topic, other = f"_urbanstack-meter-t{suffix}", f"_urbanstack-other-t{suffix}"
    group = f"urbanstack-metering-t{suffix}"
    writer, reader = f"meter-writer-t{suffix}", f"meter-reader-t{suffix}"
    passwords = {writer: secrets.token_urlsafe(18), reader: secrets.token_urlsafe(18)}
    ensure_meter_topic(admin_config, topic)
    ensure_meter_topic(admin_config, other)
    admin = AdminClient(admin_config)
    try:
        ensure_meter_identities(admin_config, passwords, topic=topic, group=group, writer=writer, reader=reader)
        as_writer = platform.kafka_config(writer, passwords[writer])
        as_reader = platform.kafka_config(reader, passwords[reader])

        assert _produce(as_writer, topic) is None                       # the writer writes the meter topic
        denied = _produce(as_writer, other)
        assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert _consume(as_reader, topic, group) == b"x"                # the reader reads it in its group
        denied = _produce(as_reader, topic)     # refused before any record: no producer id without Write
        assert denied is not None and denied.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                        KafkaError.CLUSTER_AUTHORIZATION_FAILED)
        denied = _consume(as_writer, topic, f"{group}-w")
        assert isinstance(denied, KafkaError) and denied.code() in (
            KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED)
        denied = _consume(as_reader, topic, f"{group}-other")            # another group: refused
        assert isinstance(denied, KafkaError) and denied.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        for user in (writer, reader):
            admin.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}",
                                                None, AclOperation.ANY, AclPermissionType.ANY)])
        admin.alter_user_scram_credentials([UserScramCredentialDeletion(u, ScramMechanism.SCRAM_SHA_512)
                                            for u in (writer, reader)])
        admin.delete_topics([topic, other])
