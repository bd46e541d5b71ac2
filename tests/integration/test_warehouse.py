"""The warehouse engine: database, MergeTree table by month, hourly aggregates.

Runs against the embedded chDB by default and against a ClickHouse server when
URBANSTACK_WAREHOUSE_URL points at one: the test code is the same. The readings sit
on the edges that matter (the last millisecond of an hour and of a month, the first
of the next), so a wrong bucket, lost milliseconds or one partition for two months
show. The same table with a million rows is a benchmark: bench/warehouse_million_rows.py."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

pytestmark = pytest.mark.platform

UTC = dt.timezone.utc
EDGES = [dt.datetime(2026, 1, 31, 23, 0, 0, 0, UTC), dt.datetime(2026, 1, 31, 23, 59, 59, 999_000, UTC),
         dt.datetime(2026, 2, 1, 0, 0, 0, 0, UTC), dt.datetime(2026, 2, 1, 0, 30, 0, 500_000, UTC)]
SENSORS = ["s1", "s2", "s3"]


def test_hourly_aggregates_respect_hour_and_month_edges(warehouse):
    db = f"probe_{uuid.uuid4().hex[:8]}"
    warehouse.command(f"CREATE DATABASE {db}")
    try:
        warehouse.command(f"""
            CREATE TABLE {db}.observations (
                sensor_id LowCardinality(String),
                observed_at DateTime64(3, 'UTC'),
                value Float64
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(observed_at)
            ORDER BY (sensor_id, observed_at)""")
        # Sensor n reads n*10 + the reading's index: 10, 11, 12, 13 for s1.
        rows = [(sensor, instant, float(number * 10 + index))
                for number, sensor in enumerate(SENSORS, start=1) for index, instant in enumerate(EDGES)]
        warehouse.insert(f"{db}.observations", rows, column_names=["sensor_id", "observed_at", "value"])

        hours = warehouse.query(f"""
            SELECT toStartOfHour(observed_at) AS hour, count() AS n, avg(value) AS mean
            FROM {db}.observations GROUP BY hour ORDER BY hour""").result_rows
        assert [(hour.replace(tzinfo=UTC), n) for hour, n, _ in hours] == [
            (dt.datetime(2026, 1, 31, 23, tzinfo=UTC), 6), (dt.datetime(2026, 2, 1, 0, tzinfo=UTC), 6)]
        # Hour 23: readings 0 and 1 of each sensor, (10+11+20+21+30+31)/6; hour 0: readings 2 and 3.
        assert [mean for _, _, mean in hours] == [pytest.approx(20.5), pytest.approx(22.5)]

        latest = warehouse.query(f"SELECT max(observed_at) FROM {db}.observations").result_rows[0][0]
        assert latest.replace(tzinfo=UTC) == EDGES[-1]   # the milliseconds survive
        before_february = warehouse.query(f"""
            SELECT max(value) FROM {db}.observations
            WHERE sensor_id = 's2' AND observed_at < '2026-02-01 00:00:00'""").result_rows[0][0]
        assert before_february == 21.0   # 23:59:59.999 is still January
        months = warehouse.query(f"""
            SELECT DISTINCT partition FROM system.parts
            WHERE database = '{db}' AND table = 'observations' AND active ORDER BY partition""").result_rows
        assert [partition for (partition,) in months] == ["202601", "202602"]
    finally:
        warehouse.command(f"DROP DATABASE IF EXISTS {db}")


def _merges_put_off(warehouse, db: str) -> bool:
    """The table's merge assignee ran, found nothing to do and put itself off (delayed, not due)."""
    rows = warehouse.query("SELECT delayed, scheduled FROM system.background_schedule_pool WHERE database = {db:String} "
                           "AND log_name = 'BackgroundJobsAssignee:DataProcessing'", parameters={"db": db}).result_rows
    return bool(rows) and rows[0] == (1, 0)


def test_the_embedded_engine_still_merges_right_after_inserts(warehouse):
    """The embedded engine backs off faster on idle tables (urbanstack.warehouse.
    EMBEDDED_ENGINE_OPTIONS); an insert must still wake the merges at once, or every tenant
    table would pile up parts (slower queries, ReplacingMergeTree duplicates kept longer)."""
    import time

    db = f"merge_{uuid.uuid4().hex[:8]}"
    warehouse.command(f"CREATE DATABASE {db}")
    try:
        warehouse.command(f"CREATE TABLE {db}.t (k UInt32, v Float64) ENGINE = ReplacingMergeTree ORDER BY k")
        deadline = time.monotonic() + 30
        while not _merges_put_off(warehouse, db):   # the inserts below must wake an assignee that sleeps
            assert time.monotonic() < deadline, "the new table's merge assignee never ran"
            time.sleep(0.1)
        for n in range(6):
            warehouse.command(f"INSERT INTO {db}.t VALUES ({n % 2}, {n})")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = warehouse.query(f"SELECT count() FROM system.parts WHERE database = '{db}' AND active").result_rows[0][0]
            if parts == 1:
                break
            time.sleep(0.5)
        assert parts == 1, f"{parts} active parts 60 s after 6 inserts: background merges did not run"
        assert warehouse.query(f"SELECT k, v FROM {db}.t ORDER BY k").result_rows == [(0, 4.0), (1, 5.0)]
    finally:
        warehouse.command(f"DROP DATABASE {db}")
