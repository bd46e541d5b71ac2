"""Query results as files: CSV (for spreadsheets), JSON and GeoJSON (for maps)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from typing import Any, Iterable

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


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()


def series_csv(result: SeriesResult) -> str:
    header = ["bucket", "sensor_id", "events", *(m.name for m in result.metrics)]
    return _csv(header, ([row.bucket, row.sensor_id, row.events, *row.values] for row in result.rows))


def join_csv(result: JoinResult) -> str:
    header = ["bucket", "left_events", "right_events", *(f"left_{m.name}" for m in result.left_metrics),
              *(f"right_{m.name}" for m in result.right_metrics)]
    return _csv(header, ([row.bucket, row.left_events, row.right_events, *row.left_values, *row.right_values]
                         for row in result.rows))


def observations_csv(page: ObservationPage) -> str:
    header = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", *(f.name for f in page.fields)]
    return _csv(header, ([r.event_id, r.source, r.sensor_id, r.observed_at, r.lon, r.lat, *r.values]
                         for r in page.rows))


def observation_dict(page: ObservationPage, row) -> dict[str, Any]:
    return {"event_id": row.event_id, "source": row.source, "sensor_id": row.sensor_id,
            "observed_at": format_time(row.observed_at), "lon": row.lon, "lat": row.lat,
            "values": {f.name: json_value(v) for f, v in zip(page.fields, row.values)}}


def observations_json(page: ObservationPage) -> str:
    dataset = page.dataset
    document = {"dataset": dataset.ref, "licence": dataset.licence,
                "units": {f.name: f.unit for f in page.fields},
                "from": format_time(page.start), "to": format_time(page.end),
                "rows": [observation_dict(page, row) for row in page.rows]}
    return json.dumps(document, ensure_ascii=False, allow_nan=False)


def observations_geojson(page: ObservationPage) -> str:
    """A FeatureCollection of points; observations without a position keep ``geometry: null`` (RFC 7946 §3.2)."""
    features = []
    for row in page.rows:
        geometry = {"type": "Point", "coordinates": [row.lon, row.lat]} if row.lon is not None else None
        properties = {"event_id": row.event_id, "source": row.source, "sensor_id": row.sensor_id,
                      "observed_at": format_time(row.observed_at),
                      **{f.name: json_value(v) for f, v in zip(page.fields, row.values)}}
        features.append({"type": "Feature", "id": row.event_id, "geometry": geometry, "properties": properties})
    document = {"type": "FeatureCollection", "features": features,
                "metadata": {"dataset": page.dataset.ref, "licence": page.dataset.licence,
                             "units": {f.name: f.unit for f in page.fields}}}
    return json.dumps(document, ensure_ascii=False, allow_nan=False)
