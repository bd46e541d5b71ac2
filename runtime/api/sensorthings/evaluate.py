"""``$filter`` and ``$orderby`` over entities held in memory (everything but Observations).

A path through a to-many navigation (``Locations/location`` of a Thing,
``Datastreams/properties/field``) yields every value along it, and a comparison holds when
it holds for any of them, as in FROST. ``now()`` is one instant per request.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable

import shapely
import shapely.wkt
from shapely.geometry import shape

from .graph import NAVIGATION, Entity, Graph
from .options import Binary, Call, Geometry, Literal, Node, Path, Unary, option_error, parse_datetime


class Many(list):
    """The values of a path through a to-many navigation."""


MAX_VALUES = 10_000   # values one path may yield for one entity


class Evaluator:
    def __init__(self, graph: Graph | None, now: datetime | None = None, option: str = "$filter"):
        self.graph = graph
        self.now = now or datetime.now(timezone.utc)
        self.option = option

    # Paths ----------------------------------------------------------------------------------
    def path(self, entity: Entity, segments: tuple[str, ...]) -> Any:
        values = [entity]
        for index, segment in enumerate(segments):
            following: list[Any] = []
            many = False
            for value in values:
                if isinstance(value, Entity):
                    result, to_many = self._step(value, segment, segments[:index + 1])
                    many = many or to_many
                    if to_many:
                        following.extend(result)
                    else:
                        following.append(result)
                elif isinstance(value, dict):
                    following.append(value.get(segment))
                else:
                    following.append(None)
                if len(following) > MAX_VALUES:
                    raise option_error(self.option, f"{'/'.join(segments)} reaches more than {MAX_VALUES} values")
            values = following
            if many:
                values = Many(values)
        if isinstance(values, Many):
            return values
        return values[0] if values else None

    def _step(self, entity: Entity, segment: str, walked: tuple[str, ...]) -> tuple[Any, bool]:
        if segment in ("@iot.id", "id"):
            return entity.id, False
        navigation = NAVIGATION[entity.kind].get(segment)
        if navigation is not None:
            if segment == "Observations":
                raise option_error(self.option, f"{'/'.join(walked)}: conditions on Observations work on "
                                                "the Observations routes (…/Observations?$filter=…), not here yet")
            related = self.graph.related(entity, segment) if self.graph else []
            return (related, True) if navigation[1] else (related[0] if related else None, False)
        if segment in entity.props:
            return entity.props[segment], False
        raise option_error(self.option, f"{'/'.join(walked)}: a {entity.kind} has no property {segment!r}")

    # Expressions ----------------------------------------------------------------------------
    def value(self, node: Node, entity: Entity | None) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Path):
            if entity is None:
                raise option_error(self.option, f"{'/'.join(node.segments)} cannot be used here")
            return self.path(entity, node.segments)
        if isinstance(node, Unary):
            operand = self.value(node.operand, entity)
            if node.op == "not":
                return _each(operand, lambda v: None if v is None else not _truth(v))
            return _each(operand, lambda v: None if v is None else -v)
        if isinstance(node, Binary):
            if node.op in ("and", "or"):
                left = _truth(self.value(node.left, entity))
                if node.op == "and" and not left:
                    return False
                if node.op == "or" and left:
                    return True
                return _truth(self.value(node.right, entity))
            left, right = self.value(node.left, entity), self.value(node.right, entity)
            return _pairs(left, right, lambda a, b: self.binary(node.op, a, b))
        if isinstance(node, Call):
            return self.call(node, entity)
        raise TypeError(node)

    def binary(self, op: str, a: Any, b: Any) -> Any:
        a, b = _coerce(a, b, self.option)
        if op == "eq":
            return a == b
        if op == "ne":
            return a != b
        if a is None or b is None:
            return None if op not in ("gt", "ge", "lt", "le") else False
        try:
            if op == "gt":
                return a > b
            if op == "ge":
                return a >= b
            if op == "lt":
                return a < b
            if op == "le":
                return a <= b
            if op == "add":
                return a + b
            if op == "sub":
                return a - b
            if op == "mul":
                return a * b
            if op == "div":
                if b == 0:
                    raise option_error(self.option, "division by zero")
                return a / b if isinstance(a, float) or isinstance(b, float) else a // b
            if op == "mod":
                if b == 0:
                    raise option_error(self.option, "modulo by zero")
                return math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else int(math.fmod(a, b))
        except TypeError:
            raise option_error(self.option, f"cannot apply {op!r} to {_kind(a)} and {_kind(b)}") from None
        raise option_error(self.option, f"unknown operator {op!r}")

    def call(self, node: Call, entity: Entity | None) -> Any:
        name = node.name
        if name == "now":
            return self.now
        if name == "mindatetime":
            return datetime(1970, 1, 1, tzinfo=timezone.utc)
        if name == "maxdatetime":
            return datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
        args = [self.value(arg, entity) for arg in node.args]
        function = _FUNCTIONS.get(name)
        if function is None:
            raise option_error(self.option, f"{name}() is not supported here yet")
        if len(args) == 1:
            return _each(args[0], lambda v: None if v is None else _apply(function, self.option, name, v))
        if len(args) == 2:
            return _pairs(args[0], args[1], lambda a, b: None if a is None or b is None
                          else _apply(function, self.option, name, a, b))
        return _apply(function, self.option, name, *args)

    def matches(self, node: Node | None, entity: Entity) -> bool:
        return node is None or _truth(self.value(node, entity))


def _apply(function: Callable, option: str, name: str, *args: Any) -> Any:
    try:
        return function(*args)
    except (TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as error:
        kinds = ", ".join(_kind(a) for a in args)
        raise option_error(option, f"{name}() cannot take ({kinds}): {str(error)[:120]}") from None


def _kind(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "text", datetime: "time",
            timedelta: "duration", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _truth(value: Any) -> bool:
    if isinstance(value, Many):
        return any(_truth(v) for v in value)
    return value is True


def _each(value: Any, function: Callable[[Any], Any]) -> Any:
    if isinstance(value, Many):
        return Many(function(v) for v in value)
    return function(value)


def _pairs(a: Any, b: Any, function: Callable[[Any, Any], Any]) -> Any:
    if isinstance(a, Many) or isinstance(b, Many):
        left = a if isinstance(a, Many) else [a]
        right = b if isinstance(b, Many) else [b]
        if len(left) * len(right) > MAX_VALUES:
            raise option_error("$filter", f"compares more than {MAX_VALUES} pairs of values")
        return Many(function(x, y) for x in left for y in right)
    return function(a, b)


def _coerce(a: Any, b: Any, option: str) -> tuple[Any, Any]:
    """Times in entity properties are ISO strings; compare them as times against a time."""
    if isinstance(a, datetime) and isinstance(b, str):
        return a, _time_of(b, option)
    if isinstance(b, datetime) and isinstance(a, str):
        return _time_of(a, option), b
    if isinstance(a, bool) != isinstance(b, bool) and None not in (a, b):
        return a, b
    return a, b


def _time_of(text: str, option: str) -> datetime:
    # An interval "start/end" compares by its start.
    return parse_datetime(text.partition("/")[0], option)


@lru_cache(maxsize=256)
def _wkt(text: str):
    try:
        geometry = shapely.wkt.loads(text)
    except shapely.errors.ShapelyError as error:
        raise ValueError(f"not WKT: {str(error)[:80]}") from None
    shapely.prepare(geometry)   # a literal is tested against every entity: index it once
    return geometry


# Shapes of the GeoJSON objects of the shared entity graph, so that a filter does not rebuild them
# for every request. An entry keeps its object alive, so its id() cannot be reused meanwhile.
_SHAPES: dict[int, tuple[dict, Any]] = {}
_MAX_SHAPES = 200_000


def geometry(value: Any):
    if isinstance(value, Geometry):
        return _wkt(value.wkt)
    if isinstance(value, dict) and "type" in value:
        known = _SHAPES.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        result = shape(value)
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[id(value)] = (value, result)
        return result
    raise TypeError(f"{_kind(value)} is not a geometry")


# Predicates with the literal (prepared) first where the relation allows: within(a, b) = contains(b, a).
_CONVERSE = {"intersects": "intersects", "disjoint": "disjoint", "equals": "equals", "touches": "touches",
             "overlaps": "overlaps", "crosses": "crosses", "within": "contains", "contains": "within"}


def _geo(predicate: str) -> Callable[[Any, Any], bool]:
    def test(a: Any, b: Any) -> bool:
        if isinstance(b, Geometry) and not isinstance(a, Geometry):
            return bool(getattr(shapely, _CONVERSE[predicate])(geometry(b), geometry(a)))
        return bool(getattr(shapely, predicate)(geometry(a), geometry(b)))
    return test


def _datepart(part: str) -> Callable[[Any], int]:
    def get(value: Any) -> int:
        if isinstance(value, str):
            value = _time_of(value, "$filter")
        return getattr(value, part)
    return get


def _substring(text: str, start: int, length: int | None = None) -> str:
    return text[start:] if length is None else text[start:start + length]


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "substringof": lambda needle, text: needle in text,
    "contains": lambda text, needle: needle in text,
    "startswith": lambda text, prefix: text.startswith(prefix),
    "endswith": lambda text, suffix: text.endswith(suffix),
    "length": lambda text: len(text),
    "indexof": lambda text, needle: text.find(needle),
    "substring": _substring,
    "tolower": lambda text: text.lower(),
    "toupper": lambda text: text.upper(),
    "trim": lambda text: text.strip(),
    "concat": lambda a, b: f"{a}{b}",
    "year": _datepart("year"), "month": _datepart("month"), "day": _datepart("day"),
    "hour": _datepart("hour"), "minute": _datepart("minute"), "second": _datepart("second"),
    "fractionalseconds": lambda v: _datepart("microsecond")(v) / 1e6,
    "round": lambda v: math.floor(v + 0.5), "floor": math.floor, "ceiling": math.ceil,
    "st_equals": _geo("equals"), "st_disjoint": _geo("disjoint"), "st_touches": _geo("touches"),
    "st_within": _geo("within"), "st_overlaps": _geo("overlaps"), "st_crosses": _geo("crosses"),
    "st_intersects": _geo("intersects"), "st_contains": _geo("contains"),
    "geo.intersects": _geo("intersects"),
    "st_distance": lambda a, b: geometry(a).distance(geometry(b)),
    "geo.distance": lambda a, b: geometry(a).distance(geometry(b)),
    "st_length": lambda a: geometry(a).length, "geo.length": lambda a: geometry(a).length,
    "st_relate": lambda a, b, pattern: geometry(a).relate_pattern(geometry(b), pattern),
}


def sort_key(evaluator: Evaluator, orderby, entity: Entity) -> tuple:
    """A key for ``sorted``: nulls first ascending (as FROST), descending keys inverted."""
    key = []
    for item in orderby:
        value = evaluator.value(item.expression, entity)
        if isinstance(value, Many):
            value = min((v for v in value if v is not None), default=None, key=_orderable)
        key.append(_Ordered(_orderable(value), item.descending))
    key.append(_Ordered((1, entity.id if isinstance(entity.id, int) else 0, str(entity.id)), False))
    return tuple(key)


def _orderable(value: Any) -> tuple:
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, datetime):
        return (3, value.timestamp())
    if isinstance(value, str):
        return (4, value)
    return (5, str(value))


class _Ordered:
    __slots__ = ("key", "descending")

    def __init__(self, key: tuple, descending: bool):
        self.key, self.descending = key, descending

    def __lt__(self, other: "_Ordered") -> bool:
        try:
            less = self.key < other.key
        except TypeError:
            less = str(self.key) < str(other.key)
        greater = other.key < self.key if not less else False
        return greater if self.descending else less

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ordered) and self.key == other.key
