"""REST routes under ``/api/v1``: thin translations of query parameters into engine calls."""


import enum
import json
from typing import Annotated, Any, Iterator, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from urbanstack.operator import naming

from . import export
from .auth import Principal
from .catalogue import DatasetInfo
from .query import (Aggregate, Bucket, DatasetRef, Filters, JoinQuery, JoinResult, JoinSide, Metric,
                    ObservationPage, ObservationsQuery, QueryEngine, SeriesQuery, SeriesResult, format_time,
                    parse_bbox, parse_ref, parse_time)


class ExportFormat(str, enum.Enum):
    csv = "csv"
    json = "json"
    geojson = "geojson"


class FieldOut(BaseModel):
    name: str
    type: str = Field(description="ClickHouse column type, e.g. Float64, UInt32, String.")
    unit: str | None
    description: str
    required: bool


class DatasetOut(BaseModel):
    id: str = Field(description="owner/tool/dataset: how every other route names the dataset.")
    owner: str = Field(description="Slug of the municipality the data belongs to.")
    tool: str
    name: str
    title: str
    description: str
    fields: list[FieldOut]
    public: bool = Field(description="Published as open data; readable without a token.")
    licence: str | None = Field(description="dl-de/zero-2-0 for open data.")
    shared_with: list[str] | None = Field(description="Municipalities it is shared with (shown to its owner only).")
    retention_days: int


class MetricOut(BaseModel):
    name: str = Field(description="<field>_<aggregate>, the key in each row's values.")
    field: str
    aggregate: Aggregate
    unit: str | None


class SeriesRowOut(BaseModel):
    bucket: str = Field(description="Start of the bucket, UTC (ISO 8601).")
    sensor_id: str | None
    events: int = Field(description="Observations in the bucket (after deduplication).")
    values: dict[str, float | None]


class SeriesOut(BaseModel):
    dataset: str
    bucket: Bucket
    timezone: str
    from_: str = Field(alias="from")
    to: str
    metrics: list[MetricOut]
    rows: list[SeriesRowOut]
    next_cursor: str | None


class JoinRowOut(BaseModel):
    bucket: str
    left_events: int
    right_events: int
    left: dict[str, float | None]
    right: dict[str, float | None]


class JoinOut(BaseModel):
    left: str
    right: str
    bucket: Bucket
    timezone: str
    from_: str = Field(alias="from")
    to: str
    left_metrics: list[MetricOut]
    right_metrics: list[MetricOut]
    rows: list[JoinRowOut]
    next_cursor: str | None


class ObservationOut(BaseModel):
    event_id: str
    source: str
    sensor_id: str
    observed_at: str
    lon: float | None
    lat: float | None
    values: dict[str, float | int | bool | str | None]


class ObservationsOut(BaseModel):
    dataset: str
    fields: list[FieldOut]
    from_: str = Field(alias="from")
    to: str
    rows: list[ObservationOut]
    next_cursor: str | None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description} for status, description in (
        (400, "The request is invalid; the message says what to change."),
        (401, "No token was sent for data that is not open, or the token is invalid."),
        (403, "The token's roles do not allow this."),
        (404, "No such dataset is visible to the caller."),
        (429, "The caller's queries per hour are used up (its municipality's plan, or the limit without a "
              "token); Retry-After says when to try again."),
    )
}
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}

Owner = Annotated[str, Path(pattern=naming.SLUG_PATTERN, max_length=naming.SLUG_MAX_LENGTH,
                            description="Slug of the municipality that owns the dataset.")]
Tool = Annotated[str, Path(pattern=naming.SLUG_PATTERN, max_length=naming.SLUG_MAX_LENGTH)]
DatasetName = Annotated[str, Path(pattern=naming.DATASET_PATTERN, max_length=63)]
From = Annotated[str | None, Query(alias="from", description="Start (inclusive), ISO 8601 with zone.",
                                   examples=["2026-03-01T00:00:00Z"])]
To = Annotated[str | None, Query(description="End (exclusive), ISO 8601 with zone; default now.")]
SensorIds = Annotated[list[str], Query(description="Only these sensors (repeat the parameter).")]
BBox = Annotated[str | None, Query(description="min_lon,min_lat,max_lon,max_lat (WGS 84).",
                                   examples=["8.37,51.89,8.40,51.92"])]
TimeZone = Annotated[str, Query(description="IANA time zone for bucket boundaries, e.g. Europe/Berlin.")]
Limit = Annotated[int | None, Query(ge=1, description="Rows per page (default 1000, at most 10000).")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def dataset_out(dataset: DatasetInfo, principal: Principal | None) -> DatasetOut:
    owner_view = principal is not None and principal.tenant == dataset.owner
    return DatasetOut(
        id=dataset.ref, owner=dataset.owner, tool=dataset.tool, name=dataset.name, title=dataset.display_name,
        description=dataset.description, public=dataset.public, licence=dataset.licence,
        shared_with=list(dataset.shared_with) if owner_view else None, retention_days=dataset.retention_days,
        fields=[FieldOut(name=f.name, type=f.type, unit=f.unit, description=f.description, required=f.required)
                for f in dataset.fields])


def _metric_dict(metric: Metric) -> dict[str, Any]:
    return {"name": metric.name, "field": metric.field, "aggregate": metric.aggregate, "unit": metric.unit}


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def json_response(payload: dict[str, Any]) -> Response:
    """The answer as JSON, without a second validation pass: series and joins are built
    to match their response model (tests check both against the OpenAPI schema), and a
    year of hourly buckets is too many rows to validate again on every request."""
    return Response(_encode(payload).encode("utf-8"), media_type="application/json")


def json_rows_response(head: dict[str, Any], rows: tuple[str, ...], cursor: str | None) -> Response:
    """``head`` plus ``rows`` (JSON objects the warehouse wrote) plus ``next_cursor``."""
    body = f"{_encode(head)[:-1]},\"rows\":[{','.join(rows)}],\"next_cursor\":{_encode(cursor)}}}"
    return Response(body.encode("utf-8"), media_type="application/json")


def series_head(result: SeriesResult) -> dict[str, Any]:
    return {"dataset": result.dataset.ref, "bucket": result.bucket, "timezone": result.timezone,
            "from": format_time(result.start), "to": format_time(result.end),
            "metrics": [_metric_dict(m) for m in result.metrics]}


def join_head(result: JoinResult) -> dict[str, Any]:
    return {"left": result.left.ref, "right": result.right.ref, "bucket": result.bucket,
            "timezone": result.timezone, "from": format_time(result.start), "to": format_time(result.end),
            "left_metrics": [_metric_dict(m) for m in result.left_metrics],
            "right_metrics": [_metric_dict(m) for m in result.right_metrics]}


def series_out(result: SeriesResult) -> dict[str, Any]:
    names = [m.name for m in result.metrics]
    return {**series_head(result),
            "rows": [{"bucket": format_time(r.bucket), "sensor_id": r.sensor_id, "events": r.events,
                      "values": dict(zip(names, r.values))} for r in result.rows],
            "next_cursor": result.next_cursor}


def join_out(result: JoinResult) -> dict[str, Any]:
    left, right = [m.name for m in result.left_metrics], [m.name for m in result.right_metrics]
    return {**join_head(result),
            "rows": [{"bucket": format_time(r.bucket), "left_events": r.left_events, "right_events": r.right_events,
                      "left": dict(zip(left, r.left_values)), "right": dict(zip(right, r.right_values))}
                     for r in result.rows],
            "next_cursor": result.next_cursor}


def observations_out(page: ObservationPage) -> dict[str, Any]:
    return {"dataset": page.dataset.ref, "from": format_time(page.start), "to": format_time(page.end),
            "fields": [FieldOut(name=f.name, type=f.type, unit=f.unit, description=f.description,
                                required=f.required) for f in page.fields],
            "rows": [export.observation_dict(page, row) for row in page.rows], "next_cursor": page.next_cursor}


def _file(chunks: Iterator[str], media_type: str, name: str) -> StreamingResponse:
    return StreamingResponse(chunks, media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def build_router(principal_dependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS)
    Caller = Annotated[Principal | None, Depends(principal_dependency)]

    def engine(request: Request) -> QueryEngine:
        return request.app.state.engine

    Engine = Annotated[QueryEngine, Depends(engine)]

    @router.get("/datasets", response_model=list[DatasetOut], tags=["datasets"],
                summary="Datasets the caller may read: its own, those shared with it, open data")
    def list_datasets(principal: Caller, engine: Engine) -> list[DatasetOut]:
        return [dataset_out(d, principal) for d in engine.datasets(principal)]

    @router.get("/datasets/{owner}/{tool}/{dataset}", response_model=DatasetOut, tags=["datasets"],
                summary="One dataset's metadata: fields, units, licence")
    def get_dataset(owner: Owner, tool: Tool, dataset: DatasetName, principal: Caller, engine: Engine) -> DatasetOut:
        return dataset_out(engine.dataset(principal, DatasetRef(owner, tool, dataset)), principal)

    @router.get("/datasets/{owner}/{tool}/{dataset}/series", response_model=SeriesOut, tags=["queries"],
                responses=CSV_RESPONSE, summary="Time series: aggregates per time bucket (and sensor)")
    def series(owner: Owner, tool: Tool, dataset: DatasetName, principal: Caller, engine: Engine,
               field: Annotated[list[str], Query(description="Field(s) to aggregate (repeat).")],
               aggregate: Annotated[list[Aggregate], Query(description="Aggregate(s) per field (repeat).")] = [
                   Aggregate.avg],
               bucket: Bucket = Bucket.hour, from_: From = None, to: To = None, sensor_id: SensorIds = [],
               bbox: BBox = None, by_sensor: bool = False, timezone: TimeZone = "UTC", limit: Limit = None,
               cursor: Cursor = None, format: Literal["json", "csv"] = "json"):
        result = engine.series(principal, SeriesQuery(
            dataset=DatasetRef(owner, tool, dataset), fields=tuple(field), aggregates=tuple(aggregate),
            bucket=bucket, by_sensor=by_sensor, timezone=timezone, limit=limit, cursor=cursor,
            filters=Filters(start=parse_time(from_, "from"), end=parse_time(to, "to"), sensor_ids=tuple(sensor_id),
                            bbox=parse_bbox(bbox))), json=format == "json")
        if format == "csv":
            return _file(export.series_csv(result), "text/csv; charset=utf-8", f"{dataset}-{bucket.value}.csv")
        if result.json_rows is not None:
            return json_rows_response(series_head(result), result.json_rows, result.next_cursor)
        return json_response(series_out(result))

    @router.get("/join", response_model=JoinOut, tags=["queries"], responses=CSV_RESPONSE,
                summary="Two datasets aggregated on common time buckets (e.g. pedestrians × weather)")
    def join(principal: Caller, engine: Engine,
             left: Annotated[str, Query(description="owner/tool/dataset", max_length=300)],
             right: Annotated[str, Query(description="owner/tool/dataset", max_length=300)],
             left_field: Annotated[list[str], Query()], right_field: Annotated[list[str], Query()],
             left_aggregate: Annotated[list[Aggregate], Query()] = [Aggregate.sum],
             right_aggregate: Annotated[list[Aggregate], Query()] = [Aggregate.avg],
             left_sensor_id: SensorIds = [], right_sensor_id: SensorIds = [],
             bucket: Bucket = Bucket.hour, from_: From = None, to: To = None, bbox: BBox = None,
             timezone: TimeZone = "UTC", limit: Limit = None, cursor: Cursor = None,
             format: Literal["json", "csv"] = "json"):
        result = engine.join(principal, JoinQuery(
            left=JoinSide(parse_ref(left, "left"), tuple(left_field), tuple(left_aggregate), tuple(left_sensor_id)),
            right=JoinSide(parse_ref(right, "right"), tuple(right_field), tuple(right_aggregate),
                           tuple(right_sensor_id)),
            bucket=bucket, start=parse_time(from_, "from"), end=parse_time(to, "to"), bbox=parse_bbox(bbox),
            timezone=timezone, limit=limit, cursor=cursor), json=format == "json")
        if format == "csv":
            return _file(export.join_csv(result), "text/csv; charset=utf-8", f"join-{bucket.value}.csv")
        if result.json_rows is not None:
            return json_rows_response(join_head(result), result.json_rows, result.next_cursor)
        return json_response(join_out(result))

    @router.get("/datasets/{owner}/{tool}/{dataset}/observations", response_model=ObservationsOut,
                tags=["queries"], summary="Single observations, oldest first, one page at a time")
    def observations(owner: Owner, tool: Tool, dataset: DatasetName, principal: Caller, engine: Engine,
                     from_: From = None, to: To = None, sensor_id: SensorIds = [], bbox: BBox = None,
                     field: Annotated[list[str], Query(description="Only these fields (default all).")] = [],
                     limit: Limit = None, cursor: Cursor = None):
        page = engine.observations(principal, ObservationsQuery(
            dataset=DatasetRef(owner, tool, dataset), fields=tuple(field), limit=limit, cursor=cursor,
            filters=Filters(start=parse_time(from_, "from"), end=parse_time(to, "to"), sensor_ids=tuple(sensor_id),
                            bbox=parse_bbox(bbox))))
        return observations_out(page)

    @router.get("/datasets/{owner}/{tool}/{dataset}/export", tags=["queries"],
                responses={200: {"content": {"text/csv": {}, "application/json": {}, "application/geo+json": {}},
                                 "description": "The observations as a file."}},
                summary="Download observations as CSV, JSON or GeoJSON (refused above the export row limit)")
    def export_observations(owner: Owner, tool: Tool, dataset: DatasetName, principal: Caller, engine: Engine,
                            format: ExportFormat = ExportFormat.csv, from_: From = None, to: To = None,
                            sensor_id: SensorIds = [], bbox: BBox = None,
                            field: Annotated[list[str], Query()] = []) -> StreamingResponse:
        page = engine.observations(principal, ObservationsQuery(
            dataset=DatasetRef(owner, tool, dataset), fields=tuple(field),
            filters=Filters(start=parse_time(from_, "from"), end=parse_time(to, "to"), sensor_ids=tuple(sensor_id),
                            bbox=parse_bbox(bbox))), export=True)
        if format is ExportFormat.csv:
            return _file(export.observations_csv(page), "text/csv; charset=utf-8", f"{dataset}.csv")
        if format is ExportFormat.geojson:
            return _file(export.observations_geojson(page), "application/geo+json", f"{dataset}.geojson")
        return _file(export.observations_json(page), "application/json", f"{dataset}.json")

    return router
