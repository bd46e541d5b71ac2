"""PEGELONLINE REST API v2 (the federal waterways' gauges).

Dataset ``water_levels``: fields ``water_level`` (cm), ``discharge`` (m³/s),
``station_name`` and ``water_name``. A station list without measurements is
the catalogue (:func:`parse_stations`); measurements come from
``stations.json?includeTimeseries=true&includeCurrentMeasurement=true``
(:func:`parse_stations_with_measurements`) or from one time series'
``currentmeasurement.json`` / ``measurements.json`` (:func:`parse_measurements`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from urbanstack.runtime.connectors import ParseResult, Rejection
from urbanstack.runtime.connectors.textformats import decode_text
from urbanstack.runtime.events import EventError, Observation, parse_instant

DATASET = "water_levels"
# Time series short name → (field, unit of the field, accepted source units with factor).
TIMESERIES = {
    "W": ("water_level", "cm", {"cm": 1.0, "m": 100.0}),
    "Q": ("discharge", "m³/s", {"m³/s": 1.0, "m3/s": 1.0}),
}


@dataclass(frozen=True)
class Station:
    uuid: str
    number: str
    name: str
    water_name: str | None
    agency: str | None
    km: float | None
    lon: float | None
    lat: float | None


def parse_stations(data: bytes | str) -> tuple[list[Station], list[Rejection]]:
    """The station catalogue; stations without coordinates keep ``lon``/``lat`` None."""
    body, rejected = _load_list(data)
    stations = []
    for index, raw in enumerate(body):
        try:
            stations.append(_station(raw))
        except (ValueError, TypeError, KeyError) as exc:
            rejected.append(Rejection(f"stations[{index}]", str(exc), raw))
    return stations, rejected


def parse_stations_with_measurements(data: bytes | str, tenant: str, *,
                                     source: str = "pegelonline") -> ParseResult:
    """Stations with their time series' ``currentMeasurement``: one event per station."""
    result = ParseResult()
    body, result.rejected = _load_list(data)
    for index, raw in enumerate(body):
        where = f"stations[{index}]"
        try:
            station = _station(raw)
            series = raw.get("timeseries")
            if not series:
                raise ValueError("station has no 'timeseries'; request it with "
                                 "includeTimeseries=true&includeCurrentMeasurement=true")
            by_time: dict[Any, dict[str, Any]] = {}
            for ts in series:
                current = ts.get("currentMeasurement")
                if ts.get("shortname") not in TIMESERIES or not current:
                    continue
                name, value = _value(ts.get("shortname"), ts.get("unit"), current.get("value"))
                observed = parse_instant(current.get("timestamp"), f"{where}.currentMeasurement.timestamp")
                by_time.setdefault(observed, {})[name] = value
            if not by_time:
                raise ValueError("no current measurement of water level (W) or discharge (Q)")
            for observed, values in sorted(by_time.items()):
                result.events.append(_event(tenant, source, station, observed, values))
        except (EventError, ValueError, TypeError, KeyError, AttributeError) as exc:
            result.reject(where, str(exc), raw)
    return result


def parse_measurements(data: bytes | str, tenant: str, station: Station, *, timeseries: str = "W",
                       unit: str | None = None, source: str = "pegelonline") -> ParseResult:
    """``…/stations/{uuid}/{timeseries}/measurements.json`` (a list) or
    ``…/currentmeasurement.json`` (one object). ``unit`` is the time series'
    unit; it defaults to PEGELONLINE's (cm for W, m³/s for Q)."""
    result = ParseResult()
    if timeseries not in TIMESERIES:
        raise ValueError(f"timeseries must be one of {sorted(TIMESERIES)}, got {timeseries!r}")
    ok, body = result.load_json(data)
    if not ok:
        return result
    records = body if isinstance(body, list) else [body]
    for index, record in enumerate(records):
        where = f"measurements[{index}]"
        try:
            if not isinstance(record, dict):
                raise ValueError(f"a measurement must be an object, got {type(record).__name__}")
            name, value = _value(timeseries, unit or TIMESERIES[timeseries][1], record.get("value"))
            observed = parse_instant(record.get("timestamp"), f"{where}.timestamp")
            states = {k: record[k] for k in ("trend", "stateMnwMhw", "stateNswHsw") if k in record}
            result.events.append(_event(tenant, source, station, observed, {name: value}, states))
        except (EventError, ValueError, TypeError) as exc:
            result.reject(where, str(exc), record)
    return result


def _load_list(data: bytes | str) -> tuple[list[Any], list[Rejection]]:
    text, _ = decode_text(data)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [Rejection("document", f"not valid JSON: {exc}", text[:2000])]
    if not isinstance(body, list):
        return [], [Rejection("document", "expected a JSON list of stations", body)]
    return body, []


def _station(raw: Any) -> Station:
    if not isinstance(raw, dict):
        raise ValueError(f"a station must be an object, got {type(raw).__name__}")
    missing = [k for k in ("uuid", "shortname") if not raw.get(k)]
    if missing:
        raise ValueError(f"station lacks {', '.join(missing)}")
    lon, lat = raw.get("longitude"), raw.get("latitude")
    water = raw.get("water") or {}
    return Station(uuid=raw["uuid"], number=str(raw.get("number") or ""),
                   name=raw.get("longname") or raw["shortname"],
                   water_name=water.get("longname") or water.get("shortname"),
                   agency=raw.get("agency"), km=raw.get("km"),
                   lon=lon if lat is not None else None, lat=lat if lon is not None else None)


def _value(shortname: str, unit: str | None, value: Any) -> tuple[str, float]:
    name, _, factors = TIMESERIES[shortname]
    if unit not in factors:
        raise ValueError(f"time series {shortname}: unit {unit!r} is not supported "
                         f"(expected one of {', '.join(factors)})")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"time series {shortname}: value must be a number, got {value!r}")
    return name, value * factors[unit]


def _event(tenant: str, source: str, station: Station, observed: Any, values: dict[str, Any],
           extra: dict[str, Any] | None = None) -> Observation:
    fields = {**values, "station_name": station.name, "water_name": station.water_name}
    units = {k: TIMESERIES["W" if k == "water_level" else "Q"][1] for k in values}
    metadata = {k: v for k, v in (("station_number", station.number), ("agency", station.agency),
                                  ("km", station.km)) if v not in (None, "")}
    return Observation(tenant=tenant, dataset=DATASET, source=source, sensor_id=station.uuid,
                       observed_at=observed, fields=fields, units=units, lon=station.lon,
                       lat=station.lat, metadata={**metadata, **(extra or {})})
