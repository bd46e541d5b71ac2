"""The sink's pure parts: routing, schema validation, the fast decoder (which must
agree with the reference path on every input), batching and intents."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from urbanstack.runtime.events import EventError, Observation, ObservationBatch
from urbanstack.runtime.sink import (Batch, RecordError, SinkConfig, TableSchema, decode, decode_batch, decode_event,
                                     dedup_token, parse_intent, route)

NOW = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)
TOPIC = "guetersloh.passantenfrequenz-wetter.pedestrian_counts"
COLUMNS = [
    ("event_id", "String", "", ""), ("source", "LowCardinality(String)", "", ""), ("sensor_id", "String", "", ""),
    ("observed_at", "DateTime64(3, 'UTC')", "", ""), ("lon", "Nullable(Float64)", "", ""),
    ("lat", "Nullable(Float64)", "", ""), ("ingested_at", "DateTime64(3, 'UTC')", "DEFAULT", ""),
    ("pedestrians", "UInt32", "", "Pedestrians in both directions. [persons]"),
    ("pedestrians_ltr", "Nullable(UInt32)", "", "[persons]"),
    ("location_name", "String", "", "Street or square of the counter."),
    ("temperature", "Nullable(Float64)", "", "[°C]"), ("open", "Nullable(Bool)", "", ""),
    ("day", "Nullable(Date)", "", ""), ("seen", "Nullable(DateTime64(3, 'UTC'))", "", ""),
    ("pos", "Nullable(Point)", "", ""),
]


@pytest.fixture
def schema():
    return TableSchema.from_columns("guetersloh", "passantenfrequenz_wetter__pedestrian_counts", COLUMNS,
                                    retention_days=730, now=NOW)


def event(**changes) -> Observation:
    values = dict(tenant="guetersloh", dataset="pedestrian_counts", source="hystreet", sensor_id="148",
                  observed_at=NOW - timedelta(days=1), fields={"pedestrians": 12, "location_name": "Berliner Straße"},
                  units={"pedestrians": "persons"})
    values.update(changes)
    return Observation(**values)


def test_route_follows_the_operator_naming():
    target = route(TOPIC)
    assert (target.database, target.table, target.dlq_topic) == (
        "guetersloh", "passantenfrequenz_wetter__pedestrian_counts", "guetersloh.dlq")
    assert route("rheda-wiedenbrueck.pegel-warnung.water_levels").database == "rheda_wiedenbrueck"
    for topic in ("guetersloh.dlq", "Guetersloh.a.b", "a.b.c.d"):
        with pytest.raises(RecordError, match="not a tenant data topic"):
            route(topic)


def test_default_pattern_excludes_dead_letter_topics():
    import re

    pattern = re.compile(SinkConfig.topic_pattern)
    assert pattern.match(TOPIC) and not pattern.match("guetersloh.dlq") and not pattern.match("__consumer_offsets")


def test_config_from_environment():
    config = SinkConfig.from_env({"URBANSTACK_SINK_BATCH_ROWS": "500", "URBANSTACK_SINK_BATCH_SECONDS": "0.25",
                                  "URBANSTACK_SINK_GROUP": "g"})
    assert (config.batch_rows, config.batch_seconds, config.group_id) == (500, 0.25, "g")
    with pytest.raises(ValueError, match="URBANSTACK_SINK_BATCH_ROWS must be a int"):
        SinkConfig.from_env({"URBANSTACK_SINK_BATCH_ROWS": "many"})


def test_row_in_column_order(schema):
    assert schema.column_names[:6] == ("event_id", "source", "sensor_id", "observed_at", "lon", "lat")
    assert "ingested_at" not in schema.column_names  # filled by its default
    e = event(fields={"pedestrians": 12.0, "pedestrians_ltr": "5", "location_name": 4711, "temperature": 3,
                      "open": "true", "day": "2026-01-09", "seen": "2026-01-09T10:00:00+01:00"})
    row = dict(zip(schema.column_names, schema.row(e)))
    assert row["pedestrians"] == 12 and type(row["pedestrians"]) is int
    assert row["pedestrians_ltr"] == 5 and row["location_name"] == "4711"
    assert row["temperature"] == 3.0 and row["open"] is True
    assert str(row["day"]) == "2026-01-09" and row["seen"] == datetime(2026, 1, 9, 9, tzinfo=timezone.utc)
    assert row["event_id"] == e.event_id and row["lon"] is None


@pytest.mark.parametrize("fields, units, message", [
    ({"pedestrians": "viele", "location_name": "x"}, {}, "fields.pedestrians (UInt32): expected a number, got 'viele'"),
    ({"pedestrians": -1, "location_name": "x"}, {}, "-1 is outside 0..4294967295"),
    ({"pedestrians": 1.5, "location_name": "x"}, {}, "expected an integer"),
    ({"pedestrians": 1}, {}, "fields.location_name: required, but missing"),
    ({"pedestrians": None, "location_name": "x"}, {}, "fields.pedestrians: required, but null"),
    ({"pedestrians": 1, "location_name": "x", "bikes": 1, "cars": 2}, {}, "unknown field(s) bikes, cars"),
    ({"pedestrians": 1, "location_name": "x"}, {"pedestrians": "cars"}, "unit 'cars' differs from the dataset's"),
    ({"pedestrians": 1, "location_name": "x", "pos": "1 2"}, {}, "type Nullable(Point) cannot be filled"),
    ({"pedestrians": 1, "location_name": "x", "open": 2}, {}, "expected true/false"),
])
def test_invalid_values_are_named(schema, fields, units, message):
    with pytest.raises(RecordError) as error:
        schema.row(event(fields=fields, units=units))
    assert message in str(error.value)


def test_all_problems_of_a_record_are_reported_at_once(schema):
    with pytest.raises(RecordError) as error:
        schema.row(event(fields={"pedestrians": -1, "bikes": 1}))
    assert str(error.value).count(";") == 2


def test_records_older_than_the_retention_are_refused(schema):
    with pytest.raises(RecordError, match="older than the dataset's retention of 730 days"):
        schema.row(event(observed_at=NOW - timedelta(days=731)))


def test_table_without_standard_columns_takes_nothing():
    odd = TableSchema.from_columns("g", "t", [("value", "Float64", "", "")])
    with pytest.raises(RecordError, match="lacks the standard column"):
        odd.row(event())


def test_forged_tenant_and_wrong_dataset(schema):
    target = route(TOPIC)
    with pytest.raises(RecordError, match="claims 'bielefeld' but was sent to 'guetersloh'"):
        decode(event(tenant="bielefeld").to_json(), target, schema)
    with pytest.raises(RecordError, match="is for 'weather'"):
        decode(event(dataset="weather").to_json(), target, schema)
    with pytest.raises(RecordError, match="does not exist"):
        decode(event().to_json(), target, None)


def _variants() -> list[bytes]:
    base = event(lon=8.38, lat=51.9, metadata={"ltr_label": "Richtung Markt"}).to_dict()
    fraction = event(observed_at=NOW - timedelta(hours=1, microseconds=500)).to_dict()
    changes = [
        {}, {"event_id": "0" * 32}, {"v": 2}, {"v": True}, {"tenant": "bielefeld"}, {"dataset": "weather"},
        {"source": ""}, {"source": " "}, {"source": 5}, {"sensor_id": None}, {"observed_at": "2026-01-09T10:00:00"},
        {"observed_at": "2026-01-09T10:00:00+00:00"}, {"observed_at": "2026-01-09T10:00:00.000000Z"},
        {"observed_at": "2026-13-09T10:00:00Z"}, {"observed_at": 1700000000}, {"fields": {}}, {"fields": []},
        {"fields": {"pedestrians": True, "location_name": "x"}}, {"fields": {"pedestrians": [1], "location_name": "x"}},
        {"fields": {"pedestrians": 1, "location_name": "x", "Ümlaut": 1}}, {"units": {"other": "m"}},
        {"units": {"pedestrians": 5}}, {"units": []}, {"units": None}, {"lon": None}, {"lat": 91}, {"lon": True},
        {"lon": None, "lat": None}, {"metadata": []}, {"metadata": None}, {"extra": 1},
        {"observed_at": "1999-01-01T00:00:00Z"},
    ]
    payloads = []
    for change in changes:
        data = {**base, **change}
        if "event_id" not in change:
            data.pop("event_id")
        payloads.append(json.dumps(data).encode())
    payloads += [json.dumps(base).encode(), json.dumps(fraction).encode(), b"{", b"[]", b"null", "{\"ä\": 1}".encode("latin-1"),
                 json.dumps({**base, "fields": {"pedestrians": float("nan"), "location_name": "x"}}).encode(),
                 json.dumps({**base, "metadata": {"x": float("inf")}}).encode()]
    return payloads


@pytest.mark.parametrize("payload", _variants())
def test_fast_decoder_agrees_with_the_reference(schema, payload):
    target = route(TOPIC)

    def outcome(function):
        try:
            return function(payload, target, schema)
        except RecordError as exc:
            return ("rejected", str(exc))

    assert outcome(decode) == outcome(decode_event)


def test_batch_closes_by_size_age_and_replayed_range():
    batch = Batch(TOPIC, 0, route(TOPIC), opened_at=100.0)
    for offset in (5, 6, 7):
        batch.add(offset)
        batch.rows.append(("id", "src", "s", 0, None, None))
    assert (batch.first, batch.last, batch.records) == (5, 7, 3)
    assert batch.full(3) and not batch.full(4)
    assert batch.due(101.0, 1.0) and not batch.due(100.5, 1.0)
    assert batch.token == dedup_token(TOPIC, 0, 5, 7) == f"urbanstack-sink:{TOPIC}:0:5-7"

    replay = Batch(TOPIC, 0, route(TOPIC), opened_at=100.0, replay_until=9)
    replay.add(8)
    replay.rows.append(("id", "src", "s", 0, None, None))
    assert not replay.full(1) and not replay.due(1000.0, 1.0)  # a replay ends where the original did
    replay.add(9)
    assert replay.full(10**6)


def test_intent_metadata():
    assert parse_intent("pending:41") == 41
    assert parse_intent("") is None and parse_intent(None) is None and parse_intent("pending:x") is None


# Schema-2 batches: every row must come out exactly as the same reading sent alone would.

ROW_VARIANTS = [
    # (sensor_id, observed_at, pedestrians, location_name, lon, lat)
    ("148", "2026-01-09T10:00:00Z", 12, "Berliner Straße", None, None),
    ("149", "2026-01-09T10:00:00.250000Z", 0, "Markt", 8.38, 51.9),
    ("150", "2026-01-09T10:00:00Z", "12", "Markt", None, None),          # text the reference path converts
    ("151", "2026-01-09T10:00:00Z", 12, 4711, None, None),               # a number as text
    ("152", "2026-01-09T10:00:00Z", 12.0, "Markt", None, None),
    ("", "2026-01-09T10:00:00Z", 12, "Markt", None, None),
    (153, "2026-01-09T10:00:00Z", 12, "Markt", None, None),
    ("154", "2026-01-09T10:00:00+00:00", 12, "Markt", None, None),       # an offset: read as a single event would be
    ("155", "2026-01-09T10:00:00", 12, "Markt", None, None),
    ("156", "1999-01-01T00:00:00Z", 12, "Markt", None, None),            # older than the retention
    ("157", "2026-01-09T10:00:00Z", -1, "Markt", None, None),
    ("158", "2026-01-09T10:00:00Z", True, "Markt", None, None),
    ("159", "2026-01-09T10:00:00Z", 1.5, "Markt", None, None),
    ("160", "2026-01-09T10:00:00Z", None, "Markt", None, None),
    ("161", "2026-01-09T10:00:00Z", 12, None, None, None),
    ("162", "2026-01-09T10:00:00Z", 12, "Markt", None, 5.0),
    ("163", "2026-01-09T10:00:00Z", 12, "Markt", 8.0, 91.0),
    ("164", "2026-01-09T10:00:00Z", [1], "Markt", None, None),
    ("165", "2026-01-09T10:00:00Z", 2 ** 40, "Markt", None, None),
    ("166", "2026-01-09T10:00:00Z", 12, "Markt", float("inf"), 5.0),
]


def test_unhashable_sensor_or_instant_sends_the_batch_down_the_reference_path(schema):
    rows = ROW_VARIANTS[:2] + [(["148"], "2026-01-09T10:00:00Z", 12, "Markt", None, None),
                               ("148", ["2026-01-09T10:00:00Z"], 12, "Markt", None, None)]
    data = _batch(rows=rows)
    decoded = decode_batch(data, json.dumps(data).encode(), route(TOPIC), schema)
    assert decoded.records == 4 and [row[2] for row in decoded.rows] == ["148", "149"]
    reasons = {i: reason for _p, reason, i in decoded.rejected}
    assert "sensor_id: must be a non-empty string" in reasons[2] and "observed_at" in reasons[3]


def _batch(rows=ROW_VARIANTS, **changes) -> dict:
    data = {"v": 2, "tenant": "guetersloh", "dataset": "pedestrian_counts", "source": "hystreet",
            "units": {"pedestrians": "persons"},
            "sensor_id": [r[0] for r in rows], "observed_at": [r[1] for r in rows],
            "fields": {"pedestrians": [r[2] for r in rows], "location_name": [r[3] for r in rows],
                       "temperature": [1.5 for _ in rows]},
            "lon": [r[4] for r in rows], "lat": [r[5] for r in rows]}
    data.update(changes)
    return data


def _single(data: dict, index: int) -> bytes:
    row = {"v": 1, "tenant": data["tenant"], "dataset": data["dataset"], "source": data["source"],
           "sensor_id": data["sensor_id"][index], "observed_at": data["observed_at"][index],
           "fields": {name: values[index] for name, values in data["fields"].items()}, "units": data["units"]}
    if data.get("lon") and data["lon"][index] is not None or data.get("lat") and data["lat"][index] is not None:
        row["lon"], row["lat"] = data["lon"][index], data["lat"][index]
    return json.dumps(row).encode()


def _reference(payload: bytes, target, schema):
    try:
        return decode_event(payload, target, schema)
    except RecordError as exc:
        return ("rejected", str(exc))


@pytest.mark.parametrize("changes", [
    {}, {"tenant": "bielefeld"}, {"dataset": "weather"}, {"units": {"pedestrians": "cars"}},
    {"source": " "},
])
def test_batch_decoder_agrees_with_the_reference_row_by_row(schema, changes):
    target = route(TOPIC)
    data = _batch(**changes)
    payload = json.dumps(data).encode()
    decoded = decode_batch(data, payload, target, schema)
    assert decoded.records == len(ROW_VARIANTS)
    outcomes = {i: row for i, row in zip(decoded.accepted, decoded.rows)}
    outcomes.update({i: ("rejected", reason) for _payload, reason, i in decoded.rejected})
    assert sorted(outcomes) == list(range(len(ROW_VARIANTS)))  # every row once: stored or dead-lettered
    for i in range(len(ROW_VARIANTS)):
        expected = _reference(_single(data, i), target, schema)
        if changes.get("tenant") or changes.get("dataset"):
            # a batch for another tenant or dataset is refused as a whole, for that reason first
            assert expected[0] == "rejected" and outcomes[i][0] == "rejected"
            assert ("claims 'bielefeld'" if changes.get("tenant") else "is for 'weather'") in outcomes[i][1]
            continue
        assert outcomes[i] == expected, f"row {i}: {ROW_VARIANTS[i]}"
    if not changes:
        good = {row[2] for row in decoded.rows}
        assert good == {"148", "149", "150", "151", "152", "154"}  # 154: an offset instant, made canonical


def test_batch_with_unknown_field_rejects_each_row_with_the_reason(schema):
    data = _batch(rows=ROW_VARIANTS[:3])
    data["fields"]["bikes"] = [1, 2, 3]
    decoded = decode_batch(data, json.dumps(data).encode(), route(TOPIC), schema)
    assert decoded.rows == [] and decoded.records == 3
    assert [i for _p, _r, i in decoded.rejected] == [0, 1, 2]
    assert all("unknown field(s) bikes" in reason for _p, reason, _i in decoded.rejected)
    # the dead-lettered value is the row as a single event, which can be fixed and sent again
    fixed = json.loads(decoded.rejected[0][0])
    assert fixed["sensor_id"] == "148" and fixed["fields"]["bikes"] == 1


@pytest.mark.parametrize("data, message", [
    ({"v": 2, "tenant": "guetersloh"}, "missing required key(s) dataset, source"),
    (_batch(observed_at=["2026-01-09T10:00:00Z"]), "observed_at: 1 values for 20 rows"),
    (_batch(sensor_id=[]), "at least one row"),
    ({**_batch(), "extra": 1}, "unknown key(s) extra"),
    (_batch(fields={"pedestrians": 5}), "fields: expected an object of field name to a list"),
])
def test_malformed_batch_is_one_rejected_record(schema, data, message):
    payload = json.dumps(data).encode()
    decoded = decode_batch(data, payload, route(TOPIC), schema)
    assert decoded.records == 1 and decoded.rows == []
    [(value, reason, index)] = decoded.rejected
    assert value == payload and index is None and message in reason


def test_observation_batch_round_trip_keeps_event_ids():
    events = [event(sensor_id=str(s), observed_at=NOW - timedelta(hours=h), lon=8.0 if s else None,
                    lat=51.0 if s else None) for s in range(3) for h in range(2)]
    batch = ObservationBatch.from_observations(events)
    again = ObservationBatch.from_dict(json.loads(batch.to_json()))
    assert again.event_ids() == [e.event_id for e in events]
    assert again.observations() == events
    with pytest.raises(EventError, match=r"observed_at\[1\]: expected a UTC instant"):
        ObservationBatch(tenant="guetersloh", dataset="pedestrian_counts", source="x", sensor_ids=["a", "b"],
                         observed_at=["2026-01-09T10:00:00Z", "2026-01-09 10:00"], fields={"f": [1, 2]})
    with pytest.raises(EventError, match=r"fields.f\[0\]: must be a number, a string or null, got bool"):
        ObservationBatch(tenant="guetersloh", dataset="pedestrian_counts", source="x", sensor_ids=["a"],
                         observed_at=["2026-01-09T10:00:00Z"], fields={"f": [True]})
