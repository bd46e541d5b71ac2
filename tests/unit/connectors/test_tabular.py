import re
from datetime import date, datetime, timezone

import pytest

from urbanstack.runtime.connectors import tabular
from urbanstack.runtime.connectors.tabular import TableMapping, TableOptions

STICHTAG = datetime(2012, 12, 31, 23, tzinfo=timezone.utc)  # 01.01.2013 00:00 in Berlin


def test_own_upload_title_rows_german_numbers_and_footnotes(own):
    preview = tabular.preview(own("upload_guetersloh_cp1252.csv"))
    assert (preview.encoding, preview.delimiter, preview.header_row, preview.data_start_row) == ("cp1252", ";", 3, 4)
    columns = {c.name: c for c in preview.columns}
    assert (columns["Fläche (km²)"].type, columns["Fläche (km²)"].unit) == ("float", "km²")
    assert columns["Einwohner"].type == "int" and columns["Einwohner"].missing == 1  # '¹' stripped, '-'
    assert columns["Stichtag"].type == "date" and columns["Anteil Ü65 in %"].unit == "%"
    assert preview.rows[1]["Einwohner"] == 12675 and preview.rows[0]["Einwohner"] == 1234
    assert preview.rows[3]["Anteil Ü65 in %"] == -3.5
    result = tabular.import_table(own("upload_guetersloh_cp1252.csv"), "guetersloh", TableMapping(
        dataset="districts", sensor_column="Stadtteil", timestamp_column="Stichtag",
        fields={"Einwohner": "population", "Fläche (km²)": "area"}, units={"population": "persons"}))
    assert [e.sensor_id for e in result.events] == ["Innenstadt", "Avenwedde", "Friedrichsdorf", "Isselhorst"]
    assert result.events[0].fields == {"population": 1234, "area": 12.45}
    assert result.events[0].units == {"population": "persons", "area": "km²"}
    assert result.events[0].observed_at == datetime(2024, 12, 30, 23, tzinfo=timezone.utc)
    assert result.events[2].fields["population"] is None
    assert [r.where for r in result.rejected] == ["row 9"] and "footnote" in result.rejected[0].reason


def test_mapping_errors_are_explained(own):
    with pytest.raises(ValueError, match="no column 'Bogus'"):
        tabular.import_table(own("upload_guetersloh_cp1252.csv"), "g", TableMapping(
            dataset="d", sensor_column="Bogus", reference_date=date(2024, 12, 31), fields=["Einwohner"]))
    with pytest.raises(ValueError, match="either timestamp_column or reference_date"):
        tabular.import_table(own("upload_guetersloh_cp1252.csv"), "g", TableMapping(
            dataset="d", sensor_column="Stadtteil", fields=["Einwohner"]))


def test_koeln_stadtteile(shared):
    data = shared("municipal_statistics/koeln_2012_Altersgruppen_Stadtteil.csv")
    preview = tabular.preview(data)
    assert (preview.delimiter, preview.header_row, [c.name for c in preview.columns][:4]) == (
        ",", 1, ["Nr.", "Stadtteil", "Einwohner insgesamt", "0 - 2"])
    result = tabular.import_table(data, "koeln", TableMapping(
        dataset="population_by_age", sensor_column="Nr.", reference_date=date(2013, 1, 1),
        fields=["Stadtteil", "Einwohner insgesamt", "0 - 2", "80 u. älter"]))
    assert len(result.events) == 86 and not result.rejected
    first = result.events[0]
    assert first.sensor_id == "101" and first.observed_at == STICHTAG
    assert first.fields == {"stadtteil": "Altstadt-Süd", "einwohner_insgesamt": 27515, "v_0_2": 521,
                            "v_80_u_aelter": 1149}


def test_koeln_city_total(shared):
    preview = tabular.preview(shared("municipal_statistics/koeln_2012_Altersgruppen_Insgesamt.csv"))
    assert preview.rows == [{**preview.rows[0], "Stadt Köln": "Köln insgesamt", "Einwohner insgesamt": 1044555}]
    assert [c.name for c in preview.columns][3] == "3 - 5"  # leading space removed


def test_hamburg_author_csv_export(shared):
    data = shared("municipal_statistics/hamburg_Daten_fuer_die_Stadtteilprofile_2014_authorexport.csv")
    preview = tabular.preview(data)
    columns = {c.name: c for c in preview.columns}
    assert columns["Fläche in km²"].unit == "km²" and columns["Bevölkerung"].type == "int"
    assert columns["Anteil der unter 18-Jährigen in %"].type == "float"
    row = preview.rows[0]
    assert (row["Stadtgebiet"], row["Bevölkerung"], row["Anteil der unter 18-Jährigen in %"],
            row["Wanderungssaldo"]) == ("Hamburg-Altstadt", 1675, 9.7, -23)
    result = tabular.import_table(data, "hamburg", TableMapping(
        dataset="district_profiles", sensor_column="Stadtgebiet", reference_date=date(2013, 12, 31),
        fields={"Bevölkerung": "population", "Fläche in km²": "area"}))
    total = next(e for e in result.events if e.sensor_id == "Hamburg")
    assert total.fields["population"] == 1788994
    _district_totals_named_like_quarters_are_rejected(result, first_row=2)


def _district_totals_named_like_quarters_are_rejected(result, first_row):
    """Four Bezirk total rows carry the name of a Stadtteil listed above them. Both rows would be
    one event (same sensor, same date) and the later would replace the earlier in the warehouse:
    the quarter Eimsbüttel (56,097 residents, row 32) became the district (252,340, row 103)."""
    assert len(result.events) == 103 and len({e.event_id for e in result.events}) == 103
    assert [e.fields["population"] for e in result.events if e.sensor_id == "Eimsbüttel"] == [56097]
    offset = first_row - 2  # the CSV's data start in row 2, the workbook's in row 5
    assert [r.where.split(" (")[0] for r in result.rejected] == [f"row {n + offset}" for n in (103, 105, 106, 107)]
    assert f"'Eimsbüttel' at 2013-12-30T23:00:00+00:00 is already row {32 + offset}" in result.rejected[0].reason


def test_hamburg_xlsx_multi_row_header(shared):
    data = shared("municipal_statistics/hamburg_Daten_fuer_die_Stadtteilprofile_2014.xlsx")
    preview = tabular.preview(data)
    assert (preview.header_rows, preview.header_row, preview.data_start_row) == ([2, 3, 4], 3, 5)
    columns = {c.name: c for c in preview.columns}
    assert columns["Bevölkerung"].group == "Bevölkerung und Haushalte 31.12.2013"
    assert sum(c.missing for c in preview.columns) == 84  # the '.' cells
    result = tabular.import_table(data, "hamburg", TableMapping(
        dataset="district_profiles", sensor_column="Stadtgebiet", reference_date=date(2013, 12, 31),
        fields={"Bevölkerung": "population", "Fläche in km²": "area"}))
    assert next(e for e in result.events if e.sensor_id == "HafenCity").fields["population"] == 1914
    _district_totals_named_like_quarters_are_rejected(result, first_row=5)


def test_berlin_publication_sheet(shared):
    data = shared("municipal_statistics/berlin_SB_A01-05-00_2024h02_BE.xlsx")
    preview = tabular.preview(data, sheet="T5")
    assert [c.name for c in preview.columns] == ["Bezirk — Alter von … bis unter … Jahren", "Insgesamt",
                                                 "ledig", "verheiratet", "verwitwet", "geschieden",
                                                 "Lebenspartnerschaft"]
    assert preview.columns[2].group == "Familienstand"
    result = tabular.import_table(data, "berlin", TableMapping(
        dataset="residents_by_marital_status", sensor_column="Bezirk — Alter von … bis unter … Jahren",
        reference_date=date(2024, 12, 31), fields={"Insgesamt": "residents", "ledig": "single"}), sheet="T5")
    mitte = result.events[0]
    assert (mitte.sensor_id, mitte.fields) == ("Mitte", {"residents": 397004, "single": 240196})
    total = [e for e in result.events if e.sensor_id == "Insgesamt"][-1]
    assert total.fields["residents"] == 3897145
    # The age groups repeat under "Deutsche", "Ausländer" and "insgesamt": with the label as the
    # sensor only the first section can be stored; the others are refused, not silently replaced.
    assert len({e.event_id for e in result.events}) == len(result.events) == 26
    young = [e for e in result.events if e.sensor_id == "18 - 25"]
    assert [(e.fields["residents"], e.metadata) for e in young] == [(196405, {"section": "Deutsche"})]
    repeated = [r for r in result.rejected if "is already row" in r.reason]
    assert len(repeated) == 2 * 12 - 1  # 12 labels in two later sections; "Insgesamt" is unique
    assert repeated[0].where == "row 38 (sheet 'T5')"
    assert repeated[0].reason.startswith("sensor 'unter 18' at 2024-12-30T23:00:00+00:00 is already row 24")
    assert all("not a data row" in r.reason for r in result.rejected if r not in repeated)


def test_meteostat_xlsx_text_times_in_utc(shared):
    data = shared("weather/meteostat_hourly_2023-03-23_to_24_export.xlsx")
    preview = tabular.preview(data)
    assert {c.name: c.type for c in preview.columns}["time"] == "datetime"
    result = tabular.import_table(data, "hamburg", TableMapping(
        dataset="weather", sensor_id="meteostat-hamburg", timestamp_column="time", timezone="UTC",
        fields={"temp": "temperature", "prcp": "precipitation", "pres": "pressure_msl"},
        units={"temperature": "°C", "precipitation": "mm", "pressure_msl": "hPa"}))
    assert len(result.events) == 48 and not result.rejected
    third = result.events[2]
    assert third.observed_at == datetime(2023, 3, 23, 2, tzinfo=timezone.utc)
    assert third.fields == {"temperature": 10.3, "precipitation": 1.1, "pressure_msl": 1002.1}


# Header overrides (TableOptions) -----------------------------------------------------

BERLIN = "municipal_statistics/berlin_SB_A01-05-00_2024h02_BE.xlsx"
BERLIN_AREA = "Bezirk Bezirk (alt) Ortsteil (s.Karte/Grafik 6) (column 2)"
# Moabit and the Berlin total per sheet, read off the workbook (cells C10 and C173).
BERLIN_T11_T13 = {"T11": (84490, 3897145), "T12": (47742, None), "T13": (30224, None)}


@pytest.mark.parametrize("sheet", sorted(BERLIN_T11_T13))
def test_berlin_ortsteile_sheets_need_and_honour_a_header_override(shared, sheet):
    data = shared(BERLIN)
    detected = tabular.preview(data, sheet=sheet)
    # Detection takes the first district heading (row 6) for the header: the age groups are lost.
    assert detected.header_row == 6 and "unter 6" not in [c.name for c in detected.columns]

    options = TableOptions(sheet=sheet, header_row=4, header_rows=2)
    preview = tabular.preview(data, options=options)
    assert (preview.header_source, preview.header_rows, preview.header_row, preview.data_start_row) == (
        "options", [3, 4], 4, 6)
    columns = {c.name: c for c in preview.columns}
    assert list(columns)[2:] == ["Insgesamt", "unter 6", "6 - 15", "15 - 18", "18 - 27", "27 - 45", "45 - 55",
                                 "55 - 65", "65 und mehr", "Darunter weiblich"]
    assert columns["unter 6"].group == "Davon im Alter von ... bis unter ... Jahren"
    assert all(columns[name].type == "int" for name in list(columns)[2:])
    assert preview.rows[0][BERLIN_AREA] == "Mitte" and not any("mixes text" in w for w in preview.warnings)

    moabit, berlin = BERLIN_T11_T13[sheet]
    result = tabular.import_table(data, "berlin", TableMapping(
        dataset="residents_by_age", sensor_column=BERLIN_AREA, reference_date=date(2024, 12, 31),
        fields={"Insgesamt": "residents", "unter 6": "under_6"}), options=options)
    by_area = {}
    for event in result.events:
        by_area.setdefault(event.sensor_id, event)
    assert by_area["Moabit"].fields["residents"] == moabit
    assert by_area["Moabit"].metadata == {"section": "Tiergarten (02)"}
    assert by_area["Mitte"].metadata == {"section": "Mitte (01) — 01 Mitte"}  # heading merged across columns
    if berlin is not None:
        assert by_area["Berlin"].fields["residents"] == berlin
    assert result.events[0].observed_at == datetime(2024, 12, 30, 23, tzinfo=timezone.utc)
    assert len({e.event_id for e in result.events}) == len(result.events) == 102
    # The 'Zusammen' and 'Insgesamt' subtotal rows after the first are refused, not stored over it.
    assert by_area["Zusammen"].fields["residents"] == by_area["Mitte"].fields["residents"]
    repeated = [r for r in result.rejected if "is already row" in r.reason]
    assert {r.reason.split(" at ")[0] for r in repeated} == {"sensor 'Zusammen'", "sensor 'Insgesamt'"}
    assert result.rejected and all("not a data row" in r.reason for r in result.rejected if r not in repeated)


def _year_workbook() -> bytes:
    """A town-hall sheet whose header row holds years: numbers, so detection takes it for data."""
    import io

    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Einwohner "
    sheet.append(["Einwohnerinnen und Einwohner nach Stadtteilen, jeweils 31.12."])
    sheet.append(["Stadtteil", "Einwohner", None, None])
    sheet.append([None, 2022, 2023, 2024])
    sheet.append([])
    for row in (["Innenstadt", 1200, 1210, "1 225"], ["Avenwedde", 980, 990, "–"], ["Isselhorst", 450, 455, 461]):
        sheet.append(row)
    sheet.append(["¹ vorläufig"])
    sheet.merge_cells("A2:A3")
    sheet.merge_cells("B2:D2")
    buffer = io.BytesIO()
    workbook.save(buffer)
    workbook.create_sheet("Leer")
    return buffer.getvalue()


def test_project_workbook_with_year_header_is_misread_without_options():
    preview = tabular.preview(_year_workbook())
    assert preview.header_source == "detected" and preview.data_start_row == 3  # the year row taken for data
    assert "2024" not in [c.name for c in preview.columns]


def test_project_workbook_header_override_in_preview_and_import():
    data = _year_workbook()
    options = TableOptions(sheet="Einwohner", header_row=3, header_rows=2)  # trailing space forgiven
    preview = tabular.preview(data, options=options)
    assert (preview.sheet, preview.header_source, preview.header_rows, preview.header_row,
            preview.data_start_row) == ("Einwohner ", "options", [2, 3], 3, 5)
    assert [(c.name, c.group, c.type) for c in preview.columns] == [
        ("Stadtteil", None, "str"), ("2022", "Einwohner", "int"), ("2023", "Einwohner", "int"),
        ("2024", "Einwohner", "int")]
    assert preview.rows[0] == {"Stadtteil": "Innenstadt", "2022": 1200, "2023": 1210, "2024": 1225}
    assert [c.missing for c in preview.columns] == [0, 0, 0, 1]

    result = tabular.import_table(data, "guetersloh", TableMapping(
        dataset="population", sensor_column="Stadtteil", reference_date=date(2024, 12, 31),
        fields={"2024": "population"}), options=options)
    assert [(e.sensor_id, e.fields["population"]) for e in result.events] == [
        ("Innenstadt", 1225), ("Avenwedde", None), ("Isselhorst", 461)]
    assert [r.where for r in result.rejected] == ["row 8 (sheet 'Einwohner ')"]
    # An explicit first data row: the import starts there.
    later = tabular.import_table(data, "guetersloh", TableMapping(
        dataset="population", sensor_column="Stadtteil", reference_date=date(2024, 12, 31),
        fields={"2024": "population"}), options=TableOptions(header_row=3, header_rows=2, data_start_row=6))
    assert [e.sensor_id for e in later.events] == ["Avenwedde", "Isselhorst"]


@pytest.mark.parametrize("options, message", [
    (TableOptions(header_row=0), "header_row 0 is out of range: sheet 'Einwohner ' has rows 1 to 8"),
    (TableOptions(header_row=9), "header_row 9 is out of range: sheet 'Einwohner ' has rows 1 to 8"),
    (TableOptions(header_row=3, header_rows=4), "header_rows 4 is out of range: the header ends at row 3"),
    (TableOptions(header_row=3, header_rows=0), "header_rows 0 is out of range"),
    (TableOptions(header_row=4), "header_row 4 of sheet 'Einwohner ' is blank"),
    (TableOptions(header_row=3, data_start_row=3), "data_start_row 3 is out of range: it must be below the header"),
    (TableOptions(header_row=3, data_start_row=20), "data_start_row 20 is out of range"),
    (TableOptions(data_start_row=5), "data_start_row needs header_row"),
    (TableOptions(header_row=8), "has no rows below header_row 8"),
])
def test_out_of_range_options_are_explained(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tabular.preview(_year_workbook(), options=options)
    with pytest.raises(ValueError, match=re.escape(message)):
        tabular.import_table(_year_workbook(), "g", TableMapping(
            dataset="d", sensor_column="Stadtteil", reference_date=date(2024, 12, 31), fields=["2024"]),
            options=options)


def test_sheet_given_twice_must_agree_and_csv_options_name_the_file(own):
    with pytest.raises(ValueError, match="disagree"):
        tabular.preview(_year_workbook(), sheet="Leer", options=TableOptions(sheet="Einwohner", header_row=3))
    with pytest.raises(ValueError, match="header_row 40 is out of range: the file has rows 1 to"):
        tabular.preview(own("upload_guetersloh_cp1252.csv"), options=TableOptions(header_row=40))
    # The override agrees with detection on a sheet detection gets right.
    assert tabular.preview(own("upload_guetersloh_cp1252.csv"), options=TableOptions(header_row=3)).rows == \
        tabular.preview(own("upload_guetersloh_cp1252.csv")).rows
