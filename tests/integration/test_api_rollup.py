"""Series and joins answered from the hourly rollup give exactly what the dataset table
gives: two query engines on the same real warehouse data, one allowed to use rollups
and one not, must return identical rows for every query below. The data has missing
values, several sensors, a month boundary and a DST switch; half of it was in the
table before the rollup existed (backfilled), half arrived through the view."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.api.auth import Permission, Principal
from urbanstack.runtime.api.query import (Aggregate, Bucket, DatasetRef, Filters, JoinQuery, JoinSide, QueryEngine,
                                          SeriesQuery)

pytestmark = pytest.mark.platform

UTC = dt.timezone.utc
START = dt.datetime(2025, 3, 10, 0, 0, tzinfo=UTC)
DAYS = 40                    # into April: a month boundary and Europe's switch to summer time
STEP = dt.timedelta(minutes=10)
SENSORS = ("s-a", "s-b", "s-c")
TOOL = CityTool.model_validate({
    "metadata": {"name": "messnetz"},
    "spec": {"displayName": "Messnetz", "version": "1.0.0", "owner": "platform", "audience": "gov", "datasets": [
        {"name": "air", "retentionDays": 3650, "fields": [
            {"name": "temperature", "type": "Float64", "unit": "°C"},
            {"name": "level", "type": "Int32", "required": True},
            {"name": "people", "type": "UInt16"},
            {"name": "note", "type": "String"}]}]}})
COLUMNS = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", "temperature", "level", "people", "note"]
ALL = (Aggregate.count, Aggregate.sum, Aggregate.avg, Aggregate.min, Aggregate.max)


def _rows(part: int) -> list[list]:
    rows = []
    steps = int(dt.timedelta(days=DAYS) / STEP)
    for step in range(steps):
        if step % 2 != part:
            continue
        at = START + step * STEP + dt.timedelta(seconds=step % 7 * 13)
        for index, sensor in enumerate(SENSORS):
            n = step * 3 + index
            # Quarter steps keep every sum exact, so both answers can be compared with ==.
            temperature = None if n % 6 == 0 or (sensor == "s-c" and 300 <= step < 330) else 0.25 * (n % 97) - 8
            rows.append([f"{sensor}-{step}", "probe", sensor, at, 8.38 + index / 100, 51.9, temperature,
                         n % 23 - 11, None if n % 4 == 1 else n % 500, None if n % 3 else f"n{n % 5}"])
    return rows


@pytest.fixture(scope="module")
def engines(warehouse):
    slug = f"rollup-api-{uuid.uuid4().hex[:8]}"
    town = Municipality.model_validate({
        "metadata": {"name": slug},
        "spec": {"displayName": slug, "ags": "05754008", "admins": [f"ops@{slug}.example.org"],
                 "tools": [{"name": "messnetz"}]}})
    part = plan(town, [TOOL]).warehouse
    provisioner = WarehouseProvisioner(lambda: warehouse, embedded=True, backfill_delay=0.3)
    before = dataclasses.replace(part, tables=tuple(dataclasses.replace(t, rollup=None) for t in part.tables))
    ensure(provisioner, before, {})
    table = part.tables[0]
    warehouse.insert(table.name, _rows(0), database=part.database, column_names=COLUMNS)
    ensure(provisioner, part, {})                  # backfills the first half
    warehouse.insert(table.name, _rows(1), database=part.database, column_names=COLUMNS)  # through the view
    catalogue = Catalogue([town], [TOOL])
    principal = Principal(tenant=slug, roles=frozenset({"gov-viewer"}), subject="test",
                          permissions=frozenset({Permission.read_own}))
    yield (QueryEngine(warehouse, catalogue, rollups=True), QueryEngine(warehouse, catalogue, rollups=False),
           principal, DatasetRef(slug, "messnetz", "air"))
    provisioner.delete(part, keep_data=False)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


SERIES = {
    "hourly, all aggregates, aligned": dict(fields=("temperature",), aggregates=ALL, bucket=Bucket.hour,
                                            start="2025-03-10T00:00:00Z", end="2025-04-19T00:00:00Z"),
    "partial hours at both edges": dict(fields=("temperature", "level"), aggregates=ALL, bucket=Bucket.hour,
                                        start="2025-03-12T10:17:30Z", end="2025-03-20T13:42:00Z", by_sensor=True),
    "days with sensor filter, edges": dict(fields=("temperature", "people"), aggregates=ALL, bucket=Bucket.day,
                                           start="2025-03-11T05:05:05Z", end="2025-04-02T23:59:59Z",
                                           sensors=("s-a", "s-c"), by_sensor=True),
    "months": dict(fields=("temperature", "level", "people"), aggregates=ALL, bucket=Bucket.month,
                   start="2025-01-01T00:00:00Z", end="2025-06-01T00:00:00Z", by_sensor=True),
    "weeks in Berlin across the DST switch": dict(fields=("level",), aggregates=ALL, bucket=Bucket.week,
                                                  start="2025-03-10T00:00:00Z", end="2025-04-19T00:00:00Z",
                                                  timezone="Europe/Berlin"),
    "days in New York": dict(fields=("temperature",), aggregates=(Aggregate.avg, Aggregate.max), bucket=Bucket.day,
                             start="2025-03-10T00:00:00Z", end="2025-04-19T00:00:00Z", timezone="America/New_York"),
    "count of a text field": dict(fields=("note",), aggregates=(Aggregate.count,), bucket=Bucket.hour,
                                  start="2025-03-15T00:30:00Z", end="2025-03-17T00:00:00Z", by_sensor=True),
    "hours with only missing values": dict(fields=("temperature",), aggregates=ALL, bucket=Bucket.hour,
                                           start="2025-03-12T01:00:00Z", end="2025-03-12T07:00:00Z",
                                           sensors=("s-c",), by_sensor=True),
}
# Answered from the table alone, whichever engine: they must not change either.
TABLE_ONLY = {
    "quantile": dict(fields=("temperature",), aggregates=(Aggregate.avg, Aggregate.p95), bucket=Bucket.hour,
                     start="2025-03-10T00:00:00Z", end="2025-03-20T00:00:00Z"),
    "minutes": dict(fields=("temperature",), aggregates=(Aggregate.avg,), bucket=Bucket.minute,
                    start="2025-03-10T00:00:00Z", end="2025-03-11T00:00:00Z"),
    "bounding box": dict(fields=("temperature",), aggregates=(Aggregate.avg,), bucket=Bucket.hour,
                         start="2025-03-10T00:00:00Z", end="2025-03-20T00:00:00Z", bbox=(8.37, 51.8, 8.395, 52.0)),
    "half-hour time zone": dict(fields=("temperature",), aggregates=(Aggregate.sum,), bucket=Bucket.day,
                                start="2025-03-10T00:00:00Z", end="2025-04-19T00:00:00Z", timezone="Asia/Kolkata"),
    "within one hour": dict(fields=("temperature",), aggregates=(Aggregate.sum,), bucket=Bucket.hour,
                            start="2025-03-10T10:05:00Z", end="2025-03-10T10:55:00Z"),
}


def _series(ref, spec, cursor=None, limit=None) -> SeriesQuery:
    return SeriesQuery(dataset=ref, fields=spec["fields"], aggregates=spec["aggregates"], bucket=spec["bucket"],
                       filters=Filters(start=_at(spec["start"]), end=_at(spec["end"]),
                                       sensor_ids=spec.get("sensors", ()), bbox=spec.get("bbox")),
                       by_sensor=spec.get("by_sensor", False), timezone=spec.get("timezone", "UTC"),
                       limit=limit or 10_000, cursor=cursor)


@pytest.mark.parametrize("name", SERIES)
def test_rollup_answers_equal_table_answers(engines, name):
    fast, slow, principal, ref = engines
    before = fast.plans["rollup"]
    from_rollup = fast.series(principal, _series(ref, SERIES[name]))
    from_table = slow.series(principal, _series(ref, SERIES[name]))
    assert fast.plans["rollup"] == before + 1, "this query should have used the rollup"
    assert from_rollup.rows, "a comparison of empty answers proves nothing"
    assert from_rollup.rows == from_table.rows
    assert from_rollup.metrics == from_table.metrics


def test_the_comparison_sees_missing_values(engines):
    fast, _, principal, ref = engines
    rows = fast.series(principal, _series(ref, SERIES["hours with only missing values"])).rows
    # temperature count, sum, avg, min, max of an hour where s-c reported no temperature at all
    assert any(row.values == (0, None, None, None, None) and row.events > 0 for row in rows)


@pytest.mark.parametrize("name", TABLE_ONLY)
def test_queries_the_rollup_cannot_answer_read_the_table(engines, name):
    fast, slow, principal, ref = engines
    before = dict(fast.plans)
    assert fast.series(principal, _series(ref, TABLE_ONLY[name])).rows == \
        slow.series(principal, _series(ref, TABLE_ONLY[name])).rows
    assert fast.plans["rollup"] == before.get("rollup", 0)
    assert fast.plans["table"] == before.get("table", 0) + 1


def test_pages_from_the_rollup_join_up_to_the_table_answer(engines):
    fast, slow, principal, ref = engines
    spec = SERIES["partial hours at both edges"]
    pages, cursor = [], None
    while True:
        page = fast.series(principal, _series(ref, spec, cursor=cursor, limit=97))
        pages += page.rows
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == list(slow.series(principal, _series(ref, spec)).rows)


def test_join_reads_the_rollup_on_both_sides(engines):
    fast, slow, principal, ref = engines
    query = JoinQuery(left=JoinSide(ref, ("temperature",), (Aggregate.avg, Aggregate.count), ("s-a",)),
                      right=JoinSide(ref, ("level", "people"), (Aggregate.sum, Aggregate.max), ("s-b", "s-c")),
                      bucket=Bucket.day, start=_at("2025-03-11T06:30:00Z"), end=_at("2025-04-01T18:00:00Z"),
                      timezone="Europe/Berlin", limit=500)
    before = fast.plans["rollup"]
    from_rollup = fast.join(principal, query)
    assert fast.plans["rollup"] == before + 2
    assert from_rollup.rows and from_rollup.rows == slow.join(principal, query).rows
