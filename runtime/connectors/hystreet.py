"""hystreet.com pedestrian counts: the API's measurements JSON and the hourly
CSV export that cities such as Moers publish.

Both become events of dataset ``pedestrian_counts`` with the fields
``pedestrians``, ``pedestrians_ltr``, ``pedestrians_rtl``, ``adults``,
``children`` (all persons) and ``location_name``. hystreet names directions
after a landmark ("Richtung Neumarkt"); the first direction is stored as
``ltr`` and the second as ``rtl``, with the labels in the event metadata.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import (
    REPLACEMENT_CHAR, LocalClock, decode_text, parse_datetime, parse_number, realigned,
)
from urbanstack.runtime.events import EventError, Observation, parse_instant

DATASET = "pedestrian_counts"
PERSONS = "persons"
COUNT_FIELDS = ("pedestrians", "pedestrians_ltr", "pedestrians_rtl", "adults", "children")


def parse_measurements(data: bytes | str, tenant: str, *, source: str = "hystreet",
                       ltr_direction: str | None = None) -> ParseResult:
    """``GET /locations/{id}/measurements`` → one event per measured hour.

    Totals (``pedestrians*``) are only emitted when the response covers all
    persons: a response filtered by object subtype (e.g. children only)
    yields only the ``adults``/``children`` fields it actually counted, so a
    partial count is never stored as the pedestrian total.
    """
    result = ParseResult()
    ok, body = result.load_json(data)
    if not ok:
        return result
    if not isinstance(body, dict) or not isinstance(body.get("measurements"), list):
        result.reject("document", "expected an object with a 'measurements' list "
                      "(GET /locations/{id}/measurements)", body)
        return result
    location_id = body.get("location_id")
    if location_id is None:
        result.reject("document", "the response has no 'location_id'", body)
        return result
    name = body.get("name")
    directions = _directions(body["measurements"], ltr_direction)
    subtypes = {c.get("object_subtype") for m in body["measurements"] if isinstance(m, dict)
                for c in m.get("counts") or [] if isinstance(c, dict)}
    complete = not subtypes - {None} or {"ADULT", "CHILD"} <= subtypes
    metadata = {k: v for k, v in (("city", body.get("city")), ("resolution", body.get("resolution")),
                                  ("ltr_label", directions[0] if directions else None),
                                  ("rtl_label", directions[1] if len(directions) > 1 else None))
                if v is not None}
    for index, measurement in enumerate(body["measurements"]):
        where = f"measurements[{index}]"
        try:
            fields = _measurement_fields(measurement, directions, complete)
            fields["location_name"] = name
            event = Observation(
                tenant=tenant, dataset=DATASET, source=source, sensor_id=str(location_id),
                observed_at=parse_instant(measurement.get("measured_at"), f"{where}.measured_at"),
                fields=fields, units={k: PERSONS for k in fields if k in COUNT_FIELDS},
                metadata=metadata,
            )
        except (EventError, ValueError, TypeError, AttributeError) as exc:
            result.reject(where, str(exc), measurement)
            continue
        result.events.append(event)
    return result


def _directions(measurements: list[Any], ltr_direction: str | None) -> list[str]:
    seen: list[str] = []
    for measurement in measurements:
        for count in (measurement.get("counts") or []) if isinstance(measurement, dict) else []:
            direction = count.get("direction") if isinstance(count, dict) else None
            if direction and direction not in seen:
                seen.append(direction)
    if ltr_direction in seen:
        seen.remove(ltr_direction)
        seen.insert(0, ltr_direction)
    return seen


def _measurement_fields(measurement: Any, directions: list[str], complete: bool) -> dict[str, Any]:
    if not isinstance(measurement, dict):
        raise ValueError(f"a measurement must be an object, got {type(measurement).__name__}")
    counts = measurement.get("counts")
    if not counts and measurement.get("total_count") is None:
        raise ValueError("measurement has neither 'counts' nor 'total_count'")
    by_direction = {d: 0 for d in directions}
    by_subtype: dict[str, int] = {}
    for count in counts or []:
        value = count.get("count")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"count must be a non-negative integer, got {value!r}")
        if count.get("object_type", "PERSON") != "PERSON":
            continue
        if count.get("direction") in by_direction:
            by_direction[count["direction"]] += value
        subtype = count.get("object_subtype")
        if subtype:
            by_subtype[subtype] = by_subtype.get(subtype, 0) + value
    fields: dict[str, Any] = {}
    if complete:
        total = measurement.get("total_count")
        fields["pedestrians"] = total if isinstance(total, int) else sum(by_direction.values())
        if len(directions) == 2:
            fields["pedestrians_ltr"] = by_direction[directions[0]]
            fields["pedestrians_rtl"] = by_direction[directions[1]]
    if "ADULT" in by_subtype:
        fields["adults"] = by_subtype["ADULT"]
    if "CHILD" in by_subtype:
        fields["children"] = by_subtype["CHILD"]
    return fields


# Columns of the hystreet CSV export, recognised by words that survive a
# broken encoding ("Fu�g�nger" still contains "insgesamt").
_CSV_COLUMNS = {
    "location": ("lage",),
    "time": ("zeitpunkt",),
    "total": ("insgesamt",),
    "adults": ("erwachsene",),
    "children": ("kinder",),
}


def parse_csv_export(data: bytes | str, tenant: str, *, source: str = "hystreet-csv",
                     sensor_id: str | None = None) -> ParseResult:
    """The hystreet CSV export: ``;``-separated, one row per hour.

    The encoding is detected (UTF-8, or Latin-1 as hystreet writes it); times
    are either ISO with an offset (``2022-05-01 00:00:00 +0200``) or German
    local wall-clock times (``01.05.2022 00:00``) in Europe/Berlin. The sensor
    id defaults to the location name.
    """
    result = ParseResult()
    text, encoding = decode_text(data)
    if REPLACEMENT_CHAR in text:
        result.warnings.append(f"the file ({encoding}) contains U+FFFD replacement characters: "
                               "umlauts were lost before the upload; names are kept as they are")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    if not rows:
        result.reject("document", "the file is empty")
        return result
    header = [h.strip() for h in rows[0]]
    columns = _csv_columns(header)
    missing = [c for c in ("location", "time", "total") if c not in columns]
    if missing:
        result.reject("line 1", f"not a hystreet export: no column for {', '.join(missing)} "
                      f"in header {header}", rows[0])
        return result
    clock = LocalClock()
    shifted_rows = 0
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {number}"
        try:
            values, shifted = _csv_values(row, header, columns)
            shifted_rows += shifted
            location = values.pop("location_name")
            sensor = sensor_id or location
            observed = clock.to_utc(parse_datetime(row[columns["time"]]), key=sensor)
            result.events.append(Observation(
                tenant=tenant, dataset=DATASET, source=source, sensor_id=sensor, observed_at=observed,
                fields={**values, "location_name": location},
                units={k: PERSONS for k in values if k in COUNT_FIELDS},
                metadata={k: v for k, v in (("ltr_label", columns.get("ltr_label")),
                                            ("rtl_label", columns.get("rtl_label"))) if v},
            ))
        except (EventError, ValueError, IndexError) as exc:
            result.reject(where, str(exc), ";".join(row))
    if shifted_rows:
        result.warnings.append(
            f"{shifted_rows} rows have an empty column {header[columns['ltr']]!r} and their "
            "values shifted one column to the right; read them realigned (the last column, "
            "children in the second direction, is lost in those rows)")
    return result


def _csv_columns(header: list[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for index, label in enumerate(header):
        lowered = label.lower()
        if "richtung" in lowered:
            if "insgesamt" in lowered:
                role = "ltr" if "ltr" not in columns else "rtl"
                columns[role] = index
                columns[f"{role}_label"] = label[lowered.index("richtung"):]
            continue
        for role, words in _CSV_COLUMNS.items():
            if role not in columns and any(lowered.startswith(w) or f" {w}" in lowered for w in words):
                columns[role] = index
                break
    return columns


def _csv_values(row: list[str], header: list[str], columns: dict[str, Any]) -> tuple[dict[str, Any], int]:
    if len(row) < len(header):
        raise ValueError(f"expected {len(header)} columns, got {len(row)}")

    def number(index: int) -> int | None:
        value = parse_number(row[index])
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"column {header[index]!r}: expected a count, got {row[index]!r}")
        return value

    shifted = 0
    if "ltr" in columns and "rtl" in columns:
        fixed = realigned(row, columns["total"], (columns["ltr"], columns["rtl"]), parse_number)
        if fixed is not None:
            row, shifted = fixed, 1
    total = number(columns["total"])
    if total is None:
        raise ValueError(f"column {header[columns['total']]!r} is empty")
    values: dict[str, Any] = {"location_name": row[columns["location"]].strip(), "pedestrians": total}
    for role, name in (("ltr", "pedestrians_ltr"), ("rtl", "pedestrians_rtl"), ("adults", "adults"),
                       ("children", "children")):
        if role in columns:
            values[name] = number(columns[role])
    return {k: v for k, v in values.items() if v is not None}, shifted


def parse_csv_weather(data: bytes | str, tenant: str, *, source: str = "hystreet-csv",
                      sensor_id: str | None = None) -> ParseResult:
    """The air temperature a hystreet counter reports next to its counts, as
    events of the ``weather`` dataset (one per hour with a value; hours without
    one are skipped, not rejected: the counter simply had no reading)."""
    result = ParseResult()
    text, _ = decode_text(data)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    header = [h.strip() for h in rows[0]] if rows else []
    columns = _csv_columns(header)
    temperature = next((i for i, label in enumerate(header) if label.lower().startswith("temperatur")), None)
    if temperature is None or "time" not in columns or "location" not in columns:
        result.reject("line 1", f"no temperature, time or location column in header {header}", rows[0] if rows else "")
        return result
    clock = LocalClock()
    for number, row in enumerate(rows[1:], start=2):
        if len(row) <= temperature or not row[temperature].strip():
            continue
        try:
            value = parse_number(row[temperature])
            if value is None:
                continue
            sensor = sensor_id or row[columns["location"]].strip()
            observed = clock.to_utc(parse_datetime(row[columns["time"]]), key=sensor)
            result.events.append(Observation(
                tenant=tenant, dataset="weather", source=source, sensor_id=sensor, observed_at=observed,
                fields={"temperature": float(value)}, units={"temperature": "°C"}))
        except (EventError, ValueError, IndexError) as exc:
            result.reject(f"line {number}", str(exc), ";".join(row))
    return result
