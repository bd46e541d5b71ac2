"""Least-privilege Kafka identities for metering: a writer that may only produce to the
meter topic (the sink's and the API's meter emitters) and a reader that may only consume
it in the metering group (the consumer that fills the ledger).

``ensure_meter_identities`` sets both SCRAM passwords and their ACLs with the platform
admin; a cluster declares the same (stacks/platform, docs/metering.md)."""

from __future__ import annotations

from typing import Mapping

from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)

from .emitter import METER_TOPIC

METER_WRITER = "urbanstack-meter-writer"
METER_READER = "urbanstack-meter-reader"
METER_GROUP = "urbanstack-metering"
TIMEOUT = 30


def meter_acls(writer: str = METER_WRITER, reader: str = METER_READER, *, topic: str = METER_TOPIC,
               group: str = METER_GROUP) -> list[AclBinding]:
    """Writer: Write and Describe on the meter topic (enough for an idempotent producer).
    Reader: Read and Describe on the meter topic, Read on its consumer group. Nothing else."""
    def allow(user: str, kind: ResourceType, name: str, operation: AclOperation) -> AclBinding:
        return AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                          AclPermissionType.ALLOW)
    return [allow(writer, ResourceType.TOPIC, topic, AclOperation.WRITE),
            allow(writer, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
            allow(reader, ResourceType.TOPIC, topic, AclOperation.READ),
            allow(reader, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
            allow(reader, ResourceType.GROUP, group, AclOperation.READ)]


def ensure_meter_identities(admin_config: Mapping[str, str], passwords: Mapping[str, str], *,
                            topic: str = METER_TOPIC, group: str = METER_GROUP,
                            writer: str = METER_WRITER, reader: str = METER_READER) -> None:
    """Set the writer's and reader's SCRAM-SHA-512 passwords (``passwords[user]``) and grant their ACLs."""
    admin = AdminClient(dict(admin_config))
    upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                            passwords[user].encode()) for user in (writer, reader)]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=TIMEOUT).values():
        future.result()
    for future in admin.create_acls(meter_acls(writer, reader, topic=topic, group=group),
                                    request_timeout=TIMEOUT).values():
        future.result()
