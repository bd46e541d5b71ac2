"""Meter events, price lists and statements without any server: schema, money, hashes, exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from urbanstack.runtime.metering.events import (ROWS_STORED, TYPE_INGEST, InvalidEvent, MeterEvent,
                                                sink_batch_id)
from urbanstack.runtime.metering.ledger import month_range, parse_month
from urbanstack.runtime.metering.prices import MeterPrice, parse_price_book
from urbanstack.runtime.metering.statements import Line, Statement
from urbanstack.runtime.sink import intent, parse_intent, parse_intent_at

WHEN = datetime(2026, 11, 3, 10, 15, 42, 120000, tzinfo=timezone.utc)


def event(**overrides) -> MeterEvent:
    fields = dict(id=sink_batch_id("guetersloh.t.d", 0, 10, 19), source="/urbanstack/sink", type=TYPE_INGEST,
                  subject="guetersloh", time=WHEN, quantities={ROWS_STORED: 10}, dataset="t/d")
    return MeterEvent(**{**fields, **overrides})


def test_an_event_is_a_cloudevent_and_survives_the_round_trip():
    doc = json.loads(event().to_json())
    assert {k: doc[k] for k in ("specversion", "type", "subject", "time")} == {
        "specversion": "1.0", "type": TYPE_INGEST, "subject": "guetersloh", "time": "2026-11-03T10:15:42.120Z"}
    assert doc["data"] == {"quantities": {ROWS_STORED: 10}, "dataset": "t/d"}
    again = MeterEvent.from_json(event().to_json())
    assert again == event() and again.fingerprint == event().fingerprint


def test_the_same_batch_gets_the_same_id_and_another_batch_another():
    assert sink_batch_id("a.b.c", 0, 10, 19) == sink_batch_id("a.b.c", 0, 10, 19)
    assert len({sink_batch_id("a.b.c", 0, 10, 19), sink_batch_id("a.b.c", 1, 10, 19),
                sink_batch_id("a.b.c", 0, 10, 20), sink_batch_id("a.b.d", 0, 10, 19)}) == 4


@pytest.mark.parametrize("payload, message", [
    (b"not json", "not JSON"),
    (b'{"specversion": "0.3"}', "specversion"),
    (json.dumps({**json.loads(event().to_json()), "subject": "Gütersloh"}).encode(), "subject"),
    (json.dumps({**json.loads(event().to_json()), "time": "yesterday"}).encode(), "time"),
    (json.dumps({**json.loads(event().to_json()), "data": {"quantities": {"rows_stored": -1}}}).encode(), ">= 0"),
    (json.dumps({**json.loads(event().to_json()), "data": {"quantities": {"rows_stored": 1.5}}}).encode(), "whole"),
    (json.dumps({**json.loads(event().to_json()), "data": {"quantities": {"coffee": 1}}}).encode(), "unknown meter"),
    (json.dumps({**json.loads(event().to_json()), "type": "x"}).encode(), "type"),
    (b"{" + b" " * 70_000 + b"}", "bytes"),
])
def test_malformed_events_are_refused_with_the_field_named(payload, message):
    with pytest.raises(InvalidEvent, match=message):
        MeterEvent.from_json(payload)


def test_intent_metadata_carries_the_time_and_old_intents_still_read():
    assert parse_intent_at(intent(41, 1_796_000_000_123)) == (41, 1_796_000_000_123)
    assert parse_intent(intent(41, 5)) == 41
    assert parse_intent_at("pending:41") == (41, None)
    assert parse_intent_at("pending:x@1") == (None, None) and parse_intent_at(None) == (None, None)


def test_months_are_berlin_calendar_months():
    start, end = month_range(date(2026, 11, 1))
    assert (start.isoformat(), end.isoformat()) == ("2026-10-31T23:00:00+00:00", "2026-11-30T23:00:00+00:00")
    start, end = month_range(date(2026, 3, 1))      # the clocks go forward on 29 March
    assert (start.isoformat(), end.isoformat()) == ("2026-02-28T23:00:00+00:00", "2026-03-31T22:00:00+00:00")
    with pytest.raises(ValueError, match="2026-11"):
        parse_month("11/2026")


def test_charges_round_half_up_to_the_cent_once_per_line():
    price = MeterPrice(included=1000, unit_price=Decimal("0.40"), per=100_000)
    assert price.charge(999) == (0, Decimal("0.00"))
    assert price.charge(1000 + 1_250) == (1_250, Decimal("0.01"))        # 0.005 → 0.01
    assert price.charge(1000 + 1_249) == (1_249, Decimal("0.00"))        # 0.004996 → 0.00
    assert price.charge(1000 + 123_456_789) == (123_456_789, Decimal("493.83"))


@pytest.mark.parametrize("book, message", [
    ({"price_lists": []}, "no price list"),
    ({"price_lists": [{"version": "1", "valid_from": "2026-01",
                       "plans": {"small": {"base_fee": 49.0}}}]}, "not a float"),
    ({"price_lists": [{"version": "1", "valid_from": "2026-01",
                       "plans": {"small": {"base_fee": "49", "meters": {"coffee": {"unit_price": "1"}}}}}]},
     "unknown meter"),
    ({"price_lists": [{"version": "1", "valid_from": "2026-01", "plans": {"small": {"base_fee": "-1"}}}]}, "≥ 0"),
])
def test_bad_price_books_are_refused_with_the_place_named(book, message):
    with pytest.raises(ValueError, match=message):
        parse_price_book(book)


def test_the_price_list_of_a_month_is_the_latest_that_started():
    book = parse_price_book({"price_lists": [
        {"version": "a", "valid_from": "2026-01", "plans": {"small": {"base_fee": "49"}}},
        {"version": "b", "valid_from": "2026-07", "plans": {"small": {"base_fee": "59"}}}]})
    assert [book.for_month(date(2026, m, 1)).version for m in (1, 6, 7, 12)] == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="no price list is valid for 2025-12"):
        book.for_month(date(2025, 12, 1))


def statement(amount: str = "2.00") -> Statement:
    return Statement("guetersloh", "2026-11", "small", "2026-01", "EUR", (
        Line("base", "", "month", "2026-11", 1, 0, 1, Decimal("49.00"), 1, Decimal("49.00")),
        Line("usage", ROWS_STORED, "row", "2026-11", 6_000, 5_000, 1_000, Decimal("0.20"), 100, Decimal(amount))),
        "frozen", "2026-12-06T00:00:00.000Z")


def test_the_content_hash_changes_with_any_amount_and_the_csv_adds_up():
    assert statement().content_hash() == statement().content_hash()
    assert statement().content_hash() != statement("2.01").content_hash()
    rows = list(csv.reader(io.StringIO(statement().to_csv())))
    assert rows[0][-1] == "amount_EUR" and rows[-1][2] == "total" and rows[-1][-1] == "51.00"
    assert sum(Decimal(r[-1]) for r in rows[1:-1]) == Decimal("51.00")
    assert Statement.from_content(json.loads(json.dumps(statement().content()))) == statement()
