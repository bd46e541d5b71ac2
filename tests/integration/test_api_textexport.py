"""The warehouse writes observation files (CSV, JSON) byte for byte as the API's Python export
writes them: same columns, quoting, formula guard, escapes, number and time formats. Against
the real chDB, on values chosen to break a careless copy of those rules."""

from __future__ import annotations

import datetime as dt
import math
import random
import struct
import uuid

import pytest

from urbanstack.runtime.api import export, textexport
from urbanstack.runtime.api.catalogue import Catalogue, DatasetInfo, FieldInfo
from urbanstack.runtime.api.query import DatasetRef, ObservationPage, ObservationsQuery, Filters, QueryEngine

pytestmark = pytest.mark.platform

UTC = dt.timezone.utc
FIELDS = (FieldInfo("f64", "Float64", "m", "", False), FieldInfo("f32", "Float32", None, "", True),
          FieldInfo("i64", "Int64", None, "", False), FieldInfo("u64", "UInt64", None, "", True),
          FieldInfo("flag", "Bool", None, "", False), FieldInfo("day", "Date", None, "", False),
          FieldInfo("label", "String", None, "", False), FieldInfo("u8", "UInt8", None, "", True))
TEXTS = ["plain", "", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "=1+1", "+49 5241", "-3", "@home", "\tlead",
         "Grüße – ✓ 🚲", "back\\slash", "ctrl\x01\x1f\x7f", "tab\tinside", "quote'single", "\u2028sep", "é,\"\n"]
FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 8.383, 51.906, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 123e-7, 1.5e300,
          5e-324, -1.7976931348623157e308, 2.5e-10, 1234567.0, float("nan"), float("inf"), float("-inf"), None]

# The sink refuses positions outside ±180/±90 (so never NaN or inf).
COORDINATES = [v for v in FLOATS if v is not None and math.isfinite(v) and abs(v) <= 180]


class _Dataset:
    """A table shaped like a dataset's (base columns + FIELDS) in its own database."""

    def __init__(self, warehouse):
        self.database = f"textexport_{uuid.uuid4().hex[:8]}"
        warehouse.command(f"CREATE DATABASE {self.database}")
        warehouse.command(
            f"CREATE TABLE {self.database}.obs (event_id String, source String, sensor_id String, "
            "observed_at DateTime64(3, 'UTC'), lon Nullable(Float64), lat Nullable(Float64), "
            "f64 Nullable(Float64), f32 Float32, i64 Nullable(Int64), u64 UInt64, flag Nullable(Bool), "
            "day Nullable(Date), label Nullable(String), u8 UInt8, ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree(ingested_at) ORDER BY (sensor_id, observed_at, event_id)")
        self.info = DatasetInfo(owner="town", tool="tool", name="obs", display_name="Obs", description="",
                                fields=FIELDS, shared_with=(), public=True, licence="dl-de/zero-2-0",
                                retention_days=365, database=self.database, table="obs")


def _rows(count: int):
    rng = random.Random(7)
    t0 = dt.datetime(2026, 3, 2, tzinfo=UTC)
    rows = []
    for i in range(count):
        text = TEXTS[i % len(TEXTS)]
        value = FLOATS[i % len(FLOATS)] if i < 200 else struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        rows.append([text if i % 3 == 0 else f"e-{i}", TEXTS[(i * 7) % len(TEXTS)], text if i % 5 == 0 else f"s-{i % 4}",
                     t0 + dt.timedelta(seconds=i * 37, milliseconds=(i * 13) % 1000 if i % 2 else 0),
                     None if i % 11 == 0 else COORDINATES[i % len(COORDINATES)], 51.906 + i * 1e-6,
                     value, float(struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]),
                     None if i % 9 == 0 else rng.randint(-2**63, 2**63 - 1), rng.randint(0, 2**64 - 1),
                     None if i % 4 == 0 else bool(i % 2), None if i % 6 == 0 else dt.date(2026, 1, 1) + dt.timedelta(i),
                     None if i % 8 == 0 else text, i % 256])
    return rows


@pytest.fixture(scope="module")
def dataset(warehouse):
    data = _Dataset(warehouse)
    columns = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", *(f.name for f in FIELDS)]
    rows = _rows(3000)   # NaN and ±inf go in as such: the files must show them as empty / null
    data.rows = len(rows)
    warehouse.insert(f"{data.database}.obs", rows, column_names=columns)
    yield data
    warehouse.command(f"DROP DATABASE {data.database}")


@pytest.fixture(scope="module")
def engine(warehouse, dataset):
    catalogue = Catalogue()
    catalogue._datasets = {("town", "tool", "obs"): dataset.info}   # a dataset without a CRD behind it
    return QueryEngine(warehouse, catalogue)


def _python_file(engine, fmt: str, start, end) -> str:
    """What the API's export writes: the engine's row pages through export.observations_*."""
    rows, cursor = [], None
    while True:
        page = engine.observations(None, ObservationsQuery(dataset=DatasetRef("town", "tool", "obs"),
                                                           filters=Filters(start=start, end=end), limit=1000,
                                                           cursor=cursor))
        rows += page.rows
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    whole = ObservationPage(dataset=page.dataset, fields=page.fields, start=start, end=end, rows=tuple(rows),
                            next_cursor=None)
    writer = export.observations_csv if fmt == "csv" else export.observations_json
    return "".join(writer(whole))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_warehouse_writes_the_same_bytes_as_the_python_export(engine, dataset, fmt):
    start, end = dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 3, 5, tzinfo=UTC)
    expected = _python_file(engine, fmt, start, end)
    fields, text = engine.observations_text(None, DatasetRef("town", "tool", "obs"), start, end, fmt)
    assert fields == FIELDS
    body = text.decode("utf-8")
    empty = list((export.observations_csv if fmt == "csv" else export.observations_json)(
        ObservationPage(dataset=dataset.info, fields=FIELDS, start=start, end=end, rows=(), next_cursor=None)))
    whole = empty[0] + body if fmt == "csv" else empty[0] + body[2:] + "".join(empty[1:])
    assert whole.count("\r\n" if fmt == "csv" else '"event_id"') >= dataset.rows
    if whole != expected:
        for i, (a, b) in enumerate(zip(whole, expected)):
            if a != b:
                raise AssertionError(f"first difference at {i}: warehouse {whole[i - 80:i + 80]!r} "
                                     f"python {expected[i - 80:i + 80]!r}")
        raise AssertionError(f"lengths differ: {len(whole)} != {len(expected)}")


def test_floats_are_written_as_python_writes_them(warehouse):
    """Python's repr of 200,000 random doubles (every exponent) and float32 values."""
    rng = random.Random(11)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(100_000)]
    values += [rng.uniform(-1e4, 1e4) for _ in range(50_000)] + [round(rng.uniform(0, 100), 2) for _ in range(50_000)]
    values = [v for v in values if math.isfinite(v)]
    table = f"floats_{uuid.uuid4().hex[:8]}"
    warehouse.command(f"CREATE TABLE default.{table} (i UInt32, x Float64) ENGINE = MergeTree ORDER BY i")
    try:
        warehouse.insert(f"default.{table}", [[i, v] for i, v in enumerate(values)], column_names=["i", "x"])
        out = warehouse.raw_query(f"SELECT concat({textexport.python_float('x', 'x')}, '\\n') FROM default.{table} "
                                  "ORDER BY i", fmt="RawBLOB").decode().split("\n")
    finally:
        warehouse.command(f"DROP TABLE default.{table}")
    wrong = [(repr(v), got) for v, got in zip(values, out) if repr(v) != got]
    assert not wrong, f"{len(wrong)} of {len(values)} differ, e.g. {wrong[:5]}"
