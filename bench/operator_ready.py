"""Time from `apply` to `Ready` for municipalities, with the real operator and
the real backends of the local platform.

    .venv/bin/python bench/operator_ready.py --single 5 --batch 100
    .venv/bin/python bench/operator_ready.py --single 0 --batch 1000 --keep
    .venv/bin/python bench/operator_ready.py --single 1 --batch 100 --drift-mode per-tenant --observe-pass --steady 180
    .venv/bin/python bench/operator_ready.py --single 1 --batch 100 --drift-mode bulk --observe-pass --steady 180

    .venv/bin/python bench/operator_ready.py --single 1 --batch 100 --steady 300 --compare-watch --drift-probe

``--compare-watch`` measures the steady state twice in the same session, with the drift sweep's
Kubernetes watch cache and without it (per-tenant reads, the previous bulk design), and
``--drift-probe`` times how long a deleted ConfigMap and ResourceQuota of one municipality stay
missing (watch events), and a deleted Kafka topic, the tenant's Kafka ACLs, a dropped ClickHouse
table and a deleted Keycloak client role of another (the drift sweep). Deletion (policy Delete) is timed until the custom resources are gone and then every
backend is listed for leftovers (Kafka topics, ACLs and SCRAM users, ClickHouse databases,
Keycloak clients, organizations and users, Kubernetes namespaces). Whatever the run created is
deleted in the end, also after a failure or Ctrl-C (unless --keep).

``--drift-mode`` switches between the previous design (every municipality re-observes every
backend on its own timer, reconciles in Kopf's executor in arrival order) and the bulk sweep
with the priority work queue. ``--observe-pass`` times one drift check of all municipalities
both ways, in the same run, backend call by backend call. ``--steady`` measures the process's
CPU while everything is Ready and nothing changes. ``--change-during-batch`` changes the spec
of a Ready municipality while the batch is being created and reports when its reconcile started.

Runs the operator in this process (like `urbanstack serve`), applies
municipalities in the organization strategy with both example CityTools, and
reports the median of single applies, the wall time until a batch applied at
once is Ready, the operator process's peak memory and a breakdown of where the
reconcile time goes (per backend). Municipalities are deleted (policy Delete)
afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import platform as machine
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import kubernetes
import kubernetes.watch
import yaml

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "urbanstack.io", "v1alpha1", "municipalities"


def _body(name: str) -> dict:
    body = yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml").read_text())
    body = copy.deepcopy(body)
    body["metadata"] = {"name": name}
    spec = body["spec"]
    spec.update(displayName=f"Bench {name}", admins=[f"admin@{name}.example.org"], deletionPolicy="Delete")
    spec["identity"] = {"strategy": "organization", "domains": [f"{name}.example.org"]}
    spec.pop("shares", None)
    return body


def _ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def wait_watched(custom, names, started: float, timeout: float, settled, absent_is_settled: bool) -> set[str]:
    """Wait until every name in ``names`` is settled; return those that are not when ``timeout`` ends.

    One listing, then a watch from its resourceVersion: at 1,000 municipalities a listing every
    0.2 s (what this benchmark did before) cost the API server most of a core and the operator's
    process the parsing, which slowed down what it measures."""
    pending, version = set(names), None
    while pending and time.monotonic() - started < timeout:
        if version is None:
            listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            version = listing["metadata"]["resourceVersion"]
            present = {item["metadata"]["name"]: item for item in listing["items"]}
            pending = {name for name in pending if not (
                settled("ADDED", present[name]) if name in present else absent_is_settled)}
            continue
        remaining = timeout - (time.monotonic() - started)
        stream = kubernetes.watch.Watch()
        try:
            for event in stream.stream(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                       resource_version=version, timeout_seconds=max(1, int(min(30, remaining))),
                                       allow_watch_bookmarks=True):
                obj = event["object"]
                if event["type"] == "ERROR" or not isinstance(obj, dict):
                    version = None
                    break
                version = obj["metadata"]["resourceVersion"]
                name = obj["metadata"].get("name")
                if name in pending and event["type"] != "BOOKMARK" and settled(event["type"], obj):
                    pending.discard(name)
                    if not pending:
                        break
        except kubernetes.client.rest.ApiException as exc:
            if exc.status != 410:
                raise
            version = None
        finally:
            stream.stop()
    return pending


# The backend calls inside ``observe``: what one drift check of one municipality costs, per verb.
BACKEND_VERBS = {
    "Kubernetes": ("_get", "_read_named"),
    "Kafka": ("_topics", "_describe", "_configs", "_scram_mechanisms", "_authenticates"),
    "ClickHouse": ("_query",),
    "Keycloak": ("_call",),
}


def _verb_key(backend: str, verb: str, args: tuple) -> str:
    """``Keycloak GET /{realm}/clients/{id}/roles``: paths with their names and ids folded, so one
    row is one kind of call; ClickHouse queries by the table they read."""
    if backend == "Keycloak" and len(args) >= 2:
        import re

        path = re.sub(r"/[0-9a-f-]{36}", "/{id}", args[1])
        path = re.sub(r"^/[^/]+", "/{realm}", path)
        path = re.sub(r"/roles/[^/]+", "/roles/{role}", path)
        return f"{args[0]} {path}"
    if backend == "ClickHouse" and args:
        import re

        match = re.search(r"FROM (system\.\w+)", args[0])
        return f"query {match.group(1) if match else args[0][:30]}"
    if backend == "Kubernetes" and verb == "_get" and args:
        return f"GET {args[0].kind}"
    return verb


class Timings:
    """Wraps each provisioner's verbs to learn where reconcile time goes, and (``calls``) the
    backend calls inside them, with wall time and the calling thread's CPU time."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        self.only_thread: int | None = None
        self.reset_calls()

    def wrap(self, provisioner):
        for verb in ("observe", "apply", "delete"):
            original = getattr(provisioner, verb)

            def timed(*args, __original=original, __key=f"{provisioner.name}.{verb}", **kwargs):
                started = time.perf_counter()
                try:
                    return __original(*args, **kwargs)
                finally:
                    with self.lock:
                        self.seconds[__key] += time.perf_counter() - started
                        self.calls[__key] += 1

            setattr(provisioner, verb, timed)

    def wrap_calls(self, provisioner, target=None):
        target = target or provisioner
        for verb in BACKEND_VERBS.get(provisioner.name, ()):
            original = getattr(target, verb, None)
            if original is None:
                continue

            def timed(*args, __original=original, __verb=verb, **kwargs):
                if self.only_thread is not None and threading.get_ident() != self.only_thread:
                    return __original(*args, **kwargs)
                started, cpu = time.perf_counter(), time.thread_time()
                try:
                    return __original(*args, **kwargs)
                finally:
                    key = f"{provisioner.name} {_verb_key(provisioner.name, __verb, args)}"
                    with self.lock:
                        self.call_seconds[key] += time.perf_counter() - started
                        self.call_cpu[key] += time.thread_time() - cpu
                        self.call_counts[key] += 1

            setattr(target, verb, timed)

    def reset_calls(self):
        with self.lock:
            self.call_seconds, self.call_cpu, self.call_counts = (defaultdict(float), defaultdict(float),
                                                                  defaultdict(int))

    def print_calls(self, title: str, tenants: int, top: int | None = None):
        print(title)
        print(f"  {'backend call':58} {'calls':>6} {'wall s':>8} {'cpu s':>7} {'per tenant':>11}")
        for key in sorted(self.call_seconds, key=self.call_seconds.get, reverse=True)[:top]:
            print(f"  {key[:58]:58} {self.call_counts[key]:6d} {self.call_seconds[key]:8.2f} {self.call_cpu[key]:7.2f} "
                  f"{self.call_seconds[key] / max(tenants, 1) * 1000:8.0f} ms")


def observe_pass(names: list[str], custom, backends, timings: Timings, settings) -> None:
    """One drift check of every municipality, both designs, in this thread: the previous one
    (each tenant observes each backend) and the bulk sweep (one listing per backend, compared in
    memory). Calls of the operator's own threads meanwhile are not counted."""
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools
    from urbanstack.operator.sweep import DriftSweeper

    items = [i for i in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
             if i["metadata"]["name"] in set(names)]
    tool_items = custom.list_cluster_custom_object(GROUP, VERSION, "citytools")["items"]
    tools = parse_tools(tool_items)
    timings.only_thread = threading.get_ident()
    try:
        timings.reset_calls()
        cpu, wall = time.thread_time(), time.perf_counter()
        per_backend: dict[str, float] = defaultdict(float)
        errors: dict[str, int] = defaultdict(int)
        for item in items:
            desired = plan(parse_municipality(item), tools, mail=backends.mail, endpoints=backends.endpoints)
            fixed = {"kafka-username": desired.streaming.user,
                     "warehouse-username": desired.warehouse.access.user}
            started = time.perf_counter()
            try:
                backends.runtime.observe(desired.runtime, fixed)
                credentials = backends.runtime.read_credentials(desired.runtime)
            except Exception as error:  # noqa: BLE001 - a backend hiccup under load: count it, go on
                errors[f"Kubernetes: {str(error)[:80]}"] += 1
                continue
            finally:
                per_backend["Kubernetes"] += time.perf_counter() - started
            for provisioner, part in ((backends.streaming, desired.streaming), (backends.warehouse, desired.warehouse),
                                      (backends.identity, desired.identity)):
                started = time.perf_counter()
                try:
                    provisioner.observe(part, credentials)
                except Exception as error:  # noqa: BLE001
                    errors[f"{provisioner.name}: {str(error)[:80]}"] += 1
                per_backend[provisioner.name] += time.perf_counter() - started
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        print(f"\nobserve pass, previous design (per municipality, every backend), {len(items)} municipalities: "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU in this thread; per backend "
              + ", ".join(f"{k} {v:.1f} s" for k, v in per_backend.items()))
        if errors:
            print("  errors (counted, not retried): " + "; ".join(f"{k} ×{v}" for k, v in errors.items()))
        timings.print_calls("backend calls of that pass:", len(items))

        sweeper = DriftSweeper(backends, interval=settings.drift_interval, audit_interval=0,
                               list_municipalities=lambda: items, list_tools=lambda: tool_items,
                               submit=lambda name, why: None)
        for attempt in ("cold", "warm"):   # cold: plans computed; warm: plans cached, as every later sweep
            timings.reset_calls()
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                report = sweeper.sweep(submit=False)
            except Exception as error:  # noqa: BLE001
                print(f"bulk sweep ({attempt}) failed: {error}")
                continue
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            print(f"\nobserve pass, bulk sweep ({attempt}), {report.tenants} municipalities: {wall:.1f} s wall, "
                  f"{cpu:.1f} s CPU in this thread; {report.summary()}")
            if report.drifted:
                print("  differences found: " + "; ".join(f"{k}: {v[:2]}" for k, v in list(report.drifted.items())[:3]))
            timings.print_calls("backend calls of that sweep:", report.tenants)
    finally:
        timings.only_thread = None


def admin_core(custom) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(custom.api_client)


def set_watch(backends, handlers, on: bool) -> None:
    """Switch the sweep's Kubernetes watch cache on or off while the operator runs."""
    from urbanstack.operator.kubecache import KubeCache

    runtime, sweeper = backends.runtime, handlers.state.sweeper
    if sweeper is None:   # the previous design (per-tenant drift timers) has no sweep and no cache
        return
    if on and runtime.cache is None:
        cache = KubeCache(backends.kube).start()
        if not cache.wait_synced(120):
            raise SystemExit("the watch cache did not sync in 120 s (is the urbanstack-operator-watch role bound?)")
        cache.listeners.append(sweeper.changed)
        runtime.cache = cache
    elif not on and runtime.cache is not None:
        cache, runtime.cache = runtime.cache, None
        cache.listeners.clear()
        cache.stop()


def steady_window(args, handlers, reconcile_started, tenants: int, label: str) -> None:
    """Process CPU ÷ wall over ``--steady`` seconds, starting after one full sweep in this design
    (so the window holds only steady-state sweeps, repairs and audits)."""
    sweeper = handlers.state.sweeper
    if sweeper is not None:
        first = sweeper.last
        deadline = time.monotonic() + args.drift_interval * 3 + 60
        while sweeper.last is first and time.monotonic() < deadline:
            time.sleep(0.5)
        while sweeper.last is not None and sweeper.last is first and time.monotonic() < deadline:
            time.sleep(0.5)
    counts = {n: len(v) for n, v in reconcile_started.items()}
    sweeps_before = sweeper.sweeps if sweeper else 0
    load_before = os.getloadavg()[0]
    observers_before = _observer_cpu(sweeper)
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(args.steady)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    observers = {k: v - observers_before.get(k, 0.0) for k, v in _observer_cpu(sweeper).items()}
    reconciles = sum(len(v) - counts.get(n, 0) for n, v in reconcile_started.items())
    cache = handlers.state.backends.runtime.cache
    print(f"steady state ({label}), {tenants} Ready, nothing changing, {wall:.0f} s: operator process CPU "
          f"{cpu:.1f} s = {cpu / wall * 100:.1f} % of one core; {reconciles} reconciles; "
          f"{(sweeper.sweeps - sweeps_before) if sweeper else 0} sweeps; CPU of the observing threads "
          + ", ".join(f"{k} {v:.1f} s ({v / wall * 100:.1f} %)" for k, v in sorted(observers.items()))
          + (f"; last sweep: {sweeper.last.summary()}" if sweeper and sweeper.last else "")
          + (f"; cache synced {cache.synced}, {cache.events} events, {cache.reconnects} reconnects"
             if cache is not None else "")
          + f" (load average {load_before:.1f} → {os.getloadavg()[0]:.1f})", flush=True)


def _observer_cpu(sweeper) -> dict[str, float]:
    """CPU seconds so far of the drift sweep's thread (listings, comparisons) plus its per-tenant
    comparisons on the short-lived drift-read threads, and of the watch threads: the idle cost of
    observing, apart from the reconciles that other operators on this shared machine may cause."""
    groups: dict[str, float] = {"sweep": sweeper.read_thread_cpu if sweeper else 0.0}
    for thread in threading.enumerate():
        group = ("sweep" if thread.name == "drift-sweep" else
                 "watch" if thread.name.startswith("kube-watch") else None)
        if group is None or thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):
            continue
        groups[group] = groups.get(group, 0.0) + seconds
    return groups


def drift_probe(name: str, custom, core) -> None:
    """Delete a tool ConfigMap and the ResourceQuota of ``name``; seconds until both are back."""
    namespace = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)["status"]["names"]["namespace"]
    configmap = next(i.metadata.name for i in core.list_namespaced_config_map(namespace).items
                     if (i.metadata.labels or {}).get("urbanstack.io/tool"))
    started = time.monotonic()
    core.delete_namespaced_resource_quota("tenant-quota", namespace)
    core.delete_namespaced_config_map(configmap, namespace)
    while time.monotonic() - started < 300:
        names = {i.metadata.name for i in core.list_namespaced_config_map(namespace).items}
        if configmap in names and core.list_namespaced_resource_quota(namespace).items:
            print(f"drift probe: ConfigMap and ResourceQuota of {name} deleted, both back after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            return
        time.sleep(0.2)
    print(f"drift probe: {name} not repaired after 300 s", flush=True)


def backend_drift_probe(name: str, custom, backends, warehouse_client, timeout: float = 300) -> None:
    """Behind the operator's back, in the other backends: delete one Kafka topic and the tenant's
    ACL bindings, drop one ClickHouse table and delete one Keycloak client role of ``name``; seconds
    until each is back (the drift sweep finds these; no watch tells the operator)."""
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools

    item = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    tools = parse_tools(custom.list_cluster_custom_object(GROUP, VERSION, "citytools")["items"])
    planned = plan(parse_municipality(item), tools)
    names = item["status"]["names"]
    streaming, identity = backends.streaming, backends.identity
    topic, database, table = names["topics"][0], names["database"], names["tables"][0]
    client = next(c for c in planned.identity.clients if c.client_roles)
    realm, role = planned.identity.realm, client.client_roles[0].name
    uuid_ = identity._client(realm, client.client_id)["id"]
    acls = streaming._acls(planned.streaming)

    def topic_back() -> bool:
        return topic in streaming.admin.list_topics(timeout=10).topics

    def acls_back() -> bool:
        return acls <= streaming._acls(planned.streaming)

    def table_back() -> bool:
        return bool(warehouse_client.query(
            "SELECT 1 FROM system.tables WHERE database = {d:String} AND name = {t:String}",
            parameters={"d": database, "t": table}).result_rows)

    def role_back() -> bool:
        return role in identity._client_roles(realm, uuid_)

    started = time.monotonic()
    streaming.admin.delete_topics([topic])[topic].result(timeout=30)
    streaming._delete_acls(acls)
    warehouse_client.command(f"DROP TABLE `{database}`.`{table}`")
    identity._call("DELETE", f"/{realm}/clients/{uuid_}/roles/{role}", "deleting a role for the probe")
    checks = {f"Kafka topic {topic}": topic_back, f"Kafka ACLs of {planned.streaming.principal} ({len(acls)})": acls_back,
              f"ClickHouse table {database}.{table}": table_back, f"Keycloak role {client.client_id}/{role}": role_back}
    back: dict[str, float] = {}
    while len(back) < len(checks) and time.monotonic() - started < timeout:
        for what, check in checks.items():
            if what not in back:
                try:
                    if check():
                        back[what] = time.monotonic() - started
                except Exception:  # noqa: BLE001 - e.g. a topic being re-created; ask again
                    pass
        time.sleep(1)
    for what in checks:
        print(f"backend drift probe: {what} of {name} deleted, "
              + (f"back after {back[what]:.1f} s" if what in back else f"not back after {timeout:.0f} s"),
              flush=True)


def delete_all(names: list[str], custom, backends, timings, timeout: float) -> None:
    """Delete (policy Delete) what this run created; time until the resources are gone and until no
    backend lists anything of theirs."""
    if not names:
        return
    from urbanstack.operator.models import parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.reconcile import parse_tools

    tools = parse_tools(custom.list_cluster_custom_object(GROUP, VERSION, "citytools")["items"])
    wanted = set(names)
    items = [i for i in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
             if i["metadata"]["name"] in wanted]
    plans = [plan(parse_municipality(i), tools) for i in items]
    for key in [k for k in timings.seconds if k.endswith(".delete")]:
        timings.seconds.pop(key), timings.calls.pop(key)
    timings.reset_calls()
    cpu, started = time.process_time(), time.monotonic()
    for item in items:
        if (item.get("spec") or {}).get("deletionPolicy") != "Delete":
            custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, item["metadata"]["name"],
                                               {"spec": {"deletionPolicy": "Delete"}})
    for name in names:
        try:
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except kubernetes.client.rest.ApiException as exc:
            if exc.status != 404:
                raise
    left = wait_watched(custom, wanted, started, timeout, lambda kind, obj: kind == "DELETED",
                        absent_is_settled=True)
    if left:
        print(f"deletion timed out; {len(left)} municipalities left: {', '.join(sorted(left)[:10])} …")
        return
    gone = time.monotonic() - started
    cpu = time.process_time() - cpu
    print(f"deleted {len(names)} municipalities (policy Delete): all custom resources gone after {gone:.1f} s "
          f"(operator process CPU {cpu:.1f} s)", flush=True)
    print("where deletion time goes (summed over worker threads):")
    for key in sorted((k for k in timings.seconds if k.endswith(".delete")), key=timings.seconds.get, reverse=True):
        print(f"  {key:24} {timings.seconds[key]:8.1f} s in {timings.calls[key]:5d} calls "
              f"({timings.seconds[key] / timings.calls[key] * 1000:.0f} ms each)")
    timings.print_calls("the backend calls of the deletion (summed over worker threads, top 15):", len(names), top=15)
    while True:
        leftovers = backend_leftovers(plans, backends, admin_core(custom))
        if not leftovers or time.monotonic() - started > timeout:
            break
        time.sleep(2)
    print(f"backends listed after {time.monotonic() - started:.1f} s: "
          + ("nothing left" if not leftovers else "; ".join(f"{k}: {v}" for k, v in leftovers.items())), flush=True)


def backend_leftovers(plans, backends, core) -> dict[str, int]:
    """What each backend still lists of these municipalities (one listing per backend)."""
    left: dict[str, int] = {}
    kafka = backends.streaming.snapshot([p.streaming for p in plans])
    topics = {t.name for p in plans for t in p.streaming.topics} | {p.streaming.dlq_topic for p in plans}
    left["Kafka topics"] = len(topics & set(kafka.partitions))
    principals = {p.streaming.principal for p in plans}
    left["Kafka ACLs"] = sum(1 for acl in kafka.acls if acl[3] in principals)
    left["Kafka SCRAM users"] = sum(1 for p in plans if kafka.mechanisms.get(p.streaming.user))
    warehouse = backends.warehouse.snapshot([p.warehouse for p in plans])
    left["ClickHouse databases"] = len({p.warehouse.database for p in plans} & warehouse.databases)
    identity = backends.identity
    keycloak = identity.snapshot([p.identity for p in plans])
    realm = plans[0].identity.realm
    left["Keycloak clients"] = len({c.client_id for p in plans for c in p.identity.clients}
                                   & set(keycloak.clients.get(realm, {})))
    left["Keycloak organizations"] = len({p.identity.organization.alias for p in plans if p.identity.organization}
                                         & set(keycloak.organizations.get(realm, {})))
    users = {u["username"] for u in identity._list(f"/{realm}/users", "listing users", briefRepresentation="true")}
    left["Keycloak users"] = len({u.username for p in plans for u in p.identity.users} & users)
    namespaces = {ns.metadata.name for ns in core.list_namespace().items}
    left["Kubernetes namespaces"] = len({p.runtime.namespace for p in plans} & namespaces)
    return {k: v for k, v in left.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=5, help="sequential single applies (median reported)")
    parser.add_argument("--batch", type=int, default=100, help="municipalities applied at once")
    parser.add_argument("--workers", type=int, default=8, help="operator worker threads for sync handlers")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="do not delete the municipalities afterwards")
    parser.add_argument("--drift-mode", choices=("bulk", "per-tenant"), default="bulk")
    parser.add_argument("--drift-interval", type=float, default=60.0)
    parser.add_argument("--observe-pass", action="store_true",
                        help="time one drift check of all municipalities, per tenant and as a bulk sweep")
    parser.add_argument("--steady", type=float, default=0, help="seconds of steady-state CPU measurement")
    parser.add_argument("--kube-watch", choices=("on", "off"), default="on",
                        help="the drift sweep's Kubernetes watch cache (URBANSTACK_KUBE_WATCH)")
    parser.add_argument("--compare-watch", action="store_true",
                        help="measure --steady with the watch cache and then without it, same session")
    parser.add_argument("--drift-probe", action="store_true",
                        help="delete a ConfigMap and the ResourceQuota of one municipality, time the repair")
    parser.add_argument("--change-during-batch", type=float, default=10.0,
                        help="seconds into the batch to change a Ready municipality's spec (0: no change)")
    args = parser.parse_args()

    import kopf

    from urbanstack import warehouse
    from urbanstack.devplatform import credentials, platform
    from urbanstack.operator import handlers
    from urbanstack.operator.backends import Backends, operator_kubeconfig
    from urbanstack.settings import Settings

    import dataclasses

    settings = dataclasses.replace(credentials.fill(Settings.from_env()), drift_mode=args.drift_mode,
                                   drift_interval=args.drift_interval, operator_workers=args.workers,
                                   kube_watch=args.kube_watch == "on")
    print(f"design: drift mode {args.drift_mode}, interval {args.drift_interval:.0f} s, {args.workers} workers, "
          f"watch cache {args.kube_watch}; load average at start {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
          flush=True)
    platform.up(settings)   # also (re)installs this checkout's RBAC, the watch role among it
    admin = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(admin)
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        body = yaml.safe_load((ROOT / "examples" / tool).read_text())
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "citytools", body)
        except kubernetes.client.rest.ApiException as exc:
            if exc.status != 409:
                raise

    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='bench-warehouse-')}")
    kube = kubernetes.config.new_client_from_config(config_file=operator_kubeconfig(settings))
    backends = Backends.from_settings(settings, warehouse_client=client, kube=kube)
    timings = Timings()
    for provisioner in (backends.runtime, backends.streaming, backends.warehouse, backends.identity):
        timings.wrap(provisioner)
        timings.wrap_calls(provisioner)
    if backends.messaging is not None:
        timings.wrap(backends.messaging)
    handlers.configure(settings, backends)
    reconcile_started: dict[str, list[float]] = defaultdict(list)
    original_reconcile = handlers._reconcile_municipality

    def recorded(name, *a, **kw):
        reconcile_started[name].append(time.monotonic())
        return original_reconcile(name, *a, **kw)

    handlers._reconcile_municipality = recorded
    os.environ["KUBECONFIG"] = operator_kubeconfig(settings) or ""
    stop, ready = threading.Event(), threading.Event()

    def run_operator():
        loop = asyncio.new_event_loop()
        from concurrent.futures import ThreadPoolExecutor

        loop.set_default_executor(ThreadPoolExecutor(max_workers=args.workers))
        loop.run_until_complete(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=run_operator, daemon=True)
    thread.start()
    ready.wait(60)
    run = uuid.uuid4().hex[:4]
    created: list[str] = []
    try:
        _measure(args, custom, backends, timings, settings, handlers, reconcile_started, run, created, client)
    finally:
        if not args.keep:
            try:
                delete_all(created, custom, backends, timings, args.timeout)
            except BaseException as error:  # noqa: BLE001 - say what is left, then stop the operator
                print(f"cleanup failed ({error!r}); left behind: {', '.join(created)}", flush=True)
        stop.set()
        thread.join(60)
    return 0


def _measure(args, custom, backends, timings, settings, handlers, reconcile_started, run, created,
             warehouse_client) -> None:

    def wait_all(names: list[str], started: float) -> float:
        pending = wait_watched(custom, names, started, args.timeout,
                               lambda kind, obj: kind != "DELETED" and _ready(obj), absent_is_settled=False)
        if pending:
            raise SystemExit(f"timeout: {len(pending)} of {len(names)} not Ready")
        return time.monotonic() - started

    change: dict[str, float] = {}

    def change_later(name: str, at: float) -> None:
        """Change a Ready municipality's spec while the batch is created: when does its reconcile start?"""
        time.sleep(max(0.0, at - time.monotonic()))
        before = len(reconcile_started[name])
        custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"spec": {"retentionDays": 400}})
        change["at"] = time.monotonic()
        while time.monotonic() - change["at"] < args.timeout and len(reconcile_started[name]) <= before:
            time.sleep(0.05)
        if len(reconcile_started[name]) > before:
            change["started_after"] = reconcile_started[name][before] - change["at"]

    singles = []
    for i in range(args.single):
        name = f"b{run}-s{i}"
        started = time.monotonic()
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _body(name))
        created.append(name)
        singles.append(wait_all([name], started))
        print(f"single {i + 1}/{args.single}: {singles[-1]:.1f} s", flush=True)

    batch_seconds = None
    if args.batch:
        names = [f"b{run}-m{i:04d}" for i in range(args.batch)]
        timings.reset_calls()
        started = time.monotonic()
        changer = None
        if args.change_during_batch and created:
            changer = threading.Thread(target=change_later, args=(created[0], started + args.change_during_batch))
            changer.start()
        for name in names:
            custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _body(name))
            created.append(name)
        applied = time.monotonic() - started
        batch_seconds = wait_all(names, started)
        if changer is not None:
            changer.join()
        print(f"batch of {args.batch}: all Ready after {batch_seconds:.1f} s (applying took {applied:.1f} s)",
              flush=True)
        timings.print_calls(f"the backend calls of the batch (summed over worker threads, top 20):", args.batch,
                            top=20)

    if change:
        print(f"spec change of {created[0]} {args.change_during_batch:.0f} s into the batch: reconcile started "
              f"after {change.get('started_after', float('nan')):.1f} s", flush=True)
    all_names = [n for n in created]
    if args.observe_pass:
        observe_pass(all_names, custom, backends, timings, settings)
    if args.steady:
        for watch in (("on", "off") if args.compare_watch else (args.kube_watch,)):
            set_watch(backends, handlers, watch == "on")
            steady_window(args, handlers, reconcile_started, len(all_names), f"watch cache {watch}")
    if args.drift_probe and all_names:
        set_watch(backends, handlers, True)
        drift_probe(all_names[-1], custom, admin_core(custom))
        backend_drift_probe(all_names[len(all_names) // 2], custom, backends, warehouse_client)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"machine: {machine.node()} {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
          f"load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    if singles:
        print(f"apply → Ready, single municipality: median {statistics.median(singles):.1f} s "
              f"(min {min(singles):.1f}, max {max(singles):.1f}, n={len(singles)})")
    if batch_seconds is not None:
        print(f"apply → Ready, {args.batch} at once: {batch_seconds:.1f} s "
              f"({args.batch / batch_seconds:.2f} municipalities/s)")
    print(f"operator process peak RSS (includes chDB and this script): {peak_mib:.0f} MiB")
    print("where reconcile time goes (summed over worker threads):")
    for key in sorted(timings.seconds, key=timings.seconds.get, reverse=True):
        print(f"  {key:24} {timings.seconds[key]:8.1f} s in {timings.calls[key]:5d} calls "
              f"({timings.seconds[key] / timings.calls[key] * 1000:.0f} ms each)")



if __name__ == "__main__":
    sys.exit(main())
