"""SensorThings writes without a platform: which write gets which refusal, how a POSTed result
is checked against the field's type, and the observedArea envelope (the platform test is
tests/integration/test_sensorthings_write.py)."""

from datetime import datetime, timezone

import pytest

from urbanstack.runtime.api.catalogue import FieldInfo
from urbanstack.runtime.api.sensorthings.graph import Entity, Position, observed_area
from urbanstack.runtime.api.sensorthings.write import (WriteRefused, _document, _instant, _value,
                                                       method_not_allowed)

T = datetime(2026, 12, 6, tzinfo=timezone.utc)


@pytest.mark.parametrize("method, path, allow, reason", [
    ("POST", "Things", "GET", "appears with the sensor's first reading"),
    ("DELETE", "Things(5)/Locations(7)", "GET", "positions a sensor reported"),
    ("PATCH", "ObservedProperties(3)", "GET", "shared by every municipality"),
    ("DELETE", "Observations(9)", "GET, PATCH", "retention deletes old readings"),
    ("PUT", "Datastreams(1)/Observations(9)", "GET, PATCH", "change an Observation's result with PATCH"),
    ("PATCH", "Datastreams(1)/Observations", "GET, POST", "PATCH one Observation"),
    ("POST", "Observations(9)", "GET, PATCH", "are created at /v1.1/Observations"),
    ("POST", "", "GET", "read-only"),
])
def test_each_refused_write_says_why_and_what_is_allowed(method, path, allow, reason):
    refusal = method_not_allowed(method, path)
    assert (refusal.status, refusal.headers["Allow"]) == (405, allow)
    assert reason in refusal.message and refusal.message.startswith(f"{method} is not supported for ")


def stream(kind: str) -> Entity:
    return Entity("Datastream", 7, {}, field=FieldInfo("value", kind, None, "", False), field_index=0)


@pytest.mark.parametrize("kind, result, stored", [
    ("UInt8", 255, 255), ("Int16", -3.0, -3), ("Float64", 2, 2.0), ("Float32", 0.5, 0.5),
    ("Bool", True, 1), ("Bool", False, 0), ("String", "Dalke", "Dalke"),
])
def test_results_that_fit_the_field(kind, result, stored):
    value = _value(stream(kind), result)
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize("kind, result, words", [
    ("UInt8", 256, "an integer from 0 to 255"), ("UInt32", -1, "an integer from 0"), ("Int32", 1.5, "an integer"),
    ("Int32", True, "an integer"), ("Float64", "3", "a finite number"), ("Float64", float("nan"), "a finite number"),
    ("Bool", 1, "true or false"), ("String", 5, "a string"), ("Float64", None, "a result is required"),
    ("Date", "2026-01-01", "cannot be written through SensorThings"),
])
def test_results_that_do_not_fit_are_refused_with_the_field_and_type(kind, result, words):
    with pytest.raises(WriteRefused) as refused:
        _value(stream(kind), result)
    assert refused.value.status == 400 and words in refused.value.message and f"holds {kind} values" in \
        refused.value.message


def test_times_and_bodies():
    assert _instant("2026-12-06T10:15:00.250+01:00") == datetime(2026, 12, 6, 9, 15, 0, 250000, tzinfo=timezone.utc)
    for text, words in (("2026-12-06T10:15:00", "time zone"), ("yesterday", "not an ISO 8601 time"),
                        ("2026-12-06T10:00:00Z/2026-12-06T11:00:00Z", "intervals")):
        with pytest.raises(WriteRefused, match=words):
            _instant(text)
    for body, words in ((b"[1]", "one Observation"), (b"{", "not valid JSON"), (b"[" * 60_000, "not valid JSON"),
                        (b'{"result": 1, "parameters": {"a": 1}}', "parameters are not stored"),
                        (b'{"phenomenonTime": "2026-12-06T10:15:00Z"}', "result is required")):
        with pytest.raises(WriteRefused, match=words):
            _document(body)


def test_observed_area_is_the_envelope_of_the_positions():
    def at(lon, lat):
        return Position(lon, lat, T, T)

    assert observed_area([]) is None
    assert observed_area([at(8.5, 52.0)]) == {"type": "Point", "coordinates": [8.5, 52.0]}
    assert observed_area([at(8.5, 52.0), at(8.5, 52.1)]) == {"type": "LineString",
                                                             "coordinates": [[8.5, 52.0], [8.5, 52.1]]}
    assert observed_area([at(8.5, 52.1), at(8.3, 52.0), at(8.4, 51.9)]) == {
        "type": "Polygon", "coordinates": [[[8.3, 51.9], [8.5, 51.9], [8.5, 52.1], [8.3, 52.1], [8.3, 51.9]]]}
