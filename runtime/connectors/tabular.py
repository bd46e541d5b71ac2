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
import itertools
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, BinaryIO, Iterator, Mapping, TextIO
from zoneinfo import ZoneInfo

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import (
    ENCODING_NAMES, MISSING_MARKERS, REPLACEMENT_CHAR, LocalClock, field_name, parse_datetime, parse_german_date,
    parse_number, realigned, sniff_encoding,
)
from urbanstack.runtime.events import EventError, Observation

DELIMITERS = (";", ",", "\t", "|")
_HEADER_SCAN_ROWS = 40
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

# Bounds of the work one file may cause; a file beyond them is refused, naming the bound.
MAX_COLUMNS = 2_000
MAX_ROWS = 1_048_576                 # Excel's own
MAX_CELLS = 2_000_000                # per XLSX sheet, counted in its XML before parsing
MAX_MERGED_CELLS = 100_000           # per sheet, all merged ranges together
MAX_UNCOMPRESSED = 256 * 1024 * 1024  # all parts of a workbook together
MAX_LOADED_PART = 32 * 1024 * 1024    # a part other than a worksheet (shared strings: ~1 M texts)
MAX_RATIO = 100                      # inflation of one part; real workbooks stay below 20
_RATIO_FROM = 1024 * 1024            # small parts (styles) may inflate more, they cannot cost much
MAX_LINE_CHARS = 1_000_000
# The head: what the layout detection, the preview and the decisions per column read.
HEAD_ROWS = 1_000
HEAD_CELLS = 100_000
_SAMPLE_BYTES = 64 * 1024
_CHUNK = 1024 * 1024
_BINARY = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v")
_CELL_TAG = re.compile(rb"<(?:[\w.-]+:)?c[\s/>]")
_CELL_REF = re.compile(rb"<(?:[\w.-]+:)?c\s[^>]*?\br\s*=\s*[\"']\$?([A-Z]{1,3})\$?(\d{1,7})")
_MERGE_REF = re.compile(rb"<(?:[\w.-]+:)?mergeCell\s[^>]*?\bref\s*=\s*[\"']([^\"']{1,40})")
# A cell that a spreadsheet would compute: =SUM(…), or a DDE payload such as =cmd|' /C calc'!A0.
_FORMULA = re.compile(r"^\s*(=|[+@]\s*[A-Za-z(]|-\s*[A-Za-z(])")
IMPORT_CHUNK_ROWS = 5_000


class TableError(ValueError):
    """A file that cannot be read as a table; ``code`` names the problem, ``status`` is
    the HTTP answer (413 for a limit, 422 otherwise)."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Table:
    """One sheet or CSV file: the head as read (Excel values keep their types) and the
    rows after it, read on demand."""

    rows: list[list[Any]]
    rest: Iterator[list[Any]] = field(default_factory=lambda: iter(()))
    complete: bool = True   # rows holds the whole table
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    sheets: list[str] = field(default_factory=list)
    decimal: str = ","      # the file's convention, for columns whose values do not decide
    horizontal_merges: set[tuple[int, int]] = field(default_factory=set)
    kind: str = "csv"


@dataclass
class Column:
    index: int
    name: str           # header text, cleaned of line breaks and footnote markers
    field: str         # suggested field name
    type: str          # int, float, date, datetime, str or empty
    unit: str          # guessed from the header, "" if none
    group: str | None  # label of a header cell spanning several columns above this one
    missing: int       # cells with a "no value" marker, in the rows read
    decimal: str | None = None         # decimal mark of numbers written as text, if any value depends on it
    decimal_source: str | None = None  # why: "values", "other columns", "file convention" or "option"


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
    - ``sheet``: the XLSX sheet (the first one by default);
    - ``decimal``: the decimal mark of numbers written as text, ``","`` or ``"."``, for
      every column or as ``{column: mark}``, instead of the decision from the values.
    """

    header_row: int | None = None
    header_rows: int = 1
    data_start_row: int | None = None
    sheet: str | None = None
    decimal: str | Mapping[str, str] | None = None  # "," or ".", for all columns or per column name


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
    rows_read: int = 0               # rows of the file the preview read (the import reads all)
    complete: bool = True            # whether those are all rows of the file


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
    # A sensor name in the file → the sensor id to store, e.g. a name damaged by a wrong
    # encoding ("Steinstra\ufffde, Moers") → the name earlier imports used.
    sensor_names: Mapping[str, str] = field(default_factory=dict)


def read_table(data: bytes | str | BinaryIO, *, filename: str | None = None, sheet: str | None = None) -> Table:
    """Open a CSV (UTF-8, UTF-16 with BOM, Windows-1252; any common delimiter) or an XLSX
    sheet (the first one unless ``sheet`` is named; trailing spaces in names are forgiven).

    Only the head is read (enough for the layout, the preview and the decisions per
    column); :attr:`Table.rest` reads the other rows on demand. A file beyond the limits
    above is refused with :class:`TableError` before its content is parsed.
    """
    stream = io.BytesIO(data.encode("utf-8") if isinstance(data, str) else data) \
        if isinstance(data, (bytes, bytearray, str)) else data
    stream.seek(0)
    magic = stream.read(8)
    stream.seek(0)
    if not magic:
        raise TableError("empty_file", "the file is empty (0 bytes); send the CSV or XLSX file as the body")
    if magic.startswith(b"PK\x03\x04") or (filename or "").lower().endswith(".xlsx"):
        return _read_xlsx(stream, sheet)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise TableError("unreadable_file", "this is an old Excel .xls workbook (or another OLE file); save it "
                                            "as .xlsx or CSV and send that")
    return _read_csv(stream)


def _read_csv(stream: BinaryIO) -> Table:
    encoding = sniff_encoding(stream)
    sample = stream.read(_SAMPLE_BYTES).decode(encoding, errors="replace")
    stream.seek(0)
    binary = next((i for i, char in enumerate(sample) if char in _BINARY), None)
    nul = "\x00" in sample
    if binary is not None and (nul or sum(c in _BINARY for c in sample) * 100 > len(sample)):
        raise TableError("not_text", f"the file is neither CSV text nor an XLSX workbook: it holds binary data "
                                     f"(control character {sample[binary]!r} at character {binary + 1}"
                                     f"{'; UTF-16 text without byte-order mark looks like this too' if nul else ''}"
                                     f"). Send a CSV (UTF-8, UTF-16 with byte-order mark or Windows-1252) or an "
                                     f".xlsx file")
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    lines: list[str] = []
    while len(lines) < _HEADER_SCAN_ROWS and (line := text.readline(MAX_LINE_CHARS)):
        if line.strip():
            lines.append(line)
    if not lines:
        raise TableError("empty_file", "the file holds no values, only blank lines or spaces")
    delimiter = _sniff_delimiter(lines)
    text.seek(0)
    table = Table(rows=[], encoding=ENCODING_NAMES.get(encoding, encoding), delimiter=delimiter,
                  decimal="." if delimiter == "," else ",", kind="csv")
    table.rows, table.rest, table.complete = _split_head(_csv_rows(text, delimiter))
    return table


def _csv_rows(text: TextIO, delimiter: str) -> Iterator[list[str]]:
    def lines() -> Iterator[str]:
        number = 0
        while line := text.readline(MAX_LINE_CHARS):
            number += 1
            if len(line) == MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
                raise _too_large(f"line {number} is longer than {MAX_LINE_CHARS:,} characters")
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        for row in reader:
            if len(row) > MAX_COLUMNS:
                raise _too_large(f"line {reader.line_num} has {len(row):,} cells; at most {MAX_COLUMNS:,} "
                                 f"columns are read")
            yield row
    except csv.Error as exc:
        raise TableError("unreadable_file", f"the CSV cannot be read at line {reader.line_num}: {exc}") from None
    finally:
        text.detach()  # the caller owns the byte stream


def _split_head(rows: Iterator[list[Any]]) -> tuple[list[list[Any]], Iterator[list[Any]], bool]:
    """The first rows (at most HEAD_ROWS rows and HEAD_CELLS cells), the rest, and
    whether the head is the whole table."""
    head: list[list[Any]] = []
    cells = 0
    for row in rows:
        head.append(row)
        cells += len(row)
        if len(head) >= HEAD_ROWS or cells >= HEAD_CELLS:
            break
    following = next(rows, None)
    if following is None:
        return head, iter(()), True
    return head, itertools.chain([following], rows), False


def _sniff_delimiter(lines: list[str]) -> str:
    best, best_score = ";", (0, 0)
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        widths = [c for c in counts if c > 1]
        if not widths:
            continue
        modal = max(set(widths), key=widths.count)
        # Lines that agree, weighted by the cells they split into: a comma inside a few
        # values ("Steinstraße, Moers") must not win over the delimiter of a ragged file.
        score = (widths.count(modal) * (modal - 1), modal)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _too_large(what: str) -> "TableError":
    return TableError("too_large", f"{what}; split the file or remove what is not data", status=413)


def _check_archive(archive: zipfile.ZipFile) -> None:
    """Sizes as the archive declares them (zipfile never inflates an entry beyond its
    declared size), before anything is decompressed."""
    total = 0
    for entry in archive.infolist():
        total += entry.file_size
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_FROM and ratio > MAX_RATIO:
            raise _too_large(f"{entry.filename} inflates {ratio:.0f}-fold ({entry.compress_size:,} to "
                             f"{entry.file_size:,} bytes); at most {MAX_RATIO}-fold is read")
        # openpyxl streams worksheets but loads the other XML parts (shared strings, styles) whole.
        loaded_whole = entry.filename.endswith((".xml", ".rels")) and not entry.filename.startswith("xl/worksheets/")
        if loaded_whole and entry.file_size > MAX_LOADED_PART:
            raise _too_large(f"{entry.filename} holds {entry.file_size:,} bytes uncompressed; at most "
                             f"{MAX_LOADED_PART:,} are read")
    if total > MAX_UNCOMPRESSED:
        raise _too_large(f"the workbook holds {total:,} bytes uncompressed; at most {MAX_UNCOMPRESSED:,} are read")


@dataclass
class _Extent:
    cells: int = 0
    rows: int = 0
    columns: int = 0
    merges: list[tuple[int, int, int, int]] = field(default_factory=list)  # 0-based r1, c1, r2, c2


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


def _scan_sheet(source: BinaryIO, title: str) -> _Extent:
    """Count a sheet's cells and find its extent and merged ranges in the raw XML,
    chunk by chunk, refusing as soon as a limit is passed."""
    extent = _Extent()
    merged = 0
    carry = b""
    while True:
        chunk = source.read(_CHUNK)
        buffer = carry + chunk
        cut = buffer.rfind(b"<") if chunk else len(buffer)
        cut = cut if cut > 0 else len(buffer)
        part, carry = buffer[:cut], buffer[cut:]
        extent.cells += len(_CELL_TAG.findall(part))
        if extent.cells > MAX_CELLS:
            raise _too_large(f"sheet {title!r} has more than {MAX_CELLS:,} cells, the most read per sheet")
        for letters, digits in _CELL_REF.findall(part):
            extent.columns = max(extent.columns, _column_number(letters))
            extent.rows = max(extent.rows, int(digits))
        for ref in _MERGE_REF.findall(part):
            first, _, last = ref.partition(b":")
            (c1, r1), (c2, r2) = _cell_ref(first), _cell_ref(last or first)
            merged += (r2 - r1 + 1) * (c2 - c1 + 1)
            if merged > MAX_MERGED_CELLS:
                raise _too_large(f"sheet {title!r}: the merged range {ref.decode()} brings the merged cells to "
                                 f"{merged:,}; at most {MAX_MERGED_CELLS:,} merged cells are read per sheet")
            extent.merges.append((r1 - 1, c1 - 1, r2 - 1, c2 - 1))
            extent.columns, extent.rows = max(extent.columns, c2), max(extent.rows, r2)
        if extent.columns > MAX_COLUMNS:
            raise _too_large(f"sheet {title!r} reaches column {extent.columns:,}; at most {MAX_COLUMNS:,} "
                             f"columns are read")
        if extent.rows > MAX_ROWS:
            raise _too_large(f"sheet {title!r} reaches row {extent.rows:,}; at most {MAX_ROWS:,} rows are read")
        if not chunk:
            return extent


def _cell_ref(ref: bytes) -> tuple[int, int]:
    match = re.fullmatch(rb"\$?([A-Z]{1,3})\$?(\d{1,7})", ref)
    if match is None:
        raise TableError("unreadable_file", f"the merged range {ref.decode(errors='replace')!r} is not a cell "
                                            "reference")
    return _column_number(match.group(1)), int(match.group(2))


def _read_xlsx(stream: BinaryIO, sheet: str | None) -> Table:
    import openpyxl

    try:
        archive = zipfile.ZipFile(stream)
        _check_archive(archive)
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except TableError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/openpyxl raise many kinds for a broken file
        raise TableError("unreadable_file", f"not a readable XLSX workbook: {exc}") from None
    names = workbook.sheetnames
    if sheet is None:
        chosen = names[0]
    else:
        matches = [n for n in names if n == sheet] or [n for n in names if n.strip() == sheet.strip()]
        if not matches:
            raise TableError("unknown_sheet", f"no sheet {sheet!r}; the workbook has {names}")
        chosen = matches[0]
    ws = workbook[chosen]
    # The sheet's part in the archive: read-only worksheets keep it in this attribute.
    with archive.open(ws._worksheet_path) as source:
        extent = _scan_sheet(source, chosen)
    ws.reset_dimensions()  # the declared dimension may be anything; rows are as long as their cells
    horizontal = {(r, c) for r1, c1, r2, c2 in extent.merges if c2 > c1
                  for r in range(r1, r2 + 1) for c in range(c1, c2 + 1)}
    table = Table(rows=[], sheet=chosen, sheets=names, decimal=".", horizontal_merges=horizontal, kind="xlsx")
    rows = _collapse_merged_rows(_expand_merges(_xlsx_rows(ws), extent.merges), horizontal)
    table.rows, table.rest, table.complete = _split_head(rows)
    return table


def _xlsx_rows(ws: Any) -> Iterator[list[Any]]:
    # Checked again while reading: a cell the scan could not place (no reference) must not
    # make a row or the sheet grow past the limits either.
    for number, row in enumerate(ws.iter_rows(values_only=True), start=1):
        if number > MAX_ROWS or len(row) > MAX_COLUMNS:
            raise _too_large(f"sheet {ws.title!r} has cells beyond row {MAX_ROWS:,} or column {MAX_COLUMNS:,}, "
                             f"the most read per sheet")
        yield list(row)


def _expand_merges(rows: Iterator[list[Any]], merges: list[tuple[int, int, int, int]]) -> Iterator[list[Any]]:
    """Every cell of a merged range gets the value of its top-left cell."""
    starting: dict[int, list[tuple[int, int, int, int]]] = {}
    for merge in merges:
        starting.setdefault(merge[0], []).append(merge)
    active: list[tuple[tuple[int, int, int, int], Any]] = []
    for r, row in enumerate(rows):
        for merge in starting.pop(r, []):
            active.append((merge, row[merge[1]] if merge[1] < len(row) else None))
        for (_, c1, r2, c2), value in active:
            if len(row) <= c2:
                row.extend([None] * (c2 + 1 - len(row)))
            row[c1:c2 + 1] = [value] * (c2 + 1 - c1)
        active = [(merge, value) for merge, value in active if merge[2] > r]
        yield row


def _filled(row: list[Any]) -> list[Any]:
    return [c for c in row if c is not None and (c.strip() if isinstance(c, str) else True)]


def _collapse_merged_rows(rows: Iterator[list[Any]], horizontal: set[tuple[int, int]]) -> Iterator[list[Any]]:
    """A row whose only content is one cell merged across columns (a section
    heading such as "Altersgruppen") is reduced to that single cell."""
    for r, row in enumerate(rows):
        positions = [c for c, cell in enumerate(row) if not _is_blank(cell)]
        if (len(positions) > 1 and all((r, c) in horizontal for c in positions)
                and len({str(row[c]) for c in positions}) == 1):
            for c in positions[1:]:
                row[c] = None
        yield row


def _is_blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _is_number(cell: Any) -> bool:
    """A number in either notation (the decimal mark is decided per column later)."""
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return True
    if isinstance(cell, str):
        return _number_or_none(cell, ",") is not None or _number_or_none(cell, ".") is not None
    return False


def _number_or_none(text: str, decimal: str) -> int | float | None:
    try:
        return parse_number(text, decimal)
    except ValueError:
        return None


def _data_like(row: list[Any]) -> bool:
    cells = _filled(row)
    return len(cells) >= 2 and sum(_is_number(c) for c in cells[1:]) >= max(1, (len(cells) - 1) // 2)


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
                       if _data_like(row) and (i + 1 >= len(rows) or _data_like(rows[i + 1])
                                               or not _filled(rows[i + 1]))), None)
    if data_start is None:
        filled = [row for row in rows if _filled(row)]
        if len(filled) == 1 and table.complete:
            raise TableError("header_only", f"the file has a single row ({', '.join(map(str, _filled(filled[0])[:4]))}"
                                            f"{', …' if len(_filled(filled[0])) > 4 else ''}) and no data rows "
                                            f"below it; send the file with its data")
        raise TableError("no_data_rows", "found no data rows (rows with at least two values, mostly numbers); "
                                         "give header_row (and data_start_row) in the table options")
    header_rows: list[int] = []
    index = data_start - 1
    # Skip blank rows and section headings ("Bezirke") between header and data.
    while index >= 0 and len(_filled(rows[index])) < 2:
        index -= 1
    while index >= 0 and len(_filled(rows[index])) >= 2 and not _data_like(rows[index]):
        header_rows.insert(0, index)
        index -= 1
    if not header_rows:
        raise TableError("no_header", "found no header row above the data; give header_row in the table options")
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
        raise TableError("empty_file", f"{where} is empty")
    # Options are checked against the head; beyond it the file is not read yet.
    span = f"{where} has rows 1 to {last}" if table.complete else \
        f"the first {len(rows)} rows of {where} are read for the header, with content up to row {last}"
    header_row = options.header_row
    if not isinstance(header_row, int) or isinstance(header_row, bool) or not 1 <= header_row <= last:
        raise _option_error(f"header_row {header_row!r} is out of range: {span} "
                         f"(numbered as the spreadsheet shows them)")
    if not isinstance(options.header_rows, int) or not 1 <= options.header_rows <= header_row:
        raise _option_error(f"header_rows {options.header_rows!r} is out of range: the header ends at row "
                         f"{header_row}, so it spans 1 to {header_row} rows")
    if not _filled(rows[header_row - 1]):
        raise _option_error(f"header_row {header_row} of {where} is blank; give the row with the column names")
    if options.data_start_row is None:
        data_start = next((i for i in range(header_row, len(rows)) if _filled(rows[i])), None)
        if data_start is None:
            raise _option_error(f"{where} has no rows below header_row {header_row}")
    else:
        if (not isinstance(options.data_start_row, int) or isinstance(options.data_start_row, bool)
                or not header_row < options.data_start_row <= last):
            raise _option_error(f"data_start_row {options.data_start_row!r} is out of range: it must be below the "
                             f"header (row {header_row}) and at most {last}, the last row of {where} with content")
        data_start = options.data_start_row - 1
    header_rows = list(range(header_row - options.header_rows, header_row))
    return _layout(table, header_rows, header_row - 1, data_start)


def _option_error(message: str) -> TableError:
    return TableError("invalid_options", message)


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


_NUMBER_TYPES = {"int", "float"}
_DATE_TYPES = {"date", "datetime"}


@dataclass
class _DataRow:
    index: int                 # 0-based row of the file
    raw: list[Any]             # the cells as read (realigned, when the row was)
    cells: list[Any]           # parsed, one per column; empty for a section heading or footnote
    section: str | None
    problem: str | None = None                                # why the whole row cannot be read
    problems: dict[int, str] = field(default_factory=dict)   # column index → why its cell cannot


class _Findings:
    """What reading the rows noticed: per kind, how often and the first occurrence."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, ...], list[Any]] = {}

    def add(self, key: tuple[str, ...], row: int, detail: str = "") -> None:
        entry = self.seen.setdefault(key, [0, row, detail])
        entry[0] += 1


class _TableReader:
    """The data rows of a table, read with its layout and the decisions per column, which
    come from the head: the preview and the import decide alike."""

    def __init__(self, table: Table, options: TableOptions | None = None):
        overridden = options is not None and options.header_row is not None
        if options is not None and not overridden and options.data_start_row is not None:
            raise _option_error("data_start_row needs header_row: give the row with the column names too")
        self.table = table
        self.layout = layout_from_options(table, options) if overridden else detect_layout(table)
        self.columns = self.layout.columns
        self.findings = _Findings()
        self.warnings: list[str] = []
        header = [table.rows[r] for r in self.layout.header_rows]
        # In a CSV every row should have the header's cells; in a workbook rows are as long as their content.
        self.width = max(len(row) for row in header) if table.kind == "csv" else None
        self.groups = _part_groups(self.columns)
        damaged = [c.name for c in self.columns if REPLACEMENT_CHAR in c.name]
        if damaged:
            self.warnings.append(
                f"encoding problem: the file was damaged before the upload (U+FFFD replacement characters stand "
                f"for lost letters) in the header of {len(damaged)} columns ({_quoted(damaged)}): their suggested "
                f"field names differ from those of an undamaged file; rename them (field=Column=name) to match "
                f"earlier imports")
        head = [row for row in self._rows(table.rows[self.layout.data_start:], self.layout.data_start, profile=True)
                if row.cells or row.problem]
        self._decide_decimals(head, options)
        self._decide_types(head)

    # Reading rows ---------------------------------------------------------------

    def rows(self, used: set[int] | None = None) -> Iterator[_DataRow]:
        """Every row from the data start, the head first, then the rest of the file; with
        ``used``, only those columns are parsed (the others' cells are None)."""
        start = self.layout.data_start
        yield from self._rows(itertools.chain(self.table.rows[start:], self.table.rest), start, used=used)

    def head(self) -> Iterator[_DataRow]:
        start = self.layout.data_start
        yield from self._rows(self.table.rows[start:], start)

    def _rows(self, rows: Iterator[list[Any]] | list[list[Any]], start: int, profile: bool = False,
              used: set[int] | None = None) -> Iterator[_DataRow]:
        section = None
        for r, row in enumerate(rows, start=start):
            filled = _filled(row)
            if not filled:
                continue
            if len(filled) < 2:
                section = clean_label(filled[0])
                yield _DataRow(r, row, [], section)
                continue
            heading = _merged_heading(self.table, r, row, self.columns)
            if heading is not None:
                section = heading
                yield _DataRow(r, row, [], section)
                continue
            row, problem = self._aligned(r, row, profile)
            if profile:
                yield _DataRow(r, row, [None] * len(self.columns), section, problem)
                continue
            data = _DataRow(r, row, [], section, problem)
            for column in self.columns:
                if used is not None and column.index not in used:
                    data.cells.append(None)
                    continue
                raw = row[column.index] if column.index < len(row) else None
                value, why = self._cell(r, column, raw)
                data.cells.append(value)
                if why:
                    data.problems[column.index] = f"column {column.name!r}: {why}"
            yield data

    def _aligned(self, r: int, row: list[Any], profile: bool) -> tuple[list[Any], str | None]:
        """The row realigned when its values are shifted and the sums prove it; or why it
        does not fit the header."""
        for total, parts in self.groups:
            fixed = realigned(row, total.index, [p.index for p in parts], _any_number)
            if fixed is not None:
                if not profile:
                    self.findings.add(("realigned", total.name), r, parts[0].name)
                row = fixed
                break
        if self.width is None:
            return row, None
        beyond = [(c, cell) for c, cell in enumerate(row[self.width:], start=self.width) if not _is_blank(cell)] \
            if len(row) > self.width else []
        if beyond:
            c, cell = beyond[0]
            problem = (f"row {r + 1} has {len(row)} cells but the header names {self.width} columns: cell {c + 1} "
                       f"({cell!r}) is beyond the last column {self._name_at(self.width - 1)!r}, so the values "
                       f"may be shifted; fix the row or the header")
            if not profile:
                self.findings.add(("long",), r, problem)
            return row, problem
        if len(row) < self.width and not profile:
            self.findings.add(("short",), r, f"{len(row)} of {self.width} cells")
        return row, None

    def _name_at(self, index: int) -> str:
        return next((c.name for c in self.columns if c.index == index), f"column {index + 1}")

    def _cell(self, r: int, column: Column, raw: Any) -> tuple[Any, str | None]:
        if isinstance(raw, str) and _FORMULA.match(raw):
            self.findings.add(("formula", column.name), r, raw)
            return None, (f"{_short(raw)} is a spreadsheet formula, not a value; formulas are not imported "
                          f"(save the sheet with values only)")
        value = parse_cell(raw, column.decimal or self.table.decimal)
        if isinstance(value, str) and REPLACEMENT_CHAR in value:
            self.findings.add(("damaged", column.name), r, value)
        if value is None or column.type == "empty":
            return value, None
        if column.type == "str":
            # A text column is text throughout, numbers and dates included, as the preview says.
            return (value if isinstance(value, str) else raw.strip() if isinstance(raw, str)
                    else _jsonable(value) if isinstance(value, (date, datetime)) else str(value)), None
        expected = "number" if column.type in _NUMBER_TYPES else "date"
        actual = ("number" if isinstance(value, (int, float)) else
                  "date" if isinstance(value, (date, datetime)) else "text")
        if actual == expected:
            return value, None
        why = f"{_short(raw)} is not a {expected}, which the column holds"
        mark = column.decimal or self.table.decimal
        other = "." if mark == "," else ","
        if expected == "number" and isinstance(raw, str) and _number_or_none(raw, other) is not None:
            why += (f": it is written with {other!r} as the decimal mark, the column is read with {mark!r} "
                    f"({column.decimal_source or 'file convention'}); give decimal={column.name}={other} if that "
                    f"is wrong")
        self.findings.add(("mismatch", column.name), r, why)
        return value, why

    # Decisions from the head --------------------------------------------------

    def _decide_decimals(self, head: list[_DataRow], options: TableOptions | None) -> None:
        chosen = _decimal_options(options, self.columns)
        evidence: dict[int, dict[str, list[tuple[int, str]]]] = {}
        for column in self.columns:
            found: dict[str, list[tuple[int, str]]] = {",": [], ".": [], "?": []}
            for row in head:
                raw = row.raw[column.index] if column.index < len(row.raw) else None
                if not isinstance(raw, str) or _FORMULA.match(raw):
                    continue
                comma, point = _number_or_none(raw, ","), _number_or_none(raw, ".")
                if comma is not None and point is None:
                    found[","].append((row.index, raw))
                elif point is not None and comma is None:
                    found["."].append((row.index, raw))
                elif comma is not None and comma != point:
                    found["?"].append((row.index, raw))
            evidence[column.index] = found
        in_file = {mark: sum(len(evidence[c.index][mark]) for c in self.columns) for mark in ",."}
        for column in self.columns:
            found = evidence[column.index]
            if column.name in chosen:
                column.decimal, column.decimal_source = chosen[column.name], "option"
            elif found[","] or found["."]:
                column.decimal = "," if len(found[","]) >= len(found["."]) else "."
                column.decimal_source = "values"
            elif found["?"]:
                r, example = found["?"][0]
                as_comma, as_point = parse_number(example, ","), parse_number(example, ".")
                if bool(in_file[","]) != bool(in_file["."]):
                    column.decimal = "," if in_file[","] else "."
                    column.decimal_source = "other columns"
                    reason = "as the other columns of the file write their numbers"
                else:
                    column.decimal, column.decimal_source = self.table.decimal, "file convention"
                    kind = ("workbooks" if self.table.kind == "xlsx"
                            else f"{self.table.delimiter!r}-separated files")
                    reason = f"nothing in the file decides; {column.decimal!r} is the usual decimal mark of {kind}"
                value, other = (as_comma, ".") if column.decimal == "," else (as_point, ",")
                self.warnings.append(
                    f"column {column.name!r}: numbers such as {example!r} (row {r + 1}) can be read as {as_comma} or "
                    f"{as_point}; they are read as {value} ({column.decimal!r} is the decimal mark: {reason}); if "
                    f"that is wrong, give decimal={column.name}={other}")

    def _decide_types(self, head: list[_DataRow]) -> None:
        for column in self.columns:
            kinds = {"value": 0, "text": 0}
            first_text = None
            for row in head:
                raw = row.raw[column.index] if column.index < len(row.raw) else None
                if isinstance(raw, str) and _FORMULA.match(raw):
                    continue
                value = parse_cell(raw, column.decimal or self.table.decimal)
                if value is None:
                    column.missing += not _is_blank(raw)
                elif isinstance(value, str):
                    kinds["text"] += 1
                    first_text = first_text or (row.index, value)
                else:
                    kinds["value"] += 1
                    column.type = _merge_type(column.type, value) if column.type != "str" else "str"
            if kinds["text"] and kinds["text"] >= kinds["value"]:
                if kinds["value"]:
                    self.warnings.append(f"column {column.name!r} mixes text with numbers or dates; it is read as "
                                         f"text throughout, numbers and dates included")
                column.type = "str"
            if column.decimal is not None and column.type not in _NUMBER_TYPES and column.decimal_source != "option":
                column.decimal = column.decimal_source = None

    # What was noticed -------------------------------------------------------------

    def noticed(self) -> list[str]:
        """Warnings: the decisions, and what the rows read so far showed."""
        warnings = list(self.warnings)
        for key, (count, r, detail) in self.findings.seen.items():
            kind, name = key[0], key[1] if len(key) > 1 else ""
            first = f"first: row {r + 1}"
            if kind == "realigned":
                parts = next(p for t, p in self.groups if t.name == name)
                warnings.append(
                    f"{count} rows leave column {detail!r} empty and have the values after it one column to the "
                    f"right ({first}): they are read one column to the left, because only then do "
                    f"{_quoted([p.name for p in parts])} add up to {name!r}; the last column "
                    f"{self._name_at(len(self.table.rows[self.layout.name_row]) - 1)!r} has no value in those rows")
            elif kind == "long":
                warnings.append(f"{count} rows have more cells than the header names columns ({first}: {detail}); "
                                f"the import refuses them")
            elif kind == "short":
                warnings.append(f"{count} rows have fewer cells than the header ({first}: {detail}); the missing "
                                f"cells at the end are read as empty")
            elif kind == "formula":
                warnings.append(f"column {name!r}: {count} cells are spreadsheet formulas, not values ({first}: "
                                f"{_short(detail)}); the import refuses those rows if the column is imported")
            elif kind == "mismatch":
                warnings.append(f"column {name!r}: {count} cells do not fit the column ({first}: {detail}); the "
                                f"import refuses those rows if the column is imported")
            elif kind == "damaged":
                warnings.append(
                    f"encoding problem in {count} values of column {name!r} ({first}: {detail!r}): letters were "
                    f"lost before the upload (U+FFFD). As a sensor such a name is another sensor than the undamaged "
                    f"one; map it with sensor_map={detail}=<the undamaged name>")
        return warnings


def _part_groups(columns: list[Column]) -> list[tuple[Column, list[Column]]]:
    """A total and its adjacent parts, recognised by their names: ``Fußgänger insgesamt``
    and ``Fußgänger insgesamt Richtung Neumarkt``, ``… Richtung Neuer Wall``."""
    groups = []
    for total in columns:
        parts = [c for c in columns if c is not total and c.name.startswith(f"{total.name} ")]
        indices = [c.index for c in parts]
        if len(parts) >= 2 and indices == list(range(indices[0], indices[0] + len(parts))):
            groups.append((total, parts))
    return sorted(groups, key=lambda group: group[1][0].index)


def _any_number(cell: Any) -> int | float | None:
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return cell
    if _is_blank(cell):
        return None
    return parse_number(str(cell), ",")


def _decimal_options(options: TableOptions | None, columns: list[Column]) -> dict[str, str]:
    given = options.decimal if options is not None else None
    if given is None:
        return {}
    names = [c.name for c in columns]
    chosen = {name: given for name in names} if isinstance(given, str) else dict(given)
    for name, mark in chosen.items():
        if mark not in (",", "."):
            raise _option_error(f"decimal for {name!r} must be ',' or '.', got {mark!r}")
        if name not in names:
            raise _option_error(f"decimal: no column {name!r}; columns are {names}")
    return chosen


def _quoted(names: list[str], most: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _short(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "…")


def _merged_heading(table: Table, r: int, row: list[Any], columns: list[Column]) -> str | None:
    """A row of labels only, at least one of them merged across columns (Berlin's
    ``Mitte (01) | 01  Mitte`` spanning the table): a section heading, not data."""
    if not table.horizontal_merges:
        return None
    cells = [(c.index, row[c.index]) for c in columns if c.index < len(row) and not _is_blank(row[c.index])]
    if not any((r, index) in table.horizontal_merges for index, _ in cells):
        return None
    if any(not isinstance(value, str) or _is_number(value) for _, value in cells):
        return None
    labels = list(dict.fromkeys(clean_label(value) for _, value in cells))
    return " — ".join(labels)


def _sheet(sheet: str | None, options: TableOptions | None) -> str | None:
    if options is None or options.sheet is None:
        return sheet
    if sheet is not None and sheet != options.sheet:
        raise _option_error(f"sheet {sheet!r} and options.sheet {options.sheet!r} disagree; give one")
    return options.sheet


def preview(data: bytes | str | BinaryIO, n: int = 20, *, filename: str | None = None,
            sheet: str | None = None, options: TableOptions | None = None) -> Preview:
    """What the import would read, from the head of the file only (see :data:`HEAD_ROWS`).
    ``options`` override header detection and decimal marks (see :class:`TableOptions`)."""
    table = read_table(data, filename=filename, sheet=_sheet(sheet, options))
    reader = _TableReader(table, options)
    rows = list(reader.head())
    warnings = reader.noticed()
    skipped = [row for row in rows if not row.cells]
    if skipped:
        warnings.append(f"{len(skipped)} rows with a single value (or only labels merged across columns) are "
                        f"read as section headings or footnotes, not data (first: row {skipped[0].index + 1}: "
                        f"{skipped[0].section!r})")
    if not table.complete:
        warnings.append(f"the preview read the first {len(table.rows)} rows; the import reads and checks every row")
    layout = reader.layout
    samples = [{c.name: _jsonable(v) for c, v in zip(layout.columns, row.cells)} for row in rows if row.cells][:n]
    return Preview(sheet=table.sheet, sheets=table.sheets, encoding=table.encoding,
                   delimiter=table.delimiter, header_row=layout.name_row + 1,
                   header_rows=[r + 1 for r in layout.header_rows], data_start_row=layout.data_start + 1,
                   columns=layout.columns, rows=samples, warnings=warnings,
                   header_source="options" if options is not None and options.header_row is not None
                   else "detected", rows_read=len(table.rows), complete=table.complete)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def import_table(data: bytes | str | BinaryIO, tenant: str, mapping: TableMapping, *, filename: str | None = None,
                 sheet: str | None = None, options: TableOptions | None = None) -> ParseResult:
    """:func:`import_chunks` gathered into one result."""
    result = ParseResult()
    for chunk in import_chunks(data, tenant, mapping, filename=filename, sheet=sheet, options=options):
        result.events += chunk.events
        result.rejected += chunk.rejected
        result.warnings += chunk.warnings
    return result


def import_chunks(data: bytes | str | BinaryIO, tenant: str, mapping: TableMapping, *,
                  filename: str | None = None, sheet: str | None = None, options: TableOptions | None = None,
                  chunk_rows: int = IMPORT_CHUNK_ROWS) -> Iterator[ParseResult]:
    """Rows → events, a result per ``chunk_rows`` rows as the file is read, so memory stays
    bounded; the warnings come with the last. Every row that does not become an event is
    rejected with the reason, including section headings and footnote rows. ``options``:
    the same overrides the preview was given. A mapping that does not fit the file raises
    before the first result."""
    table = read_table(data, filename=filename, sheet=_sheet(sheet, options))
    reader = _TableReader(table, options)
    by_name = {c.name: c for c in reader.columns}

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
    used = {c.index for c in (time_column, sensor_column) if c is not None} | {c.index for c, _ in field_columns}
    clock = LocalClock(ZoneInfo(mapping.timezone))
    reference = _reference_instant(mapping, clock)
    return _events(reader, tenant, mapping, used, sensor_column, time_column, field_columns, clock, reference,
                   chunk_rows)


def _events(reader: _TableReader, tenant: str, mapping: TableMapping, used: set[int], sensor_column: Column | None,
            time_column: Column | None, field_columns: list[tuple[Column, str]], clock: LocalClock,
            reference: datetime | None, chunk_rows: int) -> Iterator[ParseResult]:
    table = reader.table
    result = ParseResult()
    # One event per sensor and time: a second row with both the same would get the same
    # event_id and silently replace the first in the warehouse (Berlin's "Zusammen" rows).
    # Keys are kept as hashes, so this costs little memory per row of a large file.
    seen: dict[int, int] = {}
    for count, row in enumerate(reader.rows(used), start=1):
        where = f"row {row.index + 1}" + (f" (sheet {table.sheet!r})" if table.sheet else "")
        try:
            if not row.cells and row.problem is None:
                raise ValueError(f"not a data row (section heading or footnote): {row.section!r}")
            if row.problem is not None:
                raise ValueError(row.problem)
            problem = next((why for index, why in row.problems.items() if index in used), None)
            if problem is not None:
                raise ValueError(problem)
            cells = row.cells
            sensor = mapping.sensor_id or _text(cells[sensor_column.index], sensor_column.name)
            sensor = mapping.sensor_names.get(sensor, sensor)
            observed = reference or _instant(cells[time_column.index], time_column.name, clock, sensor)
            fields = {target: _jsonable(cells[c.index]) for c, target in field_columns}
            units = {target: mapping.units.get(target, c.unit) for c, target in field_columns}
            key = hash((sensor, observed))
            if key in seen:
                raise ValueError(
                    f"sensor {sensor!r} at {observed.isoformat()} is already row {seen[key]}: "
                    f"there is one event per sensor and time, so this row would replace that one in the "
                    f"warehouse; map a sensor column (or timestamp) whose values tell the rows apart")
            metadata = {"section": row.section} if row.section else {}
            result.events.append(Observation(
                tenant=tenant, dataset=mapping.dataset, source=mapping.source, sensor_id=sensor,
                observed_at=observed, fields=fields, units={k: v for k, v in units.items() if v},
                metadata=metadata))
            seen[key] = row.index + 1
        except (EventError, ValueError) as exc:
            result.reject(where, str(exc), row.raw)
        if count % chunk_rows == 0:
            yield result
            result = ParseResult()
    result.warnings = reader.noticed()
    yield result


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
