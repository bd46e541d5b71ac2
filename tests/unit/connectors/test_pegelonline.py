from datetime import datetime, timezone

from urbanstack.runtime.connectors import pegelonline


def test_station_catalogue(shared):
    stations, rejected = pegelonline.parse_stations(shared("water_levels/pegelonline_v2_stations_2014-04.json"))
    assert len(stations) == 605 and not rejected
    assert sum(s.lon is None for s in stations) == 15
    koeln = next(s for s in stations if s.name == "KÖLN")
    assert (koeln.uuid, koeln.water_name, koeln.km) == ("a6ee8177-107b-47dd-bcfd-30960ccc6e9c", "RHEIN", 688.0)
    assert round(koeln.lon, 4) == 6.9633 and round(koeln.lat, 4) == 50.9369


def test_current_measurement_with_offset(shared):
    stations, _ = pegelonline.parse_stations(shared("water_levels/pegelonline_v2_stations_2014-04.json"))
    koeln = next(s for s in stations if s.name == "KÖLN")
    result = pegelonline.parse_measurements(
        shared("water_levels/pegelonline_v2_currentmeasurement_openhab.json"), "koeln", koeln)
    (event,) = result.events
    assert event.observed_at == datetime(2021, 8, 1, 14, tzinfo=timezone.utc)
    assert event.fields == {"water_level": 238.0, "station_name": "KÖLN", "water_name": "RHEIN"}
    assert event.units == {"water_level": "cm"} and event.dataset == "water_levels"
    assert event.metadata["trend"] == -1 and event.sensor_id == koeln.uuid


def test_stations_with_current_measurements(own):
    result = pegelonline.parse_stations_with_measurements(own("pegelonline_stations_with_measurements.json"), "koeln")
    koeln, achleiten = result.events
    assert koeln.fields == {"water_level": 231.0, "discharge": 1530.0, "station_name": "KÖLN",
                            "water_name": "RHEIN"}
    assert koeln.units == {"water_level": "cm", "discharge": "m³/s"}
    assert koeln.observed_at == datetime(2024, 10, 27, 1, 30, tzinfo=timezone.utc)
    assert achleiten.fields["water_level"] == 412.0 and achleiten.lon is None  # 4.12 m
    reasons = [r.reason for r in result.rejected]
    assert "no 'timeseries'" in reasons[0] and "'ft'" in reasons[1]


def test_measurement_list_rejects_bad_records():
    station = pegelonline.Station("u", "1", "X", "Y", None, None, None, None)
    data = (b'[{"timestamp": "2024-01-01T00:00:00+01:00", "value": 100}, {"timestamp": "2024-01-01T00:15:00",'
            b' "value": 101}, {"timestamp": "2024-01-01T00:30:00+01:00", "value": "hoch"}]')
    result = pegelonline.parse_measurements(data, "x", station)
    assert [e.fields["water_level"] for e in result.events] == [100]
    assert [r.where for r in result.rejected] == ["measurements[1]", "measurements[2]"]
