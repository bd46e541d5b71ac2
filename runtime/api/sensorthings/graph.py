"""The SensorThings entities over the warehouse, with stable ids.

A dataset's table has one row per event: ``sensor_id``, ``observed_at``, an optional position
(``lon``/``lat``) and one column per field of the CityTool. That maps onto SensorThings as:

========================  ==============================================================
Thing                     one sensor (``sensor_id``) of one dataset
Sensor                    the same sensor as the instrument that measures (one per Thing)
Datastream                sensor × field; ``unitOfMeasurement`` from the field's unit
ObservedProperty          a field of a CityTool dataset (shared by every municipality's Datastreams)
Observation               one non-empty field value of one event
Location                  a position the sensor reported (the latest ``positions_per_sensor``)
HistoricalLocation        when the sensor was first seen at that position
FeatureOfInterest         the position of an observation (the sensor's latest one when the event has none)
========================  ==============================================================

Ids are numbers derived from the names (a hash cut to 53 bits, so that JavaScript clients
such as Masterportal keep them exact, and numbers because clients and the OGC test suite read
``@iot.id`` as a long): the same sensor keeps its ids for as long as its dataset exists,
across restarts and replicas, without a table of ids. An Observation's id is the hash of
(dataset, sensor, field, event id); the warehouse computes the same hash to find its row.

Which sensors and positions a dataset has is read from the warehouse once per
``index_seconds`` per dataset (one grouped query each, under the engine's limits) and kept in
memory; everything the caller may not read is never looked at, because the graph of a request
is built only from the datasets :func:`..query.can_read` allows it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field as dataclass_field
from datetime import datetime
from typing import Any, Iterable

from ..catalogue import DatasetInfo, FieldInfo
from ..query import QueryEngine, QueryError, _quote, _table, _utc

ID_BITS = 53


def stable_id(kind: str, *parts: Any) -> int:
    text = "\x1f".join([kind, *(repr(part) if not isinstance(part, str) else part for part in parts)])
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, person=b"urbanstack-sta").digest(), "big")
    return (value & ((1 << ID_BITS) - 1)) or 1


@dataclass(frozen=True)
class StaLimits:
    default_top: int = 100
    max_top: int = 10_000
    max_expand_depth: int = 3
    # Entities one request may consider in memory (Things, Datastreams, ... of the datasets it can read),
    # and write into one answer including expansions.
    max_entities: int = 200_000
    max_written: int = 50_000
    max_sensors_per_dataset: int = 100_000
    positions_per_sensor: int = 10
    index_seconds: float = 30.0
    max_skip: int = 1_000_000
    recent_observation_ids: int = 100_000
    cached_graphs: int = 64            # distinct sets of readable datasets kept built ...
    cached_entities: int = 400_000     # ... holding at most this many entities together (memory)
    write_wait_seconds: float = 10.0   # a POSTed Observation: how long the answer waits for the sink to write it
    max_write_entities: int = 500      # entities and Observations one POST/PATCH/PUT/DELETE creates or changes
    max_cascade_observations: int = 10_000   # Observations one DELETE may delete with its entity


class RecentIds:
    """A bounded map of the most recently written ids (oldest dropped first); thread-safe enough for
    hints: a lost or stale entry only costs a slower lookup, which verifies the hint anyway."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[int, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def __setitem__(self, key: int, value: tuple) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: int) -> tuple | None:
        return self._items.get(key)


@dataclass(frozen=True)
class Position:
    lon: float
    lat: float
    first: datetime
    last: datetime


@dataclass(frozen=True)
class Span:
    first: datetime
    last: datetime
    count: int           # events with a value (copies of an event may count twice: no FINAL)


@dataclass(frozen=True)
class SensorInfo:
    sensor_id: str
    first: datetime
    last: datetime
    positions: tuple[Position, ...]   # latest first
    fields: tuple[Span | None, ...] = ()   # per field of the dataset: when it had values; None: never

    @property
    def current(self) -> Position | None:
        return self.positions[0] if self.positions else None


class SensorIndex:
    """Per dataset: its sensors, their time span and their latest positions, refreshed every
    ``index_seconds``. Two grouped queries per dataset and refresh, run by the API's engine."""

    def __init__(self, engine: QueryEngine, limits: StaLimits):
        self.engine, self.limits = engine, limits
        self._cache: dict[tuple[str, str], tuple[float, dict[str, SensorInfo]]] = {}
        self._lock = threading.Lock()
        # Where the Observations this process served lately are (id -> dataset, sensor, field, event):
        # a client that follows an @iot.selfLink is answered without the warehouse hashing every row.
        self.observations = RecentIds(limits.recent_observation_ids)
        self._graphs: dict[tuple, tuple[float, Graph]] = {}

    def sensors(self, dataset: DatasetInfo) -> dict[str, SensorInfo]:
        key = (dataset.database, dataset.table)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            sensors = self._load(dataset)
            self._cache[key] = (time.monotonic() + self.limits.index_seconds, sensors)
            return sensors

    def graph(self, datasets: list[DatasetInfo]) -> "Graph":
        """The entities of these datasets: one Graph per set of datasets, shared by every caller who
        may read exactly that set, rebuilt when the oldest sensor list it was built from expires."""
        key = tuple(sorted((d.ref, d) for d in datasets))
        now = time.monotonic()
        cached = self._graphs.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        graph = Graph(datasets, self, self.limits)
        graph.build()
        expires = min([self._cache[(d.database, d.table)][0] for d in datasets
                       if (d.database, d.table) in self._cache], default=now)
        if graph.size > self.limits.cached_entities:
            return graph   # too big to keep: built for this request only
        with self._lock:
            self._graphs[key] = (expires, graph)
            while (len(self._graphs) > self.limits.cached_graphs or
                   sum(g.size for _, g in self._graphs.values()) > self.limits.cached_entities):
                self._graphs.pop(min(self._graphs, key=lambda k: self._graphs[k][0]))
        return graph

    def forget(self, dataset: DatasetInfo | None = None) -> None:
        self._graphs.clear()
        if dataset is None:
            self._cache.clear()
        else:
            self._cache.pop((dataset.database, dataset.table), None)

    def _load(self, dataset: DatasetInfo) -> dict[str, SensorInfo]:
        try:
            return self._query(dataset)
        except QueryError as error:
            if error.code != "not_provisioned":
                raise
            return {}   # the operator has not created the table yet: no sensors so far

    def _query(self, dataset: DatasetInfo) -> dict[str, SensorInfo]:
        cap = self.limits.max_sensors_per_dataset
        # Minimum and maximum need no FINAL: copies of an event share its time and sensor.
        per_field = "".join(
            f", countIf(isNotNull({_quote(f.name)})), minIf(observed_at, isNotNull({_quote(f.name)})), "
            f"maxIf(observed_at, isNotNull({_quote(f.name)}))" for f in dataset.fields)
        spans = self.engine._run("sta_index", f"SELECT sensor_id, min(observed_at), max(observed_at){per_field} "
                                              f"FROM {_table(dataset)} GROUP BY sensor_id ORDER BY sensor_id "
                                              "LIMIT {cap:UInt32}", {"cap": cap + 1})
        if len(spans) > cap:
            raise QueryError(422, "query_too_expensive", f"dataset {dataset.ref} has more than {cap} sensors, more "
                                                         "than the SensorThings interface serves; use the REST API")
        positions = self.engine._run(
            "sta_index", f"SELECT sensor_id, lon, lat, min(observed_at) AS first, max(observed_at) AS last FROM "
                         f"{_table(dataset)} WHERE lon IS NOT NULL AND lat IS NOT NULL AND isFinite(lon) "
                         "AND isFinite(lat) GROUP BY sensor_id, lon, lat ORDER BY sensor_id, last DESC, lon, lat "
                         "LIMIT {per:UInt32} BY sensor_id LIMIT {cap:UInt32}",
            {"per": self.limits.positions_per_sensor, "cap": (cap + 1) * self.limits.positions_per_sensor})
        by_sensor: dict[str, list[Position]] = {}
        for sensor_id, lon, lat, first, last in positions:
            by_sensor.setdefault(sensor_id, []).append(Position(float(lon), float(lat), _utc(first), _utc(last)))
        result = {}
        for row in spans:
            sensor_id, first, last = row[:3]
            fields = tuple(Span(_utc(row[i + 1]), _utc(row[i + 2]), row[i]) if row[i] else None
                           for i in range(3, len(row), 3))
            result[sensor_id] = SensorInfo(sensor_id, _utc(first), _utc(last), tuple(by_sensor.get(sensor_id, ())),
                                           fields)
        return result


# Entities -----------------------------------------------------------------------------------

ENTITY_SETS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties",
               "Observations", "FeaturesOfInterest")
SINGULAR = {"Things": "Thing", "Locations": "Location", "HistoricalLocations": "HistoricalLocation",
            "Datastreams": "Datastream", "Sensors": "Sensor", "ObservedProperties": "ObservedProperty",
            "Observations": "Observation", "FeaturesOfInterest": "FeatureOfInterest"}
PLURAL = {singular: plural for plural, singular in SINGULAR.items()}
# Navigation properties of each entity type: name -> (entity set of the target, to-many?)
NAVIGATION = {
    "Thing": {"Locations": ("Locations", True), "HistoricalLocations": ("HistoricalLocations", True),
              "Datastreams": ("Datastreams", True)},
    "Location": {"Things": ("Things", True), "HistoricalLocations": ("HistoricalLocations", True)},
    "HistoricalLocation": {"Thing": ("Things", False), "Locations": ("Locations", True)},
    "Datastream": {"Thing": ("Things", False), "Sensor": ("Sensors", False),
                   "ObservedProperty": ("ObservedProperties", False), "Observations": ("Observations", True)},
    "Sensor": {"Datastreams": ("Datastreams", True)},
    "ObservedProperty": {"Datastreams": ("Datastreams", True)},
    "Observation": {"Datastream": ("Datastreams", False), "FeatureOfInterest": ("FeaturesOfInterest", False)},
    "FeatureOfInterest": {"Observations": ("Observations", True)},
}

OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
_INTEGER_TYPES = ("UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64")
GEOJSON = "application/geo+json"


def observation_type(info: FieldInfo) -> str:
    if info.type in _INTEGER_TYPES:
        return OM + "OM_CountObservation"
    if info.type in ("Float32", "Float64"):
        return OM + "OM_Measurement"
    if info.type == "Bool":
        return OM + "OM_TruthObservation"
    return OM + "OM_Observation"


def point(lon: float, lat: float) -> dict:
    return {"type": "Point", "coordinates": [lon, lat]}


def observed_area(positions: Iterable[Position]) -> dict | None:
    """The envelope of the positions (the standard's observedArea is one), as GeoJSON: a Point for
    one place, a LineString when they share a longitude or latitude, else a Polygon. Clients such
    as frost-sta-client read no other geometry types here."""
    positions = list(positions)
    if not positions:
        return None
    west, east = min(p.lon for p in positions), max(p.lon for p in positions)
    south, north = min(p.lat for p in positions), max(p.lat for p in positions)
    if west == east and south == north:
        return point(west, south)
    if west == east or south == north:
        return {"type": "LineString", "coordinates": [[west, south], [east, north]]}
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                [west, south]]]}


@dataclass(eq=False)
class Entity:
    """One SensorThings entity: ``kind`` (singular), ``id``, its properties in output order, and
    what it stands for in the warehouse (dataset, sensor, field, position)."""
    kind: str
    id: Any
    props: dict[str, Any]
    dataset: DatasetInfo | None = None
    sensor: SensorInfo | None = None
    field: FieldInfo | None = None
    field_index: int | None = None
    position: Position | None = None
    extra: dict[str, Any] = dataclass_field(default_factory=dict)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = _utc(value)
    return f"{value.strftime('%Y-%m-%dT%H:%M:%S')}.{value.microsecond // 1000:03d}Z"


def interval(first: datetime, last: datetime) -> str:
    start, end = format_time(first), format_time(last)
    return start if start == end else f"{start}/{end}"


class Graph:
    """The entities one caller may read, built from the datasets it can read (per request)."""

    def __init__(self, datasets: Iterable[DatasetInfo], index: SensorIndex, limits: StaLimits):
        self.datasets = list(datasets)
        self.index, self.limits = index, limits
        self._sets: dict[str, list[Entity]] | None = None
        self._by_id: dict[str, dict[Any, Entity]] = {}
        self._children: dict[tuple[str, Any, str], list[Entity]] = {}
        self.sensors: dict[str, dict[str, SensorInfo]] = {}    # dataset ref -> the sensor list it was built from
        self.size = 0                                           # entities, once built

    # Building ---------------------------------------------------------------------------
    def build(self) -> None:
        """Builds every entity; the graph is read-only afterwards (shared between requests)."""
        if self._sets is None:
            self._build()

    def _build(self) -> None:
        sets: dict[str, list[Entity]] = {name: [] for name in ENTITY_SETS if name != "Observations"}
        children: dict[tuple[str, Any, str], list[Entity]] = {}
        observed: dict[int, Entity] = {}
        total = 0

        def link(parent: Entity, nav: str, child: Entity) -> None:
            children.setdefault((parent.kind, parent.id, nav), []).append(child)

        for dataset in self.datasets:
            sensors = self.sensors[dataset.ref] = self.index.sensors(dataset)
            total += len(sensors) * (3 + len(dataset.fields))
            if total > self.limits.max_entities:
                raise QueryError(422, "query_too_expensive", f"the datasets you can read hold more than "
                                 f"{self.limits.max_entities} SensorThings entities, more than one request may "
                                 "consider; use the REST API for this volume")
            for info in sensors.values():
                thing, sensor = self._thing(dataset, info), self._sensor(dataset, info)
                sets["Things"].append(thing)
                sets["Sensors"].append(sensor)
                for position in info.positions:
                    location = self._location(dataset, info, position)
                    historical = self._historical(dataset, info, position)
                    feature = self.feature(dataset, info, position)
                    sets["Locations"].append(location)
                    sets["HistoricalLocations"].append(historical)
                    sets["FeaturesOfInterest"].append(feature)
                    if position is info.current:
                        link(thing, "Locations", location)
                        link(location, "Things", thing)
                    link(thing, "HistoricalLocations", historical)
                    link(location, "HistoricalLocations", historical)
                    link(historical, "Thing", thing)
                    link(historical, "Locations", location)
                if not info.positions:
                    sets["FeaturesOfInterest"].append(self.feature(dataset, info, None))
                for index, info_field in enumerate(dataset.fields):
                    stream = self._datastream(dataset, info, info_field, index)
                    sets["Datastreams"].append(stream)
                    prop_id = stable_id("ObservedProperty", dataset.tool, dataset.name, info_field.name)
                    observed_property = observed.get(prop_id)
                    if observed_property is None:
                        observed_property = observed[prop_id] = self._observed_property(dataset, info_field, prop_id)
                        sets["ObservedProperties"].append(observed_property)
                    link(thing, "Datastreams", stream)
                    link(sensor, "Datastreams", stream)
                    link(observed_property, "Datastreams", stream)
                    link(stream, "Thing", thing)
                    link(stream, "Sensor", sensor)
                    link(stream, "ObservedProperty", observed_property)
        self._sets, self._children = sets, children
        self.size = sum(len(entities) for entities in sets.values())
        self._by_id = {name: {entity.id: entity for entity in entities} for name, entities in sets.items()}

    def entities(self, entity_set: str) -> list[Entity]:
        if self._sets is None:
            self._build()
        return self._sets[entity_set]

    def get(self, entity_set: str, entity_id: Any) -> Entity | None:
        if entity_set == "Observations":
            raise ValueError("observations are read through the warehouse")
        if self._sets is None:
            self._build()
        return self._by_id[entity_set].get(entity_id)

    def related(self, entity: Entity, nav: str) -> list[Entity]:
        """Related entities that live in memory (everything but Observations)."""
        if self._sets is None:
            self._build()
        if entity.kind == "Observation":
            stream = self.get("Datastreams", entity.extra["datastream"])
            if nav == "Datastream":
                return [stream] if stream else []
            if nav == "FeatureOfInterest":
                return [self.observation_feature(entity)]
        return self._children.get((entity.kind, entity.id, nav), [])

    def datastream_of(self, dataset: DatasetInfo, sensor_id: str, field_index: int) -> Entity | None:
        info = dataset.fields[field_index]
        return self.get("Datastreams", stable_id("Datastream", dataset.ref, sensor_id, info.name))

    # Entities -----------------------------------------------------------------------------
    @staticmethod
    def _common(dataset: DatasetInfo) -> dict[str, Any]:
        props = {"dataset": dataset.ref, "owner": dataset.owner, "tool": dataset.tool}
        if dataset.licence:
            props["licence"] = dataset.licence
        return props

    def _thing(self, dataset: DatasetInfo, info: SensorInfo) -> Entity:
        return Entity("Thing", stable_id("Thing", dataset.ref, info.sensor_id), {
            "name": info.sensor_id,
            "description": f"{dataset.display_name}: {dataset.description or dataset.name} – sensor {info.sensor_id}",
            "properties": {**self._common(dataset), "sensorId": info.sensor_id}}, dataset, info)

    def _sensor(self, dataset: DatasetInfo, info: SensorInfo) -> Entity:
        return Entity("Sensor", stable_id("Sensor", dataset.ref, info.sensor_id), {
            "name": info.sensor_id,
            "description": f"Sensor {info.sensor_id} of dataset {dataset.ref}",
            "encodingType": "application/json",
            "metadata": f"/api/v1/datasets/{dataset.ref}",
            "properties": {**self._common(dataset), "sensorId": info.sensor_id}}, dataset, info)

    def _location(self, dataset: DatasetInfo, info: SensorInfo, position: Position) -> Entity:
        return Entity("Location", stable_id("Location", dataset.ref, info.sensor_id, position.lon, position.lat), {
            "name": info.sensor_id,
            "description": f"Position of sensor {info.sensor_id} ({dataset.ref})",
            "encodingType": GEOJSON,
            "location": point(position.lon, position.lat),
            "properties": self._common(dataset)}, dataset, info, position=position)

    def _historical(self, dataset: DatasetInfo, info: SensorInfo, position: Position) -> Entity:
        return Entity("HistoricalLocation", stable_id("HistoricalLocation", dataset.ref, info.sensor_id,
                                                      position.lon, position.lat),
                      {"time": format_time(position.first)}, dataset, info, position=position)

    def feature(self, dataset: DatasetInfo, info: SensorInfo, position: Position | None) -> Entity:
        where = None if position is None else (position.lon, position.lat)
        return Entity("FeatureOfInterest", feature_id(dataset, info.sensor_id, where), {
            "name": info.sensor_id,
            "description": f"Where sensor {info.sensor_id} ({dataset.ref}) observed",
            "encodingType": GEOJSON,
            "feature": None if position is None else point(position.lon, position.lat),
            "properties": self._common(dataset)}, dataset, info, position=position)

    def observation_feature(self, observation: Entity) -> Entity:
        dataset, info = observation.dataset, observation.sensor
        where = observation.extra.get("position")
        if where is None:
            current = info.current
            return self.feature(dataset, info, current)
        known = self.get("FeaturesOfInterest", feature_id(dataset, info.sensor_id, where))
        if known is not None:
            return known
        lon, lat = where
        return self.feature(dataset, info, Position(lon, lat, observation.extra["time"], observation.extra["time"]))

    def _datastream(self, dataset: DatasetInfo, info: SensorInfo, info_field: FieldInfo, index: int) -> Entity:
        unit = info_field.unit
        span = info.fields[index] if index < len(info.fields) else None
        props = {
            "name": f"{info_field.name} – {info.sensor_id}",
            "description": info_field.description or f"{info_field.name} of sensor {info.sensor_id} ({dataset.ref})",
            "observationType": observation_type(info_field),
            "unitOfMeasurement": {"name": unit, "symbol": unit, "definition": None},
            "observedArea": observed_area(info.positions),
            "phenomenonTime": None if span is None else interval(span.first, span.last),
            "resultTime": None if span is None else interval(span.first, span.last),
            "properties": {**self._common(dataset), "field": info_field.name, "sensorId": info.sensor_id,
                           "type": info_field.type},
        }
        return Entity("Datastream", stable_id("Datastream", dataset.ref, info.sensor_id, info_field.name), props,
                      dataset, info, info_field, index)

    def _observed_property(self, dataset: DatasetInfo, info_field: FieldInfo, prop_id: int) -> Entity:
        return Entity("ObservedProperty", prop_id, {
            "name": info_field.name,
            "definition": f"urn:urbanstack:{dataset.tool}:{dataset.name}:{info_field.name}",
            "description": info_field.description or f"{info_field.name} in dataset {dataset.tool}/{dataset.name}",
            "properties": {"tool": dataset.tool, "dataset": dataset.name, "type": info_field.type}},
            dataset, field=info_field)


def feature_id(dataset: DatasetInfo, sensor_id: str, where: tuple[float, float] | None) -> int:
    if where is None:
        return stable_id("FeatureOfInterest", dataset.ref, sensor_id)
    return stable_id("FeatureOfInterest", dataset.ref, sensor_id, float(where[0]), float(where[1]))


SEPARATOR = "\x1f"
OBSERVATION_PREFIX = "Observation"


def observation_id(dataset_ref: str, sensor_id: str, field_name: str, event_id: str) -> int:
    """An Observation's id: 53 bits of the MD5 of its names, which the warehouse can compute too
    (:func:`.sql.observation_id_sql`), so that an id leads back to its row without a table of ids."""
    text = SEPARATOR.join((OBSERVATION_PREFIX, dataset_ref, sensor_id, field_name, event_id))
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big") & ((1 << ID_BITS) - 1)
