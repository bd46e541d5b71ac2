"""The warehouse engine: database, MergeTree table, a million rows, hourly aggregates.

Runs against the embedded chDB by default and against a ClickHouse server when
URBANSTACK_WAREHOUSE_URL points at one: the test code is the same."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest

ROWS = 1_000_000
SENSORS = 100


def test_million_rows_aggregate_by_hour(warehouse):
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
        start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        # One reading per sensor every 36 s: 100 sensors x 10,000 readings = 100 hours.
        index = np.arange(ROWS)
        sensor = index % SENSORS
        seconds = (index // SENSORS) * 36
        timestamps = [start + dt.timedelta(seconds=int(s)) for s in seconds]
        values = (sensor * 1.0 + (index // SENSORS) % 100 / 100.0)
        columns = [[f"s{int(s):03d}" for s in sensor], timestamps, values.tolist()]
        warehouse.insert(f"{db}.observations", list(zip(*columns)), column_names=["sensor_id", "observed_at", "value"])

        assert warehouse.command(f"SELECT count() FROM {db}.observations") == ROWS
        hours = warehouse.query(f"""
            SELECT toStartOfHour(observed_at) AS hour, count() AS n, round(avg(value), 6) AS mean
            FROM {db}.observations GROUP BY hour ORDER BY hour""").result_rows
        assert len(hours) == 100
        assert hours[0][0].replace(tzinfo=dt.timezone.utc) == start
        assert all(n == 10_000 for _, n, _ in hours)  # 100 readings per sensor per hour
        # Within each hour the per-sensor offset averages (0..99)/100 -> 0.495 plus the sensor mean 49.5.
        assert hours[0][2] == pytest.approx(49.5 + 0.495, abs=1e-6)

        one = warehouse.query(f"""
            SELECT max(value) FROM {db}.observations
            WHERE sensor_id = 's007' AND observed_at < '2026-01-01 01:00:00'""").result_rows[0][0]
        assert one == pytest.approx(7.99)
    finally:
        warehouse.command(f"DROP DATABASE IF EXISTS {db}")
