"""The sink: tenant topics → validated batches → the tenant's ClickHouse table.

One consumer group reads every tenant data topic (``<slug>.<tool>.<dataset>``;
the DLQ ``<slug>.dlq`` has two parts and never matches). A message is routed by
its topic alone: topic ``guetersloh.pegel-warnung.water_levels`` writes to
``guetersloh.pegel_warnung__water_levels`` and nowhere else, and an event whose
payload names another tenant or dataset is rejected, so a forged payload cannot
reach another municipality's table.

Delivery is effectively once:

- a batch holds the records of one Kafka partition, offsets ``first..last``;
- invalid records go to the tenant's DLQ, acknowledged before anything is committed;
- before the insert, the sink commits the *unchanged* offset ``first`` with the
  metadata ``pending:<last>@<ms>`` (an intent). The insert carries the
  ``insert_deduplication_token`` ``<topic>:<partition>:<first>-<last>``;
- after the insert, it commits ``last + 1``.

A sink that dies between insert and commit restarts at ``first``, reads the
intent and closes its first batch exactly at ``last``: the same rows under the
same token, which ClickHouse drops (``non_replicated_deduplication_window``
on every platform table). ReplacingMergeTree keyed by ``event_id`` catches what
the token cannot (a producer sending a reading twice); queries that must not
see such a duplicate before a merge use ``FINAL``.

Invariant: records in = rows stored + records sent to the DLQ.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from urbanstack import tenancy
from urbanstack.operator import naming
from urbanstack.runtime.metering.consumer import ensure_meter_topic
from urbanstack.runtime.metering.emitter import METER_TOPIC, MeterEmitter, MeterMetrics
from urbanstack.runtime.metering.events import (DEAD_LETTERED, READINGS_INGESTED, ROWS_STORED, TYPE_INGEST, MeterEvent,
                                                sink_batch_id)
from urbanstack.runtime.events import (BATCH_SCHEMA_VERSION, CANONICAL_INSTANT, DATASET_PATTERN, FIELD_PATTERN,
                                       TENANT_PATTERN, EventError, Observation, ObservationBatch, event_id_of,
                                       parse_instant)

log = logging.getLogger("urbanstack.sink")

INTENT_PREFIX = "pending:"
HEADER_ERROR, HEADER_STAGE = "error", "stage"
HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET, HEADER_ROW = "topic", "partition", "offset", "row"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_JSON_COLUMN = re.compile(r"(Nullable\()?(LowCardinality\()?(String|U?Int(8|16|32|64)|Float(32|64)|Bool)\)?\)?")
_TICK_FUNCTIONS = {0: "fromUnixTimestamp64Second", 3: "fromUnixTimestamp64Milli", 6: "fromUnixTimestamp64Micro",
                   9: "fromUnixTimestamp64Nano"}


def ticks(value: datetime, precision: int = 3) -> int:
    """An aware datetime as the integer a ``DateTime64(precision)`` column stores
    (truncated, as ClickHouse truncates finer fractions)."""
    micros = (value - _EPOCH) // timedelta(microseconds=1)
    return micros * 10 ** precision // 1_000_000


# ClickHouse error codes that say "this data can never be written" rather than
# "try again later": a batch that hits one goes to the DLQ instead of retrying forever.
_DATA_ERROR_CODES = frozenset({6, 16, 27, 38, 41, 53, 60, 69, 70, 72, 81, 117})


# Configuration ----------------------------------------------------------------

@dataclass(frozen=True)
class SinkConfig:
    group_id: str = "urbanstack-sink"
    topic_pattern: str = tenancy.DATA_TOPIC_PATTERN
    batch_rows: int = 50_000
    batch_seconds: float = 1.0
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    schema_refresh_seconds: float = 30.0
    poll_messages: int = 10_000
    metrics_port: int = 0
    dlq_timeout_seconds: float = 30.0
    meter_topic: str = METER_TOPIC
    meter_wait_seconds: float = 2.0

    ENV = {
        "group_id": ("URBANSTACK_SINK_GROUP", "Kafka consumer group of the sink."),
        "topic_pattern": ("URBANSTACK_SINK_TOPIC_PATTERN", "Regular expression (leading ^) of the topics to consume."),
        "batch_rows": ("URBANSTACK_SINK_BATCH_ROWS", "Records per partition that close a batch."),
        "batch_seconds": ("URBANSTACK_SINK_BATCH_SECONDS", "Age in seconds that closes a batch."),
        "retry_initial_seconds": ("URBANSTACK_SINK_RETRY_INITIAL_SECONDS", "First back-off after a failed write."),
        "retry_max_seconds": ("URBANSTACK_SINK_RETRY_MAX_SECONDS", "Longest back-off between write attempts."),
        "schema_refresh_seconds": ("URBANSTACK_SINK_SCHEMA_REFRESH_SECONDS", "How long a table schema is cached."),
        "poll_messages": ("URBANSTACK_SINK_POLL_MESSAGES", "Messages fetched per consume call."),
        "metrics_port": ("URBANSTACK_SINK_METRICS_PORT", "Prometheus endpoint on 127.0.0.1 (0: none)."),
        "dlq_timeout_seconds": ("URBANSTACK_SINK_DLQ_TIMEOUT_SECONDS", "How long a DLQ send may take before the "
                                "partition is parked and retried (a missing DLQ topic fails after this)."),
        "meter_topic": ("URBANSTACK_METER_TOPIC", "Topic of the usage meter events (empty: no metering)."),
        "meter_wait_seconds": ("URBANSTACK_SINK_METER_WAIT_SECONDS", "How long a batch's commit waits for its "
                               "meter event to be acknowledged while the meter topic is reachable."),
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SinkConfig":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, _doc) in cls.ENV.items():
            if variable in environ:
                kind = type(getattr(cls, name))
                try:
                    values[name] = kind(environ[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be a {kind.__name__}, got {environ[variable]!r}") from None
        config = cls(**values)
        if config.batch_rows < 1 or config.batch_seconds <= 0:
            raise ValueError("URBANSTACK_SINK_BATCH_ROWS must be ≥ 1 and URBANSTACK_SINK_BATCH_SECONDS > 0")
        return config


# Routing ----------------------------------------------------------------------

class RecordError(ValueError):
    """A record cannot be stored; the message is the DLQ reason."""


@dataclass(frozen=True)
class Route:
    topic: str
    tenant: str
    tool: str
    dataset: str
    database: str
    table: str
    dlq_topic: str
    fast: bool = True   # tenant and dataset satisfy the event's own patterns, so equality checks suffice


def route(topic: str) -> Route:
    """Where a topic's records belong: derived with the operator's naming rules."""
    parts = tenancy.parse_topic(topic)
    if parts is None:
        raise RecordError(f"topic {topic!r} is not a tenant data topic <municipality>.<tool>.<dataset>")
    tenant, tool, dataset = parts
    return Route(topic=topic, tenant=tenant, tool=tool, dataset=dataset, database=naming.database(tenant),
                 table=naming.table(tool, dataset), dlq_topic=naming.dlq_topic(tenant),
                 fast=bool(TENANT_PATTERN.match(tenant) and DATASET_PATTERN.match(dataset)))


# Schema and validation ----------------------------------------------------------

_MISSING = object()
_VALUE_TYPES = (int, float, str)   # by exact type: bool is not a number here either
_INT_RANGES = {f"{sign}Int{bits}": ((0, 2 ** bits - 1) if sign else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
               for sign in ("", "U") for bits in (8, 16, 32, 64)}
_UNIT = re.compile(r"\[([^\[\]]+)\]\s*$")


def _integer(low: int, high: int):
    def coerce(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            value = _number_text(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise RecordError(f"expected an integer, got {value!r}")
                value = int(value)
        if type(value) is not int:
            raise RecordError(f"expected an integer, got {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise RecordError(f"{value} is outside {low}..{high}")
        return value
    return coerce


def _number_text(text: str) -> int | float:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        number = float(text.strip())
    except ValueError:
        raise RecordError(f"expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise RecordError(f"{text!r} is not a finite number")
    return number


def _float(value):
    if isinstance(value, float):
        return value
    if type(value) is int:
        return float(value)
    if isinstance(value, str):
        return float(_number_text(value))
    raise RecordError(f"expected a number, got {type(value).__name__} {value!r}")


def _string(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # numbers as text are lossless; a code such as a postal code may arrive as one
    raise RecordError(f"expected a string, got {type(value).__name__}")


def _bool(value):
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    raise RecordError(f"expected true/false or 0/1, got {value!r}")


def _date(value):
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise RecordError(f"expected a date YYYY-MM-DD, got {value!r}")


def _datetime(value):
    if isinstance(value, str):
        try:
            return parse_instant(value)
        except EventError as exc:
            raise RecordError(str(exc)) from None
    raise RecordError(f"expected an ISO-8601 timestamp with a time zone, got {value!r}")


def base_type(column_type: str) -> str:
    """``UInt32`` of ``Nullable(UInt32)``, ``String`` of ``Nullable(LowCardinality(String))``."""
    base = column_type
    for wrapper in ("Nullable(", "LowCardinality("):
        if base.startswith(wrapper):
            base = base[len(wrapper):-1]
    return base


def coercer(column_type: str) -> Callable[[Any], Any] | None:
    """The function that turns a JSON value into what a column of this type takes;
    None for types the sink cannot fill."""
    base = base_type(column_type)
    if base in _INT_RANGES:
        return _integer(*_INT_RANGES[base])
    if base in ("Float32", "Float64"):
        return _float
    if base == "String":
        return _string
    if base == "Bool":
        return _bool
    if base in ("Date", "Date32"):
        return _date
    if base.startswith("DateTime"):
        return _datetime
    return None


@dataclass(frozen=True)
class FieldColumn:
    name: str
    type: str
    nullable: bool
    coerce: Callable[[Any], Any] | None
    unit: str | None


@dataclass
class TableSchema:
    """The columns of one platform table, as ``system.columns`` reports them."""
    database: str
    table: str
    fields: dict[str, FieldColumn]
    column_names: tuple[str, ...]
    column_types: tuple[str, ...]
    problem: str | None = None
    retention_days: int | None = None
    fast: bool = True   # every field name is one an Observation accepts
    ingested_at: bool = False   # the table stamps rows with their insert time
    # Rows observed before this are deleted by the table's TTL as soon as they
    # arrive; rejecting them keeps "records in = rows stored + DLQ" true.
    oldest: datetime | None = None

    @classmethod
    def from_columns(cls, database: str, table: str, columns: list[tuple[str, str, str, str]],
                     retention_days: int | None = None, now: datetime | None = None) -> "TableSchema":
        """``columns``: (name, type, default_kind, comment) in table order."""
        types = {name: column_type for name, column_type, _kind, _comment in columns}
        missing = [name for name in tenancy.EVENT_COLUMNS if name not in types]
        problem = (f"table {database}.{table} lacks the standard column(s) {', '.join(missing)}; "
                   "it was not created by the operator") if missing else None
        fields = {}
        for name, column_type, default_kind, comment in columns:
            if name in tenancy.EVENT_COLUMNS or (default_kind and name == tenancy.INGESTED_AT):
                continue
            unit = _UNIT.search(comment or "")
            fields[name] = FieldColumn(name=name, type=column_type, nullable=column_type.startswith("Nullable("),
                                       coerce=coercer(column_type), unit=unit.group(1) if unit else None)
        names = tuple(n for n in tenancy.EVENT_COLUMNS if n in types) + tuple(fields)
        oldest = None
        if retention_days:
            oldest = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
        return cls(database=database, table=table, fields=fields, column_names=names,
                   column_types=tuple(types[n] for n in names), problem=problem, retention_days=retention_days,
                   oldest=oldest, fast=all(FIELD_PATTERN.match(name) for name in fields),
                   ingested_at="ingested_at" in types)

    def __post_init__(self) -> None:
        observed = dict(zip(self.column_names, self.column_types)).get("observed_at", "")
        found = re.match(r"DateTime64\((\d)", observed)
        self.precision = int(found.group(1)) if found else 0
        # Every value the sink puts in these columns is a JSON number, string, bool or null.
        self.json_insert = bool(found) and self.precision <= 6 and all(
            _JSON_COLUMN.fullmatch(column_type) for name, column_type in zip(self.column_names, self.column_types)
            if name != "observed_at")
        self._plan = tuple((c.name, c.coerce, c.nullable) for c in self.fields.values())
        self._units = {c.name: c.unit for c in self.fields.values() if c.unit}

    def fast_values(self, fields, units, observed_at: datetime) -> list | None:
        """The field values in column order if the record passes every rule, else None."""
        if type(fields) is not dict or not fields or type(units) is not dict:
            return None
        if self.oldest is not None and observed_at < self.oldest:
            return None
        present, values = 0, []
        for name, coerce, nullable in self._plan:
            value = fields.get(name, _MISSING)
            if value is _MISSING or value is None:
                if not nullable:
                    return None
                present += value is None
                values.append(None)
                continue
            present += 1
            if coerce is None or type(value) not in _VALUE_TYPES:
                return None
            try:
                values.append(coerce(value))
            except RecordError:
                return None
        if present != len(fields):
            return None  # a field the table does not have
        for name, unit in units.items():
            if name not in fields or type(unit) is not str or (unit and self._units.get(name, unit) != unit):
                return None
        return values

    def row(self, event: Observation) -> tuple:
        """The event as a row in column order, or RecordError naming every problem."""
        return self.row_of(event.event_id, event.source, event.sensor_id, event.observed_at, event.lon, event.lat,
                           event.fields, event.units)

    def row_of(self, event_id: str, source: str, sensor_id: str, observed_at: datetime, lon, lat,
               values: Mapping[str, Any], units: Mapping[str, str]) -> tuple:
        if self.problem:
            raise RecordError(self.problem)
        unknown = [name for name in values if name not in self.fields]
        problems = []
        if unknown:
            problems.append(f"unknown field(s) {', '.join(sorted(unknown))}: not columns of "
                            f"{self.database}.{self.table} (add them to the dataset or drop them in the connector)")
        if self.oldest is not None and observed_at < self.oldest:
            problems.append(f"observed_at: {observed_at.isoformat()} is older than the dataset's retention of "
                            f"{self.retention_days} days; the warehouse would delete it at once")
        row = [event_id, source, sensor_id, ticks(observed_at, self.precision), lon, lat]
        for column in self.fields.values():
            value = values.get(column.name)
            if value is None:
                if not column.nullable:
                    problems.append(f"fields.{column.name}: required, but "
                                    f"{'null' if column.name in values else 'missing'}")
                row.append(None)
                continue
            if column.coerce is None:
                problems.append(f"fields.{column.name}: column type {column.type} cannot be filled by the sink")
                continue
            try:
                row.append(column.coerce(value))
            except RecordError as exc:
                problems.append(f"fields.{column.name} ({column.type}): {exc}")
                continue
            unit = units.get(column.name)
            if unit and column.unit and unit != column.unit:
                problems.append(f"fields.{column.name}: unit {unit!r} differs from the dataset's {column.unit!r}")
        if problems:
            raise RecordError("; ".join(problems))
        return tuple(row)


def decode(payload: bytes | None, target: Route, schema: TableSchema | None) -> tuple:
    """Validate one message of ``target``'s topic into a row, or raise RecordError.

    Messages as :meth:`Observation.to_json` writes them take a fast path that
    checks the same rules without building an Observation; anything else goes
    through :meth:`Observation.from_json` and its precise error messages.
    """
    if payload is not None and schema is not None and target.fast and schema.fast:
        row = _fast_row(payload, target, schema)
        if row is not None:
            return row
    return decode_event(payload, target, schema)


def decode_event(payload: bytes | None, target: Route, schema: TableSchema | None) -> tuple:
    """The reference path: every rule of the Observation event, then the table's."""
    if payload is None:
        raise RecordError("empty message (a tombstone?): expected an observation event")
    try:
        event = Observation.from_json(payload)
    except EventError as exc:
        raise RecordError(str(exc)) from None
    if event.tenant != target.tenant:
        raise RecordError(f"tenant: event claims {event.tenant!r} but was sent to {target.tenant!r}'s topic "
                          f"{target.topic}; a municipality writes only its own data")
    if event.dataset != target.dataset:
        raise RecordError(f"dataset: event is for {event.dataset!r} but topic {target.topic} carries "
                          f"{target.dataset!r}")
    if schema is None:
        raise RecordError(f"table {target.database}.{target.table} does not exist: the dataset "
                          f"{target.dataset!r} of {target.tool!r} is not enabled for {target.tenant!r}")
    return schema.row(event)


def _no_constants(name: str):
    raise ValueError(name)


# NaN and Infinity are not JSON; the reference path refuses them, so the fast path must not see them.
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants)
_EVENT_KEYS = frozenset({"v", "event_id", "tenant", "dataset", "source", "sensor_id", "observed_at",
                         "fields", "units", "lon", "lat", "metadata"})
_CANONICAL_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")
_NUMBER_TYPES = (int, float)


def _fast_row(payload: bytes, target: Route, schema: TableSchema) -> tuple | None:
    """The row, or None: "not canonical or not valid, ask the reference path" (which
    then names the problem). This is the sink's hot path: keep it lean."""
    try:
        data = _STRICT_JSON.decode(payload.decode("utf-8"))
        if data["v"] != 1 or data["tenant"] != target.tenant or data["dataset"] != target.dataset:
            return None
        source, sensor_id, instant = data["source"], data["sensor_id"], data["observed_at"]
        fields, units, claimed = data["fields"], data["units"], data["event_id"]
    except (ValueError, KeyError, TypeError):  # not JSON, not an object, not all keys to_json writes
        return None
    if (not _EVENT_KEYS.issuperset(data) or type(source) is not str or not source.strip()
            or type(sensor_id) is not str or not sensor_id.strip()
            or type(instant) is not str or not _CANONICAL_INSTANT.fullmatch(instant)):
        return None
    lon, lat, metadata = data.get("lon"), data.get("lat"), data.get("metadata")
    if lon is not None or lat is not None:
        if (type(lon) not in _NUMBER_TYPES or type(lat) not in _NUMBER_TYPES
                or not -180 <= lon <= 180 or not -90 <= lat <= 90):
            return None
    if metadata and type(metadata) is not dict:
        return None
    try:
        observed_at = datetime.fromisoformat(instant)
    except ValueError:
        return None
    if observed_at.year < 1000 or (not observed_at.microsecond and len(instant) != 20):
        return None  # not how to_json writes it (".000000" for a whole second, a padded year)
    values = schema.fast_values(fields, units, observed_at)
    if values is None:
        return None
    event_id = event_id_of(target.tenant, target.dataset, source, sensor_id, instant)
    if claimed != event_id:
        return None
    return (event_id, source, sensor_id, ticks(observed_at, schema.precision), lon, lat, *values)


# Batches of observations (schema version 2) -----------------------------------------

def _fast_column(values: list, column: FieldColumn):
    """(values ready for the column, indexes of rows the fast path cannot vouch for)."""
    base = base_type(column.type)
    nullable = column.nullable
    # Whole-column checks first (C loops: set, min, max, sum); the per-value scan below
    # only runs for a column that mixes types or holds a value out of range.
    kinds = set(map(type, values))
    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]
        if kinds == {int} or (nullable and kinds == {int, type(None)}):
            present = values if len(kinds) == 1 else [v for v in values if v is not None]
            if low <= min(present) and max(present) <= high:
                return values, []
        elif nullable and kinds == {type(None)}:
            return values, []
        bad = [i for i, v in enumerate(values)
               if not ((type(v) is int and low <= v <= high) or (v is None and nullable))]
        return values, bad
    if base in ("Float32", "Float64"):
        if kinds == {float} and math.isfinite(sum(values)):   # a NaN or ±inf (or an overflow) makes the sum one
            return values, []
        bad = [i for i, v in enumerate(values)
               if not ((type(v) is float and math.isfinite(v)) or type(v) is int or (v is None and nullable))]
        if any(type(v) is int for v in values):
            values = [float(v) if type(v) is int else v for v in values]
        return values, bad
    if base == "String":
        if kinds == {str} or (nullable and kinds <= {str, type(None)}):
            return values, []
        return values, [i for i, v in enumerate(values) if not (type(v) is str or (v is None and nullable))]
    return values, list(range(len(values)))  # Bool, Date, …: the reference path converts them


class Rows:
    """Rows for one table, kept as columns (the shape the insert needs): a batch of 50,000
    readings is never turned into tuples and back."""

    __slots__ = ("columns",)

    def __init__(self, columns: list[list] | None = None):
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def __bool__(self) -> bool:
        return bool(self.columns and self.columns[0])

    def append(self, row: tuple) -> None:
        if self.columns is None:
            self.columns = [[value] for value in row]
        else:
            for column, value in zip(self.columns, row):
                column.append(value)

    def extend(self, columns: list[list]) -> None:
        if self.columns is None:
            self.columns = [list(column) for column in columns]
        else:
            for mine, theirs in zip(self.columns, columns):
                mine.extend(theirs)

    def row(self, index: int) -> tuple:
        return tuple(column[index] for column in self.columns)

    def __iter__(self):
        return zip(*self.columns) if self.columns else iter(())

    def select(self, indexes: list[int]) -> "Rows":
        return Rows([[column[i] for i in indexes] for column in self.columns])


class BatchDecode:
    """What one schema-2 message of a topic holds: rows for the table, and
    rejections (the row as a single event, the reason)."""

    __slots__ = ("columns", "rejected", "records", "accepted")

    def __init__(self) -> None:
        self.columns: list[list] | None = None
        self.rejected: list[tuple[bytes, str, int | None]] = []   # (row as a single event, reason, row index)
        self.records = 0
        self.accepted: list[int] = []   # row indexes behind ``columns``, for a refused insert

    @property
    def rows(self) -> list[tuple]:
        return list(zip(*self.columns)) if self.columns else []


def decode_batch(data: Mapping[str, Any], payload: bytes, target: Route, schema: TableSchema | None) -> BatchDecode:
    """Validate a schema-2 message (:class:`ObservationBatch`) row by row.

    Rows pass the same rules as single events: a row the column-wise fast
    checks cannot vouch for goes through the reference path, which either
    converts it (``"12"`` for an integer) or names its problem. A message that
    is not a well-formed batch is one rejected record.
    """
    result = BatchDecode()
    try:
        batch = ObservationBatch.from_dict(data, validate=False)
    except EventError as exc:
        result.records = 1
        result.rejected.append((payload, f"batch: {exc}", None))
        return result
    n = len(batch)
    result.records = n
    problem = None
    if batch.tenant != target.tenant:
        problem = (f"tenant: event claims {batch.tenant!r} but was sent to {target.tenant!r}'s topic "
                   f"{target.topic}; a municipality writes only its own data")
    elif batch.dataset != target.dataset:
        problem = f"dataset: event is for {batch.dataset!r} but topic {target.topic} carries {target.dataset!r}"
    elif schema is None:
        problem = (f"table {target.database}.{target.table} does not exist: the dataset {target.dataset!r} of "
                   f"{target.tool!r} is not enabled for {target.tenant!r}")
    if problem is not None:
        result.rejected = [(_row_json(batch, i), problem, i) for i in range(n)]
        return result
    slow: set[int] = set()
    if schema.problem or not schema.fast or any(name not in schema.fields for name in batch.fields) \
            or any(unit and schema._units.get(name, unit) != unit for name, unit in batch.units.items()):
        slow = set(range(n))  # every row fails the same way: the reference path names it
    columns = []
    if not slow:
        for column in schema.fields.values():
            values = batch.fields.get(column.name)
            if values is None:
                if not column.nullable:
                    slow = set(range(n))
                    break
                columns.append([None] * n)
                continue
            values, bad = _fast_column(list(values), column)
            slow.update(bad)
            columns.append(values)
    precision = schema.precision
    oldest = ticks(schema.oldest, precision) if schema.oldest is not None else None
    canonical = CANONICAL_INSTANT.fullmatch
    # A batch has far fewer distinct instants and sensors than rows: check each once.
    instants: dict[Any, int | None] = {}
    try:
        distinct_instants, distinct_sensors = set(batch.observed_at), set(batch.sensor_ids)
    except TypeError:   # a list or an object where a string belongs: the reference path names it
        distinct_instants, distinct_sensors = set(), set()
        slow = set(range(n))
    for instant in distinct_instants:
        value = None
        if type(instant) is str and canonical(instant):
            try:
                value = ticks(datetime.fromisoformat(instant), precision)
            except ValueError:
                value = None
        if value is not None and oldest is not None and value < oldest:
            value = None
        instants[instant] = value
    stamps = list(map(instants.get, batch.observed_at)) if instants else [None] * n
    if None in instants.values():
        slow.update(i for i, value in enumerate(stamps) if value is None)
    source, sensors = batch.source, batch.sensor_ids
    if type(source) is not str or not source.strip():
        slow = set(range(n))
    if not all(type(sensor) is str and sensor.strip() for sensor in distinct_sensors):
        slow.update(i for i, sensor in enumerate(sensors) if type(sensor) is not str or not sensor.strip())
    lon = batch.lon or (None,) * n
    lat = batch.lat or (None,) * n
    if batch.lon is not None:
        slow.update(i for i, (x, y) in enumerate(zip(lon, lat)) if not (
            (x is None and y is None) or (type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES
                                          and -180 <= x <= 180 and -90 <= y <= 90)))
    ids = batch.event_ids()   # the ids of slow rows are not used: the reference path derives its own
    if not slow:
        result.columns = [ids, [source] * n, list(sensors), stamps, list(lon), list(lat), *columns]
        result.accepted = list(range(n))
        return result
    rows_by_index = []
    for i in range(n):
        if i in slow:
            row_payload = _row_json(batch, i)
            try:
                rows_by_index.append((i, decode_event(row_payload, target, schema)))
            except RecordError as exc:
                result.rejected.append((row_payload, str(exc), i))
        else:
            rows_by_index.append((i, (ids[i], source, sensors[i], stamps[i], lon[i], lat[i],
                                      *(column[i] for column in columns))))
    if rows_by_index:
        result.columns = [list(column) for column in zip(*(row for _i, row in rows_by_index))]
    result.accepted = [i for i, _row in rows_by_index]
    return result


def _row_json(batch: ObservationBatch, index: int) -> bytes:
    row = batch.row(index)
    try:
        text = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:   # 1e999 in the message parses as infinity; keep it visible in the dead letter
        text = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


def batch_rows_as_events(payload: bytes, indexes: list[int]) -> list[bytes]:
    """Rows ``indexes`` of a schema-2 message as single-event payloads (for the DLQ)."""
    batch = ObservationBatch.from_dict(json.loads(payload))
    return [_row_json(batch, i) for i in indexes]


# Batching -----------------------------------------------------------------------

@dataclass
class Batch:
    """Records of one topic partition, offsets ``first..last``, not yet committed."""
    topic: str
    partition: int
    target: Route | None
    opened_at: float = field(default_factory=time.monotonic)
    first: int | None = None
    last: int | None = None
    rows: Rows = field(default_factory=Rows)
    # The messages behind ``rows`` (offset, payload, row indexes of a schema-2 message), for a refused insert.
    payloads: list[tuple[int, bytes | None, list[int] | None]] = field(default_factory=list)
    # (offset, payload, reason, row index within a schema-2 message or None)
    rejected: list[tuple[int, bytes | None, str, int | None]] = field(default_factory=list)
    replay_until: int | None = None
    schema: "TableSchema | None" = None
    replayed: bool = False      # this batch repeats one a dead sink may have written
    duplicates: int = 0         # rows already stored, dropped before the insert
    # A failed write parks the batch: its partition is paused until retry_at.
    retry_at: float | None = None
    delay: float = 0.0
    stage: str = "writing"      # what the writer was doing when it failed
    inserted: bool = False
    # (sensor_id, hour in ticks) whose hourly rollup must be recomputed after the insert
    repair: set = field(default_factory=set)
    # When the intent of this batch was first committed (ms since the epoch; a replay keeps the
    # dead sink's), and how many rows that dead sink had already stored: they count as stored.
    intent_ms: int | None = None
    restored: int = 0
    last_timestamp_ms: int | None = None   # Kafka timestamp of the last record: the meter event's time

    def add(self, offset: int) -> None:
        if self.first is None:
            self.first = offset
        self.last = offset

    @property
    def records(self) -> int:
        return len(self.rows) + len(self.rejected)

    def full(self, max_rows: int) -> bool:
        if self.replay_until is not None:
            return self.last is not None and self.last >= self.replay_until
        return self.records >= max_rows

    def due(self, now: float, max_age: float) -> bool:
        if self.retry_at is not None:
            return now >= self.retry_at
        # A replayed batch must end exactly where the interrupted one did.
        return self.records > 0 and self.replay_until is None and now - self.opened_at >= max_age

    @property
    def token(self) -> str:
        return dedup_token(self.topic, self.partition, self.first, self.last)


def dedup_token(topic: str, partition: int, first: int | None, last: int | None) -> str:
    return f"urbanstack-sink:{topic}:{partition}:{first}-{last}"


def intent(last: int, at_ms: int) -> str:
    """Offset metadata of a batch's intent: where it ends and when it was first committed."""
    return f"{INTENT_PREFIX}{last}@{at_ms}"


def parse_intent(metadata: str | None) -> int | None:
    return parse_intent_at(metadata)[0]


def parse_intent_at(metadata: str | None) -> tuple[int | None, int | None]:
    """(last offset, ms when first committed) of an intent; the time is None for intents
    written before it was recorded."""
    if metadata and metadata.startswith(INTENT_PREFIX):
        end, _, at = metadata[len(INTENT_PREFIX):].partition("@")
        try:
            return int(end), (int(at) if at else None)
        except ValueError:
            return None, None
    return None, None


# Metrics --------------------------------------------------------------------------

class SinkMetrics:
    def __init__(self, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter("urbanstack_sink_records_in", "Records consumed from tenant topics.",
                                  ["tenant"], registry=r)
        self.rows_stored = Counter("urbanstack_sink_rows_stored", "Rows written to the warehouse.",
                                   ["tenant"], registry=r)
        self.dlq = Counter("urbanstack_sink_dlq_records", "Records sent to a tenant's dead-letter topic.",
                           ["tenant"], registry=r)
        self.write_retries = Counter("urbanstack_sink_write_retries", "Failed attempts that were retried.",
                                     ["what"], registry=r)
        self.batch_seconds = Histogram("urbanstack_sink_batch_seconds", "Time to write and commit one batch.",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=r)
        self.duplicates = Counter("urbanstack_sink_duplicates", "Records already stored, acknowledged without "
                                  "writing them again.", ["tenant"], registry=r)
        self.parked = Gauge("urbanstack_sink_parked_partitions", "Partitions paused because their batch could "
                            "not be written; retried with back-off.", registry=r)
        self.lag = Gauge("urbanstack_sink_lag_records", "Records behind the partition's end.",
                         ["topic", "partition"], registry=r)
        self.totals = {"in": 0, "stored": 0, "duplicate": 0, "dlq": 0}

    def count(self, what: str, tenant: str, amount: int) -> None:
        if amount:
            {"in": self.records_in, "stored": self.rows_stored, "dlq": self.dlq,
             "duplicate": self.duplicates}[what].labels(tenant).inc(amount)
            self.totals[what] += amount


# The service --------------------------------------------------------------------------

class Stopped(Exception):
    """The stop event was set while a write was still failing; nothing was committed."""


class Sink:
    """Consume, validate, batch, write, commit. Run it with :meth:`run`."""

    def __init__(self, kafka_config: Mapping[str, Any], warehouse, config: SinkConfig = SinkConfig(),
                 metrics: SinkMetrics | None = None, meter: MeterEmitter | None = None, on_stored=None):
        self.config = config
        # Told about every batch the warehouse acknowledged: (route, schema, rows); the MQTT publisher.
        self._on_stored = on_stored
        self.metrics = metrics or SinkMetrics()
        self._meter = meter
        self._warehouse = warehouse
        self._consumer = Consumer({
            **kafka_config,
            "group.id": config.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # New tenants' topics join the subscription within this time.
            "topic.metadata.refresh.interval.ms": 15_000,
            "max.poll.interval.ms": 600_000,
            # A killed sink's partitions move to a restarted one after this long.
            "session.timeout.ms": 10_000,
            "log_level": 3,
        })
        dlq_timeout_ms = int(config.dlq_timeout_seconds * 1000)
        self._dlq = Producer({**kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                              "message.timeout.ms": dlq_timeout_ms,
                              "topic.metadata.propagation.max.ms": dlq_timeout_ms, "log_level": 3})
        self._batches: dict[tuple[str, int], Batch] = {}
        self._intents: dict[tuple[str, int], tuple[int, int | None]] = {}
        self._schemas: dict[tuple[str, str], tuple[TableSchema | None, float]] = {}
        self._routes: dict[str, Route | RecordError] = {}
        self._stop = threading.Event()
        self._last_lag = 0.0
        # One write in flight at a time, on a thread of its own: the warehouse works (chDB and
        # the HTTP client release the GIL) while this thread reads and decodes the next batch.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        self._inflight: tuple[Batch, Future, float] | None = None
        self._paused: set[tuple[str, int]] = set()

    # Kafka callbacks ----------------------------------------------------------
    def _on_assign(self, consumer, partitions) -> None:
        for tp in consumer.committed(partitions, timeout=30):
            end, at_ms = parse_intent_at(tp.metadata)
            if end is not None and tp.offset >= 0 and end >= tp.offset:
                self._intents[(tp.topic, tp.partition)] = (end, at_ms)
                log.info("replaying %s[%d] %d..%d exactly as the interrupted batch", tp.topic, tp.partition,
                         tp.offset, end)

    def _on_revoke(self, consumer, partitions) -> None:
        # The write in flight finishes and commits while the partitions are still ours.
        # Uncommitted batches are dropped, not written: the partition's next
        # owner reads them again from the committed offset.
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - the next owner replays what was not committed
            log.warning("write in flight during rebalance failed: %s", _first_line(exc))
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._batches.pop(key, None)
            self._intents.pop(key, None)
            if key in self._paused:
                self._paused.discard(key)
                self.metrics.parked.dec()

    # Loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._consumer.subscribe([self.config.topic_pattern], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def close(self) -> None:
        """Leave the group without committing anything that was not written."""
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - not committed: read again on restart
            log.warning("last write failed, its records are read again on restart: %s", _first_line(exc))
        finally:
            self._writer.shutdown(wait=True)
            self._consumer.close()
            self._dlq.flush(10)
            if self._meter is not None:
                self._meter.close()

    def run(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self.start()
        try:
            while not self._stop.is_set():
                self.step()
            self.flush_all()
        except Stopped:
            log.warning("stopped while a write was failing; the uncommitted records are read again on restart")
        finally:
            self.close()

    def step(self, timeout: float = 0.2) -> None:
        # consume(n, timeout) waits until it has n messages or the time is up; with batch
        # messages n may never come. Take what is there; wait only when nothing is.
        messages = self._consumer.consume(self.config.poll_messages, timeout=0)
        if not messages:
            messages = self._consumer.consume(1, timeout=timeout)
            if messages and self.config.poll_messages > 1:
                messages += self._consumer.consume(self.config.poll_messages - 1, timeout=0)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                # Broker restarts and network hiccups: librdkafka reconnects by itself.
                log.warning("Kafka: %s", error.str())
                continue
            self._accept(message)
        if self._inflight is not None and self._inflight[1].done():
            self._settle()
        now = time.monotonic()
        for batch in [b for b in self._batches.values() if b.due(now, self.config.batch_seconds)]:
            self._flush(batch)
        if now - self._last_lag > 5:
            self._last_lag = now
            self._update_lag()

    def _route(self, topic: str) -> Route | RecordError:
        target = self._routes.get(topic)
        if target is None:
            try:
                target = route(topic)
            except RecordError as exc:
                target = exc
            self._routes[topic] = target
        return target

    def _batch(self, topic: str, partition: int) -> Batch:
        key = (topic, partition)
        batch = self._batches.get(key)
        if batch is None:
            target = self._route(topic)
            target = target if isinstance(target, Route) else None
            # The schema is fixed for the life of a batch (at most batch_seconds): rows of one
            # insert must share one shape, and the hot path need not look it up per record.
            replay_until, intent_ms = self._intents.pop(key, (None, None))
            batch = self._batches[key] = Batch(topic, partition, target, replay_until=replay_until,
                                               replayed=replay_until is not None, intent_ms=intent_ms,
                                               schema=self._schema(target) if target else None)
        return batch

    def _accept(self, message) -> int:
        """Add a message to its partition's batch; the number of records it held."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if self._paused and (topic, partition) in self._paused:
            # The partition is paused behind a batch that could not be written yet. This message
            # was fetched before the pause took effect; it is read again after the seek on resume.
            return 0
        batch = self._batches.get((topic, partition))
        if batch is None:
            if topic.endswith(".dlq"):
                # A pattern that matches a DLQ would feed rejections back into it forever.
                if topic not in self._routes:
                    self._routes[topic] = RecordError("dead-letter topic")
                    log.error("topic pattern %s matches the dead-letter topic %s; its records are ignored",
                              self.config.topic_pattern, topic)
                return 0
            batch = self._batch(topic, partition)
        replay_until = batch.replay_until
        if replay_until is not None and offset > replay_until:
            if batch.records:
                self._flush(batch)
                batch = self._batch(topic, partition)
            batch.replay_until = replay_until = None
        payload = message.value()
        records = 1
        try:
            if batch.target is None:
                raise self._route(topic)  # type: ignore[misc]
            batched = None
            if payload is not None and batch.schema is not None and b'"v":2' in payload:
                batched = self._accept_batch(batch, offset, payload)
            if batched is None:   # a single event (schema 1)
                batch.rows.append(decode(payload, batch.target, batch.schema))
                batch.payloads.append((offset, payload, None))
            else:
                records = batched
        except RecordError as exc:
            batch.rejected.append((offset, payload, str(exc), None))
        if batch.first is None:
            batch.first = offset
        batch.last = offset
        batch.last_timestamp_ms = message.timestamp()[1]
        if (offset >= replay_until) if replay_until is not None else \
                len(batch.rows) + len(batch.rejected) >= self.config.batch_rows:
            self._flush(batch)
        return records

    def _accept_batch(self, batch: Batch, offset: int, payload: bytes) -> int | None:
        """Add a schema-2 message's rows; None if the payload is a single event after all."""
        try:
            data = _STRICT_JSON.decode(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordError(f"batch: not valid JSON ({exc})") from None
        if type(data) is not dict or data.get("v") != BATCH_SCHEMA_VERSION:
            return None
        decoded = decode_batch(data, payload, batch.target, batch.schema)
        if decoded.columns:
            batch.rows.extend(decoded.columns)
            batch.payloads.append((offset, payload, decoded.accepted))
        batch.rejected += [(offset, row_payload, reason, index) for row_payload, reason, index in decoded.rejected]
        return decoded.records

    def _schema(self, target: Route) -> TableSchema | None:
        key = (target.database, target.table)
        entry = self._schemas.get(key)
        now = time.monotonic()
        # A missing table is looked for again sooner: the operator may be creating it right now.
        max_age = self.config.schema_refresh_seconds if entry and entry[0] else min(5.0, self.config.schema_refresh_seconds)
        if entry is None or now - entry[1] >= max_age:
            entry = self._schemas[key] = (self._load_schema(target), now)
        return entry[0]

    def _load_schema(self, target: Route) -> TableSchema | None:
        rows = self._retry("reading table schemas", lambda: self._warehouse.query(
            "SELECT name, type, default_kind, comment FROM system.columns "
            "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            parameters={"db": target.database, "t": target.table}).result_rows)
        if not rows:
            return None
        engine = self._retry("reading table settings", lambda: self._warehouse.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": target.database, "t": target.table}).result_rows)
        return TableSchema.from_columns(target.database, target.table, [tuple(r) for r in rows],
                                        retention_days=tenancy.retention_days(engine[0][0] if engine else ""))

    # Writing ------------------------------------------------------------------------
    def flush_all(self) -> None:
        for batch in list(self._batches.values()):
            # An unfinished replay stays unwritten: written short, it would escape deduplication.
            if batch.records and (batch.replay_until is None or batch.full(self.config.batch_rows)):
                self._flush(batch)
        self._settle()

    def _flush(self, batch: Batch) -> None:
        """Hand a closed batch to the writer. The previous write is committed first, so
        the offsets of a partition advance in order and only over written records."""
        self._settle()
        key = (batch.topic, batch.partition)
        if self._batches.get(key) is batch:
            del self._batches[key]
        if batch.rows:
            if batch.intent_ms is None:   # a replay keeps the time of the interrupted batch's intent
                batch.intent_ms = int(time.time() * 1000)
            self._commit(batch, batch.first, intent(batch.last, batch.intent_ms))
        self._inflight = (batch, self._writer.submit(self._write, batch), time.monotonic())

    def _write(self, batch: Batch) -> None:
        """On the writer thread: drop what is stored already, insert, repair the rollup
        where readings were replaced, dead-letter. Each step that succeeded is not
        repeated when the batch is retried after a later step failed."""
        batch.stage = "writing"
        if batch.rows and not batch.inserted:
            try:
                batch.stage = "reading"
                self._drop_stored(batch)
                batch.stage = "writing"
                if batch.rows:
                    self._insert(batch)
                    self._announce(batch)
            except RecordError as exc:
                # The warehouse refuses these rows for good: park them in the DLQ instead of blocking.
                # Every row of its messages goes, including any already found stored.
                batch.rejected += self._refused(batch, f"warehouse refused the batch: {exc}")
                batch.rows, batch.payloads, batch.duplicates, batch.restored = Rows(), [], 0, 0
        batch.inserted = True
        if batch.repair:
            batch.stage = "repairing"
            self._repair_rollup(batch)
        if batch.rejected:
            batch.stage = "sending"
            self._send_to_dlq(batch)
        self._emit_meter(batch)

    def _announce(self, batch: Batch) -> None:
        if self._on_stored is None:
            return
        try:
            self._on_stored(batch.target, batch.schema, batch.rows)
        except Exception:  # noqa: BLE001 - announcing never fails the data path
            log.exception("announcing the stored rows of %s[%d] failed", batch.topic, batch.partition)

    def _emit_meter(self, batch: Batch) -> None:
        """One meter event per written batch, named by its topic, partition and offsets: a replay
        of the batch measures the same and sends the same event, which the ledger counts once."""
        if self._meter is None or batch.first is None or batch.target is None:
            return
        when = (datetime.fromtimestamp(batch.last_timestamp_ms / 1000, timezone.utc)
                if batch.last_timestamp_ms and batch.last_timestamp_ms > 0 else datetime.now(timezone.utc))
        stored = len(batch.rows) + batch.restored
        try:
            event = MeterEvent(id=sink_batch_id(batch.topic, batch.partition, batch.first, batch.last),
                               source="/urbanstack/sink", type=TYPE_INGEST,
                               subject=tenancy.tenant_of_topic(batch.topic), time=when,
                               dataset=f"{batch.target.tool}/{batch.target.dataset}",
                               quantities={READINGS_INGESTED: batch.records + batch.duplicates + batch.restored,
                                           ROWS_STORED: stored, DEAD_LETTERED: len(batch.rejected)},
                               extra={"topic": batch.topic, "partition": batch.partition,
                                      "offsets": [batch.first, batch.last]})
        except ValueError as exc:   # never fail the data path over a measurement
            log.warning("no meter event for %s[%d]: %s", batch.topic, batch.partition, exc)
            return
        self._meter.emit(event)

    def _settle(self) -> None:
        """Wait for the write in flight; commit it, or park its batch if it failed for a
        reason that may pass (warehouse or DLQ unavailable): its partition pauses and
        the batch is tried again with back-off while every other partition goes on."""
        if self._inflight is None:
            return
        batch, future, started = self._inflight
        self._inflight = None
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - an outage: park, retry later, lose nothing
            self._park(batch, batch.stage, exc)
            return
        if self._meter is not None:
            # Committed only once the batch's meter event is acknowledged, so a kill after the commit
            # cannot lose it; bounded, and skipped while the meter topic is known to be unreachable.
            self._meter.settle(self.config.meter_wait_seconds)
        self._commit(batch, batch.last + 1, "")
        key = (batch.topic, batch.partition)
        if key in self._paused:
            self._unpark(batch)
        tenant = tenancy.tenant_of_topic(batch.topic)
        self.metrics.count("in", tenant, batch.records + batch.duplicates)
        self.metrics.count("stored", tenant, len(batch.rows))
        self.metrics.count("duplicate", tenant, batch.duplicates)
        self.metrics.count("dlq", tenant, len(batch.rejected))
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _refused(self, batch: Batch, reason: str) -> list[tuple[int, bytes | None, str, int | None]]:
        rejected = []
        for offset, payload, indexes in batch.payloads:
            if indexes is None:
                rejected.append((offset, payload, reason, None))
            else:
                rejected += [(offset, row, reason, index)
                             for index, row in zip(indexes, batch_rows_as_events(payload, indexes))]
        return rejected

    def _park(self, batch: Batch, what: str, exc: Exception) -> None:
        tp = TopicPartition(batch.topic, batch.partition)
        key = (batch.topic, batch.partition)
        # A batch opened behind this one is dropped uncommitted: it is read again after the seek.
        self._batches[key] = batch
        if key not in self._paused:
            self._paused.add(key)
            batch.delay = self.config.retry_initial_seconds
            try:
                self._consumer.pause([tp])
            except KafkaException as error:
                log.warning("could not pause %s[%d]: %s", batch.topic, batch.partition, error)
            self.metrics.parked.inc()
        else:
            batch.delay = min(batch.delay * 2, self.config.retry_max_seconds)
        batch.retry_at = time.monotonic() + batch.delay
        self.metrics.write_retries.labels(what).inc()
        log.warning("%s %s[%d] failed, partition paused, retrying in %.1f s: %s", what, batch.topic,
                    batch.partition, batch.delay, _first_line(exc))

    def _unpark(self, batch: Batch) -> None:
        """Read on right after the written batch: messages fetched while parked were not kept."""
        tp = TopicPartition(batch.topic, batch.partition, batch.last + 1)
        try:
            self._consumer.seek(tp)
            self._consumer.resume([TopicPartition(batch.topic, batch.partition)])
        except KafkaException as error:
            log.warning("could not resume %s[%d]: %s", batch.topic, batch.partition, error)
        self._paused.discard((batch.topic, batch.partition))
        self.metrics.parked.dec()
        batch.retry_at = None

    def _drop_stored(self, batch: Batch) -> None:
        """Leave out rows whose reading is already stored with the same values (a re-sent
        file, a replayed batch), so a reading is written once and aggregates built at
        insert time count it once. A re-sent reading with new values is written: the
        newest copy wins, and the changed rows are reported to :meth:`_changed`."""
        schema, target = batch.schema, batch.target
        if batch.replayed:
            # A dead sink may have written the table but not the rollup: recompute every hour it touches.
            batch.repair.update(self._hours(list(batch.rows), schema))
        rows = batch.rows
        ids = rows.columns[0]
        if len(set(ids)) != len(ids):
            # The same reading twice in one batch: the later copy wins.
            last = {event_id: index for index, event_id in enumerate(ids)}
            rows = rows.select(sorted(last.values()))
            ids = rows.columns[0]
        low, high = min(rows.columns[3]), max(rows.columns[3])
        sensors = sorted(set(rows.columns[2]))
        fields = ", ".join(f"`{name}`" for name in schema.column_names[4:])
        function = _TICK_FUNCTIONS.get(schema.precision, "fromUnixTimestamp64Milli")
        # Rows of this batch written after its intent (which a replay keeps) were written by an
        # earlier attempt at this very batch — a dead sink's or a failed try's: nothing else writes
        # these sensors meanwhile. They count as stored by this batch, not as duplicates.
        since = batch.intent_ms if schema.ingested_at else None
        when = ", toUnixTimestamp64Milli(ingested_at)" if since is not None else ""
        stored = self._warehouse.query(
            f"SELECT event_id, {fields}{when} FROM `{target.database}`.`{target.table}` "
            f"WHERE sensor_id IN {{sensors:Array(String)}} AND observed_at >= {function}({{low:Int64}}, 'UTC') "
            f"AND observed_at <= {function}({{high:Int64}}, 'UTC')"
            f"{' ORDER BY ingested_at' if schema.ingested_at else ''}",
            parameters={"sensors": sensors, "low": low, "high": high}).result_rows
        duplicates = len(batch.rows) - len(rows)
        restored = 0
        if stored:
            latest = {row[0]: tuple(row[1:]) for row in stored}
            keep, changed = [], []
            for index, event_id in enumerate(ids):
                before = latest.get(event_id)
                if before is None:
                    keep.append(index)
                    continue
                row = rows.row(index)
                if since is not None:
                    before, ingested_ms = before[:-1], before[-1]
                if before == row[4:]:
                    if since is not None and ingested_ms >= since:
                        restored += 1
                    else:
                        duplicates += 1
                else:
                    keep.append(index)
                    changed.append(row)
            if len(keep) != len(ids):
                rows = rows.select(keep)
            if changed:
                self._changed(batch, changed)
        batch.rows = rows
        batch.duplicates += duplicates   # a retried write filters what an earlier attempt left
        batch.restored += restored

    def _changed(self, batch: Batch, rows: list[tuple]) -> None:
        """Rows that replace a stored reading with new values: the hourly rollup, which added
        the old values when they arrived, is recomputed for their hours after the insert."""
        log.info("%s[%d]: %d readings replace stored ones with new values", batch.topic, batch.partition, len(rows))
        batch.repair.update(self._hours(rows, batch.schema))

    @staticmethod
    def _hours(rows: list[tuple], schema: TableSchema) -> set[tuple[str, int]]:
        hour = 3600 * 10 ** schema.precision
        return {(row[2], row[3] - row[3] % hour) for row in rows}

    def _repair_rollup(self, batch: Batch) -> None:
        """Recompute the rollup rows of ``batch.repair`` from the table (FINAL): delete them,
        aggregate the table's current rows again. Readings of one sensor reach one partition,
        whose batches this single writer writes in order, so nothing else changes these rows
        meanwhile. Skipped where the dataset has no rollup or its backfill has not run yet."""
        target, schema = batch.target, batch.schema
        rollup = naming.rollup_table(target.tool, target.dataset)
        found = self._warehouse.query(
            "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": target.database, "t": rollup}).result_rows
        state = tenancy.parse_rollup_comment(found[0][0]) if found else None
        if state is None or not state.backfilled:
            batch.repair.clear()
            return
        columns = [name for (name,) in self._warehouse.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            parameters={"db": target.database, "t": rollup}).result_rows]
        measures = []
        for name in columns:
            measure = tenancy.rollup_measure(name)
            if measure is not None and measure[0] in schema.fields:
                measures.append((name, tenancy.rollup_expression(*measure)))
        precision, unit = schema.precision, 10 ** schema.precision
        keys = sorted((sensor, hour // unit) for sensor, hour in batch.repair)   # hours in seconds
        sensors = sorted({sensor for sensor, _ in keys})
        low, high = min(h for _, h in keys), max(h for _, h in keys) + 3600
        function = _TICK_FUNCTIONS.get(precision, "fromUnixTimestamp64Milli")
        table, rollup_name = f"`{target.database}`.`{target.table}`", f"`{target.database}`.`{rollup}`"
        parameters = {"keys": keys, "sensors": sensors, "low": low * unit, "high": high * unit}
        self._warehouse.command(
            f"DELETE FROM {rollup_name} WHERE has({{keys:Array(Tuple(String, Int64))}}, "
            f"(sensor_id, toInt64(toUnixTimestamp(`hour`))))", parameters=parameters)
        self._warehouse.command(
            f"INSERT INTO {rollup_name} (`sensor_id`, `hour`, `backfilled`, `rows`"
            f"{''.join(f', `{name}`' for name, _ in measures)}) "
            f"SELECT sensor_id, toStartOfHour(observed_at) AS h, 0, count()"
            f"{''.join(f', {expression}' for _, expression in measures)} FROM {table} FINAL "
            f"WHERE sensor_id IN {{sensors:Array(String)}} AND observed_at >= {function}({{low:Int64}}, 'UTC') "
            f"AND observed_at < {function}({{high:Int64}}, 'UTC') "
            f"AND has({{keys:Array(Tuple(String, Int64))}}, (sensor_id, toInt64(toUnixTimestamp(h)))) "
            f"GROUP BY sensor_id, h", parameters=parameters)
        batch.repair.clear()

    def _insert(self, batch: Batch) -> None:
        target, schema = batch.target, batch.schema
        settings = {"insert_deduplication_token": batch.token}
        try:
            columns = list(batch.rows.columns)
            if schema.json_insert:
                # The block as one JSON document of columns: json.dumps is a single C call and the
                # warehouse parses it natively, about half the work of the row-wise Native encoder.
                # observed_at goes as seconds with the fraction (exact: at most 16 significant digits).
                scale = 10 ** schema.precision
                columns[3] = [tick / scale for tick in columns[3]]
                body = json.dumps(columns, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
                self._warehouse.raw_insert(f"`{target.database}`.`{target.table}`", list(schema.column_names),
                                           insert_block=body.encode("ascii"), fmt="JSONCompactColumns",
                                           settings=settings)
            else:
                self._warehouse.insert(target.table, columns, database=target.database,
                                       column_names=schema.column_names, column_type_names=schema.column_types,
                                       column_oriented=True, settings=settings)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RecordError(f"cannot serialise the rows ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - classified below
            code = re.search(r"Code: (\d+)", str(exc))
            if code and int(code.group(1)) in _DATA_ERROR_CODES:
                self._schemas.pop((target.database, target.table), None)
                raise RecordError(_first_line(exc)) from None
            raise

    def _send_to_dlq(self, batch: Batch) -> None:
        failures: list[str] = []

        def delivered(error, _message):
            if error is not None:
                failures.append(error.str())

        dlq = naming.dlq_topic(tenancy.tenant_of_topic(batch.topic))
        for offset, payload, reason, row in batch.rejected:
            headers = [(HEADER_ERROR, reason[:2000].encode()), (HEADER_STAGE, b"sink"),
                       (HEADER_TOPIC, batch.topic.encode()), (HEADER_PARTITION, str(batch.partition).encode()),
                       (HEADER_OFFSET, str(offset).encode())]
            key = f"{batch.topic}:{batch.partition}:{offset}"
            if row is not None:
                headers.append((HEADER_ROW, str(row).encode()))
                key += f"#{row}"
            while True:
                try:
                    self._dlq.produce(dlq, payload, key.encode(),
                                      headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    self._dlq.poll(0.05)
        remaining = self._dlq.flush(self.config.dlq_timeout_seconds + 30)
        if remaining or failures:
            raise RuntimeError(f"DLQ {dlq}: {remaining} unacknowledged, {len(failures)} refused "
                               f"({'; '.join(failures[:3])})")

    def _commit(self, batch: Batch, offset: int, metadata: str) -> None:
        tp = TopicPartition(batch.topic, batch.partition, offset, metadata=metadata)

        def commit():
            try:
                self._consumer.commit(offsets=[tp], asynchronous=False)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
                                    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST):
                    # The partition moved on; its new owner replays from the last commit.
                    log.warning("commit of %s[%d] skipped: %s", batch.topic, batch.partition, error.str())
                    return
                raise

        self._retry(f"committing {batch.topic}[{batch.partition}]", commit)

    def _retry(self, what: str, action: Callable[[], Any]) -> Any:
        delay = self.config.retry_initial_seconds
        while True:
            try:
                return action()
            except RecordError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage: wait and try again, lose nothing
                self.metrics.write_retries.labels(what.split(" ")[0]).inc()
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, _first_line(exc))
                if self._stop.wait(delay):
                    raise Stopped(what) from None
                delay = min(delay * 2, self.config.retry_max_seconds)

    def _update_lag(self) -> None:
        try:
            assignment = self._consumer.assignment()
            positions = self._consumer.position(assignment)
        except KafkaException:
            return
        for tp in positions:
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def run_sink(settings, stop_event: threading.Event | None = None, config: SinkConfig | None = None,
             warehouse_client=None) -> None:
    """The ``urbanstack sink`` service: runs until ``stop_event`` is set (or SIGTERM/SIGINT
    when called from the main thread without one)."""
    from urbanstack import warehouse

    config = config or SinkConfig.from_env()
    kafka_config = settings.sink_kafka_config()  # without its own identity the sink does not start
    if stop_event is None:
        stop_event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop_event.set())
    metrics = SinkMetrics()
    # The meter shares the sink's identity; its counters join the sink's endpoint.
    meter = None
    if config.meter_topic:
        try:
            ensure_meter_topic(kafka_config, config.meter_topic)
        except Exception as exc:  # noqa: BLE001 - in a cluster the platform creates it; the sink may not
            log.info("meter topic %s not created by the sink (%s); it must exist for usage to be recorded",
                     config.meter_topic, _first_line(exc))
        meter = MeterEmitter(kafka_config, topic=config.meter_topic, metrics=MeterMetrics(metrics.registry))
    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    client = warehouse_client or warehouse.shared(settings.warehouse_url)
    log.info("sink: group %s, topics %s as Kafka user %s → %s", config.group_id, config.topic_pattern,
             kafka_config["sasl.username"], warehouse.redact(settings.warehouse_url))
    publisher = mqtt_publisher(settings)
    try:
        Sink(kafka_config, client, config, metrics, meter,
             on_stored=publisher.stored if publisher else None).run(stop_event)
    finally:
        if publisher:
            publisher.close()


def mqtt_publisher(settings):
    """The publisher of stored Observations to the MQTT broker, when its identity is configured
    (URBANSTACK_MQTT_ADMIN_USER/…_PASSWORD; on the local platform filled in); else None."""
    from urbanstack.settings import MissingSetting

    try:
        user, password = settings.mqtt_admin()
    except MissingSetting as exc:
        log.info("sink: stored Observations are not published over MQTT: %s", exc)
        return None
    from urbanstack.runtime.mqtt.publisher import ObservationPublisher

    log.info("sink: publishing stored Observations to mqtt://%s:%d as %s", settings.mqtt_server, settings.mqtt_port,
             user)
    return ObservationPublisher(settings.mqtt_server, settings.mqtt_port, user, password, settings.sta_base).start()


def main() -> None:
    from urbanstack.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_sink(Settings.from_env())


if __name__ == "__main__":
    main()
