"""The SensorThings query options, parsed: ``$filter``, ``$orderby``, ``$select``, ``$expand``,
``$top``, ``$skip``, ``$count``.

``$filter`` is parsed by a small recursive-descent parser into a tree of :class:`Node`s
(OData precedence: ``or`` < ``and`` < ``not`` < comparison < ``add``/``sub`` < ``mul``/``div``/``mod``
< unary minus). Nothing is evaluated here: :mod:`.evaluate` runs a tree over entities held in
memory, :mod:`.sql` turns a tree over Observations into warehouse SQL with bound parameters.
Input is bounded (length, tokens, nesting) before any work is done, and every refusal says
where the problem is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

from ..query import QueryError

MAX_OPTION_CHARS = 8_000       # one option's text ($filter, $expand, ...)
MAX_TOKENS = 500               # of one $filter
MAX_NESTING = 32               # parentheses and operators inside each other


def option_error(option: str, message: str) -> QueryError:
    return QueryError(400, "bad_request", f"{option}: {message}")


# Filter tree ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Literal:
    value: Any                 # None, bool, int, float, str, datetime, timedelta, Geometry


@dataclass(frozen=True)
class Geometry:
    wkt: str                   # as the caller wrote it (validated when used)


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]  # ("Datastream", "@iot.id"), ("properties", "layerName")


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Node", ...]


@dataclass(frozen=True)
class Binary:
    op: str                    # eq ne gt ge lt le and or add sub mul div mod
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Unary:
    op: str                    # not, neg
    operand: "Node"


Node = Literal | Path | Call | Binary | Unary

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
# Functions and how many arguments each takes (min, max).
FUNCTIONS = {
    "substringof": (2, 2), "contains": (2, 2), "endswith": (2, 2), "startswith": (2, 2), "length": (1, 1),
    "indexof": (2, 2), "substring": (2, 3), "tolower": (1, 1), "toupper": (1, 1), "trim": (1, 1),
    "concat": (2, 2), "year": (1, 1), "month": (1, 1), "day": (1, 1), "hour": (1, 1), "minute": (1, 1),
    "second": (1, 1), "fractionalseconds": (1, 1), "date": (1, 1), "time": (1, 1),
    "totaloffsetminutes": (1, 1), "now": (0, 0), "mindatetime": (0, 0), "maxdatetime": (0, 0),
    "round": (1, 1), "floor": (1, 1), "ceiling": (1, 1),
    "st_equals": (2, 2), "st_disjoint": (2, 2), "st_touches": (2, 2), "st_within": (2, 2),
    "st_overlaps": (2, 2), "st_crosses": (2, 2), "st_intersects": (2, 2), "st_contains": (2, 2),
    "st_relate": (3, 3), "st_length": (1, 1), "st_distance": (2, 2),
    "geo.distance": (2, 2), "geo.length": (1, 1), "geo.intersects": (2, 2),
}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<typed>(?:duration|geography|geometry)'(?:[^']|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_@][A-Za-z0-9_.@]*)
  | (?P<punct>[()/,-])
""", re.VERBOSE)

_DURATION = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


@dataclass
class _Token:
    kind: str
    text: str
    at: int


def _tokens(text: str, option: str) -> list[_Token]:
    if len(text) > MAX_OPTION_CHARS:
        raise option_error(option, f"is {len(text)} characters long; at most {MAX_OPTION_CHARS} are accepted")
    result, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise option_error(option, f"unexpected character {text[at]!r} at position {at + 1}")
        if match.lastgroup != "space":
            result.append(_Token(match.lastgroup, match.group(), at))
            if len(result) > MAX_TOKENS:
                raise option_error(option, f"has more than {MAX_TOKENS} parts; split the request")
        at = match.end()
    return result


def parse_duration(text: str, option: str = "$filter") -> timedelta:
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise option_error(option, f"duration'{text}' is not an ISO 8601 duration such as duration'PT24H' "
                                   "or duration'P1DT12H' (years and months have no fixed length)")
    parts = {key: float(value) for key, value in match.groupdict().items() if value}
    return timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
                     seconds=parts.get("s", 0))


def parse_datetime(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise option_error(option, f"{text!r} is not a valid ISO 8601 time") from None
    if value.utcoffset() is None:
        raise option_error(option, f"{text!r} has no time zone; add Z or an offset such as +01:00")
    return value.astimezone(timezone.utc)


class _Parser:
    def __init__(self, text: str, option: str):
        self.text, self.option = text, option
        self.tokens = _tokens(text, option)
        self.position = 0
        self.depth = 0

    # helpers
    def peek(self, offset: int = 0) -> _Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def word(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.lower() in words:
            follower = self.peek(1)
            if follower is not None and follower.text == "/":
                return None  # a property path that starts with that name, not the operator
            self.position += 1
            return token.text.lower()
        return None

    def expect(self, text: str) -> None:
        token = self.peek()
        if token is None or token.text != text:
            where = f"at position {token.at + 1} ({token.text!r})" if token else "at the end"
            raise option_error(self.option, f"expected {text!r} {where}")
        self.position += 1

    def fail(self, what: str) -> QueryError:
        token = self.peek()
        where = f"at position {token.at + 1} ({token.text!r})" if token else "at the end"
        return option_error(self.option, f"expected {what} {where}")

    def nested(self):
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise option_error(self.option, f"is nested deeper than {MAX_NESTING} levels")

    # grammar
    def parse(self) -> Node:
        if not self.tokens:
            raise option_error(self.option, "is empty")
        node = self.disjunction()
        if self.peek() is not None:
            raise self.fail("an operator ('and', 'or', 'eq', ...) or the end")
        return node

    def disjunction(self) -> Node:
        self.nested()
        node = self.conjunction()
        while self.word("or"):
            node = Binary("or", node, self.conjunction())
        self.depth -= 1
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.word("and"):
            node = Binary("and", node, self.negation())
        return node

    def negation(self) -> Node:
        if self.word("not"):
            self.nested()
            node = Unary("not", self.negation())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        operator = self.word(*COMPARISONS)
        if operator:
            node = Binary(operator, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while operator := self.word("add", "sub"):
            node = Binary(operator, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while operator := self.word("mul", "div", "mod"):
            node = Binary(operator, node, self.unary())
        return node

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token.text == "-":
            self.position += 1
            self.nested()
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, Literal) and isinstance(operand.value, (int, float)) \
                    and not isinstance(operand.value, bool):
                return Literal(-operand.value)
            return Unary("neg", operand)
        return self.primary()

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail("a value, a property or a function")
        if token.text == "(":
            self.position += 1
            node = self.disjunction()
            self.expect(")")
            return node
        self.position += 1
        if token.kind == "number":
            return Literal(float(token.text) if any(c in token.text for c in ".eE") else int(token.text))
        if token.kind == "string":
            return Literal(token.text[1:-1].replace("''", "'"))
        if token.kind == "datetime":
            return Literal(parse_datetime(token.text, self.option))
        if token.kind == "typed":
            kind, _, quoted = token.text.partition("'")
            body = quoted[:-1].replace("''", "'")
            if kind == "duration":
                return Literal(parse_duration(body, self.option))
            return Literal(Geometry(body))
        if token.kind == "name":
            lowered = token.text.lower()
            following = self.peek()
            if following is not None and following.text == "(":
                return self.call(lowered, token)
            if lowered in ("true", "false"):
                return Literal(lowered == "true")
            if lowered == "null":
                return Literal(None)
            return self.path(token.text)
        raise option_error(self.option, f"unexpected {token.text!r} at position {token.at + 1}")

    def call(self, name: str, token: _Token) -> Node:
        if name not in FUNCTIONS:
            raise option_error(self.option, f"unknown function {token.text!r} at position {token.at + 1}; "
                                            f"known: {', '.join(sorted(FUNCTIONS))}")
        self.expect("(")
        self.nested()
        args: list[Node] = []
        if self.peek() is not None and self.peek().text != ")":
            args.append(self.disjunction())
            while self.peek() is not None and self.peek().text == ",":
                self.position += 1
                args.append(self.disjunction())
        self.expect(")")
        self.depth -= 1
        low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            raise option_error(self.option, f"{name}() takes {count} argument(s), got {len(args)}")
        return Call(name, tuple(args))

    def path(self, first: str) -> Node:
        segments = [first]
        while self.peek() is not None and self.peek().text == "/":
            self.position += 1
            token = self.peek()
            if token is None or token.kind != "name":
                raise self.fail("a property name after '/'")
            self.position += 1
            segments.append(token.text)
        return Path(tuple(segments))


def parse_filter(text: str, option: str = "$filter") -> Node:
    return _Parser(text, option).parse()


# $orderby, $select ----------------------------------------------------------------------

@dataclass(frozen=True)
class OrderBy:
    expression: Node
    descending: bool = False


def parse_orderby(text: str, option: str = "$orderby") -> tuple[OrderBy, ...]:
    items = []
    for part in split_top_level(text, ",", option):
        part = part.strip()
        descending = False
        lowered = part.lower()
        for suffix, flag in ((" desc", True), (" asc", False)):
            if lowered.endswith(suffix):
                part, descending = part[: -len(suffix)].strip(), flag
                break
        if not part:
            raise option_error(option, "names no property; example: $orderby=phenomenonTime desc")
        items.append(OrderBy(parse_filter(part, option), descending))
    if len(items) > 8:
        raise option_error(option, "at most 8 sort keys")
    return tuple(items)


def parse_select(text: str, option: str = "$select") -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not all(re.fullmatch(r"[A-Za-z@][A-Za-z0-9_.@]*(?:/[A-Za-z0-9_@.]+)*", n) for n in names):
        raise option_error(option, f"must be a comma-separated list of property names, got {text[:120]!r}")
    return tuple("@iot.id" if n in ("id", "@iot.id") else n for n in names)


def split_top_level(text: str, separator: str, option: str) -> list[str]:
    """Split at ``separator`` outside parentheses and quotes."""
    if len(text) > MAX_OPTION_CHARS:
        raise option_error(option, f"is {len(text)} characters long; at most {MAX_OPTION_CHARS} are accepted")
    parts, depth, start, quoted = [], 0, 0, False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise option_error(option, f"has an unmatched ')' at position {index + 1}")
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth or quoted:
        raise option_error(option, "has an unclosed parenthesis or quote")
    parts.append(text[start:])
    return parts


# Options of one request or one expansion -------------------------------------------------

@dataclass
class Options:
    filter: Node | None = None
    orderby: tuple[OrderBy, ...] = ()
    select: tuple[str, ...] | None = None
    expand: dict[str, "Options"] = field(default_factory=dict)
    top: int | None = None
    skip: int = 0
    count: bool = False
    # The option texts as received, to write the nextLinks.
    raw: dict[str, str] = field(default_factory=dict)


KNOWN = ("$filter", "$orderby", "$select", "$expand", "$top", "$skip", "$count", "$resultFormat")


def parse_options(pairs: dict[str, str], depth: int = 0, *, max_depth: int = 3) -> Options:
    options = Options(raw={k: v for k, v in pairs.items() if k in KNOWN and k != "$resultFormat"})
    for name, value in pairs.items():
        if name.startswith("$") and name not in KNOWN:
            raise option_error(name, f"is not a SensorThings query option; use one of {', '.join(KNOWN[:7])}")
    if "$resultFormat" in pairs:
        raise option_error("$resultFormat", "dataArray is not supported by this service yet; leave it out")
    if (text := pairs.get("$filter")) is not None:
        options.filter = parse_filter(text)
    if (text := pairs.get("$orderby")) is not None:
        options.orderby = parse_orderby(text)
    if (text := pairs.get("$select")) is not None:
        options.select = parse_select(text)
    for name in ("$top", "$skip"):
        if (text := pairs.get(name)) is not None:
            if not text.strip().isdigit():
                raise option_error(name, f"must be a whole number of at least 0, got {text[:40]!r}")
            setattr(options, name[1:], int(text))
    if (text := pairs.get("$count")) is not None:
        if text.lower() not in ("true", "false"):
            raise option_error("$count", f"must be true or false, got {text[:40]!r}")
        options.count = text.lower() == "true"
    if (text := pairs.get("$expand")) is not None:
        options.expand = parse_expand(text, depth, max_depth=max_depth)
    return options


def parse_expand(text: str, depth: int = 0, *, max_depth: int = 3) -> dict[str, Options]:
    """``Locations,Datastreams/Observations($top=1;$orderby=phenomenonTime desc)`` →
    {"Locations": Options(), "Datastreams": Options(expand={"Observations": Options(top=1, ...)})}."""
    result: dict[str, Options] = {}
    for item in split_top_level(text, ",", "$expand"):
        item = item.strip()
        paren = item.find("(")
        path, inner = (item, "") if paren < 0 else (item[:paren], item[paren + 1:])
        if paren >= 0:
            if not inner.endswith(")"):
                raise option_error("$expand", f"{item[:80]!r}: options must be closed with ')'")
            inner = inner[:-1]
        segments = [s.strip() for s in path.split("/")]
        if not all(re.fullmatch(r"[A-Za-z]+", s) for s in segments):
            raise option_error("$expand", f"{path[:80]!r} is not a navigation path such as "
                                          "Datastreams/Observations")
        if depth + len(segments) > max_depth:
            raise option_error("$expand", f"expands {depth + len(segments)} levels deep; at most {max_depth}")
        pairs: dict[str, str] = {}
        if inner.strip():
            for option in split_top_level(inner, ";", "$expand"):
                name, equals, value = option.partition("=")
                name = name.strip()
                if not equals:
                    raise option_error("$expand", f"option {option[:60]!r} in {segments[-1]}(…) needs "
                                                  "'$name=value'")
                if name in pairs:
                    raise option_error("$expand", f"{name} is given twice in {segments[-1]}(…)")
                pairs[name] = value
        target = result
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment not in target:
                target[segment] = Options()
            if last:
                parsed = parse_options(pairs, depth + len(segments), max_depth=max_depth)
                merged = target[segment]
                for expanded, sub in parsed.expand.items():
                    merged.expand.setdefault(expanded, sub)
                parsed.expand = merged.expand
                target[segment] = parsed
            target = target[segment].expand
    return result


def query_pairs(raw_query: str) -> dict[str, str]:
    """The query string's parameters, decoded once; a parameter given twice is refused."""
    pairs: dict[str, str] = {}
    if not raw_query:
        return pairs
    if len(raw_query) > 4 * MAX_OPTION_CHARS:
        raise option_error("query", f"the query string is longer than {4 * MAX_OPTION_CHARS} characters")
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        # '+' is a space in query strings (FROST writes nextLinks that way); %2B stays a plus.
        name, value = unquote(name.replace("+", " ")), unquote(value.replace("+", " "))
        if name in pairs:
            raise option_error(name, "is given twice")
        pairs[name] = value
    return pairs
