"""Town-hall spreadsheets: CSV and XLSX uploads.

Two steps. :func:`preview` shows what was understood — encoding, delimiter,
header row(s), each column's inferred type and unit, sample rows, warnings —
so a person can check it before anything is stored. :func:`import_table`
then turns rows into events following a :class:`TableMapping` (which column
is the time or which fixed reference date applies, which column identifies
the sensor or area, which columns are fields).

Publication-style tables are expected: title rows above the header, header
cells merged across rows and columns, footnote markers (``ledig ¹``), German
numbers (``1.234,5``, ``1 675``, ``-  23``), ``.``/``-``/``–`` for "no value",
German dates, section headings and footnotes between and below the data.

When detection gets a sheet wrong (Berlin's T11–T13: a two-row header whose
first column label is merged across two columns, a blank row and district
headings below it), :class:`TableOptions` say where the header is and where
the data start; the preview shows them and the import follows them.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import (
    MISSING_MARKERS, REPLACEMENT_CHAR, LocalClock, decode_text, field_name, parse_datetime,
    parse_german_date, parse_number,
)
from urbanstack.runtime.events import EventError, Observation

DELIMITERS = (";", ",", "\t", "|")
_HEADER_SCAN_ROWS = 40
_DESCRIPTION_LENGTH = 45
# Footnote markers: superscripts or "*" after a space ("ledig ¹"), or a digit
# and an unbalanced ")" glued to the text ("Zensus 20112)").
# ² and ³ glued to a word are units (km², m³), so only a spaced one is a marker.
_FOOTNOTE_MARK = re.compile(r"(\s+[¹²³⁴⁵⁶⁷⁸⁹⁰*]+|[¹⁴⁵⁶⁷⁸⁹⁰*]+)$")
_FOOTNOTE_PAREN = re.compile(r"(?<=[A-Za-zäöüß0-9])\d\)$")
_UNIT_WORDS = {
    "%": "%", "‰": "‰", "km²": "km²", "km2": "km²", "qkm": "km²", "m²": "m²", "m2": "m²", "qm": "m²",
    "m³": "m³", "m3": "m³", "ha": "ha", "km": "km", "m": "m", "cm": "cm", "mm": "mm",
    "°c": "°C", "ºc": "°C", "grad c": "°C", "eur": "EUR", "€": "EUR", "tsd. eur": "kEUR",
    "kwh": "kWh", "mwh": "MWh", "t": "t", "kg": "kg", "l": "l", "h": "h", "min": "min",
    "m³/s": "m³/s", "km/h": "km/h", "m/s": "m/s", "hpa": "hPa", "personen": "persons",
    "einwohner": "persons", "jahre": "years",
}


@dataclass
class Table:
    """Cells of one sheet or CSV file, as read (Excel values keep their types)."""

    rows: list[list[Any]]
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    sheets: list[str] = field(default_factory=list)
    decimal: str = ","
    horizontal_merges: set[tuple[int, int]] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Column:
    index: int
    name: str           # header text, cleaned of line breaks and footnote markers
    field: str         # suggested field name
    type: str          # int, float, date, datetime, str or empty
    unit: str          # guessed from the header, "" if none
    group: str | None  # label of a header cell spanning several columns above this one
    missing: int       # cells with a "no value" marker


@dataclass
class Layout:
    header_rows: list[int]  # 0-based indices of the header rows
    name_row: int           # the header row the column names come from
    data_start: int
    columns: list[Column]


@dataclass
class TableOptions:
    """What the person importing a table says about it, instead of header detection.

    Rows are numbered as a spreadsheet shows them (the first row is 1).

    - ``header_row``: the row with the column names;
    - ``header_rows``: how many rows the header spans, ending at ``header_row``; cells
      merged across columns in the rows above name groups (``Davon im Alter von …``);
    - ``data_start_row``: the first data row; by default the first non-blank row below
      the header;
    - ``sheet``: the XLSX sheet (the first one by default).
    """

    header_row: int | None = None
    header_rows: int = 1
    data_start_row: int | None = None
    sheet: str | None = None


@dataclass
class Preview:
    sheet: str | None
    sheets: list[str]
    encoding: str | None
    delimiter: str | None
    header_row: int                 # 1-based, as a spreadsheet shows it
    header_rows: list[int]          # 1-based
    data_start_row: int             # 1-based
    columns: list[Column]
    rows: list[dict[str, Any]]      # first n data rows, parsed, keyed by column name
    warnings: list[str]
    header_source: str = "detected"  # "detected", or "options" when TableOptions placed the header


@dataclass
class TableMapping:
    """How rows become events. Field columns are given by header name; a
    mapping ``{column: field}`` renames, a list keeps the suggested names."""

    dataset: str
    fields: Mapping[str, str] | list[str]
    sensor_column: str | None = None
    sensor_id: str | None = None
    timestamp_column: str | None = None
    reference_date: date | datetime | None = None
    timezone: str = "Europe/Berlin"
    units: Mapping[str, str] = field(default_factory=dict)
    source: str = "upload"


def read_table(data: bytes | str, *, filename: str | None = None, sheet: str | None = None) -> Table:
    """Read a CSV (any common encoding and delimiter) or an XLSX sheet
    (the first one unless ``sheet`` is named; trailing spaces in names are forgiven)."""
    if isinstance(data, bytes) and (data[:4] == b"PK\x03\x04" or (filename or "").lower().endswith(".xlsx")):
        return _read_xlsx(data, sheet)
    text, encoding = decode_text(data)
    table = Table(rows=[], encoding=encoding)
    if REPLACEMENT_CHAR in text:
        table.warnings.append("the text contains U+FFFD replacement characters: some letters "
                              "were lost before the upload")
    lines = [line for line in text.splitlines() if line.strip()][:_HEADER_SCAN_ROWS]
    table.delimiter = _sniff_delimiter(lines)
    table.rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=table.delimiter)]
    table.decimal = _sniff_decimal(table.rows, table.delimiter)
    return table


def _sniff_delimiter(lines: list[str]) -> str:
    best, best_score = ";", (0, 0)
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        widths = [c for c in counts if c > 1]
        if not widths:
            continue
        modal = max(set(widths), key=widths.count)
        score = (widths.count(modal), modal)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _sniff_decimal(rows: list[list[Any]], delimiter: str | None) -> str:
    if delimiter == ",":
        return "."
    comma = point = 0
    for row in rows[:500]:
        for cell in row:
            if isinstance(cell, str):
                comma += bool(re.fullmatch(r"\s*-?\s*[\d .]*\d,\d+\s*", cell))
                point += bool(re.fullmatch(r"\s*-?\s*\d+\.\d{1,2}\s*|\s*-?\s*\d+\.\d{4,}\s*", cell))
    return "." if point > comma else ","


def _read_xlsx(data: bytes, sheet: str | None) -> Table:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"not a readable XLSX workbook: {exc}") from None
    names = workbook.sheetnames
    if sheet is None:
        chosen = names[0]
    else:
        matches = [n for n in names if n == sheet] or [n for n in names if n.strip() == sheet.strip()]
        if not matches:
            raise ValueError(f"no sheet {sheet!r}; the workbook has {names}")
        chosen = matches[0]
    ws = workbook[chosen]
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    horizontal: set[tuple[int, int]] = set()
    for merged in ws.merged_cells.ranges:
        value = rows[merged.min_row - 1][merged.min_col - 1]
        for r in range(merged.min_row - 1, merged.max_row):
            for c in range(merged.min_col - 1, merged.max_col):
                rows[r][c] = value
                if merged.max_col > merged.min_col:
                    horizontal.add((r, c))
    table = Table(rows=rows, sheet=chosen, sheets=names, decimal=".", horizontal_merges=horizontal)
    _collapse_merged_rows(table)
    return table


def _filled(row: list[Any]) -> list[Any]:
    return [c for c in row if not _is_blank(c)]


def _collapse_merged_rows(table: Table) -> None:
    """A row whose only content is one cell merged across columns (a section
    heading such as "Altersgruppen") is reduced to that single cell."""
    for r, row in enumerate(table.rows):
        positions = [c for c, cell in enumerate(row) if not _is_blank(cell)]
        if (len(positions) > 1 and all((r, c) in table.horizontal_merges for c in positions)
                and len({str(row[c]) for c in positions}) == 1):
            for c in positions[1:]:
                row[c] = None


def _is_blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _is_number(cell: Any, decimal: str) -> bool:
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return True
    if isinstance(cell, str):
        try:
            return parse_number(cell, decimal) is not None
        except ValueError:
            return False
    return False


def _data_like(row: list[Any], decimal: str) -> bool:
    cells = _filled(row)
    return len(cells) >= 2 and sum(_is_number(c, decimal) for c in cells[1:]) >= max(1, (len(cells) - 1) // 2)


def clean_label(text: Any) -> str:
    """Header text without line breaks, soft hyphenation and footnote markers."""
    label = re.sub(r"-\s*\n\s*(?=[a-zäöüß])", "", str(text))
    label = re.sub(r"\s+", " ", label.replace("\n", " ")).strip()
    label = _FOOTNOTE_MARK.sub("", label)
    if label.count(")") > label.count("("):
        label = _FOOTNOTE_PAREN.sub("", label)
    return label.strip()


def guess_unit(label: str) -> str:
    """``Fläche (km²)``, ``Fläche in km²``, ``Anteil … in %``, ``Höhe [m]`` → the unit."""
    lowered = label.lower()
    candidates = re.findall(r"[(\[]([^()\[\]]{1,12})[)\]]", lowered)
    candidates += re.findall(r"\bin\s+(%|‰|€|[a-zäöü°º/²³.]+(?: [a-z]+)?)", lowered)
    candidates += re.findall(r"\bin\s+(%)", lowered)
    for candidate in candidates:
        unit = _UNIT_WORDS.get(candidate.strip())
        if unit:
            return unit
    return ""


def detect_layout(table: Table) -> Layout:
    rows = table.rows
    width = max((len(r) for r in rows), default=0)
    data_start = next((i for i, row in enumerate(rows[:_HEADER_SCAN_ROWS * 5])
                       if _data_like(row, table.decimal)
                       and (i + 1 >= len(rows) or _data_like(rows[i + 1], table.decimal)
                            or not _filled(rows[i + 1]))), None)
    if data_start is None:
        raise ValueError("found no data rows (rows with at least two values, mostly numbers); "
                         "give header_row (and data_start_row) in the table options")
    header_rows: list[int] = []
    index = data_start - 1
    # Skip blank rows and section headings ("Bezirke") between header and data.
    while index >= 0 and len(_filled(rows[index])) < 2:
        index -= 1
    while index >= 0 and len(_filled(rows[index])) >= 2 and not _data_like(rows[index], table.decimal):
        header_rows.insert(0, index)
        index -= 1
    if not header_rows:
        raise ValueError("found no header row above the data; give header_row in the table options")
    named = [r for r in header_rows
             if sum((r, c) in table.horizontal_merges for c in range(width)) * 2 < len(_filled(rows[r]))]
    name_row = min(named or header_rows, key=lambda r: (_mean_length(rows[r]), -r))
    return _layout(table, header_rows, name_row, data_start)


def layout_from_options(table: Table, options: TableOptions) -> Layout:
    """The layout the options state, after checking that it fits the table."""
    rows = table.rows
    where = f"sheet {table.sheet!r}" if table.sheet else "the file"
    last = max((i + 1 for i, row in enumerate(rows) if _filled(row)), default=0)
    if last == 0:
        raise ValueError(f"{where} is empty")
    header_row = options.header_row
    if not isinstance(header_row, int) or isinstance(header_row, bool) or not 1 <= header_row <= last:
        raise ValueError(f"header_row {header_row!r} is out of range: {where} has rows 1 to {last} "
                         f"(numbered as the spreadsheet shows them)")
    if not isinstance(options.header_rows, int) or not 1 <= options.header_rows <= header_row:
        raise ValueError(f"header_rows {options.header_rows!r} is out of range: the header ends at row "
                         f"{header_row}, so it spans 1 to {header_row} rows")
    if not _filled(rows[header_row - 1]):
        raise ValueError(f"header_row {header_row} of {where} is blank; give the row with the column names")
    if options.data_start_row is None:
        data_start = next((i for i in range(header_row, len(rows)) if _filled(rows[i])), None)
        if data_start is None:
            raise ValueError(f"{where} has no rows below header_row {header_row}")
    else:
        if (not isinstance(options.data_start_row, int) or isinstance(options.data_start_row, bool)
                or not header_row < options.data_start_row <= last):
            raise ValueError(f"data_start_row {options.data_start_row!r} is out of range: it must be below the "
                             f"header (row {header_row}) and at most {last}, the last row of {where} with content")
        data_start = options.data_start_row - 1
    header_rows = list(range(header_row - options.header_rows, header_row))
    return _layout(table, header_rows, header_row - 1, data_start)


def _layout(table: Table, header_rows: list[int], name_row: int, data_start: int) -> Layout:
    rows = table.rows
    width = max(len(rows[name_row]), max((len(r) for r in rows[data_start:]), default=0))
    while width and all(_is_blank(r[width - 1]) if len(r) >= width else True for r in rows[name_row:]):
        width -= 1
    columns = []
    used: set[str] = set()
    names: set[str] = set()
    for c in range(width):
        raw = rows[name_row][c] if c < len(rows[name_row]) else None
        name = clean_label(raw) if not _is_blank(raw) else f"column {c + 1}"
        if name in names:  # a label merged across columns, or repeated: the import must tell them apart
            name = f"{name} (column {c + 1})"
        names.add(name)
        group = next((clean_label(rows[r][c]) for r in header_rows
                      if r < name_row and (r, c) in table.horizontal_merges and not _is_blank(rows[r][c])), None)
        suggested = field_name(name)
        while suggested in used:
            suggested = f"{suggested}_{c + 1}"
        used.add(suggested)
        unit = guess_unit(name) or (guess_unit(group) if group else "")
        columns.append(Column(c, name, suggested, "empty", unit, group, 0))
    return Layout(header_rows, name_row, data_start, columns)


def _mean_length(row: list[Any]) -> float:
    cells = [str(c) for c in _filled(row)]
    return sum(map(len, cells)) / len(cells) if cells else 0.0


def parse_cell(cell: Any, decimal: str) -> Any:
    """A cell's value: int, float, date, datetime, str, or None for missing markers."""
    if cell is None or isinstance(cell, bool):
        return cell if cell is None else int(cell)
    if isinstance(cell, datetime):
        return cell.date() if cell.time() == time(0) else cell
    if isinstance(cell, (int, float, date)):
        return cell
    text = str(cell).strip()
    if text in MISSING_MARKERS:
        return None
    try:
        return parse_number(text, decimal)
    except ValueError:
        pass
    try:
        return parse_german_date(text)
    except ValueError:
        pass
    if re.match(r"^\d{1,4}[.-]\d{1,2}[.-]\d{2,4}[ T]", text):
        try:
            value = parse_datetime(text)
            return value.date() if value.tzinfo is None and value.time() == time(0) and " " not in text else value
        except ValueError:
            pass
    return clean_label(text) if "\n" in text else text.strip()


_TYPE_ORDER = {"int": 0, "float": 1}


def _merge_type(current: str, value: Any) -> str:
    kind = ("datetime" if isinstance(value, datetime) else "date" if isinstance(value, date)
            else "float" if isinstance(value, float) else "int" if isinstance(value, int) else "str")
    if current == "empty" or current == kind:
        return kind
    if {current, kind} <= {"int", "float"}:
        return "float"
    if {current, kind} <= {"date", "datetime"}:
        return "datetime"
    return "str"


def _analyse(table: Table, options: TableOptions | None = None
             ) -> tuple[Layout, list[tuple[int, list[Any], str | None]], list[str]]:
    """Layout, the data rows (row index, parsed cells, section heading) and warnings."""
    overridden = options is not None and options.header_row is not None
    if options is not None and not overridden and options.data_start_row is not None:
        raise ValueError("data_start_row needs header_row: give the row with the column names too")
    layout = layout_from_options(table, options) if overridden else detect_layout(table)
    data: list[tuple[int, list[Any], str | None]] = []
    warnings: list[str] = []
    section = None
    kinds: dict[int, set[str]] = {c.index: set() for c in layout.columns}
    for r in range(layout.data_start, len(table.rows)):
        row = table.rows[r]
        if not _filled(row):
            continue
        if len(_filled(row)) < 2:
            section = clean_label(_filled(row)[0])
            data.append((r, [], section))
            continue
        heading = _merged_heading(table, r, layout.columns)
        if heading is not None:
            section = heading
            data.append((r, [], section))
            continue
        cells = [parse_cell(row[c.index] if c.index < len(row) else None, table.decimal)
                 for c in layout.columns]
        for column, raw, value in zip(layout.columns, row, cells):
            if value is None:
                column.missing += not _is_blank(raw)
            else:
                column.type = _merge_type(column.type, value)
                kinds[column.index].add("str" if isinstance(value, str) else "value")
        data.append((r, cells, section))
    for column in layout.columns:
        if len(kinds[column.index]) > 1:
            warnings.append(f"column {column.name!r} mixes text with numbers or dates; it is read as text")
    return layout, data, warnings


def _merged_heading(table: Table, r: int, columns: list[Column]) -> str | None:
    """A row of labels only, at least one of them merged across columns (Berlin's
    ``Mitte (01) | 01  Mitte`` spanning the table): a section heading, not data."""
    row = table.rows[r]
    cells = [(c.index, row[c.index]) for c in columns if c.index < len(row) and not _is_blank(row[c.index])]
    if not any((r, index) in table.horizontal_merges for index, _ in cells):
        return None
    if any(not isinstance(value, str) or _is_number(value, table.decimal) for _, value in cells):
        return None
    labels = list(dict.fromkeys(clean_label(value) for _, value in cells))
    return " — ".join(labels)


def _sheet(sheet: str | None, options: TableOptions | None) -> str | None:
    if options is None or options.sheet is None:
        return sheet
    if sheet is not None and sheet != options.sheet:
        raise ValueError(f"sheet {sheet!r} and options.sheet {options.sheet!r} disagree; give one")
    return options.sheet


def preview(data: bytes | str, n: int = 20, *, filename: str | None = None,
            sheet: str | None = None, options: TableOptions | None = None) -> Preview:
    """What the import would read. ``options`` override header detection (see :class:`TableOptions`)."""
    table = read_table(data, filename=filename, sheet=_sheet(sheet, options))
    layout, rows, warnings = _analyse(table, options)
    warnings = table.warnings + warnings
    skipped = [(r, s) for r, cells, s in rows if not cells]
    if skipped:
        warnings.append(f"{len(skipped)} rows with a single value (or only labels merged across columns) are "
                        f"read as section headings or footnotes, not data (first: row {skipped[0][0] + 1}: "
                        f"{skipped[0][1]!r})")
    samples = [{c.name: _jsonable(v) for c, v in zip(layout.columns, cells)}
               for _, cells, _ in rows if cells][:n]
    return Preview(sheet=table.sheet, sheets=table.sheets, encoding=table.encoding,
                   delimiter=table.delimiter, header_row=layout.name_row + 1,
                   header_rows=[r + 1 for r in layout.header_rows], data_start_row=layout.data_start + 1,
                   columns=layout.columns, rows=samples, warnings=warnings,
                   header_source="options" if options is not None and options.header_row is not None
                   else "detected")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def import_table(data: bytes | str, tenant: str, mapping: TableMapping, *, filename: str | None = None,
                 sheet: str | None = None, options: TableOptions | None = None) -> ParseResult:
    """Rows → events. Every row that does not become an event is rejected with
    the reason, including section headings and footnote rows. ``options``: the
    same header overrides the preview was given."""
    result = ParseResult()
    table = read_table(data, filename=filename, sheet=_sheet(sheet, options))
    layout, rows, warnings = _analyse(table, options)
    result.warnings += table.warnings + warnings
    by_name = {c.name: c for c in layout.columns}

    def column(name: str | None, role: str) -> Column | None:
        if name is None:
            return None
        found = by_name.get(name) or by_name.get(clean_label(name))
        if found is None:
            raise ValueError(f"{role}: no column {name!r}; columns are {list(by_name)}")
        return found

    if (mapping.timestamp_column is None) == (mapping.reference_date is None):
        raise ValueError("give either timestamp_column or reference_date")
    if (mapping.sensor_column is None) == (mapping.sensor_id is None):
        raise ValueError("give either sensor_column or a fixed sensor_id")
    time_column = column(mapping.timestamp_column, "timestamp_column")
    sensor_column = column(mapping.sensor_column, "sensor_column")
    targets = (dict(mapping.fields) if isinstance(mapping.fields, Mapping)
               else {name: by_name[name].field if name in by_name else name for name in mapping.fields})
    field_columns = [(column(name, "fields"), target) for name, target in targets.items()]
    clock = LocalClock(ZoneInfo(mapping.timezone))
    reference = _reference_instant(mapping, clock)
    # One event per sensor and time: a second row with both the same would get the same
    # event_id and silently replace the first in the warehouse (Berlin's "Zusammen" rows).
    seen: dict[tuple[str, datetime], int] = {}
    for r, cells, section in rows:
        where = f"row {r + 1}" + (f" (sheet {table.sheet!r})" if table.sheet else "")
        raw = table.rows[r]
        if not cells:
            result.reject(where, f"not a data row (section heading or footnote): {section!r}", raw)
            continue
        try:
            sensor = mapping.sensor_id or _text(cells[sensor_column.index], sensor_column.name)
            observed = reference or _instant(cells[time_column.index], time_column.name, clock, sensor)
            fields = {target: cells[c.index] for c, target in field_columns}
            for target, value in fields.items():
                if isinstance(value, (date, datetime)):
                    fields[target] = value.isoformat()
            units = {target: mapping.units.get(target, c.unit) for c, target in field_columns}
            if (sensor, observed) in seen:
                raise ValueError(
                    f"sensor {sensor!r} at {observed.isoformat()} is already row {seen[sensor, observed]}: "
                    f"there is one event per sensor and time, so this row would replace that one in the "
                    f"warehouse; map a sensor column (or timestamp) whose values tell the rows apart")
            metadata = {"section": section} if section else {}
            result.events.append(Observation(
                tenant=tenant, dataset=mapping.dataset, source=mapping.source, sensor_id=sensor,
                observed_at=observed, fields=fields, units={k: v for k, v in units.items() if v},
                metadata=metadata))
            seen[sensor, observed] = r + 1
        except (EventError, ValueError) as exc:
            result.reject(where, str(exc), raw)
    return result


def _reference_instant(mapping: TableMapping, clock: LocalClock) -> datetime | None:
    value = mapping.reference_date
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return clock.to_utc(value)


def _text(value: Any, name: str) -> str:
    if value is None:
        raise ValueError(f"column {name!r} (sensor/area) is empty")
    return value.isoformat() if isinstance(value, (date, datetime)) else str(value).strip()


def _instant(value: Any, name: str, clock: LocalClock, key: str) -> datetime:
    if value is None:
        raise ValueError(f"column {name!r} (timestamp) is empty")
    if isinstance(value, datetime):
        return clock.to_utc(value, key)
    if isinstance(value, date):
        return clock.to_utc(datetime(value.year, value.month, value.day), key)
    if isinstance(value, str):
        return clock.to_utc(parse_datetime(value), key)
    raise ValueError(f"column {name!r}: {value!r} is not a date or time")
