"""Query results as files: CSV (for spreadsheets), JSON and GeoJSON (for maps).

Each file is written a batch of rows at a time (an iterator of text chunks that the
response streams): the rows are in memory once, the file never as a whole, and no single
encoding call holds the interpreter for long — a JSON encoder working through one
100,000-row document would stall every other request of the process for a second.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from itertools import islice
from typing import Any, Iterable, Iterator

from .query import JoinResult, ObservationPage, SeriesResult, format_time

# A cell starting with one of these is a formula in Excel and LibreOffice; text
# cells from sensors or uploads must never run as one on a clerk's machine.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _cell(value: Any) -> Any:
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


BATCH_ROWS = 1_000


def _batches(rows: Iterable[Any]) -> Iterator[list[Any]]:
    rows = iter(rows)
    while batch := list(islice(rows, BATCH_ROWS)):
        yield batch


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for batch in _batches(rows):
        writer.writerows([[_cell(v) for v in row] for row in batch])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()  # the header of a file without rows


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _json(head: dict[str, Any], key: str, items: Iterable[dict[str, Any]],
          tail: dict[str, Any] | None = None) -> Iterator[str]:
    """The JSON object ``{**head, key: [*items], **tail}``, written a batch of items at a time."""
    yield f"{_dumps(head)[:-1]}{', ' if head else ''}{_dumps(key)}: ["
    separator = ""
    for batch in _batches(items):
        yield separator + ", ".join([_dumps(item) for item in batch])
        separator = ", "
    yield "]" + (f", {_dumps(tail)[1:]}" if tail else "}")


def series_csv(result: SeriesResult) -> Iterator[str]:
    header = ["bucket", "sensor_id", "events", *(m.name for m in result.metrics)]
    return _csv(header, ([row.bucket, row.sensor_id, row.events, *row.values] for row in result.rows))


def join_csv(result: JoinResult) -> Iterator[str]:
    header = ["bucket", "left_events", "right_events", *(f"left_{m.name}" for m in result.left_metrics),
              *(f"right_{m.name}" for m in result.right_metrics)]
    return _csv(header, ([row.bucket, row.left_events, row.right_events, *row.left_values, *row.right_values]
                         for row in result.rows))


def observations_csv(page: ObservationPage) -> Iterator[str]:
    header = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", *(f.name for f in page.fields)]
    return _csv(header, ([r.event_id, r.source, r.sensor_id, r.observed_at, r.lon, r.lat, *r.values]
                         for r in page.rows))


def observation_dict(page: ObservationPage, row) -> dict[str, Any]:
    return {"event_id": row.event_id, "source": row.source, "sensor_id": row.sensor_id,
            "observed_at": format_time(row.observed_at), "lon": row.lon, "lat": row.lat,
            "values": {f.name: json_value(v) for f, v in zip(page.fields, row.values)}}


def json_item(page: ObservationPage, row) -> str:
    """One row of :func:`observations_json`'s ``rows``."""
    return _dumps(observation_dict(page, row))


def observations_json(page: ObservationPage) -> Iterator[str]:
    dataset = page.dataset
    head = {"dataset": dataset.ref, "licence": dataset.licence, "units": {f.name: f.unit for f in page.fields},
            "from": format_time(page.start), "to": format_time(page.end)}
    return _json(head, "rows", (observation_dict(page, row) for row in page.rows))


def _feature(page: ObservationPage, row) -> dict[str, Any]:
    """A point; an observation without a position keeps ``geometry: null`` (RFC 7946 §3.2)."""
    geometry = {"type": "Point", "coordinates": [row.lon, row.lat]} if row.lon is not None else None
    properties = {"event_id": row.event_id, "source": row.source, "sensor_id": row.sensor_id,
                  "observed_at": format_time(row.observed_at),
                  **{f.name: json_value(v) for f, v in zip(page.fields, row.values)}}
    return {"type": "Feature", "id": row.event_id, "geometry": geometry, "properties": properties}


def observations_geojson(page: ObservationPage) -> Iterator[str]:
    """A FeatureCollection of points."""
    metadata = {"dataset": page.dataset.ref, "licence": page.dataset.licence,
                "units": {f.name: f.unit for f in page.fields}}
    return _json({"type": "FeatureCollection"}, "features", (_feature(page, row) for row in page.rows),
                 {"metadata": metadata})
