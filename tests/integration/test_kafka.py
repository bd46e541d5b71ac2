"""Kafka with SASL/SCRAM and ACLs: a tenant's user reaches its own topics only."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, NewTopic, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from urbanstack.devplatform import kafka

pytestmark = pytest.mark.platform


def _wait(futures: dict) -> None:
    for future in futures.values():
        future.result(timeout=30)


def _tenant(admin, slug: str, password: str) -> None:
    _wait(admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        slug, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())]))
    acls = [
        AclBinding(ResourceType.TOPIC, f"{slug}.", ResourcePatternType.PREFIXED, f"User:{slug}", "*",
                   op, AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)
    ] + [AclBinding(ResourceType.GROUP, f"{slug}.", ResourcePatternType.PREFIXED, f"User:{slug}", "*",
                    AclOperation.READ, AclPermissionType.ALLOW)]
    _wait(admin.create_acls(acls))


def test_tenant_user_is_confined_to_its_prefix(platform, kafka_admin):
    run = uuid.uuid4().hex[:6]
    own_slug, other_slug = f"guetersloh{run}", f"bielefeld{run}"
    own_topic, other_topic = f"{own_slug}.probe.events", f"{other_slug}.probe.events"
    _wait(kafka_admin.create_topics([NewTopic(own_topic, 1, 1), NewTopic(other_topic, 1, 1)]))
    password = uuid.uuid4().hex
    _tenant(kafka_admin, own_slug, password)
    try:
        _check_confinement(platform, own_slug, password, own_topic, other_topic)
    finally:
        _wait(kafka_admin.delete_topics([own_topic, other_topic]))
        _wait(kafka_admin.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                                        f"User:{own_slug}", None, AclOperation.ANY,
                                                        AclPermissionType.ANY)]))
        _wait(kafka_admin.alter_user_scram_credentials([UserScramCredentialDeletion(
            own_slug, ScramMechanism.SCRAM_SHA_512)]))


def _check_confinement(platform, own_slug: str, password: str, own_topic: str, other_topic: str) -> None:

    tenant = kafka.client_config(platform, own_slug, password)
    delivered, failed = [], []

    def report(err, msg):
        (failed if err else delivered).append(err or msg)

    producer = Producer(tenant | {"message.timeout.ms": 10000})
    producer.produce(own_topic, b"hello from guetersloh", on_delivery=report)
    producer.flush(20)
    assert len(delivered) == 1 and not failed

    producer.produce(other_topic, b"should be refused", on_delivery=report)
    producer.flush(20)
    assert failed, "writing to another tenant's topic must fail"
    assert "AUTHORIZATION" in failed[0].name()

    consumer = Consumer(tenant | {"group.id": f"{own_slug}.reader", "auto.offset.reset": "earliest"})
    consumer.subscribe([own_topic])
    try:
        message = None
        for _ in range(40):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and message.value() == b"hello from guetersloh"
    finally:
        consumer.close()

    intruder = Consumer(tenant | {"group.id": f"{own_slug}.intruder", "auto.offset.reset": "earliest"})
    intruder.subscribe([other_topic])
    try:
        error = None
        for _ in range(20):
            message = intruder.poll(1.0)
            if message is not None and message.error():
                error = message.error()
                break
            if message is not None:
                pytest.fail("read another tenant's topic")
        assert error is not None and "AUTHORIZATION" in error.name()
    finally:
        intruder.close()


def _auth_errors(config: dict, seconds: float = 8.0) -> list[str]:
    errors: list[str] = []
    producer = Producer(config | {"error_cb": lambda e: errors.append(e.name()), "log_level": 0})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not errors:
        producer.poll(0.2)
        try:
            if producer.list_topics(timeout=1).brokers:
                break
        except KafkaException:
            continue
    return errors


def test_wrong_password_is_refused(platform):
    assert "_AUTHENTICATION" in _auth_errors(kafka.client_config(platform, kafka.ADMIN_USER, "not-the-password"))
    assert _auth_errors(kafka.admin_config(platform)) == []
