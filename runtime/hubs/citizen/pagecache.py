"""The Citizen Hub's cache of anonymous pages, answered before routing.

Region (``/``), catalogues (``/data/``, ``/{slug}/data/``), start pages (``/{slug}/``) and
dataset pages are the same for every visitor, so :class:`CachedPages` (ASGI, the outermost
layer of the web app) keeps their finished answers — body and every header the app and its
middleware added — in a bounded LRU (:class:`PageStore`: at most ``max_entries`` pages and
``max_bytes`` bytes) and replays them without routing, rendering or a thread. Each answer
carries a strong ``ETag``; a matching ``If-None-Match`` gets ``304``.

An entry is only used while the *generation* it was rendered under is current
(:meth:`Generations.stamp`): a page of one municipality depends on that municipality's
counter, the region and the installation's catalogue on the counter of all, and every page on
the catalogue's version (a dataset no longer public is gone at once). The counters move

* at once, in this process, when the metadata store commits a dashboard change (publish,
  unpublish, save, delete, share: ``Dashboards.listeners``), and
* when a re-render finds that a shown dataset's warehouse coverage (last reading, last
  ingest, row count) has changed; coverage is read at most every ``data_check_seconds``.

The app gzips its pages (:func:`urbanstack.runtime.web.compression.compress_pages`), but a
compressed answer could not be kept for a client that does not accept gzip. So the cache asks
the app for the plain page (it hides ``Accept-Encoding`` from it), keeps the plain body and,
from ``PAGE_MIN_BYTES`` on, a gzip copy made once, and answers each request with the copy its
``Accept-Encoding`` allows (``Vary: Accept-Encoding``; the gzip copy has its own ETag).

Besides, an entry is re-rendered when it is older than ``recheck_seconds`` (one request
renders, the others keep getting the entry meanwhile), so a change made by another process
(a second hub replica publishing) shows after at most that long, new readings after at most
``recheck_seconds + data_check_seconds``, and a figure that slides with time (readings in the
last 24 hours) is never older than ``max_age_seconds``.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from urbanstack.runtime.web.compression import PAGE_LEVEL, PAGE_MIN_BYTES, accepted

CACHEABLE_METHODS = ("GET", "HEAD")
MAX_QUERY = 512          # longer query strings are not cached (they would only fill the cache)
MAX_BODY = 1 << 20       # a bigger answer is passed on and not kept


class Generations:
    """Change counters: one per municipality, one for the pages of all of them, and an epoch that
    stales everything; a page's stamp also holds the catalogue's version."""

    def __init__(self, catalogue):
        self.catalogue = catalogue
        self._of: dict[str, int] = {}
        self._all = 0
        self._epoch = 0
        self._lock = threading.Lock()

    def bump(self, slug: str | None) -> None:
        """Pages of ``slug`` (None: of every municipality) and the installation's pages are stale."""
        with self._lock:
            self._all += 1
            if slug is None:
                self._epoch += 1
            else:
                self._of[slug] = self._of.get(slug, 0) + 1

    def stamp(self, slug: str | None) -> tuple[int, int, int]:
        return (getattr(self.catalogue, "version", 0), self._epoch,
                self._all if slug is None else self._of.get(slug, 0))


@dataclass
class Entry:
    scope: str | None            # the municipality the page depends on (None: all)
    stamp: tuple[int, int, int]
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    gzipped: bytes | None = None  # the body gzipped once (None: too small to be worth it)
    rendered: float = field(default_factory=time.monotonic)
    checked: float = field(default_factory=time.monotonic)
    rendering: bool = False      # a request is re-rendering it; the others keep using it

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


class PageStore:
    """A bounded LRU of finished pages (count and bytes)."""

    def __init__(self, max_entries: int = 2_000, max_bytes: int = 64 << 20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[tuple, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Entry | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: Entry) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._items[key] = entry
            self._bytes += entry.size
            while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.size

    def drop(self, key: tuple) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def size(self) -> tuple[int, int]:
        return len(self._items), self._bytes


def page_scope(path: str, reserved: frozenset[str]) -> tuple[bool, str | None]:
    """(cacheable, municipality) of a path: ``/``, ``/data/``, ``/{slug}/``, ``/{slug}/data/`` and
    ``/{slug}/data/{tool}/{dataset}``."""
    if path in ("/", "/data/"):
        return True, None
    parts = path.split("/")
    # "/slug/" -> ["", "slug", ""]; "/slug/data/" -> ["", "slug", "data", ""]; dataset -> 5 parts
    if len(parts) < 3 or parts[1] in reserved or not parts[1]:
        return False, None
    if len(parts) == 3 and parts[2] == "":
        return True, parts[1]
    if len(parts) == 4 and parts[2] == "data" and parts[3] == "":
        return True, parts[1]
    if len(parts) == 5 and parts[2] == "data" and parts[3] and parts[4]:
        return True, parts[1]
    return False, None


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    if not if_none_match:
        return False
    candidates = [c.strip() for c in if_none_match.split(b",")]
    return b"*" in candidates or etag in candidates or b"W/" + etag in candidates


class CachedPages:
    """ASGI middleware serving :class:`PageStore` entries before routing (see the module)."""

    def __init__(self, app, hub):
        self.app, self.hub = app, hub

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in CACHEABLE_METHODS:
            return await self.app(scope, receive, send)
        hub = self.hub
        path, query = scope["path"], scope.get("query_string", b"")
        cacheable, slug = page_scope(path, hub.reserved)
        if not cacheable or len(query) > MAX_QUERY:
            return await self.app(scope, receive, send)
        if_none_match = None
        gzip_ok = False
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"accept-encoding":
                gzip_ok = "gzip" in accepted(value.decode("latin-1"))
            elif name in (b"authorization", b"cookie"):
                return await self.app(scope, receive, send)   # not an anonymous request: never shared
        key = (path, query)
        stamp = hub.generations.stamp(slug)
        entry = hub.pages.get(key)
        now = time.monotonic()
        if entry is not None:
            fresh = entry.stamp == stamp and now - entry.rendered < hub.max_age_seconds
            if fresh and (now - entry.checked < hub.recheck_seconds or entry.rendering):
                return await self._replay(entry, scope, send, if_none_match, gzip_ok)
            if fresh:
                entry.rendering = True      # this request renders; the others keep the entry meanwhile
            else:
                hub.pages.drop(key)
        plain = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]}
        await self._render(key, slug, stamp, plain, receive, send, if_none_match, gzip_ok, entry)

    async def _replay(self, entry: Entry, scope, send, if_none_match, gzip_ok: bool) -> None:
        body, etag, headers = entry.body, entry.etag, entry.headers
        if entry.gzipped is not None:
            headers = [*headers, (b"vary", b"Accept-Encoding")]
            if gzip_ok:
                body, etag = entry.gzipped, entry.etag[:-1] + b'-gzip"'
                headers = [(k, v) for k, v in headers if k not in (b"content-length", b"etag")]
                headers += [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode()),
                            (b"etag", etag)]
        if _matches(if_none_match, etag):
            await send({"type": "http.response.start", "status": 304, "headers": _not_modified(headers)})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def _render(self, key, slug, stamp, scope, receive, send, if_none_match, gzip_ok: bool,
                      previous: Entry | None) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        size = 0
        passing = False   # the answer is not kept: messages go straight on

        async def capture(message):
            nonlocal size, passing
            if passing:
                return await send(message)
            if message["type"] == "http.response.start":
                start.update(message)
                headers = message.get("headers", [])
                if message["status"] != 200 or any(k.lower() in (b"set-cookie", b"content-encoding")
                                                   for k, _ in headers):
                    passing = True
                    return await send(message)
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                passing = True
                await send(start)
                for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunks.clear()
                return await send(message)
            if not message.get("more_body", False):
                await self._finish(key, slug, stamp, start, b"".join(chunks), scope, send, if_none_match, gzip_ok)
            return None

        try:
            await self.app(scope, receive, capture)
        finally:
            if previous is not None:
                previous.rendering = False
                if self.hub.pages.get(key) is previous:
                    self.hub.pages.drop(key)     # the page is no longer a plain 200: forget the old one

    async def _finish(self, key, slug, stamp, start, body, scope, send, if_none_match, gzip_ok: bool) -> None:
        etag = _etag(body)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"etag", b"cache-control")]
        headers += [(b"etag", etag), (b"cache-control", self.hub.cache_control.encode())]
        gzipped = gzip.compress(body, PAGE_LEVEL, mtime=0) if len(body) >= PAGE_MIN_BYTES else None
        entry = Entry(scope=slug, stamp=stamp, status=start["status"], headers=headers, body=body, etag=etag,
                      gzipped=gzipped)
        if scope["method"] == "GET":
            # (a HEAD's answer has no body to keep)
            self.hub.pages.put(key, entry)
        await self._replay(entry, scope, send, if_none_match, gzip_ok)


def _not_modified(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    keep = (b"etag", b"cache-control", b"vary", b"content-location", b"date", b"expires")
    return [(k, v) for k, v in headers if k.lower() in keep]
