"""Answers SensorThings read requests: resource paths, query options, expansion, paging.

A request is resolved step by step along its path (``Things(5)/Datastreams(7)/Observations``)
over the :class:`~.graph.Graph` of the datasets the caller may read; a collection is then
filtered, counted, sorted, paged, expanded and written. Observations are never held as a
whole: each list or expansion of them is one warehouse query (see :mod:`.sql`) whose size is
bounded by ``$top``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from ..auth import Principal
from ..query import QueryEngine, QueryError, _utc, request_deadline
from . import created as made
from . import sql as obs_sql
from .evaluate import Evaluator, sort_key
from .graph import (ENTITY_SETS, NAVIGATION, PLURAL, SINGULAR, Entity, SensorIndex, SensorInfo, StaLimits,
                    format_time, observation_id, stable_id)
from .options import Binary, Call, Node, Options, Path, Unary, option_error, parse_options, query_pairs

VERSION = "v1.1"
CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/create-update-delete",
]
LATEST_WINDOW = timedelta(days=1)
_SEGMENT = re.compile(r"(?P<name>[A-Za-z]+|\$value|\$ref)(?:\((?P<id>\d+|'(?:[^']|'')*')\))?")


def not_found(what: str) -> QueryError:
    return QueryError(404, "not_found", f"{what} does not exist or is not visible to you (open data is readable "
                                        "without a token; your municipality's data with its token)")


def id_literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + quote(str(value).replace("'", "''"), safe="-_.~!*") + "'"


@dataclass
class Collection:
    entity_set: str
    link: str                                        # path of the collection, under the service root
    entities: list[Entity] | None = None             # in memory
    scopes: list[obs_sql.Scope] | None = None        # Observations
    extra: tuple[str, dict[str, Any]] | None = None  # an additional SQL condition (Observations(id))


class Request:
    """One SensorThings request of one caller."""

    def __init__(self, engine: QueryEngine, index: SensorIndex, limits: StaLimits, principal: Principal | None,
                 base: str):
        self.engine, self.index, self.limits = engine, index, limits
        derived, stores = made.split(engine.datasets(principal))
        created = [entity for store in stores for entity in made.load(engine, store, limits)]
        self.graph = made.Merged(index.graph(derived), stores, created)
        self.base = base.rstrip("/")
        self.now = datetime.now(timezone.utc)
        self.written = 0

    # Entry ----------------------------------------------------------------------------------
    def answer(self, path: str, raw_query: str) -> tuple[Any, str]:
        """(body, kind): kind "json" or "text" ($value)."""
        options = parse_options(query_pairs(raw_query), max_depth=self.limits.max_expand_depth)
        path = path.strip("/")
        if not path:
            return self.landing(), "json"
        target = self.resolve(path)
        if isinstance(target, Collection):
            return self.collection(target, options, self.base + "/" + target.link), "json"
        kind, value = target
        if kind == "entity":
            entity = value
            out = self.write(entity, options)
            self.expand([(entity, out)], options.expand, 0)
            return out, "json"
        if kind == "ref":
            return value, "json"
        if kind == "property":
            return value, "json"
        return value, "text"

    def landing(self) -> dict:
        return {"value": [{"name": name, "url": f"{self.base}/{name}"} for name in ENTITY_SETS],
                "serverSettings": {"conformance": CONFORMANCE}}

    # Resource paths -------------------------------------------------------------------------
    def resolve(self, path: str):
        position, current = 0, None
        link_parts: list[str] = []
        while position < len(path):
            match = _SEGMENT.match(path, position)
            if match is None or (match.end() < len(path) and path[match.end()] != "/"):
                raise not_found(f"resource path /{VERSION}/{path[:200]}")
            position = match.end() + 1
            name, raw_id = match.group("name"), match.group("id")
            entity_id = None if raw_id is None else (int(raw_id) if raw_id.isdigit()
                                                     else raw_id[1:-1].replace("''", "'"))
            current = self.step(current, name, entity_id, raw_id, link_parts)
            link_parts.append(match.group(0))
        return current

    def step(self, current, name: str, entity_id, raw_id, link_parts: list[str]):
        where = "/".join(link_parts + [name])
        if name == "$ref":
            if isinstance(current, Collection):
                return _RefCollection(current)
            if isinstance(current, tuple) and current[0] == "entity":
                return "ref", {"@iot.selfLink": self.self_link(current[1])}
            raise not_found(where)
        if name == "$value":
            if isinstance(current, tuple) and current[0] == "property":
                value = next(iter(current[1].values()))
                return "value", "" if value is None else (value if isinstance(value, str) else _json_text(value))
            raise not_found(where)
        if current is None:
            if name not in ENTITY_SETS:
                raise not_found(f"entity set {name!r} (known: {', '.join(ENTITY_SETS)})")
            collection = self.root_collection(name)
        elif isinstance(current, tuple) and current[0] == "entity":
            entity = current[1]
            navigation = NAVIGATION[entity.kind].get(name)
            if navigation is None:
                if entity_id is None and (name in entity.props or name in ("id",)):
                    key = "@iot.id" if name == "id" else name
                    return "property", {key: entity.id if name == "id" else entity.props[name]}
                raise not_found(f"{where}: a {entity.kind} has no property or navigation {name!r}")
            target_set, to_many = navigation
            collection = self.related_collection(entity, name, target_set)
            if not to_many:
                if entity_id is not None:
                    raise not_found(where)
                one = self.first(collection)
                if one is None:
                    raise not_found(where)
                return "entity", one
        else:
            raise not_found(where)
        if entity_id is None:
            return collection
        found = self.member(collection, entity_id)
        if found is None:
            raise not_found(f"{SINGULAR[collection.entity_set]} {id_literal(entity_id)}")
        return "entity", found

    def root_collection(self, name: str) -> Collection:
        if name == "Observations":
            scopes = [obs_sql.Scope(d, None, tuple(range(len(d.fields)))) for d in self.graph.datasets]
            scopes += self.created_scopes(self.graph.created("Datastreams"))
            return Collection(name, name, scopes=scopes)
        return Collection(name, name, entities=self.graph.entities(name))

    def related_collection(self, entity: Entity, nav: str, target_set: str) -> Collection:
        link = f"{self.relative(entity)}/{nav}"
        if target_set == "Observations":
            return Collection(target_set, link, scopes=self.observation_scopes([entity]))
        return Collection(target_set, link, entities=self.graph.related(entity, nav))

    def observation_scopes(self, parents: list[Entity]) -> list[obs_sql.Scope]:
        """Where the Observations of these Datastreams (or one FeatureOfInterest) are, per dataset."""
        scopes: dict[str, tuple[Any, set[str], set[int]]] = {}
        result = []
        result += self.created_scopes([parent for parent in parents
                                       if parent.kind == "Datastream" and parent.extra.get("created")])
        for parent in parents:
            if parent.extra.get("created"):
                if parent.kind == "FeatureOfInterest":
                    streams = [d for d in self.graph.created("Datastreams") if d.extra["store"] == parent.extra["store"]]
                    result += [replace(scope, feature=parent.id) for scope in self.created_scopes(streams)]
                continue
            if parent.kind == "Datastream":
                entry = scopes.setdefault(parent.dataset.ref, (parent.dataset, set(), set()))
                entry[1].add(parent.sensor.sensor_id)
                entry[2].add(parent.field_index)
            elif parent.kind == "FeatureOfInterest":
                # Events without a position belong to the sensor's current place (graph.observation_feature).
                position, current = parent.position, parent.sensor.current
                result.append(obs_sql.Scope(parent.dataset, (parent.sensor.sensor_id,),
                                            tuple(range(len(parent.dataset.fields))),
                                            position=None if position is None else (position.lon, position.lat),
                                            without_position=position is None or position == current))
        for dataset, sensors, fields in scopes.values():
            result.append(obs_sql.Scope(dataset, tuple(sorted(sensors)), tuple(sorted(fields))))
        return result

    def created_scopes(self, streams: list[Entity]) -> list[obs_sql.Scope]:
        """The Observations of created Datastreams: one scope per store (municipality)."""
        by_store: dict[str, tuple[Any, list[str]]] = {}
        for stream in streams:
            store = stream.extra["store"]
            if store.observations is not None:
                by_store.setdefault(store.owner, (store.observations, []))[1].append(str(stream.id))
        return [obs_sql.Scope(dataset, tuple(sorted(ids)), (0,), created=True)
                for dataset, ids in by_store.values()]

    def member(self, collection: Collection, entity_id) -> Entity | None:
        if collection.entity_set != "Observations":
            return next((e for e in collection.entities if e.id == entity_id), None) \
                if collection.link != collection.entity_set else self.graph.get(collection.entity_set, entity_id)
        if not isinstance(entity_id, int):
            return None
        created = made.is_created_id(entity_id)
        scopes = [scope for scope in collection.scopes if scope.created == created]
        hint = None if created else self.index.observations.get(entity_id)
        if hint is not None:
            ref, sensor_id, field_index, event_id = hint
            narrowed = [obs_sql.Scope(s.dataset, (sensor_id,), (field_index,), s.position, s.without_position)
                        for s in scopes if s.dataset.ref == ref and field_index in s.fields
                        and (s.sensors is None or sensor_id in s.sensors)]
            rows = self.run_observations(narrowed, Options(), per_parent=False, top=1, skip=0,
                                         extra=("event_id = {event:String}", {"event": event_id}))
            if rows and rows[0].id == entity_id:
                return rows[0]
        # Not served by this process lately: the warehouse computes the ids of the rows in scope.
        rows = self.run_observations(scopes, Options(), per_parent=False, top=1, skip=0, observation=entity_id)
        return rows[0] if rows else None

    def first(self, collection: Collection) -> Entity | None:
        if collection.entities is not None:
            return collection.entities[0] if collection.entities else None
        rows = self.run_observations(collection.scopes, Options(), per_parent=False, top=1, skip=0)
        return rows[0] if rows else None

    # Collections ----------------------------------------------------------------------------
    def collection(self, collection: Collection, options: Options, link: str) -> dict:
        top = self.top(options.top)
        skip = self.skip(options.skip)
        out: dict[str, Any] = {}
        if collection.entity_set == "Observations":
            count = self.count_observations(collection.scopes, options) if options.count else None
            rows = self.run_observations(collection.scopes, options, per_parent=False, top=top + 1, skip=skip,
                                         extra=collection.extra)
        else:
            entities = self.filtered(collection.entities, options)
            count = len(entities) if options.count else None
            rows = entities[skip: skip + top + 1]
        more = top > 0 and len(rows) > top
        rows = rows[:top]
        if count is not None:
            out["@iot.count"] = count
        if more:
            out["@iot.nextLink"] = next_link(link, options, top, skip + top)
        if isinstance(collection, _RefCollection):
            out["value"] = [{"@iot.selfLink": self.self_link(entity)} for entity in rows]
            return out
        pairs = [(entity, self.write(entity, options)) for entity in rows]
        self.expand(pairs, options.expand, 0)
        out["value"] = [written for _, written in pairs]
        return out

    def filtered(self, entities: list[Entity], options: Options) -> list[Entity]:
        evaluator = Evaluator(self.graph, self.now)
        if options.filter is not None:
            entities = [e for e in entities if evaluator.matches(options.filter, e)]
        if options.orderby:
            order = Evaluator(self.graph, self.now, "$orderby")
            entities = sorted(entities, key=lambda e: sort_key(order, options.orderby, e))
        return entities

    def top(self, top: int | None) -> int:
        if top is None:
            return self.limits.default_top
        if top > self.limits.max_top:
            raise option_error("$top", f"at most {self.limits.max_top} entities per page, got {top}; "
                                       "follow @iot.nextLink for more")
        return top

    def skip(self, skip: int) -> int:
        if skip > self.limits.max_skip:
            raise option_error("$skip", f"at most {self.limits.max_skip}; narrow the request with $filter "
                                        "(for example on phenomenonTime)")
        return skip

    # Expansion ------------------------------------------------------------------------------
    def expand(self, pairs: list[tuple[Entity, dict]], expand: dict[str, Options], depth: int) -> None:
        if not pairs or not expand:
            return
        kind = pairs[0][0].kind
        for nav, options in expand.items():
            navigation = NAVIGATION[kind].get(nav)
            if navigation is None:
                raise option_error("$expand", f"a {kind} has no navigation property {nav!r}; it has "
                                              f"{', '.join(NAVIGATION[kind])}")
            target_set, to_many = navigation
            if target_set == "Observations":
                self.expand_observations(pairs, nav, options, depth)
                continue
            children: list[tuple[Entity, dict]] = []
            for parent, written in pairs:
                related = self.graph.related(parent, nav)
                if not to_many:
                    if related:
                        child = (related[0], self.write(related[0], options))
                        written[nav] = child[1]
                        children.append(child)
                    continue
                related = self.filtered(related, options)
                top, skip = self.top(options.top), self.skip(options.skip)
                page = related[skip: skip + top]
                if options.count:
                    written[f"{nav}@iot.count"] = len(related)
                items = [(child, self.write(child, options)) for child in page]
                written[nav] = [item for _, item in items]
                if top and len(related) > skip + top:
                    written[f"{nav}@iot.nextLink"] = next_link(f"{self.self_link(parent)}/{nav}", options, top,
                                                               skip + top)
                children.extend(items)
            by_kind: dict[str, list] = {}
            for child in children:
                by_kind.setdefault(child[0].kind, []).append(child)
            for group in by_kind.values():
                self.expand(group, options.expand, depth + 1)

    def expand_observations(self, pairs: list[tuple[Entity, dict]], nav: str, options: Options, depth: int) -> None:
        top, skip = self.top(options.top), self.skip(options.skip)
        parents = [parent for parent, _ in pairs]
        scopes = self.observation_scopes(parents)
        if parents[0].kind == "FeatureOfInterest":
            results = {}
            for parent in parents:
                results[parent.id] = self.run_observations(self.observation_scopes([parent]), options,
                                                           per_parent=False, top=top + 1, skip=skip)
        else:
            rows = self.run_observations(scopes, options, per_parent=True, top=top + 1, skip=skip)
            results: dict[Any, list[Entity]] = {}
            for row in rows:
                results.setdefault(row.extra["datastream"], []).append(row)
        counts = self.count_per_datastream(scopes, options) if options.count and parents[0].kind == "Datastream" \
            else {}
        children = []
        for parent, written in pairs:
            found = results.get(parent.id, [])
            if options.count:
                written[f"{nav}@iot.count"] = counts.get(parent.id, 0) if counts else len(found)
            items = [(child, self.write(child, options)) for child in found[:top]]
            written[nav] = [item for _, item in items]
            if len(found) > top:
                written[f"{nav}@iot.nextLink"] = next_link(f"{self.self_link(parent)}/{nav}", options, top,
                                                           skip + top)
            children.extend(items)
        self.expand(children, options.expand, depth + 1)

    # Observations ---------------------------------------------------------------------------
    def run_observations(self, scopes: list[obs_sql.Scope], options: Options, *, per_parent: bool, top: int,
                         skip: int, extra: tuple[str, dict[str, Any]] | None = None,
                         observation: int | None = None) -> list[Entity]:
        scopes, options = self.narrow(scopes, options)
        if not scopes or top <= 0:
            return []
        cutoff = self.latest_window(scopes, options) if per_parent else None
        if cutoff is None:
            rows = self.query_observations(scopes, options, per_parent, top, skip, extra, observation)
            return [self.observation(scopes[row[0]], row) for row in rows]
        # The latest Observations of many Datastreams ($orderby=phenomenonTime desc): first only those
        # since a day before the oldest of their last readings; a Datastream that got fewer than it asked
        # for there and has older readings is read again in full.
        windowed = ("observed_at >= {cutoff:DateTime64(3, 'UTC')}", {"cutoff": cutoff})
        rows = self.query_observations(scopes, options, per_parent, top, skip, windowed, observation)
        got: dict[tuple[int, str, int], int] = {}
        for row in rows:
            got[(row[0], row[1], row[6])] = got.get((row[0], row[1], row[6]), 0) + 1
        again: dict[int, set[str]] = {}
        for key, scope in enumerate(scopes):
            sensors = self.graph.sensors.get(scope.dataset.ref, {})
            for sensor_id in scope.sensors if scope.sensors is not None else sensors:
                spans = sensors[sensor_id].fields
                for fi in scope.fields:
                    span = spans[fi] if fi < len(spans) else None
                    if span is not None and span.first < cutoff and got.get((key, sensor_id, fi), 0) < top:
                        again.setdefault(key, set()).add(sensor_id)
        if again:
            keys = sorted(again)
            narrowed = [obs_sql.Scope(scopes[k].dataset, tuple(sorted(again[k])), scopes[k].fields, scopes[k].position,
                                      scopes[k].without_position) for k in keys]
            full = self.query_observations(narrowed, options, per_parent, top, skip, None, observation)
            redone = {(keys[row[0]], row[1]) for row in full}
            rows = [row for row in rows if (row[0], row[1]) not in redone and not
                    (row[0] in again and row[1] in again[row[0]])]
            rows += [(keys[row[0]], *row[1:]) for row in full]
        if len(rows) > self.limits.max_written:
            raise self.too_many()
        return [self.observation(scopes[row[0]], row) for row in rows]

    def narrow(self, scopes: list[obs_sql.Scope], options: Options) -> tuple[list[obs_sql.Scope], Options]:
        """Conditions of an Observations filter on its Datastream (``Datastream/@iot.id eq 7``,
        ``Datastream/properties/field eq 'pedestrians'``, joined to the rest with ``and``) are decided
        in memory for each Datastream in scope; the scopes shrink to the Datastreams that match, and the
        rest of the filter goes to the warehouse."""
        if options.filter is None or not _mentions_datastream(options.filter):
            return scopes, options
        streams, rest = [], []
        for part in _conjuncts(options.filter):
            mentions = _mentions_datastream(part)
            if mentions and _mentions_observation(part):
                raise option_error("$filter", "a condition may name the Datastream or the Observation's own "
                                              "properties, not both; join such conditions with 'and'")
            (streams if mentions else rest).append(_strip_datastream(part) if mentions else part)
        evaluator = Evaluator(self.graph, self.now)
        narrowed: list[obs_sql.Scope] = []
        for scope in scopes:
            if scope.created:
                matching_ids = tuple(sensor for sensor in scope.sensors or ()
                                     if (stream := self.graph.get("Datastreams", int(sensor))) is not None
                                     and all(evaluator.matches(part, stream) for part in streams))
                if matching_ids:
                    narrowed.append(replace(scope, sensors=matching_ids))
                continue
            sensors = self.graph.sensors.get(scope.dataset.ref, {})
            groups: dict[tuple[int, ...], list[str]] = {}
            for sensor_id in scope.sensors if scope.sensors is not None else sensors:
                matching = tuple(fi for fi in scope.fields
                                 if (stream := self.graph.datastream_of(scope.dataset, sensor_id, fi)) is not None
                                 and all(evaluator.matches(part, stream) for part in streams))
                if matching:
                    groups.setdefault(matching, []).append(sensor_id)
            for fields, sensor_ids in groups.items():
                narrowed.append(obs_sql.Scope(scope.dataset, tuple(sorted(sensor_ids)), fields, scope.position,
                                              scope.without_position))
        if len(narrowed) > MAX_SCOPES:
            raise option_error("$filter", f"the Datastream conditions select {len(narrowed)} groups of "
                                          f"Datastreams (at most {MAX_SCOPES}); name fewer, for example "
                                          "by Datastream/@iot.id or Datastream/properties/dataset")
        remaining = None
        for part in rest:
            remaining = part if remaining is None else Binary("and", remaining, part)
        return narrowed, replace(options, filter=remaining)

    def latest_window(self, scopes: list[obs_sql.Scope], options: Options) -> datetime | None:
        """For Observations sorted newest first: a time before which none of the requested ones is
        likely to lie (a day before the oldest last reading of the Datastreams); None when unsure."""
        if not options.orderby:
            return None
        first = options.orderby[0].expression
        if not (options.orderby[0].descending and isinstance(first, Path)
                and first.segments in (("phenomenonTime",), ("resultTime",))):
            return None
        lasts = []
        for scope in scopes:
            sensors = self.graph.sensors.get(scope.dataset.ref)
            if sensors is None or scope.sensors is None:
                return None
            for sensor_id in scope.sensors:
                if sensor_id not in sensors:
                    return None
                spans = sensors[sensor_id].fields
                lasts += [spans[fi].last for fi in scope.fields if fi < len(spans) and spans[fi] is not None]
        return min(lasts) - LATEST_WINDOW if lasts else None

    def query_observations(self, scopes: list[obs_sql.Scope], options: Options, per_parent: bool, top: int,
                           skip: int, extra: tuple[str, dict[str, Any]] | None,
                           observation: int | None) -> list[tuple]:
        params: dict[str, Any] = {}
        translator = obs_sql.Translator(params, self.now)
        condition = translator.condition(options.filter) if options.filter is not None else None
        order = translator.order(options.orderby) or ["observed_at"]
        if extra is not None:
            condition = f"({condition}) AND {extra[0]}" if condition else extra[0]
            params.update(extra[1])
        union = " UNION ALL ".join(obs_sql.scope_sql(scope, key, params, condition, observation)
                                   for key, scope in enumerate(scopes))
        order_sql = ", ".join(order + obs_sql.TIE_BREAK)
        params["top"], params["skip"] = top, skip
        if per_parent:
            params["cap"] = self.limits.max_written + 1
            sql = (f"SELECT * FROM ({union}) ORDER BY {order_sql} LIMIT {{skip:UInt64}}, {{top:UInt32}} "
                   f"BY ds, sensor_id, fi LIMIT {{cap:UInt32}}")
        else:
            sql = f"SELECT * FROM ({union}) ORDER BY {order_sql} LIMIT {{top:UInt32}} OFFSET {{skip:UInt64}}"
        rows = self.engine._run("sta_observations", sql, params)
        if len(rows) > self.limits.max_written:
            raise self.too_many()
        return rows

    def count_observations(self, scopes: list[obs_sql.Scope], options: Options) -> int:
        scopes, options = self.narrow(scopes, options)
        if not scopes:
            return 0
        params: dict[str, Any] = {}
        translator = obs_sql.Translator(params, self.now)
        condition = translator.condition(options.filter) if options.filter is not None else None
        union = " UNION ALL ".join(obs_sql.scope_sql(s, k, params, condition) for k, s in enumerate(scopes))
        return int(self.engine._run("sta_count", f"SELECT count() FROM ({union})", params)[0][0])

    def count_per_datastream(self, scopes: list[obs_sql.Scope], options: Options) -> dict[int, int]:
        scopes, options = self.narrow(scopes, options)
        if not scopes:
            return {}
        params: dict[str, Any] = {}
        translator = obs_sql.Translator(params, self.now)
        condition = translator.condition(options.filter) if options.filter is not None else None
        union = " UNION ALL ".join(obs_sql.scope_sql(s, k, params, condition) for k, s in enumerate(scopes))
        rows = self.engine._run("sta_count", f"SELECT ds, sensor_id, fi, count() FROM ({union}) "
                                             "GROUP BY ds, sensor_id, fi", params)
        return {int(sensor) if scopes[ds].created else
                stable_id("Datastream", scopes[ds].dataset.ref, sensor, scopes[ds].dataset.fields[fi].name): count
                for ds, sensor, fi, count in rows}

    def observation(self, scope: obs_sql.Scope, row: tuple) -> Entity:
        if scope.created:
            return made.observation(self.graph.store_of(scope.dataset.owner), row)
        _, sensor_id, event_id, observed_at, lon, lat, fi, _num, text, _result_time, _doc = row
        dataset = scope.dataset
        info = dataset.fields[fi]
        at = _utc(observed_at)
        sensor = self.graph.sensors.get(dataset.ref, {}).get(sensor_id) or SensorInfo(sensor_id, at, at, ())
        entity = observation_entity(dataset.ref, sensor_id, info.name, info.type, event_id, at, text, lon, lat)
        entity.dataset, entity.sensor, entity.field, entity.field_index = dataset, sensor, info, fi
        self.index.observations[entity.id] = (dataset.ref, sensor_id, fi, event_id)
        return entity

    # Writing --------------------------------------------------------------------------------
    def relative(self, entity: Entity) -> str:
        return f"{PLURAL[entity.kind]}({id_literal(entity.id)})"

    def self_link(self, entity: Entity) -> str:
        return f"{self.base}/{self.relative(entity)}"

    def too_many(self) -> QueryError:
        return QueryError(422, "query_too_expensive", f"the answer would hold more than {self.limits.max_written} "
                                                      "entities; use smaller $top values in $expand")

    def write(self, entity: Entity, options: Options) -> dict:
        self.written += 1
        if self.written > self.limits.max_written:
            raise self.too_many()
        return document(self.base, entity, options.select)


def document(base: str, entity: Entity, select=None) -> dict:
    """An entity as the API writes it (``select``: the names of ``$select``, None for all).
    The MQTT publisher writes the Observations it sends with this too."""
    link = f"{base}/{PLURAL[entity.kind]}({id_literal(entity.id)})"
    out: dict[str, Any] = {}
    if select is None or "@iot.selfLink" in select:
        out["@iot.selfLink"] = link
    if select is None or "@iot.id" in select:
        out["@iot.id"] = entity.id
    for name, value in entity.props.items():
        if select is None or name in select:
            out[name] = value
    for nav in NAVIGATION[entity.kind]:
        if select is None or nav in select:
            out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
    if select is not None:
        known = {"@iot.id", "@iot.selfLink", *entity.props, *NAVIGATION[entity.kind]}
        unknown = [name for name in select if name not in known]
        if unknown:
            raise option_error("$select", f"a {entity.kind} has no property {unknown[0]!r}")
    return out


MAX_SCOPES = 64   # groups of Datastreams (dataset × same fields) one Observations query may read


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, Binary) and node.op == "and":
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def _paths(node: Node):
    if isinstance(node, Path):
        yield node
    elif isinstance(node, Binary):
        yield from _paths(node.left)
        yield from _paths(node.right)
    elif isinstance(node, Unary):
        yield from _paths(node.operand)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from _paths(arg)


def _mentions_datastream(node: Node) -> bool:
    return any(path.segments[0] == "Datastream" for path in _paths(node))


def _mentions_observation(node: Node) -> bool:
    return any(path.segments[0] != "Datastream" for path in _paths(node))


def _strip_datastream(node: Node) -> Node:
    """The condition as seen from the Datastream: ``Datastream/name`` → ``name``."""
    if isinstance(node, Path):
        if len(node.segments) < 2:
            raise option_error("$filter", "name a property of the Datastream, such as Datastream/@iot.id")
        return Path(node.segments[1:])
    if isinstance(node, Binary):
        return Binary(node.op, _strip_datastream(node.left), _strip_datastream(node.right))
    if isinstance(node, Unary):
        return Unary(node.op, _strip_datastream(node.operand))
    if isinstance(node, Call):
        return Call(node.name, tuple(_strip_datastream(arg) for arg in node.args))
    return node


class _RefCollection(Collection):
    def __init__(self, inner: Collection):
        super().__init__(inner.entity_set, inner.link, inner.entities, inner.scopes, inner.extra)
        self.refs = True


def observation_entity(dataset_ref: str, sensor_id: str, field_name: str, field_type: str, event_id: str,
                       observed_at: datetime, text: str | None, lon=None, lat=None) -> Entity:
    """One Observation: a field's value (``text``, as the warehouse writes it) of one event."""
    stamp = format_time(observed_at)
    props = {"phenomenonTime": stamp, "resultTime": stamp, "result": _result(field_type, text),
             "parameters": {"eventId": event_id}}
    position = None if lon is None or lat is None else (float(lon), float(lat))
    return Entity("Observation", observation_id(dataset_ref, sensor_id, field_name, event_id), props,
                  extra={"datastream": stable_id("Datastream", dataset_ref, sensor_id, field_name),
                         "position": position, "time": observed_at})


def _result(column_type: str, text: str | None) -> Any:
    if text is None:
        return None
    if column_type.startswith(("UInt", "Int")):
        return int(text)
    if column_type.startswith("Float"):
        value = float(text)
        return value if math.isfinite(value) else None
    if column_type == "Bool":
        return text == "true"
    return text


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def next_link(link: str, options: Options, top: int, skip: int) -> str:
    """The next page. ``$top`` only when the caller gave one: clients (Masterportal) read a link
    with ``$top`` ≤ ``$skip`` as "the caller asked for only that many" and do not follow it; the
    page size without ``$top`` stays the server's."""
    parts = ([f"$top={top}"] if options.top is not None else []) + [f"$skip={skip}"]
    for name in ("$filter", "$orderby", "$select", "$expand", "$count"):
        if name in options.raw:
            parts.append(f"{name}={quote(options.raw[name], safe=_SAFE)}")
    return f"{link}?{'&'.join(parts)}"


_SAFE = "()',/:$@*=;"


def run(engine: QueryEngine, index: SensorIndex, limits: StaLimits, principal: Principal | None, base: str,
        path: str, raw_query: str) -> tuple[Any, str]:
    """One request within the engine's time budget (shared by all its warehouse queries)."""
    token = request_deadline.set(time.monotonic() + engine.limits.query_timeout_seconds)
    try:
        request = Request(engine, index, limits, principal, base)
        return request.answer(path, raw_query)
    finally:
        request_deadline.reset(token)
