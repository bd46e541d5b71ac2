"""Dashboards of the Gov Hub: list, build, view, versions, editors, sharing, publishing.

A dashboard's ``spec`` (JSON in the metadata store) is a :class:`DashboardSpec`: panels of
type ``timeseries``, ``bar``, ``kpi``, ``table``, ``map`` or ``text``; each data panel reads
one dataset (``owner/tool/dataset``) or the join of two on common time buckets, with fields,
an aggregate and a bucket. The time range and filters of a view come from the URL (``range``
preset or ``from``/``to`` dates, ``sensor`` ids, ``bbox``), so a link shows the same view;
they feed every panel.

Every panel is queried through the API's :class:`QueryEngine` with the viewer's principal
(``None`` on the published page): a panel over data the viewer may not read says so and
shows nothing. Who may do what:

- gov-viewer: view dashboards of the own municipality, those shared with it, published ones;
- gov-editor: create; edit where owner or editor;
- gov-admin: edit, manage and delete every dashboard of the municipality;
- owner or gov-admin: editors, sharing, publishing, delete.

A dashboard of another municipality that is neither shared with the viewer's municipality nor
published answers 404 on every route; a shared or published one is read-only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal
from urllib.parse import urlencode

import nh3
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from urbanstack.runtime.api.query import (Aggregate, Bucket, DatasetRef, Filters, JoinQuery, JoinSide,
                                          ObservationsQuery, QueryError, SeriesQuery)
from urbanstack.runtime.metering.api_meter import note_subject
from urbanstack.runtime.store import Actor, InvalidInput, NotFound, VersionConflict
from urbanstack.runtime.web import charts, i18n
from urbanstack.runtime.web.compression import SPLICE, Fragment, spliced_page
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session
from . import panelcache
from .panelcache import PanelCache

log = logging.getLogger("urbanstack.govhub.dashboards")

MAX_PANELS = 24
MAX_FIELDS = 8
MAX_TEXT = 20_000
MAX_SENSORS = 50
MAP_WINDOW = timedelta(days=7)  # sensor positions: the latest within the last week of the range
MAP_PAGES = 3
TIMEZONE = "Europe/Berlin"
DATA_TYPES = ("timeseries", "bar", "kpi", "table", "map")
PANEL_TYPES = (*DATA_TYPES, "text")
AGGREGATES = ("avg", "sum", "min", "max", "count", "p95")
BUCKETS = tuple(b.value for b in Bucket)
PRESETS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "1y": timedelta(days=365)}
REFRESH_CHOICES = (0, 60, 300, 900)
_REF = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9][a-z0-9-]{0,62}/[a-z][a-z0-9_]{0,62}$"

PANEL_TYPE_TEXT = {"timeseries": N_("Time series"), "bar": N_("Bar chart"), "kpi": N_("Key figure"),
                   "table": N_("Table"), "map": N_("Map of sensor positions"), "text": N_("Text block")}
PRESET_TEXT = {"24h": N_("Last 24 hours"), "7d": N_("Last 7 days"), "30d": N_("Last 30 days"),
               "1y": N_("Last year")}
BUCKET_TEXT = {"minute": N_("per minute"), "hour": N_("per hour"), "day": N_("per day"), "week": N_("per week"),
               "month": N_("per month")}


# The spec ---------------------------------------------------------------------------------

class JoinSideSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(pattern=_REF, max_length=200)
    fields: list[str] = Field(min_length=1, max_length=MAX_FIELDS)
    aggregate: Literal["avg", "sum", "min", "max", "count", "p95"] = "avg"


class JoinSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    left: JoinSideSpec
    right: JoinSideSpec


class PanelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["timeseries", "bar", "kpi", "table", "map", "text"]
    title: str = Field("", max_length=200)
    dataset: str | None = Field(None, pattern=_REF, max_length=200)
    fields: list[str] = Field(default_factory=list, max_length=MAX_FIELDS)
    aggregate: Literal["avg", "sum", "min", "max", "count", "p95"] = "avg"
    bucket: Literal["minute", "hour", "day", "week", "month"] = "hour"
    join: JoinSpec | None = None
    text: str = Field("", max_length=MAX_TEXT)

    @field_validator("fields")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise ValueError(f"{name[:70]!r} is not a field name (lowercase letters, digits, underscores)")
        return names

    @model_validator(mode="after")
    def _complete(self) -> "PanelSpec":
        if self.type == "text":
            if not self.text.strip():
                raise ValueError("a text panel needs text")
            return self
        if self.type == "map":
            if self.join is not None or not self.dataset:
                raise ValueError("a map panel needs one dataset (no join)")
            return self
        if (self.dataset is None) == (self.join is None):
            raise ValueError("a data panel needs either a dataset or a join of two datasets")
        if self.dataset and not self.fields:
            raise ValueError("choose at least one field")
        return self

    def datasets(self) -> list[str]:
        if self.join is not None:
            return [self.join.left.dataset, self.join.right.dataset]
        return [self.dataset] if self.dataset else []


class DashboardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    panels: list[PanelSpec] = Field(default_factory=list, max_length=MAX_PANELS)
    range: Literal["24h", "7d", "30d", "1y"] = "7d"
    refresh_seconds: int = Field(0, ge=0, le=86_400)

    @field_validator("refresh_seconds")
    @classmethod
    def _refresh(cls, value: int) -> int:
        if value and value < 30:
            raise ValueError("refresh at most every 30 seconds (0 switches it off)")
        return value


class SpecError(ValueError):
    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


def parse_spec(raw: Any) -> DashboardSpec:
    """The spec, or :class:`SpecError` whose messages name the panel (number and title) and field."""
    try:
        return DashboardSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError([_error_text(raw, e) for e in error.errors()]) from None


def _error_text(raw: Any, error: dict) -> str:
    loc = list(error.get("loc", ()))
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "panels" and isinstance(loc[1], int):
        index = loc[1]
        title = ""
        try:
            title = str(raw["panels"][index].get("title") or "")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        where = f"panel {index + 1}" + (f" ({title[:60]})" if title else "")
        rest = [str(part) for part in loc[2:] if not isinstance(part, int)]
        if rest:
            return f"{where}, field '{'.'.join(rest)}': {message}"
        return f"{where}: {message}"
    return f"field '{'.'.join(str(p) for p in loc) or 'spec'}': {message}"


def check_datasets(hub: GovHub, principal, spec: DashboardSpec) -> list[str]:
    """What the saver's spec names that the catalogue does not have (or the saver may not read)."""
    problems = []
    for number, panel in enumerate(spec.panels, 1):
        where = f"panel {number}" + (f" ({panel.title[:60]})" if panel.title else "")
        join = panel.join
        sides = ([(join.left.dataset, join.left.fields), (join.right.dataset, join.right.fields)] if join
                 else [(panel.dataset, panel.fields)] if panel.dataset else [])
        for ref, names in sides:
            try:
                info = hub.engine.dataset(principal, DatasetRef(*ref.split("/")))
            except QueryError:
                problems.append(f"{where}, field 'dataset': no dataset {ref} that you may read")
                continue
            for name in names:
                found = info.field(name)
                if found is None:
                    problems.append(f"{where}, field 'fields': {ref} has no field {name!r}; it has "
                                    f"{', '.join(f.name for f in info.fields if f.numeric)}")
                elif not found.numeric and panel.type != "map":
                    problems.append(f"{where}, field 'fields': {name!r} is text, not a number")
    return problems


# Time range and filters from the URL --------------------------------------------------------

@dataclass
class View:
    preset: str | None
    start: datetime
    end: datetime
    date_from: str = ""
    date_to: str = ""
    sensors: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    bbox_text: str = ""
    errors: list[str] = field(default_factory=list)

    def query(self) -> str:
        """The query string that shows this view again."""
        params: list[tuple[str, str]] = []
        if self.preset:
            params.append(("range", self.preset))
        else:
            params += [("from", self.date_from), ("to", self.date_to)]
        params += [("sensor", s) for s in self.sensors]
        if self.bbox_text:
            params.append(("bbox", self.bbox_text))
        return urlencode(params)


def _ceil_hour(at: datetime) -> datetime:
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


def view_state(params, default_preset: str = "7d", now: datetime | None = None) -> View:
    """Range and filters from query parameters; bad input falls back to the default and says why."""
    now = now or datetime.now(timezone.utc)
    errors: list[str] = []
    preset = params.get("range") or None
    date_from, date_to = (params.get("from") or "").strip(), (params.get("to") or "").strip()
    start = end = None
    if date_from or date_to:
        try:
            first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
            if last < first:
                raise ValueError
            start = datetime.combine(first, time(0), i18n.TIME_ZONE).astimezone(timezone.utc)
            end = datetime.combine(last + timedelta(days=1), time(0), i18n.TIME_ZONE).astimezone(timezone.utc)
            preset = None
        except ValueError:
            errors.append(N_("The dates must be given as from and to (YYYY-MM-DD), from not after to. "
                             "Showing the default range instead."))
            date_from = date_to = ""
    if start is None:
        if preset not in PRESETS:
            if preset:
                errors.append(N_("Unknown time range; showing the default range."))
            preset = default_preset
        end = _ceil_hour(now)
        start = end - PRESETS[preset]
    sensors: list[str] = []
    for value in params.getlist("sensor") if hasattr(params, "getlist") else params.get("sensor", []) or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in sensors:
                sensors.append(part[:200])
    if len(sensors) > MAX_SENSORS:
        errors.append(N_("At most 50 sensors can be chosen; the first 50 are used."))
        sensors = sensors[:MAX_SENSORS]
    bbox_text = (params.get("bbox") or "").strip()
    bbox = None
    if bbox_text:
        try:
            values = tuple(float(v.replace(" ", "")) for v in bbox_text.split(","))
            if len(values) != 4 or not (-180 <= values[0] < values[2] <= 180 and -90 <= values[1] < values[3] <= 90):
                raise ValueError
            bbox = values
        except ValueError:
            errors.append(N_("The area must be four numbers: west,south,east,north (longitude, latitude). "
                             "The area filter is off."))
            bbox_text = ""
    return View(preset=preset, start=start, end=end, date_from=date_from, date_to=date_to, sensors=tuple(sensors),
                bbox=bbox, bbox_text=bbox_text, errors=errors)


# Panels ---------------------------------------------------------------------------------

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})
_ALLOWED_TAGS = {"p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h2", "h3", "h4",
                 "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td"}


def render_markdown(text: str) -> str:
    """Markdown as HTML without raw HTML or scripts; links only http(s) or relative."""
    html = _markdown.render(text or "")
    # Headings start at level 2: the page's h1 is the dashboard's title.
    html = re.sub(r"<(/?)h1>", r"<\1h2>", html)
    return nh3.clean(html, tags=_ALLOWED_TAGS, attributes={"a": {"href", "title"}, "th": {"scope"}},
                     url_schemes={"http", "https"}, link_rel="noopener noreferrer nofollow")


@dataclass
class PanelOut:
    index: int
    panel: PanelSpec
    kind: str  # chart | kpi | table | map | text | denied | error
    title: str
    figure: charts.Figure | None = None
    points: list[dict] = field(default_factory=list)
    points_json: str = "[]"
    html: str = ""
    message: str = ""
    truncated: bool = False


def _ref(text: str) -> DatasetRef:
    return DatasetRef(*text.split("/"))


def panel_title(panel: PanelSpec, index: int, lang: str) -> str:
    if panel.title:
        return panel.title
    _ = i18n.translations(lang).gettext
    return _("Panel %(number)s") % {"number": index + 1}


def query_panel(engine, principal, panel: PanelSpec, view: View) -> tuple[Any, str]:
    """The engine's answer for a data panel (``("series"|"join", result)``)."""
    limit = engine.limits.max_rows
    if panel.join is not None:
        left, right = panel.join.left, panel.join.right
        return engine.join(principal, JoinQuery(
            left=JoinSide(_ref(left.dataset), tuple(left.fields), (Aggregate(left.aggregate),), view.sensors),
            right=JoinSide(_ref(right.dataset), tuple(right.fields), (Aggregate(right.aggregate),)),
            bucket=Bucket(panel.bucket), start=view.start, end=view.end, bbox=view.bbox, timezone=TIMEZONE,
            limit=limit)), "join"
    return engine.series(principal, SeriesQuery(
        dataset=_ref(panel.dataset), fields=tuple(panel.fields), aggregates=(Aggregate(panel.aggregate),),
        bucket=Bucket(panel.bucket), filters=Filters(start=view.start, end=view.end, sensor_ids=view.sensors,
                                                     bbox=view.bbox),
        timezone=TIMEZONE, limit=limit)), "series"


def panel_figure(engine, principal, panel: PanelSpec, index: int, view: View, lang: str,
                 csv_url: str = "") -> charts.Figure:
    result, kind = query_panel(engine, principal, panel, view)
    chart = "bar" if panel.type == "bar" else "line"
    build = charts.from_join if kind == "join" else charts.from_series
    figure = build(result, f"panel-{index + 1}", panel_title(panel, index, lang), chart, lang=lang, csv_url=csv_url)
    figure.truncated = result.next_cursor is not None
    return figure


def sensor_positions(engine, principal, panel: PanelSpec, view: View) -> list[dict]:
    """The latest position of each sensor in the last week of the range, from its observations."""
    start = max(view.start, view.end - MAP_WINDOW)
    info = engine.dataset(principal, _ref(panel.dataset))
    first = panel.fields[:1] or [f.name for f in info.fields[:1]]
    latest: dict[str, dict] = {}
    cursor = None
    for _page in range(MAP_PAGES):
        page = engine.observations(principal, ObservationsQuery(
            dataset=_ref(panel.dataset), fields=tuple(first), limit=engine.limits.max_rows, cursor=cursor,
            filters=Filters(start=start, end=view.end, sensor_ids=view.sensors, bbox=view.bbox)))
        for row in page.rows:
            if row.lon is not None and row.lat is not None:
                latest[row.sensor_id] = {"id": row.sensor_id, "name": row.sensor_id, "lon": row.lon, "lat": row.lat,
                                         "at": row.observed_at}
        cursor = page.next_cursor
        if cursor is None:
            break
    return sorted(latest.values(), key=lambda p: p["id"])


def render_panel(engine, principal, panel: PanelSpec, index: int, view: View, lang: str, csv_url: str) -> PanelOut:
    _ = i18n.translations(lang).gettext
    title = panel_title(panel, index, lang)
    out = PanelOut(index=index, panel=panel, kind=panel.type, title=title)
    if panel.type == "text":
        out.kind, out.html = "text", render_markdown(panel.text)
        return out
    try:
        if panel.type == "map":
            out.kind = "map"
            out.points = sensor_positions(engine, principal, panel, view)
            out.points_json = json.dumps([{"id": p["id"], "name": p["name"], "lon": p["lon"], "lat": p["lat"]}
                                          for p in out.points], ensure_ascii=False)
            return out
        out.figure = panel_figure(engine, principal, panel, index, view, lang, csv_url)
        out.truncated = getattr(out.figure, "truncated", False)
        out.kind = {"timeseries": "chart", "bar": "chart", "kpi": "kpi", "table": "table"}[panel.type]
    except QueryError as error:
        if error.status in (401, 403, 404):
            out.kind = "denied"
            out.message = _("You may not read the data of this panel (%(datasets)s), so it shows none. "
                            "The owning municipality can share the dataset with yours.") % {
                "datasets": ", ".join(panel.datasets())}
        else:
            out.kind = "error"
            out.message = _("This panel could not be loaded: %(reason)s") % {"reason": error.message}
    return out


# Access -----------------------------------------------------------------------------------

@dataclass
class Access:
    dashboard: Any
    own: bool  # of the viewer's municipality
    can_edit: bool
    can_manage: bool  # editors, sharing, publishing, delete


def _is(session: Session, *roles: str) -> bool:
    return any(session.has(role) for role in roles)


def access(hub: GovHub, session: Session, slug: str, dashboard_id: str, *, shared_ok: bool = True,
           viewing: bool = False) -> Access:
    """The dashboard as ``session`` may use it, or 404 (never 403: ids cannot be probed).
    ``viewing``: a page that only shows it may use the store's short-lived copy (``viewed``)."""
    dashboards = hub.store.dashboards
    read = dashboards.viewed if viewing else dashboards.get
    dashboard = read(dashboard_id) if len(dashboard_id) <= 32 else None
    if dashboard is None:
        raise HTTPException(404)
    if dashboard.tenant == slug == session.tenant:
        admin = session.has("gov-admin")
        owner = dashboard.owner_subject == session.subject
        editor = _is(session, "gov-editor", "gov-admin") and (owner or _listed_editor(dashboards, dashboard.id, session))
        return Access(dashboard, True, admin or editor, admin or (owner and _is(session, "gov-editor")))
    if shared_ok and (slug in dashboards.shares(dashboard.id) or dashboard.published):
        return Access(dashboard, False, False, False)
    raise HTTPException(404)


def _listed_editor(dashboards, dashboard_id: str, session: Session) -> bool:
    """Named as editor by subject, or by the e-mail address the session signed in with."""
    if session.subject and dashboards.is_editor(dashboard_id, session.subject):
        return True
    email = (session.email or "").strip().lower()
    return bool(email) and any((e.email or e.subject).strip().lower() == email
                               for e in dashboards.editors(dashboard_id))


def _actor(session: Session) -> Actor:
    return Actor(session.subject or "", session.display_name or session.username)


def _audit(hub: GovHub, session: Session, action: str, dashboard, **detail) -> None:
    hub.store.audit.append(session.tenant, _actor(session), action, target=f"dashboard:{dashboard.id}",
                           detail={"title": dashboard.title, **detail})


# Builder form <-> spec ------------------------------------------------------------------------

def spec_to_form(spec: dict) -> list[dict]:
    """Panels as the builder form shows them (plain strings, also for invalid input)."""
    rows = []
    for panel in (spec or {}).get("panels", []):
        join = panel.get("join") or None
        left = join["left"] if join else {"dataset": panel.get("dataset") or "", "fields": panel.get("fields") or [],
                                          "aggregate": panel.get("aggregate", "avg")}
        right = join["right"] if join else {"dataset": "", "fields": [], "aggregate": "avg"}
        rows.append({"type": panel.get("type", "timeseries"), "title": panel.get("title", ""),
                     "dataset": left.get("dataset") or "", "fields": ", ".join(left.get("fields") or []),
                     "aggregate": left.get("aggregate", "avg"), "bucket": panel.get("bucket", "hour"),
                     "right_dataset": right.get("dataset") or "", "right_fields": ", ".join(right.get("fields") or []),
                     "right_aggregate": right.get("aggregate", "avg"), "text": panel.get("text", "")})
    return rows


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def form_to_spec(rows: list[dict], range_preset: str, refresh: str) -> dict:
    panels = []
    for row in rows:
        panel: dict[str, Any] = {"type": row["type"], "title": row["title"].strip()}
        if row["type"] == "text":
            panel["text"] = row["text"]
        elif row["right_dataset"] and row["type"] != "map":
            panel["join"] = {"left": {"dataset": row["dataset"], "fields": _split(row["fields"]),
                                      "aggregate": row["aggregate"]},
                             "right": {"dataset": row["right_dataset"], "fields": _split(row["right_fields"]),
                                       "aggregate": row["right_aggregate"]}}
            panel["bucket"] = row["bucket"]
        else:
            panel.update(dataset=row["dataset"] or None, fields=_split(row["fields"]), aggregate=row["aggregate"],
                         bucket=row["bucket"])
        panels.append(panel)
    try:
        refresh_seconds = int(refresh or 0)
    except ValueError:
        refresh_seconds = -1
    return {"panels": panels, "range": range_preset or "7d", "refresh_seconds": refresh_seconds}


def _form_rows(form) -> list[dict]:
    try:
        count = max(0, min(int(form.get("panel_count") or 0), MAX_PANELS))
    except ValueError:
        count = 0

    def value(i: int, name: str, default: str = "") -> str:
        got = form.get(f"p{i}_{name}")
        return got if isinstance(got, str) else default

    rows = []
    for i in range(count):
        rows.append({"type": value(i, "type", "timeseries"), "title": value(i, "title"),
                     "dataset": value(i, "dataset"), "fields": value(i, "fields"),
                     "aggregate": value(i, "aggregate", "avg"), "bucket": value(i, "bucket", "hour"),
                     "right_dataset": value(i, "right_dataset"), "right_fields": value(i, "right_fields"),
                     "right_aggregate": value(i, "right_aggregate", "avg"), "text": value(i, "text")})
    return rows


def _blank_row(kind: str) -> dict:
    return {"type": kind if kind in PANEL_TYPES else "timeseries", "title": "", "dataset": "", "fields": "",
            "aggregate": "avg", "bucket": "hour", "right_dataset": "", "right_fields": "", "right_aggregate": "avg",
            "text": ""}


# The built-in example ------------------------------------------------------------------------

EXAMPLE_TOOL = "passantenfrequenz-wetter"


def example_available(hub: GovHub, session: Session) -> bool:
    readable = {d.ref for d in hub.engine.datasets(session.principal)}
    prefix = f"{session.tenant}/{EXAMPLE_TOOL}"
    return {f"{prefix}/pedestrian_counts", f"{prefix}/weather"} <= readable


def example_spec(slug: str, lang: str) -> tuple[str, dict]:
    _ = i18n.translations(lang).gettext
    counts, weather = f"{slug}/{EXAMPLE_TOOL}/pedestrian_counts", f"{slug}/{EXAMPLE_TOOL}/weather"
    return _("Pedestrians × temperature"), {
        "range": "7d", "refresh_seconds": 0,
        "panels": [
            {"type": "timeseries", "title": _("Pedestrians per hour and temperature"), "bucket": "hour",
             "join": {"left": {"dataset": counts, "fields": ["pedestrians"], "aggregate": "sum"},
                      "right": {"dataset": weather, "fields": ["temperature"], "aggregate": "avg"}}},
            {"type": "kpi", "title": _("Pedestrians in the last hour"), "dataset": counts, "fields": ["pedestrians"],
             "aggregate": "sum", "bucket": "hour"},
            {"type": "bar", "title": _("Pedestrians per day"), "dataset": counts, "fields": ["pedestrians"],
             "aggregate": "sum", "bucket": "day"},
            {"type": "map", "title": _("Counter locations"), "dataset": counts, "fields": ["pedestrians"]},
            {"type": "text", "title": _("About this dashboard"),
             "text": _("Pedestrian counts of the city centre next to the hourly air temperature. "
                       "Use the time range and the sensor filter above; every chart has a table and a CSV download.")},
        ]}


# Overview for the start page -------------------------------------------------------------------

def dashboards_overview(hub: GovHub, session: Session):
    return hub.store.dashboards.overview(session.tenant, session.subject or "", limit=20)


# Routes ------------------------------------------------------------------------------------

def _lang(request: Request) -> str:
    return getattr(request.state, "lang", i18n.DEFAULT_LANGUAGE)


def _panels(hub: GovHub, principal, dashboard, view: View, lang: str,
            csv_base: str) -> tuple[list[PanelOut], list[str]]:
    try:
        spec = parse_spec(dashboard.spec)
    except SpecError as error:
        return [], error.messages
    query = view.query()
    return [render_panel(hub.engine, principal, panel, i, view, lang,
                         f"{csv_base}/panels/{i + 1}.csv?{query}") for i, panel in enumerate(spec.panels)], []


def panel_cache(hub: GovHub) -> PanelCache:
    """The hub's panel cache; ``URBANSTACK_GOV_PANEL_CACHE_SECONDS`` sets its lifetime (0: off)."""
    cache = hub.extras.get("panel_cache")
    if cache is None:
        seconds = os.environ.get("URBANSTACK_GOV_PANEL_CACHE_SECONDS", "")
        try:
            lifetime = float(seconds) if seconds else panelcache.SECONDS
        except ValueError:
            raise ValueError(f"URBANSTACK_GOV_PANEL_CACHE_SECONDS must be a number of seconds, not {seconds!r}") from None
        cache = hub.extras.setdefault("panel_cache", PanelCache(seconds=max(0.0, min(lifetime, 300.0))))
    return cache


def _reader_key(principal) -> tuple:
    """What the engine's answers depend on about the reader (nobody on the published page)."""
    if principal is None:
        return (None,)
    return (principal.tenant, tuple(sorted(principal.roles)), tuple(sorted(str(p) for p in principal.permissions)))


def panels_html(hub: GovHub, principal, dashboard, view: View, lang: str, action: str
                ) -> tuple[Fragment, list[str], list[str]]:
    """The dashboard's panels rendered (``gov/_dashboard_panels.html``), their types and the spec's problems;
    from the short-lived panel cache when the same view was rendered for the same kind of reader
    (``panelcache``). The cached fragment keeps its compressed form too: pages splice it in
    (``splice=("panels_html", …)``, :func:`urbanstack.runtime.web.compression.spliced_page`)."""
    try:
        spec = parse_spec(dashboard.spec)
    except SpecError as error:
        return Fragment(), [], error.messages
    refresh = dashboard.spec.get("refresh_seconds") or 0
    datasets = sorted({ref for panel in spec.panels for ref in panel.datasets()})
    key = ("panels", dashboard.id, dashboard.version, lang, action, refresh, view.start, view.end, view.sensors,
           view.bbox, _reader_key(principal), tuple(hub.catalogue.get(*ref.split("/")) for ref in datasets))

    def render() -> Fragment:
        panels, _problems = _panels(hub, principal, dashboard, view, lang, action)
        return Fragment(hub.renderer.render("gov/_dashboard_panels.html", lang, panels=panels, view=view,
                                            action=action, refresh=refresh))

    return panel_cache(hub).get(key, render), [panel.type for panel in spec.panels], []


def _panels_page(hub: GovHub, request: Request, principal, dashboard, action: str):
    try:
        default = parse_spec(dashboard.spec).range
    except SpecError:
        default = "7d"
    view = view_state(request.query_params, default)
    html, _types, _problems = panels_html(hub, principal, dashboard, view, _lang(request), action)
    return spliced_page(request.scope, SPLICE, html)


def _chart_panel_spec(dashboard, number: int):
    """The dashboard's spec when panel ``number`` (1-based) exists and has data; 404 otherwise."""
    try:
        spec = parse_spec(dashboard.spec)
    except SpecError:
        raise HTTPException(404)
    if not 1 <= number <= len(spec.panels) or spec.panels[number - 1].type in ("text", "map"):
        raise HTTPException(404)
    return spec


def _csv(hub: GovHub, principal, dashboard, number: int, request: Request) -> Response:
    spec = _chart_panel_spec(dashboard, number)
    view = view_state(request.query_params, spec.range)
    try:
        figure = panel_figure(hub.engine, principal, spec.panels[number - 1], number - 1, view, "de")
    except QueryError as error:
        status = 404 if error.status in (401, 403, 404) else 422
        return Response(f"{error.message}\n" if status == 422 else "no data you may read\n", status_code=status,
                        media_type="text/plain; charset=utf-8")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", figure.title).strip("-")[:60] or f"panel-{number}"
    return Response(charts.to_csv(figure), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _table(hub: GovHub, principal, dashboard, number: int, request: Request, action: str, **context) -> Response:
    """The data table of chart panel ``number``: as an htmx fragment (what "Show table" loads into a long
    chart) or as its own page (the link without JavaScript). The same engine query as the panel."""
    spec = _chart_panel_spec(dashboard, number)
    view = view_state(request.query_params, spec.range)
    lang = _lang(request)
    try:
        figure = panel_figure(hub.engine, principal, spec.panels[number - 1], number - 1, view, lang,
                              f"{action}/panels/{number}.csv?{view.query()}")
    except QueryError as error:
        if error.status in (401, 403, 404):
            raise HTTPException(404)
        raise HTTPException(422, error.message)
    fragment = request.headers.get("hx-request") == "true"
    return hub.page(request, "gov/_panel_table.html" if fragment else "gov/panel_table.html", figure=figure,
                    fragment=fragment, dashboard=dashboard, back=f"{action}?{view.query()}", **context)


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)
    hub.extras.setdefault("dashboards_overview", dashboards_overview)
    viewer, editor = staff_session(hub, "gov-viewer"), staff_session(hub, "gov-editor")

    def base(slug: str, dashboard_id: str = "") -> str:
        return hub.url(slug, f"dashboards/{dashboard_id}".rstrip("/"))

    def page(request, template, slug, status=200, **context):
        return hub.page(request, template, status=status, municipality=hub.municipality(slug), slug=slug,
                        base=base(slug), **context)

    def datasets_for(session: Session):
        return hub.engine.datasets(session.principal)

    @routes.get("/{slug}/dashboards")
    def list_page(request: Request, slug: str, session: Session = Depends(viewer)):
        overview = dashboards_overview(hub, session)
        return page(request, "gov/dashboard_list.html", slug, overview=overview,
                    can_create=_is(session, "gov-editor", "gov-admin"),
                    example=_is(session, "gov-editor", "gov-admin") and example_available(hub, session))

    @routes.get("/{slug}/dashboards/new")
    def new_page(request: Request, slug: str, session: Session = Depends(editor)):
        return page(request, "gov/dashboard_new.html", slug, errors=[], title="", description="",
                    example=example_available(hub, session))

    @routes.post("/{slug}/dashboards")
    async def create(request: Request, slug: str, session: Session = Depends(editor)):
        form = await request.form()
        lang = _lang(request)
        if form.get("example"):
            if not example_available(hub, session):
                raise HTTPException(404)
            title, spec = example_spec(slug, lang)
        else:
            title, spec = str(form.get("title") or ""), {"panels": [], "range": "7d", "refresh_seconds": 0}
        description = str(form.get("description") or "")
        try:
            dashboard = hub.store.dashboards.create(slug, _actor(session), title, spec, description=description)
        except InvalidInput as error:
            return page(request, "gov/dashboard_new.html", slug, status=422, errors=[str(error)], title=title,
                        description=description, example=example_available(hub, session))
        _audit(hub, session, "dashboard.create", dashboard)
        target = "" if form.get("example") else "/edit"
        return RedirectResponse(base(slug, dashboard.id) + target, 303)

    @routes.get("/{slug}/dashboards/{dashboard_id}")
    def view_page(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, viewing=True)
        note_subject(request, slug)   # charged to the staff's municipality (docs/metering.md)
        dashboard = found.dashboard
        try:
            default = parse_spec(dashboard.spec).range
        except SpecError:
            default = "7d"
        view = view_state(request.query_params, default)
        html, types, problems = panels_html(hub, session.principal, dashboard, view, _lang(request),
                                            base(slug, dashboard.id))
        return page(request, "gov/dashboard_view.html", slug, access=found, dashboard=dashboard, view=view,
                    splice=("panels_html", html), panel_types=types, problems=problems,
                    action=base(slug, dashboard.id),
                    refresh=dashboard.spec.get("refresh_seconds") or 0, published_view=False)

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels")
    def panels_fragment(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        """The panels alone: what auto-refresh reloads (htmx)."""
        dashboard = access(hub, session, slug, dashboard_id, viewing=True).dashboard
        note_subject(request, slug)
        return _panels_page(hub, request, session.principal, dashboard, base(slug, dashboard.id))

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels/{number:int}.csv")
    def panel_csv(request: Request, slug: str, dashboard_id: str, number: int, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, viewing=True)
        note_subject(request, slug)
        return _csv(hub, session.principal, found.dashboard, number, request)

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels/{number:int}/table")
    def panel_table(request: Request, slug: str, dashboard_id: str, number: int, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, viewing=True)
        note_subject(request, slug)
        return _table(hub, session.principal, found.dashboard, number, request, base(slug, found.dashboard.id),
                      municipality=hub.municipality(slug), slug=slug, base=base(slug), published_view=False)

    def edit_context(session, dashboard, rows, title, description, range_preset, refresh, version):
        datasets = datasets_for(session)
        return dict(dashboard=dashboard, rows=rows, title=title, description=description, range_preset=range_preset,
                    refresh=refresh, version=version, datasets=datasets,
                    fields_of={d.ref: [f.name for f in d.fields if f.numeric] for d in datasets},
                    panel_types=PANEL_TYPES, aggregates=AGGREGATES, buckets=BUCKETS, presets=list(PRESETS),
                    refresh_choices=REFRESH_CHOICES, type_text=PANEL_TYPE_TEXT, preset_text=PRESET_TEXT,
                    bucket_text=BUCKET_TEXT, aggregate_text=charts.AGGREGATE_TEXT, errors=[], conflict=None,
                    latest=None, saved=False)

    @routes.get("/{slug}/dashboards/{dashboard_id}/edit")
    def edit_page(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        if not found.can_edit:
            raise HTTPException(403)
        d = found.dashboard
        context = edit_context(session, d, spec_to_form(d.spec), d.title, d.description, d.spec.get("range", "7d"),
                               str(d.spec.get("refresh_seconds", 0)), d.version)
        context["saved"] = request.query_params.get("saved") == "1"
        return page(request, "gov/dashboard_edit.html", slug, **context)

    @routes.post("/{slug}/dashboards/{dashboard_id}/edit")
    async def edit_post(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        if not found.can_edit:
            raise HTTPException(403)
        form = await request.form()
        rows = _form_rows(form)
        action = str(form.get("action") or "save")
        title, description = str(form.get("title") or ""), str(form.get("description") or "")
        range_preset, refresh = str(form.get("range") or "7d"), str(form.get("refresh_seconds") or "0")
        try:
            version = int(form.get("version") or 0)
        except ValueError:
            version = 0
        context = edit_context(session, found.dashboard, rows, title, description, range_preset, refresh, version)
        moved = re.fullmatch(r"(remove|up|down)-(\d+)", action)
        if action == "add":
            if len(rows) >= MAX_PANELS:
                context["errors"] = [N_("A dashboard has at most 24 panels.")]
            else:
                rows.append(_blank_row(str(form.get("new_type") or "timeseries")))
            context["focus"] = len(rows) - 1
            return page(request, "gov/dashboard_edit.html", slug, **context)
        if moved:
            kind, index = moved.group(1), int(moved.group(2))
            if 0 <= index < len(rows):
                if kind == "remove":
                    rows.pop(index)
                elif kind == "up" and index > 0:
                    rows[index - 1], rows[index] = rows[index], rows[index - 1]
                elif kind == "down" and index < len(rows) - 1:
                    rows[index + 1], rows[index] = rows[index], rows[index + 1]
            return page(request, "gov/dashboard_edit.html", slug, **context)
        raw = form_to_spec(rows, range_preset, refresh)
        try:
            spec = parse_spec(raw)
            problems = check_datasets(hub, session.principal, spec)
            if problems:
                raise SpecError(problems)
        except SpecError as error:
            context["errors"] = error.messages
            return page(request, "gov/dashboard_edit.html", slug, status=422, **context)
        try:
            saved = hub.store.dashboards.save(found.dashboard.id, version, title, spec.model_dump(exclude_none=True),
                                              _actor(session), description=description,
                                              note="saved after a conflict" if form.get("after_conflict") else "")
        except VersionConflict as conflict:
            latest = hub.store.dashboards.get(found.dashboard.id)
            context.update(conflict=conflict, latest=latest, latest_rows=spec_to_form(latest.spec),
                           version=conflict.current)
            return page(request, "gov/dashboard_edit.html", slug, status=409, **context)
        except InvalidInput as error:
            context["errors"] = [str(error)]
            return page(request, "gov/dashboard_edit.html", slug, status=422, **context)
        _audit(hub, session, "dashboard.save", saved, version=saved.version)
        return RedirectResponse(base(slug, saved.id) + "/edit?saved=1", 303)

    @routes.get("/{slug}/dashboards/{dashboard_id}/fields")
    def fields_fragment(request: Request, slug: str, dashboard_id: str, dataset: str = "", target: str = "",
                        session: Session = Depends(viewer)):
        """htmx: the field names of a dataset, for the builder's hint under the fields input."""
        access(hub, session, slug, dashboard_id, shared_ok=False)
        target = re.sub(r"[^a-z0-9_-]", "", target)[:40]
        # htmx sends the select's own name (p3_dataset, p3_right_dataset) and the hint's id as target.
        dataset = dataset or request.query_params.get(target.removesuffix("_fields_hint") + "_dataset", "")
        names = []
        for info in datasets_for(session):
            if info.ref == dataset:
                names = [f.name for f in info.fields if f.numeric]
        return hub.page(request, "gov/_dashboard_fields.html", names=names, target=target)

    @routes.get("/{slug}/dashboards/{dashboard_id}/versions")
    def versions_page(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        versions = hub.store.dashboards.versions(found.dashboard.id)
        return page(request, "gov/dashboard_versions.html", slug, access=found, dashboard=found.dashboard,
                    versions=versions, messages=[])

    @routes.post("/{slug}/dashboards/{dashboard_id}/versions/{number:int}/restore")
    async def restore(request: Request, slug: str, dashboard_id: str, number: int, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        if not found.can_edit:
            raise HTTPException(403)
        form = await request.form()
        try:
            expected = int(form.get("version") or 0)
            restored = hub.store.dashboards.restore(found.dashboard.id, number, expected, _actor(session))
        except (ValueError, NotFound):
            raise HTTPException(404)
        except VersionConflict as conflict:
            _ = i18n.translations(_lang(request)).gettext
            text = _("Not restored: %(name)s saved version %(version)s at %(time)s in the meantime. "
                     "Look at the list below and restore again if you still want to.") % {
                "name": conflict.saved_by_name or conflict.saved_by_subject, "version": conflict.current,
                "time": i18n.format_datetime(conflict.saved_at, _lang(request))}
            current = hub.store.dashboards.get(found.dashboard.id)
            return page(request, "gov/dashboard_versions.html", slug, status=409, access=found, dashboard=current,
                        versions=hub.store.dashboards.versions(found.dashboard.id), messages=[("error", text)])
        _audit(hub, session, "dashboard.restore", restored, restored_from=number, version=restored.version)
        return RedirectResponse(base(slug, restored.id) + "/versions", 303)

    def manage_context(found: Access, messages=()):
        d = found.dashboard
        others = [m for m in hub.catalogue.municipalities() if m.slug != d.tenant]
        return dict(access=found, dashboard=d, editors=hub.store.dashboards.editors(d.id),
                    shares=hub.store.dashboards.shares(d.id), others=others, messages=list(messages))

    @routes.get("/{slug}/dashboards/{dashboard_id}/settings")
    def settings_page(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        if not found.can_manage:
            raise HTTPException(403)
        return page(request, "gov/dashboard_settings.html", slug, **manage_context(found))

    async def managed(request: Request, slug: str, dashboard_id: str, session: Session):
        found = access(hub, session, slug, dashboard_id, shared_ok=False)
        if not found.can_manage:
            raise HTTPException(403)
        return found, await request.form()

    @routes.post("/{slug}/dashboards/{dashboard_id}/editors")
    async def editors(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found, form = await managed(request, slug, dashboard_id, session)
        _ = i18n.translations(_lang(request)).gettext
        remove = str(form.get("remove") or "")
        if remove:
            hub.store.dashboards.remove_editor(found.dashboard.id, remove)
            _audit(hub, session, "dashboard.editor.remove", found.dashboard, subject=remove)
            return RedirectResponse(base(slug, found.dashboard.id) + "/settings", 303)
        subject = str(form.get("subject") or "").strip()[:255]
        name = str(form.get("name") or "").strip()[:255]
        email = subject if "@" in subject else ""
        if not subject:
            return page(request, "gov/dashboard_settings.html", slug, status=422,
                        **manage_context(found, [("error", _("Enter the colleague's e-mail address or user id."))]))
        hub.store.dashboards.add_editor(found.dashboard.id, subject, name=name, email=email)
        _audit(hub, session, "dashboard.editor.add", found.dashboard, subject=subject)
        return RedirectResponse(base(slug, found.dashboard.id) + "/settings", 303)

    @routes.post("/{slug}/dashboards/{dashboard_id}/shares")
    async def shares(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found, form = await managed(request, slug, dashboard_id, session)
        known = {m.slug for m in hub.catalogue.municipalities()} - {found.dashboard.tenant}
        wanted = {m for m in form.getlist("municipality") if m in known}
        have = set(hub.store.dashboards.shares(found.dashboard.id))
        for gone in sorted(have - wanted):
            hub.store.dashboards.unshare(found.dashboard.id, gone)
        if wanted - have:
            hub.store.dashboards.share_with(found.dashboard.id, sorted(wanted - have))
        _audit(hub, session, "dashboard.share", found.dashboard, municipalities=sorted(wanted),
               added=sorted(wanted - have), removed=sorted(have - wanted))
        return RedirectResponse(base(slug, found.dashboard.id) + "/settings", 303)

    @routes.post("/{slug}/dashboards/{dashboard_id}/publish")
    async def publish(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found, form = await managed(request, slug, dashboard_id, session)
        _ = i18n.translations(_lang(request)).gettext
        d = found.dashboard
        if form.get("action") == "unpublish":
            hub.store.dashboards.unpublish(d.id)
            _audit(hub, session, "dashboard.unpublish", d)
            return RedirectResponse(base(slug, d.id) + "/settings", 303)
        refused = publish_refusals(hub, d, _lang(request))
        if refused:
            text = _("Not published: these panels use data that is not open data: %(panels)s. "
                     "Share their datasets publicly (DL-DE Zero 2.0) or remove the panels.") % {
                "panels": "; ".join(refused)}
            return page(request, "gov/dashboard_settings.html", slug, status=409,
                        **manage_context(found, [("error", text)]))
        hub.store.dashboards.publish(d.id)
        _audit(hub, session, "dashboard.publish", d)
        return RedirectResponse(base(slug, d.id) + "/settings", 303)

    @routes.post("/{slug}/dashboards/{dashboard_id}/delete")
    async def delete(request: Request, slug: str, dashboard_id: str, session: Session = Depends(viewer)):
        found, form = await managed(request, slug, dashboard_id, session)
        if form.get("confirm") != "yes":
            _ = i18n.translations(_lang(request)).gettext
            return page(request, "gov/dashboard_settings.html", slug, status=422, **manage_context(
                found, [("error", _("Tick the box to confirm that the dashboard and all its versions are deleted."))]))
        _audit(hub, session, "dashboard.delete", found.dashboard)
        hub.store.dashboards.delete(found.dashboard.id)
        return RedirectResponse(base(slug), 303)

    return routes


def publish_refusals(hub: GovHub, dashboard, lang: str) -> list[str]:
    """The panels (number and title) whose datasets are not open data; empty: may be published."""
    try:
        spec = parse_spec(dashboard.spec)
    except SpecError as error:
        return error.messages
    refused = []
    for index, panel in enumerate(spec.panels):
        closed = [ref for ref in panel.datasets()
                  if not (info := hub.catalogue.get(*ref.split("/"))) or not info.public]
        if closed:
            refused.append(f"{index + 1} ({panel_title(panel, index, lang)}: {', '.join(closed)})")
    return refused


def published_router(hub: GovHub) -> APIRouter:
    """Published dashboards for everyone: ``/{slug}/dashboards/{id}``, no session and no cookie;
    data is read as nobody (open data only)."""
    routes = APIRouter()

    def published(request: Request, slug: str, dashboard_id: str):
        municipality = hub.municipality(slug)
        dashboard = hub.store.dashboards.get(dashboard_id) if len(dashboard_id) <= 32 else None
        if dashboard is None or dashboard.tenant != slug or not dashboard.published:
            raise HTTPException(404)
        note_subject(request, slug)   # read by anyone: charged to the municipality that published it
        return municipality, dashboard

    @routes.get("/{slug}/dashboards/{dashboard_id}")
    def public_view(request: Request, slug: str, dashboard_id: str):
        request.state.lang = i18n.language(request.query_params.get("lang"))
        municipality, dashboard = published(request, slug, dashboard_id)
        try:
            default = parse_spec(dashboard.spec).range
        except SpecError:
            default = "7d"
        view = view_state(request.query_params, default)
        base = f"/{slug}/dashboards/{dashboard.id}"
        html, types, problems = panels_html(hub, None, dashboard, view, _lang(request), base)
        return hub.page(request, "gov/dashboard_published.html", municipality=municipality, dashboard=dashboard,
                        view=view, splice=("panels_html", html), panel_types=types, problems=problems, action=base,
                        refresh=dashboard.spec.get("refresh_seconds") or 0, published_view=True)

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels")
    def public_panels(request: Request, slug: str, dashboard_id: str):
        request.state.lang = i18n.language(request.query_params.get("lang"))
        _municipality, dashboard = published(request, slug, dashboard_id)
        return _panels_page(hub, request, None, dashboard, f"/{slug}/dashboards/{dashboard.id}")

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels/{number:int}.csv")
    def public_csv(request: Request, slug: str, dashboard_id: str, number: int):
        _municipality, dashboard = published(request, slug, dashboard_id)
        return _csv(hub, None, dashboard, number, request)

    @routes.get("/{slug}/dashboards/{dashboard_id}/panels/{number:int}/table")
    def public_table(request: Request, slug: str, dashboard_id: str, number: int):
        request.state.lang = i18n.language(request.query_params.get("lang"))
        municipality, dashboard = published(request, slug, dashboard_id)
        return _table(hub, None, dashboard, number, request, f"/{slug}/dashboards/{dashboard.id}",
                      municipality=municipality, published_view=True)

    return routes
