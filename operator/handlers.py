"""Kopf handlers: they only translate Kopf's events into ``reconcile`` calls and
write the result through the status subresource."""

from __future__ import annotations

import logging

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from urbanstack.operator import ags as ags_rules
from urbanstack.operator.backends import Backends
from urbanstack.operator.models import SpecError, parse_citytool
from urbanstack.operator.reconcile import Outcome, condition, finalize, now, parse_tools, reconcile
from urbanstack.operator.provisioners.base import BackendUnavailable
from urbanstack.settings import Settings

GROUP, VERSION = "urbanstack.io", "v1alpha1"
MUNICIPALITIES, CITYTOOLS = "municipalities", "citytools"
FINALIZER = "urbanstack.io/finalizer"
RETRY_DELAYS = (5, 10, 20, 40, 60)

log = logging.getLogger("urbanstack.operator")


class _State:
    backends: Backends | None = None
    directory: ags_rules.MunicipalityDirectory | None = None
    drift_timer_registered = False
    kubeconfig: str | None = None


state = _State()


def configure(settings: Settings, backends: Backends | None = None,
              directory: ags_rules.MunicipalityDirectory | None = None) -> None:
    """Set up the connections before Kopf starts (tests pass their own backends).

    The drift timer is registered here because its interval is a setting."""
    from urbanstack.operator.backends import operator_kubeconfig

    state.backends = backends or Backends.from_settings(settings)
    state.kubeconfig = operator_kubeconfig(settings)
    state.directory = directory or ags_rules.load_directory(settings)
    if not state.drift_timer_registered:
        kopf.timer(GROUP, VERSION, MUNICIPALITIES, id="drift", interval=settings.drift_interval,
                   initial_delay=min(settings.drift_interval, 30.0), idle=min(settings.drift_interval / 2, 10.0),
                   when=lambda body, **_: not body.get("metadata", {}).get("deletionTimestamp"))(municipality_drift)
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
@kopf.on.update(GROUP, VERSION, MUNICIPALITIES, field="spec")
def municipality_changed(name, body, retry, **_):
    _reconcile_municipality(name, body, retry)


def municipality_drift(name, body, **_):
    """Re-observe every backend and repair what changed behind our back."""
    try:
        _reconcile_municipality(name, body, drift_check=True)
    except kopf.TemporaryError:
        pass  # status says what is wrong; the next tick retries


@kopf.on.delete(GROUP, VERSION, MUNICIPALITIES)
def municipality_deleted(name, body, retry, **_):
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
def citytool_resumed(name, body, meta, **_):
    """After an operator restart only the bookkeeping is refreshed: every
    municipality resumes and reconciles on its own."""
    _citytool_status(name, body, meta, roll_out=False)


@kopf.on.create(GROUP, VERSION, CITYTOOLS)
@kopf.on.update(GROUP, VERSION, CITYTOOLS, field="spec")
def citytool_changed(name, body, meta, **_):
    """A new or changed tool rolls out to every municipality that enables it. A
    municipality that cannot take it yet says so in its own status and retries
    through its drift timer; the tool's status names it."""
    _citytool_status(name, body, meta, roll_out=True)


def _citytool_status(name, body, meta, *, roll_out: bool) -> None:
    generation = meta.get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    try:
        parse_citytool(dict(body))
    except SpecError as error:
        _write_status(CITYTOOLS, name, {"conditions": [
            condition("Ready", False, "InvalidSpec", str(error), generation, previous)]})
        raise kopf.PermanentError(str(error))
    users = _installed_in(name)
    pending = []
    if roll_out:
        for municipality in users:
            try:
                _reconcile_municipality(municipality["metadata"]["name"], municipality)
            except (kopf.TemporaryError, kopf.PermanentError):
                pending.append(municipality["metadata"]["name"])
    installed = sorted(m["metadata"]["name"] for m in users)
    message = (f"rolled out to {len(installed)} municipalities" if not pending
               else f"rollout pending in {', '.join(pending)}; see their status")
    _write_status(CITYTOOLS, name, {"installedIn": installed, "conditions": [
        condition("Ready", True, "RolledOut" if not pending else "RolloutPending", message, generation,
                  previous)]})


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
