"""Observations are read from the dataset tables: one query per request (or per expansion),
run by the API's engine with its limits, over the datasets the caller may read.

Each dataset table becomes rows of (sensor, field, event): ``ARRAY JOIN`` turns the fields
asked for into one row each, with the value twice — as ``Nullable(Float64)`` (``num``, for
comparisons and sorting) and as ClickHouse writes it (``txt``, exact, which the answer is
built from). Every read is ``FINAL`` (the latest copy of an event counts once), as in the
REST API.

``$filter`` and ``$orderby`` on Observations are translated here into SQL. Values the
caller sends are never written into the SQL text: every literal becomes a bound parameter
(``{p3:Float64}``); column names come from a fixed list. Parts of a condition that name no
property (``now() sub duration'PT24H'``) are computed once in Python and bound as one value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..catalogue import DatasetInfo
from ..query import _quote, _table
from .evaluate import Evaluator, geometry
from .graph import ID_BITS, OBSERVATION_PREFIX, SEPARATOR
from .options import Binary, Call, Geometry, Node, OrderBy, Path, Unary, option_error

OPTION = "$filter"


@dataclass(frozen=True)
class Scope:
    """Observations of some Datastreams of one dataset: ``sensors`` (None: all) × ``fields``
    (indexes into ``dataset.fields``), optionally only those at one position (a FeatureOfInterest)."""
    dataset: DatasetInfo
    sensors: tuple[str, ...] | None
    fields: tuple[int, ...]
    position: tuple[float, float] | None = None
    without_position: bool = False   # with position: also the events that have none (the sensor's current place)
    created: bool = False            # Observations of created Datastreams (``sensors``: their ids), see created_sql
    feature: int | None = None       # created: only those of this FeatureOfInterest


def _has_path(node: Node) -> bool:
    if isinstance(node, Path):
        return True
    if isinstance(node, Binary):
        return _has_path(node.left) or _has_path(node.right)
    if isinstance(node, Unary):
        return _has_path(node.operand)
    if isinstance(node, Call):   # functions without arguments (now(), ...) are constants
        return any(_has_path(a) for a in node.args)
    return False


class _Sql:
    """A translated expression: its SQL and what kind of value it is."""
    __slots__ = ("text", "kind")

    def __init__(self, text: str, kind: str):
        self.text, self.kind = text, kind    # kind: time num str bool null result geo duration


_COMPARE = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ARITHMETIC = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}
_TIME_PARTS = {"year": "toYear", "month": "toMonth", "day": "toDayOfMonth", "hour": "toHour",
               "minute": "toMinute", "second": "toSecond"}


class Translator:
    """``$filter``/``$orderby`` of Observations → SQL over the columns of :func:`scope_sql`."""

    def __init__(self, params: dict[str, Any], now: datetime):
        self.params = params
        self.folder = Evaluator(None, now, OPTION)

    def bind(self, value: Any) -> _Sql:
        if value is None:
            return _Sql("NULL", "null")
        name = f"f{len(self.params)}"
        if isinstance(value, bool):
            self.params[name] = value
            return _Sql(f"{{{name}:Bool}}", "bool")
        if isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise option_error(OPTION, "numbers must be finite")
            self.params[name] = float(value)
            return _Sql(f"{{{name}:Float64}}", "num")
        if isinstance(value, str):
            self.params[name] = value
            return _Sql(f"{{{name}:String}}", "str")
        if isinstance(value, datetime):
            self.params[name] = value
            return _Sql(f"{{{name}:DateTime64(3, 'UTC')}}", "time")
        if isinstance(value, timedelta):
            self.params[name] = int(value.total_seconds() * 1000)
            return _Sql(f"toIntervalMillisecond({{{name}:Int64}})", "duration")
        if isinstance(value, Geometry):
            return _Sql("", "geo:" + value.wkt)
        raise option_error(OPTION, f"cannot use a {type(value).__name__} value here")

    def condition(self, node: Node) -> str:
        result = self.expression(node)
        if result.kind == "bool":
            return result.text
        if result.kind == "null":
            return "0"
        raise option_error(OPTION, "must be a condition (a comparison, a function such as startswith(), "
                                   "or conditions joined with and/or)")

    def expression(self, node: Node) -> _Sql:
        if not _has_path(node):
            return self.bind(self.folder.value(node, None))
        if isinstance(node, Path):
            return self.path(node.segments)
        if isinstance(node, Unary):
            operand = self.expression(node.operand)
            if node.op == "not":
                return _Sql(f"NOT ({self._bool(operand)})", "bool")
            return _Sql(f"-({self._number(operand)})", "num")
        if isinstance(node, Binary):
            if node.op in ("and", "or"):
                return _Sql(f"({self._bool(self.expression(node.left))} {node.op.upper()} "
                            f"{self._bool(self.expression(node.right))})", "bool")
            left, right = self.expression(node.left), self.expression(node.right)
            if node.op in _COMPARE:
                return self.compare(node.op, left, right)
            return self.arithmetic(node.op, left, right)
        if isinstance(node, Call):
            return self.call(node)
        raise TypeError(node)

    def path(self, segments: tuple[str, ...]) -> _Sql:
        name = "/".join(segments)
        if name == "phenomenonTime":
            return _Sql("observed_at", "time")
        if name == "resultTime":
            return _Sql("result_time", "time")
        if name == "result":
            return _Sql("", "result")
        if name in ("@iot.id", "id"):
            return _Sql(OBSERVATION_ID, "num")   # replaced per dataset by scope_sql
        if name in ("validTime", "resultQuality"):
            return _Sql("NULL", "null")
        if name == "parameters/eventId":
            return _Sql("event_id", "str")
        if name == "parameters/source":
            return _Sql("toString(source)", "str")
        if name in ("FeatureOfInterest/feature", "FeatureOfInterest/location"):
            return _Sql("", "position")
        raise option_error(OPTION, f"{name}: conditions on Observations can use phenomenonTime, resultTime, "
                                   "result, @iot.id, parameters/eventId, parameters/source, FeatureOfInterest/feature, "
                                   "and, joined with 'and', properties of the Datastream (Datastream/@iot.id, ...)")

    def _bool(self, value: _Sql) -> str:
        if value.kind == "bool":
            return value.text
        if value.kind == "null":
            return "0"
        raise option_error(OPTION, "'and', 'or' and 'not' need conditions on both sides")

    def _number(self, value: _Sql) -> str:
        if value.kind == "result":
            return "num"
        if value.kind == "num":
            return value.text
        raise option_error(OPTION, f"arithmetic needs numbers, got {_described(value)}")

    def compare(self, op: str, left: _Sql, right: _Sql) -> _Sql:
        symbol = _COMPARE[op]
        kinds = {left.kind, right.kind}
        if "null" in kinds:
            other = right if left.kind == "null" else left
            if other.kind == "null":
                return _Sql("1" if op in ("eq", "ge", "le") else "0", "bool")
            column = "txt" if other.kind == "result" else other.text
            if op == "eq":
                return _Sql(f"({column} IS NULL)", "bool")
            if op == "ne":
                return _Sql(f"({column} IS NOT NULL)", "bool")
            return _Sql("0", "bool")
        if "result" in kinds:
            other = right if left.kind == "result" else left
            column = {"num": "num", "str": "txt", "result": "txt"}.get(other.kind)
            if other.kind == "bool":
                column, other = "txt", _Sql(f"if({other.text}, 'true', 'false')", "str")
            if column is None:
                raise option_error(OPTION, f"result can be compared with numbers, text and true/false, "
                                           f"not with {_described(other)}")
            left_sql = column if left.kind == "result" else other.text
            right_sql = column if right.kind == "result" else other.text
            return _Sql(f"({left_sql} {symbol} {right_sql})", "bool")
        if left.kind != right.kind:
            raise option_error(OPTION, f"cannot compare {_described(left)} with {_described(right)}")
        if left.kind in ("geo", "position") or left.kind.startswith("geo:"):
            raise option_error(OPTION, "geometries are compared with st_equals(), st_within(), ...")
        return _Sql(f"({left.text} {symbol} {right.text})", "bool")

    def arithmetic(self, op: str, left: _Sql, right: _Sql) -> _Sql:
        if left.kind == "time" and right.kind == "duration" and op in ("add", "sub"):
            return _Sql(f"({left.text} {_ARITHMETIC[op]} {right.text})", "time")
        left_sql, right_sql = self._number(left), self._number(right)
        if op == "mod":
            return _Sql(f"modulo({left_sql}, {right_sql})", "num")
        if op == "div":
            return _Sql(f"({left_sql} / nullIf({right_sql}, 0))", "num")
        return _Sql(f"({left_sql} {_ARITHMETIC[op]} {right_sql})", "num")

    def _text(self, value: _Sql) -> str:
        if value.kind == "result":
            return "txt"
        if value.kind == "str":
            return value.text
        raise option_error(OPTION, f"text functions need text, got {_described(value)}")

    def call(self, node: Call) -> _Sql:
        name = node.name
        if name.startswith(("st_", "geo.")):
            return self.geo(node)
        args = [self.expression(arg) for arg in node.args]
        if name in ("substringof", "contains", "startswith", "endswith", "indexof", "concat"):
            a, b = (self._text(args[0]), self._text(args[1]))
            sql = {"substringof": f"(position({b}, {a}) > 0)", "contains": f"(position({a}, {b}) > 0)",
                   "startswith": f"startsWith({a}, {b})", "endswith": f"endsWith({a}, {b})",
                   "indexof": f"(positionUTF8({a}, {b}) - 1)", "concat": f"concat({a}, {b})"}[name]
            kind = {"indexof": "num", "concat": "str"}.get(name, "bool")
            return _Sql(sql, kind)
        if name in ("length", "tolower", "toupper", "trim"):
            a = self._text(args[0])
            sql = {"length": f"lengthUTF8({a})", "tolower": f"lowerUTF8({a})", "toupper": f"upperUTF8({a})",
                   "trim": f"trimBoth({a})"}[name]
            return _Sql(sql, "num" if name == "length" else "str")
        if name == "substring":
            a = self._text(args[0])
            start = self._number(args[1])
            if len(args) == 3:
                return _Sql(f"substringUTF8({a}, toInt64({start}) + 1, toInt64({self._number(args[2])}))", "str")
            return _Sql(f"substringUTF8({a}, toInt64({start}) + 1)", "str")
        if name in _TIME_PARTS:
            if args[0].kind != "time":
                raise option_error(OPTION, f"{name}() needs a time such as phenomenonTime")
            return _Sql(f"{_TIME_PARTS[name]}({args[0].text}, 'UTC')", "num")
        if name in ("round", "floor", "ceiling"):
            function = {"round": "round", "floor": "floor", "ceiling": "ceil"}[name]
            return _Sql(f"{function}({self._number(args[0])})", "num")
        raise option_error(OPTION, f"{name}() is not supported on Observations yet")

    def geo(self, node: Node) -> _Sql:
        """st_within/st_intersects/geo.intersects of the observation's position and a polygon."""
        if node.name not in ("st_within", "st_intersects", "geo.intersects", "st_contains") or len(node.args) != 2:
            raise option_error(OPTION, f"{node.name}() on Observations is not supported yet; st_within and "
                                       "st_intersects with FeatureOfInterest/feature and a geography'POLYGON(...)' are")
        first, second = (self.expression(arg) for arg in node.args)
        if node.name == "st_contains":
            first, second = second, first
        if first.kind != "position" or not second.kind.startswith("geo:"):
            raise option_error(OPTION, f"{node.name}() on Observations needs FeatureOfInterest/feature and a "
                                       "geography'POLYGON(...)' literal")
        shape = geometry(Geometry(second.kind[4:]))
        polygons = list(getattr(shape, "geoms", [shape]))
        if not all(p.geom_type == "Polygon" for p in polygons):
            raise option_error(OPTION, f"{node.name}() on Observations takes a POLYGON or MULTIPOLYGON")
        tests = []
        for polygon in polygons:
            rings = [polygon.exterior, *polygon.interiors]
            bound = []
            for ring in rings:
                name = f"f{len(self.params)}"
                self.params[name] = [(float(x), float(y)) for x, y, *_ in ring.coords]
                bound.append(f"{{{name}:Array(Tuple(Float64, Float64))}}")
            tests.append(f"pointInPolygon((lon, lat), {', '.join(bound)})")
        return _Sql(f"(lon IS NOT NULL AND lat IS NOT NULL AND ({' OR '.join(tests)}))", "bool")

    def order(self, orderby: tuple[OrderBy, ...]) -> list[str]:
        keys = []
        for item in orderby:
            direction = " DESC" if item.descending else ""
            node = item.expression
            if isinstance(node, Path) and "/".join(node.segments) in ("@iot.id", "id"):
                keys += [f"ds{direction}", f"sensor_id{direction}", f"fi{direction}", f"event_id{direction}"]
                continue
            value = self.expression(node)
            if value.kind == "result":
                keys += [f"num{direction}", f"txt{direction}"]
            elif value.kind in ("time", "num", "str", "bool"):
                keys.append(f"{value.text}{direction}")
            elif value.kind != "null":
                raise option_error("$orderby", "can sort Observations by phenomenonTime, resultTime, result, "
                                               "parameters/eventId and @iot.id")
        return keys


def _described(value: _Sql) -> str:
    return {"time": "a time", "num": "a number", "str": "text", "bool": "a condition", "null": "null",
            "result": "result", "duration": "a duration", "position": "a position"}.get(
        value.kind, "a geometry")


def observation_id_sql(scope: Scope, key: int, params: dict[str, Any]) -> str:
    """The warehouse's side of :func:`.graph.observation_id` for the rows of :func:`scope_sql`."""
    dataset = scope.dataset
    params["sep"] = SEPARATOR
    params[f"prefix{key}"] = f"{OBSERVATION_PREFIX}{SEPARATOR}{dataset.ref}{SEPARATOR}"
    params[f"names{key}"] = [info.name for info in dataset.fields]
    return (f"bitAnd(reinterpretAsUInt64(reverse(substring(MD5(concat({{prefix{key}:String}}, sensor_id, "
            f"{{sep:String}}, arrayElement({{names{key}:Array(String)}}, fi + 1), {{sep:String}}, event_id)), 1, 8))), "
            f"{(1 << ID_BITS) - 1})")


def scope_sql(scope: Scope, key: int, params: dict[str, Any], condition: str | None = None,
              observation: int | None = None) -> str:
    """One dataset's Observations as rows ``ds, sensor_id, event_id, observed_at, lon, lat, fi, num, txt,
    result_time, doc``."""
    if scope.created:
        return created_sql(scope, key, params, condition, observation)
    dataset = scope.dataset
    indexes, numbers, texts = [], [], []
    for index in scope.fields:
        info = dataset.fields[index]
        column = _quote(info.name)
        indexes.append(str(index))
        numeric = info.numeric
        numbers.append(f"CAST({column}, 'Nullable(Float64)')" if numeric else "CAST(NULL, 'Nullable(Float64)')")
        texts.append(f"CAST(toString({column}), 'Nullable(String)')")
    where = ["txt IS NOT NULL"]
    if scope.sensors is not None:
        name = f"s{key}"
        params[name] = list(scope.sensors)
        where.append(f"sensor_id IN {{{name}:Array(String)}}")
    unplaced = "lon IS NULL OR lat IS NULL"
    if scope.position is not None:
        params[f"lon{key}"], params[f"lat{key}"] = scope.position
        placed = f"lon = {{lon{key}:Float64}} AND lat = {{lat{key}:Float64}}"
        where.append(f"({placed} OR {unplaced})" if scope.without_position else f"({placed})")
    elif scope.without_position:
        where.append(f"({unplaced})")
    if condition:
        if OBSERVATION_ID in condition:
            condition = condition.replace(OBSERVATION_ID, observation_id_sql(scope, key, params))
        where.append(condition)
    if observation is not None:
        params["oid"] = observation
        where.append(f"{observation_id_sql(scope, key, params)} = {{oid:UInt64}}")
    return (f"SELECT {key} AS ds, sensor_id, event_id, observed_at, lon, lat, fi, num, txt, "
            f"CAST(observed_at, 'Nullable(DateTime64(3, \\'UTC\\'))') AS result_time, "
            f"CAST(NULL, 'Nullable(String)') AS doc FROM {_table(dataset)} FINAL ARRAY JOIN [{', '.join(indexes)}] AS fi, [{', '.join(numbers)}] AS num, "
            f"[{', '.join(texts)}] AS txt WHERE {' AND '.join(where)}")


TIE_BREAK = ["ds", "sensor_id", "fi", "observed_at", "event_id"]
# Stands for the Observation's id in a translated condition; only this module writes condition text.
OBSERVATION_ID = "__observation_id__"


# The columns of a created Observation's latest version, in the order of the tuple ``s`` below.
_CREATED = ("datastream", "deleted", "observed_at", "lon", "lat", "result_number", "result_text", "result",
            "phenomenon_end", "result_time", "valid_time", "parameters", "result_quality", "feature", "version")
_DOCUMENT = ("result Nullable(String), phenomenon_end Nullable(String), result_time Nullable(String), "
             "valid_time Nullable(String), parameters Nullable(String), result_quality Nullable(String), "
             "feature Nullable(UInt64), version UInt64")


def created_sql(scope: Scope, key: int, params: dict[str, Any], condition: str | None = None,
                observation: int | None = None) -> str:
    """Observations of created Datastreams (``scope.sensors``: their ids as text; ``None``: none) in the
    rows of :func:`scope_sql`: per Observation its version with the highest ``(version, event_id)``,
    tombstones left out; ``sensor_id`` is the Datastream's id, ``event_id`` the Observation's, ``doc``
    what only created Observations have (as JSON)."""
    table = _table(scope.dataset)
    streams = f"ids{key}"
    params[streams] = [int(s) for s in scope.sensors or ()]
    picked = ", ".join(_CREATED)
    doc = f"toJSONString(CAST(tuple(s.8, s.9, s.10, s.11, s.12, s.13, s.14, s.15), 'Tuple({_DOCUMENT})'))"
    where = ["NOT s.2", f"s.1 IN {{{streams}:Array(UInt64)}}"]
    if scope.feature is not None:
        params[f"foi{key}"] = scope.feature
        where.append(f"s.14 = {{foi{key}:UInt64}}")
    if condition:   # created Observations have no source: parameters/source is empty for them
        where.append(condition.replace(OBSERVATION_ID, "oid").replace("toString(source)", "''"))
    if observation is not None:
        params["oid"] = observation
        where.append("oid = {oid:UInt64}")
    return (f"SELECT {key} AS ds, toString(s.1) AS sensor_id, toString(oid) AS event_id, s.3 AS observed_at, "
            f"s.4 AS lon, s.5 AS lat, toUInt8(0) AS fi, s.6 AS num, s.7 AS txt, "
            f"parseDateTime64BestEffortOrNull(s.10, 3, 'UTC') AS result_time, {doc} AS doc "
            f"FROM (SELECT observation AS oid, argMax(({picked}), (version, event_id)) AS s FROM {table} FINAL "
            f"WHERE observation IN (SELECT observation FROM {table} WHERE datastream IN "
            f"{{{streams}:Array(UInt64)}}) GROUP BY observation) WHERE {' AND '.join(where)}")
