"""The drift sweep: one bulk observation per backend per interval for every municipality.

The previous design re-observed each municipality on its own timer: ~50 Keycloak calls, ~13
Kubernetes reads, 5 Kafka and 4 ClickHouse calls per tenant per interval, so the cost of doing
nothing grew with the number of tenants (docs/benchmarks.md, docs/scale.md). The sweep instead
asks each backend once for everything (``provisioner.snapshot(parts)``: one topic and one ACL
listing in Kafka, one query per system table in ClickHouse, the paged clients and organizations
of the shared Keycloak realm) and compares every tenant's plan with it in memory
(``provisioner.observe_from(snapshot, part)``). Only a municipality that differs gets a
reconcile, queued behind changes and creations (``workqueue.DRIFT``): the reconcile observes
that municipality in full and repairs exactly what it finds, as before.

What a snapshot cannot show (a password that no longer logs in, Keycloak roles, scope
mappings, client secrets, members) is checked by a rotating audit: every sweep also queues a
full reconcile of the next few municipalities, so each is audited once per
``audit_interval``. A provisioner without ``snapshot``/``observe_from`` (the interface is
optional) is observed per tenant in the sweep, as before — so a new backend works unchanged and
only costs what it used to.

Kubernetes is compared with a watch-fed cache (operator/kubecache.py) when the runtime
provisioner has one. The cache also reports every change it sees: the municipality whose
namespace changed is compared again about ``WATCH_SETTLE`` seconds later (changes close together
are checked once) and queued if it differs, so a deleted Kubernetes object is repaired within
seconds instead of at the next sweep.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from urbanstack.operator.models import SpecError, parse_municipality
from urbanstack.operator.plan import DesiredState, PlanError, plan
from urbanstack.operator.provisioners.base import BackendUnavailable
from urbanstack.operator.reconcile import after_runtime, parse_tools

log = logging.getLogger("urbanstack.operator.sweep")

SWEPT_PHASES = ("Ready", "Degraded", "Suspended")
WATCH_SETTLE = 1.0   # seconds between a change the watch reports and the comparison it triggers


@dataclass
class SweepReport:
    tenants: int = 0
    drifted: dict[str, list[str]] = field(default_factory=dict)   # municipality -> what differs (first items)
    audited: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))   # step -> wall seconds
    unavailable: dict[str, str] = field(default_factory=dict)      # backend -> error

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(self.seconds.items()))
        return (f"{self.tenants} municipalities, {len(self.drifted)} drifted, {len(self.audited)} audited; {steps}"
                + (f"; unavailable: {', '.join(self.unavailable)}" if self.unavailable else ""))


def _parts(backends, desired: DesiredState) -> list[tuple[Any, Any]]:
    return [(backends.runtime, desired.runtime), *after_runtime(backends, desired),
            *getattr(backends, "extra_parts", lambda d: [])(desired)]


class DriftSweeper:
    def __init__(self, backends, *, interval: float, audit_interval: float,
                 list_municipalities: Callable[[], list[dict]], list_tools: Callable[[], list[dict]],
                 submit: Callable[[str, str], Any], read_workers: int = 4):
        """``submit(name, why)`` queues a drift reconcile of municipality ``name``; ``read_workers``
        threads overlap the reads of a provisioner that still reads per tenant (Kubernetes)."""
        self.read_workers = read_workers
        self.backends = backends
        self.interval = interval
        self.audit_interval = audit_interval
        self._list_municipalities = list_municipalities
        self._list_tools = list_tools
        self._submit = submit
        self._plans: dict[tuple, DesiredState] = {}
        self._audit_cursor = 0
        self._watched: dict[str, tuple[str, DesiredState]] = {}   # namespace -> (municipality, plan), last sweep
        self._changed: set[str] = set()                            # namespaces the watch reported
        self._changed_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: SweepReport | None = None
        self.sweeps = 0
        self.read_thread_cpu = 0.0   # CPU seconds of comparisons on the short-lived drift-read threads (benchmarks)

    # planning ----------------------------------------------------------------
    def _plan(self, body: dict, tools: dict, tools_key: tuple) -> DesiredState | None:
        meta = body["metadata"]
        key = (meta["name"], meta.get("uid"), meta.get("generation"), tools_key)
        desired = self._plans.get(key)
        if desired is None:
            try:
                desired = plan(parse_municipality(body), tools, mail=getattr(self.backends, "mail", None),
                               endpoints=getattr(self.backends, "endpoints", None))
            except (SpecError, PlanError):
                return None
            self._plans[key] = desired
        return desired

    def _swept(self, items: Iterable[dict]) -> list[dict]:
        """Municipalities whose last reconcile saw their current spec; the rest are still on the
        change path (created, changed or retrying) and need no drift check."""
        chosen = []
        for item in items:
            meta, status = item["metadata"], item.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") not in SWEPT_PHASES:
                continue
            if status.get("observedGeneration") != meta.get("generation"):
                continue
            chosen.append(item)
        return sorted(chosen, key=lambda i: i["metadata"]["name"])

    # one sweep ---------------------------------------------------------------
    def sweep(self, *, submit: bool = True) -> SweepReport:
        report = SweepReport()
        started = time.perf_counter()
        tool_items = self._list_tools()
        items = self._swept(self._list_municipalities())
        tools = parse_tools(tool_items)
        tools_key = tuple(sorted((t["metadata"]["name"], t["metadata"].get("generation")) for t in tool_items))
        plans = {}
        for item in items:
            desired = self._plan(item, tools, tools_key)
            if desired is not None:
                plans[item["metadata"]["name"]] = desired
        live_keys = {(i["metadata"]["name"], i["metadata"].get("uid"), i["metadata"].get("generation"), tools_key)
                     for i in items}
        self._plans = {k: v for k, v in self._plans.items() if k in live_keys}
        self._watched = {desired.runtime.namespace: (name, desired) for name, desired in plans.items()}
        report.tenants = len(plans)
        report.seconds["list and plan"] += time.perf_counter() - started

        by_backend: dict[int, tuple[Any, list]] = {}
        for name, desired in plans.items():
            for provisioner, part in _parts(self.backends, desired):
                by_backend.setdefault(id(provisioner), (provisioner, []))[1].append((name, part))
        drifted: dict[str, list[str]] = defaultdict(list)
        for provisioner, entries in by_backend.values():
            self._compare(provisioner, entries, drifted, report)
        report.drifted = dict(drifted)

        # The rotating audit: a full reconcile of the next few, so each is audited once per audit_interval.
        names = sorted(plans)
        if names and self.audit_interval > 0:
            count = min(len(names), math.ceil(len(names) * self.interval / self.audit_interval))
            start = self._audit_cursor % len(names)
            report.audited = [names[(start + i) % len(names)] for i in range(count)]
            self._audit_cursor = start + count
        if submit:
            for name, what in report.drifted.items():
                self._submit(name, "; ".join(what[:3]))
            for name in report.audited:
                if name not in report.drifted:
                    self._submit(name, "audit")
        report.seconds["total"] = time.perf_counter() - started
        self.last = report
        self.sweeps += 1
        return report

    def _compare(self, provisioner, entries: list[tuple[str, Any]], drifted: dict[str, list[str]],
                 report: SweepReport) -> None:
        name = getattr(provisioner, "name", type(provisioner).__name__)
        started = time.perf_counter()
        snapshot_of = getattr(provisioner, "snapshot", None)
        compare = getattr(provisioner, "observe_from", None)
        if snapshot_of is None or compare is None:
            # No bulk observe: the tenant's reconcile observes this backend (as the previous design did).
            for tenant, _part in entries:
                drifted[tenant].append(f"{name}: observed per municipality")
            return
        try:
            snapshot = snapshot_of([part for _tenant, part in entries])
        except BackendUnavailable as error:
            report.unavailable[name] = str(error)
            log.warning("drift sweep: %s", error)
            return
        except Exception as error:  # noqa: BLE001 - a failing listing must not stop the other backends
            report.unavailable[name] = str(error)[:300]
            log.exception("drift sweep: listing %s failed", name)
            return
        report.seconds[f"{name} snapshot"] += time.perf_counter() - started
        started = time.perf_counter()

        def one(entry):
            tenant, part = entry
            cpu = time.thread_time()
            try:
                return tenant, compare(snapshot, part), None
            except Exception as error:  # noqa: BLE001 - a conflict or anything odd: let the reconcile say
                return tenant, None, error
            finally:
                if threading.current_thread().name.startswith("drift-read"):
                    with self._changed_lock:
                        self.read_thread_cpu += time.thread_time() - cpu

        if getattr(provisioner, "reads_per_tenant", False) and len(entries) > 1:
            # Kubernetes still reads each namespace's objects: overlap the round trips (CPU stays the same).
            with ThreadPoolExecutor(max_workers=self.read_workers, thread_name_prefix="drift-read") as pool:
                results = list(pool.map(one, entries))
        else:
            results = [one(entry) for entry in entries]
        for tenant, diff, error in results:
            if error is not None:
                drifted[tenant].append(f"{name}: {str(error)[:200]}")
            elif diff is None:
                drifted[tenant].append(f"{name}: needs a full observe")
            elif not diff.in_sync:
                drifted[tenant].append(f"{name}: {diff.summary()}")
        report.seconds[f"{name} compare"] += time.perf_counter() - started

    # changes the watch reports -------------------------------------------------
    def changed(self, namespace: str) -> None:
        """The watch cache saw a change in ``namespace`` (called on the cache's threads)."""
        if namespace in self._watched:
            with self._changed_lock:
                self._changed.add(namespace)
            self._wake.set()

    def check_changed(self, *, submit: bool = True) -> dict[str, list[str]]:
        """Compare the municipalities whose namespace changed with the cache; queue those that differ.
        One whose reconcile is running is checked again later (its own writes are what changed)."""
        with self._changed_lock:
            namespaces, self._changed = self._changed, set()
        runtime = self.backends.runtime
        snapshot = runtime.snapshot([])
        drifted: dict[str, list[str]] = {}
        busy = set()
        for namespace in namespaces:
            name, desired = self._watched.get(namespace, (None, None))
            if name is None:
                continue
            lock = getattr(self.backends, "lock", None)
            if lock is not None and lock(name).locked():
                busy.add(namespace)
                continue
            try:
                diff = runtime.observe_from(snapshot, desired.runtime)
            except Exception as error:  # noqa: BLE001 - let the reconcile say what is wrong
                drifted[name] = [f"{runtime.name}: {str(error)[:200]}"]
                continue
            if not diff.in_sync:
                drifted[name] = [f"{runtime.name} (watch): {diff.summary()}"]
        if busy:
            with self._changed_lock:
                self._changed |= busy
            self._wake.set()
        if submit:
            for name, what in drifted.items():
                log.info("drift seen by the watch: %s (%s)", name, what[0][:300])
                self._submit(name, "; ".join(what))
        return drifted

    # the loop ----------------------------------------------------------------
    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= due:
                started = time.monotonic()
                try:
                    report = self.sweep()
                    level = logging.INFO if report.drifted else logging.DEBUG
                    log.log(level, "drift sweep: %s", report.summary())
                except Exception:  # noqa: BLE001 - the next sweep tries again
                    log.exception("drift sweep failed")
                due = started + max(1.0, self.interval, time.monotonic() - started + 1.0)
            if self._wake.wait(max(0.0, due - time.monotonic())) and not self._stop.is_set():
                self._stop.wait(WATCH_SETTLE)   # let a burst of changes (a repair's own writes) settle
                self._wake.clear()
                try:
                    self.check_changed()
                except Exception:  # noqa: BLE001 - the next sweep compares everything anyway
                    log.exception("checking the changes the watch reported failed")

    def start(self, initial_delay: float = 0.0) -> "DriftSweeper":
        self._stop.clear()
        cache = getattr(self.backends.runtime, "cache", None)
        if cache is not None and self.changed not in cache.listeners:
            cache.listeners.append(self.changed)

        def run():
            if not self._stop.wait(initial_delay):
                self._run()

        self._thread = threading.Thread(target=run, name="drift-sweep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        cache = getattr(self.backends.runtime, "cache", None)
        if cache is not None and self.changed in cache.listeners:
            cache.listeners.remove(self.changed)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
