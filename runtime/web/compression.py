"""Compressed answers for the web pages: the front-end bundle pre-compressed, pages gzipped.

- ``/static/dist/<name>.<hash>.<ext>``: the build writes ``.br`` and ``.gz`` beside every file
  (``frontend/build.mjs``). :class:`PrecompressedStatic` sends the smallest one the browser
  accepts (``Accept-Encoding``: brotli, then gzip, else the plain file) with ``Content-Encoding``
  and ``Vary: Accept-Encoding``, so no request spends CPU on compressing. Hashed names never
  change: ``Cache-Control: public, max-age=31536000, immutable``. Everything else under
  ``/static`` (and ``dist/manifest.json``) is revalidated (``no-cache``).
- Pages: :func:`compress_pages` wraps an app in Starlette's streaming ``GZipMiddleware``
  (answers of at least ``PAGE_MIN_BYTES``, level ``PAGE_LEVEL``: most of the gain for little CPU;
  answers above 128 KiB are compressed in a worker thread; memory is bounded by the chunk size).
  Answers that already carry ``Content-Encoding`` (the static files above) pass unchanged.
  A page built around one large cached fragment (a dashboard's panels: up to ~300 KB that many
  readers share) is compressed in parts (:func:`spliced_page`): the fragment once, when it is
  cached (:class:`Fragment`), and per request only the page around it; the parts form one DEFLATE
  stream (each part ends on a byte boundary, and a part never refers back into another) in one
  gzip member. Gzipping a year's dashboard costs ~5 ms of CPU per request otherwise.
  Compressing pages that hold a CSRF token next to reflected input is what BREACH attacks; the
  session cookie is ``SameSite=Lax``, so another site cannot make the many credentialed
  requests such an attack measures.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import zlib
from functools import cached_property
from mimetypes import guess_type

from markupsafe import Markup

from starlette.datastructures import Headers
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

PAGE_MIN_BYTES = 1024
PAGE_LEVEL = 5
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# name.<10 hex>.ext, as build.mjs names its outputs
HASHED = re.compile(r"^dist/[^/]+\.[0-9a-f]{10}\.[a-z0-9]+$")
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def accepted(header: str) -> set[str]:
    """Content codings the client accepts (``q=0`` means refused)."""
    codings = set()
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        quality = params.strip()
        if quality.startswith("q="):
            try:
                if float(quality[2:]) == 0:
                    continue
            except ValueError:
                continue
        if name.strip():
            codings.add(name.strip().lower())
    return codings


class PrecompressedStatic(StaticFiles):
    """``StaticFiles`` that prefers a file's pre-compressed sibling and sets the caching headers."""

    async def get_response(self, path: str, scope) -> Response:
        relative = path.replace(os.sep, "/")
        hashed = bool(HASHED.match(relative))
        if hashed and scope["method"] in ("GET", "HEAD"):
            codings = accepted(Headers(scope=scope).get("accept-encoding", ""))
            for coding, suffix in ENCODINGS:
                if coding not in codings:
                    continue
                full, stat = self.lookup_path(path + suffix)
                if stat is None:
                    continue
                media_type = guess_type(path)[0] or "application/octet-stream"  # of the file itself, not the .br
                return FileResponse(full, stat_result=stat, media_type=media_type, headers={
                    "content-encoding": coding, "vary": "Accept-Encoding", "cache-control": IMMUTABLE})
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["cache-control"] = IMMUTABLE if hashed else REVALIDATE
            if hashed:
                response.headers["vary"] = "Accept-Encoding"
        return response


def compress_pages(app) -> None:
    """Adds gzip compression of answers to the FastAPI/Starlette ``app`` (see the module's text)."""
    app.add_middleware(GZipMiddleware, minimum_size=PAGE_MIN_BYTES, compresslevel=PAGE_LEVEL)


# Where a page's template puts the fragment; random per process, so no text of a page can be taken for it.
SPLICE = Markup(f"<!--fragment-{secrets.token_hex(12)}-->")
# gzip member header: deflate, no flags, no time, no extra flags, unknown OS (RFC 1952)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _deflate(data: bytes, *, last: bool) -> bytes:
    """``data`` as raw DEFLATE blocks on their own: ended on a byte boundary (sync flush), or final."""
    compressor = zlib.compressobj(PAGE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class Fragment(Markup):
    """Safe HTML that keeps its UTF-8 and compressed forms once they were needed (a cache holds it)."""

    @cached_property
    def encoded(self) -> bytes:
        return str(self).encode()

    @cached_property
    def deflated(self) -> bytes:
        return _deflate(self.encoded, last=False)


def spliced_page(scope, html: str, fragment: Fragment, *, status: int = 200,
                 headers: dict[str, str] | None = None) -> Response:
    """The page ``html`` with ``fragment`` in place of :data:`SPLICE`: gzipped from the fragment's
    compressed form when the client accepts gzip (``Content-Encoding`` set, so the page compression
    passes it through), else plain. A page without exactly one :data:`SPLICE` is answered plain."""
    parts = html.split(SPLICE)
    if len(parts) != 2 or "gzip" not in accepted(Headers(scope=scope).get("accept-encoding", "")):
        return HTMLResponse(html.replace(SPLICE, fragment), status_code=status, headers=headers)
    head, tail = parts[0].encode(), parts[1].encode()
    crc = zlib.crc32(tail, zlib.crc32(fragment.encoded, zlib.crc32(head)))
    size = len(head) + len(fragment.encoded) + len(tail)
    body = b"".join((GZIP_HEADER, _deflate(head, last=False), fragment.deflated, _deflate(tail, last=True),
                     struct.pack("<II", crc, size & 0xFFFFFFFF)))
    return HTMLResponse(body, status_code=status,
                        headers={**(headers or {}), "content-encoding": "gzip", "vary": "Accept-Encoding"})
