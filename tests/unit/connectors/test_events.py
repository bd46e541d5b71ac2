import json
from datetime import datetime, timedelta, timezone

import pytest

from urbanstack.runtime.events import EventError, Observation, parse_instant

T = datetime(2024, 10, 27, 1, 30, tzinfo=timezone.utc)


def event(**overrides):
    values = dict(tenant="guetersloh", dataset="weather", source="dwd-poi", sensor_id="01049",
                  observed_at=T, fields={"temperature": 9.5, "condition": "dry", "sunshine": None},
                  units={"temperature": "°C"}, lon=8.38, lat=51.9)
    values.update(overrides)
    return Observation(**values)


def test_json_round_trip_is_stable_and_compact():
    original = event(metadata={"station_name": "Gütersloh"})
    payload = original.to_json()
    assert b" " not in payload.replace(b"G\xc3\xbctersloh", b"")
    assert json.loads(payload)["observed_at"] == "2024-10-27T01:30:00Z"
    again = Observation.from_json(payload)
    assert again == original and again.to_json() == payload


def test_event_id_is_deterministic_and_ignores_values():
    assert event().event_id == event(fields={"temperature": 1.0}).event_id
    assert event().event_id != event(sensor_id="01050").event_id
    same_instant = T.astimezone(timezone(timedelta(hours=2)))
    assert event().event_id == event(observed_at=same_instant).event_id


def test_observed_at_is_normalised_to_utc():
    local = datetime(2024, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert event(observed_at=local).observed_at == datetime(2024, 7, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("overrides, message", [
    ({"observed_at": datetime(2024, 1, 1)}, "naive"),
    ({"tenant": "Gütersloh"}, "tenant"),
    ({"dataset": "Weather Data"}, "dataset"),
    ({"sensor_id": ""}, "sensor_id"),
    ({"fields": {}}, "at least one field"),
    ({"fields": {"temperature": float("nan")}}, "finite"),
    ({"fields": {"ok": True}}, "fields.ok"),
    ({"fields": {"bad name": 1}}, "bad name"),
    ({"units": {"pressure": "hPa"}}, "pressure"),
    ({"lon": 8.0, "lat": None}, "both or neither"),
    ({"lat": 123.0}, "lat"),
    ({"metadata": {"when": T}}, "metadata"),
])
def test_validation_errors_say_what_is_wrong(overrides, message):
    with pytest.raises(EventError, match=message):
        event(**overrides)


def test_from_json_rejects_bad_payloads_with_reasons():
    good = json.loads(event().to_json())
    with pytest.raises(EventError, match="not valid JSON"):
        Observation.from_json(b"{")
    with pytest.raises(EventError, match="missing required key"):
        Observation.from_dict({k: v for k, v in good.items() if k != "fields"})
    with pytest.raises(EventError, match="no time zone"):
        Observation.from_dict({**good, "observed_at": "2024-10-27T01:30:00"})
    with pytest.raises(EventError, match="event_id"):
        Observation.from_dict({**good, "event_id": "0" * 32})
    with pytest.raises(EventError, match="unknown key"):
        Observation.from_dict({**good, "extra": 1})


def test_parse_instant_accepts_nanoseconds_and_offsets():
    assert parse_instant("2024-11-10T14:55:31.319593255+00:00").microsecond == 319593
    assert parse_instant("2021-08-01T16:00:00+02:00") == datetime(2021, 8, 1, 14, tzinfo=timezone.utc)
