"""City Tools: ``/gov/<slug>/tools`` — the catalogue, switching tools on and off, their settings,
and the operator's status of the municipality as it changes.

Every change is a server-side apply of ``spec.tools`` (with ``spec.shares`` unchanged, see
:mod:`.kube`) as the hub's own Kubernetes identity, after the same checks the operator
makes (the spec model and the plan), so a refusal comes at once and in the same words.
Only a gov-admin of the URL's municipality may change anything (checked here, on the
server); every change is written to the audit trail.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from urbanstack.operator.models import SpecError, parse_municipality
from urbanstack.operator.plan import PlanError, plan
from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session
from .kube import GovKube, KubeError
from .start import CONDITION_TEXT, PHASE_TEXT
from .toolpages import gov_pages

log = logging.getLogger("urbanstack.govhub.tools")

MAX_SETTINGS_BYTES = 16 * 1024
MAX_TOOLS_LISTED = 200
STATUS_REFRESH_SECONDS = 5
EXTRA_CONDITIONS = {"Ready": "Overall"}


class Refused(Exception):
    """A change the hub does not make; ``message`` is an English msgid, ``values`` fill it in."""

    def __init__(self, message: str, field: str | None = None, status: int = 422, **values: Any):
        super().__init__(message % values if values else message)
        self.message, self.field, self.status, self.values = message, field, status, values


def kube_of(hub: GovHub) -> GovKube:
    """The hub's Kubernetes identity: ``extras["kube"]`` (a GovKube), else built from the settings."""
    kube = hub.extras.get("kube")
    if kube is None:
        kube = hub.extras["kube"] = GovKube.from_settings(hub.settings)
    return kube


def translate(request: Request, message: str, values: dict | None = None) -> str:
    text = i18n.translations(getattr(request.state, "lang", "de")).gettext(message)
    return text % values if values else text


def live_municipality(hub: GovHub, slug: str) -> dict:
    live = kube_of(hub).municipality(slug)
    if live is None:
        raise HTTPException(404, "unknown municipality")
    return live


def checked_spec(hub: GovHub, live: dict, *, tools: list[dict], shares: list[dict]) -> None:
    """Refuses the new tools/shares as the operator would: the spec model, then the plan."""
    manifest = {"apiVersion": live.get("apiVersion"), "kind": "Municipality",
                "metadata": {"name": live["metadata"]["name"]},
                "spec": {**(live.get("spec") or {}), "tools": tools, "shares": shares}}
    try:
        municipality = parse_municipality(manifest)
        plan(municipality, {tool.name: tool for tool in hub.catalogue.tools()})
    except (SpecError, PlanError) as error:  # MissingToolError is a PlanError
        raise Refused("The platform would refuse this change: %(reason)s", reason=str(error)) from None


def change_spec(hub: GovHub, session: Session, live: dict, *, tools: list[dict] | None = None,
                shares: list[dict] | None = None, action: str, target: str, detail: dict) -> dict:
    """Checks, applies (both owned fields) and audits one change; returns the applied object."""
    spec = live.get("spec") or {}
    tools = list(spec.get("tools") or []) if tools is None else tools
    shares = list(spec.get("shares") or []) if shares is None else shares
    checked_spec(hub, live, tools=tools, shares=shares)
    try:
        applied = kube_of(hub).apply(live, tools=tools, shares=shares)
    except KubeError as error:
        log.info("change %s of %s refused by the API server: %s", action, live["metadata"]["name"], error)
        raise Refused(error.message, status=409, **error.values) from None
    from urbanstack.runtime.store import Actor

    hub.store.audit.append(session.tenant, Actor(session.subject or "", session.display_name or session.username),
                           action, target, {**detail, "generation": applied["metadata"].get("generation")})
    return applied


def live_status(live: dict) -> dict:
    """The operator's status of the live resource in plain words, every condition listed."""
    status = live.get("status") or {}
    generation = live["metadata"].get("generation")
    observed = status.get("observedGeneration")
    phase = status.get("phase") or "Pending"
    conditions = []
    for condition in status.get("conditions") or []:
        label = CONDITION_TEXT.get(condition.get("type")) or EXTRA_CONDITIONS.get(condition.get("type"))
        conditions.append({"type": condition.get("type"), "label": label, "ok": condition.get("status") == "True",
                           "unknown": condition.get("status") not in ("True", "False"),
                           "reason": condition.get("reason", ""), "message": condition.get("message", ""),
                           "since": _time(condition.get("lastTransitionTime"))})
    current = observed is not None and generation is not None and observed >= generation
    ready = current and phase == "Ready" and any(c["type"] == "Ready" and c["ok"] for c in conditions)
    return {"phase": phase, "text": PHASE_TEXT.get(phase, phase), "generation": generation, "observed": observed,
            "current": current, "ready": ready, "conditions": conditions}


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def catalogue_rows(hub: GovHub, live: dict, ready: bool) -> list[dict]:
    enabled = {tool.get("name"): tool for tool in (live.get("spec") or {}).get("tools") or []}
    rows = []
    for tool in sorted(hub.catalogue.tools(), key=lambda t: t.spec.display_name.lower())[:MAX_TOOLS_LISTED]:
        on = tool.name in enabled
        settings = (enabled.get(tool.name) or {}).get("settings") or {}
        rows.append({"name": tool.name, "display_name": tool.spec.display_name, "descriptions": tool.spec.descriptions,
                     "owner": tool.spec.owner, "owner_name": _display_name(hub, tool.spec.owner),
                     "version": tool.spec.version, "audience": tool.spec.audience.value, "datasets": tool.spec.datasets,
                     "on": on, "settings": settings,
                     "settings_text": json.dumps(settings, indent=2, ensure_ascii=False) if settings else "",
                     "available": on and ready, "missing": False})
    unknown = sorted(set(enabled) - {tool.name for tool in hub.catalogue.tools()})
    for name in unknown:  # switched on, but no CityTool of that name (the operator reports it too)
        rows.append({"name": name, "display_name": name, "descriptions": {}, "owner": "", "owner_name": "",
                     "version": "", "audience": "", "datasets": [], "on": True, "settings": {},
                     "settings_text": "", "available": False, "missing": True})
    return rows


def _display_name(hub: GovHub, slug: str) -> str:
    municipality = hub.catalogue.municipality(slug)
    return municipality.spec.display_name if municipality is not None else slug


_install_lock = threading.Lock()


def install_dashboards(hub: GovHub, session: Session, slug: str, tool: str) -> list[str]:
    """Installs the dashboards the tool declares (:class:`urbanstack.toolkit.pages.DashboardTemplate`)
    in the municipality, owned by the administrator who switched it on; returns the ids of those
    it created. A dashboard installed before — marked by the note of its first version — is left
    exactly as it is, edited or not, so switching on twice installs once and never overwrites
    staff's changes (one deleted by staff comes back the next time the tool is switched on)."""
    from urbanstack.runtime.store import Actor
    from urbanstack.toolkit.pages import pages_for

    from .dashboards import parse_spec

    pages = pages_for(tool)
    if pages is None or not pages.dashboards:
        return []
    created = []
    actor = Actor(session.subject or "", session.display_name or session.username)
    with _install_lock:   # one process: two clicks at once install once
        for template in pages.dashboards:
            marker = f"installed by City Tool {tool} ({template.key})"
            if hub.store.dashboards.installed(slug, marker) is not None:
                continue
            spec = template.spec(slug, tool)
            parse_spec(spec)   # a tool's template the Gov Hub could not show is refused here, not stored
            dashboard = hub.store.dashboards.create(slug, actor, template.title, spec, template.description,
                                                    note=marker)
            hub.store.audit.append(slug, actor, "dashboard.install", dashboard.id, {"tool": tool,
                                                                                    "template": template.key})
            created.append(dashboard.id)
    return created


def parse_settings(text: str) -> dict:
    text = (text or "").strip()
    if not text:
        return {}
    if len(text.encode()) > MAX_SETTINGS_BYTES:
        raise Refused("The settings are too long (at most %(limit)s KB).", field="settings",
                      limit=MAX_SETTINGS_BYTES // 1024)
    try:
        value = json.loads(text)
    except ValueError as error:
        raise Refused("The settings are not valid JSON: %(reason)s (line %(line)s, column %(column)s). Write an "
                      "object such as {\"warnLevelCm\": 180}.", field="settings", reason=error.msg,
                      line=error.lineno, column=error.colno) from None
    if not isinstance(value, dict):
        raise Refused("The settings must be a JSON object in curly braces, such as {\"warnLevelCm\": 180}.",
                      field="settings")
    return value


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)

    def render(request: Request, slug: str, session: Session, *, error: Refused | None = None,
               error_tool: str | None = None, settings_text: str | None = None, done: str | None = None):
        live = live_municipality(hub, slug)
        status = live_status(live)
        rows = catalogue_rows(hub, live, status["ready"])
        municipality = hub.municipality(slug)
        for row in rows:
            row["pages"] = gov_pages(hub, municipality, row["name"], session) if row["available"] else []
        if error is not None and error_tool is not None and settings_text is not None:
            for row in rows:
                if row["name"] == error_tool:
                    row["settings_text"] = settings_text
        return hub.page(request, "gov/tools_list.html", status=error.status if error else 200,
                        municipality=hub.municipality(slug), slug=slug, tools=rows, live=status,
                        admin=session.has("gov-admin"), refresh_seconds=STATUS_REFRESH_SECONDS,
                        error=translate(request, error.message, error.values) if error else None,
                        error_field=error.field if error else None, error_tool=error_tool, done=done, done_text=DONE_TEXT.get(done or ""))

    @routes.get("/{slug}/tools", response_class=HTMLResponse)
    def tools_page(request: Request, slug: str, done: str | None = None,
                   session: Session = Depends(staff_session(hub))):
        return render(request, slug, session, done=done if done in DONE_TEXT else None)

    @routes.get("/{slug}/tools/status", response_class=HTMLResponse)
    def tools_status(request: Request, slug: str, session: Session = Depends(staff_session(hub))):
        live = live_municipality(hub, slug)
        status = live_status(live)
        rows = [row for row in catalogue_rows(hub, live, status["ready"]) if row["on"]]
        return hub.renderer.page(request, "gov/tools_status.html", hub=hub, slug=slug, live=status, tools=rows,
                                 refresh_seconds=STATUS_REFRESH_SECONDS)

    def tool_or_404(name: str):
        tool = hub.catalogue.tool(name)
        if tool is None:
            raise HTTPException(404, "unknown tool")
        return tool

    def attempt(request: Request, slug: str, session: Session, name: str, change, settings_text: str | None = None):
        try:
            live = live_municipality(hub, slug)
            done = change(live)
        except Refused as error:
            return render(request, slug, session, error=error, error_tool=name, settings_text=settings_text)
        return RedirectResponse(hub.url(slug, f"tools?done={done}#tool-{name}"), 303)

    @routes.post("/{slug}/tools/{name}/on")
    def switch_on(request: Request, slug: str, name: str, settings: str = Form(""),
                  session: Session = Depends(staff_session(hub, "gov-admin"))):
        tool_or_404(name)

        def change(live: dict) -> str:
            current = list((live.get("spec") or {}).get("tools") or [])
            if not any(entry.get("name") == name for entry in current):
                values = parse_settings(settings)
                entry = {"name": name, "settings": values} if values else {"name": name}
                change_spec(hub, session, live, tools=current + [entry], action="tool.on", target=name,
                            detail={"settings": values})
            try:   # also when it was on already: a retry installs what a failed attempt did not
                installed = install_dashboards(hub, session, slug, name)
            except Exception:  # noqa: BLE001 - the tool is on; say that its dashboard is missing
                log.exception("dashboards of %s not installed in %s", name, slug)
                return "on_without_dashboards"
            return "on_with_dashboards" if installed else "on"

        return attempt(request, slug, session, name, change, settings)

    @routes.post("/{slug}/tools/{name}/off")
    def switch_off(request: Request, slug: str, name: str,
                   session: Session = Depends(staff_session(hub, "gov-admin"))):
        def change(live: dict) -> str:
            spec = live.get("spec") or {}
            current = list(spec.get("tools") or [])
            if not any(entry.get("name") == name for entry in current):
                return "off"
            shared = [f"{share.get('tool')}/{share.get('dataset')}" for share in spec.get("shares") or []
                      if share.get("tool") == name]
            if shared:
                raise Refused("%(tool)s cannot be switched off while its datasets are shared (%(shares)s). Remove "
                              "these shares on the Data access page first.", tool=name, shares=", ".join(shared))
            sources = [source.get("name") for source in spec.get("sources") or [] if source.get("tool") == name]
            if sources:
                raise Refused("%(tool)s cannot be switched off while data sources feed it (%(sources)s). Ask "
                              "platform operations to remove those sources first.", tool=name,
                              sources=", ".join(sources))
            change_spec(hub, session, live, tools=[entry for entry in current if entry.get("name") != name],
                        action="tool.off", target=name, detail={})
            return "off"

        return attempt(request, slug, session, name, change)

    @routes.post("/{slug}/tools/{name}/settings")
    def save_settings(request: Request, slug: str, name: str, settings: str = Form(""),
                      session: Session = Depends(staff_session(hub, "gov-admin"))):
        def change(live: dict) -> str:
            current = list((live.get("spec") or {}).get("tools") or [])
            if not any(entry.get("name") == name for entry in current):
                raise Refused("%(tool)s is not switched on here; switch it on first.", tool=name)
            values = parse_settings(settings)
            before = next(entry.get("settings") or {} for entry in current if entry.get("name") == name)
            if values == before:
                return "unchanged"
            updated = [({"name": name, "settings": values} if values else {"name": name})
                       if entry.get("name") == name else entry for entry in current]
            change_spec(hub, session, live, tools=updated, action="tool.settings", target=name,
                        detail={"before": before, "after": values})
            return "settings"

        return attempt(request, slug, session, name, change, settings)

    return routes


DONE_TEXT = {
    "on": "The tool is switched on. The platform is setting it up; the status below follows the changes.",
    "on_with_dashboards": N_("The tool is switched on and its dashboard is installed (see Dashboards). The "
                             "platform is setting the tool up; the status below follows the changes."),
    "on_without_dashboards": N_("The tool is switched on, but its dashboard could not be installed. Switch it "
                                "on again later to retry, or tell platform operations."),
    "off": "The tool is switched off. The platform follows the change; the status below shows its progress.",
    "settings": "The settings are saved. The platform hands them to the tool.",
    "unchanged": "Nothing changed: the settings were the same.",
}
