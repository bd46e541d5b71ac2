from datetime import date, datetime, timezone

import pytest

from urbanstack.runtime.connectors import tabular
from urbanstack.runtime.connectors.tabular import TableMapping

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
    assert len(result.events) == 107 and not result.rejected
    total = next(e for e in result.events if e.sensor_id == "Hamburg")
    assert total.fields["population"] == 1788994


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
    assert len(result.events) == 107 and not result.rejected
    assert next(e for e in result.events if e.sensor_id == "HafenCity").fields["population"] == 1914


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
    assert all("not a data row" in r.reason for r in result.rejected) and result.rejected


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
