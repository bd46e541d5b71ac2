"""The level-based reconcile of one Municipality, independent of Kopf.

``reconcile`` plans the desired state, lets every provisioner observe its backend
and apply exactly the diff it observed, and returns the status to write: one
condition per backend plus ``Ready`` and ``Synced``. A backend outage makes its own condition False and the
whole reconcile a retry; the other backends are still reconciled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

from urbanstack.operator import ags as ags_rules
from urbanstack.operator.models import CityTool, DeletionPolicy, SpecError, parse_citytool, parse_municipality
from urbanstack.operator.plan import DesiredState, MissingToolError, PlanError, plan
from urbanstack.operator.provisioners.base import (REASON_CONFLICT, REASON_FAILED, REASON_INVALID_SPEC,
                                                   REASON_PROVISIONED, REASON_REPAIRED, REASON_SUSPENDED,
                                                   REASON_UNAVAILABLE, BackendUnavailable, Conflict)

BACKEND_CONDITIONS = ("RuntimeReady", "StreamingReady", "WarehouseReady", "IdentityReady")
REASON_TOOL_MISSING = "CityToolMissing"
REASON_WAITING = "WaitingForCredentials"
REASON_ALL_READY = "AllBackendsReady"
REASON_NOT_READY = "BackendsNotReady"
REASON_RECONCILED = "ReconcileSucceeded"
REASON_RECONCILE_ERROR = "ReconcileError"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    type: str      # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    retry: bool = False            # a backend was unavailable or failed: try again later
    permanent_error: str | None = None
    desired: DesiredState | None = None


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None,
              previous: list[dict] | None) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    before = next((c for c in previous or [] if c.get("type") == type_), None)
    changed = before is None or before.get("status") != status
    return {
        "type": type_, "status": status, "reason": reason, "message": message[:1000],
        "observedGeneration": generation,
        "lastTransitionTime": now() if changed else before.get("lastTransitionTime", now()),
    }


def parse_tools(items: list[dict]) -> dict[str, CityTool]:
    """Valid CityTools by name; an invalid one is left out (its own status says why)."""
    tools = {}
    for item in items:
        try:
            tool = parse_citytool(item)
        except SpecError:
            continue
        tools[tool.name] = tool
    return tools


def after_runtime(backends, desired: DesiredState) -> list[tuple[Any, Any]]:
    """The provisioners that need the tenant's credentials Secret (the runtime's), with their parts,
    in the order a reconcile runs them; the drift sweep compares the same ones."""
    parts = [(backends.streaming, desired.streaming), (backends.warehouse, desired.warehouse),
             (backends.identity, desired.identity)]
    if getattr(backends, "messaging", None) is not None:     # the MQTT broker, where one is configured
        parts.append((backends.messaging, desired.messaging))
    return parts


def reconcile(body: dict[str, Any], tools: dict[str, CityTool], backends,
              directory: ags_rules.MunicipalityDirectory | None = None, *, drift_check: bool = False) -> Outcome:
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    try:
        municipality = parse_municipality(body, directory)
        desired = plan(municipality, tools, mail=getattr(backends, "mail", None),
                       endpoints=getattr(backends, "endpoints", None))
    except MissingToolError as error:
        return _blocked(generation, previous, REASON_TOOL_MISSING, str(error), retry=True)
    except (SpecError, PlanError, ags_rules.AgsError) as error:
        outcome = _blocked(generation, previous, REASON_INVALID_SPEC, str(error), retry=False)
        outcome.permanent_error = str(error)
        return outcome

    conditions: list[dict] = []
    events: list[Event] = []
    retry = False

    def run(provisioner, part, credentials: Mapping[str, str]) -> bool:
        """Observe, then apply exactly the observed diff; the condition says how it went."""
        nonlocal retry
        type_ = provisioner.condition
        try:
            diff = provisioner.observe(part, credentials)
            actions = provisioner.apply(part, diff, credentials) if not diff.in_sync else []
            message = f"{provisioner.name}: " + ("; ".join(actions) if actions else "in sync")
            if drift_check and not diff.in_sync:
                events.append(Event("Warning", REASON_REPAIRED,
                                    f"{provisioner.name} drifted ({diff.summary()}); repaired"))
            elif actions:
                events.append(Event("Normal", REASON_PROVISIONED, message))
            reason = REASON_SUSPENDED if desired.suspended else REASON_PROVISIONED
            conditions.append(condition(type_, True, reason, message, generation, previous))
            return True
        except BackendUnavailable as error:
            retry = True
            conditions.append(condition(type_, False, REASON_UNAVAILABLE, str(error), generation, previous))
            events.append(Event("Warning", REASON_UNAVAILABLE, str(error)))
        except Conflict as error:
            # Someone else holds the name: retried, since it resolves once they rename or delete theirs.
            retry = True
            text = f"{provisioner.name}: {str(error)[:500]}"
            conditions.append(condition(type_, False, REASON_CONFLICT, text, generation, previous))
            events.append(Event("Warning", REASON_CONFLICT, text))
        except Exception as error:  # noqa: BLE001 - any other failure is reported and retried
            retry = True
            text = f"{provisioner.name}: {str(error)[:500]}"
            conditions.append(condition(type_, False, REASON_FAILED, text, generation, previous))
            events.append(Event("Warning", REASON_FAILED, text))
        return False

    fixed = {"kafka-username": desired.streaming.user, "warehouse-username": desired.warehouse.access.user}
    credentials = None
    if run(backends.runtime, desired.runtime, fixed):
        credentials = backends.runtime.read_credentials(desired.runtime)
        retry = retry or credentials is None   # written concurrently: read it on the next pass
    for provisioner, part in after_runtime(backends, desired):
        if credentials is None:
            conditions.append(condition(provisioner.condition, None, REASON_WAITING,
                                        "waiting for the tenant's credentials Secret in Kubernetes",
                                        generation, previous))
            continue
        run(provisioner, part, credentials)

    all_ready = all(c["status"] == "True" for c in conditions)
    failing = [c["type"] for c in conditions if c["status"] != "True"]
    conditions.append(condition("Ready", all_ready, REASON_ALL_READY if all_ready else REASON_NOT_READY,
                                "all backends are provisioned" if all_ready else f"not ready: {', '.join(failing)}",
                                generation, previous))
    conditions.append(condition("Synced", not retry, REASON_RECONCILED if not retry else REASON_RECONCILE_ERROR,
                                "the last reconcile succeeded" if not retry else
                                "the last reconcile failed; retrying with backoff", generation, previous))
    if desired.suspended:
        phase = "Suspended"
    elif all_ready:
        phase = "Ready"
    elif any(c.get("status") == "True" for c in previous if c.get("type") == "Ready"):
        phase = "Degraded"
    else:
        phase = "Provisioning"
    entry = directory.get(municipality.spec.ags) if directory else None
    status = {
        "phase": phase,
        "observedGeneration": generation,
        "conditions": conditions,
        "names": desired.created_names(),
        "endpoints": _endpoints(backends, desired),
        "usage": {"residents": entry.population if entry else None, "measuredAt": now(),
                  **_metered_usage(backends, desired.slug)},
    }
    return Outcome(status=status, events=events, retry=retry, desired=desired)


_LEDGERS: dict[int, Any] = {}


def _metered_usage(backends, slug: str) -> dict[str, int]:
    """Readings ingested and API queries of the last 24 whole hours (the current one included)
    from the usage ledger (docs/metering.md). Refreshed as often as the municipality is
    reconciled — on changes and every drift interval — at the cost of one small query on the
    hourly sums. Left out when the ledger cannot be read: usage never fails a reconcile."""
    from urbanstack.runtime.metering.events import API_QUERIES, READINGS_INGESTED
    from urbanstack.runtime.metering.ledger import Ledger
    from urbanstack.runtime.metering.samples import database_bytes

    try:
        client = backends.warehouse._client()
        ledger = _LEDGERS.get(id(client))
        if ledger is None or ledger.client is not client:
            ledger = _LEDGERS[id(client)] = Ledger(client)
        end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        totals = ledger.totals(end - dt.timedelta(hours=24), end, [slug]).get(slug, {})
        storage = database_bytes(client, [slug])[slug]
        users = ledger.active_users(end - dt.timedelta(days=30), end, [slug]).get(slug, 0)
    except Exception:  # noqa: BLE001 - informative only
        return {}
    return {"eventsLast24H": totals.get(READINGS_INGESTED, 0), "queriesLast24H": totals.get(API_QUERIES, 0),
            "storageBytes": storage, "activeUsers30d": users}


def _endpoints(backends, desired: DesiredState) -> dict[str, str]:
    endpoints = {
        "kafkaBootstrap": backends.settings.kafka_bootstrap,
        "topicPrefix": desired.streaming.topic_prefix,
        "warehouseDatabase": desired.warehouse.database,
        "namespace": desired.runtime.namespace,
        "credentialsSecret": f"{desired.runtime.secret.namespace}/{desired.runtime.secret.name}",
    }
    try:
        endpoints.update(backends.identity.endpoints(desired.identity))
    except Exception:  # noqa: BLE001 - endpoints are informative; never fail a reconcile over them
        pass
    return endpoints


def _blocked(generation, previous, reason: str, message: str, *, retry: bool) -> Outcome:
    conditions = [condition(t, None, reason, "not attempted: " + message, generation, previous)
                  for t in BACKEND_CONDITIONS]
    conditions.append(condition("Ready", False, reason, message, generation, previous))
    conditions.append(condition("Synced", False, reason, message, generation, previous))
    status = {"phase": "Failed" if not retry else "Pending", "observedGeneration": generation,
              "conditions": conditions}
    return Outcome(status=status, events=[Event("Warning", reason, message)], retry=retry)


def finalize(body: dict[str, Any], tools: dict[str, CityTool], backends) -> list[str]:
    """Remove the municipality from every backend as its deletionPolicy says.

    Retain (the default) removes access — logins, Kafka user and ACLs, database
    user, namespace with credentials — and keeps the data: database, tables,
    topics, the Keycloak organization's records. Delete removes everything.
    """
    spec = body.get("spec") or {}
    keep_data = spec.get("deletionPolicy", DeletionPolicy.retain.value) != DeletionPolicy.delete.value
    try:
        municipality = parse_municipality(body)
    except SpecError:
        return ["the spec never was valid, so nothing was provisioned"]
    # Deleting must not depend on tools that may themselves be gone: plan without them.
    stripped = municipality.model_copy(update={"spec": municipality.spec.model_copy(
        update={"tools": [t for t in municipality.spec.tools if t.name in tools]})})
    desired = plan(stripped, tools, mail=getattr(backends, "mail", None),
                   endpoints=getattr(backends, "endpoints", None))
    actions = []
    actions += backends.identity.delete(desired.identity, keep_data=keep_data)
    actions += backends.streaming.delete(desired.streaming, keep_data=keep_data)
    actions += backends.warehouse.delete(desired.warehouse, keep_data=keep_data)
    if getattr(backends, "messaging", None) is not None:
        actions += backends.messaging.delete(desired.messaging, keep_data=keep_data)
    actions += backends.runtime.delete(desired.runtime, keep_data=keep_data)
    return actions


