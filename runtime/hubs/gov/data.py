"""Data access: ``/gov/<slug>/data`` — every dataset of the municipality and who can read it,
the gov-admin's form for ``spec.shares``, datasets others share with this municipality
(read-only), and the change log (``/gov/<slug>/audit``).

Shares are written like tools (:mod:`.tools`): checked as the operator checks them (the
``Share`` model, then the plan), plus what only the hub can know — a named municipality
must exist on the platform — then server-side applied with the hub's field manager and
written to the audit trail.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from urbanstack.operator.models import PUBLIC_LICENCE, Share
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session
from .tools import Refused, change_spec, live_municipality, translate

log = logging.getLogger("urbanstack.govhub.data")

LICENCE_NAME = "Datenlizenz Deutschland – Zero – Version 2.0"
LICENCE_URL = "https://www.govdata.de/dl-de/zero-2-0"
MAX_LISTED = 500
AUDIT_ON_DATA_PAGE = 20
AUDIT_PAGE = 100
DONE_TEXT = {
    "shared": "The share is saved. The platform grants the access in a moment.",
    "removed": "The dataset is no longer shared. The platform withdraws the access in a moment.",
    "unchanged": "Nothing changed: the share was already like this.",
}


def own_datasets(hub: GovHub, live: dict) -> list[dict]:
    """The datasets of the live spec's tools with their audience from the live spec.shares."""
    spec = live.get("spec") or {}
    shares = spec.get("shares") or []
    rows = []
    for enabled in spec.get("tools") or []:
        tool = hub.catalogue.tool(enabled.get("name", ""))
        if tool is None:
            continue
        for dataset in tool.spec.datasets:
            mine = [s for s in shares if s.get("tool") == tool.name and s.get("dataset") == dataset.name]
            names = sorted({m for s in mine for m in s.get("municipalities") or []})
            rows.append({"key": f"{tool.name}/{dataset.name}", "tool": tool.name, "tool_name": tool.spec.display_name,
                         "dataset": dataset.name, "description": dataset.description,
                         "shared_with": [{"slug": n, "name": _name(hub, n)} for n in names],
                         "public": any(s.get("public") for s in mine), "shared": bool(mine)})
    return rows[:MAX_LISTED]


def _name(hub: GovHub, slug: str) -> str:
    municipality = hub.catalogue.municipality(slug)
    return municipality.spec.display_name if municipality is not None else slug


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)

    def render(request: Request, slug: str, session: Session, *, error: Refused | None = None,
               form: dict | None = None, done: str | None = None):
        live = live_municipality(hub, slug)
        rows = own_datasets(hub, live)
        incoming = [d for d in hub.engine.datasets(session.principal) if d.owner != slug][:MAX_LISTED]
        partners = sorted((m for m in hub.catalogue.municipalities() if m.slug != slug),
                          key=lambda m: m.spec.display_name.lower())[:MAX_LISTED]
        admin = session.has("gov-admin")
        audit = hub.store.audit.list(slug, limit=AUDIT_ON_DATA_PAGE) if admin else []
        return hub.page(request, "gov/data_access.html", status=error.status if error else 200,
                        municipality=hub.municipality(slug), slug=slug, datasets=rows, incoming=incoming,
                        partners=partners, admin=admin, audit=audit, licence_name=LICENCE_NAME,
                        licence_url=LICENCE_URL, licence=PUBLIC_LICENCE,
                        error=translate(request, error.message, error.values) if error else None,
                        error_field=error.field if error else None,
                        form={"dataset": "", "municipalities": [], "public": False, "licence": None, **(form or {})},
                        done_text=DONE_TEXT.get(done or ""), owner_name=lambda s: _name(hub, s))

    @routes.get("/{slug}/data", response_class=HTMLResponse)
    def data_page(request: Request, slug: str, done: str | None = None,
                  session: Session = Depends(staff_session(hub))):
        return render(request, slug, session, done=done)

    @routes.post("/{slug}/data/shares")
    async def save_share(request: Request, slug: str, session: Session = Depends(staff_session(hub, "gov-admin"))):
        form = await request.form()
        key = str(form.get("dataset") or "")
        chosen = sorted({str(value) for value in form.getlist("municipalities") if str(value)})
        public = form.get("public") in ("on", "true", "1")
        licence = str(form.get("licence") or "") or None
        values = {"dataset": key, "municipalities": chosen, "public": public, "licence": licence}
        try:
            live = live_municipality(hub, slug)
            done = _save(hub, session, slug, live, key, chosen, public, licence)
        except Refused as error:
            return render(request, slug, session, error=error, form=values)
        return RedirectResponse(hub.url(slug, f"data?done={done}"), 303)

    @routes.post("/{slug}/data/shares/remove")
    async def remove_share(request: Request, slug: str, session: Session = Depends(staff_session(hub, "gov-admin"))):
        form = await request.form()
        key = str(form.get("dataset") or "")
        try:
            live = live_municipality(hub, slug)
            tool, dataset = _dataset_of(hub, live, key)
            shares = (live.get("spec") or {}).get("shares") or []
            kept = [s for s in shares if not (s.get("tool") == tool and s.get("dataset") == dataset)]
            if len(kept) == len(shares):
                return RedirectResponse(hub.url(slug, "data?done=unchanged"), 303)
            change_spec(hub, session, live, shares=kept, action="share.remove", target=key, detail={})
        except Refused as error:
            return render(request, slug, session, error=error, form={"dataset": key})
        return RedirectResponse(hub.url(slug, "data?done=removed"), 303)

    @routes.get("/{slug}/audit", response_class=HTMLResponse)
    def audit_page(request: Request, slug: str, before: int | None = None,
                   session: Session = Depends(staff_session(hub, "gov-admin"))):
        entries = hub.store.audit.list(slug, limit=AUDIT_PAGE, before=before)
        more = entries[-1].id if len(entries) == AUDIT_PAGE else None
        return hub.page(request, "gov/data_audit.html", municipality=hub.municipality(slug), slug=slug,
                        audit=entries, more=more)

    return routes


def _dataset_of(hub: GovHub, live: dict, key: str) -> tuple[str, str]:
    tool, _, dataset = key.partition("/")
    known = {row["key"] for row in own_datasets(hub, live)}
    if key not in known:
        raise Refused("Choose one of this municipality's datasets; %(dataset)s is not one of them.", field="dataset",
                      dataset=key or "–")
    return tool, dataset


def _same(current: dict, wanted: dict) -> bool:
    """Equal as the operator reads them (the CRD fills in defaults such as public: false)."""
    try:
        return Share.model_validate(current) == Share.model_validate(wanted)
    except ValidationError:
        return False


def _save(hub: GovHub, session: Session, slug: str, live: dict, key: str, chosen: list[str], public: bool,
          licence: str | None) -> str:
    tool, dataset = _dataset_of(hub, live, key)
    if slug in chosen:
        raise Refused("A municipality cannot share with itself; remove %(slug)s from the municipalities.",
                      field="municipalities", slug=slug)
    unknown = [name for name in chosen if hub.catalogue.municipality(name) is None]
    if unknown:
        raise Refused("No municipality of this name exists on the platform: %(names)s. Choose from the list.",
                      field="municipalities", names=", ".join(unknown))
    share = {"tool": tool, "dataset": dataset}
    if chosen:
        share["municipalities"] = chosen
    if public:
        share["public"] = True
    if licence:
        share["licence"] = licence
    try:
        Share.model_validate(share)
    except ValidationError as error:
        reason = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
        field = "licence" if public and licence != PUBLIC_LICENCE else "municipalities"
        raise Refused("The platform would refuse this share: %(reason)s", field=field, reason=reason) from None
    shares = list((live.get("spec") or {}).get("shares") or [])
    others = [s for s in shares if not (s.get("tool") == tool and s.get("dataset") == dataset)]
    before = [s for s in shares if s not in others]
    if len(before) == 1 and _same(before[0], share):
        return "unchanged"
    change_spec(hub, session, live, shares=others + [share], action="share.set", target=key,
                detail={"before": before, "after": share})
    return "shared"
