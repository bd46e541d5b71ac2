"""Kafka: the tenant's SCRAM user, its prefixed ACLs, its topics and DLQ.

Everything goes through the Admin API as the platform's super user. Creating
what exists and deleting what is gone both count as success. A SCRAM password
cannot be read back: observe logs in as the tenant with the Secret's password.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from urbanstack.operator.plan import KafkaAcl, KafkaTopic, StreamingPart
from urbanstack.operator.provisioners.base import BackendUnavailable, Diff, DiffBuilder, Difference, dispatch

BACKEND = "Kafka"
CONFIG_SLOTS = 5   # the sweep describes each topic's config at least every 5th sweep
TIMEOUT = 15.0
SCRAM_ITERATIONS = 8192


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
        # The drift sweep's topic configs: each sweep describes one of CONFIG_SLOTS slots of the
        # planned topics (and every topic it has not described yet) and keeps the rest from before.
        self.config_slots = CONFIG_SLOTS
        self._config_seen: dict[str, dict[str, str]] = {}
        self._config_sweeps = 0
        self._config_lock = threading.Lock()   # the sweep reads, reconciles refresh and forget

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

    def _acls(self, part: StreamingPart) -> set[tuple]:
        """The ACLs this municipality answers for: every binding of its principal, except a share
        another municipality grants it (READ/DESCRIBE on one of that municipality's topics, LITERAL),
        plus every principal's LITERAL bindings on its own topics (the shares it grants). A share
        binding is thus observed by the municipality that owns the topic, and anything else given to
        this principal (a wildcard, a prefix, a write) is revoked by this one."""
        prefix = part.topic_prefix
        own = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, part.principal, None,
                               AclOperation.ANY, AclPermissionType.ANY)
        granted = AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.LITERAL, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
        mine = {_acl_key(b) for b in self._describe(own)}
        keys = {key for key in mine if not _share_from_another(key, prefix)}
        return keys | {_acl_key(b) for b in self._describe(granted) if b.name.startswith(prefix)}

    def _describe(self, pattern: AclBindingFilter) -> list:
        return _wait(self.admin.describe_acls(pattern, request_timeout=TIMEOUT), "describing ACLs")[0] or []

    def _configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        if not topics:
            return {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
        described = _wait(self.admin.describe_configs(resources, request_timeout=TIMEOUT), "describing topic configs")
        return {resource.name: {key: entry.value for key, entry in (config or {}).items()}
                for resource, config in described.items()}

    def _scram_mechanisms(self, user: str) -> set[str]:
        """The user's SCRAM mechanisms, e.g. {"SCRAM-SHA-512"}; empty if there is no such user."""
        futures = self.admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
        try:
            description = _wait(futures, "describing SCRAM users", ok_codes=(KafkaError.RESOURCE_NOT_FOUND,))
        except RuntimeError as exc:
            if "RESOURCE_NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
                return set()
            raise
        entry = description.get(user)
        return {info.mechanism.name.replace("_", "-") for info in (entry.scram_credential_infos if entry else [])}

    def _authenticates(self, user: str, password: str) -> bool:
        """Whether the broker accepts ``password`` for ``user``: a SCRAM credential cannot be read
        back, so the Secret's password is checked the way a client would use it."""
        failures: list[KafkaError] = []
        config = self._config | {"sasl.username": user, "sasl.password": password,
                                 "error_cb": failures.append, "reconnect.backoff.max.ms": 1000}
        client = AdminClient(config)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                client.list_topics(timeout=1)
                return True
            except KafkaException:
                client.poll(0)  # a refused login shows only in the error callback, served by poll
            if any(error.code() == KafkaError._AUTHENTICATION for error in failures):
                return False
        raise BackendUnavailable(BACKEND, f"checking the password of {user}: no answer within {TIMEOUT:.0f} s")

    def _planned_topics(self, part: StreamingPart) -> dict[str, int]:
        """The tenant's planned topics that exist, with their partition counts: one metadata request
        for those names (listing every topic cost a request of all tenants' metadata per observe)."""
        if not part.topics:
            return {}
        described = _wait(self.admin.describe_topics(TopicCollection([t.name for t in part.topics]),
                                                     request_timeout=TIMEOUT),
                          "describing topics", ok_codes=(KafkaError.UNKNOWN_TOPIC_OR_PART,))
        return {name: len(description.partitions) for name, description in described.items()
                if description is not None}

    def observe(self, part: StreamingPart, credentials: Mapping[str, str]) -> Diff:
        password = _password(part, credentials)
        existing = self._planned_topics(part)
        mechanisms = self._scram_mechanisms(part.user)
        configs = self._configs([t.name for t in part.topics if t.name in existing])
        self._remember_configs(configs)
        return streaming_differences(
            part, existing, configs, mechanisms,
            self._authenticates(part.user, password) if part.mechanism in mechanisms else None,
            self._acls(part))

    # bulk observe (the drift sweep) -------------------------------------------
    def snapshot(self, parts: list[StreamingPart]) -> "KafkaSnapshot":
        """Everything the sweep compares, for all ``parts``, in four Admin calls: one topic listing,
        one config description, one ACL listing and one SCRAM description of every planned user.
        Topic configs are the costly part (33 entries per topic; 5,000 topics took 1.5 s and most of
        the idle operator's Kafka CPU every minute): each sweep describes the planned topics of one
        of ``config_slots`` slots, and every one it has not seen, so a config changed behind the
        operator's back is found within ``config_slots`` sweeps; topics, partitions, ACLs and users
        within one."""
        try:
            metadata = self.admin.list_topics(timeout=TIMEOUT)
        except KafkaException as exc:
            raise BackendUnavailable(BACKEND, f"listing topics: {exc.args[0].str()}") from None
        partitions = {name: len(t.partitions) for name, t in metadata.topics.items()}
        planned = sorted({t.name for part in parts for t in part.topics if t.name in partitions})
        every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                 AclOperation.ANY, AclPermissionType.ANY)
        users = sorted({part.user for part in parts})
        mechanisms: dict[str, set[str]] = {user: set() for user in users}
        if users:
            futures = self.admin.describe_user_scram_credentials(users, request_timeout=TIMEOUT)
            for user, future in futures.items():
                try:
                    entry = future.result(timeout=TIMEOUT)
                except KafkaException as exc:
                    if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
                        continue
                    _wait({user: future}, "describing SCRAM users")
                    continue
                mechanisms[user] = {i.mechanism.name.replace("_", "-") for i in entry.scram_credential_infos}
        return KafkaSnapshot(partitions=partitions, configs=self._rotating_configs(planned),
                             acls=[_acl_key(b) for b in self._describe(every)], mechanisms=mechanisms)

    def _rotating_configs(self, planned: list[str]) -> dict[str, dict[str, str]]:
        slot = self._config_sweeps % self.config_slots
        self._config_sweeps += 1
        with self._config_lock:
            due = [name for name in planned
                   if name not in self._config_seen or _config_slot(name, self.config_slots) == slot]
        described = self._configs(due)
        with self._config_lock:
            kept = {name: self._config_seen[name] for name in planned if name in self._config_seen}
            self._config_seen = kept | described
            return dict(self._config_seen)

    def _remember_configs(self, configs: dict[str, dict[str, str]]) -> None:
        """What a tenant's full observe read is the freshest the sweep can have."""
        with self._config_lock:
            self._config_seen.update(configs)

    def _forget_configs(self, topics) -> None:
        """Topics an apply created or changed: the next sweep describes them again."""
        with self._config_lock:
            for name in topics:
                self._config_seen.pop(name, None)

    def observe_from(self, snapshot: "KafkaSnapshot", part: StreamingPart,
                     credentials: Mapping[str, str] | None = None) -> Diff:
        """The sweep's comparison: the same as ``observe`` but from the snapshot, without the login
        that checks the SCRAM password (it needs a connection per tenant; the full observe of a
        change, a repair or the rotating audit does it)."""
        prefix = part.topic_prefix
        existing = {name: snapshot.partitions[name] for name in snapshot.topics_with(prefix)}
        acls = {key for key in snapshot.acls_of(part.principal) if not _share_from_another(key, prefix)}
        acls |= {key for key in snapshot.literal_topic_acls_with(prefix)}
        return streaming_differences(part, existing, snapshot.configs, snapshot.mechanisms.get(part.user, set()),
                                     None, acls)

    # apply --------------------------------------------------------------------
    def apply(self, part: StreamingPart, diff: Diff, credentials: Mapping[str, str]) -> list[str]:
        """Missing topics in one request, then partitions, configs and the password as the diff orders
        them, then all missing ACLs in one request and all stray ones in another: a new tenant's
        5 topics and 12 bindings are 3 round trips to the controller, not 17."""
        batched = ("create_topic", "create_acl", "delete_acl")
        of = {action: [d for d in diff if d.action == action] for action in batched}
        handlers = {"add_partitions": self._add_partitions, "set_config": self._set_config,
                    "set_password": self._set_password}
        try:
            actions = self._create_topics([d.payload for d in of["create_topic"]])
            actions += dispatch(BACKEND, handlers, Diff(tuple(d for d in diff if d.action not in batched)), part,
                                credentials)
        finally:   # the sweep describes what this created or changed again
            self._forget_configs([d.payload.name for d in of["create_topic"]]
                                 + [d.payload[0] for d in diff if d.action == "set_config"])
        if of["create_acl"]:
            _wait(self.admin.create_acls([d.payload for d in of["create_acl"]], request_timeout=TIMEOUT),
                  "creating ACLs")
            actions += [f"granted {d.object}" for d in of["create_acl"]]
        if of["delete_acl"]:
            self._delete_acls([d.payload for d in of["delete_acl"]])
            actions += [f"revoked {d.object}" for d in of["delete_acl"]]
        return actions

    def _create_topics(self, topics: list[KafkaTopic]) -> list[str]:
        if not topics:
            return []
        _wait(self.admin.create_topics([NewTopic(t.name, t.partitions, 1, config=dict(t.config)) for t in topics],
                                       request_timeout=TIMEOUT),
              "creating topics", ok_codes=(KafkaError.TOPIC_ALREADY_EXISTS,))
        return [f"created topic {t.name}" for t in topics]

    def _add_partitions(self, difference: Difference, part: StreamingPart, credentials) -> str:
        topic: KafkaTopic = difference.payload
        # Metadata lags a moment behind: a topic that already grew is refused as INVALID_PARTITIONS.
        _wait(self.admin.create_partitions([NewPartitions(topic.name, topic.partitions)], request_timeout=TIMEOUT),
              "adding partitions", ok_codes=(KafkaError.INVALID_PARTITIONS,))
        return f"grew topic {topic.name} to {topic.partitions} partitions"

    def _set_config(self, difference: Difference, part: StreamingPart, credentials) -> str:
        name, key, value = difference.payload
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        resource.add_incremental_config(ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET))
        _wait(self.admin.incremental_alter_configs([resource], request_timeout=TIMEOUT), "altering topic configs")
        return f"set {key}={value} on topic {name}"

    def _set_password(self, difference: Difference, part: StreamingPart, credentials) -> str:
        upsert = UserScramCredentialUpsertion(
            part.user, ScramCredentialInfo(_mechanism(part), SCRAM_ITERATIONS),
            _password(part, credentials).encode())
        _wait(self.admin.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT), "setting a SCRAM password")
        return f"set the {part.mechanism} password of {part.user} from the tenant Secret"

    def _delete_acls(self, keys) -> None:
        filters = [AclBindingFilter(ResourceType[k[0]], k[2], ResourcePatternType[k[1]], k[3], k[6],
                                    AclOperation[k[4]], AclPermissionType[k[5]]) for k in keys]
        _wait(self.admin.delete_acls(filters, request_timeout=TIMEOUT), "deleting ACLs")

    # delete -------------------------------------------------------------------
    def delete(self, part: StreamingPart, *, keep_data: bool) -> list[str]:
        """Remove access (ACLs and SCRAM user); with ``keep_data=False`` also the topics."""
        actions = []
        have = self._acls(part)
        if have:
            self._delete_acls(have)
            actions.append(f"revoked {len(have)} ACLs")
        if part.mechanism in self._scram_mechanisms(part.user):
            deletion = UserScramCredentialDeletion(part.user, _mechanism(part))
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


@dataclass(frozen=True)
class KafkaSnapshot:
    partitions: dict[str, int]                # every topic: partition count
    configs: dict[str, dict[str, str]]        # planned topics that exist: config
    acls: list[tuple]                         # every binding, as _acl_key
    mechanisms: dict[str, set[str]]           # planned users: SCRAM mechanisms
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    # Indexes built once per snapshot: without them every tenant's comparison scanned every topic and
    # every binding of all tenants (1,000 tenants × 30,000 bindings per sweep).
    def _grouped(self, what: str, items, key) -> dict[str, list]:
        if what not in self._index:
            grouped: dict[str, list] = {}
            for item in items:
                grouped.setdefault(key(item), []).append(item)
            self._index[what] = grouped
        return self._index[what]

    def topics_with(self, prefix: str) -> list[str]:
        if _group_of(prefix) is None:
            return [name for name in self.partitions if name.startswith(prefix)]
        return [name for name in self._grouped("topics", self.partitions, _group_of).get(prefix, [])
                if name.startswith(prefix)]

    def acls_of(self, principal: str) -> list[tuple]:
        return self._grouped("principals", self.acls, lambda key: key[3]).get(principal, [])

    def literal_topic_acls_with(self, prefix: str) -> list[tuple]:
        literal = self._grouped("literal topics", self.acls,
                                lambda key: "LITERAL TOPIC" if key[0] == "TOPIC" and key[1] == "LITERAL" else "")
        if _group_of(prefix) is None:
            return [key for key in literal.get("LITERAL TOPIC", []) if key[2].startswith(prefix)]
        by_prefix = self._grouped("literal topics by prefix", literal.get("LITERAL TOPIC", []),
                                  lambda key: _group_of(key[2]) or "")
        return [key for key in by_prefix.get(prefix, []) if key[2].startswith(prefix)]


def _config_slot(topic: str, slots: int) -> int:
    """A topic's slot in the sweep's rotation of config descriptions (stable across restarts)."""
    return zlib.crc32(topic.encode()) % slots


def _group_of(name: str) -> str | None:
    """A tenant's topic prefix is its slug and a dot (naming.topic_prefix), so a topic's group is
    its name up to the first dot; None for a prefix not of that form (then a scan)."""
    head, dot, _ = name.partition(".")
    return f"{head}." if dot and head else None


def streaming_differences(part: StreamingPart, partitions: Mapping[str, int],
                          configs: Mapping[str, Mapping[str, str]], mechanisms: set[str],
                          authenticates: bool | None, acls: set[tuple]) -> Diff:
    """The plan against what the broker reported (pure: tests feed it what a broker would say).

    ``authenticates``: whether the tenant Secret's password logs in (None: not tried, no credential)."""
    found = DiffBuilder()
    for topic in part.topics:
        obj = f"topic {topic.name}"
        if topic.name not in partitions:
            found.add(obj, "exists", True, False, "create_topic", topic)
            continue
        # Kafka cannot take partitions away; fewer than planned is what can be repaired.
        if partitions[topic.name] < topic.partitions:
            found.add(obj, "partitions", topic.partitions, partitions[topic.name], "add_partitions", topic)
        for key, value in topic.config.items():
            have = configs.get(topic.name, {}).get(key)
            if have != value:
                found.add(obj, f"config {key}", value, have, "set_config", (topic.name, key, value))
    user = f"SCRAM user {part.user}"
    if part.mechanism not in mechanisms:
        found.add(user, f"credential {part.mechanism}", "present", "absent", "set_password")
    elif authenticates is False:
        found.add(user, "password", "the tenant Secret's password authenticates", "rejected", "set_password")
    want = {_acl_key(_acl_binding(a)): _acl_binding(a) for a in part.acls}
    for key in sorted(set(want) - acls):
        found.add(_acl_text(key), "binding", "present", "absent", "create_acl", want[key])
    for key in sorted(acls - set(want)):
        found.add(_acl_text(key), "binding", "absent", "present", "delete_acl", key)
    return found.diff()


def _mechanism(part: StreamingPart) -> ScramMechanism:
    return ScramMechanism[part.mechanism.replace("-", "_")]


def _password(part: StreamingPart, credentials: Mapping[str, str]) -> str:
    password = credentials.get(part.password_key)
    if not password:
        raise RuntimeError(f"the tenant Secret has no key {part.password_key!r} for Kafka user {part.user}; "
                           f"the runtime provisioner creates it")
    return password


def _share_from_another(key: tuple, prefix: str) -> bool:
    """A binding another municipality's plan grants (``plan._share_acls``): read access to one of
    its topics, by exact name."""
    restype, pattern, name, _principal, operation, permission, _host = key
    return (restype == "TOPIC" and pattern == "LITERAL" and permission == "ALLOW" and operation in ("READ", "DESCRIBE")
            and not name.startswith(prefix) and "*" not in name and name.count(".") >= 2)


def _acl_text(key: tuple) -> str:
    restype, pattern, name, principal, operation, permission, host = key
    return f"ACL {permission} {operation} on {restype} {pattern} {name} for {principal}@{host}"
