"""Kafka: the tenant's SCRAM user, its prefixed ACLs, its topics and DLQ.

Everything goes through the Admin API as the platform's super user. Creating
what exists and deleting what is gone both count as success.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ConfigResource, NewPartitions, NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from urbanstack.operator.plan import KafkaAcl, StreamingPart
from urbanstack.operator.provisioners.base import BackendUnavailable, Observed

BACKEND = "Kafka"
TIMEOUT = 15.0
SCRAM_ITERATIONS = 8192
# Kafka does not report these on describe unless set; we only compare what we set.
_COMPARED_CONFIGS = ("retention.ms", "cleanup.policy")


def _acl_binding(acl: KafkaAcl) -> AclBinding:
    return AclBinding(ResourceType[acl.resource_type], acl.resource_name, ResourcePatternType[acl.pattern_type],
                      acl.principal, acl.host, AclOperation[acl.operation], AclPermissionType[acl.permission])


def _acl_key(binding) -> tuple:
    return (binding.restype.name, binding.resource_pattern_type.name, binding.name, binding.principal,
            binding.operation.name, binding.permission_type.name, binding.host)


def _wait(futures, what: str, ok_codes=()) -> dict:
    results = {}
    items = futures.items() if isinstance(futures, dict) else enumerate([futures])
    for key, future in items:
        try:
            results[key] = future.result(timeout=TIMEOUT)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in ok_codes:
                results[key] = None
                continue
            if error.retriable() or error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                                                     KafkaError._ALL_BROKERS_DOWN):
                raise BackendUnavailable(BACKEND, f"{what}: {error.str()}") from None
            raise RuntimeError(f"Kafka refused {what}: {error.str()}") from None
        except TimeoutError:
            raise BackendUnavailable(BACKEND, f"{what}: no answer within {TIMEOUT:.0f} s") from None
    return results


class StreamingProvisioner:
    name = BACKEND
    condition = "StreamingReady"

    def __init__(self, admin_config: dict):
        self._config = dict(admin_config) | {"socket.timeout.ms": 10000, "log_level": 0}
        self._admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._config)
        return self._admin

    # observe ----------------------------------------------------------------
    def _topics(self, prefix: str) -> dict[str, int]:
        try:
            metadata = self.admin.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise BackendUnavailable(BACKEND, f"listing topics: {exc.args[0].str()}") from None
        return {name: len(t.partitions) for name, t in metadata.topics.items() if name.startswith(prefix)}

    def _acls(self, principal: str) -> set[tuple]:
        pattern = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
        bindings = _wait(self.admin.describe_acls(pattern, request_timeout=TIMEOUT), "describing ACLs")[0]
        return {_acl_key(b) for b in bindings or []}

    def _user_exists(self, user: str) -> bool:
        futures = self.admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
        try:
            description = _wait(futures, "describing SCRAM users", ok_codes=(KafkaError.RESOURCE_NOT_FOUND,))
        except RuntimeError as exc:
            if "RESOURCE_NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
                return False
            raise
        entry = description.get(user)
        return bool(entry and entry.scram_credential_infos)

    def _configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        if not topics:
            return {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
        described = _wait(self.admin.describe_configs(resources, request_timeout=TIMEOUT), "describing topic configs")
        return {resource.name: {key: entry.value for key, entry in (config or {}).items()}
                for resource, config in described.items()}

    def observe(self, part: StreamingPart) -> Observed:
        observed = Observed()
        existing = self._topics(part.topic_prefix)
        configs = self._configs([t.name for t in part.topics if t.name in existing])
        for topic in part.topics:
            if topic.name not in existing:
                observed.missing.append(f"topic {topic.name}")
                continue
            if existing[topic.name] < topic.partitions:
                observed.drifted.append(f"topic {topic.name} partitions {existing[topic.name]}<{topic.partitions}")
            for key in _COMPARED_CONFIGS:
                if key in topic.config and configs.get(topic.name, {}).get(key) != topic.config[key]:
                    observed.drifted.append(f"topic {topic.name} {key}")
        if not self._user_exists(part.user):
            observed.missing.append(f"SCRAM user {part.user}")
        have = self._acls(part.principal)
        want = {_acl_key(_acl_binding(a)) for a in part.acls}
        observed.missing += [f"ACL {k[4]} on {k[0]} {k[2]}*" for k in sorted(want - have)]
        observed.extra += [f"ACL {k[4]} on {k[0]} {k[2]}" for k in sorted(have - want)]
        return observed

    # apply --------------------------------------------------------------------
    def apply(self, part: StreamingPart, password: str) -> list[str]:
        actions = []
        existing = self._topics(part.topic_prefix)
        new = [NewTopic(t.name, t.partitions, 1, config=dict(t.config)) for t in part.topics if t.name not in existing]
        if new:
            _wait(self.admin.create_topics(new, request_timeout=TIMEOUT), "creating topics",
                  ok_codes=(KafkaError.TOPIC_ALREADY_EXISTS,))
            actions.append(f"created topics {', '.join(t.topic for t in new)}")
        grow = [NewPartitions(t.name, t.partitions) for t in part.topics
                if t.name in existing and existing[t.name] < t.partitions]
        if grow:
            _wait(self.admin.create_partitions(grow, request_timeout=TIMEOUT), "adding partitions")
            actions.append(f"added partitions to {', '.join(p.topic for p in grow)}")
        configs = self._configs([t.name for t in part.topics if t.name in existing])
        alter = []
        for topic in part.topics:
            if topic.name in existing and any(configs.get(topic.name, {}).get(k) != v
                                              for k, v in topic.config.items() if k in _COMPARED_CONFIGS):
                resource = ConfigResource(ConfigResource.Type.TOPIC, topic.name)
                for key, value in topic.config.items():
                    resource.add_incremental_config(_config_entry(key, value))
                alter.append(resource)
        if alter:
            _wait(self.admin.incremental_alter_configs(alter, request_timeout=TIMEOUT), "altering topic configs")
            actions.append(f"updated retention of {', '.join(r.name for r in alter)}")
        if not self._user_exists(part.user):
            upsert = UserScramCredentialUpsertion(
                part.user, ScramCredentialInfo(ScramMechanism[part.mechanism.replace("-", "_")], SCRAM_ITERATIONS),
                password.encode())
            _wait(self.admin.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT), "creating SCRAM user")
            actions.append(f"created SCRAM user {part.user}")
        have = self._acls(part.principal)
        want = {_acl_key(_acl_binding(a)): _acl_binding(a) for a in part.acls}
        missing = [binding for key, binding in want.items() if key not in have]
        if missing:
            _wait(self.admin.create_acls(missing, request_timeout=TIMEOUT), "creating ACLs")
            actions.append(f"granted {len(missing)} ACLs")
        extra = [key for key in have if key not in want]
        if extra:
            self._delete_acls(extra)
            actions.append(f"revoked {len(extra)} ACLs")
        return actions

    def _delete_acls(self, keys) -> None:
        filters = [AclBindingFilter(ResourceType[k[0]], k[2], ResourcePatternType[k[1]], k[3], k[6],
                                    AclOperation[k[4]], AclPermissionType[k[5]]) for k in keys]
        _wait(self.admin.delete_acls(filters, request_timeout=TIMEOUT), "deleting ACLs")

    # delete -------------------------------------------------------------------
    def delete(self, part: StreamingPart, *, keep_data: bool) -> list[str]:
        """Remove access (ACLs and SCRAM user); with ``keep_data=False`` also the topics."""
        actions = []
        have = self._acls(part.principal)
        if have:
            self._delete_acls(have)
            actions.append(f"revoked {len(have)} ACLs")
        if self._user_exists(part.user):
            deletion = UserScramCredentialDeletion(part.user, ScramMechanism[part.mechanism.replace("-", "_")])
            _wait(self.admin.alter_user_scram_credentials([deletion], request_timeout=TIMEOUT),
                  "deleting SCRAM user", ok_codes=(KafkaError.RESOURCE_NOT_FOUND,))
            actions.append(f"deleted SCRAM user {part.user}")
        if not keep_data:
            existing = [name for name in self._topics(part.topic_prefix) if name in {t.name for t in part.topics}
                        or name.startswith(part.topic_prefix)]
            if existing:
                _wait(self.admin.delete_topics(existing, request_timeout=TIMEOUT), "deleting topics",
                      ok_codes=(KafkaError.UNKNOWN_TOPIC_OR_PART,))
                actions.append(f"deleted topics {', '.join(existing)}")
        return actions


def _config_entry(key: str, value: str):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    return ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
