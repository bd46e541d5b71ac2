"""The one query engine under REST and GraphQL.

Every request becomes one parameterised ClickHouse query. Identifiers (database,
table, columns) come only from the :class:`~.catalogue.Catalogue`, after a caller's
field names were checked against it, and are quoted; every value a caller sends
(times, sensor ids, bounding box, cursors, time zone) travels as a bound query
parameter. Access is decided here too, before any SQL is built, so neither
front end can forget it.

Rows of the same ``event_id`` may coexist until ClickHouse merges them
(ReplacingMergeTree), so every read of a dataset table uses ``FINAL``: the latest
ingested copy counts, once. A copy always lands in the same monthly partition as
the original (same ``observed_at``), which lets ``FINAL`` skip merging across
partitions.

Series and joins are answered from the dataset's hourly rollup (kept by a
materialized view at ingest, see operator/provisioners/warehouse.py) whenever it
gives the same answer as the table: buckets of an hour or more in a time zone
whose offset is a whole number of hours, only count/sum/avg/min/max, no bounding
box, and a rollup whose backfill has finished. The whole hours of the range come
from the rollup, the partial hours at its edges from the table; both contribute
partial counts, sums, minima and maxima that one outer aggregation combines.
Everything else reads the table. This relies on the sink writing each
``event_id`` once: the rollup cannot tell two copies of an event apart.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import re
import threading
import time
from collections import Counter
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, NamedTuple, Sequence
from zoneinfo import ZoneInfo, available_timezones

from urbanstack.operator import naming
from urbanstack.runtime.metering.api_meter import add_rows_read
from urbanstack import tenancy

from .auth import Permission, Principal
from .catalogue import Catalogue, DatasetInfo, FieldInfo

log = logging.getLogger(__name__)

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_TIMEZONES = frozenset(available_timezones())
# When (time.monotonic()) the warehouse queries of the current request must be done. Unset, each
# query gets query_timeout_seconds; GraphQL sets it, so that all fields of a request share them.
request_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


class Bucket(str, enum.Enum):
    minute = "minute"
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"


class Aggregate(str, enum.Enum):
    count = "count"
    sum = "sum"
    avg = "avg"
    min = "min"
    max = "max"
    p50 = "p50"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"


_BUCKET_SQL = {
    Bucket.minute: "toStartOfMinute(observed_at, {tz:String})",
    Bucket.hour: "toStartOfHour(observed_at, {tz:String})",
    Bucket.day: "toStartOfDay(observed_at, {tz:String})",
    Bucket.week: "toDateTime(toStartOfWeek(observed_at, 1, {tz:String}), {tz:String})",  # weeks start on Monday
    Bucket.month: "toDateTime(toStartOfMonth(observed_at, {tz:String}), {tz:String})",
}

# What each aggregate needs from the rollup, per field (see naming.rollup_column).
_ROLLUP_PARTS = {Aggregate(name): parts for name, parts in tenancy.AGGREGATE_PARTS.items()}
# Partial aggregates: from the table per row (tenancy.rollup_expression, as the rollup computes
# them) and from the rollup per sensor and hour ...
_PARTIAL_ROLLUP = {"count": "sum({column})", "sum": "sum({column})", "min": "min({column})", "max": "max({column})"}
# ... and how the outer query combines them into what the caller asked for.
_COMBINE = {
    Aggregate.count: "sum({count})",
    Aggregate.sum: "sum({sum})",
    Aggregate.avg: "sum({sum}) / sum({count})",
    Aggregate.min: "min({min})",
    Aggregate.max: "max({max})",
}
ROLLUP_STATE_SECONDS = 10.0  # how long the engine trusts what it found out about a rollup

# Exact quantiles, interpolated like numpy's default ("linear"): municipal reports get
# the same number a spreadsheet gives, not a sketch.
_AGGREGATE_SQL = {
    Aggregate.count: "count({column})",
    Aggregate.sum: "sum({column})",
    Aggregate.avg: "avg({column})",
    Aggregate.min: "min({column})",
    Aggregate.max: "max({column})",
    Aggregate.p50: "quantileExactInclusive(0.5)({column})",
    Aggregate.p90: "quantileExactInclusive(0.9)({column})",
    Aggregate.p95: "quantileExactInclusive(0.95)({column})",
    Aggregate.p99: "quantileExactInclusive(0.99)({column})",
}


@dataclass(frozen=True)
class ApiLimits:
    """Hard limits that keep one request from monopolising the warehouse."""
    default_rows: int = 1_000
    max_rows: int = 10_000
    max_export_rows: int = 100_000
    max_fields: int = 32
    max_sensors: int = 1_000
    query_timeout_seconds: float = 10.0
    # Passed with every warehouse query, so a query that would outgrow them fails (422) instead
    # of holding the shared warehouse, or this process's memory, for everybody.
    max_result_bytes: int = 64 * 2**20
    max_query_memory_bytes: int = 2**30
    # Request bodies (GraphQL; REST routes have none) and GraphQL documents.
    max_body_bytes: int = 2**20
    graphql_max_tokens: int = 2_000
    graphql_max_depth: int = 8          # of data fields (4 today); introspection nesting is bounded by the parser
    graphql_max_aliases: int = 30
    graphql_max_cost: int = 20          # per request; see graphql.field_cost (a default series costs 1)
    graphql_workers: int = 4            # GraphQL requests parsed and executed at once (threads)
    max_raw_range: timedelta = timedelta(days=366)
    max_range: dict[Bucket, timedelta] = field(default_factory=lambda: {
        Bucket.minute: timedelta(days=7),
        Bucket.hour: timedelta(days=400),
        Bucket.day: timedelta(days=366 * 20),
        Bucket.week: timedelta(days=366 * 50),
        Bucket.month: timedelta(days=366 * 100),
    })
    default_range: dict[Bucket, timedelta] = field(default_factory=lambda: {
        Bucket.minute: timedelta(days=1),
        Bucket.hour: timedelta(days=7),
        Bucket.day: timedelta(days=90),
        Bucket.week: timedelta(days=366),
        Bucket.month: timedelta(days=366 * 5),
    })
    default_raw_range: timedelta = timedelta(days=7)


class QueryError(Exception):
    """A request the API refuses; ``status`` is the HTTP status, the message says what to change."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str) -> QueryError:
    return QueryError(400, "bad_request", message)


# Requests ---------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetRef:
    owner: str
    tool: str
    name: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.tool}/{self.name}"


@dataclass(frozen=True)
class Filters:
    start: datetime | None = None
    end: datetime | None = None
    sensor_ids: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat (WGS 84)


@dataclass(frozen=True)
class SeriesQuery:
    dataset: DatasetRef
    fields: tuple[str, ...]
    aggregates: tuple[Aggregate, ...] = (Aggregate.avg,)
    bucket: Bucket = Bucket.hour
    filters: Filters = Filters()
    by_sensor: bool = False
    timezone: str = "UTC"
    limit: int | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class JoinSide:
    dataset: DatasetRef
    fields: tuple[str, ...]
    aggregates: tuple[Aggregate, ...] = (Aggregate.avg,)
    sensor_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinQuery:
    left: JoinSide
    right: JoinSide
    bucket: Bucket = Bucket.hour
    start: datetime | None = None
    end: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    timezone: str = "UTC"
    limit: int | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class ObservationsQuery:
    dataset: DatasetRef
    filters: Filters = Filters()
    fields: tuple[str, ...] = ()  # empty: all fields
    limit: int | None = None
    cursor: str | None = None


# Results ----------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    field: str
    aggregate: Aggregate
    unit: str | None

    @property
    def name(self) -> str:
        return f"{self.field}_{self.aggregate.value}"


class SeriesRow(NamedTuple):
    # A named tuple, not a dataclass: a year of hourly buckets is 8,760 of them per answer.
    bucket: datetime
    sensor_id: str | None
    events: int
    values: tuple[float | int | None, ...]


@dataclass(frozen=True)
class SeriesResult:
    dataset: DatasetInfo
    bucket: Bucket
    timezone: str
    start: datetime
    end: datetime
    metrics: tuple[Metric, ...]
    rows: tuple[SeriesRow, ...]
    next_cursor: str | None
    # With ``json=True``: each row as the JSON object the REST API sends, written by the
    # warehouse (``rows`` is then empty). A year of hourly buckets is 8,760 rows; building
    # Python objects and encoding them again would cost more than the query.
    json_rows: tuple[str, ...] | None = None


class JoinRow(NamedTuple):
    bucket: datetime
    left_events: int
    right_events: int
    left_values: tuple[float | int | None, ...]
    right_values: tuple[float | int | None, ...]


@dataclass(frozen=True)
class JoinResult:
    left: DatasetInfo
    right: DatasetInfo
    bucket: Bucket
    timezone: str
    start: datetime
    end: datetime
    left_metrics: tuple[Metric, ...]
    right_metrics: tuple[Metric, ...]
    rows: tuple[JoinRow, ...]
    next_cursor: str | None
    json_rows: tuple[str, ...] | None = None   # as in SeriesResult


@dataclass(frozen=True)
class ObservationRow:
    event_id: str
    source: str
    sensor_id: str
    observed_at: datetime
    lon: float | None
    lat: float | None
    values: tuple[Any, ...]


@dataclass(frozen=True)
class ObservationPage:
    dataset: DatasetInfo
    fields: tuple[FieldInfo, ...]
    start: datetime
    end: datetime
    rows: tuple[ObservationRow, ...]
    next_cursor: str | None


# Access -----------------------------------------------------------------------

def can_read(principal: Principal | None, dataset: DatasetInfo) -> bool:
    if dataset.public:
        return True
    if principal is None:
        return False
    if dataset.owner == principal.tenant:
        return principal.can(Permission.read_own)
    return principal.tenant in dataset.shared_with and principal.can(Permission.read_shared)


def authorize(principal: Principal | None, catalogue: Catalogue, ref: DatasetRef) -> DatasetInfo:
    """The dataset if the caller may read it. A dataset of another municipality that is not
    shared with the caller is reported exactly like one that does not exist."""
    dataset = catalogue.get(ref.owner, ref.tool, ref.name)
    if dataset is not None and dataset.public:
        return dataset
    if principal is None:
        raise QueryError(401, "unauthenticated", f"dataset {ref} is not open data: send a bearer token "
                                                 "(Authorization: Bearer <access token>)")
    if dataset is None or (dataset.owner != principal.tenant and principal.tenant not in dataset.shared_with):
        raise QueryError(404, "not_found", f"no dataset {ref} is visible to municipality {principal.tenant!r}; "
                                           "GET /api/v1/datasets lists the ones you can read")
    if not can_read(principal, dataset):
        needed = Permission.read_own if dataset.owner == principal.tenant else Permission.read_shared
        raise QueryError(403, "forbidden", f"reading {ref} needs permission {needed.value}, which your roles "
                                           f"({', '.join(sorted(principal.roles)) or 'none'}) do not grant; "
                                           "ask your municipality's administrator for the gov-viewer role")
    return dataset


# Engine -----------------------------------------------------------------------

class QueryEngine:
    def __init__(self, client, catalogue: Catalogue, limits: ApiLimits | None = None, *,
                 observe: Callable[[str, float], None] | None = None, rollups: bool = True):
        self.client = client
        self.catalogue = catalogue
        self.limits = limits or ApiLimits()
        self._observe = observe
        self.rollups = rollups           # False: every series and join reads the dataset tables
        self.plans: Counter[str] = Counter()   # how many dataset reads went to "rollup" and to "table"
        self._rollup_state: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}
        # chDB runs in this process and its client is not safe for concurrent queries.
        self._lock = threading.Lock() if "chdb" in type(client).__module__.lower() else nullcontext()

    # Datasets -------------------------------------------------------------
    def datasets(self, principal: Principal | None) -> list[DatasetInfo]:
        return [dataset for dataset in self.catalogue.datasets() if can_read(principal, dataset)]

    def dataset(self, principal: Principal | None, ref: DatasetRef) -> DatasetInfo:
        return authorize(principal, self.catalogue, ref)

    # Series ---------------------------------------------------------------
    def series(self, principal: Principal | None, query: SeriesQuery, *, json: bool = False) -> SeriesResult:
        dataset = authorize(principal, self.catalogue, query.dataset)
        metrics = self._metrics(dataset, query.fields, query.aggregates)
        tz = _timezone(query.timezone)
        start, end = self._range(query.filters.start, query.filters.end, query.bucket)
        limit = self._limit(query.limit)
        params: dict[str, Any] = {"tz": tz, "limit": limit + 1}
        having = ""
        after = False
        if query.cursor:
            last_bucket, last_sensor = _decode_cursor(query.cursor, (str, str))
            params["c_bucket"], params["c_sensor"] = _instant(last_bucket, "cursor"), last_sensor
            after = True
            having = " HAVING (bucket, sensor) > ({c_bucket:DateTime64(3, 'UTC')}, {c_sensor:String})"
        sensor = "sensor_id" if query.by_sensor else "''"

        def sql(plans: list[tuple[datetime, datetime] | None]) -> str:
            grouped = self._grouped(params, "", dataset, metrics, query.bucket, start, end, query.filters.sensor_ids,
                                    query.filters.bbox, plans[0], sensor=sensor, events="events", prefix="m",
                                    after=after, having=having)
            ordered = f"{grouped} ORDER BY bucket, sensor LIMIT {{limit:UInt32}}"
            if not as_json:
                return ordered
            sensor_json = "toJSONString(sensor)" if query.by_sensor else "'null'"
            return (f"SELECT bucket, sensor, concat('{{\"bucket\":\"', {_JSON_TIME}, '\",\"sensor_id\":', "
                    f"{sensor_json}, ',\"events\":', toString(events), ',\"values\":{{', "
                    f"{_json_members(metrics, 'm')}, '}}}}') FROM ({ordered}) ORDER BY bucket, sensor")

        as_json = json and _json_safe(metrics)
        plans = [self._rollup_hours(dataset, metrics, query.bucket, tz, start, end, query.filters.bbox)]
        rows = self._run_planned("series", (dataset,), plans, sql, params)
        more = len(rows) > limit
        rows = rows[:limit]
        if as_json:
            cursor = _encode_cursor([format_time(_utc(rows[-1][0])), rows[-1][1]]) if more else None
            return SeriesResult(dataset=dataset, bucket=query.bucket, timezone=tz, start=start, end=end,
                                metrics=metrics, rows=(), next_cursor=cursor,
                                json_rows=tuple([row[2] for row in rows]))
        by_sensor = query.by_sensor
        result = tuple([SeriesRow(_utc(row[0]), row[1] if by_sensor else None, row[2], _numbers(row[3:]))
                        for row in rows])
        cursor = _encode_cursor([format_time(result[-1].bucket), rows[-1][1]]) if more else None
        return SeriesResult(dataset=dataset, bucket=query.bucket, timezone=tz, start=start, end=end,
                            metrics=metrics, rows=result, next_cursor=cursor)

    # Join -----------------------------------------------------------------
    def join(self, principal: Principal | None, query: JoinQuery, *, json: bool = False) -> JoinResult:
        left = authorize(principal, self.catalogue, query.left.dataset)
        right = authorize(principal, self.catalogue, query.right.dataset)
        left_metrics = self._metrics(left, query.left.fields, query.left.aggregates)
        right_metrics = self._metrics(right, query.right.fields, query.right.aggregates)
        tz = _timezone(query.timezone)
        start, end = self._range(query.start, query.end, query.bucket)
        limit = self._limit(query.limit)
        params: dict[str, Any] = {"tz": tz, "limit": limit + 1}
        if query.cursor:
            (last_bucket,) = _decode_cursor(query.cursor, (str,))
            params["c_bucket"] = _instant(last_bucket, "cursor")
        sides = (("l", left, query.left, left_metrics), ("r", right, query.right, right_metrics))
        plans = [self._rollup_hours(dataset, metrics, query.bucket, tz, start, end, query.bbox)
                 for _, dataset, _, metrics in sides]

        def sql(hours: list[tuple[datetime, datetime] | None]) -> str:
            subqueries = [self._grouped(params, f"{prefix}_", dataset, metrics, query.bucket, start, end,
                                        side.sensor_ids, query.bbox, side_hours, sensor=None,
                                        events=f"{prefix}_events", prefix=prefix, after=bool(query.cursor))
                          for (prefix, dataset, side, metrics), side_hours in zip(sides, hours)]
            after = " WHERE bucket > {c_bucket:DateTime64(3, 'UTC')}" if query.cursor else ""
            left_columns = "".join(f", l{i}" for i in range(len(left_metrics)))
            right_columns = "".join(f", r{i}" for i in range(len(right_metrics)))
            joined = (f"SELECT bucket, l_events, r_events{left_columns}{right_columns} FROM ({subqueries[0]}) AS l "
                      f"INNER JOIN ({subqueries[1]}) AS r USING (bucket){after} ORDER BY bucket LIMIT {{limit:UInt32}}")
            if not as_json:
                return joined
            return (f"SELECT bucket, concat('{{\"bucket\":\"', {_JSON_TIME}, '\",\"left_events\":', "
                    f"toString(l_events), ',\"right_events\":', toString(r_events), ',\"left\":{{', "
                    f"{_json_members(left_metrics, 'l')}, '}},\"right\":{{', {_json_members(right_metrics, 'r')}, "
                    f"'}}}}') FROM ({joined}) ORDER BY bucket")

        as_json = json and _json_safe(left_metrics) and _json_safe(right_metrics)
        rows = self._run_planned("join", (left, right), plans, sql, params)
        more = len(rows) > limit
        rows = rows[:limit]
        if as_json:
            cursor = _encode_cursor([format_time(_utc(rows[-1][0]))]) if more else None
            return JoinResult(left=left, right=right, bucket=query.bucket, timezone=tz, start=start, end=end,
                              left_metrics=left_metrics, right_metrics=right_metrics, rows=(), next_cursor=cursor,
                              json_rows=tuple([row[1] for row in rows]))
        split = 3 + len(left_metrics)
        result = tuple([JoinRow(_utc(row[0]), row[1], row[2], _numbers(row[3:split]), _numbers(row[split:]))
                        for row in rows])
        cursor = _encode_cursor([format_time(result[-1].bucket)]) if more else None
        return JoinResult(left=left, right=right, bucket=query.bucket, timezone=tz, start=start, end=end,
                          left_metrics=left_metrics, right_metrics=right_metrics, rows=result, next_cursor=cursor)

    # Observations -----------------------------------------------------------
    def observations(self, principal: Principal | None, query: ObservationsQuery, *,
                     export: bool = False) -> ObservationPage:
        """Single deduplicated observations, oldest first. ``export`` raises the row limit to
        ``max_export_rows`` and refuses (rather than truncates) a larger result."""
        dataset = authorize(principal, self.catalogue, query.dataset)
        fields = self._fields(dataset, query.fields) if query.fields else dataset.fields
        start, end = self._raw_range(query.filters.start, query.filters.end)
        limit = self.limits.max_export_rows if export else self._limit(query.limit)
        params: dict[str, Any] = {"limit": limit + 1}
        where = _where(params, "", start, end, query.filters.sensor_ids, query.filters.bbox, self.limits)
        if query.cursor:
            observed_at, sensor_id, event_id = _decode_cursor(query.cursor, (str, str, str))
            params.update(c_time=_instant(observed_at, "cursor"), c_sensor=sensor_id, c_event=event_id)
            where.append("(observed_at, sensor_id, event_id) > "
                         "({c_time:DateTime64(3, 'UTC')}, {c_sensor:String}, {c_event:String})")
        columns = "".join(f", {_quote(f.name)}" for f in fields)
        sql = (f"SELECT event_id, source, sensor_id, observed_at, lon, lat{columns} FROM {_table(dataset)} FINAL "
               f"WHERE {' AND '.join(where)} ORDER BY observed_at, sensor_id, event_id LIMIT {{limit:UInt32}}")
        rows = self._run("export" if export else "observations", sql, params)
        more = len(rows) > limit
        if more and export:
            raise QueryError(422, "too_many_rows", f"the export would exceed {limit} rows; narrow the time range "
                                                   "or the sensors, or page through /observations")
        rows = rows[:limit]
        result = tuple(ObservationRow(event_id=row[0], source=row[1], sensor_id=row[2], observed_at=_utc(row[3]),
                                      lon=row[4], lat=row[5], values=_numbers(row[6:]))
                       for row in rows)
        cursor = None
        if more:
            last = result[-1]
            cursor = _encode_cursor([format_time(last.observed_at), last.sensor_id, last.event_id])
        return ObservationPage(dataset=dataset, fields=tuple(fields), start=start, end=end, rows=result,
                               next_cursor=cursor)

    def coverage(self, principal: Principal | None, ref: DatasetRef) -> tuple[datetime | None, datetime | None,
                                                                             datetime | None]:
        """(first observation, last observation, last ingest) of a dataset the caller may read;
        Nones for an empty table. Minimum and maximum need no FINAL: copies of an event share
        its time."""
        dataset = authorize(principal, self.catalogue, ref)
        rows = self._run("coverage", f"SELECT min(observed_at), max(observed_at), max(ingested_at), count() "
                                     f"FROM {_table(dataset)}", {})
        if not rows or not rows[0][3]:
            return None, None, None
        first, last, ingested, _ = rows[0]
        return _utc(first), _utc(last), _utc(ingested) if ingested is not None else None

    def ping(self) -> bool:
        try:
            with self._lock:
                self.client.query("SELECT 1", settings={"max_execution_time": 2})
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    # Rollups --------------------------------------------------------------
    def _rollup_hours(self, dataset: DatasetInfo, metrics: Sequence[Metric], bucket: Bucket, tz: str,
                      start: datetime, end: datetime,
                      bbox: tuple[float, float, float, float] | None) -> tuple[datetime, datetime] | None:
        """The whole hours ``[first, last)`` of the range that the rollup can answer, or None when the
        table must answer all of it."""
        if not self.rollups or bucket is Bucket.minute or bbox is not None:
            return None  # the rollup keeps no positions, and nothing finer than an hour
        if any(metric.aggregate not in _ROLLUP_PARTS for metric in metrics):
            return None  # quantiles need every value
        first, last = _ceil_hour(start), _floor_hour(end)
        if first >= last or not _whole_hour_zone(tz):
            return None
        needed = {naming.rollup_column(m.field, part) for m in metrics for part in _ROLLUP_PARTS[m.aggregate]}
        columns = self._rollup_columns(dataset)
        if columns is None or not needed <= columns:
            return None
        return first, last

    def _rollup_columns(self, dataset: DatasetInfo) -> frozenset[str] | None:
        """The rollup's columns once its view exists and its backfill has finished, else None."""
        rollup, view = naming.rollup_table(dataset.tool, dataset.name), naming.rollup_view(dataset.tool, dataset.name)
        key = (dataset.database, rollup)
        now = time.monotonic()
        cached = self._rollup_state.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        sql = ("SELECT name, comment, (SELECT groupArray(name) FROM system.columns WHERE database = {db:String} "
               "AND table = {rollup:String}) FROM system.tables WHERE database = {db:String} "
               "AND name IN ({rollup:String}, {view:String})")
        try:
            with self._lock:
                rows = self.client.query(sql, parameters={"db": dataset.database, "rollup": rollup, "view": view},
                                         settings={"readonly": 2, "max_execution_time": 2}).result_rows
        except Exception as exc:  # noqa: BLE001 - without an answer the table answers
            log.warning("cannot inspect rollup %s.%s: %s", dataset.database, rollup, str(exc).strip()[:200])
            rows = []
        found = {name: (comment, names) for name, comment, names in rows}
        state = tenancy.parse_rollup_comment(found[rollup][0]) if rollup in found else None
        columns = frozenset(found[rollup][1]) if view in found and state is not None and state.backfilled else None
        self._rollup_state[key] = (now + ROLLUP_STATE_SECONDS, columns)
        return columns

    def _run_planned(self, kind: str, datasets: Sequence[DatasetInfo],
                     plans: list[tuple[datetime, datetime] | None],
                     build: Callable[[list[tuple[datetime, datetime] | None]], str],
                     params: dict[str, Any]) -> list[tuple]:
        """Runs ``build(plans)`` (one plan per dataset). If a rollup turns out to be gone or to lack a
        column (dropped or rebuilt since it was inspected), forgets what it knew about the rollups and
        runs ``build`` on the tables alone."""
        if all(plan is None for plan in plans):
            self.plans["table"] += len(plans)
            return self._run(kind, build(plans), params)
        try:
            rows = self._run(kind, build(plans), params)
        except QueryError as error:
            if error.code not in ("not_provisioned", "warehouse_unavailable"):
                raise
            for dataset in datasets:
                self._rollup_state.pop((dataset.database, naming.rollup_table(dataset.tool, dataset.name)), None)
            self.plans["table"] += len(plans)
            return self._run(kind, build([None] * len(plans)), params)
        for plan in plans:
            self.plans["rollup" if plan is not None else "table"] += 1
        return rows

    def _grouped(self, params: dict[str, Any], key: str, dataset: DatasetInfo, metrics: Sequence[Metric],
                 bucket: Bucket, start: datetime, end: datetime, sensor_ids: Sequence[str],
                 bbox: tuple[float, float, float, float] | None, hours: tuple[datetime, datetime] | None, *,
                 sensor: str | None, events: str, prefix: str, after: bool, having: str = "") -> str:
        """``SELECT bucket[, sensor], <events>, <prefix>0 … GROUP BY bucket[, sensor]`` over one dataset: from
        its table alone, or with ``hours`` from the rollup for those hours and the table for the rest."""
        keys = "bucket" if sensor is None else "bucket, sensor"
        sensor_column = "" if sensor is None else f", {sensor} AS sensor"
        cursor = " AND observed_at >= {c_bucket:DateTime64(3, 'UTC')}" if after else ""
        if hours is None:
            where = _where(params, key, start, end, sensor_ids, bbox, self.limits)
            return (f"SELECT {_BUCKET_SQL[bucket]} AS bucket{sensor_column}, count() AS {events}"
                    f"{_metric_columns(metrics, prefix)} FROM {_table(dataset)} FINAL "
                    f"WHERE {' AND '.join(where)}{cursor} GROUP BY {keys}{having}")
        # One partial column per (field, part) the metrics need, in a stable order.
        parts = list(dict.fromkeys((m.field, part) for m in metrics for part in _ROLLUP_PARTS[m.aggregate]))
        alias = {pair: f"{prefix}_p{i}" for i, pair in enumerate(parts)}
        first, last = hours
        branches = []
        rollup = f"{_quote(dataset.database)}.{_quote(naming.rollup_table(dataset.tool, dataset.name))}"
        where = _where(params, key, first, last, sensor_ids, None, self.limits, column="hour")
        rollup_cursor = " AND `hour` >= {c_bucket:DateTime64(3, 'UTC')}" if after else ""
        columns = "".join(f", {_PARTIAL_ROLLUP[part].format(column=_quote(naming.rollup_column(name, part)))} "
                          f"AS {alias[(name, part)]}" for name, part in parts)
        branches.append(f"SELECT {_BUCKET_SQL[bucket].replace('observed_at', '`hour`')} AS bucket{sensor_column}, "
                        f"sum(`rows`) AS {prefix}_rows{columns} FROM {rollup} WHERE {' AND '.join(where)}"
                        f"{rollup_cursor} GROUP BY {keys}")
        columns = "".join(f", {tenancy.rollup_expression(name, part)} AS {alias[(name, part)]}"
                          for name, part in parts)
        for edge, (low, high) in (("a", (start, first)), ("z", (last, end))):
            if low < high:
                where = _where(params, f"{key}{edge}_", low, high, sensor_ids, None, self.limits)
                branches.append(f"SELECT {_BUCKET_SQL[bucket]} AS bucket{sensor_column}, count() AS {prefix}_rows"
                                f"{columns} FROM {_table(dataset)} FINAL WHERE {' AND '.join(where)}{cursor} "
                                f"GROUP BY {keys}")
        combined = "".join(
            f", {_COMBINE[m.aggregate].format(**{part: alias[(m.field, part)] for part in _ROLLUP_PARTS[m.aggregate]})}"
            f" AS {prefix}{i}" for i, m in enumerate(metrics))
        outer_sensor = "" if sensor is None else ", sensor"
        return (f"SELECT bucket{outer_sensor}, sum({prefix}_rows) AS {events}{combined} FROM "
                f"({' UNION ALL '.join(branches)}) GROUP BY {keys}{having}")

    # Helpers --------------------------------------------------------------
    def _fields(self, dataset: DatasetInfo, names: Sequence[str]) -> tuple[FieldInfo, ...]:
        if len(names) > self.limits.max_fields:
            raise bad_request(f"at most {self.limits.max_fields} fields per request, got {len(names)}")
        result = []
        for name in dict.fromkeys(names):
            info = dataset.field(name)
            if info is None:
                known = ", ".join(f.name for f in dataset.fields)
                raise bad_request(f"dataset {dataset.ref} has no field {name!r}; its fields are: {known}")
            result.append(info)
        return tuple(result)

    def _metrics(self, dataset: DatasetInfo, names: Sequence[str],
                 aggregates: Sequence[Aggregate]) -> tuple[Metric, ...]:
        if not names:
            raise bad_request(f"name at least one field of {dataset.ref} to aggregate "
                              f"({', '.join(f.name for f in dataset.fields)})")
        if not aggregates:
            raise bad_request("name at least one aggregate (" + ", ".join(a.value for a in Aggregate) + ")")
        metrics = []
        for info in self._fields(dataset, names):
            for aggregate in dict.fromkeys(Aggregate(a) for a in aggregates):
                if aggregate is not Aggregate.count and not info.numeric:
                    raise bad_request(f"field {info.name!r} of {dataset.ref} is {info.type}, not a number: "
                                      f"only 'count' applies to it")
                metrics.append(Metric(field=info.name, aggregate=aggregate,
                                      unit=None if aggregate is Aggregate.count else info.unit))
        return tuple(metrics)

    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return self.limits.default_rows
        if not 1 <= limit <= self.limits.max_rows:
            raise bad_request(f"limit must be between 1 and {self.limits.max_rows}, got {limit}")
        return limit

    def _range(self, start: datetime | None, end: datetime | None, bucket: Bucket) -> tuple[datetime, datetime]:
        return _checked_range(start, end, self.limits.default_range[bucket], self.limits.max_range[bucket],
                              f"with bucket {bucket.value!r} (use a larger bucket for longer ranges)")

    def _raw_range(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        return _checked_range(start, end, self.limits.default_raw_range, self.limits.max_raw_range,
                              "for single observations (use /series for longer ranges)")

    def _run(self, kind: str, sql: str, params: dict[str, Any]) -> list[tuple]:
        limits = self.limits
        timeout = limits.query_timeout_seconds
        deadline = request_deadline.get()
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise QueryError(422, "query_too_expensive", f"this request has used up its "
                                 f"{limits.query_timeout_seconds:g} s of warehouse time (shared by all its fields); "
                                 "ask for fewer fields per request")
        settings = {"max_execution_time": timeout, "timeout_overflow_mode": "throw",
                    "max_result_rows": max(limits.max_rows, limits.max_export_rows) + 1,
                    "max_result_bytes": limits.max_result_bytes, "result_overflow_mode": "throw",
                    "max_memory_usage": limits.max_query_memory_bytes,
                    "output_format_json_quote_64bit_integers": 0,
                    "readonly": 2, "do_not_merge_across_partitions_select_final": 1}
        began = time.perf_counter()
        try:
            with self._lock:
                result = self.client.query(sql, parameters=params, settings=settings)
            rows = result.result_rows
            add_rows_read(result.summary)
        except Exception as exc:  # noqa: BLE001 - translated into an error that names no SQL
            raise _translate(exc) from None
        finally:
            if self._observe:
                self._observe(kind, time.perf_counter() - began)
        return rows


def _translate(exc: Exception) -> QueryError:
    text = str(exc)
    if re.search(r"Code: (159|158|396|241)\b", text):
        return QueryError(422, "query_too_expensive", "the query exceeded the warehouse's time, memory or result-size "
                                                      "limit; narrow the time range, pick fewer sensors or fields, or "
                                                      "a larger bucket")
    if re.search(r"Code: (60|81)\b", text):
        return QueryError(404, "not_provisioned", "the dataset has no table in the warehouse yet; "
                                                  "the operator creates it when the municipality is reconciled")
    log.warning("warehouse query failed: %s", text.strip().splitlines()[0][:500] if text.strip() else exc)
    return QueryError(503, "warehouse_unavailable", "the warehouse could not answer; try again shortly")


def _where(params: dict[str, Any], prefix: str, start: datetime, end: datetime, sensor_ids: Sequence[str],
           bbox: tuple[float, float, float, float] | None, limits: ApiLimits, column: str = "observed_at") -> list[str]:
    params[f"{prefix}start"], params[f"{prefix}end"] = start, end
    where = [f"{_quote(column) if column != 'observed_at' else column} >= {{{prefix}start:DateTime64(3, 'UTC')}}",
             f"{_quote(column) if column != 'observed_at' else column} < {{{prefix}end:DateTime64(3, 'UTC')}}"]
    if sensor_ids:
        if len(sensor_ids) > limits.max_sensors:
            raise bad_request(f"at most {limits.max_sensors} sensor ids per request, got {len(sensor_ids)}")
        params[f"{prefix}sensors"] = list(dict.fromkeys(sensor_ids))
        where.append(f"sensor_id IN {{{prefix}sensors:Array(String)}}")
    if bbox is not None:
        min_lon, min_lat, max_lon, max_lat = _checked_bbox(bbox)
        params.update({f"{prefix}min_lon": min_lon, f"{prefix}min_lat": min_lat,
                       f"{prefix}max_lon": max_lon, f"{prefix}max_lat": max_lat})
        where.append(f"lon >= {{{prefix}min_lon:Float64}} AND lon <= {{{prefix}max_lon:Float64}} "
                     f"AND lat >= {{{prefix}min_lat:Float64}} AND lat <= {{{prefix}max_lat:Float64}}")
    return where


def _ceil_hour(value: datetime) -> datetime:
    floor = _floor_hour(value)
    return floor if floor == value else floor + timedelta(hours=1)


def _floor_hour(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=128)
def _whole_hour_zone(name: str) -> bool:
    """Whether ``name``'s offset from UTC is a whole number of hours at every day from 1970 to 2100,
    so that every UTC hour lies in exactly one local hour, day, week and month."""
    if name == "UTC":
        return True
    zone, instant = ZoneInfo(name), EARLIEST
    while instant < LATEST:
        offset = instant.astimezone(zone).utcoffset()
        if offset is None or offset.total_seconds() % 3600:
            return False
        instant += timedelta(days=1)
    return True


def _checked_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    if len(bbox) != 4:
        raise bad_request("bbox needs four numbers: min_lon,min_lat,max_lon,max_lat")
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in bbox)
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise bad_request("bbox must be min_lon,min_lat,max_lon,max_lat in WGS 84 degrees with min <= max "
                          f"(longitude -180..180, latitude -90..90), got {','.join(f'{v:g}' for v in bbox)}")
    return min_lon, min_lat, max_lon, max_lat


def _checked_range(start: datetime | None, end: datetime | None, default: timedelta, maximum: timedelta,
                   context: str) -> tuple[datetime, datetime]:
    end = _aware(end, "to") if end is not None else min(datetime.now(timezone.utc), LATEST)
    start = _aware(start, "from") if start is not None else max(end - default, EARLIEST)
    for name, value in (("from", start), ("to", end)):
        if not EARLIEST <= value <= LATEST:
            raise bad_request(f"{name} must lie between 1970-01-01 and 2100-01-01, got {format_time(value)}")
    if start >= end:
        raise bad_request(f"from ({format_time(start)}) must be before to ({format_time(end)})")
    if end - start > maximum:
        raise bad_request(f"the time range may span at most {maximum.days} days {context}; "
                          f"got {(end - start).days} days")
    return start, end


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise bad_request(f"{name}: {value.isoformat()} has no time zone; add 'Z' or an offset like '+01:00'")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise bad_request(f"{name} must lie between 1970-01-01 and 2100-01-01") from None


def _timezone(name: str) -> str:
    if name not in _TIMEZONES:
        raise bad_request(f"timezone must be an IANA time zone such as 'Europe/Berlin' or 'UTC', got {name!r}")
    return name


def _instant(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{what} is not valid; start again without it") from None
    return _aware(value, what)


def _quote(identifier: str) -> str:
    # Identifiers come from the catalogue, whose models already restrict them; this is the last line of defence.
    if not _IDENTIFIER.fullmatch(identifier):
        raise ValueError(f"refusing unexpected identifier {identifier!r}")
    return f"`{identifier}`"


def _table(dataset: DatasetInfo) -> str:
    return f"{_quote(dataset.database)}.{_quote(dataset.table)}"


def _metric_columns(metrics: Sequence[Metric], prefix: str) -> str:
    return "".join(f", {_AGGREGATE_SQL[m.aggregate].format(column=_quote(m.field))} AS {prefix}{i}"
                   for i, m in enumerate(metrics))


def _utc(value: datetime) -> datetime:
    # clickhouse-connect hands back naive UTC for chDB and may hand back aware values from a server.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def format_time(value: datetime) -> str:
    """``2026-01-31T23:00:00Z``, with milliseconds only where the instant has them."""
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    if value.microsecond:
        return f"{value.strftime('%Y-%m-%dT%H:%M:%S')}.{value.microsecond // 1000:03d}Z"
    return value.isoformat()[:19] + "Z"   # isoformat is C; a 4-digit year keeps the slice exact


# The warehouse writes JSON rows itself for the REST API (see SeriesResult.json_rows):
# times as format_time writes whole seconds, numbers as JSON (NaN and ±inf as null).
_JSON_TIME = "formatDateTime(bucket, '%Y-%m-%dT%H:%i:%SZ', 'UTC')"
_JSON_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _json_safe(metrics: Sequence[Metric]) -> bool:
    return all(_JSON_NAME.match(m.name) for m in metrics)


def _json_members(metrics: Sequence[Metric], prefix: str) -> str:
    """SQL for the members ``"name":value,…`` of a JSON object of metric values."""
    members = []
    for i, metric in enumerate(metrics):
        separator = "," if i else ""
        members.append(f"'{separator}\"{metric.name}\":', toJSONString({prefix}{i})")
    return ", ".join(members)


def _numbers(values) -> tuple:
    # x - x is 0 for every finite number and NaN for NaN and ±inf: JSON has neither (avg over no values is NaN).
    return tuple([v if v is None or v.__class__ is not float or v - v == 0 else None for v in values])


def _encode_cursor(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, types: tuple[type, ...]) -> tuple:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        values = None
    if not (isinstance(values, list) and len(values) == len(types)
            and all(isinstance(v, t) for v, t in zip(values, types))):
        raise bad_request("cursor is not valid for this request; use the next_cursor of the previous page "
                          "or start again without it")
    return tuple(values)




def parse_time(text: str | None, name: str) -> datetime | None:
    """A caller's ISO-8601 instant (with zone) as UTC; None stays None."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name}: not an ISO-8601 timestamp: {text[:40]!r} (example: 2026-03-01T00:00:00Z)") from None
    return _aware(value, name)


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None or not text.strip():
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(v == v and abs(v) != float("inf") for v in values):
        raise bad_request(f"bbox must be four numbers min_lon,min_lat,max_lon,max_lat, got {text[:80]!r}")
    return _checked_bbox(values)


def parse_ref(text: str, name: str) -> DatasetRef:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise bad_request(f"{name} must name a dataset as owner/tool/dataset, such as "
                          f"'guetersloh/passantenfrequenz-wetter/pedestrian_counts'; got {text[:120]!r}")
    return DatasetRef(*parts)
