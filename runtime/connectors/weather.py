"""Weather observations: DWD open data (the POI "current" CSV and the Climate
Data Center ``produkt_*.txt`` files, also inside their zip archives) and the
Bright Sky API JSON.

All become events of dataset ``weather`` with whichever of these fields the
source carries: temperature (°C), precipitation (mm), wind_speed (m/s),
wind_direction (°), relative_humidity (%), pressure_msl (hPa), sunshine (min),
cloud_cover (%), dew_point (°C), wind_gust_speed (m/s), visibility (m) and
solar (kWh/m²). Sources in other units are converted (km/h → m/s, hours →
minutes, octas → %, K → °C, Pa → hPa, J/cm² → kWh/m²).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import zipfile
from datetime import datetime, timezone
from typing import Any, Callable

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import decode_text, parse_german_date, parse_number
from urbanstack.runtime.events import EventError, Observation, parse_instant

DATASET = "weather"
UNITS = {
    "temperature": "°C", "precipitation": "mm", "wind_speed": "m/s", "wind_direction": "°",
    "relative_humidity": "%", "pressure_msl": "hPa", "sunshine": "min", "cloud_cover": "%",
    "dew_point": "°C", "wind_gust_speed": "m/s", "visibility": "m", "solar": "kWh/m²",
}


def kmh_to_ms(value: float) -> float:
    return round(value / 3.6, 2)


# -- DWD POI (current SYNOP observations, as Bright Sky reads them) ----------

# POI parameter (row 1) → (field, converter from the unit in row 2).
_POI_PARAMETERS: dict[str, tuple[str, Callable[[float], float]]] = {
    "dry_bulb_temperature_at_2_meter_above_ground": ("temperature", float),
    "dew_point_temperature_at_2_meter_above_ground": ("dew_point", float),
    "precipitation_amount_last_hour": ("precipitation", float),
    "mean_wind_speed_during last_10_min_at_10_meters_above_ground": ("wind_speed", kmh_to_ms),
    "mean_wind_direction_during_last_10 min_at_10_meters_above_ground": ("wind_direction", float),
    "maximum_wind_speed_last_hour": ("wind_gust_speed", kmh_to_ms),
    "relative_humidity": ("relative_humidity", float),
    "pressure_reduced_to_mean_sea_level": ("pressure_msl", float),
    "total_time_of_sunshine_during_last_hour": ("sunshine", float),
    "cloud_cover_total": ("cloud_cover", float),
    "horizontal_visibility": ("visibility", lambda km: km * 1000),
}
_POI_EXPECTED_UNITS = {"temperature": "Grad C", "dew_point": "Grad C", "wind_speed": "km/h",
                       "wind_gust_speed": "km/h", "visibility": "km", "pressure_msl": "hPa",
                       "precipitation": "mm", "sunshine": "min", "cloud_cover": "%",
                       "relative_humidity": "%", "wind_direction": "Grad"}


def parse_dwd_poi(data: bytes | str, tenant: str, *, source: str = "dwd-poi") -> ParseResult:
    """DWD POI CSV: three header rows (parameter names, station id + units,
    German labels), ``;``, decimal commas, ``---`` for missing, UTC times."""
    result = ParseResult()
    text, _ = decode_text(data)
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=";") if any(r)]
    if len(rows) < 3 or len(rows[0]) < 3:
        result.reject("document", "not a DWD POI file: expected three header rows", text[:2000])
        return result
    parameters, units_row = rows[0], rows[1]
    station = units_row[0].strip()
    columns: dict[int, tuple[str, Callable[[float], float]]] = {}
    for index, parameter in enumerate(parameters):
        if parameter in _POI_PARAMETERS:
            name, convert = _POI_PARAMETERS[parameter]
            unit = units_row[index].strip() if index < len(units_row) else ""
            if unit != _POI_EXPECTED_UNITS[name]:
                result.warnings.append(f"column {parameter!r}: unit {unit!r}, expected "
                                       f"{_POI_EXPECTED_UNITS[name]!r}; column ignored")
                continue
            columns[index] = (name, convert)
    for number, row in enumerate(rows[3:], start=4):
        where = f"row {number}"
        try:
            day = parse_german_date(row[0])
            hour, minute = (int(p) for p in row[1].strip().split(":"))
            observed = datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)
            fields: dict[str, Any] = {}
            for index, (name, convert) in columns.items():
                value = parse_number(row[index], decimal=",") if index < len(row) else None
                fields[name] = None if value is None else convert(value)
            if all(v is None for v in fields.values()):
                raise ValueError("every value of this row is missing ('---')")
            result.events.append(Observation(
                tenant=tenant, dataset=DATASET, source=source, sensor_id=station, observed_at=observed,
                fields=fields, units={k: UNITS[k] for k in fields}))
        except (EventError, ValueError, IndexError) as exc:
            result.reject(where, str(exc), ";".join(row))
    return result


# -- DWD Climate Data Center (CDC) produkt_*.txt -----------------------------

# CDC column → (field, converter). Missing values are -999 in every product.
_CDC_COLUMNS: dict[str, tuple[str, Callable[[float], float | None]]] = {
    "TT_TU": ("temperature", float),
    "RF_TU": ("relative_humidity", float),
    "R1": ("precipitation", float),
    "F": ("wind_speed", float),
    "FF": ("wind_speed", float),
    "D": ("wind_direction", float),
    "DD": ("wind_direction", float),
    "P": ("pressure_msl", float),
    "SD_SO": ("sunshine", float),
    "SD_10": ("sunshine", lambda hours: round(hours * 60, 3)),
    "GS_10": ("solar", lambda j_cm2: round(j_cm2 / 360, 4)),
    "TT_10": ("temperature", float),
    "RF_10": ("relative_humidity", float),
    "RWS_10": ("precipitation", float),
    "FF_10": ("wind_speed", float),
    "DD_10": ("wind_direction", float),
    # Cloud cover in octas; -1 means "sky not recognisable".
    "V_N": ("cloud_cover", lambda octas: None if octas < 0 else round(octas * 12.5, 1)),
}


def parse_dwd_cdc(data: bytes | str, tenant: str, *, source: str = "dwd-cdc",
                  filename: str | None = None) -> ParseResult:
    """A CDC ``produkt_*.txt`` file: ``;``, space padding, ``-999`` missing,
    ``MESS_DATUM`` as ``yyyymmddHH``, ``yyyymmddHHMM`` or ``yyyymmdd`` (UTC)."""
    result = ParseResult()
    text, _ = decode_text(data)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        result.reject("document", f"{filename or 'file'} is empty")
        return result
    header = [h.strip() for h in lines[0].split(";")]
    if header[:2] != ["STATIONS_ID", "MESS_DATUM"]:
        result.reject("line 1", "not a DWD CDC product file: header must start with "
                      f"STATIONS_ID;MESS_DATUM, got {lines[0][:80]!r}", lines[0])
        return result
    columns = {i: _CDC_COLUMNS[name] for i, name in enumerate(header) if name in _CDC_COLUMNS}
    unknown = [h for h in header[2:] if h not in _CDC_COLUMNS and h != "eor" and not h.startswith("QN")]
    if unknown:
        result.warnings.append(f"columns without a weather field are not imported: {', '.join(unknown)}")
    if not columns:
        result.reject("line 1", f"no known weather parameter in {header}", lines[0])
        return result
    for number, line in enumerate(lines[1:], start=2):
        where = f"{filename}: line {number}" if filename else f"line {number}"
        cells = [c.strip() for c in line.split(";")]
        try:
            if len(cells) < len(header) - 1:
                raise ValueError(f"expected {len(header)} columns, got {len(cells)}")
            observed = _mess_datum(cells[1])
            fields: dict[str, Any] = {}
            for index, (name, convert) in columns.items():
                value = parse_number(cells[index], decimal=".")
                fields[name] = None if value is None or value == -999 else convert(value)
            if all(v is None for v in fields.values()):
                raise ValueError("every value of this row is missing (-999)")
            result.events.append(Observation(
                tenant=tenant, dataset=DATASET, source=source, sensor_id=cells[0].zfill(5),
                observed_at=observed, fields=fields, units={k: UNITS[k] for k in fields},
                metadata={"quality_level": cells[2]} if header[2].startswith("QN") else {}))
        except (EventError, ValueError, IndexError) as exc:
            result.reject(where, str(exc), line)
    return result


def _mess_datum(text: str) -> datetime:
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})?:?(\d{2})?", text)
    if not match:
        raise ValueError(f"MESS_DATUM {text!r}: expected yyyymmdd, yyyymmddHH or yyyymmddHHMM")
    year, month, day, hour, minute = (int(g) if g else 0 for g in match.groups())
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


def parse_dwd_cdc_zip(data: bytes, tenant: str, *, source: str = "dwd-cdc") -> ParseResult:
    """A CDC zip as DWD distributes it: every ``produkt_*.txt`` member is read,
    the metadata members give the station position (latest period)."""
    result = ParseResult()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        result.reject("document", f"not a zip archive: {exc}")
        return result
    with archive:
        names = archive.namelist()
        position = _station_position(archive, names)
        products = [n for n in names if n.rsplit("/", 1)[-1].startswith("produkt_")]
        if not products:
            result.reject("document", f"no produkt_*.txt member in the archive ({', '.join(names)})")
        for name in products:
            part = parse_dwd_cdc(archive.read(name), tenant, source=source, filename=name)
            result.rejected += part.rejected
            result.warnings += part.warnings
            for event in part.events:
                lonlat = position.get(event.sensor_id)
                if lonlat:
                    event = dataclasses.replace(event, lon=lonlat[0], lat=lonlat[1])
                result.events.append(event)
    return result


def _station_position(archive: zipfile.ZipFile, names: list[str]) -> dict[str, tuple[float, float]]:
    position: dict[str, tuple[float, float]] = {}
    for name in names:
        if not name.rsplit("/", 1)[-1].startswith("Metadaten_Geographie"):
            continue
        text, _ = decode_text(archive.read(name))
        rows = [[c.strip() for c in line.split(";")] for line in text.splitlines() if line.strip()]
        # Rows are ordered by period; the last one describes the current site.
        for row in rows[1:]:
            try:
                position[row[0].zfill(5)] = (float(row[3]), float(row[2]))
            except (ValueError, IndexError):
                continue
    return position


# -- Bright Sky API ----------------------------------------------------------

# Bright Sky field → our field, per unit system (``units=dwd`` is the API default).
_BRIGHTSKY_DWD: dict[str, tuple[str, Callable[[float], float]]] = {
    "temperature": ("temperature", float),
    "dew_point": ("dew_point", float),
    "precipitation": ("precipitation", float),
    "wind_speed": ("wind_speed", kmh_to_ms),
    "wind_direction": ("wind_direction", float),
    "wind_gust_speed": ("wind_gust_speed", kmh_to_ms),
    "relative_humidity": ("relative_humidity", float),
    "pressure_msl": ("pressure_msl", float),
    "sunshine": ("sunshine", float),
    "cloud_cover": ("cloud_cover", float),
    "visibility": ("visibility", float),
    "solar": ("solar", float),
}
_BRIGHTSKY_SI: dict[str, tuple[str, Callable[[float], float]]] = {
    **_BRIGHTSKY_DWD,
    "temperature": ("temperature", lambda k: round(k - 273.15, 2)),
    "dew_point": ("dew_point", lambda k: round(k - 273.15, 2)),
    "wind_speed": ("wind_speed", float),
    "wind_gust_speed": ("wind_gust_speed", float),
    "pressure_msl": ("pressure_msl", lambda pa: pa / 100),
    "sunshine": ("sunshine", lambda s: s / 60),
    "solar": ("solar", lambda j_m2: round(j_m2 / 3.6e6, 4)),
}
# /current_weather reports windows; the 10-minute means and 60-minute sums
# come closest to an hourly observation.
_CURRENT_ALIASES = {"precipitation_60": "precipitation", "wind_speed_10": "wind_speed",
                    "wind_direction_10": "wind_direction", "wind_gust_speed_10": "wind_gust_speed",
                    "sunshine_60": "sunshine"}


def parse_brightsky(data: bytes | str, tenant: str, *, source: str = "brightsky",
                    units: str = "dwd") -> ParseResult:
    """Bright Sky ``/weather`` (a list) or ``/current_weather`` (one object).

    ``units`` is the ``units`` query parameter the response was requested with.
    The sensor is the DWD station of the record's ``source_id``; values filled
    from other stations are listed in ``metadata.fallback_stations``.
    """
    result = ParseResult()
    if units not in ("dwd", "si"):
        raise ValueError(f"units must be 'dwd' or 'si' (Bright Sky's units parameter), got {units!r}")
    mapping = _BRIGHTSKY_DWD if units == "dwd" else _BRIGHTSKY_SI
    ok, body = result.load_json(data)
    if not ok:
        return result
    records = body.get("weather") if isinstance(body, dict) else None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        result.reject("document", "expected an object with 'weather' (list or object) and 'sources'", body)
        return result
    sources = {s.get("id"): s for s in body.get("sources") or [] if isinstance(s, dict)}
    for index, record in enumerate(records):
        where = f"weather[{index}]"
        try:
            if not isinstance(record, dict):
                raise ValueError(f"a weather record must be an object, got {type(record).__name__}")
            station = sources.get(record.get("source_id"))
            if station is None:
                raise ValueError(f"source_id {record.get('source_id')!r} is not among the response's sources")
            values = {_CURRENT_ALIASES.get(k, k): v for k, v in record.items()}
            fields: dict[str, Any] = {}
            for key, (name, convert) in mapping.items():
                if key in values:
                    value = values[key]
                    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                        raise ValueError(f"{key}: expected a number or null, got {value!r}")
                    fields[name] = None if value is None else convert(value)
            fallback = {k: _station_label(sources.get(v), v)
                        for k, v in (record.get("fallback_source_ids") or {}).items()}
            metadata = {k: v for k, v in (("condition", record.get("condition")),
                                          ("station_name", station.get("station_name")),
                                          ("observation_type", station.get("observation_type")),
                                          ("fallback_stations", fallback or None)) if v is not None}
            lon, lat = station.get("lon"), station.get("lat")
            result.events.append(Observation(
                tenant=tenant, dataset=DATASET, source=source,
                sensor_id=str(station.get("dwd_station_id") or station.get("wmo_station_id") or station["id"]),
                observed_at=parse_instant(record.get("timestamp"), f"{where}.timestamp"),
                fields=fields, units={k: UNITS[k] for k in fields},
                lon=lon if lat is not None else None, lat=lat if lon is not None else None,
                metadata=metadata))
        except (EventError, ValueError, TypeError, KeyError) as exc:
            result.reject(where, str(exc), record)
    return result


def _station_label(station: dict[str, Any] | None, source_id: Any) -> str:
    if station is None:
        return f"source {source_id}"
    return str(station.get("dwd_station_id") or station.get("id"))
