"""Quotas that hold across replicas: what the ledger recorded, read at a bounded rate,
plus what this process counted since it last read it.

Each replica (API or ingest) counts into the meters it already sends (the API meter,
the sink's batches); the consumer records them in the ledger, which every replica reads.
Reading the ledger on every request would put one warehouse query on every request, so
:class:`SharedCounts` reads it at most once every ``refresh_seconds`` (one query for all
municipalities) and keeps, per municipality, what this process counted itself since then.
A burst that arrives between two reads is therefore still caught by the replica it hits.

What the count can miss or count twice (bounded, and documented in docs/metering.md):

- usage of *other* replicas that has not reached the ledger yet (their meter window, 60 s
  for the API, plus the consumer's lag, plus ``refresh_seconds``) is not seen: a burst
  spread over N replicas within that time can exceed the quota by that much;
- this process's own increments of the last ``settle_seconds`` before a read are kept
  after it (they may not have reached the ledger yet); those that had are counted twice
  for at most ``settle_seconds``: the quota refuses slightly early, never late.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Callable

log = logging.getLogger(__name__)


def _hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


class SharedCounts:
    """Usage of one ``meter`` per municipality from ``ledger``, refreshed at most every
    ``refresh_seconds``, plus local increments. ``span`` is "hour" (a sliding hour,
    estimated from the current UTC hour and the previous one weighted by the part of it
    still inside the hour) or "day" (the current UTC day, exact)."""

    def __init__(self, ledger, meter: str, *, span: str = "hour", refresh_seconds: float = 10.0,
                 settle_seconds: float = 90.0, clock: Callable[[], float] = time.time):
        if span not in ("hour", "day"):
            raise ValueError("span must be 'hour' or 'day'")
        if refresh_seconds <= 0 or settle_seconds < 0:
            raise ValueError("refresh_seconds must be positive and settle_seconds at least 0")
        self.ledger, self.meter, self.span = ledger, meter, span
        self.refresh_seconds, self.settle_seconds = refresh_seconds, settle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._hours: dict[str, dict[datetime, int]] = {}     # from the last read
        # subject -> [[time of the latest count in it, count], ...], one entry per second at most
        self._local: dict[str, deque[list]] = {}
        self.reads = 0            # ledger queries made (for tests and metrics)
        self.read_failures = 0

    def _start(self, now: datetime) -> datetime:
        if self.span == "day":
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        return _hour(now) - timedelta(hours=1)

    def _refresh(self, now: float) -> None:
        if self._read_at is not None and now - self._read_at < self.refresh_seconds:
            return
        moment = datetime.fromtimestamp(now, timezone.utc)
        try:
            hours = self.ledger.hours_of(self.meter, self._start(moment), _hour(moment) + timedelta(hours=1))
        except Exception as exc:  # the ledger down: keep the last figures and the local counts
            self.read_failures += 1
            log.warning("quota: cannot read the usage ledger (%s); counting locally until it answers",
                        type(exc).__name__)
            self._read_at = now
            return
        self.reads += 1
        self._hours, self._read_at = hours, now
        keep_from = now - self.settle_seconds
        for subject in list(self._local):
            entries = self._local[subject]
            while entries and entries[0][0] < keep_from:
                entries.popleft()
            if not entries:
                del self._local[subject]

    def _recorded(self, subject: str, now: float) -> float:
        hours = self._hours.get(subject, {})
        moment = datetime.fromtimestamp(now, timezone.utc)
        if self.span == "day":
            start = self._start(moment)
            return sum(q for h, q in hours.items() if h >= start)
        current = _hour(moment)
        previous = hours.get(current - timedelta(hours=1), 0)
        left = 1.0 - (moment - current).total_seconds() / 3600.0
        return hours.get(current, 0) + previous * left

    def used(self, subject: str) -> int:
        now = self._clock()
        with self._lock:
            self._refresh(now)
            local = sum(n for _, n in self._local.get(subject, ()))
            return math.ceil(self._recorded(subject, now)) + local

    def add(self, subject: str, count: int) -> None:
        now = self._clock()
        with self._lock:
            self._count(subject, count, now)

    def _count(self, subject: str, count: int, now: float) -> None:
        entries = self._local.setdefault(subject, deque())
        if entries and math.floor(entries[-1][0]) == math.floor(now):
            entries[-1][0], entries[-1][1] = now, entries[-1][1] + count
        else:
            entries.append([now, count])

    def take(self, subject: str, count: int, limit: int) -> int | None:
        """Count ``count`` if ``used + count <= limit`` and return None; else return what is used."""
        now = self._clock()
        with self._lock:
            self._refresh(now)
            used = math.ceil(self._recorded(subject, now)) + sum(n for _, n in self._local.get(subject, ()))
            if used + count > limit:
                return used
            self._count(subject, count, now)
            return None

    def give_back(self, subject: str, count: int) -> None:
        """Undo a local count whose work failed (at most what is counted locally)."""
        with self._lock:
            entries = self._local.get(subject)
            while entries and count > 0:
                taken = min(entries[-1][1], count)
                entries[-1][1] -= taken
                count -= taken
                if entries[-1][1] == 0:
                    entries.pop()
