"""Per-tenant pieces the push endpoints and the pull scheduler share.

**Where credentials live.** The operator writes, into every tenant namespace
``muni-<slug>``, a Secret named ``urbanstack-ingest`` (the same name everywhere) with

- ``webhook-key``: ``<slug>.<random>``; the slug before the dot says whose key it
  claims to be, the whole key is compared in constant time with the stored one;
- ``kafka-username`` / ``kafka-password``: the tenant's own SCRAM user, whose ACLs
  allow only the tenant's topics (``<slug>.*``), so a bug here cannot write into
  another tenant's topics: the broker refuses it;
- any other keys an administrator adds (API tokens of pull sources).

The runtime identity may ``get`` Secrets named ``urbanstack-ingest`` and nothing
else (``operator/rbac.py``): a fixed name is what makes ``resourceNames`` work in a
ClusterRole across namespaces. It cannot list Secrets, nor read the tenant's main
credentials Secret (warehouse password, client secrets).

Values are cached for ``ttl`` seconds, so a rotated key (delete the key or the
Secret; the operator writes a new one on its next reconcile) is honoured within a
minute or so. Nothing here logs a key, a password or a token.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol

from urbanstack.operator import naming
from urbanstack.operator.rbac import INGEST_SECRET
from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.producer import DeliveryError, PublishReport, Publisher

log = logging.getLogger(__name__)

WEBHOOK_KEY = "webhook-key"
# A push request waits for Kafka at most METADATA_TIMEOUT (partition counts) plus
# message.timeout.ms and the producer's REPORT_MARGIN (delivery reports): 5 + 12 + 3 =
# 20 s. An unreachable broker fails the metadata lookup, so such a request gets its
# 503 after about 5 s; every message has its final report by then, so a 503 never
# leaves messages in flight.
INGEST_PRODUCER_CONFIG = {"message.timeout.ms": 12_000, "socket.timeout.ms": 5_000}
METADATA_TIMEOUT = 5.0


class CredentialsUnavailable(RuntimeError):
    """The tenant's credentials cannot be read right now (Kubernetes unreachable)."""


@dataclass(frozen=True)
class IngestCredentials:
    webhook_key: str | None
    kafka_username: str | None
    kafka_password: str | None
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"IngestCredentials(kafka_username={self.kafka_username!r}, keys={sorted(self.extra)})"


def tenant_of_key(key: str) -> str | None:
    """The slug a webhook key claims (``<slug>.<random>``), or None if it has no valid shape."""
    slug, dot, rest = key.partition(".")
    if not dot or not rest or not naming.is_slug(slug):
        return None
    return slug


def key_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; a missing expected key never matches."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class CredentialSource(Protocol):
    def get(self, tenant: str, *, refresh: bool = False) -> IngestCredentials | None: ...


def _from_values(values: Mapping[str, str]) -> IngestCredentials:
    return IngestCredentials(webhook_key=values.get(WEBHOOK_KEY), kafka_username=values.get("kafka-username"),
                             kafka_password=values.get("kafka-password"),
                             extra={k: v for k, v in values.items()
                                    if k not in (WEBHOOK_KEY, "kafka-username", "kafka-password")})


class StaticCredentials:
    """Credentials from a mapping ``{slug: {key: value}}`` (a single-tenant setup, tests)."""

    def __init__(self, values: Mapping[str, Mapping[str, str]]):
        self._values = {slug: _from_values(entry) for slug, entry in values.items()}

    def get(self, tenant: str, *, refresh: bool = False) -> IngestCredentials | None:
        return self._values.get(tenant)


class KubernetesCredentials:
    """Reads ``urbanstack-ingest`` in the tenant's namespace with the runtime's identity."""

    def __init__(self, api_client, *, ttl: float = 30.0, min_refresh: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        import kubernetes

        self._core = kubernetes.client.CoreV1Api(api_client)
        self._ttl, self._min_refresh, self._clock = ttl, min_refresh, clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, IngestCredentials | None]] = {}

    def get(self, tenant: str, *, refresh: bool = False) -> IngestCredentials | None:
        """``refresh`` re-reads a cached entry (a key that did not match may have been
        rotated), but at most once per ``min_refresh`` seconds per tenant, so wrong keys
        cannot make us hammer the Kubernetes API."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None:
            age = now - cached[0]
            if age < self._ttl and not (refresh and age >= self._min_refresh):
                return cached[1]
        value = self._read(tenant)
        with self._lock:
            self._cache[tenant] = (now, value)
        return value

    def _read(self, tenant: str) -> IngestCredentials | None:
        from kubernetes.client.rest import ApiException

        try:
            secret = self._core.read_namespaced_secret(INGEST_SECRET, naming.namespace(tenant))
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                # The runtime role lacks the rule from operator/rbac.py: a deployment problem.
                log.error("reading Secret %s in %s was forbidden; install the runtime ClusterRole from "
                          "operator/rbac.py", INGEST_SECRET, naming.namespace(tenant))
            raise CredentialsUnavailable(f"Kubernetes API answered {exc.status}") from None
        except Exception as exc:  # noqa: BLE001 - urllib3 errors: the API server is unreachable
            raise CredentialsUnavailable(f"Kubernetes API unreachable ({type(exc).__name__})") from None
        values = {k: base64.b64decode(v).decode("utf-8") for k, v in (secret.data or {}).items()}
        return _from_values(values)


class TenantPublishers:
    """One long-lived producer per tenant, logged in as the tenant's own Kafka user.

    Requests of one tenant share it and run concurrently: each publish call waits for
    its own messages only (:class:`Publisher`). A producer that failed is dropped and
    made anew; calls still running on it finish on it.
    """

    def __init__(self, settings, credentials: CredentialSource, *,
                 extra_config: Mapping[str, Any] | None = None, metadata_timeout: float = METADATA_TIMEOUT,
                 config_for: Callable[[str, IngestCredentials], Mapping[str, Any]] | None = None):
        self._settings = settings
        self._credentials = credentials
        self._extra = {**INGEST_PRODUCER_CONFIG, **(extra_config or {})}
        self._metadata_timeout = metadata_timeout
        self._config_for = config_for or self._default_config
        self._lock = threading.Lock()
        self._publishers: dict[str, Publisher] = {}

    def _default_config(self, tenant: str, credentials: IngestCredentials) -> dict[str, Any]:
        if not credentials.kafka_username or not credentials.kafka_password:
            raise CredentialsUnavailable(f"Secret {INGEST_SECRET} of {tenant} holds no Kafka user yet")
        return self._settings.kafka_config(credentials.kafka_username, credentials.kafka_password)

    def _publisher(self, tenant: str) -> Publisher:
        with self._lock:
            publisher = self._publishers.get(tenant)
            if publisher is not None:
                return publisher
        credentials = self._credentials.get(tenant)
        if credentials is None:
            raise CredentialsUnavailable(f"{tenant} has no Secret {INGEST_SECRET} yet (not provisioned?)")
        config = {**self._config_for(tenant, credentials), **self._extra}
        publisher = Publisher(config, metadata_timeout=self._metadata_timeout)
        with self._lock:
            return self._publishers.setdefault(tenant, publisher)

    def publish(self, result: ParseResult, *, tenant: str, tool: str) -> PublishReport:
        """Publish and wait for Kafka; raises :class:`DeliveryError` (retry later) or
        :class:`CredentialsUnavailable`."""
        return self._with_publisher(tenant, lambda publisher: publisher.publish(result, tenant=tenant, tool=tool))

    def publish_batch(self, batch, *, tool: str) -> PublishReport:
        """:meth:`publish` for an ObservationBatch (the columnar bulk format)."""
        return self._with_publisher(batch.tenant, lambda publisher: publisher.publish_batch(batch, tool=tool))

    def _with_publisher(self, tenant: str, send) -> PublishReport:
        publisher = self._publisher(tenant)
        try:
            return send(publisher)
        except DeliveryError:
            self._drop(tenant, publisher)
            raise

    def _drop(self, tenant: str, publisher: Publisher) -> None:
        with self._lock:
            if self._publishers.get(tenant) is publisher:
                del self._publishers[tenant]

    def close(self) -> None:
        with self._lock:
            entries, self._publishers = list(self._publishers.values()), {}
        for publisher in entries:
            try:
                publisher.flush()
            except DeliveryError as exc:
                log.warning("closing a producer: %s", exc)


class QuotaExceeded(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DailyQuota:
    """Records received per tenant and UTC day, against the plan's ``eventsPerDay``:
    events and rejected records alike, since a rejected record costs parsing and a
    dead-letter entry as much as an accepted one costs a row.

    Without ``shared`` counted in this process (one ingest replica); it restarts at zero
    after a restart. With ``shared`` (a :class:`~urbanstack.runtime.metering.quota.SharedCounts`
    of the ledger's ``readings_ingested``, span "day") the count is what the sinks metered
    today for all replicas, plus this process's reservations since the ledger was last read;
    records refused at push time go to the DLQ without passing the sink, so they count only
    in the replica that refused them, for ``settle_seconds``.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), *, shared=None):
        self._clock = clock
        self._shared = shared
        self._lock = threading.Lock()
        self._day: str | None = None
        self._used: dict[str, int] = {}

    def _roll(self) -> datetime:
        now = self._clock()
        day = now.strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._used = day, {}
        return now

    def reserve(self, tenant: str, events: int, limit: int) -> None:
        """Count ``events`` records for ``tenant`` or raise :class:`QuotaExceeded` (nothing counted)."""
        with self._lock:
            now = self._roll()
            used = self._used.get(tenant, 0)
            if self._shared is not None:
                used = self._shared.take(tenant, events, limit)
            if used is not None and used + events > limit:
                midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                retry_after = max(1, int((midnight - now).total_seconds()) + 1)
                raise QuotaExceeded(f"the plan allows {limit} events per day; {used} records were received "
                                    f"today (UTC, rejected ones count too) and this request has {events}. Raise "
                                    f"spec.plan.eventsPerDay or retry after midnight UTC", retry_after)
            if self._shared is None:
                self._used[tenant] = used + events

    def release(self, tenant: str, events: int) -> None:
        """Give back a reservation whose publish failed."""
        if self._shared is not None:
            self._shared.give_back(tenant, events)
            return
        with self._lock:
            self._roll()
            self._used[tenant] = max(0, self._used.get(tenant, 0) - events)

    def used(self, tenant: str) -> int:
        if self._shared is not None:
            return self._shared.used(tenant)
        with self._lock:
            self._roll()
            return self._used.get(tenant, 0)
