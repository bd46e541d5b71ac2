"""The warehouse engine with a million rows: insert and hourly aggregates, timed.

100 sensors × 10,000 readings (one every 36 s: 100 hours) into a MergeTree table
partitioned by month, then one hourly GROUP BY and one sensor/time-range lookup;
the results are checked, so a fast wrong answer does not count.

    .venv/bin/python bench/warehouse_million_rows.py            # embedded chDB in a temporary path
    .venv/bin/python bench/warehouse_million_rows.py --url http://...   # a ClickHouse server

This was tests/integration/test_warehouse.py; the test now checks the same behaviour
on a handful of rows placed on hour and month edges.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid

import numpy as np

from ingest_throughput import machine
from urbanstack import warehouse as wh

ROWS = 1_000_000
SENSORS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="warehouse URL (default: embedded chDB in a temporary directory)")
    args = parser.parse_args()
    client = wh.connect(args.url or f"chdb://{tempfile.mkdtemp(prefix='urbanstack-bench-')}")
    print(f"machine: {machine()}")
    db = f"probe_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {db}")
    try:
        client.command(f"""
            CREATE TABLE {db}.observations (
                sensor_id LowCardinality(String),
                observed_at DateTime64(3, 'UTC'),
                value Float64
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(observed_at)
            ORDER BY (sensor_id, observed_at)""")
        start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        index = np.arange(ROWS)
        sensor = index % SENSORS
        seconds = (index // SENSORS) * 36
        timestamps = [start + dt.timedelta(seconds=int(s)) for s in seconds]
        values = sensor * 1.0 + (index // SENSORS) % 100 / 100.0
        rows = list(zip([f"s{int(s):03d}" for s in sensor], timestamps, values.tolist()))

        began = time.monotonic()
        client.insert(f"{db}.observations", rows, column_names=["sensor_id", "observed_at", "value"])
        inserted = time.monotonic()
        hours = client.query(f"""
            SELECT toStartOfHour(observed_at) AS hour, count() AS n, round(avg(value), 6) AS mean
            FROM {db}.observations GROUP BY hour ORDER BY hour""").result_rows
        aggregated = time.monotonic()
        one = client.query(f"""
            SELECT max(value) FROM {db}.observations
            WHERE sensor_id = 's007' AND observed_at < '2026-01-01 01:00:00'""").result_rows[0][0]
        looked_up = time.monotonic()

        assert client.command(f"SELECT count() FROM {db}.observations") == ROWS
        assert len(hours) == 100 and all(n == 10_000 for _, n, _ in hours)
        assert abs(hours[0][2] - (49.5 + 0.495)) < 1e-6 and abs(one - 7.99) < 1e-9
        print(f"insert of {ROWS:,} rows: {inserted - began:.2f} s; hourly GROUP BY: {aggregated - inserted:.3f} s; "
              f"one sensor's first hour: {looked_up - aggregated:.3f} s")
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")


if __name__ == "__main__":
    main()
