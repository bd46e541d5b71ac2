"""Downloads of open datasets: CSV, JSON or GeoJSON, the whole dataset or a time range,
streamed with constant memory.

The file is written by the API's export code (:mod:`urbanstack.runtime.api.export`)
from rows the API's engine reads as nobody (open data only), one page of at most
``max_rows`` rows at a time: the engine's keyset cursor walks a time window, and the
window adapts (it widens while pages come back small, narrows when a window needs more
than one page), so a year of readings is never in memory at once and no single query
runs long. The first page is read before the answer starts, so a refused request still
gets its proper status.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import StreamingResponse

from urbanstack.runtime.api import export
from urbanstack.runtime.api.query import DatasetRef, Filters, ObservationPage, ObservationsQuery, QueryError
from urbanstack.runtime.web.i18n import TIME_ZONE, N_

from .app import CitizenHub, set_language
from .metadata import FORMAT_BY_KEY

log = logging.getLogger("urbanstack.citizenhub.downloads")
MAX_WINDOW = timedelta(days=365)
FIRST_WINDOW = timedelta(days=1)


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
    if end <= start:
        rows: Iterator = iter(())
        page_fields, start_t, end_t = dataset.fields, start, end
    else:
        try:
            stream = RowStream(hub, ref, start, end)
        except QueryError as error:
            if error.status in (401, 403, 404):
                raise HTTPException(404, "no such open dataset") from None
            raise HTTPException(422 if error.status < 500 else 503, error.message) from None
        rows, page_fields, start_t, end_t = _guarded(stream.rows(), ref), stream.first.fields, start, end
    page = ObservationPage(dataset=dataset, fields=tuple(page_fields), start=start_t, end=end_t,
                           rows=rows, next_cursor=None)  # type: ignore[arg-type] - an iterator, read once
    writer = {"csv": export.observations_csv, "json": export.observations_json,
              "geojson": export.observations_geojson}[chosen.key]
    media = f"{chosen.media_type}; charset=utf-8" if chosen.key == "csv" else chosen.media_type
    span = ""
    if start_day or end_day:
        span = f"_{(start_day or start.date()).isoformat()}_{(end_day or end.date()).isoformat()}"
    filename = f"{slug}_{name}{span}.{chosen.extension}"
    return StreamingResponse(writer(page), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "public, max-age=60",
        "X-Content-Type-Options": "nosniff"})


def _guarded(rows: Iterator, ref: DatasetRef) -> Iterator:
    try:
        yield from rows
    except QueryError as error:
        # The answer has started: the file ends early; the log says why (never with SQL).
        log.warning("download of %s stopped: %s", ref, error.message)
        raise


def router(hub: CitizenHub) -> APIRouter:
    routes = APIRouter()

    @routes.get("/{slug}/data/{tool}/{dataset}/download")
    def download(request: Request, slug: str, tool: str, dataset: str, format: str = "csv"):
        """``?format=csv|json|geojson&from=YYYY-MM-DD&to=YYYY-MM-DD`` (days in Europe/Berlin, both
        included; without them the whole dataset)."""
        set_language(request)
        hub.municipality(slug)
        params = request.query_params
        return open_download(hub, slug, tool, dataset, format, parse_day(params.get("from"), "from"),
                             parse_day(params.get("to"), "to"))

    return routes
