"""Metering the API: per municipality, the data requests it made, the rows the warehouse
read for them and the bytes of the answers.

Requests are summed in memory and sent as one event per municipality and window
(``window_seconds``, default 60), never one per request. The event's id is fixed when the
window closes, so a retried send carries the same id. A process that dies loses the
window it was summing (under-counted, at most one window); this is the one meter whose
ids cannot be derived from the work itself.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from .emitter import MeterEmitter
from .events import (API_BYTES_READ, API_QUERIES, API_ROWS_READ, QUOTA_QUERIES, TYPE_QUERY, TYPE_USER, USER_DAYS,
                     MeterEvent, user_day_id, user_pseudonym)

log = logging.getLogger(__name__)

MAX_USERS_PER_DAY = 200_000
METERED_PATHS = ("/api/v1/datasets", "/api/v1/join", "/graphql", "/v1.1", "/ogcapi")


@dataclass
class RequestUsage:
    subject: str | None = None   # the caller's municipality, set once the token is verified
    rows_read: int = 0


current_usage: contextvars.ContextVar[RequestUsage | None] = contextvars.ContextVar("urbanstack_usage", default=None)


def add_rows_read(summary: dict | None) -> None:
    """Called by the query engine after each warehouse query of a request."""
    usage = current_usage.get()
    if usage is not None and summary:
        try:
            usage.rows_read += int(summary.get("read_rows", 0))
        except (TypeError, ValueError):
            pass


class ApiMeter:
    """Sums usage per municipality; a thread sends the sums every ``window_seconds``."""

    def __init__(self, emitter: MeterEmitter, *, window_seconds: float = 60.0, source: str = "/urbanstack/api"):
        self.emitter, self.window_seconds, self.source = emitter, window_seconds, source
        self._sums: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._users_day = None
        self._users_seen: set[tuple[str, str]] = set()

    def note_user(self, subject: str, user: str) -> None:
        """An active user of ``subject`` (a verified token's ``sub``): one event per user and
        UTC day, sent right away with an id derived from both, so every process and every
        repetition sends the same id. This process sends it once a day (at most
        ``MAX_USERS_PER_DAY`` remembered; beyond that a repeat is sent again, and the ledger
        drops it by id)."""
        now = datetime.now(timezone.utc)
        day = now.date()
        pseudonym = user_pseudonym(subject, user)
        with self._lock:
            if self._users_day != day:
                self._users_day, self._users_seen = day, set()
            if (subject, pseudonym) in self._users_seen:
                return
            if len(self._users_seen) >= MAX_USERS_PER_DAY:
                self._users_seen.clear()
            self._users_seen.add((subject, pseudonym))
        self.emitter.emit(MeterEvent(id=user_day_id(subject, pseudonym, day), source=self.source, type=TYPE_USER,
                                     subject=subject, time=datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
                                     dataset=pseudonym, quantities={USER_DAYS: 1}))

    def add(self, subject: str, rows_read: int, bytes_sent: int) -> None:
        with self._lock:
            sums = self._sums.setdefault(subject, {API_QUERIES: 0, API_ROWS_READ: 0, API_BYTES_READ: 0})
            sums[API_QUERIES] += 1
            sums[API_ROWS_READ] += rows_read
            sums[API_BYTES_READ] += bytes_sent

    def add_quota(self, subject: str, count: int) -> None:
        """Queries the query quota charged to ``subject`` (what every replica's quota reads back)."""
        with self._lock:
            sums = self._sums.setdefault(subject, {API_QUERIES: 0, API_ROWS_READ: 0, API_BYTES_READ: 0})
            sums[QUOTA_QUERIES] = sums.get(QUOTA_QUERIES, 0) + count

    def flush(self) -> int:
        """Send what was summed since the last flush; the number of events."""
        with self._lock:
            sums, self._sums = self._sums, {}
        now = datetime.now(timezone.utc)
        for subject, quantities in sums.items():
            self.emitter.emit(MeterEvent(id=str(uuid.uuid4()), source=self.source, type=TYPE_QUERY,
                                         subject=subject, time=now, quantities=quantities))
        return len(sums)

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.window_seconds):
                self.flush()
        self._thread = threading.Thread(target=loop, name="api-meter", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()
        self.emitter.close()


class MeteringMiddleware:
    """ASGI: gives each metered request a :class:`RequestUsage`, counts the bytes of its answer
    and hands the sums to the meter. Requests without a verified municipality (open data read
    anonymously, refused tokens) are not metered. The hubs use it too (``paths=None``): a Gov Hub
    panel is charged to the signed-in staff's municipality, a published dashboard or a Citizen
    Hub download to the municipality that owns it (docs/metering.md)."""

    def __init__(self, app, meter: ApiMeter, paths: tuple[str, ...] | None = METERED_PATHS):
        # paths=None (the hubs): every request gets a RequestUsage; only those whose route names
        # the municipality to charge (note_subject) are metered.
        self.app, self.meter, self.paths = app, meter, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or \
                (self.paths is not None and not scope["path"].startswith(self.paths)):
            return await self.app(scope, receive, send)
        usage = RequestUsage()
        scope.setdefault("state", {})["usage"] = usage
        token = current_usage.set(usage)
        sent = 0
        status = 0

        async def counting_send(message):
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            current_usage.reset(token)
            # GraphiQL's page (GET /graphql without a query string) and refusals are no data queries.
            if usage.subject is not None and status not in (401, 429) and \
                    not (scope["path"].startswith("/graphql") and scope["method"] == "GET"
                         and not scope.get("query_string")):
                self.meter.add(usage.subject, usage.rows_read, sent)


def note_caller(request, caller) -> None:
    """Name the municipality a metered request is charged to (the token's, never the request's)."""
    if caller is not None:
        note_subject(request, caller.tenant)


def note_subject(request, subject: str) -> None:
    """Charge this request to ``subject``, a municipality the route has verified (a hub's session
    of it, or the owner of the open data it serves). Without the metering middleware: nothing."""
    usage = request.scope.get("state", {}).get("usage")
    if usage is not None and subject:
        usage.subject = subject
