from datetime import datetime, timezone

from urbanstack.runtime.connectors import sensorthings


def test_things_with_latest_observation_interval_time(shared):
    data = shared("sensorthings/iot_hamburg_v1.1_HamburgerRadzaehlnetz_things_latest_observation.json")
    result = sensorthings.parse_observations(data, "hamburg", "bicycle_counts", field="bicycles")
    assert len(result.events) == 97 and not result.rejected
    assert "next page" in result.warnings[0]
    event = next(e for e in result.events if e.sensor_id == "11796")
    assert event.fields == {"bicycles": 60} and event.units == {"bicycles": ""}
    assert event.observed_at == datetime(2022, 6, 14, 10, 0, tzinfo=timezone.utc)
    assert event.metadata["phenomenon_end"] == "2022-06-14T10:14:59.000Z"
    assert event.metadata["thing_name"] == "Verkehrszählstelle 0295970" and event.metadata["unit_name"] == "Anzahl"


def test_datastreams_with_selected_observations(shared):
    data = shared("sensorthings/iot_hamburg_v1.0_StadtRad_datastreams_observations.json")
    result = sensorthings.parse_observations(data, "hamburg", "bike_sharing")
    assert len(result.events) == 15000 and not result.rejected
    latest = next(e for e in result.events if e.sensor_id == "218")
    assert latest.fields == {"value": 22}
    assert latest.observed_at == datetime(2023, 3, 24, 10, 3, 30, 992000, tzinfo=timezone.utc)


def test_things_with_locations_and_string_results(shared):
    data = shared("sensorthings/iot_hamburg_v1.0_E-Ladestationen_things_expanded.json")
    result = sensorthings.parse_observations(data, "hamburg", "ev_charging")
    assert len(result.events) + len(result.rejected) == 657
    assert len(result.rejected) == 197 and all("no result" in r.reason for r in result.rejected)
    first = next(e for e in result.events if e.metadata.get("observation_id") == 343263358)
    assert first.fields == {"zustand": "charging"}  # field named after the ObservedProperty
    assert (first.lon, first.lat) == (9.9266, 53.55308) and first.sensor_id == "8519"


def test_observation_list_needs_its_datastream():
    data = b'{"value": [{"phenomenonTime": "2024-01-01T00:00:00Z", "result": 1.5}, {"result": 2}]}'
    assert "Datastream" in sensorthings.parse_observations(data, "x", "d").rejected[0].reason
    stream = {"@iot.id": 7, "unitOfMeasurement": {"symbol": "°C"}}
    result = sensorthings.parse_observations(data, "x", "d", field="temperature", datastream=stream)
    assert result.events[0].units == {"temperature": "°C"}
    assert "phenomenonTime" in result.rejected[0].reason
