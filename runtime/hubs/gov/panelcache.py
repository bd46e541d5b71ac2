"""A short-lived cache of a dashboard's rendered panels.

Rendering the panels of a busy dashboard costs the engine's queries plus building the figures
(~0.1–0.6 s for a year of hourly data); when many people look at the same view, each would pay
it again. The cache keeps the panels' HTML for :data:`SECONDS` under a key that holds everything
the HTML depends on:

- the dashboard (id **and version**: a save or restore is a new key at once), the language, the
  resolved view (start, end, sensors, area) and the URLs the panels link to;
- who reads: the principal's municipality, roles and permissions (``None`` on the published
  page): what the engine lets a reader see depends on nothing else, so two people of the same
  municipality and role see the same panels, and no entry is ever shown to another municipality
  or role;
- the catalogue's entries of every dataset the panels read (owner, fields, shares, public,
  licence …): a share granted or withdrawn is a new key at once.

New data arriving in the warehouse shows after at most :data:`SECONDS` (auto-refresh is at least
every 30 s). Concurrent requests for the same missing key wait for the one that renders (no
stampede of identical queries). Bounded: at most :data:`ENTRIES` entries and :data:`MAX_BYTES` in
all; one larger than :data:`MAX_ENTRY_BYTES` is not kept.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable

SECONDS = 10.0
ENTRIES = 128
MAX_BYTES = 48 * 2**20
MAX_ENTRY_BYTES = 4 * 2**20


class PanelCache:
    def __init__(self, seconds: float = SECONDS, entries: int = ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.entries, self.max_bytes, self.clock = seconds, entries, max_bytes, clock
        self._items: OrderedDict[Hashable, tuple[float, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Event] = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, render: Callable[[], str]) -> str:
        """The cached HTML of ``key``, or ``render()``'s (kept for the next ones)."""
        while True:
            with self._lock:
                found = self._items.get(key)
                if found is not None and self.clock() < found[0]:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return found[1]
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait(60)  # another request renders this key; then read it (or render, if it failed)
        if self.seconds <= 0:  # switched off: nobody else renders this key, so nobody waits
            with self._lock:
                self._pending.pop(key).set()
            return render()
        try:
            html = render()
            self._put(key, html)
            return html
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def _put(self, key: Hashable, html: str) -> None:
        size = len(html) * 2  # upper bound of the str's memory for the text the pages hold
        if size > MAX_ENTRY_BYTES or self.seconds <= 0:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1]) * 2
            self._items[key] = (self.clock() + self.seconds, html)
            self._bytes += size
            now = self.clock()
            for stale in [k for k, (expires, _html) in self._items.items() if expires <= now]:
                self._bytes -= len(self._items.pop(stale)[1]) * 2
            while self._items and (len(self._items) > self.entries or self._bytes > self.max_bytes):
                _key, (_expires, dropped) = self._items.popitem(last=False)
                self._bytes -= len(dropped) * 2

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
