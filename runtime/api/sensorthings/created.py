"""Entities that SensorThings clients created: their state in the warehouse and how they join the
entities derived from CityTool datasets.

A municipality that switches on the built-in CityTool ``sensorthings``
(``examples/citytool-sensorthings.yaml``) has two datasets for them, filled through Kafka and the
sink like every dataset:

- ``entities``: one event per create, update or delete of a Thing, Location, HistoricalLocation,
  Sensor, ObservedProperty, Datastream or FeatureOfInterest — ``kind``, ``entity`` (the id),
  ``version``, ``deleted`` and ``document`` (properties and links as JSON). An entity's state is
  its event with the highest ``(version, event_id)``; a ``deleted`` event is a tombstone.
- ``observations``: the Observations of those Datastreams, versioned the same way.

Ids of created entities are even numbers from 2^53 to 2^54 (:func:`new_id`): above every derived
id (53-bit hashes, :func:`.graph.stable_id`), so the two never collide, and still exact in
JavaScript (doubles hold every even integer in that range) and in a Java ``long``.

:class:`Merged` is what a request reads: the derived :class:`~.graph.Graph` of the caller's
datasets plus the created entities of the ``sensorthings`` datasets it may read (whose tables are
never shown as derived Things themselves).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

from ..catalogue import DatasetInfo
from ..query import QueryEngine, QueryError, _table, _utc
from .graph import ENTITY_SETS, PLURAL, Entity, Graph, SensorInfo, StaLimits, format_time

TOOL = "sensorthings"
ENTITIES = "entities"
OBSERVATIONS = "observations"
ID_BASE = 1 << 53


def new_id() -> int:
    """A fresh id for a created entity: 2^53 + an even offset below 2^53 (52 random bits)."""
    return ID_BASE + 2 * secrets.randbits(52)


def is_created_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= ID_BASE


@dataclass(frozen=True)
class Store:
    """One municipality's ``sensorthings`` datasets (those the caller may read)."""
    owner: str
    entities: DatasetInfo
    observations: DatasetInfo | None


def split(datasets: Iterable[DatasetInfo]) -> tuple[list[DatasetInfo], list[Store]]:
    """(the datasets shown as derived entities, the stores of created ones)."""
    derived, own = [], {}
    for dataset in datasets:
        if dataset.tool == TOOL:
            own.setdefault(dataset.owner, {})[dataset.name] = dataset
        else:
            derived.append(dataset)
    stores = [Store(owner, parts[ENTITIES], parts.get(OBSERVATIONS))
              for owner, parts in sorted(own.items()) if ENTITIES in parts]
    return derived, stores


# Links each kind keeps in its own document: navigation name -> (target set, to-many?)
OWN_LINKS = {
    "Thing": {"Locations": ("Locations", True)},
    "HistoricalLocation": {"Thing": ("Things", False), "Locations": ("Locations", True)},
    "Datastream": {"Thing": ("Things", False), "Sensor": ("Sensors", False),
                   "ObservedProperty": ("ObservedProperties", False)},
    "FeatureOfInterest": {},
    "Location": {}, "Sensor": {}, "ObservedProperty": {},
}
# Navigations that are the reverse of another kind's own link: (kind, nav) -> (child kind, child's link)
REVERSE = {
    ("Thing", "Datastreams"): ("Datastream", "Thing"),
    ("Thing", "HistoricalLocations"): ("HistoricalLocation", "Thing"),
    ("Location", "Things"): ("Thing", "Locations"),
    ("Location", "HistoricalLocations"): ("HistoricalLocation", "Locations"),
    ("Sensor", "Datastreams"): ("Datastream", "Sensor"),
    ("ObservedProperty", "Datastreams"): ("Datastream", "ObservedProperty"),
}
# Properties of each kind in output order.
PROPERTIES = {
    "Thing": ("name", "description", "properties"),
    "Location": ("name", "description", "encodingType", "location", "properties"),
    "HistoricalLocation": ("time",),
    "Sensor": ("name", "description", "encodingType", "metadata", "properties"),
    "ObservedProperty": ("name", "definition", "description", "properties"),
    "Datastream": ("name", "description", "observationType", "unitOfMeasurement", "observedArea", "phenomenonTime",
                   "resultTime", "properties"),
    "FeatureOfInterest": ("name", "description", "encodingType", "feature", "properties"),
}
OBSERVATION_PROPERTIES = ("phenomenonTime", "resultTime", "result", "resultQuality", "validTime", "parameters")


def entity(kind: str, entity_id: int, document: dict, store: Store, version: int) -> Entity:
    props = {name: document.get("props", {}).get(name) for name in PROPERTIES[kind]}
    return Entity(kind, entity_id, props, store.entities,
                  extra={"created": True, "links": document.get("links", {}), "store": store, "version": version,
                         "origin": document.get("origin")})


def load(engine: QueryEngine, store: Store, limits: StaLimits) -> list[Entity]:
    """The live entities of one store: the latest version of each, tombstones left out."""
    cap = limits.max_entities
    try:
        rows = engine._run("sta_created", f"SELECT kind, entity, s.1, s.2 FROM (SELECT kind, entity, "
                                          f"argMax((version, document, deleted), (version, event_id)) AS s FROM "
                                          f"{_table(store.entities)} FINAL GROUP BY kind, entity) WHERE NOT s.3 "
                                          "ORDER BY entity LIMIT {cap:UInt32}", {"cap": cap + 1})
    except QueryError as error:
        if error.code != "not_provisioned":
            raise
        return []
    if len(rows) > cap:
        raise QueryError(422, "query_too_expensive", f"{store.owner}'s SensorThings store holds more than {cap} "
                                                     "entities, more than one request may consider")
    out = []
    for kind, entity_id, version, document in rows:
        if kind in PROPERTIES:
            out.append(entity(kind, int(entity_id), json.loads(document), store, int(version)))
    return out


class Merged:
    """The derived graph plus the created entities, with the interface of :class:`~.graph.Graph`
    that requests, filters and expansions use."""

    def __init__(self, derived: Graph, stores: list[Store], created: list[Entity]):
        self.derived, self.stores = derived, stores
        self.datasets = derived.datasets
        self.sensors = derived.sensors
        self._sets: dict[str, list[Entity]] = {name: [] for name in ENTITY_SETS if name != "Observations"}
        self._by_id: dict[int, Entity] = {}
        for item in created:
            self._sets[PLURAL[item.kind]].append(item)
            self._by_id[item.id] = item
        self._children: dict[tuple[int, str], list[Entity]] = {}
        for item in created:
            for nav, (target_set, to_many) in OWN_LINKS[item.kind].items():
                linked = item.extra["links"].get(nav)
                for target_id in (linked or []) if to_many else ([linked] if linked is not None else []):
                    target = self._by_id.get(target_id)
                    if target is not None and PLURAL[target.kind] == target_set:
                        self._children.setdefault((item.id, nav), []).append(target)
        for (kind, nav), (child_kind, link) in REVERSE.items():
            for child in self._sets[PLURAL[child_kind]]:
                for parent in self._children.get((child.id, link), []):
                    if parent.kind == kind:
                        self._children.setdefault((parent.id, nav), []).append(child)

    @property
    def size(self) -> int:
        return self.derived.size + len(self._by_id)

    def created(self, entity_set: str) -> list[Entity]:
        return self._sets[entity_set]

    def entities(self, entity_set: str) -> list[Entity]:
        own = self._sets[entity_set]
        derived = self.derived.entities(entity_set)
        return derived + own if own else derived

    def get(self, entity_set: str, entity_id: Any) -> Entity | None:
        if is_created_id(entity_id):
            found = self._by_id.get(entity_id)
            return found if found is not None and PLURAL[found.kind] == entity_set else None
        return self.derived.get(entity_set, entity_id)

    def related(self, item: Entity, nav: str) -> list[Entity]:
        if item.kind == "Observation" and item.extra.get("created"):
            if nav == "Datastream":
                found = self.get("Datastreams", item.extra["datastream"])
            else:
                found = self.get("FeaturesOfInterest", item.extra.get("feature"))
            return [found] if found is not None else []
        if not item.extra.get("created"):
            return self.derived.related(item, nav)
        return self._children.get((item.id, nav), [])

    def datastream_of(self, dataset: DatasetInfo, sensor_id: str, field_index: int) -> Entity | None:
        return self.derived.datastream_of(dataset, sensor_id, field_index)

    def store_of(self, owner: str) -> Store | None:
        return next((store for store in self.stores if store.owner == owner), None)


def observation(store: Store, row: tuple) -> Entity:
    """A created Observation from a row of :func:`.sql.created_sql`."""
    _, datastream, oid, observed_at, lon, lat, _fi, _num, _txt, _result_time, document = row
    doc = json.loads(document)
    start = _utc(observed_at)
    end = doc.get("phenomenon_end")
    phenomenon = format_time(start) if not end else f"{format_time(start)}/{end}"
    props = {"phenomenonTime": phenomenon, "resultTime": doc.get("result_time"),
             "result": None if doc.get("result") is None else json.loads(doc["result"]),
             "resultQuality": _json_or_none(doc.get("result_quality")), "validTime": doc.get("valid_time"),
             "parameters": _json_or_none(doc.get("parameters"))}
    position = None if lon is None or lat is None else (float(lon), float(lat))
    made = Entity("Observation", int(oid), props, store.observations,
                  SensorInfo(str(datastream), start, start, ()),
                  extra={"created": True, "store": store, "datastream": int(datastream),
                         "feature": None if doc.get("feature") is None else int(doc["feature"]),
                         "position": position, "time": start, "version": int(doc["version"])})
    return made


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)

