"""Kopf handlers: they only translate Kopf's events into ``reconcile`` calls and
write the result through the status subresource."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from urbanstack.operator import ags as ags_rules
from urbanstack.operator.backends import Backends
from urbanstack.operator.kubecache import KubeCache
from urbanstack.operator.models import SpecError, parse_citytool
from urbanstack.operator.reconcile import Outcome, condition, finalize, now, parse_tools, reconcile
from urbanstack.operator.provisioners.base import BackendUnavailable
from urbanstack.operator.sweep import DriftSweeper
from urbanstack.operator.workqueue import CHANGE, CREATE, DRIFT, WorkQueue
from urbanstack.settings import Settings

GROUP, VERSION = "urbanstack.io", "v1alpha1"
MUNICIPALITIES, CITYTOOLS = "municipalities", "citytools"
FINALIZER = "urbanstack.io/finalizer"
RETRY_DELAYS = (5, 10, 20, 40, 60)
# Update handlers follow the generation, not the spec. Kopf calls an update handler when the
# watched field differs from the configuration it handled last. A spec edited and undone while
# a reconcile of this municipality runs (or while Kopf waits to see its own annotation patch)
# reaches Kopf as a spec equal to the one it handled: with field="spec" it called nothing, and
# status.observedGeneration stayed behind for good. The API server bumps the generation for
# every spec change of a resource with a status subresource, and never takes it back, so it
# covers every spec change and the undone ones too.
CHANGED = "metadata.generation"

log = logging.getLogger("urbanstack.operator")


class _State:
    backends: Backends | None = None
    directory: ags_rules.MunicipalityDirectory | None = None
    drift_timer_registered = False
    kubeconfig: str | None = None
    settings: Settings | None = None
    queue: WorkQueue | None = None         # bulk mode: every reconcile goes through it
    sweeper: DriftSweeper | None = None    # bulk mode: the one drift sweep
    watched: dict[str, dict] = {}          # name -> the municipality as Kopf's watch last delivered it
    sweep_listings = 0


state = _State()


def configure(settings: Settings, backends: Backends | None = None,
              directory: ags_rules.MunicipalityDirectory | None = None) -> None:
    """Set up the connections before Kopf starts (tests pass their own backends).

    The drift timer is registered here because its interval is a setting."""
    from urbanstack.operator.backends import operator_kubeconfig

    state.backends = backends or Backends.from_settings(settings)
    state.kubeconfig = operator_kubeconfig(settings)
    state.directory = directory or ags_rules.load_directory(settings)
    state.settings = settings
    if settings.drift_mode == "bulk":
        # The sweep replaces the per-municipality timer (registered at most once per process, for
        # the previous design; it does nothing while the mode is bulk).
        return
    if not state.drift_timer_registered:
        kopf.timer(GROUP, VERSION, MUNICIPALITIES, id="drift", interval=settings.drift_interval,
                   initial_delay=min(settings.drift_interval, 30.0), idle=min(settings.drift_interval / 2, 10.0),
                   when=lambda body, **_: (not body.get("metadata", {}).get("deletionTimestamp")
                                           and _per_tenant_drift()))(municipality_drift)
        state.drift_timer_registered = True


def _custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(state.backends.kube)


def _tool_items() -> list[dict]:
    return _custom().list_cluster_custom_object(GROUP, VERSION, CITYTOOLS).get("items", [])


def _refresh_installed_in(slug: str, enabled: set[str], tool_items: list[dict]) -> None:
    """Keep every CityTool's ``status.installedIn`` true after ``slug`` changed
    its tools (or went away: ``enabled`` empty). Recomputed from all
    municipalities, so concurrent writers converge on the same list."""
    for tool in tool_items:
        name = tool["metadata"]["name"]
        listed = slug in ((tool.get("status") or {}).get("installedIn") or [])
        if listed != (name in enabled):
            installed = sorted(m["metadata"]["name"] for m in _installed_in(name))
            _write_status(CITYTOOLS, name, {"installedIn": installed})


def _write_status(plural: str, name: str, status: dict) -> None:
    try:
        _custom().patch_cluster_custom_object_status(GROUP, VERSION, plural, name, {"status": status})
    except ApiException as exc:
        if exc.status != 404:  # deleted meanwhile: nothing to report on
            raise


def _delay(retry: int) -> int:
    return RETRY_DELAYS[min(retry, len(RETRY_DELAYS) - 1)]


@kopf.on.login()
def login(logger, **_):
    """The operator's own identity: the in-cluster service account, or locally its
    least-privilege kubeconfig (never the admin's)."""
    if state.kubeconfig is None:
        return kopf.login_with_service_account(logger=logger)
    import yaml

    config = yaml.safe_load(open(state.kubeconfig))
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return kopf.ConnectionInfo(server=cluster["server"], ca_path=cluster.get("certificate-authority"),
                               token=user.get("token"), scheme="Bearer")


def _bulk() -> bool:
    return state.settings is not None and state.settings.drift_mode == "bulk"


def _per_tenant_drift() -> bool:
    return state.settings is not None and state.settings.drift_mode == "per-tenant"


def _get_municipality(name: str) -> dict | None:
    try:
        return _custom().get_cluster_custom_object(GROUP, VERSION, MUNICIPALITIES, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _drift_repair(name: str, why: str) -> None:
    """A reconcile the sweep asked for, from the municipality as it is now."""
    body = _get_municipality(name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    log.info("drift sweep: reconciling %s (%s)", name, why[:300])
    try:
        _reconcile_municipality(name, body, drift_check=True)
    except (kopf.TemporaryError, kopf.PermanentError):
        pass  # status says what is wrong; the next sweep looks again
    except Exception:  # noqa: BLE001 - nobody waits on a repair: say it here, the next sweep retries
        log.exception("drift repair of %s failed", name)


class _KopfContext:
    """Kopf keeps its settings and event queue in context variables; work that runs on the
    queue's threads runs in a copy of the context it was submitted from (for the sweep's repairs:
    of the first handler's), so ``kopf.event`` works there."""

    def __init__(self):
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()

    def copy(self) -> contextvars.Context:
        with self._lock:   # a context may be entered by one thread at a time
            return self._context.run(contextvars.copy_context)


def _in_context(work, context: contextvars.Context | None = None):
    context = context or contextvars.copy_context()
    return lambda: context.run(work)


_handler_context: list[_KopfContext] = []   # kopf's context as a handler sees it, captured once


def _drift_context() -> contextvars.Context | None:
    return _handler_context[0].copy() if _handler_context else None


# The sweep takes the municipalities from Kopf's own watch (``municipality_seen``) instead of
# listing all of them every interval (0.7 s of CPU per sweep at 1,000, docs/benchmarks.md); every
# FULL_LISTING_EVERY-th sweep lists them from the API server, compares with that listing, and drops
# names the watch did not report as deleted (a missed event cannot keep a deleted one for long).
FULL_LISTING_EVERY = 15


@kopf.on.event(GROUP, VERSION, MUNICIPALITIES)
async def municipality_seen(event, name, **_):
    """Keep the sweep's view of every municipality current (runs on Kopf's loop, no executor hop)."""
    if event.get("type") == "DELETED":
        state.watched.pop(name, None)
    elif isinstance(event.get("object"), dict):
        state.watched[name] = event["object"]


def _municipalities_for_sweep() -> list[dict]:
    state.sweep_listings += 1
    if state.watched and state.sweep_listings % FULL_LISTING_EVERY != 1:
        return list(state.watched.values())
    items = _custom().list_cluster_custom_object(GROUP, VERSION, MUNICIPALITIES)["items"]
    listed = {item["metadata"]["name"] for item in items}
    for name in [n for n in list(state.watched) if n not in listed]:
        state.watched.pop(name, None)
    return items


def _start_bulk() -> None:
    settings = state.settings
    state.watched, state.sweep_listings = {}, 0   # the first sweep lists; the watch fills in from there
    if settings.kube_watch:
        state.backends.runtime.cache = KubeCache(state.backends.kube).start()
    state.queue = WorkQueue(settings.operator_workers).start()
    queue = state.queue
    state.sweeper = DriftSweeper(
        state.backends, interval=settings.drift_interval, audit_interval=settings.drift_audit_interval,
        list_municipalities=_municipalities_for_sweep,
        list_tools=_tool_items,
        submit=lambda name, why: queue.submit(
            name, DRIFT, _in_context(lambda: _drift_repair(name, why), _drift_context())),
    ).start(initial_delay=min(settings.drift_interval, 30.0))


def _stop_bulk() -> None:
    if state.sweeper is not None:
        state.sweeper.stop()
        state.sweeper = None
    if state.queue is not None:
        state.queue.stop()
        state.queue = None
    runtime = getattr(state.backends, "runtime", None)
    cache = getattr(runtime, "cache", None)
    if cache is not None:
        runtime.cache = None
        cache.stop()


async def _queued(name: str, priority: int, work):
    """Run ``work`` on the work queue (bulk mode) or, as before, on the loop's executor."""
    if not _handler_context:   # kopf's event queue lives in handler context only (not at startup)
        _handler_context.append(_KopfContext())
    if state.queue is None:
        return await asyncio.get_running_loop().run_in_executor(None, work)
    return await asyncio.wrap_future(state.queue.submit(name, priority, _in_context(work)))


@kopf.on.cleanup()
def cleanup(**_):
    _stop_bulk()
    _handler_context.clear()


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="urbanstack.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="urbanstack.io", key="last-handled-configuration")
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.peering.name = "urbanstack"
    settings.peering.clusterwide = True
    settings.posting.level = logging.INFO
    settings.queueing.error_delays = RETRY_DELAYS
    _handler_context.clear()   # a context of an earlier operator run refers to its closed loop
    if _bulk():
        _stop_bulk()
        _start_bulk()


def _apply_outcome(name: str, outcome: Outcome, body, retry: int) -> None:
    _write_status(MUNICIPALITIES, name, outcome.status)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if outcome.permanent_error:
        raise kopf.PermanentError(outcome.permanent_error)
    if outcome.retry:
        raise kopf.TemporaryError("some backends are not ready; see status.conditions", delay=_delay(retry))


def _reconcile_municipality(name: str, body, retry: int = 0, *, drift_check: bool = False) -> Outcome:
    tool_items = _tool_items()
    with state.backends.lock(name):
        outcome = reconcile(dict(body), parse_tools(tool_items), state.backends, state.directory,
                            drift_check=drift_check)
    enabled = {tool.get("name") for tool in (body.get("spec") or {}).get("tools") or []}
    _refresh_installed_in(name, enabled, tool_items)
    _apply_outcome(name, outcome, body, retry)
    return outcome


@kopf.on.resume(GROUP, VERSION, MUNICIPALITIES)
@kopf.on.create(GROUP, VERSION, MUNICIPALITIES)
@kopf.on.update(GROUP, VERSION, MUNICIPALITIES, field=CHANGED)
async def municipality_changed(name, body, retry, reason, **_):
    """A change of an existing municipality goes before creations and resumes (bulk mode)."""
    priority = CHANGE if reason == kopf.Reason.UPDATE else CREATE
    await _queued(name, priority, lambda: _reconcile_unless_deleted(name, body, retry))


def _reconcile_unless_deleted(name: str, body, retry: int) -> Outcome | None:
    """A reconcile that waited in the queue first asks whether its municipality is still wanted:
    one deleted while it waited (a batch applied and withdrawn at once) is not provisioned first
    and then torn down; Kopf hands it to the deletion handler as soon as this returns."""
    if state.queue is not None:
        current = _get_municipality(name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            log.info("municipality %s was deleted while its reconcile waited; not provisioning it", name)
            return None
    return _reconcile_municipality(name, body, retry)


def municipality_drift(name, body, **_):
    """Re-observe every backend and repair what changed behind our back."""
    try:
        _reconcile_municipality(name, body, drift_check=True)
    except kopf.TemporaryError:
        pass  # status says what is wrong; the next tick retries


@kopf.on.delete(GROUP, VERSION, MUNICIPALITIES)
async def municipality_deleted(name, body, retry, **_):
    await _queued(name, CHANGE, lambda: _delete_municipality(name, body, retry))


def _delete_municipality(name, body, retry) -> None:
    _write_status(MUNICIPALITIES, name, {"phase": "Deleting"})
    tool_items = _tool_items()
    with state.backends.lock(name):
        try:
            actions = finalize(dict(body), parse_tools(tool_items), state.backends)
        except BackendUnavailable as error:
            kopf.event(body, type="Warning", reason="BackendUnavailable", message=f"cannot clean up yet: {error}")
            raise kopf.TemporaryError(str(error), delay=_delay(retry))
    _refresh_installed_in(name, set(), tool_items)
    policy = (body.get("spec") or {}).get("deletionPolicy", "Retain")
    log.info("municipality %s removed with deletionPolicy %s: %s", name, policy, "; ".join(actions))


# CityTool -------------------------------------------------------------------

def _installed_in(tool_name: str) -> list[dict]:
    items = _custom().list_cluster_custom_object(GROUP, VERSION, MUNICIPALITIES).get("items", [])
    return [m for m in items if any(t.get("name") == tool_name for t in (m.get("spec") or {}).get("tools") or [])
            and not m["metadata"].get("deletionTimestamp")]


@kopf.on.resume(GROUP, VERSION, CITYTOOLS)
async def citytool_resumed(name, body, meta, **_):
    """After an operator restart only the bookkeeping is refreshed: every
    municipality resumes and reconciles on its own."""
    await _citytool_status(name, body, meta, roll_out=False)


@kopf.on.create(GROUP, VERSION, CITYTOOLS)
@kopf.on.update(GROUP, VERSION, CITYTOOLS, field=CHANGED)
async def citytool_changed(name, body, meta, **_):
    """A new or changed tool rolls out to every municipality that enables it. A
    municipality that cannot take it yet says so in its own status and retries
    through its drift timer; the tool's status names it."""
    await _citytool_status(name, body, meta, roll_out=True)


async def _roll_out(users: list[dict]) -> tuple[list[str], list[str], list[BaseException]]:
    """Reconcile every municipality that enables the tool, through the work queue like any other
    bulk work (class ``CREATE``: a roll-out to 1,000 towns must not hold back one town's spec
    change). A municipality whose own creation already waits in the queue is not queued twice:
    that reconcile reads the tools when its turn comes. Returns (reconciled, pending, errors)."""
    names = [m["metadata"]["name"] for m in users]
    results = await asyncio.gather(*(
        _queued(n, CREATE, lambda n=n, m=m: _reconcile_unless_deleted(n, m, 0)) for n, m in zip(names, users)),
        return_exceptions=True)
    reconciled, pending, unexpected = [], [], []
    for n, result in zip(names, results):
        if isinstance(result, (kopf.TemporaryError, kopf.PermanentError)):
            pending.append(n)
        elif isinstance(result, BaseException):
            pending.append(n)
            unexpected.append(result)
        elif result is not None:   # None: deleted while it waited
            reconciled.append(n)
    return reconciled, pending, unexpected


async def _citytool_status(name, body, meta, *, roll_out: bool) -> None:
    generation = meta.get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    try:
        parse_citytool(dict(body))
    except SpecError as error:
        await asyncio.to_thread(_write_status, CITYTOOLS, name, {"conditions": [
            condition("Ready", False, "InvalidSpec", str(error), generation, previous)]})
        raise kopf.PermanentError(str(error))
    users = await asyncio.to_thread(_installed_in, name)
    pending: list[str] = []
    errors: list[BaseException] = []
    installed = sorted(m["metadata"]["name"] for m in users)
    if roll_out:
        reconciled, pending, errors = await _roll_out(users)
        installed = sorted(reconciled + pending)
    named = ", ".join(sorted(pending)[:10]) + (f" and {len(pending) - 10} more" if len(pending) > 10 else "")
    message = (f"rolled out to {len(installed)} municipalities" if not pending
               else f"rollout pending in {named}; see their status")
    await asyncio.to_thread(_write_status, CITYTOOLS, name, {"installedIn": installed, "conditions": [
        condition("Ready", True, "RolledOut" if not pending else "RolloutPending", message, generation,
                  previous)]})
    if errors:   # not a backend's answer but a bug or an API outage: Kopf retries the roll-out
        raise errors[0]


@kopf.on.delete(GROUP, VERSION, CITYTOOLS)
def citytool_deleted(name, body, meta, retry, **_):
    users = sorted(m["metadata"]["name"] for m in _installed_in(name))
    if users:
        message = (f"CityTool {name} is still enabled in {', '.join(users)}; remove it from their spec.tools "
                   "first. Deletion continues by itself once no municipality uses it.")
        _write_status(CITYTOOLS, name, {"installedIn": users, "conditions": [
            condition("Ready", False, "StillInUse", message, meta.get("generation"),
                      (body.get("status") or {}).get("conditions"))]})
        kopf.event(body, type="Warning", reason="StillInUse", message=message)
        raise kopf.TemporaryError(message, delay=30)


__all__ = ["configure", "state", "now"]
