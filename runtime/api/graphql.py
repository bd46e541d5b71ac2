"""The GraphQL schema: the same engine and the same access rules as REST, typed results."""


import asyncio
import logging
import threading
import time
import contextvars
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from functools import partial
from typing import Any, Callable

import strawberry
from fastapi import HTTPException
from graphql import (DocumentNode, FieldNode, FragmentDefinitionNode, GraphQLError,
                     InlineFragmentNode, OperationDefinitionNode, SelectionSetNode, value_from_ast_untyped)
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.fastapi import GraphQLRouter
from strawberry.types import Info
from strawberry.utils.logging import StrawberryLogger

from .auth import Principal
from .catalogue import DatasetInfo
from .query import (Aggregate as EngineAggregate, ApiLimits, Bucket as EngineBucket, DatasetRef, Filters, JoinQuery,
                    JoinSide, Metric as EngineMetric, ObservationsQuery, QueryEngine, QueryError, SeriesQuery,
                    request_deadline)

log = logging.getLogger(__name__)

Bucket = strawberry.enum(EngineBucket, description="Length of a time bucket.")
Aggregate = strawberry.enum(EngineAggregate, description="Aggregate over the observations of a bucket.")


@strawberry.type
class Field:
    name: str
    type: str
    unit: str | None
    description: str
    required: bool


@strawberry.type
class Dataset:
    id: str
    owner: str
    tool: str
    name: str
    title: str
    description: str
    fields: list[Field]
    public: bool
    licence: str | None
    shared_with: list[str] | None = strawberry.field(description="Shown to the owner only.")
    retention_days: int


@strawberry.type
class Metric:
    name: str
    field: str
    aggregate: Aggregate
    unit: str | None


@strawberry.type
class MetricValue:
    name: str
    value: float | None


@strawberry.type
class SeriesPoint:
    bucket: datetime
    sensor_id: str | None
    events: int
    values: list[MetricValue]


@strawberry.type
class Series:
    dataset: Dataset
    bucket: Bucket
    timezone: str
    start: datetime
    end: datetime
    metrics: list[Metric]
    points: list[SeriesPoint]
    next_cursor: str | None


@strawberry.type
class JoinPoint:
    bucket: datetime
    left_events: int
    right_events: int
    left: list[MetricValue]
    right: list[MetricValue]


@strawberry.type
class Join:
    left: Dataset
    right: Dataset
    bucket: Bucket
    timezone: str
    start: datetime
    end: datetime
    left_metrics: list[Metric]
    right_metrics: list[Metric]
    points: list[JoinPoint]
    next_cursor: str | None


@strawberry.type
class FieldValue:
    name: str
    number: float | None = strawberry.field(description="Set for numeric fields.")
    text: str | None = strawberry.field(description="Set for text, date and boolean fields.")


@strawberry.type
class Observation:
    event_id: str
    source: str
    sensor_id: str
    observed_at: datetime
    lon: float | None
    lat: float | None
    values: list[FieldValue]


@strawberry.type
class ObservationPage:
    dataset: Dataset
    fields: list[Field]
    rows: list[Observation]
    next_cursor: str | None


@strawberry.input
class DatasetInput:
    owner: str
    tool: str
    name: str


@strawberry.input
class BBoxInput:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


@strawberry.input
class JoinSideInput:
    dataset: DatasetInput
    fields: list[str]
    aggregates: list[Aggregate] = strawberry.field(default_factory=lambda: [EngineAggregate.avg])
    sensor_ids: list[str] = strawberry.field(default_factory=list)


def _dataset(info: DatasetInfo, principal: Principal | None) -> Dataset:
    return Dataset(id=info.ref, owner=info.owner, tool=info.tool, name=info.name, title=info.display_name,
                   description=info.description, public=info.public, licence=info.licence,
                   shared_with=list(info.shared_with) if principal and principal.tenant == info.owner else None,
                   retention_days=info.retention_days,
                   fields=[_field(f) for f in info.fields])


def _field(f) -> Field:
    return Field(name=f.name, type=f.type, unit=f.unit, description=f.description, required=f.required)


def _metric(m: EngineMetric) -> Metric:
    return Metric(name=m.name, field=m.field, aggregate=m.aggregate, unit=m.unit)


def _values(metrics, values) -> list[MetricValue]:
    return [MetricValue(name=m.name, value=None if v is None else float(v)) for m, v in zip(metrics, values)]


def _field_value(name: str, value: Any) -> FieldValue:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return FieldValue(name=name, number=float(value), text=None)
    if isinstance(value, (datetime, date)):
        return FieldValue(name=name, number=None, text=value.isoformat())
    return FieldValue(name=name, number=None, text=None if value is None else str(value).lower()
                      if isinstance(value, bool) else value)


def _ref(value: DatasetInput) -> DatasetRef:
    return DatasetRef(value.owner, value.tool, value.name)


def _bbox(value: BBoxInput | None):
    return None if value is None else (value.min_lon, value.min_lat, value.max_lon, value.max_lat)


def _call(info: Info, method: str, *args, **kwargs):
    engine: QueryEngine = info.context["engine"]
    try:
        return getattr(engine, method)(info.context["principal"], *args, **kwargs)
    except QueryError as error:
        raise GraphQLError(error.message, extensions={"code": error.code.upper(), "status": error.status}) from None


@strawberry.type
class Query:
    @strawberry.field(description="Datasets the caller may read: its own, those shared with it, open data.")
    def datasets(self, info: Info) -> list[Dataset]:
        principal = info.context["principal"]
        return [_dataset(d, principal) for d in _call(info, "datasets")]

    @strawberry.field(description="One dataset's metadata.")
    def dataset(self, info: Info, dataset: DatasetInput) -> Dataset:
        return _dataset(_call(info, "dataset", _ref(dataset)), info.context["principal"])

    @strawberry.field(description="Aggregates per time bucket (and sensor).")
    def series(self, info: Info, dataset: DatasetInput, fields: list[str],
               aggregates: list[Aggregate] | None = None, bucket: Bucket = EngineBucket.hour,
               start: datetime | None = None, end: datetime | None = None, sensor_ids: list[str] | None = None,
               bbox: BBoxInput | None = None, by_sensor: bool = False, timezone: str = "UTC",
               limit: int | None = None, cursor: str | None = None) -> Series:
        result = _call(info, "series", SeriesQuery(
            dataset=_ref(dataset), fields=tuple(fields), aggregates=tuple(aggregates or (EngineAggregate.avg,)),
            bucket=bucket, by_sensor=by_sensor, timezone=timezone, limit=limit, cursor=cursor,
            filters=Filters(start=start, end=end, sensor_ids=tuple(sensor_ids or ()), bbox=_bbox(bbox))))
        principal = info.context["principal"]
        return Series(dataset=_dataset(result.dataset, principal), bucket=result.bucket, timezone=result.timezone,
                      start=result.start, end=result.end, metrics=[_metric(m) for m in result.metrics],
                      points=[SeriesPoint(bucket=r.bucket, sensor_id=r.sensor_id, events=r.events,
                                          values=_values(result.metrics, r.values)) for r in result.rows],
                      next_cursor=result.next_cursor)

    @strawberry.field(description="Two datasets aggregated on common time buckets.")
    def join(self, info: Info, left: JoinSideInput, right: JoinSideInput, bucket: Bucket = EngineBucket.hour,
             start: datetime | None = None, end: datetime | None = None, bbox: BBoxInput | None = None,
             timezone: str = "UTC", limit: int | None = None, cursor: str | None = None) -> Join:
        sides = [JoinSide(_ref(s.dataset), tuple(s.fields), tuple(s.aggregates), tuple(s.sensor_ids))
                 for s in (left, right)]
        result = _call(info, "join", JoinQuery(left=sides[0], right=sides[1], bucket=bucket, start=start, end=end,
                                               bbox=_bbox(bbox), timezone=timezone, limit=limit, cursor=cursor))
        principal = info.context["principal"]
        return Join(left=_dataset(result.left, principal), right=_dataset(result.right, principal),
                    bucket=result.bucket, timezone=result.timezone, start=result.start, end=result.end,
                    left_metrics=[_metric(m) for m in result.left_metrics],
                    right_metrics=[_metric(m) for m in result.right_metrics],
                    points=[JoinPoint(bucket=r.bucket, left_events=r.left_events, right_events=r.right_events,
                                      left=_values(result.left_metrics, r.left_values),
                                      right=_values(result.right_metrics, r.right_values)) for r in result.rows],
                    next_cursor=result.next_cursor)

    @strawberry.field(description="Single observations, oldest first, one page at a time.")
    def observations(self, info: Info, dataset: DatasetInput, start: datetime | None = None,
                     end: datetime | None = None, sensor_ids: list[str] | None = None, bbox: BBoxInput | None = None,
                     fields: list[str] | None = None, limit: int | None = None,
                     cursor: str | None = None) -> ObservationPage:
        page = _call(info, "observations", ObservationsQuery(
            dataset=_ref(dataset), fields=tuple(fields or ()), limit=limit, cursor=cursor,
            filters=Filters(start=start, end=end, sensor_ids=tuple(sensor_ids or ()), bbox=_bbox(bbox))))
        return ObservationPage(
            dataset=_dataset(page.dataset, info.context["principal"]), fields=[_field(f) for f in page.fields],
            rows=[Observation(event_id=r.event_id, source=r.source, sensor_id=r.sensor_id, observed_at=r.observed_at,
                              lon=r.lon, lat=r.lat,
                              values=[_field_value(f.name, v) for f, v in zip(page.fields, r.values)])
                  for r in page.rows],
            next_cursor=page.next_cursor)


# Root fields that read the catalogue or the warehouse: each occurrence (alias) is one query against the quota.
DATA_FIELDS = frozenset({"datasets", "dataset", "series", "join", "observations"})
COST_UNIT = 10_000  # values (rows × values per row) a data field may return per unit of cost


def _count(value: Any, default: int) -> int:
    # A list argument given as one value is a list of one (GraphQL input coercion).
    return default if value is None else len(value) if isinstance(value, list) else 1


def field_cost(name: str, arguments: dict[str, Any], limits: ApiLimits) -> int:
    """1 per started COST_UNIT values the field may return: its rows (``limit``) × values per row."""
    if name in ("datasets", "dataset"):
        return 1
    limit = arguments.get("limit")
    rows = (limits.default_rows if limit is None
            else limit if isinstance(limit, int) and 1 <= limit <= limits.max_rows else limits.max_rows)
    if name == "series":
        values = _count(arguments.get("fields"), 1) * _count(arguments.get("aggregates"), 1)
    elif name == "join":
        values = sum(_count(side.get("fields"), 1) * _count(side.get("aggregates"), 1)
                     for side in (arguments.get("left"), arguments.get("right")) if isinstance(side, dict))
    else:  # observations: every field of the dataset unless some are named
        values = _count(arguments.get("fields"), limits.max_fields)
    return max(1, -(-rows * values // COST_UNIT))


def data_fields(document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None,
                limits: ApiLimits) -> tuple[int, int]:
    """How many data fields the operation asks for and what they cost: root fields, also those inside
    fragments, each spread counted again (a fragment is measured once, so nested spreads take no time)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
                  and (operation_name is None or (d.name is not None and d.name.value == operation_name))]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    known: dict[str, tuple[int, int]] = {}

    def measure(selection_set: SelectionSetNode) -> tuple[int, int]:
        fields = cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in DATA_FIELDS:
                    arguments = {argument.name.value: value_from_ast_untyped(argument.value, variables)
                                 for argument in selection.arguments or ()}
                    fields, cost = fields + 1, cost + field_cost(selection.name.value, arguments, limits)
                continue
            if isinstance(selection, InlineFragmentNode):
                inner = measure(selection.selection_set)
            else:
                name = selection.name.value
                if name not in known and name in fragments:
                    known[name] = (0, 0)  # validation has refused cycles; this only guards the recursion
                    known[name] = measure(fragments[name].selection_set)
                inner = known.get(name, (0, 0))
            fields, cost = fields + inner[0], cost + inner[1]
        return fields, cost

    return measure(operations[0].selection_set) if operations else (0, 0)


class DataFieldBudget(SchemaExtension):
    """Before anything runs: refuses an operation that costs more than a request may (see field_cost),
    then charges its data fields (at least one) against the caller's quota, all or none. A document
    refused before it ran (syntax, validation, cost) still counts as one query."""

    def __init__(self, limits: ApiLimits):
        self.limits = limits
        self.charged = False

    def on_operation(self):
        yield
        if not self.charged:
            self._charge(1)

    def on_execute(self):
        context = self.execution_context
        fields, cost = data_fields(context.graphql_document, context.operation_name, context.variables, self.limits)
        if cost > self.limits.graphql_max_cost:
            raise GraphQLError(
                f"this query costs {cost}, more than the {self.limits.graphql_max_cost} a request may cost: each "
                f"data field (series, join, observations, dataset, datasets; every alias) costs 1 per started "
                f"{COST_UNIT:,} values it may return, i.e. rows (limit, default {self.limits.default_rows:,}) × "
                "fields × aggregates; ask for fewer rows, fields or aggregates, or split the query into several "
                "requests", extensions={"code": "QUERY_TOO_COSTLY"})
        self._charge(max(fields, 1))
        yield

    def _charge(self, count: int) -> None:
        self.charged = True
        context = self.execution_context.context
        try:
            context["charge"](count)
        except HTTPException as refusal:
            # The router answers it with its HTTP status (429) once execution has unwound.
            context["refusal"] = refusal
            raise GraphQLError(str(refusal.detail), extensions={"code": "QUOTA_EXCEEDED"}) from None


class RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds; the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, burst: int = 20, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._logger, self._burst, self._period, self._clock = logger, burst, period, clock
        self._lock = threading.Lock()
        self._started, self._lines, self._dropped = clock(), 0, 0

    def info(self, message: str, *args: Any) -> None:
        with self._lock:
            now = self._clock()
            if now - self._started >= self._period:
                self._started, self._lines = now, 0
            if self._lines >= self._burst:
                self._dropped += 1
                return
            self._lines += 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            message += " (%d similar lines left out before)"
            args = (*args, dropped)
        self._logger.info(message, *args)


def _expected(error: GraphQLError) -> bool:
    # Our own refusals and GraphQL validation errors are for the caller; anything else may carry internals.
    original = error.original_error
    return original is None or isinstance(original, GraphQLError)


class BoundedSchema(strawberry.Schema):
    """Parses, validates and executes each request in a worker of ``pool``, never on the event loop
    (the resolvers are synchronous and a big document takes a while to parse), and logs a refused
    query as one rate-limited line instead of a traceback."""

    pool: ThreadPoolExecutor
    refusals: RateLimitedLog

    warehouse_seconds: float

    async def execute(self, *args, **kwargs):
        # In the request's context, so what it reads is metered (runtime/metering/api_meter.py).
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, partial(contextvars.copy_context().run, self._execute, *args, **kwargs))

    def _execute(self, *args, **kwargs):
        # All fields of the request share one query_timeout_seconds of warehouse time.
        deadline = request_deadline.set(time.monotonic() + self.warehouse_seconds)
        try:
            return self.execute_sync(*args, **kwargs)
        finally:
            request_deadline.reset(deadline)

    def process_errors(self, errors, execution_context=None) -> None:
        refusals = [error for error in errors if _expected(error)]
        if refusals:
            more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
            self.refusals.info("graphql query refused: %s%s", " ".join(refusals[0].message.split())[:300], more)
        for error in errors:
            if not _expected(error):
                StrawberryLogger.error(error, execution_context)


def build_schema(limits: ApiLimits) -> BoundedSchema:
    schema = BoundedSchema(query=Query, extensions=[
        lambda: MaxTokensLimiter(max_token_count=limits.graphql_max_tokens),
        lambda: MaxAliasesLimiter(max_alias_count=limits.graphql_max_aliases),
        lambda: QueryDepthLimiter(max_depth=limits.graphql_max_depth),
        lambda: DataFieldBudget(limits),
        lambda: MaskErrors(should_mask_error=lambda error: not _expected(error), error_message="internal error")])
    schema.pool = ThreadPoolExecutor(limits.graphql_workers, thread_name_prefix="graphql")
    schema.refusals = RateLimitedLog(log)
    schema.warehouse_seconds = limits.query_timeout_seconds
    return schema


class BoundedGraphQLRouter(GraphQLRouter):
    """Answers a request whose data fields the quota refused with that refusal (HTTP 429), as REST does."""

    async def execute_single(self, request, request_adapter, sub_response, context, root_value, request_data):
        result = await super().execute_single(request, request_adapter, sub_response, context, root_value,
                                              request_data)
        if "refusal" in context:
            raise context["refusal"]
        return result
