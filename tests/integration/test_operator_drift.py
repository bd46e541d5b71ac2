"""Drift behind the operator's back, against the real backends: each attribute a provisioner
owns is changed directly in Kafka, Kubernetes and Keycloak, observed as a difference naming
the object and attribute, repaired by applying exactly that diff, and observed in sync again.
(ClickHouse: tests/integration/test_warehouse_server_sql.py and test_warehouse_rollup.py.)"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time

import kubernetes
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   AlterConfigOpType, ConfigEntry, ConfigResource, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from test_identity_provisioner import Realm
from urbanstack.devplatform import kafka as dev_kafka
from urbanstack.devplatform import keycloak
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import MFA_MARKER_ROLE, IdentityProvisioner, tenant_slug
from urbanstack.operator.provisioners.runtime import RuntimeProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.rbac import INGEST_SECRET

from operator_harness import example, unique_municipality

pytestmark = pytest.mark.platform

TOOLS = [parse_citytool(example(name)) for name in ("citytool-passantenfrequenz-wetter.yaml",
                                                    "citytool-pegel-warnung.yaml")]


def _desired(prefix: str, **spec):
    body = unique_municipality("municipality-guetersloh.yaml", prefix)
    body["spec"].update(spec)
    return plan(parse_municipality(body), TOOLS)


# What the drift sweep does not see in Kafka's bulk listings (within one interval); the full observe
# of the rotating audit finds it (operator/sweep.py).
NOT_IN_BULK_LISTINGS = {"password", "secret", "roles", "composites", "enabled", "credential SCRAM-SHA-512"}


def _repaired(provisioner, part, credentials, obj: str, attribute: str):
    """The drift is observed as (obj, attribute), applying that diff repairs it and nothing is left.
    The drift sweep's bulk comparison sees it too (unless it is one the audit finds), so the
    operator queues a repair within one drift interval."""
    diff = provisioner.observe(part, credentials)
    assert diff.about(obj, attribute), f"{obj} {attribute} not observed; diff: {diff.summary()}"
    # Keycloak: what its listings do not show (roles, secrets, mappings, users, members), the realm's
    # admin events do; the sweep then asks for the tenant's full observe (None).
    if isinstance(provisioner, IdentityProvisioner) or not (
            attribute in NOT_IN_BULK_LISTINGS or attribute.startswith(("scope of", "member of"))):
        swept = provisioner.observe_from(provisioner.snapshot([part]), part)
        assert swept is None or swept.about(obj, attribute), \
            f"{obj} {attribute} not seen by the drift sweep; it saw: {swept.summary()}"
    provisioner.apply(part, diff, credentials)
    # Without applying again: Kafka's metadata may lag a moment behind a change.
    _until(lambda: provisioner.observe(part, credentials).in_sync,
           lambda: f"in sync after the repair; still: {provisioner.observe(part, credentials).summary()}")
    if isinstance(provisioner, IdentityProvisioner):
        # The repair's own admin events are the operator's: the sweep does not see drift in them.
        _sweep_sees_no_drift(provisioner, part)
        _after_own_writes(provisioner)   # the next change comes from "someone else"
    return diff


def _sweep_sees_no_drift(provisioner, part):
    """No false alarm: a provisioned tenant is in sync for the sweep's bulk comparison too (else
    every sweep would reconcile every municipality)."""
    swept = provisioner.observe_from(provisioner.snapshot([part]), part)
    assert swept is not None and swept.in_sync, f"the sweep sees drift that is none: {swept and swept.summary()}"


def _after_own_writes(provisioner, timeout: float = 30) -> None:
    """Wait until an admin event stamped now would no longer count as the operator's own write (it
    lies outside every write window plus the slack, OWN_WRITE_SLACK_MS), so a change made next is
    "someone else's" for the sweep."""
    user = "the-operators-admin-user"
    _until(lambda: not provisioner.events.ours({"authDetails": {"userId": user}, "time": int(time.time() * 1000)},
                                               user, None),
           "the end of the operator's own write windows", timeout)


def _until(condition, what, timeout: float = 30):
    """Wait for the condition itself; ``what`` (text or a callable giving it) explains a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what() if callable(what) else what} not reached in {timeout:.0f} s")


# Kafka ------------------------------------------------------------------------------------------

def _done(futures):
    for future in (futures.values() if isinstance(futures, dict) else [futures]):
        future.result(timeout=15)


def _can_log_in(settings, user: str, password: str) -> bool:
    errors: list[KafkaError] = []
    client = AdminClient(dev_kafka.client_config(settings, user, password) | {"error_cb": errors.append,
                                                                               "log_level": 0})
    try:
        client.list_topics(timeout=10)
        return True
    except KafkaException:
        return False


def test_kafka_drift_of_every_attribute_is_observed_and_repaired(platform, kafka_admin):
    part = _desired("kd").streaming
    credentials = {part.password_key: secrets.token_urlsafe(18)}
    provisioner = StreamingProvisioner(dev_kafka.admin_config(platform))
    provisioner.config_slots = 1   # every sweep describes every topic's config (the rotation: unit test)
    ensure(provisioner, part, credentials)
    try:
        assert provisioner.observe(part, credentials).in_sync
        _sweep_sees_no_drift(provisioner, part)
        topic = part.topics[0]

        _done(kafka_admin.delete_topics([topic.name]))
        _until(lambda: topic.name not in kafka_admin.list_topics(timeout=10).topics, "topic deleted")
        _repaired(provisioner, part, credentials, f"topic {topic.name}", "exists")

        resource = ConfigResource(ConfigResource.Type.TOPIC, topic.name)
        resource.add_incremental_config(ConfigEntry("retention.ms", "60000",
                                                    incremental_operation=AlterConfigOpType.SET))
        _done(kafka_admin.incremental_alter_configs([resource]))
        diff = _repaired(provisioner, part, credentials, f"topic {topic.name}", "config retention.ms")
        assert [d.found for d in diff.about(f"topic {topic.name}", "config retention.ms")] == ["60000"]

        grown = dataclasses.replace(part, topics=(dataclasses.replace(topic, partitions=topic.partitions + 1),
                                                  *part.topics[1:]))
        _repaired(provisioner, grown, credentials, f"topic {topic.name}", "partitions")
        assert len(kafka_admin.list_topics(timeout=10).topics[topic.name].partitions) == topic.partitions + 1

        # Someone set another password: the Secret's no longer logs in until the operator sets it again.
        _done(kafka_admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            part.user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"someone-elses-password")]))
        assert not _can_log_in(platform, part.user, credentials[part.password_key])
        _repaired(provisioner, part, credentials, f"SCRAM user {part.user}", "password")
        assert _can_log_in(platform, part.user, credentials[part.password_key])

        _done(kafka_admin.alter_user_scram_credentials([UserScramCredentialDeletion(
            part.user, ScramMechanism.SCRAM_SHA_512)]))
        _repaired(provisioner, part, credentials, f"SCRAM user {part.user}", "credential SCRAM-SHA-512")
        assert _can_log_in(platform, part.user, credentials[part.password_key])

        write = next(a for a in part.acls if a.operation == "WRITE")
        _done(kafka_admin.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, write.resource_name, ResourcePatternType.PREFIXED, write.principal, "*",
            AclOperation.WRITE, AclPermissionType.ALLOW)]))
        _repaired(provisioner, part, credentials,
                  f"ACL ALLOW WRITE on TOPIC PREFIXED {part.topic_prefix} for {part.principal}@*", "binding")

        # A grant on every topic someone added is revoked.
        _done(kafka_admin.create_acls([AclBinding(
            ResourceType.TOPIC, "*", ResourcePatternType.LITERAL, part.principal, "*", AclOperation.READ,
            AclPermissionType.ALLOW)]))
        diff = _repaired(provisioner, part, credentials,
                         f"ACL ALLOW READ on TOPIC LITERAL * for {part.principal}@*", "binding")
        assert [d.action for d in diff] == ["delete_acl"]

        # Read access to another municipality's topic is that municipality's share (its plan grants and
        # observes it); a write there is nobody's share and is revoked.
        foreign = "another-town.pegel-warnung.water_levels"
        for operation in (AclOperation.READ, AclOperation.WRITE):
            _done(kafka_admin.create_acls([AclBinding(
                ResourceType.TOPIC, foreign, ResourcePatternType.LITERAL, part.principal, "*", operation,
                AclPermissionType.ALLOW)]))
        diff = _repaired(provisioner, part, credentials,
                         f"ACL ALLOW WRITE on TOPIC LITERAL {foreign} for {part.principal}@*", "binding")
        assert [d.object for d in diff] == [f"ACL ALLOW WRITE on TOPIC LITERAL {foreign} for {part.principal}@*"]
        _done(kafka_admin.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, foreign, ResourcePatternType.LITERAL, part.principal, "*", AclOperation.READ,
            AclPermissionType.ALLOW)]))
    finally:
        provisioner.delete(part, keep_data=False)


# Kubernetes ---------------------------------------------------------------------------------

def _secret(core, namespace: str, name: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def test_kubernetes_drift_of_every_attribute_is_observed_and_repaired(kube_api):
    desired = _desired("rd")
    part = desired.runtime
    fixed = {"kafka-username": desired.streaming.user, "warehouse-username": desired.warehouse.access.user}
    provisioner = RuntimeProvisioner(kube_api)
    core = kubernetes.client.CoreV1Api(kube_api)
    ensure(provisioner, part, fixed)
    try:
        assert provisioner.observe(part, fixed).in_sync
        _sweep_sees_no_drift(provisioner, part)
        namespace = part.namespace
        credentials = provisioner.read_credentials(part)

        core.delete_namespaced_resource_quota("tenant-quota", namespace)
        _repaired(provisioner, part, fixed, "ResourceQuota tenant-quota", "exists")

        planned = part.get("ResourceQuota", "tenant-quota").manifest["spec"]["hard"]
        key = sorted(planned)[0]
        core.patch_namespaced_resource_quota("tenant-quota", namespace, {"spec": {"hard": {key: "999"}}})
        _repaired(provisioner, part, fixed, "ResourceQuota tenant-quota", "spec")
        assert core.read_namespaced_resource_quota("tenant-quota", namespace).spec.hard[key] == str(planned[key])

        core.patch_namespace(namespace, {"metadata": {"labels": {"urbanstack.io/municipality": "someone-else"}}})
        _repaired(provisioner, part, fixed, f"Namespace {namespace}", "labels")

        # A key deleted from the credentials Secret gets a new value; the others are kept.
        core.patch_namespaced_secret(part.secret.name, namespace, [
            {"op": "remove", "path": "/data/warehouse-password"}])
        _repaired(provisioner, part, fixed, f"Secret {part.secret.name}", "keys")
        now = provisioner.read_credentials(part)
        assert now["warehouse-password"] and now["kafka-password"] == credentials["kafka-password"]

        core.patch_namespaced_secret(INGEST_SECRET, namespace, {"stringData": {"kafka-password": "stale"}})
        _repaired(provisioner, part, fixed, f"Secret {INGEST_SECRET}", "keys")
        assert _secret(core, namespace, INGEST_SECRET)["kafka-password"] == credentials["kafka-password"]

        core.delete_namespaced_secret(INGEST_SECRET, namespace)
        _repaired(provisioner, part, fixed, f"Secret {INGEST_SECRET}", "exists")
    finally:
        provisioner.delete(part, keep_data=False)


# Keycloak ------------------------------------------------------------------------------------

def test_keycloak_drift_of_every_attribute_is_observed_and_repaired(platform, keycloak_admin):
    desired = _desired("kc")
    part = desired.identity
    credentials = {c.secret_key: hashlib.sha256(f"{part.realm}/{c.client_id}".encode()).hexdigest()
                   for c in part.clients if c.secret_key}
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    ensure(provisioner, part, credentials)
    slug = desired.slug
    tool, api, hub = f"{slug}--tool-pegel-warnung", f"{slug}-api", f"{slug}-gov-hub"
    admin_user = part.users[0].username
    try:
        assert provisioner.observe(part, credentials).in_sync
        _sweep_sees_no_drift(provisioner, part)
        # The same admin account as the operator's: a change within the slack of the operator's own
        # write would count as the operator's (the audit would find it). Someone else comes later.
        _after_own_writes(provisioner)
        with Realm(keycloak_admin, part.realm) as kc:
            kc.generate_client_secrets(kc.get_client_id(tool))  # someone rotated the tool's secret in Keycloak
        _repaired(provisioner, part, credentials, f"client {tool}", "secret")
        with Realm(keycloak_admin, part.realm) as kc:
            assert kc.get_client_secrets(kc.get_client_id(tool))["value"] == credentials[
                "tool-pegel-warnung-client-secret"]

            api_uuid, hub_uuid = kc.get_client_id(api), kc.get_client_id(hub)
            viewer = kc.get_client_role(api_uuid, "gov-viewer")
            # python-keycloak has calls for a client scope's mappings, not for a client's own.
            response = kc.connection.raw_delete(
                f"admin/realms/{part.realm}/clients/{hub_uuid}/scope-mappings/clients/{api_uuid}",
                data=json.dumps([{"id": viewer["id"], "name": "gov-viewer"}]))
            assert response.status_code == 204, response.text
        _repaired(provisioner, part, credentials, f"client {hub}", f"scope of {api} roles")

        with Realm(keycloak_admin, part.realm) as kc:
            kc.remove_composite_client_roles_from_role(api_uuid, "gov-viewer",
                                                       [kc.get_realm_role(MFA_MARKER_ROLE)])
        _repaired(provisioner, part, credentials, f"role {api}/gov-viewer", "composites")

        with Realm(keycloak_admin, part.realm) as kc:
            kc.delete_client_role(kc.get_client_id(tool), "hochwasser-einsatzleitung")
        _repaired(provisioner, part, credentials, f"role {tool}/hochwasser-einsatzleitung", "exists")

        with Realm(keycloak_admin, part.realm) as kc:
            user_id = kc.get_user_id(admin_user)
            kc.update_user(user_id, {"enabled": False})
        _repaired(provisioner, part, credentials, f"user {admin_user}", "enabled")

        with Realm(keycloak_admin, part.realm) as kc:
            kc.delete_client_roles_of_user(user_id, api_uuid, [kc.get_client_role(api_uuid, "gov-admin")])
        _repaired(provisioner, part, credentials, f"user {admin_user}", "roles")

        with Realm(keycloak_admin, part.realm) as kc:
            org = next(o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                       if o["alias"] == part.organization.alias)
            kc.organization_user_remove(user_id, org["id"])
        _repaired(provisioner, part, credentials, f"user {admin_user}", f"member of {part.organization.alias}")

        with Realm(keycloak_admin, part.realm) as kc:
            client = kc.get_client(hub_uuid)
            mapper = next(m for m in client["protocolMappers"] if m["name"].startswith("audience"))
            kc.remove_client_mapper(hub_uuid, mapper["id"])
            kc.update_client(hub_uuid, {"clientId": hub, "standardFlowEnabled": False})
        diff = _repaired(provisioner, part, credentials, f"client {hub}", f"mapper {mapper['name']}")
        assert diff.about(f"client {hub}", "standardFlowEnabled")
        assert {d.action for d in diff} == {"set_client"}
    finally:
        provisioner.delete(part, keep_data=False)
        provisioner.close()


def test_the_sweeps_keycloak_listing_follows_the_realm_between_full_listings(platform, keycloak_admin):
    """Paging every client and organization of the shared realm is done once per
    ``full_listing_seconds``; in between, a tenant new to the sweep is found by its slug and a client
    someone deletes is gone from the next sweep's view, because its admin event names it."""
    first, second = _desired("kl1").identity, _desired("kl2").identity
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    credentials = {c.secret_key: secrets.token_hex(16) for part in (first, second) for c in part.clients
                   if c.secret_key}
    try:
        ensure(provisioner, first, credentials)
        _sweep_sees_no_drift(provisioner, first)   # the full listing
        listed_at = provisioner._listings[first.realm].listed_at
        ensure(provisioner, second, credentials)    # after it: not in the kept listing yet
        snapshot = provisioner.snapshot([first, second])
        assert provisioner._listings[first.realm].listed_at == listed_at, "it listed everything again"
        assert provisioner.observe_from(snapshot, second).in_sync, "a new tenant is no drift"
        assert provisioner.observe_from(snapshot, first).in_sync

        _after_own_writes(provisioner)   # what follows is "someone else"
        hub = f"{tenant_slug(second)}-gov-hub"
        with Realm(keycloak_admin, second.realm) as kc:
            kc.delete_client(kc.get_client_id(hub))
        snapshot = provisioner.snapshot([first, second])
        assert provisioner._listings[first.realm].listed_at == listed_at
        assert hub not in snapshot.clients[second.realm], "the deletion's admin event did not reach the listing"
        swept = provisioner.observe_from(snapshot, second)
        assert swept is None or swept.about(f"client {hub}", "exists")
        assert provisioner.observe(second, credentials).about(f"client {hub}", "exists")
    finally:
        for part in (first, second):
            provisioner.delete(part, keep_data=False)
        provisioner.close()
