"""Pegel-Warnung in the hubs (:mod:`urbanstack.toolkit.pages`): the warnings the tool raised for
the municipality, current and past, with gauge, level, time, CAP identifier and affected area,
and a map of the gauges.

- Gov Hub ``/gov/<slug>/tools/<tool>/``: staff (gov-viewer) see the municipality's ``warnings``
  dataset through their own principal.
- Citizen Hub ``/<slug>/services/<tool>``: residents see the same list when the municipality
  publishes the dataset as open data (a share with ``public: true``); the hub reads as nobody.

Each municipality's tool writes its own ``warnings`` (Gütersloh's, and each neighbour's that
Gütersloh shares its water levels with), so a municipality nobody shares with has none.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from urbanstack.runtime.web.i18n import N_
from urbanstack.toolkit.pages import Page, PageContext, ToolPages

from .cap import NAMESPACE
from .tool import WARNINGS

LEVEL_TEXT = {"warning": N_("Flood warning"), "alarm": N_("Flood alarm"), "all_clear": N_("All-clear")}
MSG_TYPE_TEXT = {"Alert": N_("new"), "Update": N_("update"), "Cancel": N_("cancellation")}
STAFF_ROWS = 200
CITIZEN_ROWS = 20
MAX_CAP_BYTES = 64 * 1024


def affected_area(document: str | None) -> str:
    """The CAP document's ``areaDesc`` (the tool writes one area per message); '' if unreadable."""
    if not document or len(document) > MAX_CAP_BYTES or "<!DOCTYPE" in document or "<!ENTITY" in document:
        return ""
    try:
        root = ET.fromstring(document.encode("utf-8"))
    except ET.ParseError:
        return ""
    area = root.find(f"{{{NAMESPACE}}}info/{{{NAMESPACE}}}area/{{{NAMESPACE}}}areaDesc")
    return (area.text or "").strip() if area is not None else ""


def messages(ctx: PageContext, limit: int) -> list[dict]:
    """The newest ``limit`` messages, newest first, as the templates show them."""
    names = ctx.fields(WARNINGS)
    out = []
    for row in ctx.latest(WARNINGS, limit=limit):
        values = dict(zip(names, row.values))
        owner = values.get("gauge_owner") or ""
        out.append({
            "at": row.observed_at, "level": values.get("level") or "", "msg_type": values.get("msg_type") or "",
            "level_text": LEVEL_TEXT.get(values.get("level"), N_("Unknown level")),
            "msg_type_text": MSG_TYPE_TEXT.get(values.get("msg_type"), ""),
            "identifier": values.get("identifier") or "", "gauge": values.get("gauge") or row.sensor_id,
            "gauge_owner": owner, "owner_name": ctx.municipality_name(owner) if owner else "",
            "station": values.get("station_name") or values.get("gauge") or row.sensor_id,
            "water_level": values.get("water_level"), "threshold": values.get("threshold"),
            "area": affected_area(values.get("cap")), "lon": row.lon, "lat": row.lat})
    return out


def current(rows: list[dict]) -> list[dict]:
    """Per gauge its newest message, where that is a warning or an alarm (not yet all-clear)."""
    newest: dict[tuple[str, str], dict] = {}
    for message in rows:   # newest first
        newest.setdefault((message["gauge_owner"], message["gauge"]), message)
    return [m for m in newest.values() if m["level"] in ("warning", "alarm")]


def points(rows: list[dict]) -> list[dict]:
    """One map point per gauge (its newest message) with a position."""
    seen, out = set(), []
    for message in rows:
        key = (message["gauge_owner"], message["gauge"])
        if key in seen or message["lon"] is None or message["lat"] is None:
            continue
        seen.add(key)
        out.append({"id": f"{key[0]}/{key[1]}", "name": message["station"], "lon": message["lon"],
                    "lat": message["lat"], "at": message["at"]})
    return out


def _data(ctx: PageContext, limit: int) -> dict:
    readable = ctx.readable(WARNINGS)
    rows = messages(ctx, limit) if readable else []
    now = current(rows)
    shown = points(now) or points(rows)
    return {"readable": readable, "messages": rows, "current": now, "points": shown,
            "points_json": json.dumps([{k: p[k] for k in ("id", "name", "lon", "lat")} for p in shown]),
            "points_current": bool(now), "limit": limit, "incomplete": ctx.incomplete}


def staff_page(ctx: PageContext) -> dict:
    return _data(ctx, STAFF_ROWS)


def citizen_page(ctx: PageContext) -> dict:
    return _data(ctx, CITIZEN_ROWS)


PAGES = ToolPages(
    name="pegel_warnung", templates=Path(__file__).parent / "templates",
    pages=(Page(hub="gov", title=N_("Flood warnings"), template="gov_warnings.html", build=staff_page),
           Page(hub="citizen", title=N_("Flood warnings"), template="citizen_warnings.html", build=citizen_page)))
