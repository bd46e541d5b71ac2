"""Pages a City Tool contributes to the Gov Hub and the Citizen Hub, and dashboards it installs.

A tool describes its pages with a :class:`ToolPages` (a folder of Jinja templates, the
:class:`Page` entries and any :class:`DashboardTemplate`) and registers it under its CityTool
name. The hubs render the pages themselves, so a tool never handles a request:

- Gov Hub: ``/gov/<municipality>/tools/<tool>/`` (and ``…/<path>``), for signed-in staff of that
  municipality with at least the page's role, only where the municipality switched the tool on.
- Citizen Hub: the main page (``path=""``) is a section of the service page
  ``/<municipality>/services/<tool>``; other paths are ``/<municipality>/services/<tool>/<path>``;
  only for tools of audience ``citizen`` or ``both`` the municipality switched on.

The hub checks sign-in, tenant and role, then calls ``page.build(ctx)`` with a
:class:`PageContext` and includes the page's template inside its own layout (header,
navigation, language switch, skip link, footer, CSP). Templates get the hub's catalogue
(``_()`` with English message ids, German in ``runtime/web/locale``), the ``number``,
``datetime`` and ``date`` filters, ``point_map`` and the macros of ``macros/figure.html``;
the values ``build`` returned are ``data``. Data is read only through ``ctx``: datasets of
this tool in this municipality, through the Data Hub engine with the viewer's principal
(staff: their session's; citizens: nobody, i.e. open data only), so a page can show no more
than the API would give the same person.

Registration: ``register(name, pages)`` in code, or an entry point in the group
``urbanstack.tool_pages`` (name: the CityTool's name, value: ``module:attribute``) of a package
installed beside the hubs. The built-in tools are registered below.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Literal

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "urbanstack.tool_pages"
HUBS = ("gov", "citizen")
GOV_ROLES = ("gov-viewer", "gov-editor", "gov-admin")
MAX_ROWS = 500                       # rows a page may read of one dataset per request
MAX_DAYS = 366                       # how far back a page may read
READ_PAGE_ROWS = 2_000               # rows per warehouse read, and at most this many reads per call
MAX_READ_PAGES = 5
_PATH = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?)?$")
_KEY = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")

BUILT_IN = {
    "pegel-warnung": "urbanstack.citytools.pegel_warnung.pages:PAGES",
    "passantenfrequenz-wetter": "urbanstack.citytools.passantenfrequenz_wetter:PAGES",
}


@dataclass(frozen=True)
class Page:
    """One page of a tool in one hub.

    ``title`` is an English message id (the hub translates it); ``template`` a file in the
    tool's template folder; ``build(ctx)`` returns the template's ``data``. ``role`` is the
    least Gov Hub role that sees the page (ignored in the Citizen Hub, which has no sign-in)."""
    hub: Literal["gov", "citizen"]
    title: str
    template: str
    build: Callable[["PageContext"], dict[str, Any]]
    path: str = ""
    role: str = "gov-viewer"

    def __post_init__(self) -> None:
        if self.hub not in HUBS:
            raise ValueError(f"page hub must be one of {HUBS}, got {self.hub!r}")
        if not _PATH.fullmatch(self.path):
            raise ValueError(f"page path {self.path!r} must be empty or lowercase letters, digits and '-'")
        if self.role not in GOV_ROLES:
            raise ValueError(f"page role must be one of {GOV_ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class DashboardTemplate:
    """A Gov Hub dashboard installed when a municipality switches the tool on.

    ``key`` names it among the tool's dashboards (it marks the installed copy, so switching on
    twice installs it once); ``spec(municipality, tool)`` returns the dashboard spec for that
    municipality's datasets (the Gov Hub's ``DashboardSpec``). Title and description are stored
    as written (they are the dashboard's, which staff may edit like any other)."""
    key: str
    title: str
    spec: Callable[[str, str], dict[str, Any]]
    description: str = ""

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"dashboard key {self.key!r} must be lowercase letters, digits and '-'")


@dataclass(frozen=True)
class ToolPages:
    """What a tool shows in the hubs. ``name`` names its template folder for the hubs' loaders
    (the tool's package name, e.g. ``pegel_warnung``)."""
    name: str
    templates: Path
    pages: tuple[Page, ...] = ()
    dashboards: tuple[DashboardTemplate, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", self.name):
            raise ValueError(f"ToolPages name {self.name!r} must be a Python identifier in lowercase")
        seen = set()
        for page in self.pages:
            if (page.hub, page.path) in seen:
                raise ValueError(f"two {page.hub} pages with path {page.path!r}")
            seen.add((page.hub, page.path))
        if len({d.key for d in self.dashboards}) != len(self.dashboards):
            raise ValueError("two dashboards with the same key")

    def page(self, hub: str, path: str = "") -> Page | None:
        return next((p for p in self.pages if p.hub == hub and p.path == path), None)

    def pages_of(self, hub: str) -> list[Page]:
        return [p for p in self.pages if p.hub == hub]

    def template_name(self, page: Page) -> str:
        """The name the hubs' template loader knows the page's template by."""
        return f"{self.name}:{page.template}"


# Reading data -------------------------------------------------------------------------------

@dataclass
class PageContext:
    """What a page's ``build`` may use: who looks (``principal``; ``None`` in the Citizen Hub),
    where (``municipality``, the Municipality model; ``tool``, the CityTool model), the page's
    language, and reads of this tool's datasets in this municipality."""
    hub: str
    municipality: Any
    tool: Any
    lang: str
    principal: Any
    engine: Any
    url: Callable[[str], str]
    catalogue: Any = None
    incomplete: bool = False             # set when a read stopped at its bound before the newest rows
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def slug(self) -> str:
        return self.municipality.slug

    def municipality_name(self, slug: str) -> str:
        """The display name of a municipality (a gauge's owner, say); the slug when unknown."""
        other = self.catalogue.municipality(slug) if self.catalogue is not None else None
        return other.spec.display_name if other is not None else slug

    def _ref(self, dataset: str):
        from urbanstack.runtime.api.query import DatasetRef

        if dataset not in {d.name for d in self.tool.spec.datasets}:
            raise ValueError(f"tool {self.tool.name} has no dataset {dataset!r}")
        return DatasetRef(self.slug, self.tool.name, dataset)

    def readable(self, dataset: str) -> bool:
        """Whether the viewer may read the dataset (in the Citizen Hub: whether it is open data)."""
        from urbanstack.runtime.api.query import QueryError

        try:
            self.engine.dataset(self.principal, self._ref(dataset))
        except QueryError:
            return False
        return True

    def latest(self, dataset: str, *, limit: int = 200, days: int = MAX_DAYS) -> list:
        """The newest ``limit`` observations (at most :data:`MAX_ROWS`) of the last ``days`` days,
        newest first, as the engine's ``ObservationRow`` with ``values`` in the dataset's field
        order (use :meth:`fields`). Empty when the viewer may not read the dataset. The engine reads
        oldest first, so the hourly counts choose where to start; at most ``MAX_READ_PAGES`` reads of
        ``READ_PAGE_ROWS`` follow. An older hour too dense for that bound is left out (fewer rows,
        still the newest); should the newest hour alone hold more, ``incomplete`` is set and logged
        (the page must say so)."""
        from urbanstack.runtime.api.query import Filters, ObservationsQuery, QueryError

        limit, days = max(1, min(limit, MAX_ROWS)), max(1, min(days, MAX_DAYS))
        ref = self._ref(dataset)
        end = self.now + timedelta(minutes=1)
        start = end - timedelta(days=days)
        try:
            # Hourly counts first, so one bounded read fetches the newest rows (the engine reads oldest first).
            hours = self.engine.observation_hours(self.principal, ref, start, end)
            total, newest = 0, True
            for hour, count in reversed(hours):
                total += count
                if total >= limit:
                    # An hour too dense to read within the bound is left out (fewer rows, all of them the
                    # newest), unless it is the newest hour itself.
                    dense = total > MAX_READ_PAGES * READ_PAGE_ROWS and not newest
                    start = max(start, hour + timedelta(hours=1) if dense else hour)
                    break
                newest = False
            rows, cursor = [], None
            for _ in range(MAX_READ_PAGES):   # oldest first: page on to the newest, keeping the last `limit`
                page = self.engine.observations(self.principal, ObservationsQuery(
                    dataset=ref, filters=Filters(start=start, end=end), limit=READ_PAGE_ROWS, cursor=cursor))
                rows = (rows + list(page.rows))[-limit:]
                cursor = page.next_cursor
                if cursor is None:
                    break
            else:
                self.incomplete = True
                log.warning("%s of %s: more than %d rows in the newest hour; the page shows the newest it read",
                            dataset, self.slug, MAX_READ_PAGES * READ_PAGE_ROWS)
        except QueryError as error:
            log.info("%s of %s not read for a %s page: %s", dataset, self.slug, self.hub, error.message)
            return []
        return list(reversed(rows))

    def fields(self, dataset: str) -> list[str]:
        return [f.name for f in next(d for d in self.tool.spec.datasets if d.name == dataset).fields]


# Registry -------------------------------------------------------------------------------------

_registry: dict[str, ToolPages | str] = dict(BUILT_IN)
_entry_points_read = False
_lock = threading.Lock()


def register(tool: str, pages: ToolPages | str) -> None:
    """Register the pages of CityTool ``tool`` (a :class:`ToolPages` or ``"module:attribute"``)."""
    with _lock:
        _registry[tool] = pages


def unregister(tool: str) -> None:
    with _lock:
        _registry.pop(tool, None)


def _read_entry_points() -> None:
    global _entry_points_read
    if _entry_points_read:
        return
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _registry.setdefault(entry.name, entry.value)
    _entry_points_read = True


def pages_for(tool: str) -> ToolPages | None:
    """The registered pages of CityTool ``tool``, or None. A reference that cannot be loaded is
    logged once and treated as no pages (the hub keeps working)."""
    with _lock:
        _read_entry_points()
        entry = _registry.get(tool)
        if entry is None or isinstance(entry, ToolPages):
            return entry
        module, _, attribute = entry.partition(":")
        try:
            loaded = getattr(importlib.import_module(module), attribute or "PAGES")
        except (ImportError, AttributeError) as error:
            log.error("pages of tool %s (%s) cannot be loaded: %s", tool, entry, error)
            _registry.pop(tool, None)
            return None
        if not isinstance(loaded, ToolPages):
            log.error("pages of tool %s (%s) are not a ToolPages", tool, entry)
            _registry.pop(tool, None)
            return None
        _registry[tool] = loaded
        return loaded


def template_folders() -> dict[str, Path]:
    """Every registered tool's template folder by its ToolPages name (loads registered references)."""
    with _lock:
        _read_entry_points()
        names = list(_registry)
    folders = {}
    for name in names:
        pages = pages_for(name)
        if pages is not None:
            folders[pages.name] = pages.templates
    return folders


def find_page(catalogue, municipality, tool: str, hub: str, path: str = ""):
    """``(CityTool, ToolPages, Page)`` when ``municipality`` switched ``tool`` on, the tool is in
    the catalogue (and, for the Citizen Hub, is for citizens) and has that page; else None."""
    if tool not in {enabled.name for enabled in municipality.spec.tools}:
        return None
    city_tool = catalogue.tool(tool)
    if city_tool is None or (hub == "citizen" and city_tool.spec.audience.value not in ("citizen", "both")):
        return None
    pages = pages_for(tool)
    page = pages.page(hub, path) if pages is not None else None
    return (city_tool, pages, page) if page is not None else None
