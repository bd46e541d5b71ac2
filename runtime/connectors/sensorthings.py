"""OGC SensorThings API (e.g. FROST-Server at iot.hamburg.de).

Accepted shapes, each a page (``{"value": [...]}``) or a single entity:
Things with expanded ``Datastreams`` (and their ``Observations``, optionally
``Locations``), Datastreams with expanded ``Observations``, and Observations
with an expanded ``Datastream`` (optionally ``Datastream/Thing``). A bare
observation list of one datastream needs the ``datastream`` argument.

Each observation becomes an event: sensor = the Datastream's ``@iot.id``, one
field named by the caller (``field``), else after the ObservedProperty, else
``value``; unit = ``unitOfMeasurement.symbol`` (empty when the server gives
none). An interval ``phenomenonTime`` is stored at its start, the end in
``metadata.phenomenon_end``.
"""

from __future__ import annotations

from typing import Any

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import field_name
from urbanstack.runtime.events import EventError, Observation, parse_instant


def parse_observations(data: bytes | str, tenant: str, dataset: str, *, field: str | None = None,
                       datastream: dict[str, Any] | None = None,
                       source: str = "sensorthings") -> ParseResult:
    result = ParseResult()
    ok, body = result.load_json(data)
    if not ok:
        return result
    entities = body.get("value") if isinstance(body, dict) and "value" in body else [body]
    if not isinstance(entities, list):
        result.reject("document", "'value' must be a list of entities", body)
        return result
    if body.get("@iot.nextLink") if isinstance(body, dict) else None:
        result.warnings.append(f"this is one page of a larger result; the next page is {body['@iot.nextLink']}")
    for index, entity in enumerate(entities):
        where = f"value[{index}]"
        if not isinstance(entity, dict):
            result.reject(where, f"an entity must be an object, got {type(entity).__name__}", entity)
        elif "Datastreams" in entity:
            position = _thing_position(entity)
            for ds_index, stream in enumerate(entity["Datastreams"] or []):
                _stream(result, f"{where}.Datastreams[{ds_index}]", stream, entity, position,
                        tenant, dataset, field, source)
        elif "Observations" in entity:
            _stream(result, where, entity, entity.get("Thing"), _thing_position(entity.get("Thing")),
                    tenant, dataset, field, source)
        elif "result" in entity:
            stream = entity.get("Datastream") or datastream
            if stream is None:
                result.reject(where, "observation without its Datastream: request "
                              "$expand=Datastream or pass the datastream", entity)
                continue
            thing = stream.get("Thing")
            _observation(result, where, entity, stream, thing, _thing_position(thing),
                         tenant, dataset, field, source)
        else:
            result.reject(where, "neither a Thing with Datastreams, a Datastream with "
                          "Observations nor an Observation", entity)
    return result


def _stream(result: ParseResult, where: str, stream: Any, thing: Any, position: Any,
            tenant: str, dataset: str, field: str | None, source: str) -> None:
    if not isinstance(stream, dict):
        result.reject(where, "a Datastream must be an object", stream)
        return
    for index, observation in enumerate(stream.get("Observations") or []):
        _observation(result, f"{where}.Observations[{index}]", observation, stream, thing, position,
                     tenant, dataset, field, source)


def _observation(result: ParseResult, where: str, observation: Any, stream: dict[str, Any],
                 thing: Any, position: tuple[float, float] | None, tenant: str, dataset: str,
                 field: str | None, source: str) -> None:
    try:
        if not isinstance(observation, dict):
            raise ValueError(f"an Observation must be an object, got {type(observation).__name__}")
        if stream.get("@iot.id") is None:
            raise ValueError("the Datastream has no @iot.id")
        value = observation.get("result")
        if value is None or value == "":
            raise ValueError("the observation has no result (null or empty string)")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float, str)):
            raise ValueError(f"result {value!r} is not a number or text")
        phenomenon = observation.get("phenomenonTime")
        if not isinstance(phenomenon, str):
            raise ValueError("the observation has no phenomenonTime")
        start, _, end = phenomenon.partition("/")
        name = field or _field_from(stream)
        unit = (stream.get("unitOfMeasurement") or {}).get("symbol") or ""
        metadata = {k: v for k, v in (
            ("observation_id", observation.get("@iot.id")),
            ("datastream_name", stream.get("name")),
            ("thing_id", thing.get("@iot.id") if isinstance(thing, dict) else None),
            ("thing_name", thing.get("name") if isinstance(thing, dict) else None),
            ("unit_name", (stream.get("unitOfMeasurement") or {}).get("name")),
            ("phenomenon_end", end or None),
            ("result_time", observation.get("resultTime")),
        ) if v is not None}
        if end:
            parse_instant(end, f"{where}.phenomenonTime end")
        result.events.append(Observation(
            tenant=tenant, dataset=dataset, source=source, sensor_id=str(stream["@iot.id"]),
            observed_at=parse_instant(start, f"{where}.phenomenonTime"),
            fields={name: value}, units={name: unit},
            lon=position[0] if position else None, lat=position[1] if position else None,
            metadata=metadata))
    except (EventError, ValueError, TypeError, AttributeError) as exc:
        result.reject(where, str(exc), observation)


def _field_from(stream: dict[str, Any]) -> str:
    observed = stream.get("ObservedProperty")
    if isinstance(observed, dict) and observed.get("name"):
        return field_name(observed["name"])
    return "value"


def _thing_position(thing: Any) -> tuple[float, float] | None:
    """The first Point among the Thing's Locations (GeoJSON geometry or Feature)."""
    if not isinstance(thing, dict):
        return None
    for location in thing.get("Locations") or []:
        geometry = (location or {}).get("location") or {}
        if geometry.get("type") == "Feature":
            geometry = geometry.get("geometry") or {}
        coordinates = geometry.get("coordinates")
        if geometry.get("type") == "Point" and isinstance(coordinates, list) and len(coordinates) >= 2:
            lon, lat = coordinates[0], coordinates[1]
            if isinstance(lon, (int, float)) and -180 <= lon <= 180 and isinstance(lat, (int, float)) and -90 <= lat <= 90:
                return float(lon), float(lat)
    return None
