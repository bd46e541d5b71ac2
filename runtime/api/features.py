"""OGC API – Features (Part 1: Core, GeoJSON, OpenAPI 3.0) under ``/ogcapi``, on the Data Hub API's app.

One collection per dataset the caller may read that has sensors with a position; its features
are those sensors, each a GeoJSON ``Point`` at the sensor's latest known position with the
values of its latest reading as properties. Same engine, token check, tenant rules, quota and
warehouse limits as REST, GraphQL and SensorThings; which sensors a dataset has (and where) comes
from the SensorThings sensor index. See docs/features.md, also for why this is not pygeoapi.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from urbanstack.runtime.metering.api_meter import note_caller

from .auth import Principal
from .catalogue import DatasetInfo
from .query import (EARLIEST, LATEST, QueryEngine, QueryError, _aware, _checked_bbox, _quote, _table, _utc,
                    bad_request, format_time, request_deadline)
from .sensorthings import PREFLIGHT
from .sensorthings.graph import SensorIndex, SensorInfo, StaLimits, point

PREFIX = "/ogcapi"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
JSON, GEOJSON, OPENAPI = "application/json", "application/geo+json", "application/vnd.oai.openapi+json;version=3.0"
# Query parameters each kind of resource knows; any other one is refused (400), as Core requires.
ITEMS_PARAMETERS = frozenset({"bbox", "datetime", "limit", "offset", "f"})
OTHER_PARAMETERS = frozenset({"f"})
LOOK_BACK = timedelta(days=1)   # where a sensor's latest reading before a time is looked for first
_IN_INTERVAL = ("sensor_id IN {sensors:Array(String)} AND observed_at >= {start:DateTime64(3, 'UTC')} "
                "AND observed_at <= {end:DateTime64(3, 'UTC')}")
_COLLECTION_ID = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z][a-z0-9-]*)\.([a-z][a-z0-9_]*)$")


@dataclass(frozen=True)
class FeaturesLimits:
    default_limit: int = 10
    max_limit: int = 10_000
    max_offset: int = 1_000_000
    max_parameter_chars: int = 200        # a bbox or datetime longer than this is not one


def collection_id(dataset: DatasetInfo) -> str:
    # Slugs, tool names and dataset names never contain a dot, so the id splits back unambiguously.
    return f"{dataset.owner}.{dataset.tool}.{dataset.name}"


def not_found(what: str) -> QueryError:
    return QueryError(404, "not_found", f"{what} does not exist or is not visible to you (open data is readable "
                                        "without a token; your municipality's data with its token)")


# Parameters -----------------------------------------------------------------------------------

def parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise bad_request(f"bbox must be four numbers min_lon,min_lat,max_lon,max_lat (CRS84), got {text[:100]!r}") \
            from None
    if len(numbers) == 6:     # min lon, min lat, min height, max lon, max lat, max height: heights do not apply
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise bad_request(f"bbox must be four (or six) finite numbers min_lon,min_lat,max_lon,max_lat (CRS84), "
                          f"got {text[:100]!r}")
    min_lon, min_lat, max_lon, max_lat = numbers
    if min_lon > max_lon and -180 <= max_lon and min_lon <= 180:
        # A box across the antimeridian (west edge east of the east edge): each side checked on its own.
        _checked_bbox([min_lon, min_lat, 180, max_lat])
        _checked_bbox([-180, min_lat, max_lon, max_lat])
        return min_lon, min_lat, max_lon, max_lat
    return _checked_bbox(numbers)


def in_bbox(lon: float, lat: float, bbox: tuple[float, float, float, float]) -> bool:
    min_lon, min_lat, max_lon, max_lat = bbox
    across = min_lon > max_lon   # across the antimeridian
    return min_lat <= lat <= max_lat and (min_lon <= lon or lon <= max_lon if across else min_lon <= lon <= max_lon)


def _moment(text: str, end: bool) -> datetime:
    """An RFC 3339 date-time (with a time zone) or a date (UTC: its start, or for ``end`` its last instant)."""
    try:
        if "T" not in text.upper():
            day = date.fromisoformat(text)
            if end:
                return datetime(day.year, day.month, day.day, 23, 59, 59, 999_000, tzinfo=timezone.utc)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        value = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
    except ValueError:
        raise bad_request(f"datetime: {text[:60]!r} is not an RFC 3339 date-time such as 2026-03-02T08:00:00Z "
                          "or a date such as 2026-03-02") from None
    return _aware(value, "datetime")


def parse_datetime(text: str) -> tuple[datetime, datetime] | None:
    """(start, end), both inclusive; None for no restriction. An instant, or an interval ``start/end``
    whose ends may be open (``..`` or empty)."""
    if "/" not in text:
        if text.strip() in ("", ".."):
            raise bad_request("datetime: an instant must be a date-time, not open; write '../<end>' or '<start>/..' "
                              "for an open interval")
        start, end = _moment(text, False), _moment(text, True)
        if "T" in text.upper():
            end = start
        if end < EARLIEST or start > LATEST:
            return LATEST, EARLIEST   # the warehouse holds readings from 1970 to 2100 only: an empty interval
        return start, end
    first, _, last = text.partition("/")
    if "/" in last:
        raise bad_request(f"datetime: an interval has one '/', got {text[:100]!r}")
    open_start, open_end = first in ("", ".."), last in ("", "..")
    if open_start and open_end:
        return None
    start = None if open_start else _moment(first, False)
    end = None if open_end else _moment(last, True)
    if start is not None and end is not None and start > end:
        raise bad_request(f"datetime: the interval's start ({format_time(start)}) is after its end "
                          f"({format_time(end)})")
    # The warehouse holds readings from 1970 to 2100 only: outside, nothing can match.
    start, end = max(start or EARLIEST, EARLIEST), min(end or LATEST, LATEST)
    return (start, end) if start <= end else (LATEST, EARLIEST)


def parse_int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise bad_request(f"{name} must be a whole number from {low} to {high}, got {text[:40]!r}")
    return int(text)


def _accepts(header: str | None, offered: tuple[str, ...]) -> str | None:
    """The first of ``offered`` the Accept header allows (``*/*``, ``application/*`` included); the first
    offered when there is no header; None when it allows none of them."""
    if not header or not header.strip():
        return offered[0]
    ranges = []
    for item in header.split(","):
        kind, *parameters = [part.strip() for part in item.split(";")]
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranges.append((quality, kind.lower()))
    ranges.sort(key=lambda pair: -pair[0])
    for _, kind in ranges:
        for media in offered:
            base = media.split(";")[0]
            if kind in (base, "*/*", base.split("/")[0] + "/*"):
                return media
    return None


def negotiate(request: Request, params: dict[str, str], offered: tuple[str, ...], formats: dict[str, str]) -> str:
    """The media type to answer with: from ``f`` when given, else from the Accept header; 400 for an
    unknown ``f``, 406 for an Accept header that allows none of ``offered``."""
    if "f" in params:
        wanted = formats.get(params["f"].lower())
        if wanted is None:
            raise bad_request(f"f={params['f'][:40]} is not served here: this API answers "
                              f"{', '.join(sorted(formats))} only (no HTML); leave f out or use f=json")
        return wanted
    chosen = _accepts(request.headers.get("accept"), offered)
    if chosen is None:
        raise QueryError(406, "not_acceptable", f"no answer in a type the Accept header allows "
                                                f"({request.headers.get('accept', '')[:100]}); this resource is "
                                                f"served as {', '.join(offered)} (no HTML)")
    return chosen


def known_parameters(params: dict[str, str], allowed: frozenset[str], limits: FeaturesLimits) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter {unknown[0][:40]!r}; this resource takes "
                          f"{', '.join(sorted(allowed))}")
    for name, value in params.items():
        if len(value) > limits.max_parameter_chars:
            raise bad_request(f"{name} is longer than {limits.max_parameter_chars} characters")


# Answers --------------------------------------------------------------------------------------

def _value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None   # NaN and ±inf as null, as in the REST API
    if isinstance(value, datetime):
        return format_time(_utc(value))
    if isinstance(value, date):
        return value.isoformat()
    return value


class Features:
    """One request of one caller: what it may read is fixed when it is built."""

    def __init__(self, engine: QueryEngine, index: SensorIndex, limits: FeaturesLimits,
                 principal: Principal | None, base: str):
        self.engine, self.index, self.limits = engine, index, limits
        self.principal, self.base = principal, base.rstrip("/")

    # Collections --------------------------------------------------------------------------
    def positioned(self, dataset: DatasetInfo) -> list[SensorInfo]:
        """The dataset's sensors that have a position, by sensor id."""
        sensors = self.index.sensors(dataset)
        return [sensors[key] for key in sorted(sensors) if sensors[key].current is not None]

    def dataset(self, identifier: str) -> DatasetInfo:
        match = _COLLECTION_ID.match(identifier)
        dataset = None if match is None else self.engine.catalogue.get(*match.groups())
        readable = {d.ref for d in self.engine.datasets(self.principal)}
        if dataset is None or dataset.ref not in readable or not self.positioned(dataset):
            raise not_found(f"collection {identifier[:200]!r}")
        return dataset

    def collections(self) -> dict:
        found = []
        for dataset in sorted(self.engine.datasets(self.principal), key=lambda d: d.ref):
            sensors = self.positioned(dataset)
            if sensors:
                found.append(self.collection_body(dataset, sensors))
        url = f"{self.base}/collections"
        return {"links": [{"href": url, "rel": "self", "type": JSON, "title": "these collections"}],
                "collections": found}

    def collection(self, identifier: str) -> dict:
        dataset = self.dataset(identifier)
        return self.collection_body(dataset, self.positioned(dataset))

    def collection_body(self, dataset: DatasetInfo, sensors: list[SensorInfo]) -> dict:
        url = f"{self.base}/collections/{collection_id(dataset)}"
        lons = [s.current.lon for s in sensors]
        lats = [s.current.lat for s in sensors]
        body = {
            "id": collection_id(dataset),
            "title": dataset.display_name,
            "description": (f"{dataset.description} " if dataset.description else "") +
                           f"Sensors of {dataset.ref} at their latest position, with their latest reading.",
            "links": [{"href": url, "rel": "self", "type": JSON, "title": "this collection"},
                      {"href": f"{url}/items", "rel": "items", "type": GEOJSON, "title": "the sensors as features"},
                      {"href": f"{str(self.base).rsplit(PREFIX, 1)[0]}/api/v1/datasets/{dataset.ref}",
                       "rel": "describedby", "type": JSON, "title": "the dataset in the REST API"}],
            "extent": {"spatial": {"bbox": [[min(lons), min(lats), max(lons), max(lats)]], "crs": CRS84},
                       "temporal": {"interval": [[format_time(min(s.first for s in sensors)),
                                                  format_time(max(s.last for s in sensors))]],
                                    "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}},
            "itemType": "feature",
            "crs": [CRS84],
            "fields": [{"name": f.name, "type": f.type, "unit": f.unit, "description": f.description}
                       for f in dataset.fields],
        }
        if dataset.public and dataset.licence:
            body["license"] = dataset.licence
        return body

    # Items ------------------------------------------------------------------------------------
    def items(self, identifier: str, params: dict[str, str]) -> dict:
        dataset = self.dataset(identifier)
        limit = parse_int(params, "limit", self.limits.default_limit, 1, self.limits.max_limit)
        offset = parse_int(params, "offset", 0, 0, self.limits.max_offset)
        bbox = parse_bbox(params["bbox"]) if "bbox" in params else None
        interval = parse_datetime(params["datetime"]) if "datetime" in params else None
        sensors = self.positioned(dataset)
        if bbox is not None:
            sensors = [s for s in sensors if in_bbox(s.current.lon, s.current.lat, bbox)]
        if interval is None or interval[0] == EARLIEST:
            # Every sensor with a position has a latest reading, and one up to any end after its first:
            # the page is cut from the index, the warehouse reads only the page's readings.
            until = None if interval is None else interval[1]
            if until is not None:
                sensors = [s for s in sensors if s.first <= until]
            matched = len(sensors)
            page = sensors[offset:offset + limit]
            rows = self.latest(dataset, page, until) if page else {}
            chosen = [(s, rows.get(s.sensor_id)) for s in page]
        else:
            start, end = interval
            # Only sensors that had begun reading by the interval's end can have a reading in it; the warehouse
            # says which do. (Not narrowed by the index's last reading: it may be up to a refresh old.)
            candidates = [s for s in sensors if s.first <= end]
            rows, matched = self.latest_in(dataset, candidates, start, end, limit, offset) if candidates else ({}, 0)
            by_id = {s.sensor_id: s for s in candidates}
            chosen = [(by_id[key], row) for key, row in rows.items()]
        features = [self.feature(dataset, sensor, row) for sensor, row in chosen]
        url = f"{self.base}/collections/{collection_id(dataset)}/items"
        kept = {k: v for k, v in params.items() if k in ("bbox", "datetime")}

        def link(rel: str, at: int) -> dict:
            query = urlencode({**kept, "limit": limit, **({"offset": at} if at else {})})
            return {"href": f"{url}?{query}", "rel": rel, "type": GEOJSON}

        links = [{**link("self", offset), "title": "this page"},
                 {"href": f"{self.base}/collections/{collection_id(dataset)}", "rel": "collection", "type": JSON}]
        if offset + len(features) < matched and len(features) == limit:
            links.append({**link("next", offset + limit), "title": "the next page"})
        if offset > 0:
            links.append({**link("prev", max(0, offset - limit)), "title": "the previous page"})
        return {"type": "FeatureCollection", "features": features, "links": links,
                "timeStamp": format_time(datetime.now(timezone.utc).replace(microsecond=0)),
                "numberMatched": matched, "numberReturned": len(features)}

    def item(self, identifier: str, feature_id: str) -> dict:
        dataset = self.dataset(identifier)
        sensor = self.index.sensors(dataset).get(feature_id)
        if sensor is None or sensor.current is None:
            raise not_found(f"feature {feature_id[:200]!r} of collection {identifier!r}")
        feature = self.feature(dataset, sensor, self.latest(dataset, [sensor]).get(sensor.sensor_id))
        feature["links"].append({"href": f"{self.base}/collections/{collection_id(dataset)}", "rel": "collection",
                                 "type": JSON, "title": "the collection"})
        return feature

    def feature(self, dataset: DatasetInfo, sensor: SensorInfo, row: tuple | None) -> dict:
        properties: dict[str, Any] = {"sensorId": sensor.sensor_id,
                                      "observedAt": None if row is None else format_time(_utc(row[0]))}
        for index, field in enumerate(dataset.fields):
            properties[field.name] = None if row is None else _value(row[index + 1])
        url = f"{self.base}/collections/{collection_id(dataset)}/items/{quote(sensor.sensor_id, safe='')}"
        return {"type": "Feature", "id": sensor.sensor_id, "geometry": point(sensor.current.lon, sensor.current.lat),
                "properties": properties, "links": [{"href": url, "rel": "self", "type": GEOJSON}]}

    # Warehouse ------------------------------------------------------------------------------
    def _latest_sql(self, dataset: DatasetInfo, where: str, tail: str, extra: str = "") -> str:
        columns = "".join(f", {_quote(f.name)}" for f in dataset.fields)
        # The latest event of each sensor (ties at the same instant broken by event id), deduplicated.
        return (f"SELECT sensor_id, argMax(tuple(observed_at{columns}), tuple(observed_at, event_id)){extra} "
                f"FROM {_table(dataset)} FINAL WHERE {where} GROUP BY sensor_id ORDER BY sensor_id {tail}")

    def latest(self, dataset: DatasetInfo, sensors: list[SensorInfo], until: datetime | None = None
               ) -> dict[str, tuple]:
        """Each sensor's latest reading (at or before ``until``), reading as little of the table as it can."""
        found: dict[str, tuple] = {}
        # Read at its last time in the index or later (the index may be a refresh old): the latest is there.
        settled = [s for s in sensors if until is None or s.last <= until]
        if settled:
            found.update(self._between(dataset, settled, min(s.last for s in settled), until))
        # Read after ``until`` too: first the day before it, then in full for those that had none there.
        later = [s for s in sensors if until is not None and s.last > until]
        if later:
            window = max(until - LOOK_BACK, EARLIEST)
            found.update(self._between(dataset, later, window, until))
            missing = [s for s in later if s.sensor_id not in found and s.first < window]
            if missing:
                found.update(self._between(dataset, missing, None, until))
        return found

    def _between(self, dataset: DatasetInfo, sensors: list[SensorInfo], since: datetime | None,
                 until: datetime | None) -> dict[str, tuple]:
        params: dict[str, Any] = {"sensors": [s.sensor_id for s in sensors]}
        where = ["sensor_id IN {sensors:Array(String)}"]
        if since is not None:
            params["since"] = since
            where.append("observed_at >= {since:DateTime64(3, 'UTC')}")
        if until is not None:
            params["until"] = until
            where.append("observed_at <= {until:DateTime64(3, 'UTC')}")
        sql = self._latest_sql(dataset, " AND ".join(where), "")
        return {row[0]: row[1] for row in self.engine._run("ogc_features", sql, params)}

    def latest_in(self, dataset: DatasetInfo, sensors: list[SensorInfo], start: datetime, end: datetime,
                  limit: int, offset: int) -> tuple[dict[str, tuple], int]:
        """The latest reading within [start, end] of those sensors that have one there (a page of them,
        by sensor id), and how many have one."""
        params = {"sensors": [s.sensor_id for s in sensors], "start": start, "end": end,
                  "limit": limit, "offset": offset}
        sql = self._latest_sql(dataset, _IN_INTERVAL, "LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
                               extra=", count() OVER ()")
        rows = self.engine._run("ogc_features", sql, params)
        if not rows and offset:
            # Past the end: how many there are all the same (for numberMatched).
            counted = self.engine._run("ogc_features",
                                       f"SELECT count() FROM ({self._latest_sql(dataset, _IN_INTERVAL, '')})", params)
            return {}, int(counted[0][0]) if counted else 0
        return {row[0]: row[1] for row in rows}, int(rows[0][2]) if rows else 0



# Static resources -------------------------------------------------------------------------------

def landing(base: str) -> dict:
    return {
        "title": "Urban Stack – OGC API Features",
        "description": "Sensors of the municipalities' datasets as features: each at its latest position, "
                       "with its latest reading. Open data without a token; a Keycloak access token "
                       "(Authorization: Bearer …) reads the caller's own and shared datasets too.",
        "links": [
            {"href": base, "rel": "self", "type": JSON, "title": "this document"},
            {"href": f"{base}/api", "rel": "service-desc", "type": OPENAPI, "title": "the API definition"},
            {"href": f"{base}/conformance", "rel": "conformance", "type": JSON,
             "title": "the conformance classes this API implements"},
            {"href": f"{base}/collections", "rel": "data", "type": JSON, "title": "the collections"},
        ],
    }


def _parameter(name: str, where: str, schema: dict, description: str, **extra) -> dict:
    return {"name": name, "in": where, "required": where == "path", "schema": schema,
            "description": description, **extra}


def _ok(description: str, media: str, schema: dict) -> dict:
    return {"200": {"description": description, "content": {media: {"schema": schema}}},
            **{status: {"$ref": f"#/components/responses/{name}"}
               for status, name in (("400", "BadRequest"), ("401", "Unauthorized"), ("404", "NotFound"),
                                    ("406", "NotAcceptable"), ("429", "TooManyRequests"), ("500", "ServerError"))}}


def openapi(base: str, limits: FeaturesLimits) -> dict:
    """The OpenAPI 3.0 definition of these routes (FastAPI's own /openapi.json is 3.1 and covers REST)."""
    f = _parameter("f", "query", {"type": "string", "enum": ["json"]},
                   "The format of the answer; only JSON is served (the Accept header works too).",
                   style="form", explode=False)
    collection = _parameter("collectionId", "path", {"type": "string"},
                            "owner.tool.dataset, e.g. guetersloh.passantenfrequenz-wetter.pedestrian_counts")
    feature = _parameter("featureId", "path", {"type": "string"}, "The sensor id.")
    items = [
        _parameter("bbox", "query", {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                   "Only sensors whose latest position lies in min_lon,min_lat,max_lon,max_lat (CRS84).",
                   style="form", explode=False),
        _parameter("datetime", "query", {"type": "string"},
                   "An RFC 3339 instant, or an interval start/end with '..' for an open end: each sensor's latest "
                   "reading within it; sensors without a reading there are left out.", style="form", explode=False),
        _parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": limits.max_limit,
                                      "default": limits.default_limit}, "Features per page.",
                   style="form", explode=False),
        _parameter("offset", "query", {"type": "integer", "minimum": 0, "maximum": limits.max_offset, "default": 0},
                   "Features to skip (the next and prev links carry it).", style="form", explode=False),
        f,
    ]
    link = {"type": "object", "required": ["href", "rel"],
            "properties": {k: {"type": "string"} for k in ("href", "rel", "type", "title")}}
    links = {"type": "array", "items": {"$ref": "#/components/schemas/link"}}
    def response(description: str) -> dict:
        return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/error"}}}}

    geometry = {"type": "object", "required": ["type", "coordinates"],
                "properties": {"type": {"type": "string", "enum": ["Point"]},
                               "coordinates": {"type": "array", "minItems": 2, "items": {"type": "number"}}}}
    feature_schema = {"type": "object", "required": ["type", "geometry", "properties"],
                      "properties": {"type": {"type": "string", "enum": ["Feature"]},
                                     "id": {"type": "string"}, "geometry": geometry,
                                     "properties": {"type": "object", "nullable": True}, "links": links}}
    security = [{}, {"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Urban Stack – OGC API Features", "version": "1.0.0",
                 "description": landing(base)["description"],
                 "license": {"name": "Apache-2.0"}},
        "servers": [{"url": base}],
        "security": security,
        "paths": {
            "/": {"get": {"operationId": "landingPage", "summary": "Landing page", "tags": ["Capabilities"],
                          "parameters": [f], "responses": _ok("The landing page", JSON,
                                                              {"$ref": "#/components/schemas/landingPage"})}},
            "/conformance": {"get": {"operationId": "conformance", "summary": "Conformance classes",
                                     "tags": ["Capabilities"], "parameters": [f],
                                     "responses": _ok("The conformance classes", JSON,
                                                      {"$ref": "#/components/schemas/confClasses"})}},
            "/api": {"get": {"operationId": "apiDefinition", "summary": "This API definition",
                             "tags": ["Capabilities"], "parameters": [f],
                             "responses": _ok("This document", OPENAPI, {"type": "object"})}},
            "/collections": {"get": {"operationId": "collections", "summary": "The collections you may read",
                                     "tags": ["Capabilities"], "parameters": [f],
                                     "responses": _ok("The collections", JSON,
                                                      {"$ref": "#/components/schemas/collections"})}},
            "/collections/{collectionId}": {"get": {
                "operationId": "collection", "summary": "One collection", "tags": ["Capabilities"],
                "parameters": [collection, f],
                "responses": _ok("The collection", JSON, {"$ref": "#/components/schemas/collection"})}},
            "/collections/{collectionId}/items": {"get": {
                "operationId": "items", "summary": "The sensors of a collection as features", "tags": ["Data"],
                "parameters": [collection, *items],
                "responses": _ok("A page of features", GEOJSON,
                                 {"$ref": "#/components/schemas/featureCollectionGeoJSON"})}},
            "/collections/{collectionId}/items/{featureId}": {"get": {
                "operationId": "item", "summary": "One sensor as a feature", "tags": ["Data"],
                "parameters": [collection, feature, f],
                "responses": _ok("The feature", GEOJSON, {"$ref": "#/components/schemas/featureGeoJSON"})}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                           "description": "Keycloak access token; optional for open data."}},
            "schemas": {
                "link": link,
                "error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "landingPage": {"type": "object", "required": ["links"],
                                "properties": {"title": {"type": "string"}, "description": {"type": "string"},
                                               "links": links}},
                "confClasses": {"type": "object", "required": ["conformsTo"],
                                "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}}},
                "collection": {"type": "object", "required": ["id", "links"],
                               "properties": {"id": {"type": "string"}, "title": {"type": "string"},
                                              "description": {"type": "string"}, "links": links,
                                              "extent": {"type": "object"}, "itemType": {"type": "string"},
                                              "crs": {"type": "array", "items": {"type": "string"}}}},
                "collections": {"type": "object", "required": ["links", "collections"],
                                "properties": {"links": links, "collections": {
                                    "type": "array", "items": {"$ref": "#/components/schemas/collection"}}}},
                "featureGeoJSON": feature_schema,
                "featureCollectionGeoJSON": {
                    "type": "object", "required": ["type", "features"],
                    "properties": {"type": {"type": "string", "enum": ["FeatureCollection"]},
                                   "features": {"type": "array",
                                                "items": {"$ref": "#/components/schemas/featureGeoJSON"}},
                                   "links": links, "timeStamp": {"type": "string", "format": "date-time"},
                                   "numberMatched": {"type": "integer", "minimum": 0},
                                   "numberReturned": {"type": "integer", "minimum": 0}}},
            },
            "responses": {
                "BadRequest": response("A query parameter is unknown or its value is not valid; "
                                       "the message says which."),
                "Unauthorized": response("The token sent is not valid."),
                "NotFound": response("No such resource, or not visible to the caller."),
                "NotAcceptable": response("The Accept header allows none of the types this resource is served as."),
                "TooManyRequests": response("The caller's query quota is used up; see Retry-After."),
                "ServerError": response("A server error."),
            },
        },
    }


# Routes -----------------------------------------------------------------------------------------

def add_features(app: FastAPI, principal: Callable, charge: Callable, limits: FeaturesLimits | None = None) -> None:
    """Adds the OGC API – Features routes under ``/ogcapi`` to the API ``app``. ``principal(request)`` is
    the API's token check (None without a token, 401 for a bad one); ``charge(request, caller)`` counts
    one query against the caller's quota (429 beyond it), for each request that reads datasets."""
    limits = limits or FeaturesLimits()
    index = getattr(app.state, "sensorthings_index", None) or SensorIndex(app.state.engine, StaLimits())
    router = APIRouter()

    def answer(request: Request, allowed: frozenset[str], offered: tuple[str, ...], formats: dict[str, str],
               produce: Callable[[Features, dict[str, str]], dict], data: bool) -> tuple[bytes, str]:
        # In a worker thread: the token check may fetch the realm's keys, the engine waits for the warehouse.
        caller = principal(request)
        params: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name in params:
                raise bad_request(f"{name[:40]} is given more than once")
            params[name] = value
        known_parameters(params, allowed, limits)
        media = negotiate(request, params, offered, formats)
        if data:
            charge(request, caller)
            note_caller(request, caller)   # landing, conformance and /api are neither charged nor metered
        base = f"{str(request.base_url).rstrip('/')}{PREFIX}"
        token = request_deadline.set(time.monotonic() + app.state.engine.limits.query_timeout_seconds)
        try:
            body = produce(Features(app.state.engine, index, limits, caller, base), params)
        finally:
            request_deadline.reset(token)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), media

    async def handle(request: Request, produce, *, allowed=OTHER_PARAMETERS, offered=(JSON,),
                     formats=None, data: bool = False) -> Response:
        body, media = await run_in_threadpool(answer, request, allowed, offered, formats or {"json": offered[0]},
                                              produce, data)
        return Response(body, media_type=media)

    @router.options(PREFIX, include_in_schema=False)
    @router.options(PREFIX + "/{path:path}", include_in_schema=False)
    async def preflight(path: str = "") -> Response:
        return Response(status_code=204, headers=PREFLIGHT)

    @router.get(PREFIX, include_in_schema=False)
    @router.get(PREFIX + "/", include_in_schema=False)
    async def landing_page(request: Request) -> Response:
        return await handle(request, lambda features, params: landing(features.base))

    @router.get(PREFIX + "/conformance", include_in_schema=False)
    async def conformance(request: Request) -> Response:
        return await handle(request, lambda features, params: {"conformsTo": CONFORMANCE})

    @router.get(PREFIX + "/api", include_in_schema=False)
    async def definition(request: Request) -> Response:
        return await handle(request, lambda features, params: openapi(features.base, limits),
                            offered=(OPENAPI, JSON), formats={"json": OPENAPI})

    @router.get(PREFIX + "/collections", include_in_schema=False)
    async def collections(request: Request) -> Response:
        return await handle(request, lambda features, params: features.collections(), data=True)

    @router.get(PREFIX + "/collections/{identifier}", include_in_schema=False)
    async def collection(request: Request, identifier: str) -> Response:
        return await handle(request, lambda features, params: features.collection(identifier), data=True)

    @router.get(PREFIX + "/collections/{identifier}/items", include_in_schema=False)
    async def items(request: Request, identifier: str) -> Response:
        return await handle(request, lambda features, params: features.items(identifier, params),
                            allowed=ITEMS_PARAMETERS, offered=(GEOJSON, JSON),
                            formats={"json": GEOJSON, "geojson": GEOJSON}, data=True)

    @router.get(PREFIX + "/collections/{identifier}/items/{feature_id}", include_in_schema=False)
    async def item(request: Request, identifier: str, feature_id: str) -> Response:
        return await handle(request, lambda features, params: features.item(identifier, feature_id),
                            offered=(GEOJSON, JSON), formats={"json": GEOJSON, "geojson": GEOJSON}, data=True)

    app.include_router(router)
    app.add_middleware(AnyOrigin)


class AnyOrigin:
    """``Access-Control-Allow-Origin: *`` on every answer under /ogcapi (errors too): web maps on a city's
    own domain read open data from the browser. No cookie or other ambient credential is accepted here,
    so a foreign page can only send a token its visitor gave it (as for SensorThings)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)

        async def with_header(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"access-control-allow-origin"]
                message = {**message, "headers": headers + [(b"access-control-allow-origin", b"*")]}
            await send(message)

        await self.app(scope, receive, with_header)
