"""Figures for the hubs: a series or join answer of the query engine as what a page shows.

A :class:`Figure` holds the rows of the data table, the generated text summary and the CSV
text of one chart; ``templates/macros/figure.html`` renders it in the markup contract the
front end enhances (``<figure class="chart">`` with summary, hidden canvas, table behind
"Tabelle anzeigen" and a CSV link). Everything here works without JavaScript.

The summary names, per column: the trend over the range (rising, falling or steady, with
the change from the first to the last value), the minimum and maximum with their times,
the last value with its time, and the unit. "Steady" means the change from the first to
the last value is at most :data:`STEADY_SHARE` of the spread between minimum and maximum
(or there is no spread at all).

CSV is written as German offices open it in a spreadsheet: UTF-8 with a byte-order mark
(so Excel detects UTF-8 and keeps "°C" intact), ``;`` between cells, decimal comma, CRLF
line ends, one header row. The first column is the bucket's start as ISO 8601 in UTC, the
second the same instant in Europe/Berlin local time (``dd.mm.yyyy hh:mm``), then one
column per metric named ``<field> (<aggregate>) [<unit>]``. Numbers are written with all
the digits the engine returned (no rounding), so they equal the REST API's numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Sequence

from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_

STEADY_SHARE = 0.05
NO_DATA = N_("No data in this time range.")
CSV_DELIMITER = ";"

TREND_TEXT = {"rising": N_("rising"), "falling": N_("falling"), "steady": N_("steady"), "none": N_("no data")}
# Aggregates in words, per message id (German in the catalogue).
AGGREGATE_TEXT = {
    "avg": N_("average"), "sum": N_("sum"), "min": N_("minimum"), "max": N_("maximum"), "count": N_("count"),
    "p50": N_("median"), "p90": N_("90th percentile"), "p95": N_("95th percentile"), "p99": N_("99th percentile"),
}

# Units that are words, not symbols: a dataset's schema names them in English ("persons"); pages show
# them in the page's language. Symbols (°C, m³/s, %, hPa) are the same in every language and pass as they are.
UNIT_TEXT = {
    "persons": N_("persons"), "people": N_("people"), "pedestrians": N_("pedestrians"),
    "cyclists": N_("cyclists"), "vehicles": N_("vehicles"), "cars": N_("cars"), "bicycles": N_("bicycles"),
    "visitors": N_("visitors"), "passengers": N_("passengers"), "count": N_("count"), "events": N_("events"),
    "spaces": N_("spaces"), "items": N_("items"), "hours": N_("hours"), "days": N_("days"),
    "minutes": N_("minutes"), "seconds": N_("seconds"),
}
# A chart's data table is inline up to this many rows; a longer one is loaded when it is opened
# (its own page without JavaScript), so the page stays light. The chart reads its numbers from
# the figure's compact JSON either way.
INLINE_TABLE_ROWS = 500


def unit_text(unit: str | None, lang: str) -> str:
    """A unit as the page shows it: words translated, symbols unchanged, "" for none."""
    if not unit:
        return ""
    known = UNIT_TEXT.get(unit.strip().lower())
    return _gettext(lang)(known) if known else unit


@dataclass(frozen=True)
class Column:
    """One metric of a figure: ``field`` aggregated with ``aggregate``; ``dataset`` names its source."""

    field: str
    aggregate: str
    unit: str | None = None
    dataset: str = ""

    @property
    def key(self) -> str:
        return f"{self.field}_{self.aggregate}"


@dataclass(frozen=True)
class Trend:
    direction: str  # "rising" | "falling" | "steady" | "none"
    change: float | None
    first: tuple[datetime, float] | None
    last: tuple[datetime, float] | None
    minimum: tuple[datetime, float] | None
    maximum: tuple[datetime, float] | None

    @property
    def arrow(self) -> str:
        return {"rising": "↑", "falling": "↓", "steady": "→"}.get(self.direction, "–")


@dataclass
class Figure:
    id: str
    title: str
    kind: str  # "line" | "bar"
    columns: list[Column]
    rows: list[tuple[datetime, tuple[float | int | None, ...]]]
    csv_url: str = ""
    lang: str = i18n.DEFAULT_LANGUAGE
    summary: str = ""
    trends: list[Trend] = field(default_factory=list)
    truncated: bool = False  # the engine had more rows than one answer holds

    @property
    def unit(self) -> str:
        units = {self.unit_of(c) for c in self.columns if c.unit}
        return units.pop() if len(units) == 1 else ""

    def unit_of(self, column: Column) -> str:
        return unit_text(column.unit, self.lang)

    def header(self, column: Column) -> str:
        return column_label(column, self.lang)

    @property
    def long(self) -> bool:
        """Too many rows for an inline table: the table is loaded when it is opened."""
        return len(self.rows) > INLINE_TABLE_ROWS

    def chart_json(self) -> str:
        """What charts.js draws, compactly: bucket starts (Unix seconds), for bar charts the visible
        labels, and per column its name, unit and values (rounded to 4 decimals: drawing needs no
        more; table, CSV and API keep every digit). Safe inside ``<script type="application/json">``."""
        data = {
            "x": [int(at.timestamp()) for at, _values in self.rows],
            "series": [{"name": self.header(c), "unit": self.unit_of(c),
                        "values": [_drawn(values[i]) for _at, values in self.rows]}
                       for i, c in enumerate(self.columns)],
        }
        if self.kind == "bar":
            data["labels"] = [i18n.format_datetime(at, self.lang) for at, _values in self.rows]
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    # Helpers for the template (macros/figure.html).
    def iso(self, at: datetime) -> str:
        return _iso(at)

    def cell(self, value: Any) -> str:
        return value_text(value, self.lang)

    def data_value(self, value: Any) -> str:
        return data_value(value)

    def trend_text(self, index: int = 0) -> str:
        info = self.trends[index] if index < len(self.trends) else None
        _ = _gettext(self.lang)
        return _(TREND_TEXT[info.direction]) if info else _(TREND_TEXT["none"])


def _gettext(lang: str) -> Callable[[str], str]:
    return i18n.translations(lang).gettext


def column_label(column: Column, lang: str) -> str:
    _ = _gettext(lang)
    label = f"{column.field} ({_(AGGREGATE_TEXT.get(column.aggregate, column.aggregate))})"
    unit = unit_text(column.unit, lang)
    return f"{label} [{unit}]" if unit else label


def _drawn(value: Any) -> float | int | None:
    if not _finite(value):
        return None
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int) else round(float(value), 4)


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def trend(points: Sequence[tuple[datetime, float | int | None]]) -> Trend:
    """Trend, extremes and last value of one column's points (time order; missing values skipped).
    Ties for minimum and maximum go to the earliest time."""
    values = [(at, float(v)) for at, v in points if _finite(v)]
    if not values:
        return Trend("none", None, None, None, None, None)
    first, last = values[0], values[-1]
    minimum = min(values, key=lambda p: p[1])
    maximum = max(values, key=lambda p: p[1])
    change = last[1] - first[1]
    spread = maximum[1] - minimum[1]
    if spread == 0 or abs(change) <= STEADY_SHARE * spread:
        direction = "steady"
    else:
        direction = "rising" if change > 0 else "falling"
    return Trend(direction, change, first, last, minimum, maximum)


def _amount(value: float, unit: str | None, lang: str) -> str:
    text = i18n.format_number(value, lang)
    unit = unit_text(unit, lang)
    return f"{text} {unit}" if unit else text


def summary_sentence(label: str, unit: str | None, info: Trend, lang: str) -> str:
    """One column's summary as a sentence in ``lang``."""
    _ = _gettext(lang)
    if info.direction == "none":
        return _("%(label)s: no values in this time range.") % {"label": label}
    when = lambda point: i18n.format_datetime(point[0], lang)  # noqa: E731
    parts = []
    if info.direction == "steady":
        parts.append(_("%(label)s stayed steady from %(start)s to %(end)s (change %(change)s).") % {
            "label": label, "start": when(info.first), "end": when(info.last),
            "change": _amount(info.change, unit, lang)})
    else:
        text = (_("%(label)s rose by %(change)s from %(start)s to %(end)s.") if info.direction == "rising"
                else _("%(label)s fell by %(change)s from %(start)s to %(end)s."))
        parts.append(text % {"label": label, "change": _amount(abs(info.change), unit, lang),
                             "start": when(info.first), "end": when(info.last)})
    parts.append(_("Minimum %(min)s at %(min_time)s, maximum %(max)s at %(max_time)s.") % {
        "min": _amount(info.minimum[1], unit, lang), "min_time": when(info.minimum),
        "max": _amount(info.maximum[1], unit, lang), "max_time": when(info.maximum)})
    parts.append(_("Last value %(value)s at %(time)s.") % {"value": _amount(info.last[1], unit, lang),
                                                           "time": when(info.last)})
    return " ".join(parts)


def build(id: str, title: str, kind: str, columns: Sequence[Column],
          rows: Sequence[tuple[datetime, Sequence[float | int | None]]], *, lang: str = i18n.DEFAULT_LANGUAGE,
          csv_url: str = "") -> Figure:
    """A figure from columns and rows ``(bucket, values per column)``, with its summary."""
    figure = Figure(id=id, title=title, kind=kind, columns=list(columns),
                    rows=[(at, tuple(values)) for at, values in rows], csv_url=csv_url, lang=lang)
    sentences = []
    for index, column in enumerate(figure.columns):
        info = trend([(at, values[index]) for at, values in figure.rows])
        figure.trends.append(info)
        sentences.append(summary_sentence(column_label_plain(column, lang), column.unit, info, lang))
    if not figure.rows:
        sentences = [_gettext(lang)(NO_DATA)]
    figure.summary = " ".join(sentences)
    return figure


def column_label_plain(column: Column, lang: str) -> str:
    _ = _gettext(lang)
    return f"{column.field} ({_(AGGREGATE_TEXT.get(column.aggregate, column.aggregate))})"


def from_series(result, id: str, title: str, kind: str = "line", *, lang: str = i18n.DEFAULT_LANGUAGE,
                csv_url: str = "") -> Figure:
    """A figure of a :class:`~urbanstack.runtime.api.query.SeriesResult` (without ``by_sensor``)."""
    columns = [Column(m.field, m.aggregate.value, m.unit, result.dataset.ref) for m in result.metrics]
    return build(id, title, kind, columns, [(row.bucket, row.values) for row in result.rows], lang=lang,
                 csv_url=csv_url)


def from_join(result, id: str, title: str, kind: str = "line", *, lang: str = i18n.DEFAULT_LANGUAGE,
              csv_url: str = "") -> Figure:
    """A figure of a :class:`~urbanstack.runtime.api.query.JoinResult`: left columns, then right columns."""
    columns = ([Column(m.field, m.aggregate.value, m.unit, result.left.ref) for m in result.left_metrics]
               + [Column(m.field, m.aggregate.value, m.unit, result.right.ref) for m in result.right_metrics])
    return build(id, title, kind, columns, [(row.bucket, (*row.left_values, *row.right_values))
                                            for row in result.rows], lang=lang, csv_url=csv_url)


def csv_number(value: Any) -> str:
    """A number as German spreadsheets read it: decimal comma, no grouping, every digit kept."""
    if not _finite(value):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")  # the shortest repr's digits, without an exponent
        if "." in text:
            text = text.rstrip("0").rstrip(".") or "0"
    return text.replace(".", ",")


def parse_csv_number(text: str) -> float | None:
    return None if text == "" else float(text.replace(",", "."))


def to_csv(figure: Figure) -> str:
    """The figure's table as CSV text (see the module's description for the format)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=CSV_DELIMITER, lineterminator="\r\n")
    writer.writerow(["time_utc", "time_local"] + [_csv_text(column_label(c, "de")) for c in figure.columns])
    for at, values in figure.rows:
        writer.writerow([_iso(at), i18n.format_datetime(at, "de")] + [csv_number(v) for v in values])
    return "\ufeff" + buffer.getvalue()


def _csv_text(text: str) -> str:
    # Header cells come from field names and units; never let one start a spreadsheet formula.
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def _iso(at: datetime) -> str:
    from urbanstack.runtime.api.query import format_time

    return format_time(at)


def value_text(value: Any, lang: str) -> str:
    """A table cell's visible text."""
    return i18n.format_number(value, lang, 2) if _finite(value) else "–"


def data_value(value: Any) -> str:
    """A table cell's machine-readable value (``data-value``), as JSON writes numbers."""
    if not _finite(value):
        return ""
    return str(value) if isinstance(value, int) else repr(float(value))
