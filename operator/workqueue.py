"""The operator's work queue: changes before creations before drift repairs, and nobody starves.

Kopf starts one task per Municipality event; each hands its reconcile to this queue and waits
for the result, so at most ``workers`` reconciles run at once (backpressure on the backends)
and the order among waiting ones is by priority, not by arrival:

1. ``CHANGE``: a spec change of a municipality that exists (``update``), a deletion;
2. ``CREATE``: a new municipality, or one resumed after an operator restart;
3. ``DRIFT``: a repair the drift sweep found necessary, or its rotating full audit.

Within a class the oldest goes first. A waiting item is promoted one class for every
``promote_after`` seconds it waited, so a flood of changes cannot hold back creations or
repairs forever; but a promoted item does not overtake what was submitted in that class (a
batch of 1,000 creations, all promoted after 30 s, would otherwise put a spec change behind
every one of them). Instead, after ``fair_every`` takes in a row that passed over a promoted
item, the oldest promoted item goes next: lower classes keep at least one in
``fair_every + 1`` of the workers' turns while work of a higher class waits. A key (the
municipality) is queued at most once per class; submitting it again returns the future of the
queued item.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

CHANGE, CREATE, DRIFT = 0, 1, 2
PRIORITY_NAMES = {CHANGE: "change", CREATE: "create", DRIFT: "drift"}

log = logging.getLogger("urbanstack.operator.queue")


@dataclass
class _Item:
    priority: int
    key: str
    work: Callable[[], Any]
    future: Future
    queued_at: float
    seq: int
    started_at: float | None = field(default=None)


class WorkQueue:
    def __init__(self, workers: int = 4, *, promote_after: float = 30.0, fair_every: int = 3,
                 clock: Callable[[], float] = time.monotonic, name: str = "reconcile"):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if fair_every < 1:
            raise ValueError(f"fair_every must be at least 1, got {fair_every}")
        self.workers = workers
        self.promote_after = promote_after
        self.fair_every = fair_every
        self._passed_over = 0   # takes in a row that left a promoted item waiting
        self._clock = clock
        self._name = name
        self._items: list[_Item] = []
        self._queued: dict[tuple[str, int], _Item] = {}
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.waited: dict[int, list[float]] = {CHANGE: [], CREATE: [], DRIFT: []}   # seconds until start

    # producers ---------------------------------------------------------------
    def submit(self, key: str, priority: int, work: Callable[[], Any]) -> Future:
        with self._cond:
            queued = self._queued.get((key, priority))
            if queued is not None:
                return queued.future
            item = _Item(priority, key, work, Future(), self._clock(), next(self._seq))
            self._items.append(item)
            self._queued[(key, priority)] = item
            self._cond.notify()
            return item.future

    def pending(self, priority: int | None = None) -> int:
        with self._cond:
            return sum(1 for i in self._items if priority is None or i.priority == priority)

    def is_queued(self, key: str, priority: int) -> bool:
        with self._cond:
            return (key, priority) in self._queued

    # consumers ---------------------------------------------------------------
    def _effective(self, item: _Item, now: float) -> tuple[int, int]:
        promoted = int((now - item.queued_at) // self.promote_after) if self.promote_after > 0 else 0
        return (max(CHANGE, item.priority - promoted), item.seq)

    def take(self) -> _Item | None:
        """The next item by effective priority (blocks; None once stopped)."""
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            if self._stopping and not self._items:
                return None
            now = self._clock()
            ranked = [(self._effective(i, now)[0], i) for i in self._items]
            # (effective class, own class, age): a promoted item ranks behind its new class's own work …
            effective, best = min(ranked, key=lambda r: (r[0], r[1].priority, r[1].seq))
            promoted = [r for r in ranked if r[0] < r[1].priority]
            if effective < best.priority:   # a promoted item's turn came by rank
                self._passed_over = 0
            elif promoted and self._passed_over >= self.fair_every:
                # … but gets every (fair_every + 1)-th turn, so nothing starves.
                best = min(promoted, key=lambda r: (r[0], r[1].seq))[1]
                self._passed_over = 0
            elif promoted:
                self._passed_over += 1
            self._items.remove(best)
            del self._queued[(best.key, best.priority)]
            best.started_at = now
            self.waited[best.priority].append(now - best.queued_at)
            if len(self.waited[best.priority]) > 10_000:
                del self.waited[best.priority][:5_000]
            return best

    def _run(self) -> None:
        while True:
            item = self.take()
            if item is None:
                return
            if not item.future.set_running_or_notify_cancel():
                continue
            try:
                item.future.set_result(item.work())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                item.future.set_exception(exc)

    def start(self) -> "WorkQueue":
        with self._cond:
            self._stopping = False
            alive = [t for t in self._threads if t.is_alive()]
            for i in range(len(alive), self.workers):
                thread = threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
                thread.start()
                alive.append(thread)
            self._threads = alive
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let running items finish; cancel what still waits."""
        with self._cond:
            self._stopping = True
            for item in self._items:
                item.future.cancel()
            self._items.clear()
            self._queued.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
