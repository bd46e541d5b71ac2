from datetime import datetime, timezone

from urbanstack.runtime.connectors import hystreet


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def by_time(result):
    return {e.observed_at: e for e in result.events}


def test_api_measurements(shared):
    result = hystreet.parse_measurements(shared("pedestrian/hystreet_limburg_148_measurements-0a2a0d.json"),
                                         "limburg")
    assert len(result.events) == 4 and not result.rejected
    first = by_time(result)[utc(2025, 2, 20, 14)]
    assert first.sensor_id == "148" and first.dataset == "pedestrian_counts"
    assert first.fields == {"pedestrians": 1301, "pedestrians_ltr": 694, "pedestrians_rtl": 607,
                            "adults": 1250, "children": 51, "location_name": "Werner-Senger-Straße"}
    assert first.units["pedestrians"] == "persons"
    assert first.metadata["ltr_label"] == "Richtung - Europaplatz"


def test_api_measurements_filtered_to_children_do_not_claim_totals(shared):
    result = hystreet.parse_measurements(shared("pedestrian/hystreet_limburg_148_measurements-4b0a1f.json"),
                                         "limburg")
    first = by_time(result)[utc(2025, 2, 20, 14)]
    assert first.fields == {"children": 51, "location_name": "Werner-Senger-Straße"}


def test_api_malformed_measurement_is_rejected():
    body = b'{"location_id": 1, "name": "X", "measurements": [{"measured_at": "2025-01-01T00:00:00Z", ' \
           b'"total_count": 3}, {"measured_at": "2025-01-01T01:00:00", "total_count": 4}, ' \
           b'{"measured_at": "2025-01-01T02:00:00Z", "counts": [{"count": -1}]}]}'
    result = hystreet.parse_measurements(body, "x")
    assert [e.fields["pedestrians"] for e in result.events] == [3]
    assert [r.where for r in result.rejected] == ["measurements[1]", "measurements[2]"]
    assert "no time zone" in result.rejected[0].reason and "non-negative" in result.rejected[1].reason


def test_moers_june_latin1(shared):
    result = hystreet.parse_csv_export(shared("pedestrian/besucherzahlen-moers-juni-2022-stundlich.csv"), "moers")
    assert len(result.events) == 720 and not result.rejected and not result.warnings
    noon = by_time(result)[utc(2022, 6, 15, 10)]  # 12:00 +0200
    assert noon.fields == {"pedestrians": 1429, "pedestrians_ltr": 694, "pedestrians_rtl": 735,
                           "adults": 1371, "children": 58, "location_name": "Steinstraße, Moers"}
    assert noon.metadata == {"ltr_label": "Richtung Neumarkt", "rtl_label": "Richtung Neuer Wall"}


def test_moers_may_utf8_with_replacement_characters(shared):
    result = hystreet.parse_csv_export(shared("pedestrian/besucherzahlen-moers-mai-2022-stundlich.csv"), "moers")
    assert len(result.events) == 744 and not result.rejected
    assert "U+FFFD" in result.warnings[0]
    assert by_time(result)[utc(2022, 5, 14, 13)].fields["pedestrians"] == 1986
    assert result.events[0].observed_at == utc(2022, 4, 30, 22)


def test_moers_july_shifted_columns_are_realigned(shared):
    result = hystreet.parse_csv_export(shared("pedestrian/besucherzahlen-moers-juli-2022-stundlich.csv"), "moers")
    assert len(result.events) == 744 and not result.rejected
    assert "shifted" in result.warnings[0]
    event = by_time(result)[utc(2022, 7, 9, 9)]
    assert (event.fields["pedestrians"], event.fields["pedestrians_ltr"], event.fields["pedestrians_rtl"],
            event.fields["adults"], event.fields["children"]) == (1540, 818, 722, 1480, 60)


def test_german_local_times_across_dst_and_bad_rows(own):
    result = hystreet.parse_csv_export(own("hystreet_export_dst_latin1.csv"), "guetersloh")
    times = [e.observed_at for e in result.events]
    assert times == [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)]
    assert [e.fields["pedestrians"] for e in result.events] == [12, 8, 6, 4]
    assert result.events[0].fields["location_name"] == "Berliner Straße, Gütersloh"
    reasons = {r.where: r.reason for r in result.rejected}
    assert set(reasons) == {"line 6", "line 7", "line 8"}
    assert "does not exist" in reasons["line 6"]
    assert "viele" in reasons["line 7"]
    assert "expected 10 columns" in reasons["line 8"]


def test_counter_temperature_becomes_weather_events(own):
    result = hystreet.parse_csv_weather(own("hystreet_export_dst_latin1.csv"), "guetersloh")
    assert [e.dataset for e in result.events] == ["weather"] * len(result.events)
    first = result.events[0]
    assert first.observed_at == utc(2024, 10, 26, 23)
    assert first.fields == {"temperature": 9.0} and first.units == {"temperature": "°C"}
    assert first.sensor_id == "Berliner Straße, Gütersloh"


def test_moers_july_temperature_matches_the_counts(shared):
    data = shared("pedestrian/besucherzahlen-moers-juli-2022-stundlich.csv")
    weather = hystreet.parse_csv_weather(data, "moers")
    counts = hystreet.parse_csv_export(data, "moers")
    assert len(weather.events) == len(counts.events) == 744 and not weather.rejected
    # 2022-07-01 00:00 +02:00: 8 pedestrians at 15 °C.
    assert weather.events[0].observed_at == utc(2022, 6, 30, 22)
    assert weather.events[0].fields["temperature"] == 15.0
    assert counts.events[0].fields["pedestrians"] == 8
