"""Uploads must never store wrong numbers silently (issue 9 §1) and one upload must not
exhaust the service (issue 17 §1): the Moers exports as they are, and variants of them
written here (UTF-16, three decimals, formula cells, ragged rows, workbook bombs)."""

from __future__ import annotations

import os
import tracemalloc
from datetime import datetime, timezone

import pytest

from workbooks import SHEET_HEAD, cell_bomb, merge_bomb, workbook

from urbanstack.runtime.connectors import hystreet, tabular
from urbanstack.runtime.connectors.tabular import TableError, TableMapping, TableOptions

MOERS = "pedestrian/besucherzahlen-moers-{}-2022-stundlich.csv"
TOTAL, LTR, RTL, ADULTS, CHILDREN = (
    "Fußgänger insgesamt", "Fußgänger insgesamt Richtung Neumarkt", "Fußgänger insgesamt Richtung Neuer Wall",
    "Erwachsene", "Kinder")


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def counts(data: bytes, **mapping) -> tabular.ParseResult:
    return tabular.import_table(data, "moers", TableMapping(
        dataset="pedestrian_counts", sensor_column="Lage", timestamp_column="Zeitpunkt der Messung",
        fields={TOTAL: "pedestrians", LTR: "pedestrians_ltr", RTL: "pedestrians_rtl", ADULTS: "adults",
                CHILDREN: "children"}, **mapping))


def june_lines(shared) -> list[str]:
    return shared(MOERS.format("juni")).decode("cp1252").split("\r\n")


# Shifted columns ---------------------------------------------------------------------

def test_moers_july_shifted_columns_are_realigned_with_the_reason(shared):
    data = shared(MOERS.format("juli"))
    preview = tabular.preview(data)
    first = preview.rows[0]
    assert (first[TOTAL], first[LTR], first[RTL], first[ADULTS], first[CHILDREN]) == (8, 5, 3, 8, 0)
    realigned = [w for w in preview.warnings if "one column to the left" in w]
    assert realigned and realigned[0].startswith(f"{preview.rows_read - 1} rows leave column '{LTR}' empty")
    assert f"add up to '{TOTAL}'" in realigned[0]

    result = counts(data)
    assert len(result.events) == 744 and not result.rejected
    assert any("one column to the left" in w for w in result.warnings)
    # The same numbers as the hystreet connector reads from this file.
    expected = {e.observed_at: e.fields for e in hystreet.parse_csv_export(data, "moers").events}
    event = next(e for e in result.events if e.observed_at == utc(2022, 7, 9, 9))
    assert event.fields == {k: v for k, v in expected[utc(2022, 7, 9, 9)].items() if k != "location_name"}
    assert (event.fields["pedestrians_ltr"], event.fields["pedestrians_rtl"], event.fields["adults"]) == \
        (818, 722, 1480)
    # June fits its header: nothing to say, nothing realigned.
    assert tabular.preview(shared(MOERS.format("juni"))).warnings == []


def test_a_row_with_more_cells_than_the_header_is_refused_naming_row_and_cell(shared, tmp_path):
    lines = june_lines(shared)
    lines[3] += ";17"                                  # one cell too many: row 4
    lines[5] = lines[5].rsplit(";", 2)[0]               # two cells too few: row 6
    path = tmp_path / "ragged.csv"
    path.write_bytes("\r\n".join(lines).encode("cp1252"))
    preview = tabular.preview(path.read_bytes())
    assert any(w.startswith("1 rows have more cells than the header names columns (first: row 4: row 4 has 15 "
                            "cells but the header names 14 columns: cell 15 ('17')") for w in preview.warnings)
    assert any("1 rows have fewer cells than the header (first: row 6: 12 of 14 cells)" in w for w in preview.warnings)
    result = counts(path.read_bytes())
    assert [r.where for r in result.rejected] == ["row 4"]
    assert "cell 15 ('17') is beyond the last column 'Kinder Richtung Neuer Wall'" in result.rejected[0].reason
    assert len(result.events) == 719


# Number formats -----------------------------------------------------------------------

def _with_total(lines: list[str], write) -> bytes:
    out = [lines[0]]
    for line in lines[1:]:
        if line:
            cells = line.split(";")
            cells[3] = write(int(cells[3]))
            out.append(";".join(cells))
    return "\r\n".join(out).encode("cp1252")


def test_three_decimals_after_a_point_are_decided_by_the_values(shared):
    """Thousands of pedestrians with three decimals: '0.125' cannot be a thousands grouping."""
    data = _with_total(june_lines(shared), lambda n: f"{n / 1000:.3f}")
    preview = tabular.preview(data)
    total = next(c for c in preview.columns if c.name == TOTAL)
    assert (total.type, total.decimal, total.decimal_source) == ("float", ".", "values")
    result = counts(data)
    noon = next(e for e in result.events if e.observed_at == utc(2022, 6, 15, 10))
    assert noon.fields["pedestrians"] == 1.429 and not result.rejected


def test_ambiguous_numbers_are_said_and_can_be_overridden(shared):
    """Every value like '1.250': 1250 or 1.25? Nothing in the file decides; the preview says
    which reading it chose, and the option turns it."""
    data = _with_total(june_lines(shared), lambda n: f"{n + 1000:,}".replace(",", "."))  # 1.011, 1.429 …
    preview = tabular.preview(data)
    total = next(c for c in preview.columns if c.name == TOTAL)
    assert (total.decimal, total.decimal_source) == (",", "file convention")
    warning = next(w for w in preview.warnings if w.startswith(f"column '{TOTAL}'"))
    assert "can be read as 1011 or 1.011; they are read as 1011" in warning
    assert f"give decimal={TOTAL}=." in warning
    assert preview.rows[0][TOTAL] == 1011

    told = tabular.preview(data, options=TableOptions(decimal={TOTAL: "."}))
    total = next(c for c in told.columns if c.name == TOTAL)
    assert (total.decimal, total.decimal_source, told.rows[0][TOTAL]) == (".", "option", 1.011)
    result = tabular.import_table(data, "moers", TableMapping(
        dataset="d", sensor_column="Lage", timestamp_column="Zeitpunkt der Messung", fields={TOTAL: "pedestrians"}),
        options=TableOptions(decimal={TOTAL: "."}))
    assert result.events[0].fields["pedestrians"] == 1.011
    with pytest.raises(TableError, match="decimal: no column 'Bogus'") as refused:
        tabular.preview(data, options=TableOptions(decimal={"Bogus": "."}))
    assert refused.value.code == "invalid_options"


def test_a_number_beyond_the_head_that_contradicts_the_decision_is_refused():
    """The decimal mark is decided from the first rows; a later '7.5' in a ',' column is not
    read as 75 or as text, its row is refused with the option that would read it."""
    rows = ["Zähler;Anzahl"] + [f"s{i};{i},5" for i in range(tabular.HEAD_ROWS + 200)] + ["spät;7.5"]
    result = tabular.import_table("\n".join(rows).encode(), "t", TableMapping(
        dataset="d", sensor_column="Zähler", reference_date=datetime(2024, 1, 1), fields=["Anzahl"]))
    assert len(result.events) == tabular.HEAD_ROWS + 200 and result.events[1].fields == {"anzahl": 1.5}
    assert [(r.where, r.reason) for r in result.rejected] == [(
        f"row {len(rows)}", "column 'Anzahl': '7.5' is not a number, which the column holds: it is written with "
        "'.' as the decimal mark, the column is read with ',' (values); give decimal=Anzahl=. if that is wrong")]


# Encodings and files that are no table ----------------------------------------------------

def test_utf16_with_bom_reads_like_the_original(shared, tmp_path):
    path = tmp_path / "unicode.txt"
    path.write_bytes("\r\n".join(june_lines(shared)).replace(";", "\t").encode("utf-16"))  # Excel's "Unicode text"
    preview = tabular.preview(path.read_bytes())
    assert (preview.encoding, preview.delimiter, preview.rows[0]["Lage"]) == ("utf-16", "\t", "Steinstraße, Moers")
    assert [e.fields for e in counts(path.read_bytes()).events] == \
        [e.fields for e in counts(shared(MOERS.format("juni"))).events]


@pytest.mark.parametrize("name, data, code, message", [
    ("empty", b"", "empty_file", "the file is empty (0 bytes)"),
    ("blank", b"  \r\n\r\n ", "empty_file", "only blank lines"),
    ("header only", None, "header_only", "a single row (Lage, Zeitpunkt der Messung"),
    ("random bytes", os.urandom(20_000), "not_text", "neither CSV text nor an XLSX workbook"),
    ("broken workbook", b"PK\x03\x04" + os.urandom(2000), "unreadable_file", "not a readable XLSX workbook"),
])
def test_files_that_are_no_table_get_their_own_error(shared, name, data, code, message):
    data = data if data is not None else june_lines(shared)[0].encode("cp1252") + b"\r\n"
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        tabular.preview(data)
    assert refused.value.code == code


# Formula cells ------------------------------------------------------------------------------

def test_formula_cells_are_refused_naming_row_and_column(shared):
    lines = june_lines(shared)
    cells = lines[4].split(";")
    cells[0] = "=cmd|' /C calc'!A0"      # row 5, the sensor column
    lines[4] = ";".join(cells)
    cells = lines[6].split(";")
    cells[3] = "=SUM(G7:H7)"              # row 7, a number column
    lines[6] = ";".join(cells)
    data = "\r\n".join(lines).encode("cp1252")
    preview = tabular.preview(data)
    assert any(w.startswith("column 'Lage': 1 cells are spreadsheet formulas") and "row 5" in w
               for w in preview.warnings)
    assert next(c for c in preview.columns if c.name == TOTAL).type == "int"
    result = counts(data)
    reasons = {r.where: r.reason for r in result.rejected}
    assert set(reasons) == {"row 5", "row 7"}
    assert reasons["row 5"].startswith("column 'Lage': \"=cmd|' /C calc'!A0\" is a spreadsheet formula")
    assert reasons["row 7"].startswith(f"column '{TOTAL}': '=SUM(G7:H7)' is a spreadsheet formula")
    assert "=cmd|' /C calc'!A0" not in {e.sensor_id for e in result.events}


def test_text_in_a_number_column_is_refused_not_stored_as_text(shared):
    lines = june_lines(shared)
    cells = lines[8].split(";")
    cells[3] = "viele"
    lines[8] = ";".join(cells)
    result = counts("\r\n".join(lines).encode("cp1252"))
    assert [(r.where, r.reason) for r in result.rejected] == [
        ("row 9", f"column '{TOTAL}': 'viele' is not a number, which the column holds")]
    assert all(isinstance(e.fields["pedestrians"], int) for e in result.events)


# Damaged text ----------------------------------------------------------------------------------

def test_moers_may_damaged_names_are_reported_and_can_be_mapped(shared):
    data = shared(MOERS.format("mai"))
    preview = tabular.preview(data)
    damaged = "Steinstra\ufffde, Moers"
    assert any(w.startswith("encoding problem: the file was damaged before the upload") and
               "'Fu\ufffdg\ufffdnger insgesamt'" in w for w in preview.warnings)
    assert any(w.startswith(f"encoding problem in {preview.rows_read - 1} values of column 'Lage'")
               and f"sensor_map={damaged}=" in w for w in preview.warnings)
    damaged_total = "Fu\ufffdg\ufffdnger insgesamt"
    result = tabular.import_table(data, "moers", TableMapping(
        dataset="pedestrian_counts", sensor_column="Lage", timestamp_column="Zeitpunkt der Messung",
        fields={damaged_total: "pedestrians"}, sensor_names={damaged: "Steinstraße, Moers"}))
    june = counts(shared(MOERS.format("juni")))
    assert {e.sensor_id for e in result.events} == {e.sensor_id for e in june.events} == {"Steinstraße, Moers"}
    assert next(e for e in result.events if e.observed_at == utc(2022, 5, 14, 13)).fields == {"pedestrians": 1986}


# Bounded work ---------------------------------------------------------------------------------------

def _peak_bytes(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_preview_reads_only_the_head_and_import_streams(shared, tmp_path):
    lines = june_lines(shared)
    body = [line.replace("Steinstraße, Moers", f"Zähler {copy}") for copy in range(40) for line in lines[1:] if line]
    path = tmp_path / "large.csv"
    path.write_bytes("\r\n".join([lines[0], *body]).encode("cp1252"))   # 28,800 rows, 2.6 MB
    with path.open("rb") as stream:
        preview = {}
        peak = _peak_bytes(lambda: preview.setdefault("p", tabular.preview(stream)))
    assert (preview["p"].rows_read, preview["p"].complete) == (tabular.HEAD_ROWS, False)
    assert any("the import reads and checks every row" in w for w in preview["p"].warnings)
    assert peak < 4 * 1024 * 1024, peak          # parsing the whole file took 40 MB

    events = []

    def stream_import():
        with path.open("rb") as stream:
            for chunk in tabular.import_chunks(stream, "moers", TableMapping(
                    dataset="pedestrian_counts", sensor_column="Lage", timestamp_column="Zeitpunkt der Messung",
                    fields={TOTAL: "pedestrians"}), chunk_rows=2000):
                events.append(len(chunk.events))    # published and dropped, as the push route does
    peak = _peak_bytes(stream_import)
    assert sum(events) == len(body) and max(events) == 2000
    assert peak < 16 * 1024 * 1024, peak         # building every event first took 60 MB


@pytest.mark.parametrize("bomb, message", [
    (merge_bomb, "the merged range A1:XFD1048576 brings the merged cells to 17,179,869,184; at most 100,000"),
    (cell_bomb, "xl/worksheets/sheet1.xml inflates"),
])
def test_workbook_bombs_are_refused_before_parsing(bomb, message):
    data = bomb()
    assert len(data) < 300_000
    refused = {}

    def preview():
        with pytest.raises(TableError) as caught:
            tabular.preview(data, filename="x.xlsx")
        refused["error"] = caught.value

    peak = _peak_bytes(preview)
    assert (refused["error"].code, refused["error"].status) == ("too_large", 413)
    assert message in str(refused["error"])
    assert peak < 20 * 1024 * 1024, peak


def test_too_many_cells_are_refused_even_when_they_compress_like_real_data():
    rows = (("<row>" + "".join(f"<c><v>{(r * 7919 + c * 104729) % 1000003}</v></c>" for c in range(2100)) + "</row>"
             ).encode() for r in range(1000))
    data = workbook(SHEET_HEAD, rows, b"</sheetData></worksheet>")
    with pytest.raises(TableError, match="has more than 2,000,000 cells, the most read per sheet") as refused:
        tabular.import_table(data, "x", TableMapping(dataset="d", sensor_id="s", reference_date=datetime(2024, 1, 1),
                                                     fields=["column 1"]), filename="x.xlsx")
    assert refused.value.status == 413
