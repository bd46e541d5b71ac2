"""Kafka with SASL/SCRAM and ACLs: a tenant's user reaches its own topics only.

The user, its ACLs and the topics come from the operator's own plan
(``operator/plan.py``) applied by its StreamingProvisioner, so this tests the
access every municipality really gets, not a copy of it."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from ingest_harness import LORAWAN_TOOL, manifest, tool

from urbanstack.devplatform import kafka
from urbanstack.operator.models import parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.streaming import StreamingProvisioner

pytestmark = pytest.mark.platform


def _streaming(body: dict):
    return plan(parse_municipality(body), [tool(LORAWAN_TOOL)]).streaming


def test_tenant_user_is_confined_to_its_prefix(platform):
    admin_config = kafka.admin_config(platform)
    provisioner = StreamingProvisioner(admin_config)
    own_body = manifest("kown", ["raumklima"])
    own, other = _streaming(own_body), _streaming(manifest("kother", ["raumklima"]))
    password = uuid.uuid4().hex
    try:
        ensure(provisioner, own, {own.password_key: password})
        ensure(provisioner, other, {other.password_key: uuid.uuid4().hex})
        own_topic, other_topic = own.topics[0].name, other.topics[0].name
        tenant = kafka.client_config(platform, own.user, password)
        assert _write(tenant, own_topic) is None
        assert "AUTHORIZATION" in (_write(tenant, other_topic) or ""), "writing another tenant's topic must fail"
        assert _read(tenant, f"{own.topic_prefix}reader", own_topic) == [b"from its own user"]
        assert "AUTHORIZATION" in _read_error(tenant, f"{own.topic_prefix}intruder", other_topic)
        assert "AUTHORIZATION" in _read_error(tenant, f"{other.topic_prefix}intruder", own_topic), \
            "a consumer group under another tenant's prefix must be refused"

        # Suspended: the plan keeps reading and takes writing away; apply revokes it.
        suspended = _streaming({**own_body, "spec": {**own_body["spec"], "suspended": True}})
        ensure(provisioner, suspended, {suspended.password_key: password})
        assert "AUTHORIZATION" in (_write(tenant, own_topic) or ""), "a suspended municipality must not write"
        assert _read(tenant, f"{own.topic_prefix}reader2", own_topic) == [b"from its own user"]
    finally:
        for part in (own, other):
            provisioner.delete(part, keep_data=False)


def _write(config: dict, topic: str) -> str | None:
    """None when the broker acknowledged the message, else the error's name."""
    outcome = []
    producer = Producer(config | {"message.timeout.ms": 10000})
    producer.produce(topic, b"from its own user", on_delivery=lambda error, _: outcome.append(error))
    producer.flush(20)
    assert outcome, "no delivery report within the message timeout"
    return None if outcome[0] is None else outcome[0].name()


def _read(config: dict, group: str, topic: str) -> list[bytes]:
    consumer = Consumer(config | {"group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None:
                assert not message.error(), message.error()
                return [message.value()]
        return []
    finally:
        consumer.close()


def _read_error(config: dict, group: str, topic: str) -> str:
    consumer = Consumer(config | {"group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error():
                return message.error().name()
            if message is not None:
                pytest.fail(f"read {topic} with group {group}")
        return ""
    finally:
        consumer.close()


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
