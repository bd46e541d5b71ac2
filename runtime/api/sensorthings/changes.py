"""Create, update and delete of entities that SensorThings clients created (see :mod:`.created`).

Every write is planned in full before anything is published: the whole body (a deep insert of a
Thing with Locations, Datastreams, Sensors, ObservedProperties and Observations, links by
``@iot.id``) is checked, every link resolved among the entities the caller may read, the cascade
of a DELETE collected — and only then are the events handed to Kafka (the ingest service's
``Writes``: tool switched on, not suspended, daily event quota, the municipality's own Kafka user).
A 400 therefore writes nothing. The answer waits until the warehouse returns every event of the
write (read your writes; 504 ``not_yet_readable`` when the sink is slower than
``StaLimits.write_wait_seconds``, 503 when Kafka did not acknowledge).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..auth import Principal
from ..query import _table, _utc, request_deadline
from . import created as made
from .graph import NAVIGATION, PLURAL, SINGULAR, Entity, StaLimits, format_time
from .options import Options
from .service import Request, not_found

# What a client may set, per kind: property -> check. Datastream phenomenonTime, resultTime and
# observedArea follow from its Observations in the standard; they are not stored (read as null).
REQUIRED = {
    "Thing": ("name", "description"),
    "Location": ("name", "description", "encodingType", "location"),
    "HistoricalLocation": ("time",),
    "Sensor": ("name", "description", "encodingType", "metadata"),
    "ObservedProperty": ("name", "definition", "description"),
    "Datastream": ("name", "description", "unitOfMeasurement", "observationType"),
    "FeatureOfInterest": ("name", "description", "encodingType", "feature"),
}
REQUIRED_LINKS = {"Datastream": ("Thing", "Sensor", "ObservedProperty"), "HistoricalLocation": ("Thing", "Locations")}
COMPUTED = {"Datastream": ("observedArea", "phenomenonTime", "resultTime")}
OBSERVATION_KEYS = {"phenomenonTime", "resultTime", "result", "resultQuality", "validTime", "parameters"}
# Inline children of a new entity: (kind, navigation) -> (child kind, the child's link to it)
CHILDREN = {**made.REVERSE, ("Datastream", "Observations"): ("Observation", "Datastream"),
            ("FeatureOfInterest", "Observations"): ("Observation", "FeatureOfInterest")}


def refused(status: int, code: str, message: str, headers: dict | None = None):
    from .write import WriteRefused

    return WriteRefused(status, code, message, headers)


def invalid(message: str):
    return refused(400, "invalid_body", message)


@dataclass
class Change:
    kind: str
    id: int
    version: int
    props: dict[str, Any]
    links: dict[str, Any]
    origin: Any = None
    deleted: bool = False


@dataclass
class Plan:
    """What one request writes: entity events and Observation events, all checked."""
    request: Request
    caller: Principal
    store: made.Store
    limits: StaLimits
    now: datetime
    changes: dict[int, Change] = field(default_factory=dict)
    observations: dict[int, dict] = field(default_factory=dict)

    @property
    def graph(self) -> made.Merged:
        return self.request.graph

    def version(self, previous: int = 0) -> int:
        return max(time.time_ns() // 1000, previous + 1)

    def count(self) -> None:
        if len(self.changes) + len(self.observations) > self.limits.max_write_entities:
            raise invalid(f"one request creates or changes at most {self.limits.max_write_entities} entities "
                          "(deep insert included); send the rest in further requests")

    # Looking up -------------------------------------------------------------------------
    def current(self, kind: str, entity_id: int) -> Change | None:
        """An entity as this plan leaves it: changed here, or as stored (created ones only)."""
        if entity_id in self.changes:
            change = self.changes[entity_id]
            return None if change.deleted or change.kind != kind else change
        found = self.graph.get(PLURAL[kind], entity_id)
        if found is None or not found.extra.get("created"):
            return None
        return Change(kind, found.id, found.extra["version"], dict(found.props), dict(found.extra["links"]),
                      found.extra.get("origin"))

    def reference(self, kind: str, value: Any, where: str) -> int:
        if kind == "Observation":
            raise invalid(f"{where}: an existing Observation cannot be linked here; create new ones inline")
        entity_id = value.get("@iot.id") if isinstance(value, dict) else None
        if isinstance(entity_id, str) and entity_id.isdigit():
            entity_id = int(entity_id)
        if not isinstance(entity_id, int) or isinstance(entity_id, bool):
            raise invalid(f"{where}: link an existing {kind} as {{\"@iot.id\": <number>}}")
        if self.current(kind, entity_id) is not None:
            found = self.graph.get(PLURAL[kind], entity_id)
            if found is not None and found.extra["store"].owner != self.caller.tenant:
                raise invalid(f"{where}: {kind} {entity_id} belongs to {found.extra['store'].owner!r}; link only "
                              f"entities of {self.caller.tenant!r}")
            return entity_id
        if self.graph.get(PLURAL[kind], entity_id) is not None:
            raise invalid(f"{where}: {kind} {entity_id} is derived from a CityTool dataset; entities you create "
                          "can link only entities created through this API")
        raise invalid(f"{where}: {kind} {entity_id} does not exist or is not visible to you")

    # Creating ---------------------------------------------------------------------------
    def insert(self, kind: str, body: Any, implied: dict[str, Any], where: str) -> int:
        if not isinstance(body, dict):
            raise invalid(f"{where}: a {kind} is a JSON object")
        if "@iot.id" in body or "id" in body:
            if "id" in body and "@iot.id" not in body:
                body = {"@iot.id": body["id"]}
            entity_id = self.reference(kind, body, where)
            if implied:
                self.relink(kind, entity_id, implied, where)
            return entity_id
        if kind == "Observation":
            return self.observation(body, implied, where)
        props = self.properties(kind, body, where, partial=False)
        entity_id = made.new_id()
        links: dict[str, Any] = {}
        origin = body.get("__origin")
        for nav, (target_set, to_many) in made.OWN_LINKS[kind].items():
            value = body.get(nav)
            if nav in implied:
                if value is not None:
                    raise invalid(f"{where}: {nav} is given by the path or the enclosing entity; leave it out")
                links[nav] = implied[nav]
                continue
            if value is None:
                continue
            target = SINGULAR[target_set]
            if to_many:
                if not isinstance(value, list):
                    raise invalid(f"{where}: {nav} is a list of {target_set}")
                links[nav] = [self.insert(target, item, {}, f"{where}/{nav}[{i}]") for i, item in enumerate(value)]
            else:
                links[nav] = self.insert(target, value, {}, f"{where}/{nav}")
        for nav in REQUIRED_LINKS.get(kind, ()):
            if not links.get(nav):
                raise invalid(f"{where}: a {kind} needs its {nav} (inline or as {{\"@iot.id\": <id>}})")
        self.changes[entity_id] = Change(kind, entity_id, self.version(), props, links, origin)
        self.count()
        for (parent_kind, nav), (child_kind, link) in CHILDREN.items():
            if parent_kind != kind or body.get(nav) is None:
                continue
            if not isinstance(body[nav], list):
                raise invalid(f"{where}: {nav} is a list")
            to_many = made.OWN_LINKS.get(child_kind, {}).get(link, (None, False))[1]
            for i, item in enumerate(body[nav]):
                self.insert(child_kind, item, {link: [entity_id] if to_many else entity_id}, f"{where}/{nav}[{i}]")
        if kind == "Thing" and links.get("Locations"):
            self.moved(entity_id, links["Locations"])
        return entity_id

    def relink(self, kind: str, entity_id: int, implied: dict[str, Any], where: str) -> None:
        """An existing entity named in a new entity's list of children: it gets the link (a Thing
        listed under a new Location's Things gets that Location)."""
        if kind == "Observation":
            raise invalid(f"{where}: an existing Observation cannot move to another "
                          f"{next(iter(implied))}; create a new one")
        change = self.current(kind, entity_id)
        for nav, value in implied.items():
            if isinstance(value, list):
                change.links[nav] = list(dict.fromkeys((change.links.get(nav) or []) + value))
            else:
                change.links[nav] = value
        change.version = self.version(change.version)
        self.changes[entity_id] = change
        if kind == "Thing" and "Locations" in implied:
            self.moved(entity_id, change.links["Locations"])

    def moved(self, thing_id: int, locations: list[int]) -> None:
        """A Thing at new Locations gets a HistoricalLocation (as the standard asks)."""
        historical = made.new_id()
        self.changes[historical] = Change("HistoricalLocation", historical, self.version(),
                                          {"time": format_time(self.now)},
                                          {"Thing": thing_id, "Locations": list(locations)})
        self.count()

    def properties(self, kind: str, body: dict, where: str, partial: bool) -> dict[str, Any]:
        navigation = NAVIGATION[kind]
        for key in body:
            if key not in made.PROPERTIES[kind] and key not in navigation and key not in ("@iot.id", "id",
                                                                                          "__origin"):
                raise invalid(f"{where}: a {kind} has no property {key!r}; it has "
                              f"{', '.join(made.PROPERTIES[kind])} and the links {', '.join(navigation)}")
        for key in COMPUTED.get(kind, ()):
            if body.get(key) is not None:
                raise invalid(f"{where}: a Datastream's {key} follows from its Observations; leave it out")
        props = {}
        for key in made.PROPERTIES[kind]:
            if key not in body:
                if not partial and key in REQUIRED[kind]:
                    raise invalid(f"{where}: {kind}.{key} is required")
                continue
            props[key] = check(kind, key, body[key], f"{where}: {kind}.{key}")
        return props

    def observation(self, body: dict, implied: dict[str, Any], where: str, existing: dict | None = None) -> int:
        for key in body:
            if key not in OBSERVATION_KEYS and key not in ("Datastream", "FeatureOfInterest"):
                raise invalid(f"{where}: an Observation has no property {key!r}; it has "
                              f"{', '.join(sorted(OBSERVATION_KEYS))}, Datastream and FeatureOfInterest")
        fields = dict(existing or {})
        if existing is None and "result" not in body:
            raise invalid(f"{where}: Observation.result is required")
        if "result" in body:
            fields.update(result_fields(body["result"], f"{where}: Observation.result"))
        if "phenomenonTime" in body or existing is None:
            given = body.get("phenomenonTime")
            start, end = (self.now, None) if given is None else interval(given, f"{where}: phenomenonTime", True)
            fields["observed_at"], fields["phenomenon_end"] = start, None if end is None else format_time(end)
        for key, column in (("resultTime", "result_time"), ("validTime", "valid_time")):
            if key in body:
                value = body[key]
                if value is None:
                    fields[column] = None
                elif key == "resultTime":
                    fields[column] = format_time(instant(value, f"{where}: resultTime"))
                else:
                    start, end = interval(value, f"{where}: validTime", False)
                    fields[column] = f"{format_time(start)}/{format_time(end)}"
        if "parameters" in body:
            if body["parameters"] is not None and not isinstance(body["parameters"], dict):
                raise invalid(f"{where}: Observation.parameters is a JSON object")
            fields["parameters"] = None if body["parameters"] is None else json.dumps(body["parameters"])
        if "resultQuality" in body:
            fields["result_quality"] = None if body["resultQuality"] is None else json.dumps(body["resultQuality"])
        stream = implied.get("Datastream")
        if stream is None and body.get("Datastream") is not None:
            stream = self.insert("Datastream", body["Datastream"], {}, f"{where}/Datastream")
        elif stream is not None and body.get("Datastream") is not None:
            raise invalid(f"{where}: the Datastream is given by the path or the enclosing entity; leave it out")
        if stream is None:
            stream = (existing or {}).get("datastream")
        if stream is None:
            raise invalid(f"{where}: an Observation needs its Datastream ({{\"@iot.id\": <id>}})")
        feature = implied.get("FeatureOfInterest")
        if feature is None and body.get("FeatureOfInterest") is not None:
            feature = self.insert("FeatureOfInterest", body["FeatureOfInterest"], {}, f"{where}/FeatureOfInterest")
        if feature is None:
            feature = (existing or {}).get("feature") or self.feature_of(stream, where)
        fields["datastream"], fields["feature"] = stream, feature
        fields["lon"], fields["lat"] = self.position(feature)
        retention = self.store.observations.retention_days if self.store.observations else 0
        if retention and fields["observed_at"] < self.now - timedelta(days=retention):
            raise invalid(f"{where}: phenomenonTime {format_time(fields['observed_at'])} is older than the "
                          f"retention of {retention} days of {self.store.owner}'s SensorThings data; the warehouse "
                          "would delete it at once")
        observation_id = fields.get("observation") or made.new_id()
        fields["observation"] = observation_id
        fields["version"] = self.version(fields.get("version", 0))
        self.observations[observation_id] = fields
        self.count()
        return observation_id

    def feature_of(self, stream_id: int, where: str) -> int:
        """The FeatureOfInterest of an Observation that names none: made from the Location of the
        Datastream's Thing, and the same one for every such Observation at that Location."""
        stream = self.current("Datastream", stream_id)
        thing = self.current("Thing", stream.links.get("Thing")) if stream is not None else None
        locations = [self.current("Location", i) for i in (thing.links.get("Locations") or [])] if thing else []
        location = next((loc for loc in locations if loc is not None), None)
        if location is None:
            raise invalid(f"{where}: give the Observation a FeatureOfInterest; the Datastream's Thing has no "
                          "Location to take it from")
        origin = {"Location": location.id}
        for change in self.changes.values():
            if change.kind == "FeatureOfInterest" and change.origin == origin and not change.deleted:
                return change.id
        for known in self.graph.created("FeaturesOfInterest"):
            if known.extra.get("origin") == origin and known.id not in self.changes:
                return known.id
        return self.insert("FeatureOfInterest", {
            "name": location.props.get("name"), "description": location.props.get("description"),
            "encodingType": location.props.get("encodingType"), "feature": location.props.get("location"),
            "__origin": origin}, {}, where)

    def position(self, feature_id: int) -> tuple[float | None, float | None]:
        feature = self.current("FeatureOfInterest", feature_id)
        geometry = feature.props.get("feature") if feature is not None else None
        if isinstance(geometry, dict) and geometry.get("type") == "Feature":
            geometry = geometry.get("geometry")
        coordinates = geometry.get("coordinates") if isinstance(geometry, dict) and geometry.get("type") == "Point" \
            else None
        if (isinstance(coordinates, list) and len(coordinates) >= 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coordinates[:2])
                and -180 <= coordinates[0] <= 180 and -90 <= coordinates[1] <= 90):
            return float(coordinates[0]), float(coordinates[1])
        return None, None

    # Deleting ---------------------------------------------------------------------------
    def delete(self, kind: str, entity_id: int) -> None:
        """The entity and what the standard deletes with it: a Thing's Datastreams and
        HistoricalLocations, a Sensor's or ObservedProperty's Datastreams, a Datastream's or
        FeatureOfInterest's Observations, a Location's HistoricalLocations that had only it."""
        if kind == "Observation":
            return self.tombstone_observations([], [], [entity_id])
        queue, streams, features = [(kind, entity_id)], [], []
        while queue:
            kind, entity_id = queue.pop()
            change = self.current(kind, entity_id)
            if change is None:
                continue
            change.deleted, change.version = True, self.version(change.version)
            self.changes[entity_id] = change
            self.count()
            if kind == "Datastream":
                streams.append(entity_id)
            if kind == "FeatureOfInterest":
                features.append(entity_id)
            for (parent_kind, nav), (child_kind, link) in made.REVERSE.items():
                if parent_kind != kind:
                    continue
                for child in self.graph.created(PLURAL[child_kind]):
                    linked = child.extra["links"].get(link)
                    if not (linked == entity_id or (isinstance(linked, list) and entity_id in linked)):
                        continue
                    if child_kind in ("Datastream", "HistoricalLocation") and not isinstance(linked, list):
                        queue.append((child_kind, child.id))
                        continue
                    rest = [i for i in linked if i != entity_id]
                    if child_kind == "HistoricalLocation" and not rest:
                        queue.append((child_kind, child.id))
                    elif child.id not in self.changes or not self.changes[child.id].deleted:
                        kept = self.current(child_kind, child.id)
                        kept.links[link], kept.version = rest, self.version(kept.version)
                        self.changes[child.id] = kept
        self.tombstone_observations(streams, features, [])

    def tombstone_observations(self, streams: list[int], features: list[int], ids: list[int]) -> None:
        if self.store.observations is None or not (streams or features or ids):
            return
        cap = self.limits.max_cascade_observations
        rows = self.request.engine._run(
            "sta_created", f"SELECT oid, s.1, s.2, s.3 FROM (SELECT observation AS oid, argMax((datastream, "
                           f"observed_at, feature, deleted), (version, event_id)) AS s, max(version) AS v FROM "
                           f"{_table(self.store.observations)} FINAL WHERE datastream IN {{streams:Array(UInt64)}} "
                           "OR feature IN {features:Array(UInt64)} OR observation IN {ids:Array(UInt64)} "
                           "GROUP BY observation) WHERE NOT s.4 AND (s.1 IN {streams:Array(UInt64)} OR s.3 IN "
                           "{features:Array(UInt64)} OR oid IN {ids:Array(UInt64)}) LIMIT {cap:UInt32}",
            {"streams": streams, "features": features, "ids": ids, "cap": cap + 1})
        if len(rows) > cap:
            raise refused(409, "too_many_observations", f"this DELETE would delete more than {cap} Observations "
                                                        "in one request; delete Observations of the Datastream "
                                                        "first (a few thousand per request), then send it again")
        for oid, stream, observed_at, feature in rows:
            self.observations[int(oid)] = {"observation": int(oid), "datastream": int(stream), "deleted": True,
                                           "observed_at": _utc(observed_at), "feature": feature,
                                           "version": self.version()}


def check(kind: str, key: str, value: Any, where: str) -> Any:
    if key in ("name", "description", "encodingType", "definition", "observationType"):
        if not isinstance(value, str):
            raise invalid(f"{where} is text, got {json.dumps(value)[:60]}")
        return value
    if key == "properties":
        if value is not None and not isinstance(value, dict):
            raise invalid(f"{where} is a JSON object")
        return value
    if key in ("location", "feature"):
        if not (isinstance(value, dict) and isinstance(value.get("type"), str)):
            raise invalid(f"{where} is a GeoJSON object such as {{\"type\": \"Point\", \"coordinates\": [8.38, "
                          "51.9]}")
        return value
    if key == "unitOfMeasurement":
        if not isinstance(value, dict) or any(not isinstance(value.get(k), (str, type(None)))
                                              for k in ("name", "symbol", "definition")):
            raise invalid(f"{where} is an object with name, symbol and definition (text)")
        return value
    if key == "time":
        return format_time(instant(value, where))
    return value   # metadata: any JSON value


def instant(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or "/" in value:
        raise invalid(f"{where} is one instant (ISO 8601 with a time zone, such as 2026-12-06T10:15:00Z)")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"{where}: {value[:60]!r} is not an ISO 8601 time") from None
    if parsed.utcoffset() is None:
        raise invalid(f"{where}: {value[:60]!r} needs a time zone (Z or an offset)")
    return parsed.astimezone(timezone.utc)


def interval(value: Any, where: str, instant_allowed: bool) -> tuple[datetime, datetime | None]:
    if isinstance(value, str) and "/" in value:
        start, _, end = value.partition("/")
        first, last = instant(start, where), instant(end, where)
        if last < first:
            raise invalid(f"{where}: the interval ends before it starts")
        return first, last
    if not instant_allowed:
        raise invalid(f"{where} is an interval (start/end, ISO 8601)")
    return instant(value, where), None


def result_fields(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise invalid(f"{where} is required (a number, text, true/false or JSON)")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"{where} must be finite")
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is not None and not math.isfinite(number):
        raise invalid(f"{where} is out of range")
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return {"result": json.dumps(value, ensure_ascii=False, separators=(",", ":")), "result_number": number,
            "result_text": text}


# Publishing and reading back ----------------------------------------------------------------

def publish(plan: Plan, writes, deadline: float) -> None:
    from urbanstack.runtime.events import EventError, Observation
    from urbanstack.runtime.ingest.push import IngestError

    tenant = plan.caller.tenant
    entity_events, observation_events = [], []
    try:
        for change in plan.changes.values():
            document = {"props": change.props, "links": change.links}
            if change.origin is not None:
                document["origin"] = change.origin
            entity_events.append(Observation(
                tenant=tenant, dataset=made.ENTITIES, source=f"sensorthings/v{change.version}",
                sensor_id=f"{change.kind}/{change.id}", observed_at=plan.now,
                fields={"kind": change.kind, "entity": change.id, "version": change.version,
                        "deleted": int(change.deleted), "document": json.dumps(document, ensure_ascii=False)}))
        for fields in plan.observations.values():
            values = {key: value for key, value in fields.items()
                      if key not in ("observed_at", "lon", "lat") and value is not None}
            values["deleted"] = int(bool(fields.get("deleted")))
            observation_events.append(Observation(
                tenant=tenant, dataset=made.OBSERVATIONS, source=f"sensorthings/v{fields['version']}",
                sensor_id=str(fields["datastream"]), observed_at=fields["observed_at"], fields=values,
                lon=fields.get("lon"), lat=fields.get("lat")))
    except EventError as error:
        raise invalid(str(error)) from None
    if observation_events and plan.store.observations is None:
        raise refused(409, "conflict", f"{tenant}'s CityTool sensorthings has no observations dataset")
    try:
        for dataset, events in ((made.ENTITIES, entity_events), (made.OBSERVATIONS, observation_events)):
            if events:
                writes.publish(tenant, plan.caller.subject, made.TOOL, dataset, events)
    except IngestError as error:
        raise refused(error.status, error.code, error.message, error.headers) from None
    wait_until = deadline - plan.request.engine.limits.query_timeout_seconds
    for dataset, events in ((plan.store.entities, entity_events), (plan.store.observations, observation_events)):
        ids = [event.event_id for event in events]
        pause = 0.05
        while ids:
            rows = plan.request.engine._run("sta_write", f"SELECT uniqExact(event_id) FROM {_table(dataset)} "
                                                         "WHERE event_id IN {ids:Array(String)}", {"ids": ids})
            if rows and rows[0][0] >= len(ids):
                break
            if time.monotonic() + pause > wait_until:
                raise refused(504, "not_yet_readable", "the change was accepted by the event stream but the "
                                                       "warehouse did not return it within "
                                                       f"{plan.limits.write_wait_seconds:g} s; it will be stored",
                              {"Retry-After": "5"})
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def store_of(request: Request, caller: Principal) -> made.Store:
    store = request.graph.store_of(caller.tenant)
    if store is None:
        raise refused(403, "forbidden", f"{caller.tenant!r} has not switched on the CityTool {made.TOOL!r} "
                                        "(spec.tools), which stores the entities SensorThings clients create")
    return store


def owned(caller: Principal, entity: Entity) -> None:
    owner = entity.extra["store"].owner
    if owner != caller.tenant:
        raise refused(403, "forbidden", f"{entity.kind} {entity.id} belongs to {owner!r}, which {caller.tenant!r} "
                                        "may read but not change")


def body_of(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise invalid(f"the body is not valid JSON: {str(error)[:200]}") from None


@contextmanager
def writing(engine, index, limits: StaLimits, caller: Principal, base: str):
    """(the request, its deadline) of one write: the wait for the sink plus the query time."""
    deadline = time.monotonic() + limits.write_wait_seconds + engine.limits.query_timeout_seconds
    token = request_deadline.set(deadline)
    try:
        yield Request(engine, index, limits, caller, base), deadline
    finally:
        request_deadline.reset(token)


def create(engine, index, limits: StaLimits, writes, caller: Principal, base: str, kind: str,
           parent: Entity | None, nav: str | None, raw: bytes) -> tuple[dict, str]:
    with writing(engine, index, limits, caller, base) as (request, deadline):
        store = store_of(request, caller)
        implied = {}
        if parent is not None:
            owned(caller, parent)
            child_kind, link = CHILDREN[(parent.kind, nav)]
            to_many = made.OWN_LINKS.get(child_kind, {}).get(link, (None, False))[1]
            implied = {link: [parent.id] if to_many else parent.id}
        plan = Plan(request, caller, store, limits, request.now)
        entity_id = plan.insert(kind, body_of(raw), implied, kind)
        publish(plan, writes, deadline)
        return answer(engine, index, limits, caller, base, kind, entity_id)


def answer(engine, index, limits, caller, base, kind: str, entity_id: int) -> tuple[dict, str]:
    request = Request(engine, index, limits, caller, base)
    if kind == "Observation":
        found = request.member(request.root_collection("Observations"), entity_id)
    else:
        found = request.graph.get(PLURAL[kind], entity_id)
    if found is None:
        raise refused(504, "not_yet_readable", f"{kind} {entity_id} was stored but is not readable yet",
                      {"Retry-After": "5"})
    written = request.write(found, Options())
    return written, written["@iot.selfLink"]


def change(engine, index, limits: StaLimits, writes, caller: Principal, base: str, target: Entity, raw: bytes,
           replace: bool) -> dict:
    """PATCH (``replace`` False) or PUT of a created entity."""
    with writing(engine, index, limits, caller, base) as (request, deadline):
        owned(caller, target)
        plan = Plan(request, caller, store_of(request, caller), limits, request.now)
        body = body_of(raw)
        what = f"{target.kind}({target.id})"
        if not isinstance(body, dict):
            raise invalid(f"{what}: send the changes as a JSON object")
        if body.get("@iot.id", target.id) != target.id:
            raise invalid(f"{what}: @iot.id cannot change")
        body = {key: value for key, value in body.items() if key not in ("@iot.id", "id")}
        if target.kind == "Observation":
            stored = stored_observation(plan, target)
            if replace:
                missing = [k for k in ("result",) if k not in body]
                if missing:
                    raise invalid(f"{what}: PUT replaces the Observation; {missing[0]} is required")
                for column in ("result_time", "valid_time", "parameters", "result_quality"):
                    stored[column] = None
            for nav in ("Datastream", "FeatureOfInterest"):
                if body.get(nav) is not None:
                    stored[nav.lower() if nav == "Datastream" else "feature"] = plan.reference(
                        nav, body.pop(nav), f"{what}/{nav}")
            plan.observation(body, {}, what, existing=stored)
        else:
            current = plan.current(target.kind, target.id)
            props = plan.properties(target.kind, body, what, partial=not replace)
            current.props = props if replace else {**current.props, **props}
            for nav in body:
                if nav not in made.OWN_LINKS[target.kind] and nav in NAVIGATION[target.kind]:
                    raise invalid(f"{what}: {nav} cannot be changed here: create related entities with POST "
                                  "and link them from their side")
            for nav, (target_set, to_many) in made.OWN_LINKS[target.kind].items():
                if nav not in body:
                    continue
                value = body[nav]
                if to_many:
                    if not isinstance(value, list) or not value:
                        raise invalid(f"{what}: {nav} is a non-empty list of {{\"@iot.id\": <id>}}")
                    current.links[nav] = [plan.reference(SINGULAR[target_set], item, f"{what}/{nav}")
                                          for item in value]
                else:
                    current.links[nav] = plan.reference(SINGULAR[target_set], value, f"{what}/{nav}")
            current.version = plan.version(current.version)
            plan.changes[target.id] = current
            if target.kind == "Thing" and "Locations" in body:
                plan.moved(target.id, current.links["Locations"])
        publish(plan, writes, deadline)
        return answer(engine, index, limits, caller, base, target.kind, target.id)[0]


def stored_observation(plan: Plan, target: Entity) -> dict:
    props = target.props
    end = props["phenomenonTime"].split("/", 1)[1] if "/" in (props["phenomenonTime"] or "") else None
    return {"observation": target.id, "datastream": target.extra["datastream"], "feature": target.extra["feature"],
            "observed_at": target.extra["time"], "phenomenon_end": end, "version": target.extra["version"],
            **result_fields(props["result"], "result"), "result_time": props["resultTime"],
            "valid_time": props["validTime"],
            "parameters": None if props["parameters"] is None else json.dumps(props["parameters"]),
            "result_quality": None if props["resultQuality"] is None else json.dumps(props["resultQuality"])}


def delete(engine, index, limits: StaLimits, writes, caller: Principal, base: str, target: Entity) -> None:
    with writing(engine, index, limits, caller, base) as (request, deadline):
        owned(caller, target)
        plan = Plan(request, caller, store_of(request, caller), limits, request.now)
        plan.delete(target.kind, target.id)
        publish(plan, writes, deadline)


__all__ = ["create", "change", "delete", "not_found"]
