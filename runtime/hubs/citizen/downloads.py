"""Downloads of open datasets: CSV, JSON or GeoJSON, the whole dataset or a time range,
streamed with constant memory.

The file is written by the API's export code (:mod:`urbanstack.runtime.api.export`)
from rows the API's engine reads as nobody (open data only), one page of at most
``max_rows`` rows at a time: the engine's keyset cursor walks a time window, and the
window adapts (it widens while pages come back small, narrows when a window needs more
than one page), so a year of readings is never in memory at once and no single query
runs long. The first page is read before the answer starts, so a refused request still
gets its proper status.

CSV and JSON of datasets whose field types :mod:`~urbanstack.runtime.api.textexport` covers
take a faster path (:class:`TextBlocks`): the warehouse counts the rows per hour, the hours
are grouped into windows of at most ``BLOCK_ROWS`` rows, and the warehouse writes each window's
rows as text in the export module's exact layout; Python only joins the blocks. An hour with
more rows than a block holds goes through the row path. GeoJSON always takes
the row path.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import StreamingResponse

from urbanstack.runtime.api import export, textexport
from urbanstack.runtime.api.query import DatasetRef, Filters, ObservationPage, ObservationsQuery, QueryError
from urbanstack.runtime.metering.api_meter import add_rows_read, note_subject
from urbanstack.runtime.web.i18n import TIME_ZONE, N_

from .app import CitizenHub, set_language
from .metadata import FORMAT_BY_KEY

log = logging.getLogger("urbanstack.citizenhub.downloads")
MAX_WINDOW = timedelta(days=365)
FIRST_WINDOW = timedelta(days=1)
BLOCK_ROWS = 500_000       # rows the warehouse writes as text in one query at most
BLOCK_BYTES = 48 << 20     # … and about this much text: three quarters of what a query may return (max_result_bytes)


def block_rows(fields, fmt: str) -> int:
    """Rows per text block: ``BLOCK_BYTES`` over a generous guess of a row's size."""
    guess = (60 + 12 * len(fields)) * (3 if fmt == "json" else 1)
    return max(1_000, min(BLOCK_ROWS, BLOCK_BYTES // guess))


def parse_day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise HTTPException(422, N_("Enter the days as YYYY-MM-DD, for example 2026-03-01.")) from None


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), TIME_ZONE).astimezone(timezone.utc)


class RowStream:
    """The rows of one dataset between ``start`` and ``end``, page by page through the engine."""

    def __init__(self, hub: CitizenHub, ref: DatasetRef, start: datetime, end: datetime):
        self.hub, self.ref, self.start, self.end = hub, ref, start, end
        self.limit = hub.engine.limits.max_rows
        self.window = min(FIRST_WINDOW, end - start)
        self.first = self._page(start, start + self.window, None)   # raises before anything is sent

    def _page(self, start: datetime, end: datetime, cursor: str | None) -> ObservationPage:
        return self.hub.engine.observations(None, ObservationsQuery(
            dataset=self.ref, filters=Filters(start=start, end=end), limit=self.limit, cursor=cursor))

    def rows(self) -> Iterator:
        page, low = self.first, self.start
        high = low + self.window
        while True:
            yield from page.rows
            pages_in_window = 1
            while page.next_cursor:
                page = self._page(low, high, page.next_cursor)
                pages_in_window += 1
                yield from page.rows
            if high >= self.end:
                return
            # the next window: wider while pages are small, narrower when one needed several
            width = high - low
            if pages_in_window > 1:
                width = max(timedelta(minutes=1), width / pages_in_window)
            elif len(page.rows) < self.limit // 4:
                width = min(MAX_WINDOW, width * 2)
            low, high = high, min(self.end, high + width)
            page = self._page(low, high, None)


def plan_windows(hours: list[tuple[datetime, int]], start: datetime, end: datetime,
                 limit: int) -> Iterator[tuple[datetime, datetime, int]]:
    """Consecutive windows [low, high) covering [start, end), cut at hour starts, each holding at
    most ``limit`` of the counted rows unless a single hour holds more (its count says so)."""
    low, rows = start, 0
    for hour, count in hours:
        if rows and rows + count > limit and hour > low:
            yield low, hour, rows
            low, rows = hour, 0
        rows += count
    if rows:
        yield low, end, rows


class TextBlocks:
    """The file's rows as text blocks the warehouse wrote (see the module); the first span's
    hours are counted before the answer starts."""

    def __init__(self, hub: CitizenHub, ref: DatasetRef, start: datetime, end: datetime, fmt: str):
        self.hub, self.ref, self.start, self.end, self.fmt = hub, ref, start, end, fmt
        self.fields = hub.engine.dataset(None, ref).fields
        limits = hub.engine.limits
        # one count per hour comes back: no more hours at once than a query may return rows
        self.span = min(MAX_WINDOW, timedelta(hours=max(limits.max_rows, limits.max_export_rows)))
        self.first_hours = self._hours(start, min(end, start + self.span))

    def _hours(self, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
        return self.hub.engine.observation_hours(None, self.ref, start, end)

    def blocks(self) -> Iterator[bytes]:
        """The file's rows as text blocks. The rows per block start from a guess of a row's size
        and then follow the sizes the blocks actually had (``BLOCK_BYTES`` of text per query,
        half of what a query may return): fewer queries for small rows (each query has a fixed
        planning cost of ~0.08 s for the float formatting), smaller blocks for long ones. A window
        the warehouse still refuses as too large goes through the row path, never cut short."""
        engine, low, hours = self.hub.engine, self.start, self.first_hours
        limit = block_rows(self.fields, self.fmt)
        first = True
        while low < self.end:
            high = min(self.end, low + self.span)
            if hours is None:
                hours = self._hours(low, high)
            cursor = low
            while cursor < high:
                planned = limit
                for w_low, w_high, counted in plan_windows([h for h in hours if h[0] >= cursor] if cursor > low
                                                           else hours, cursor, high, limit):
                    block = None
                    if counted <= limit:
                        try:
                            block = engine.observations_text(None, self.ref, w_low, w_high, self.fmt,
                                                             max_rows=counted)[1]
                        except QueryError as error:
                            if error.code != "query_too_expensive":
                                raise
                            log.info("text block of %s rows refused as too large; the row path takes it", counted)
                        else:
                            # chDB's raw_query reports no read_rows: the window's counted rows stand in for them
                            add_rows_read({"read_rows": counted})
                            if counted:
                                limit = max(1_000, min(BLOCK_ROWS, int(BLOCK_BYTES * counted / max(len(block), 1))))
                            if first and self.fmt == "json":
                                block = block[2:]          # the first item has no ", " before it
                    if block is None:
                        block = self._rows_as_text(w_low, w_high, first)
                    if block:
                        first = False
                        yield block
                    cursor = w_high
                    if limit > planned * 1.25 or limit < planned:
                        break                  # plan the rest of the span again with the new size
                else:
                    cursor = high
            low, hours = high, None

    def _rows_as_text(self, low: datetime, high: datetime, first: bool) -> bytes:
        """One oversized hour through the engine's row pages and the export module's writer."""
        stream = RowStream(self.hub, self.ref, low, high)
        page = ObservationPage(dataset=stream.first.dataset, fields=stream.first.fields, start=low, end=high,
                               rows=stream.rows(), next_cursor=None)  # type: ignore[arg-type]
        if self.fmt == "csv":
            text = "".join(export.observations_csv(page))
            text = text[text.index("\r\n") + 2:]     # the header is written once, before every block
        else:
            text = "".join(", " + export.json_item(page, row) for row in page.rows)
            if first:
                text = text[2:]
        return text.encode("utf-8")


def _text_file(dataset, fields, blocks: Iterator[bytes], fmt: str, start: datetime, end: datetime) -> Iterator[bytes]:
    """The file around the blocks, as :mod:`~urbanstack.runtime.api.export` writes it."""
    page = ObservationPage(dataset=dataset, fields=tuple(fields), start=start, end=end, rows=(), next_cursor=None)
    writer = export.observations_csv if fmt == "csv" else export.observations_json
    empty = list(writer(page))           # the file without rows: its head and its tail
    if fmt == "csv":
        yield "".join(empty).encode("utf-8")
        yield from blocks
    else:
        yield empty[0].encode("utf-8")
        yield from blocks
        yield "".join(empty[1:]).encode("utf-8")


def open_download(hub: CitizenHub, slug: str, tool: str, name: str, fmt: str, start_day: date | None,
                  end_day: date | None) -> StreamingResponse:
    dataset = hub.open_dataset(slug, tool, name)
    chosen = FORMAT_BY_KEY.get(fmt)
    if chosen is None:
        raise HTTPException(422, N_("Choose the format csv, json or geojson."))
    coverage = hub.coverage(dataset)
    if coverage.first is None:
        start = end = datetime.now(timezone.utc)
    else:
        start, end = coverage.first, coverage.last + timedelta(milliseconds=1)
    if start_day is not None:
        start = local_midnight(start_day)
    if end_day is not None:
        end = local_midnight(end_day + timedelta(days=1))   # the end day is included
    if start_day and end_day and start_day > end_day:
        raise HTTPException(422, N_("The first day must not be after the last day."))
    ref = DatasetRef(slug, tool, name)
    fast = chosen.key in ("csv", "json") and end > start and textexport.supported(dataset.fields)
    if fast:
        try:
            text = TextBlocks(hub, ref, start, end, chosen.key)
        except QueryError as error:
            raise _refused(error) from None
        body: Iterator = _text_file(dataset, dataset.fields, _guarded(text.blocks(), ref), chosen.key, start, end)
    elif end <= start:
        rows: Iterator = iter(())
        page_fields, start_t, end_t = dataset.fields, start, end
    else:
        try:
            stream = RowStream(hub, ref, start, end)
        except QueryError as error:
            raise _refused(error) from None
        rows, page_fields, start_t, end_t = _guarded(stream.rows(), ref), stream.first.fields, start, end
    if not fast:
        page = ObservationPage(dataset=dataset, fields=tuple(page_fields), start=start_t, end=end_t,
                               rows=rows, next_cursor=None)  # type: ignore[arg-type] - an iterator, read once
        writer = {"csv": export.observations_csv, "json": export.observations_json,
                  "geojson": export.observations_geojson}[chosen.key]
        body = writer(page)
    media = f"{chosen.media_type}; charset=utf-8" if chosen.key == "csv" else chosen.media_type
    span = ""
    if start_day or end_day:
        span = f"_{(start_day or start.date()).isoformat()}_{(end_day or end.date()).isoformat()}"
    filename = f"{slug}_{name}{span}.{chosen.extension}"
    return StreamingResponse(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "public, max-age=60",
        "X-Content-Type-Options": "nosniff"})


def _refused(error: QueryError) -> HTTPException:
    if error.status in (401, 403, 404):
        return HTTPException(404, "no such open dataset")
    return HTTPException(422 if error.status < 500 else 503, error.message)


def _guarded(rows: Iterator, ref: DatasetRef) -> Iterator:
    try:
        yield from rows
    except QueryError as error:
        # The answer has started: the file ends early; the log says why (never with SQL).
        log.warning("download of %s stopped: %s", ref, error.message)
        raise


def _charge(hub: CitizenHub, request: Request) -> None:
    """One anonymous query of the client's address (the API's per-address quota for open data):
    one address cannot turn the portal's downloads into a flood the API would refuse. 429 with
    Retry-After when the hour's quota is used."""
    if hub.quota is None:
        return
    from urbanstack.runtime.api.quota import QuotaExceeded

    try:
        hub.quota.charge(None, request.client.host if request.client else None)
    except QuotaExceeded as exc:
        raise HTTPException(429, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None


def router(hub: CitizenHub) -> APIRouter:
    routes = APIRouter()

    @routes.get("/{slug}/data/{tool}/{dataset}/download")
    def download(request: Request, slug: str, tool: str, dataset: str, format: str = "csv"):
        """``?format=csv|json|geojson&from=YYYY-MM-DD&to=YYYY-MM-DD`` (days in Europe/Berlin, both
        included; without them the whole dataset)."""
        set_language(request)
        hub.municipality(slug)
        _charge(hub, request)
        params = request.query_params
        response = open_download(hub, slug, tool, dataset, format, parse_day(params.get("from"), "from"),
                                 parse_day(params.get("to"), "to"))
        note_subject(request, slug)   # anonymous: charged to the municipality that owns the open dataset
        return response

    return routes
