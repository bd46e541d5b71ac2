"""Figures: the summary a screen reader hears and the CSV a clerk opens must tell the same
numbers as the chart."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone


from urbanstack.runtime.web import charts

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)  # 01:00 in Berlin


def _figure(values, lang="de", unit="°C"):
    rows = [(T0 + timedelta(hours=h), (v,)) for h, v in enumerate(values)]
    return charts.build("t", "Temperatur", "line", [charts.Column("temperature", "avg", unit)], rows, lang=lang)


def test_summary_names_trend_extremes_and_last_value_in_german():
    figure = _figure([5.0, 3.5, 9.25, 8.0])
    assert figure.summary == (
        "temperature (Mittelwert) stieg um 3 °C von 02.03.2026 01:00 bis 02.03.2026 04:00. "
        "Minimum 3,5 °C am 02.03.2026 02:00, Maximum 9,25 °C am 02.03.2026 03:00. "
        "Letzter Wert 8 °C am 02.03.2026 04:00.")
    assert figure.trends[0].direction == "rising" and figure.trends[0].arrow == "↑"


def test_summary_in_english_falling_and_steady():
    falling = _figure([10.0, 2.0, 4.0], lang="en")
    assert falling.summary.startswith("temperature (average) fell by 6 °C from ")
    assert "Minimum 2 °C at" in falling.summary and "Last value 4 °C at" in falling.summary
    steady = _figure([5.0, 9.0, 1.0, 5.1], lang="en")  # change 0.1 of a spread of 8: steady
    assert steady.trends[0].direction == "steady"
    assert "stayed steady" in steady.summary


def test_missing_values_are_skipped_and_empty_series_said_so():
    figure = _figure([None, 4.0, float("nan"), 6.0], lang="en")
    assert figure.trends[0].minimum[1] == 4.0 and figure.trends[0].last[1] == 6.0
    empty = _figure([], lang="de")
    assert empty.summary == "Keine Daten in diesem Zeitraum."
    only_gaps = _figure([None, None], lang="en")
    assert "no values in this time range" in only_gaps.summary


def test_csv_is_german_spreadsheet_csv_with_every_digit():
    figure = charts.build("t", "Join", "line",
                          [charts.Column("pedestrians", "sum", "persons"), charts.Column("temperature", "avg", "°C")],
                          [(T0, (1234, 5.123456789)), (T0 + timedelta(hours=1), (0, None))], lang="en")
    text = charts.to_csv(figure)
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    assert rows[0] == ["time_utc", "time_local", "pedestrians (Summe) [Personen]", "temperature (Mittelwert) [°C]"]
    assert rows[1] == ["2026-03-02T00:00:00Z", "02.03.2026 01:00", "1234", "5,123456789"]
    assert rows[2] == ["2026-03-02T01:00:00Z", "02.03.2026 02:00", "0", ""]
    assert text.endswith("\r\n")
    assert charts.parse_csv_number(rows[1][3]) == 5.123456789


def test_csv_numbers_never_use_exponents():
    assert charts.csv_number(1e-7) == "0,0000001"
    assert charts.csv_number(2.5e16) == "25000000000000000"
    assert charts.csv_number(float("inf")) == ""


def test_unit_words_are_in_the_page_language_and_symbols_stay():
    german = _figure([120, 80, 300], lang="de", unit="persons")
    assert german.summary == (
        "temperature (Mittelwert) stieg um 180 Personen von 02.03.2026 01:00 bis 02.03.2026 03:00. "
        "Minimum 80 Personen am 02.03.2026 02:00, Maximum 300 Personen am 02.03.2026 03:00. "
        "Letzter Wert 300 Personen am 02.03.2026 03:00.")
    assert "persons" not in german.summary
    assert german.header(german.columns[0]) == "temperature (Mittelwert) [Personen]"
    assert german.unit == "Personen"
    english = _figure([120, 80, 300], lang="en", unit="persons")
    assert "rose by 180 persons" in english.summary and english.unit == "persons"
    for unit in ("°C", "m³/s", "%", "hPa", "Persons per hour"):
        assert charts.unit_text(unit, "de") == unit  # symbols and unknown words pass unchanged
    assert charts.unit_text("Vehicles", "de") == "Fahrzeuge" and charts.unit_text(None, "de") == ""


def test_every_unit_word_has_german():
    from urbanstack.runtime.web import i18n

    german = i18n.translations("de")
    for word in charts.UNIT_TEXT.values():
        assert german.gettext(word) != word, f"no German for the unit {word!r}"


def test_chart_json_holds_each_series_with_its_unit_and_is_safe_in_a_script_element():
    import json

    figure = charts.build("j", "Passanten × Temperatur", "line",
                          [charts.Column("pedestrians", "sum", "persons"), charts.Column("t</script>", "avg", "°C")],
                          [(T0, (1234, 5.123456789)), (T0 + timedelta(hours=1), (0, None))], lang="de")
    text = figure.chart_json()
    assert "</" not in text and "<" not in text
    data = json.loads(text)
    assert data["x"] == [int(T0.timestamp()), int(T0.timestamp()) + 3600]
    assert [(s["unit"], s["values"]) for s in data["series"]] == [("Personen", [1234, 0]), ("°C", [5.1235, None])]
    assert data["series"][1]["name"] == "t</script> (Mittelwert) [°C]"
    assert "labels" not in data
    bars = charts.build("b", "Monate", "bar", [charts.Column("pedestrians", "sum", "persons")], [(T0, (1,))], lang="de")
    assert json.loads(bars.chart_json())["labels"] == ["02.03.2026 01:00"]


def test_long_tables_are_not_inline():
    rows = [(T0 + timedelta(hours=h), (float(h),)) for h in range(charts.INLINE_TABLE_ROWS + 1)]
    long = charts.build("l", "Lang", "line", [charts.Column("x", "avg", "°C")], rows)
    short = charts.build("s", "Kurz", "line", [charts.Column("x", "avg", "°C")], rows[:-1])
    assert long.long and not short.long
