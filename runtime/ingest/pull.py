"""Pull ingest: fetch the sources each municipality declares, publish what is new.

A source is an entry of ``Municipality.spec.sources`` (see ``operator/models.py``)::

    sources:
      - name: pegel-ems
        connector: pegelonline
        url: https://www.pegelonline.wsv.de/webservices/rest-api/v2/stations.json
        params: {ids: "…"}
        tool: pegel-warnung
        dataset: water_levels
        intervalSeconds: 900

One run of a source: fetch (timeouts; 5xx, 429 and network errors retried with
exponential backoff), parse with the existing connector, keep only readings newer
than the sensor's cursor, publish with the tenant's own Kafka user, and only after
Kafka acknowledged everything advance the cursors. A crash between publishing and
advancing means the next run fetches and publishes those readings again; they keep
their ``event_id`` and the sink drops the duplicates. Nothing is ever skipped.

Cursors live in one :class:`~urbanstack.runtime.connectors.cursor.FileCursorStore`
(``<state dir>/ingest/cursors.json``), keyed by tenant, source name and sensor. That
is right for one scheduler replica; two replicas would each fetch every source
(duplicates, no loss). Run one, or give each replica its own share of tenants.

Rejected upstream records go to the tenant's DLQ once per scheduler process, not on
every poll (an upstream that keeps serving the same broken station would otherwise
fill the DLQ). Upstream URLs must resolve to public addresses unless
``allow_private_networks`` is set (tests, a municipality's own network);
link-local addresses (cloud metadata) are always refused.

State per source is in :meth:`PullScheduler.status` (served as
``GET /ingest/v1/sources``) and in Prometheus metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from urbanstack.operator.models import Municipality, Source
from urbanstack.runtime.api.catalogue import Catalogue
from urbanstack.runtime.connectors import ParseResult, hystreet, pegelonline, sensorthings, weather
from urbanstack.runtime.connectors.cursor import CursorStore, advance, newer_than_cursor
from urbanstack.runtime.ingest.tenants import (CredentialSource, CredentialsUnavailable, DailyQuota, QuotaExceeded,
                                               TenantPublishers)
from urbanstack.runtime.producer import DeliveryError, rejection_value

log = logging.getLogger(__name__)

USER_AGENT = "urbanstack-ingest/1 (+https://urbanstack.io)"
# Query parameters that configure the parser instead of being sent upstream.
PARSER_OPTIONS = {"sensorthings": ("field",)}
MAX_RESPONSE_BYTES = 50 * 1024 * 1024
_SEEN_REJECTIONS_LIMIT = 20_000


class FetchError(Exception):
    """The source could not be fetched; the message is safe to show (no query string, no token)."""


def _where(url: str) -> str:
    """The URL without query and credentials: what status and logs may show."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclasses.dataclass(frozen=True)
class PullSource:
    tenant: str
    spec: Source

    @property
    def key(self) -> tuple[str, str]:
        return self.tenant, self.spec.name


@dataclasses.dataclass
class SourceState:
    tenant: str
    source: str
    connector: str
    tool: str
    dataset: str
    url: str
    interval_seconds: int
    state: str = "pending"              # pending, ok, error, suspended, invalid
    last_run_at: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    consecutive_failures: int = 0
    last_published: int = 0
    published_total: int = 0
    rejected_total: int = 0
    next_run_at: str | None = None


def _now_text(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _SourceCursors:
    """The shared cursor store, with keys scoped to one source (two sources of the same
    connector never share a cursor)."""

    def __init__(self, store: CursorStore, prefix: str):
        self._store, self._prefix = store, prefix

    def get(self, key: str):
        return self._store.get(self._prefix + key)

    def set(self, key: str, value) -> None:
        self._store.set(self._prefix + key, value)


def check_public(host: str, *, allow_private: bool) -> None:
    """Refuse hosts that resolve to link-local (always) or private/loopback addresses."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise FetchError(f"{host!r} resolves to {address}, which sources may not use")
        if not allow_private and (address.is_private or address.is_loopback or address.is_reserved):
            raise FetchError(f"{host!r} resolves to the non-public address {address}; sources must be public "
                             f"(set URBANSTACK_INGEST_ALLOW_PRIVATE_SOURCES=1 for a trusted internal network)")


class PullScheduler:
    """Runs every municipality's sources on their intervals; see the module docstring."""

    def __init__(self, catalogue: Catalogue, publishers: TenantPublishers, credentials: CredentialSource,
                 cursors: CursorStore, *, quota: DailyQuota | None = None, http: httpx.Client | None = None,
                 retries: int = 3, backoff: float = 2.0, timeout: float = 30.0,
                 allow_private_networks: bool = False, registry: CollectorRegistry | None = None,
                 workers: int = 4, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self._catalogue = catalogue
        self._publishers = publishers
        self._credentials = credentials
        self._cursors = cursors
        self._quota = quota or DailyQuota()
        self._retries = max(1, retries)
        self._backoff = backoff
        self._allow_private = allow_private_networks
        self._clock, self._sleep = clock, sleep
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True, max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            event_hooks={"request": [self._guard]})
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], SourceState] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._running: set[tuple[str, str]] = set()
        self._seen_rejections: dict[tuple[str, str], set[str]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull")
        registry = registry or CollectorRegistry()
        labels = ["tenant", "source"]
        self._m_success = Gauge("urbanstack_ingest_pull_last_success_timestamp_seconds",
                                "When the source was last fetched and published successfully.", labels,
                                registry=registry)
        self._m_error = Gauge("urbanstack_ingest_pull_last_error_timestamp_seconds",
                              "When the source last failed.", labels, registry=registry)
        self._m_failing = Gauge("urbanstack_ingest_pull_consecutive_failures",
                                "Failed runs of the source since its last success.", labels, registry=registry)
        self._m_events = Counter("urbanstack_ingest_pull_events", "Events published by pull sources.", labels,
                                 registry=registry)

    # Which sources exist --------------------------------------------------------
    def sources(self) -> list[PullSource]:
        owners = sorted({info.owner for info in self._catalogue.datasets()})
        found = []
        for slug in owners:
            municipality = self._catalogue.municipality(slug)
            if municipality is not None:
                found += [PullSource(slug, spec) for spec in municipality.spec.sources]
        return found

    def _state(self, source: PullSource) -> SourceState:
        spec = source.spec
        with self._lock:
            state = self._states.get(source.key)
            if state is None or (state.connector, state.url, state.tool, state.dataset, state.interval_seconds) != (
                    spec.connector.value, _where(spec.url), spec.tool, spec.dataset, spec.interval_seconds):
                previous = state
                state = SourceState(tenant=source.tenant, source=spec.name, connector=spec.connector.value,
                                    tool=spec.tool, dataset=spec.dataset, url=_where(spec.url),
                                    interval_seconds=spec.interval_seconds)
                if previous is not None:  # a changed spec keeps its history
                    for name in ("last_success_at", "published_total", "rejected_total"):
                        setattr(state, name, getattr(previous, name))
                self._states[source.key] = state
            return state

    # One run ----------------------------------------------------------------------
    def run_source(self, source: PullSource) -> SourceState:
        """Fetch, parse, publish what is new, then advance the cursors. Never raises."""
        state = self._state(source)
        now = self._clock()
        state.last_run_at = _now_text(now)
        try:
            published, rejected = self._run(source)
        except (FetchError, QuotaExceeded, DeliveryError, CredentialsUnavailable, _Invalid) as exc:
            self._failed(source, state, exc, now)
        except Exception as exc:  # noqa: BLE001 - one broken source must not stop the others
            log.exception("pull source %s/%s failed unexpectedly", source.tenant, source.spec.name)
            self._failed(source, state, RuntimeError(f"internal error ({type(exc).__name__}); see the log"), now)
        else:
            state.state = "ok"
            state.last_success_at = _now_text(self._clock())
            state.consecutive_failures = 0
            state.last_published = published
            state.published_total += published
            state.rejected_total += rejected
            self._m_success.labels(*source.key).set(self._clock())
            self._m_failing.labels(*source.key).set(0)
            self._m_events.labels(*source.key).inc(published)
        return state

    def _failed(self, source: PullSource, state: SourceState, error: Exception, now: float) -> None:
        state.state = "invalid" if isinstance(error, _Invalid) else "error"
        state.last_error = str(error)[:500]
        state.last_error_at = _now_text(now)
        state.consecutive_failures += 1
        state.last_published = 0
        self._m_error.labels(*source.key).set(now)
        self._m_failing.labels(*source.key).set(state.consecutive_failures)
        log.warning("pull source %s/%s: %s", source.tenant, source.spec.name, state.last_error)

    def _run(self, source: PullSource) -> tuple[int, int]:
        spec = source.spec
        municipality = self._catalogue.municipality(source.tenant)
        if municipality is None:
            raise _Invalid(f"municipality {source.tenant!r} is gone")
        if municipality.spec.suspended:
            raise _Invalid(f"municipality {source.tenant!r} is suspended; the source is not fetched")
        if self._catalogue.get(source.tenant, spec.tool, spec.dataset) is None:
            raise _Invalid(f"tool {spec.tool!r} is not enabled or has no dataset {spec.dataset!r}; "
                           f"fix spec.sources[{spec.name}]")
        data = self.fetch(source)
        result = self.parse(source, data)
        store = _SourceCursors(self._cursors, f"{source.tenant}/{spec.name}/")
        fresh = newer_than_cursor(result.events, store)
        seen = self._seen_rejections.setdefault(source.key, set())
        digests = {id(r): _digest(r) for r in result.rejected}
        new_rejections = [r for r in result.rejected if digests[id(r)] not in seen]
        limit = municipality.spec.plan.quotas().events_per_day
        counted = len(fresh) + len(new_rejections)   # rejected records count, as for push
        self._quota.reserve(source.tenant, counted, limit)
        try:
            self._publishers.publish(ParseResult(events=fresh, rejected=new_rejections),
                                     tenant=source.tenant, tool=spec.tool)
        except BaseException:
            self._quota.release(source.tenant, counted)
            raise
        # Kafka has everything: only now may the cursors move.
        advance(store, fresh)
        if len(seen) > _SEEN_REJECTIONS_LIMIT:
            seen.clear()
        seen.update(digests[id(r)] for r in new_rejections)
        for warning in result.warnings[:3]:
            log.info("pull source %s/%s: %s", source.tenant, spec.name, warning)
        return len(fresh), len(new_rejections)

    # Fetching -------------------------------------------------------------------------
    def _guard(self, request: httpx.Request) -> None:
        if request.url.scheme not in ("http", "https"):
            raise FetchError(f"only http(s) sources are fetched, not {request.url.scheme!r}")
        check_public(request.url.host, allow_private=self._allow_private)

    def request_params(self, source: PullSource) -> dict[str, str]:
        spec = source.spec
        params = {k: v for k, v in spec.params.items() if k not in PARSER_OPTIONS.get(spec.connector.value, ())}
        now = datetime.fromtimestamp(self._clock(), timezone.utc).replace(microsecond=0)
        if spec.connector.value == "pegelonline":
            params.setdefault("includeTimeseries", "true")
            params.setdefault("includeCurrentMeasurement", "true")
        elif spec.connector.value == "brightsky" and urlsplit(spec.url).path.rstrip("/").endswith("/weather"):
            params.setdefault("date", (now - timedelta(days=1)).isoformat())
            params.setdefault("last_date", (now + timedelta(hours=1)).isoformat())
        elif spec.connector.value == "hystreet":
            params.setdefault("from", (now - timedelta(days=1)).isoformat())
            params.setdefault("to", now.isoformat())
            params.setdefault("resolution", "hour")
        return params

    def _headers(self, source: PullSource) -> dict[str, str]:
        key = source.spec.credential_key
        if not key:
            return {}
        credentials = self._credentials.get(source.tenant)
        token = credentials.extra.get(key) if credentials else None
        if not token:
            raise _Invalid(f"credentialKey {key!r} is not in the municipality's urbanstack-ingest Secret; add it "
                           f"there (kubectl -n muni-{source.tenant} patch secret urbanstack-ingest …)")
        if source.spec.connector.value == "hystreet":
            return {"X-API-Token": token}
        return {"Authorization": f"Bearer {token}"}

    def fetch(self, source: PullSource) -> bytes:
        spec = source.spec
        where = _where(spec.url)
        params, headers = self.request_params(source), self._headers(source)
        problem = ""
        for attempt in range(self._retries):
            if attempt:
                self._sleep(min(self._backoff * 2 ** (attempt - 1), 60.0))
            try:
                with self._http.stream("GET", spec.url, params=params, headers=headers) as response:
                    if response.status_code == 200:
                        return _read_limited(response, where)
                    problem = f"HTTP {response.status_code} from {where}"
                    if response.status_code != 429 and response.status_code < 500:
                        raise FetchError(f"{problem}; check the source's url and params")
            except httpx.TimeoutException:
                problem = f"no answer from {where} in time"
            except httpx.TransportError as exc:
                problem = f"cannot reach {where} ({type(exc).__name__})"
            except httpx.TooManyRedirects:
                raise FetchError(f"{where} redirects too often") from None
        raise FetchError(f"{problem} (tried {self._retries} times)")

    def parse(self, source: PullSource, data: bytes) -> ParseResult:
        spec, tenant = source.spec, source.tenant
        connector = spec.connector.value
        if connector == "pegelonline":
            result = pegelonline.parse_stations_with_measurements(data, tenant)
        elif connector == "brightsky":
            result = weather.parse_brightsky(data, tenant, units=spec.params.get("units", "dwd"))
        elif connector == "hystreet":
            result = hystreet.parse_measurements(data, tenant)
        elif connector == "sensorthings":
            result = sensorthings.parse_observations(data, tenant, spec.dataset, field=spec.params.get("field"))
        elif connector == "dwd":
            path = urlsplit(spec.url).path.lower()
            if path.endswith(".zip"):
                result = weather.parse_dwd_cdc_zip(data, tenant)
            elif "produkt" in path:
                result = weather.parse_dwd_cdc(data, tenant)
            else:
                result = weather.parse_dwd_poi(data, tenant)
        else:  # the model's enum makes this unreachable
            raise _Invalid(f"unknown connector {connector!r}")
        # Connectors name their usual dataset; the source says where the events go.
        result.events = [event if event.dataset == spec.dataset else dataclasses.replace(event, dataset=spec.dataset)
                         for event in result.events]
        return result

    # Scheduling -------------------------------------------------------------------------
    def run_due(self) -> list[PullSource]:
        """Start every source whose time has come (in the worker pool); return them."""
        now = self._clock()
        current = self.sources()
        keys = {source.key for source in current}
        started = []
        with self._lock:
            for key in [k for k in self._states if k not in keys]:  # removed from the spec
                self._states.pop(key, None)
                self._due.pop(key, None)
        for source in current:
            with self._lock:
                due = self._due.get(source.key)
                if due is None:
                    due = self._due[source.key] = now  # new: fetch right away
                if due > now or source.key in self._running:
                    continue
                self._running.add(source.key)
            started.append(source)
            self._pool.submit(self._run_and_reschedule, source)
        return started

    def _run_and_reschedule(self, source: PullSource) -> None:
        try:
            state = self.run_source(source)
            interval = source.spec.interval_seconds
            if state.state == "error":  # retry sooner after a failure, but not in a tight loop
                interval = min(interval, max(60, 30 * 2 ** min(state.consecutive_failures, 5)))
            due = self._clock() + interval
            state.next_run_at = _now_text(due)
            with self._lock:
                self._due[source.key] = due
        finally:
            with self._lock:
                self._running.discard(source.key)

    def run(self, stop: threading.Event, tick: float = 1.0) -> None:
        """Until ``stop`` is set: start due sources every ``tick`` seconds."""
        while not stop.is_set():
            try:
                self.run_due()
            except Exception:  # noqa: BLE001 - keep scheduling
                log.exception("pull scheduler tick failed")
            stop.wait(tick)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            states = [dataclasses.asdict(s) for key, s in sorted(self._states.items())
                      if tenant is None or key[0] == tenant]
        if tenant is not None:  # declared but not run yet
            known = {s["source"] for s in states}
            municipality: Municipality | None = self._catalogue.municipality(tenant)
            for spec in (municipality.spec.sources if municipality else []):
                if spec.name not in known:
                    states.append(dataclasses.asdict(SourceState(
                        tenant=tenant, source=spec.name, connector=spec.connector.value, tool=spec.tool,
                        dataset=spec.dataset, url=_where(spec.url), interval_seconds=spec.interval_seconds)))
        return states


class _Invalid(Exception):
    """The source cannot run as declared; the message says what to fix."""


def _digest(rejection) -> str:
    record = rejection_value(rejection.record)
    return hashlib.sha256(b"\x1f".join([rejection.where.encode(), rejection.reason.encode(), record])).hexdigest()


def _read_limited(response: httpx.Response, where: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise FetchError(f"{where} sent more than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; narrow the params")
        chunks.append(chunk)
    return b"".join(chunks)


def source_from_dict(tenant: str, data: dict[str, Any]) -> PullSource:
    """A source from its manifest form (camelCase), validated like the CRD."""
    return PullSource(tenant, Source.model_validate(data))


def dumps_status(states: list[dict[str, Any]]) -> str:
    return json.dumps(states, indent=2, ensure_ascii=False)
