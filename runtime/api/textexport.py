"""Observations written as CSV or JSON by the warehouse itself, byte for byte as :mod:`.export`
writes them from Python rows, so a download of millions of rows never passes row by row
through the interpreter.

The SQL builds each row's text (``FORMAT RawBLOB``: the values joined, nothing added), so every
rule of :mod:`.export` is spelt out here once more and :func:`supported` names the column types
for which that is done (the others keep the Python path):

* times as :func:`.query.format_time` (UTC, milliseconds only where the instant has them);
* floats as Python's ``repr`` (shortest round-trip digits, ``.0`` on whole numbers, exponent
  outside 1e-4 ≤ |x| < 1e16; ``Float32`` widened to the double Python gets); NaN and ±inf empty
  (CSV) or ``null`` (JSON), like :func:`.query._numbers` (``lon``/``lat`` are never NaN or inf:
  the sink refuses positions outside ±180/±90);
* CSV: Python's ``csv`` minimal quoting, CRLF line ends, and the formula guard of
  :func:`.export._cell` (a text starting with ``= + - @`` TAB or CR gets a leading ``'``);
* JSON: ``json.dumps(ensure_ascii=False)`` with its separators and escapes.

``tests/unit/api/test_textexport.py`` compares both paths on awkward values (and a float
formatter check over many random doubles) against the real warehouse.
"""

from __future__ import annotations

import json

from .catalogue import FieldInfo

# Column types (as the catalogue names them: ClickHouse type names) written here.
_INTEGERS = {"UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64"}
_FLOATS = {"Float32", "Float64"}
SUPPORTED_TYPES = _INTEGERS | _FLOATS | {"String", "Bool", "Date"}


def _base(type_name: str) -> str:
    return type_name[len("Nullable("):-1] if type_name.startswith("Nullable(") else type_name


def supported(fields: tuple[FieldInfo, ...]) -> bool:
    return all(_base(f.type) in SUPPORTED_TYPES for f in fields)


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Steps:
    """Named steps of one SQL expression: a step is written out (``(expr AS name)``) where it is
    used first and by its name after that, so nothing is computed twice and the query text stays
    short. (ClickHouse resolves aliases wherever they stand in the SELECT.)"""

    def __init__(self, tag: str):
        self.tag, self.defined = tag, set()

    def __call__(self, name: str, expression: str) -> "_Step":
        return _Step(self, f"_pf_{self.tag}_{name}", expression)


class _Step:
    def __init__(self, steps: _Steps, alias: str, expression: str):
        self.steps, self.alias, self.expression = steps, alias, expression

    def __str__(self) -> str:
        if self.alias in self.steps.defined:
            return self.alias
        self.steps.defined.add(self.alias)
        return f"({self.expression} AS {self.alias})"


def python_float(column: str, tag: str = "0") -> str:
    """SQL: the text Python's ``repr(float(x))`` gives, NULL for NULL, NaN and ±inf. ``tag`` makes the
    names of its steps unique in the query (one tag per column)."""
    step = _Steps(tag)
    f = step("f", f"toFloat64({column})")
    f_ = str(f)
    s = step("s", f"toString({f})")                        # shortest round-trip digits, ClickHouse's layout
    # Most readings lie in 1e-4 ≤ |x| < 1e16, where ClickHouse writes Python's digits in Python's
    # layout (a whole number lacks only the ".0"); only the rest takes the slow branch.
    usual = (f"{f} != 0 AND abs({f}) >= 1e-4 AND abs({f}) < 1e16 AND position({s}, 'e') = 0")
    usual_text = f"if(position({s}, '.') > 0, {s}, concat({s}, '.0'))"
    a = step("a", f"if(startsWith({s}, '-'), substring({s}, 2), {s})")
    parts = step("parts", f"splitByChar('e', {a})")
    mantissa = step("m", f"arrayElement({parts}, 1)")
    exponent = step("e", f"if(length({parts}) > 1, toInt32(replaceOne(arrayElement({parts}, 2), '+', '')), 0)")
    point = step("pt", f"position({mantissa}, '.')")
    integer = step("int", f"if({point} > 0, substring({mantissa}, 1, {point} - 1), {mantissa})")
    raw = step("raw", f"concat({integer}, if({point} > 0, substring({mantissa}, {point} + 1), ''))")
    stripped = step("lz", f"trimLeft({raw}, '0')")
    digits = step("d", f"trimRight({stripped}, '0')")
    n = step("n", f"toInt32(length({digits}))")
    # decimal exponent of the first significant digit
    p = step("p", f"toInt32(length({integer})) + {exponent} - toInt32(length({raw}) - length({stripped})) - 1")
    p_, n_ = str(p), str(n)
    fixed = (f"multiIf({p_} >= {n_} - 1, concat({digits}, repeat('0', toUInt32(greatest({p} - {n} + 1, 0))), '.0'), "
             f"{p} >= 0, concat(substring({digits}, 1, {p} + 1), '.', substring({digits}, {p} + 2)), "
             f"concat('0.', repeat('0', toUInt32(greatest(-{p} - 1, 0))), {digits}))")
    scientific = (f"concat(substring({digits}, 1, 1), if({n} > 1, concat('.', substring({digits}, 2)), ''), 'e', "
                  f"if({p} < 0, '-', '+'), if(abs({p}) < 10, '0', ''), toString(abs({p})))")
    slow = (f"concat(if(startsWith({s}, '-'), '-', ''), if({f} = 0, '0.0', "
            f"if({p} >= -4 AND {p} < 16, {fixed}, {scientific})))")
    return (f"if(isNull({column}) OR NOT isFinite(assumeNotNull({f_})), NULL, "
            f"if({usual}, {usual_text}, {slow}))")


def python_time(column: str) -> str:
    """SQL: :func:`.query.format_time` of a DateTime64(3) (UTC)."""
    millis = f"toUInt32(toUnixTimestamp64Milli({column}) % 1000)"
    return (f"concat(formatDateTime({column}, '%Y-%m-%dT%H:%i:%S', 'UTC'), "
            f"if({millis} = 0, '', concat('.', leftPad(toString({millis}), 3, '0'))), 'Z')")


def _value(column: str, type_name: str, json: bool, tag: str) -> str:
    """SQL: a value as Python text (NULL stays NULL); strings unquoted."""
    base = _base(type_name)
    if base in _FLOATS:
        return python_float(column, tag)
    if base == "Bool":
        return f"if(isNull({column}), NULL, if(assumeNotNull({column}), {_sql_string('true' if json else 'True')}, {_sql_string('false' if json else 'False')}))"
    if base in _INTEGERS or base == "Date":
        return f"toString({column})"
    return column


def _csv_text(expression: str) -> str:
    """SQL: a text cell as ``csv.writer`` writes ``export._cell(text)``."""
    guarded = f"if(match({expression}, '^[=+\\\\-@\\t\\r]'), concat('\\'', {expression}), {expression})"
    return (f"if(match({guarded}, '[,\"\\r\\n]'), concat('\"', replaceAll({guarded}, '\"', '\"\"'), '\"'), "
            f"{guarded})")


_JSON_SHORT = {8: "b", 9: "t", 10: "n", 12: "f", 13: "r"}   # the other control characters: \u00XX


def _json_text(expression: str) -> str:
    """SQL: a JSON string literal as ``json.dumps(text, ensure_ascii=False)``."""
    escaped = f"replaceAll(replaceAll({expression}, '\\\\', '\\\\\\\\'), '\"', '\\\\\"')"
    for code in range(32):
        written = _JSON_SHORT.get(code, f"u{code:04x}")
        escaped = f"replaceAll({escaped}, char({code}), '\\\\{written}')"
    return f"concat('\"', if(match({expression}, '[\\\\x00-\\\\x1f\"\\\\\\\\]'), {escaped}, {expression}), '\"')"


def _csv_cell(column: str, type_name: str, tag: str) -> str:
    base = _base(type_name)
    value = _value(column, type_name, json=False, tag=tag)
    if base == "String":
        value = _csv_text(value)
    return f"ifNull({value}, '')"


def _json_cell(column: str, type_name: str, tag: str) -> str:
    base = _base(type_name)
    value = _value(column, type_name, json=True, tag=tag)
    if base in ("String", "Date"):
        value = _json_text(value)
    return f"ifNull({value}, 'null')"


BASE_COLUMNS = (("event_id", "String"), ("source", "String"), ("sensor_id", "String"))


def csv_row(fields: tuple[FieldInfo, ...], quote) -> str:
    """SQL: one row of ``export.observations_csv`` with its CRLF."""
    cells = [_csv_cell(name, t, name) for name, t in BASE_COLUMNS]
    cells.append(python_time("observed_at"))
    cells += [_csv_cell("lon", "Nullable(Float64)", "lon"), _csv_cell("lat", "Nullable(Float64)", "lat")]
    cells += [_csv_cell(quote(f.name), f.type, str(i)) for i, f in enumerate(fields)]
    return f"concat({', '.join(_interleave(cells, repr_sep=','))}, '\\r\\n')"


def json_row(fields: tuple[FieldInfo, ...], quote) -> str:
    """SQL: ``, `` and one item of ``export.observations_json`` (the caller drops the first ``, ``)."""
    parts = ["', {\"event_id\": '", _json_cell("event_id", "String", "event_id"),
             "', \"source\": '", _json_cell("source", "String", "source"),
             "', \"sensor_id\": '", _json_cell("sensor_id", "String", "sensor_id"),
             "', \"observed_at\": \"'", python_time("observed_at"),
             "'\", \"lon\": '", _json_cell("lon", "Nullable(Float64)", "lon"),
             "', \"lat\": '", _json_cell("lat", "Nullable(Float64)", "lat"), "', \"values\": {'"]
    for i, f in enumerate(fields):
        key = json.dumps(f.name, ensure_ascii=False)
        parts += [_sql_string(("" if i == 0 else ", ") + key + ": "), _json_cell(quote(f.name), f.type, str(i))]
    parts.append("'}}'")
    return f"concat({', '.join(parts)})"


def _interleave(cells: list[str], repr_sep: str) -> list[str]:
    out: list[str] = []
    for i, cell in enumerate(cells):
        if i:
            out.append(_sql_string(repr_sep))
        out.append(cell)
    return out
