"""SensorThings Create-Update-Delete: where a write goes.

**Entities clients create** (any entity set, a deep insert, and Observations of those Datastreams)
live in the built-in CityTool ``sensorthings`` of the caller's municipality (:mod:`.created`): POST,
PATCH, PUT and DELETE of them are planned, checked and published by :mod:`.changes` — events of the
datasets ``entities`` and ``observations`` through Kafka, read back from the warehouse before the
answer, with the cascade of DELETE the standard asks for. Their ids are 2^53 and above, so a path or
a body tells at once which kind of entity it names.

**Derived entities** (a view of CityTool datasets and their readings) keep their rules:

- an Observation of a derived Datastream (``POST /v1.1/Observations`` with its ``Datastream``, or
  ``POST /v1.1/Datastreams(7)/Observations``) becomes one event of the Datastream's dataset —
  sensor of the Datastream, its field set to ``result``, ``observed_at`` = ``phenomenonTime``, the
  position of the FeatureOfInterest if one is given — through the ingest service's
  :class:`~urbanstack.runtime.ingest.push.Writes` (tool enabled, not suspended, daily event quota,
  the municipality's own Kafka user, Kafka's acknowledgement). The answer waits until the warehouse
  returns it (at most ``StaLimits.write_wait_seconds``): 201 with the Observation as now read; 504
  when the sink did not write it in time (accepted; resending is harmless); 503 when Kafka did not
  acknowledge it;
- **PATCH** of such an Observation changes its ``result``: the stored reading (every field of its
  event) is published again with that value under the same event id, so that it replaces the stored
  copy as a corrected reading does; time, Datastream and position identify the reading;
- every other write of a derived entity is **405** with the reason (``DERIVED``): Things, Sensors,
  Locations, HistoricalLocations and FeaturesOfInterest follow from the readings, Datastreams and
  ObservedProperties from the CityTools' declarations, and stored readings are not deleted one by one.

Who may write: a token with ``write:own`` (roles gov-editor, gov-admin), for its own municipality's
data. Anonymous: 401. What the caller cannot read: 404, as for reading. What it can read but another
municipality owns (shared with it, or open data): 403.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from ..auth import Permission, Principal
from ..catalogue import DatasetInfo
from ..query import _quote, _table, _utc, request_deadline
from . import changes
from . import created as made
from . import sql as obs_sql
from .graph import ENTITY_SETS, SINGULAR, Entity, SensorIndex, StaLimits, feature_id
from .options import Options
from .service import Request, not_found

# Source of the events a POST writes, per field: each POSTed Observation is an event of its own, so
# that Observations of two Datastreams of one sensor at the same instant never replace each other.
SOURCE_PREFIX = "sensorthings/"
MAX_BODY_BYTES = 64 * 1024
_OBSERVATIONS = re.compile(r"^(?:Datastreams\((?P<stream>\d+)\)/)?Observations$")
_OBSERVATION = re.compile(r"^(?:Datastreams\(\d+\)/)?Observations\(\d+\)$")
_KNOWN_KEYS = {"phenomenonTime", "resultTime", "result", "Datastream", "FeatureOfInterest", "parameters",
               "resultQuality", "validTime"}
_INTEGER_RANGES = {"UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
                   "UInt64": (0, 2**64 - 1), "Int8": (-2**7, 2**7 - 1), "Int16": (-2**15, 2**15 - 1),
                   "Int32": (-2**31, 2**31 - 1), "Int64": (-2**63, 2**63 - 1)}

DERIVED = {
    "Things": "a Thing is a sensor of a dataset and appears with the sensor's first reading; create "
              "Observations of its Datastreams instead",
    "Sensors": "a Sensor is a sensor of a dataset and appears with its first reading",
    "Locations": "Locations are the positions a sensor reported; send the position with an Observation "
                 "(its FeatureOfInterest)",
    "HistoricalLocations": "HistoricalLocations are the positions a sensor reported, with the time it was "
                           "first seen there",
    "FeaturesOfInterest": "a FeatureOfInterest is the position of a reading; give it inline in the "
                          "Observation you create",
    "Datastreams": "Datastreams are the fields the dataset's CityTool declares (with their units) for each "
                   "sensor; they change with the CityTool, not through this API",
    "ObservedProperties": "ObservedProperties are the fields CityTools declare, shared by every "
                          "municipality that runs the tool; they change with the CityTool",
    "Observations": "a stored reading is not deleted one by one (the dataset's retention deletes old readings); "
                    "correct its value with PATCH",
}


class Writes(Protocol):
    """What the ingest service lends the API (``urbanstack.runtime.ingest.push.Writes``)."""

    def publish(self, tenant: str, subject: str, tool: str, dataset: str, events: list) -> Any: ...


@dataclass
class WriteRefused(Exception):
    status: int
    code: str
    message: str
    headers: dict[str, str] | None = None


def method_not_allowed(method: str, path: str) -> WriteRefused:
    """405 for a write the model does not have, with the reason."""
    path = path.strip("/")
    first = path.split("/", 1)[0].split("(", 1)[0]
    last_segment = path.rsplit("/", 1)[-1]
    last = last_segment.split("(", 1)[0]
    target = last if last in ENTITY_SETS else first
    allow = "GET"
    reason = DERIVED.get(target, "this resource is read-only")
    if target == "Observations":
        one = "(" in last_segment
        allow = "GET, PATCH" if one else "GET, POST"
        if method == "POST":
            reason = "Observations are created at /v1.1/Observations or /v1.1/Datastreams(<id>)/Observations"
        elif method == "PUT":
            reason = "change an Observation's result with PATCH; its other properties identify the reading"
        elif method == "PATCH" and not one:
            reason = "PATCH one Observation: /v1.1/Observations(<id>)"
    what = SINGULAR.get(target, target or "the service root")
    return WriteRefused(405, "method_not_allowed", f"{method} is not supported for {what}: {reason} "
                                                   "(docs/sensorthings.md, Create-Update-Delete)", {"Allow": allow})


def refuse(engine, index: SensorIndex, limits: StaLimits, caller: Principal | None, base: str, method: str,
           path: str) -> None:
    """A write this model does not have: 404 when the resource does not exist for the caller (as a
    read would answer), else 405 with the reason."""
    path = path.strip("/")
    if path:
        token = request_deadline.set(time.monotonic() + engine.limits.query_timeout_seconds)
        try:
            Request(engine, index, limits, caller, base).resolve(path)
        finally:
            request_deadline.reset(token)
    raise method_not_allowed(method, path)


def create(engine, index: SensorIndex, limits: StaLimits, writes: Writes | None, caller: Principal | None,
           base: str, path: str, body: bytes) -> tuple[dict, str]:
    """POST of an Observation: (the Observation as read back, its URL)."""
    path = path.strip("/")
    match = _OBSERVATIONS.match(path)
    if match is None or _names_created(match.group("stream"), body):
        return _create_entity(engine, index, limits, writes, caller, base, path, body)
    _may_write(writes, caller, "creating")
    document = _document(body)
    deadline = time.monotonic() + limits.write_wait_seconds + engine.limits.query_timeout_seconds
    token = request_deadline.set(deadline)
    try:
        request = Request(engine, index, limits, caller, base)
        stream = _datastream(request, match.group("stream"), document)
        _owned(caller, stream, f"Datastream {stream.id}")
        event = _event(request, stream, document, caller.tenant)
        _publish(writes, caller, stream.dataset, event)
        entity = _read_back(request, stream, event, deadline)
        written = request.write(entity, Options())
        return written, written["@iot.selfLink"]
    finally:
        request_deadline.reset(token)


def update(engine, index: SensorIndex, limits: StaLimits, writes: Writes | None, caller: Principal | None,
           base: str, path: str, body: bytes) -> dict:
    """PATCH of an Observation's ``result``: the whole stored reading (every field of its event) is
    published again with that one value changed, under the same event id, so that it replaces the
    stored copy (as a corrected reading does) — the Observation keeps its id. Answers the
    Observation as read back."""
    path = path.strip("/")
    if _OBSERVATION.match(path) is not None:
        _may_write(writes, caller, "changing")   # as before created entities: 401/403 before the lookup
    target = _target(engine, index, limits, caller, base, path)
    if target is not None and target.extra.get("created"):
        _may_write(writes, caller, "changing")
        return changes.change(engine, index, limits, writes, caller, base, target, body, replace=False)
    if _OBSERVATION.match(path) is None:
        raise method_not_allowed("PATCH", path)
    document = _document(body, creating=False)
    deadline = time.monotonic() + limits.write_wait_seconds + engine.limits.query_timeout_seconds
    token = request_deadline.set(deadline)
    try:
        request = Request(engine, index, limits, caller, base)
        target = request.resolve(path)
        if not (isinstance(target, tuple) and target[0] == "entity" and target[1].kind == "Observation"):
            raise not_found(f"Observation {path}")
        observation = target[1]
        stream = request.graph.get("Datastreams", observation.extra["datastream"])
        if stream is None:
            raise not_found(f"the Datastream of Observation {observation.id}")
        _owned(caller, stream, f"Observation {observation.id}")
        for name in ("phenomenonTime", "resultTime"):
            if document.get(name) is not None and _instant(document[name]) != observation.extra["time"]:
                raise WriteRefused(400, "invalid_body", f"{name} identifies the reading and cannot change; create "
                                                        "an Observation at the new time instead")
        for name in ("Datastream", "FeatureOfInterest"):
            if document.get(name) is not None:
                raise WriteRefused(400, "invalid_body", f"{name} cannot change: a reading stays with its sensor "
                                                        "and position; only result can be changed")
        event = _corrected(request, stream, observation, _value(stream, document["result"]), caller.tenant)
        _publish(writes, caller, stream.dataset, event)
        return request.write(_read_back(request, stream, event, deadline), Options())
    finally:
        request_deadline.reset(token)


def replace_entity(engine, index: SensorIndex, limits: StaLimits, writes: Writes | None, caller: Principal | None,
                   base: str, path: str, body: bytes) -> dict:
    """PUT of a created entity: its properties (and links) as given, the others reset."""
    target = _target(engine, index, limits, caller, base, path.strip("/"))
    if target is None or not target.extra.get("created"):
        raise method_not_allowed("PUT", path)
    _may_write(writes, caller, "changing")
    return changes.change(engine, index, limits, writes, caller, base, target, body, replace=True)


def delete(engine, index: SensorIndex, limits: StaLimits, writes: Writes | None, caller: Principal | None,
           base: str, path: str) -> None:
    """DELETE of a created entity, with the cascade the standard asks for (:meth:`.changes.Plan.delete`)."""
    target = _target(engine, index, limits, caller, base, path.strip("/"))
    if target is None or not target.extra.get("created"):
        raise method_not_allowed("DELETE", path)
    _may_write(writes, caller, "deleting")
    changes.delete(engine, index, limits, writes, caller, base, target)


def _target(engine, index: SensorIndex, limits: StaLimits, caller: Principal | None, base: str,
            path: str) -> Entity | None:
    """The entity a path names (404 as for reading when it does not exist for the caller)."""
    if not path:
        return None
    token = request_deadline.set(time.monotonic() + engine.limits.query_timeout_seconds)
    try:
        target = Request(engine, index, limits, caller, base).resolve(path)
    finally:
        request_deadline.reset(token)
    return target[1] if isinstance(target, tuple) and target[0] == "entity" else None


def _names_created(stream_in_path: str | None, body: bytes) -> bool:
    """Whether a POSTed Observation goes to a created Datastream (or brings a new one inline)."""
    if stream_in_path is not None:
        return made.is_created_id(int(stream_in_path))
    try:
        named = json.loads(body).get("Datastream")
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        return False
    if not isinstance(named, dict):
        return False
    if "@iot.id" not in named:
        return True
    value = named["@iot.id"]
    return made.is_created_id(int(value) if isinstance(value, str) and value.isdigit() else value)


def _create_entity(engine, index: SensorIndex, limits: StaLimits, writes: Writes | None,
                   caller: Principal | None, base: str, path: str, body: bytes) -> tuple[dict, str]:
    """POST of a created entity: ``/Things`` (any entity set), or a related collection of a created
    entity (``/Datastreams(<id>)/Observations``, ``/Things(<id>)/Datastreams``, ...)."""
    parts = path.rsplit("/", 1)
    parent, nav = None, None
    if len(parts) == 1 and path in ENTITY_SETS:
        kind = SINGULAR[path]
    else:
        parent = _target(engine, index, limits, caller, base, parts[0]) if len(parts) == 2 else None
        nav = parts[-1]
        if parent is None or not parent.extra.get("created") or (parent.kind, nav) not in changes.CHILDREN:
            refuse(engine, index, limits, caller, base, "POST", path)
        kind = changes.CHILDREN[(parent.kind, nav)][0]
    _may_write(writes, caller, "creating")
    return changes.create(engine, index, limits, writes, caller, base, kind, parent, nav, body)


def _may_write(writes: Writes | None, caller: Principal | None, doing: str) -> None:
    if writes is None:
        raise WriteRefused(405, "method_not_allowed", "this API process accepts no writes (it runs without the "
                                                      "ingest service, URBANSTACK_INGEST=0); send Observations "
                                                      "to the platform's main API", {"Allow": "GET"})
    if caller is None:
        raise WriteRefused(401, "unauthenticated", f"{doing} Observations needs a token of your municipality with "
                                                   "write permission (gov-editor or gov-admin): "
                                                   "'Authorization: Bearer <access token>'",
                           {"WWW-Authenticate": "Bearer"})
    if not caller.can(Permission.write_own):
        raise WriteRefused(403, "forbidden", f"your roles do not allow {Permission.write_own.value} in "
                                             f"{caller.tenant}; {doing} Observations needs gov-editor or gov-admin")


def _owned(caller: Principal, stream: Entity, what: str) -> None:
    dataset = stream.dataset
    if dataset.owner != caller.tenant:
        raise WriteRefused(403, "forbidden", f"{what} belongs to dataset {dataset.ref} of {dataset.owner!r}, which "
                                             f"{caller.tenant!r} may read but not write; a token writes only its "
                                             "own municipality's datasets")


def _corrected(request: Request, stream: Entity, observation: Entity, value: Any, tenant: str):
    """The stored event of ``observation`` with ``value`` in the Datastream's field."""
    from urbanstack.runtime.events import EventError, Observation

    dataset = stream.dataset
    event_id = observation.props["parameters"]["eventId"]
    columns = "".join(f", {_quote(f.name)}" for f in dataset.fields)
    rows = request.engine._run("sta_write", f"SELECT source, observed_at, lon, lat{columns} FROM {_table(dataset)} "
                                            "FINAL WHERE sensor_id = {sensor:String} AND event_id = {event:String} "
                                            "LIMIT 1", {"sensor": stream.sensor.sensor_id, "event": event_id})
    if not rows:
        raise not_found(f"Observation {observation.id}")
    source, observed_at, lon, lat, *stored = rows[0]
    fields: dict[str, Any] = {}
    for info, old in zip(dataset.fields, stored):
        if info.name == stream.field.name:
            fields[info.name] = value
        elif isinstance(old, bool):
            fields[info.name] = int(old)
        elif old is not None:
            fields[info.name] = old
    unchangeable = WriteRefused(409, "conflict", f"the reading of Observation {observation.id} cannot be sent again "
                                                 "as it is stored (it holds values or an id that the event format "
                                                 "does not reproduce); correct it at its source")
    try:
        event = Observation(tenant=tenant, dataset=dataset.name, source=source, sensor_id=stream.sensor.sensor_id,
                            observed_at=_utc(observed_at), fields=fields, lon=lon, lat=lat)
    except EventError:
        raise unchangeable from None
    if event.event_id != event_id:   # stored under an id of another making (written by hand, an older format)
        raise unchangeable
    return event


def _document(body: bytes, creating: bool = True) -> dict:
    if len(body) > MAX_BODY_BYTES:
        raise WriteRefused(413, "payload_too_large", f"an Observation is at most {MAX_BODY_BYTES} bytes of JSON")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise WriteRefused(400, "invalid_body", f"the body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict):
        raise WriteRefused(400, "invalid_body", "send one Observation as a JSON object (arrays and "
                                                "dataArray are not supported)")
    unknown = sorted(set(document) - _KNOWN_KEYS - {"@iot.id"})
    if unknown:
        raise WriteRefused(400, "invalid_body", f"an Observation has no property {unknown[0]!r}; it has "
                                                "phenomenonTime, result, resultTime, Datastream, FeatureOfInterest")
    if "@iot.id" in document:
        raise WriteRefused(400, "invalid_body", "@iot.id is assigned by the service (from the Datastream and "
                                                "phenomenonTime); leave it out" if creating else
                                                "@iot.id cannot change; leave it out")
    for name in ("resultQuality", "validTime"):
        if document.get(name) is not None:
            raise WriteRefused(400, "invalid_body", f"{name} is not stored by this service; leave it out")
    if document.get("parameters"):
        raise WriteRefused(400, "invalid_body", "parameters are not stored by this service (the platform keeps "
                                                "sensor, time, position and value); leave them out")
    if "result" not in document:
        raise WriteRefused(400, "invalid_body", "result is required")
    return document


def _reference(value: Any, what: str) -> int:
    """The id of an existing entity the body links to; its other properties (clients such as
    frost-sta-client send the whole entity) name it, they do not change it."""
    if not isinstance(value, dict) or "@iot.id" not in value:
        raise WriteRefused(400, "invalid_body", f"{what}: give an existing one as {{\"@iot.id\": <id>}}; "
                                                f"{what}s cannot be created here ({DERIVED[what + 's']})")
    entity_id = value["@iot.id"]
    if isinstance(entity_id, str) and entity_id.isdigit():
        entity_id = int(entity_id)
    if not isinstance(entity_id, int) or isinstance(entity_id, bool):
        raise WriteRefused(400, "invalid_body", f"{what}: @iot.id must be a number")
    return entity_id


def _datastream(request: Request, in_path: str | None, document: dict) -> Entity:
    named = document.get("Datastream")
    if in_path is None and named is None:
        raise WriteRefused(400, "invalid_body", "Datastream is required: {\"Datastream\": {\"@iot.id\": <id>}} "
                                                "(or POST to /v1.1/Datastreams(<id>)/Observations)")
    stream_id = int(in_path) if in_path is not None else _reference(named, "Datastream")
    if in_path is not None and named is not None and _reference(named, "Datastream") != stream_id:
        raise WriteRefused(400, "invalid_body", f"the body names Datastream {named.get('@iot.id')} but the "
                                                f"path Datastream {stream_id}; leave it out of the body")
    stream = request.graph.get("Datastreams", stream_id)
    if stream is None:
        raise not_found(f"Datastream {stream_id}")
    return stream


def _instant(value: Any) -> datetime:
    if not isinstance(value, str) or "/" in value:
        raise WriteRefused(400, "invalid_body", "phenomenonTime must be one instant (ISO 8601 with a time zone, "
                                                "such as 2026-12-06T10:15:00Z); intervals are not stored")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise WriteRefused(400, "invalid_body", f"phenomenonTime: {value[:60]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise WriteRefused(400, "invalid_body", "phenomenonTime needs a time zone (Z or an offset)")
    return parsed.astimezone(timezone.utc)


def _value(stream: Entity, result: Any) -> Any:
    """The result as the event carries it, checked against the field's type as the sink checks it."""
    kind = stream.field.type
    where = f"result: Datastream {stream.id} ({stream.field.name}) holds {kind} values"
    if result is None:
        raise WriteRefused(400, "invalid_body", f"{where}; a result is required")
    if kind in _INTEGER_RANGES:
        if isinstance(result, float) and result.is_integer():
            result = int(result)
        low, high = _INTEGER_RANGES[kind]
        if not (type(result) is int and low <= result <= high):
            raise WriteRefused(400, "invalid_body", f"{where}: an integer from {low} to {high}, got {result!r}")
        return result
    if kind in ("Float32", "Float64"):
        if isinstance(result, bool) or not isinstance(result, (int, float)) or not math.isfinite(result):
            raise WriteRefused(400, "invalid_body", f"{where}: a finite number, got {result!r}")
        return float(result)
    if kind == "Bool":
        if not isinstance(result, bool):
            raise WriteRefused(400, "invalid_body", f"{where}: true or false, got {result!r}")
        return int(result)   # events carry numbers; the sink stores 0/1 in the Bool column
    if kind == "String":
        if not isinstance(result, str):
            raise WriteRefused(400, "invalid_body", f"{where}: a string, got {result!r}")
        return result
    raise WriteRefused(400, "invalid_body", f"{where}, which cannot be written through SensorThings")


def _position(request: Request, stream: Entity, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, dict) and "@iot.id" in value:
        feature = request.graph.get("FeaturesOfInterest", _reference(value, "FeatureOfInterest"))
        if (feature is None or feature.dataset.ref != stream.dataset.ref
                or feature.sensor.sensor_id != stream.sensor.sensor_id):
            raise WriteRefused(400, "invalid_body", f"FeatureOfInterest {value['@iot.id']} is not a place of the "
                                                    f"Datastream's sensor {stream.sensor.sensor_id!r}")
        return None if feature.position is None else (feature.position.lon, feature.position.lat)
    feature = value.get("feature") if isinstance(value, dict) else None
    if isinstance(feature, dict) and feature.get("type") == "Feature":
        feature = feature.get("geometry")
    coordinates = feature.get("coordinates") if isinstance(feature, dict) and feature.get("type") == "Point" else None
    if not (isinstance(coordinates, list) and len(coordinates) in (2, 3)
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                    for c in coordinates)
            and -180 <= coordinates[0] <= 180 and -90 <= coordinates[1] <= 90):
        raise WriteRefused(400, "invalid_body", "FeatureOfInterest: give {\"@iot.id\": <id>} of one of the "
                                                "sensor's places, or {\"encodingType\": \"application/geo+json\", "
                                                "\"feature\": {\"type\": \"Point\", \"coordinates\": [lon, lat]}}; "
                                                "only points (WGS 84) are stored")
    return float(coordinates[0]), float(coordinates[1])


def _event(request: Request, stream: Entity, document: dict, tenant: str):
    from urbanstack.runtime.events import EventError, Observation

    dataset, info = stream.dataset, stream.field
    required = [f.name for f in dataset.fields if f.required and f.name != info.name]
    if required:
        raise WriteRefused(409, "conflict", f"dataset {dataset.ref} requires {', '.join(required)} in every "
                                            "reading, and an Observation carries one value; send whole readings "
                                            "through the ingest push endpoint (docs/connectors.md)")
    now = request.now
    at = _instant(document["phenomenonTime"]) if document.get("phenomenonTime") is not None else now
    result_time = document.get("resultTime")
    if result_time is not None and _instant(result_time) != at:
        raise WriteRefused(400, "invalid_body", "resultTime must equal phenomenonTime (or be left out): the "
                                                "platform stores one time per reading")
    if dataset.retention_days and at < now - timedelta(days=dataset.retention_days):
        raise WriteRefused(400, "invalid_body", f"phenomenonTime {at.isoformat()} is older than the dataset's "
                                                f"retention of {dataset.retention_days} days; the warehouse "
                                                "would delete it at once")
    if at > now + timedelta(days=1):
        raise WriteRefused(400, "invalid_body", f"phenomenonTime {at.isoformat()} lies more than a day ahead")
    value = _value(stream, document["result"])
    position = _position(request, stream, document.get("FeatureOfInterest"))
    try:
        return Observation(tenant=tenant, dataset=dataset.name, source=SOURCE_PREFIX + info.name,
                           sensor_id=stream.sensor.sensor_id, observed_at=at, fields={info.name: value},
                           lon=None if position is None else position[0],
                           lat=None if position is None else position[1])
    except EventError as error:
        raise WriteRefused(400, "invalid_body", str(error)) from None


def _publish(writes: Writes, caller: Principal, dataset: DatasetInfo, event) -> None:
    from urbanstack.runtime.ingest.push import IngestError

    try:
        writes.publish(caller.tenant, caller.subject, dataset.tool, dataset.name, [event])
    except IngestError as error:
        raise WriteRefused(error.status, error.code, error.message, error.headers) from None


def _read_back(request: Request, stream: Entity, event, deadline: float) -> Entity:
    """Waits until the warehouse returns the event with the value written (the sink batches for
    about a second), at most ``write_wait_seconds``."""
    scope = obs_sql.Scope(stream.dataset, (stream.sensor.sensor_id,), (stream.field_index,))
    expected = event.fields[stream.field.name]
    if stream.field.type == "Bool":
        expected = bool(expected)
    wait_until = deadline - request.engine.limits.query_timeout_seconds
    pause = 0.05
    while True:
        rows = request.run_observations([scope], Options(), per_parent=False, top=1, skip=0,
                                        extra=("event_id = {event:String}", {"event": event.event_id}))
        if rows and _same(rows[0].props["result"], expected):
            return rows[0]
        if time.monotonic() + pause > wait_until:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.1)   # at most ~100 small indexed queries in the 10 s
    raise WriteRefused(504, "not_yet_readable", f"the Observation was accepted by the event stream but the "
                                                f"warehouse did not return it within "
                                                f"{request.limits.write_wait_seconds:g} s; it will be stored (do "
                                                "not worry about sending it again: a reading is stored once)",
                       {"Retry-After": "5"})


def _same(read: Any, written: Any) -> bool:
    if isinstance(written, float) and isinstance(read, (int, float)):
        return math.isclose(read, written, rel_tol=1e-6, abs_tol=1e-9)
    return read == written
