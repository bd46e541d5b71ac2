"""The Citizen Hub: each municipality's public portal, anonymous and without cookies.

Everything here is read as nobody (``principal=None``) through the API's
:class:`QueryEngine`, so only open data can ever appear: a dataset that is not public
is answered exactly like one that does not exist. No page sets a cookie or keeps a
session; the language travels in the URL (``?lang=en``). :class:`NoCookies` strips any
``Set-Cookie`` from a Citizen Hub answer (and logs it), so a mistake cannot become a
tracking cookie.

Finished anonymous pages are kept and answered before routing by
:class:`~.pagecache.CachedPages` (``ETag``, ``304``, ``Cache-Control: public, no-cache``),
invalidated at once when a dashboard is published, unpublished, changed or shared, when the
catalogue changes, and when a shown dataset gets new readings (see :mod:`.pagecache` for the
bounds). What is expensive to compute (coverage of a dataset, readings per day, the region's
figures) sits in a small bounded in-process TTL cache (:class:`TTLCache`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse

from urbanstack.runtime.api.catalogue import Catalogue, DatasetInfo
from urbanstack.runtime.api.query import Aggregate, Bucket, DatasetRef, Filters, QueryEngine, QueryError, SeriesQuery
from urbanstack.runtime.web.errors import install_error_pages
from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.rendering import Renderer

from .metadata import THEMES
from .pagecache import CachedPages, Generations, PageStore

log = logging.getLogger("urbanstack.citizenhub")
TEMPLATES = Path(__file__).parent / "templates"
PAGE_CACHE_CONTROL = "public, no-cache"   # anyone may keep a page, but must ask (ETag) before reusing it
DATA_TTL = 60.0            # seconds computed figures stay in the in-process cache
RECHECK_SECONDS = 1.0      # a cached page is re-rendered after this long (changes made by other processes)
DATA_CHECK_SECONDS = 5.0   # a dataset's coverage (new readings?) is read at most this often
LICENCE_URI = "http://dcat-ap.de/def/licenses/dl-zero-de/2.0"
LICENCE_NAME = "Datenlizenz Deutschland – Zero – Version 2.0"
LICENCE_TEXT_URL = "https://www.govdata.de/dl-de/zero-2-0"
CONCILIATION_BODY_URL = "https://www.schlichtungsstelle-bgg.de"
# Paths of the Gov Hub and the platform: never a municipality's slug in the Citizen Hub.
RESERVED = frozenset({"gov", "static", "api", "data", "catalog", "signup", "ingest", "docs", "graphql", "mqtt"})


class TTLCache:
    """A bounded, thread-safe cache whose entries expire after ``ttl`` seconds."""

    def __init__(self, ttl: float = DATA_TTL, size: int = 2048):
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any], ttl: float | None = None) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                self._items.move_to_end(key)
                return hit[1]
        value = compute()
        with self._lock:
            self._items[key] = (now + (self.ttl if ttl is None else ttl), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def peek(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key: Any) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Coverage:
    first: datetime | None
    last: datetime | None
    updated: datetime | None


@dataclass
class CitizenHub:
    settings: Any
    catalogue: Catalogue
    engine: QueryEngine
    store: Any
    renderer: Renderer
    directory: Any = None                 # operator.ags.MunicipalityDirectory, or None
    cache: TTLCache = field(default_factory=TTLCache)
    pages: PageStore = field(default_factory=PageStore)
    generations: Generations | None = None
    reserved: frozenset[str] = RESERVED
    cache_control: str = PAGE_CACHE_CONTROL
    recheck_seconds: float = RECHECK_SECONDS
    data_check_seconds: float = DATA_CHECK_SECONDS
    max_age_seconds: float = DATA_TTL
    # The API's query quota (runtime/api/quota.py): a download counts as one anonymous query of
    # the client's address, as an open-data request to the API does. None: downloads are not counted.
    quota: Any = None

    def __post_init__(self) -> None:
        if self.generations is None:
            self.generations = Generations(self.catalogue)
        self._coverage_seen: dict[str, Coverage] = {}
        listeners = getattr(getattr(self.store, "dashboards", None), "listeners", None)
        if listeners is not None:
            listeners.append(self.dashboards_changed)

    # Invalidation -----------------------------------------------------------
    def dashboards_changed(self, slug: str | None) -> None:
        """The metadata store committed a dashboard change of ``slug``: its pages are stale now."""
        self.cache.drop(("dashboards", slug))
        self.generations.bump(slug)

    def data_changed(self, dataset: DatasetInfo) -> None:
        """New readings in ``dataset``: forget its figures and the pages that show them."""
        for key in (("coverage", dataset.ref), ("readings", dataset.ref), ("figures",)):
            self.cache.drop(key)
        self.generations.bump(dataset.owner)

    def check_data(self, slug: str | None = None) -> None:
        """Reads the coverage of the open datasets of ``slug`` (None: all) where it is older than
        ``data_check_seconds``; a change marks the pages that show it stale."""
        for dataset in self.open_datasets(slug):
            self.coverage(dataset)

    # Municipalities ---------------------------------------------------------
    def municipality(self, slug: str):
        municipality = self.catalogue.municipality(slug) if slug not in RESERVED else None
        if municipality is None:
            raise HTTPException(404, "unknown municipality")
        return municipality

    def municipalities(self) -> list:
        return sorted(self.catalogue.municipalities(), key=lambda m: m.spec.display_name.casefold())

    def residents(self, municipality) -> int | None:
        if self.directory is not None:
            entry = self.directory.get(municipality.spec.ags)
            if entry is not None:
                return entry.population
        usage = municipality.status.usage if municipality.status else None
        return usage.residents if usage else None

    # Open data --------------------------------------------------------------
    def open_datasets(self, slug: str | None = None) -> list[DatasetInfo]:
        """Open data only: the engine's list for nobody, i.e. public datasets."""
        return [d for d in self.engine.datasets(None) if d.public and (slug is None or d.owner == slug)]

    def open_dataset(self, slug: str, tool: str, name: str) -> DatasetInfo:
        dataset = self.catalogue.get(slug, tool, name)
        if dataset is None or not dataset.public:
            raise HTTPException(404, "no such open dataset")
        return self.engine.dataset(None, DatasetRef(slug, tool, name))

    def coverage(self, dataset: DatasetInfo) -> Coverage:
        def compute() -> Coverage:
            try:
                return Coverage(*self.engine.coverage(None, DatasetRef(dataset.owner, dataset.tool, dataset.name)))
            except QueryError as error:
                log.info("coverage of %s unavailable: %s", dataset.ref, error.message)
                return Coverage(None, None, None)
        coverage = self.cache.get(("coverage", dataset.ref), compute, ttl=self.data_check_seconds)
        seen = self._coverage_seen.get(dataset.ref)
        if seen != coverage:
            self._coverage_seen[dataset.ref] = coverage
            if seen is not None:
                log.info("new data in %s: its pages are re-rendered", dataset.ref)
                self.data_changed(dataset)
                self.cache.put(("coverage", dataset.ref), coverage, self.data_check_seconds)
        return coverage

    def readings_last_day(self, dataset: DatasetInfo) -> int:
        def compute() -> int:
            now = datetime.now(timezone.utc)
            field_name = next((f.name for f in dataset.fields if f.required), dataset.fields[0].name)
            try:
                result = self.engine.series(None, SeriesQuery(
                    dataset=DatasetRef(dataset.owner, dataset.tool, dataset.name), fields=(field_name,),
                    aggregates=(Aggregate.count,), bucket=Bucket.day,
                    filters=Filters(start=now - timedelta(days=1), end=now)))
            except QueryError as error:
                log.info("readings of %s unavailable: %s", dataset.ref, error.message)
                return 0
            return sum(row.events for row in result.rows)
        return self.cache.get(("readings", dataset.ref), compute)

    def published_dashboards(self, slug: str) -> list:
        """The municipality's published dashboards, newest first (forgotten at once when this
        process changes one; read again after ``recheck_seconds`` for changes of other processes)."""
        def compute() -> list:
            if self.store is None:
                return []
            try:
                overview = self.store.dashboards.overview(slug, subject="", limit=200)
            except Exception as error:  # noqa: BLE001 - the portal still shows its open data
                log.warning("published dashboards of %s unavailable: %s", slug, str(error)[:200])
                return []
            return [d for d in overview.published if d.tenant == slug and d.published]
        return self.cache.get(("dashboards", slug), compute, ttl=self.recheck_seconds)

    def services(self, municipality) -> list:
        """City Tools for residents (audience citizen or both) this municipality has switched on."""
        enabled = {tool.name for tool in municipality.spec.tools}
        return [tool for tool in self.catalogue.tools()
                if tool.metadata.name in enabled and tool.spec.audience.value in ("citizen", "both")]

    def service(self, municipality, name: str):
        tool = next((t for t in self.services(municipality) if t.metadata.name == name), None)
        if tool is None:
            raise HTTPException(404, "no such service")
        return tool

    def invalidate(self) -> None:
        """Forget computed figures and cached pages (after new data or a change of what is published)."""
        self.cache.clear()
        self.generations.bump(None)

    # Pages ------------------------------------------------------------------
    def page(self, request: Request, template: str, *, status: int = 200, max_age: int | None = None,
             **context: Any) -> HTMLResponse:
        lang = request.state.lang
        context.setdefault("messages", [])
        context.setdefault("municipality", None)
        response = self.renderer.page(request, template, status=status, hub=self, link=linker(lang),
                                      switch_language=language_switch(request),
                                      licence=dict(uri=LICENCE_URI, name=LICENCE_NAME, url=LICENCE_TEXT_URL),
                                      themes=THEMES,
                                      **context)
        response.headers["Cache-Control"] = (self.cache_control if max_age is None else f"public, max-age={max_age}") \
            if status == 200 else "no-store"
        response.headers["Vary"] = "Accept-Language"
        return response


def linker(lang: str) -> Callable[..., str]:
    """``link('/guetersloh/', q='x')``: a path of the hub with the page's language kept in the URL."""
    def link(path: str, **params: Any) -> str:
        query = {k: v for k, v in params.items() if v not in (None, "", [])}
        if lang != i18n.DEFAULT_LANGUAGE:
            query["lang"] = lang
        return path + ("?" + urlencode(query, doseq=True) if query else "")
    return link


def language_switch(request: Request) -> str:
    """The current URL in the other language (other query parameters kept)."""
    other = "en" if request.state.lang == "de" else "de"
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    if other != i18n.DEFAULT_LANGUAGE:
        query.append(("lang", other))
    return request.url.path + ("?" + urlencode(query) if query else "")


def set_language(request: Request) -> str:
    request.state.lang = i18n.language(request.query_params.get("lang"))
    request.state.session = None
    return request.state.lang


class NoCookies:
    """ASGI middleware: no answer outside ``allowed`` path prefixes (the Gov Hub) carries a
    ``Set-Cookie`` header. One that tried is logged and the header dropped."""

    def __init__(self, app, allowed: tuple[str, ...] = ("/gov/",)):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").startswith(self.allowed):
            return await self.app(scope, receive, send)

        async def without_cookies(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                kept = [(k, v) for k, v in headers if k.lower() != b"set-cookie"]
                if len(kept) != len(headers):
                    log.warning("dropped a Set-Cookie header from %s: the Citizen Hub sets no cookies",
                                scope.get("path", "")[:200])
                    message = {**message, "headers": kept}
            await send(message)

        await self.app(scope, receive, without_cookies)


def load_directory(settings) -> Any:
    try:
        from urbanstack.operator.ags import load_directory as load
        return load(settings)
    except (OSError, ValueError) as error:
        log.warning("municipality directory unavailable (%s); residents are not shown", str(error)[:200])
        return None


def create_citizen_hub(settings: Any, catalogue: Catalogue, engine: QueryEngine, store) -> CitizenHub:
    return CitizenHub(settings=settings, catalogue=catalogue, engine=engine, store=store,
                      renderer=Renderer([TEMPLATES]), directory=load_directory(settings))


def default_routers() -> tuple[Callable[[CitizenHub], APIRouter], ...]:
    from . import dcat, downloads, pages
    # DCAT and downloads first: their paths are more specific than the pages' /{slug}/…
    return (dcat.router, downloads.router, pages.router)


def add_citizen_hub(app: FastAPI, settings: Any, catalogue: Catalogue, engine: QueryEngine, store, *,
                    routers: tuple[Callable[[CitizenHub], APIRouter], ...] | None = None,
                    quota: Any = None) -> CitizenHub:
    """Add the Citizen Hub's routes to the platform's web app (the Gov Hub's app: it serves
    ``/static`` and the HTML error pages). Its routes come after the Gov Hub's, so ``/gov/…``
    stays the Gov Hub's. ``quota``: the API's query quota, which downloads are charged to."""
    hub = create_citizen_hub(settings, catalogue, engine, store)
    hub.quota = quota
    app.state.citizen = hub
    for build in routers if routers is not None else default_routers():
        app.include_router(build(hub))
    _error_pages(app, hub)
    app.add_middleware(NoCookies)
    app.add_middleware(CachedPages, hub=hub)    # outermost: cached pages are answered before routing
    return hub


ERROR_TEXTS = {
    404: (N_("Not found"), N_("This page does not exist.")),
    405: (N_("Not allowed"), N_("This page does not accept that kind of request.")),
    413: (N_("Too large"), N_("The request is too large.")),
    429: (N_("Too many downloads"), N_("Too many downloads from your network in the last hour. Please try again "
                                        "later.")),
    422: (N_("Invalid input"), N_("Some input was not valid. Go back and check the form.")),
}


def _error_pages(app: FastAPI, hub: CitizenHub) -> None:
    """Errors outside ``/gov/`` get the portal's own page (no script, no cookie); the Gov Hub's
    handler keeps answering its own paths."""
    def render(request, status, title, message, headers):
        page = hub.page(request, "citizen/error.html", status=status, title=title, message=message)
        if headers and "Retry-After" in headers:   # 429: when the client may come back
            page.headers["Retry-After"] = headers["Retry-After"]
        return page

    install_error_pages(app, ERROR_TEXTS, render,
        detail_statuses=frozenset({413, 422}), language=set_language,
        defer=lambda request: request.url.path.startswith("/gov/"))
