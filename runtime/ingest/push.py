"""Push ingest: HTTP endpoints that sources and people send data to.

``POST /ingest/v1/{tool}/{dataset}/{connector}``, where ``connector`` is one of
``ttn-uplink``, ``chirpstack-uplink``, ``sensorthings``, ``observations`` and
``upload`` (CSV/XLSX, with ``upload/preview`` to check a file before importing it).

Who is calling decides the municipality — never the URL or the body:

- ``Authorization: Bearer <Keycloak access token>``, verified by the API's own
  :class:`~urbanstack.runtime.api.auth.TokenVerifier`; the token needs the
  ``write:own`` permission (``gov-editor``, ``gov-admin``, or a service account of
  the tenant with one of those roles);
- ``X-Ingest-Key: <slug>.<secret>``, the tenant's webhook key, for webhooks that can
  only send static headers (The Things Stack, ChirpStack). It is compared in
  constant time with the key in the tenant's ``urbanstack-ingest`` Secret.

Then: the tool must be enabled for the municipality and have the dataset, the
municipality must not be suspended, and the day's ``eventsPerDay`` must not be
exceeded (429 with ``Retry-After``); every record counts, rejected ones too, since
they cost the platform as much. Events go to ``<slug>.<tool>.<dataset>``,
records that are not valid to the tenant's DLQ with the reason, with the tenant's
own Kafka user. The answer is 202 only after Kafka acknowledged every message; if
Kafka does not, the answer is 503 with ``Retry-After`` and the quota is given back:
send the same request again (the sink drops duplicates by ``event_id``).

**Bounded work per request.** A body is read up to its size limit and no further;
a push request (everything but ``upload``) carries at most :data:`MAX_RECORDS`
records, refused with 413 before anything is published; our own event format is
parsed record by record, so a body with too many stops being read at the first one
over. At most ``DLQ_RECORDS_PER_CALL`` rejections go to the DLQ one by one, the rest
in one summary message (:mod:`urbanstack.runtime.producer`). A request waits for
Kafka at most about 20 s (``runtime/ingest/tenants.py``), and requests of one
municipality do not wait for each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import tempfile
from datetime import date
from typing import Any, Callable, Iterator

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from urbanstack.operator import naming
from urbanstack.runtime.api.auth import AuthError, Permission, TokenVerifier
from urbanstack.runtime.api.catalogue import Catalogue
from urbanstack.runtime.connectors import ParseResult, Rejection, lorawan, sensorthings, tabular
from urbanstack.runtime.connectors.textformats import decode_text
from urbanstack.runtime.events import BATCH_SCHEMA_VERSION, EventError, Observation, ObservationBatch
from urbanstack.runtime.ingest.tenants import (CredentialSource, CredentialsUnavailable, DailyQuota, QuotaExceeded,
                                               TenantPublishers, key_matches, tenant_of_key)
from urbanstack.runtime.producer import DLQ_RECORDS_PER_CALL, DeliveryError, PublishReport

log = logging.getLogger(__name__)

KEY_HEADER = "X-Ingest-Key"
MAX_JSON_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# Records per push request: events and rejected ones alike (a rejected record costs
# parsing, a DLQ entry and quota as much as an accepted one). 100,000 is a tenth of
# the small plan's eventsPerDay and about what a 10 MiB body of short single events
# holds (80,000 in bench/push_request_bounds.py); columnar batches reach it at ~4.4 MiB.
MAX_RECORDS = 100_000
KAFKA_RETRY_AFTER = 30
SHOWN_REJECTIONS = 50
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

DESCRIPTION = f"""\
Push data into the Urban Data Hub. Authenticate with a Keycloak access token
(`Authorization: Bearer …`, role gov-editor or gov-admin) or with the municipality's
webhook key (`X-Ingest-Key: …`). The municipality is taken from that credential.
A 202 answer means Kafka has every accepted record; invalid records are in the
municipality's dead-letter topic with the reason, and counted in `rejected`.
A request carries at most {MAX_RECORDS:,} records (413 otherwise; uploads excepted), and
every record counts against the plan's `eventsPerDay`, rejected ones too.
Errors are JSON: `{{"error": {{"code": ..., "message": ...}}}}`.
"""


@dataclasses.dataclass(frozen=True)
class Caller:
    tenant: str
    via: str              # "token" or "webhook-key"
    subject: str


class RejectionInfo(BaseModel):
    where: str
    reason: str


class IngestReport(BaseModel):
    tenant: str
    tool: str
    dataset: str
    accepted: int = Field(description="Events Kafka acknowledged on the dataset's topic.")
    rejected: int = Field(description="Records sent to the dead-letter topic, with the reason.")
    topic: str
    dlq: str
    rejections: list[RejectionInfo] = Field(default_factory=list,
                                            description=f"The first {SHOWN_REJECTIONS} rejections.")
    warnings: list[str] = Field(default_factory=list)
    ignored: str | None = Field(None, description="Why the request was acknowledged without data, if it was.")


class ColumnInfo(BaseModel):
    index: int
    name: str
    field: str
    type: str
    unit: str
    group: str | None = None
    missing: int = 0
    decimal: str | None = Field(None, description="Decimal mark of numbers written as text in this column")
    decimal_source: str | None = Field(None, description="Why: values, other columns, file convention or option")


class PreviewReport(BaseModel):
    tenant: str
    tool: str
    dataset: str
    dataset_fields: list[str] = Field(description="Fields the dataset stores; map columns onto these.")
    sheet: str | None
    sheets: list[str]
    encoding: str | None
    delimiter: str | None
    header_row: int
    header_rows: list[int]
    data_start_row: int
    columns: list[ColumnInfo]
    rows: list[dict[str, Any]]
    warnings: list[str]
    rows_read: int = Field(description="Rows of the file the preview read; the import reads every row.")
    complete: bool = Field(description="Whether those were all rows of the file.")


class IngestError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IngestError(413, "too_large", f"the body has {int(declared)} bytes; at most {limit} are accepted "
                                            "per request, split it")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, "too_large", f"the body is larger than {limit} bytes; split it")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise IngestError(400, "empty_body", "the request body is empty; send the records in it")
    return body


# Parsers for our own event format ---------------------------------------------

def too_many_records(limit: int) -> IngestError:
    return IngestError(413, "too_many_records", f"the body holds more than {limit} records; at most {limit} are "
                                                "accepted per request (rejected ones count too): split it into "
                                                "several requests")


def parse_events(data: bytes, tenant: str, dataset: str, *, max_records: int = MAX_RECORDS) -> ParseResult:
    """Our event JSON: one object, an array of objects, or NDJSON (one object per line).

    ``tenant`` and ``dataset`` may be left out; when given they must match the caller
    and the URL, or the record is rejected (a record never chooses its own tenant).
    Records are decoded one at a time; more than ``max_records`` raise 413 at the first
    one over. Only the rejections the DLQ receives one by one keep their record.
    """
    result = ParseResult()
    text, _ = decode_text(data)
    for where, record in _json_records(text, result, max_records):
        try:
            if not isinstance(record, dict):
                raise EventError(f"expected a JSON object, got {type(record).__name__}")
            claimed = record.get("tenant", tenant)
            if claimed != tenant:
                raise EventError(f"tenant: the record names {claimed!r} but the credential belongs to {tenant!r}; "
                                 "leave 'tenant' out, it is taken from the credential")
            named = record.get("dataset", dataset)
            if named != dataset:
                raise EventError(f"dataset: the record names {named!r} but was sent to dataset {dataset!r}")
            result.events.append(Observation.from_dict({**record, "tenant": tenant, "dataset": dataset}))
        except (EventError, ValueError, TypeError) as exc:
            result.reject(where, str(exc), _kept(result, record))
    return result


def _kept(result: ParseResult, record: Any) -> Any:
    """The record for a new rejection of ``result``, if the DLQ will receive it one by one."""
    return record if len(result.rejected) < DLQ_RECORDS_PER_CALL else None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _json_records(text: str, result: ParseResult, limit: int) -> Iterator[tuple[str, Any]]:
    """(locator, decoded value) of each record of a JSON document, array or NDJSON text.

    An array that is not valid JSON is one rejection (its items cannot be told apart);
    NDJSON is read line by line and a broken line is a rejection of its own."""
    start = _JSON_SPACE.match(text).end()
    if text.startswith("[", start):
        yield from _array_items(text, start, result, limit)
        return
    try:
        record, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        pass   # not one document: NDJSON, or broken (then the lines say where)
    else:
        if _JSON_SPACE.match(text, end).end() == len(text):
            yield "document", record
            return
    count, number, position = 0, 0, 0
    while position < len(text):
        newline = text.find("\n", position)
        end = len(text) if newline < 0 else newline
        line, position, number = text[position:end].rstrip("\r"), end + 1, number + 1
        if not line.strip():
            continue
        count += 1
        if count > limit:
            raise too_many_records(limit)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            result.reject(f"line {number}", f"not valid JSON: {exc.msg} (column {exc.colno})", _kept(result, line))
            continue
        except RecursionError:
            result.reject(f"line {number}", "not valid JSON: nested too deeply", None)
            continue
        yield f"line {number}", record


def _array_items(text: str, start: int, result: ParseResult, limit: int) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    try:
        position = _JSON_SPACE.match(text, start + 1).end()
        if text.startswith("]", position):
            position += 1
        else:
            while True:
                if len(items) == limit:
                    raise too_many_records(limit)
                record, position = _DECODER.raw_decode(text, position)
                items.append((f"[{len(items)}]", record))
                position = _JSON_SPACE.match(text, position).end()
                if text.startswith(",", position):
                    position = _JSON_SPACE.match(text, position + 1).end()
                elif text.startswith("]", position):
                    position += 1
                    break
                else:
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
        if _JSON_SPACE.match(text, position).end() != len(text):
            raise json.JSONDecodeError("Extra data", text, position)
    except json.JSONDecodeError as exc:
        result.reject("document", f"not valid JSON: {exc}", text[:2000])
        return []
    except RecursionError:
        result.reject("document", "not valid JSON: nested too deeply", text[:2000])
        return []
    return items


def _split_assignment(text: str) -> tuple[str, str | None]:
    """``Column=field`` → (column, field); a column name may itself contain '='."""
    column, equals, target = text.rpartition("=")
    if equals and column and _FIELD_NAME.match(target.strip()):
        return column.strip(), target.strip()
    return text.strip(), None


def table_mapping(dataset: str, fields: list[str], sensor_column: str | None, sensor_id: str | None,
                  timestamp_column: str | None, reference_date: date | None, timezone: str,
                  units: list[str], sensor_map: list[str] = ()) -> tabular.TableMapping:
    if not fields:
        raise IngestError(422, "invalid_parameter", "field: name at least one column to import (repeat "
                                                    "'field=Column' or 'field=Column=field_name'); the preview "
                                                    "lists the columns")
    pairs = [_split_assignment(item) for item in fields]
    mapping: dict[str, str] | list[str]
    if any(target for _, target in pairs):
        mapping = {column: target or column for column, target in pairs}
    else:
        mapping = [column for column, _ in pairs]
    unit_map = {}
    for item in units:
        name, equals, unit = item.partition("=")
        if not equals or not name.strip():
            raise IngestError(422, "invalid_parameter", f"unit: expected 'field=unit', got {item!r}")
        unit_map[name.strip()] = unit.strip()
    sensor_names = {}
    for item in sensor_map:
        name, equals, sensor = item.partition("=")
        if not equals or not name.strip() or not sensor.strip():
            raise IngestError(422, "invalid_parameter", f"sensor_map: expected 'name in the file=sensor id', "
                                                        f"got {item!r}")
        sensor_names[name.strip()] = sensor.strip()
    return tabular.TableMapping(dataset=dataset, fields=mapping, sensor_column=sensor_column, sensor_id=sensor_id,
                                timestamp_column=timestamp_column, reference_date=reference_date,
                                timezone=timezone, units=unit_map, sensor_names=sensor_names)


class Uploads:
    """CSV/XLSX preview and import for a caller whose municipality is already established:
    the push endpoints and the Gov Hub's upload page run the same code, limits and checks
    (tool enabled, dataset of the tenant, not suspended, daily quota, Kafka acknowledged).
    ``upload`` is a readable binary file; the caller closes it. Both methods block (run them
    in a worker thread) and raise :class:`IngestError` with a code and a message for people."""

    max_bytes = MAX_UPLOAD_BYTES

    def __init__(self, target: Callable, deliver: Callable, publishers: TenantPublishers, records: Counter):
        self._target, self._deliver, self._records = target, deliver, records
        self._publishers = publishers

    def dataset_fields(self, caller: Caller, tool: str, dataset: str) -> list[str]:
        _, info = self._target(caller, tool, dataset)
        return [f.name for f in info.fields]

    def preview(self, caller: Caller, tool: str, dataset: str, upload, *, filename: str | None = None,
                sheet: str | None = None, rows: int = 20,
                options: tabular.TableOptions | None = None) -> PreviewReport:
        _, info = self._target(caller, tool, dataset)
        with _table_errors():
            shown = tabular.preview(upload, rows, filename=filename, sheet=sheet, options=options)
        return PreviewReport(
            tenant=caller.tenant, tool=tool, dataset=dataset, dataset_fields=[f.name for f in info.fields],
            sheet=shown.sheet, sheets=shown.sheets, encoding=shown.encoding, delimiter=shown.delimiter,
            header_row=shown.header_row, header_rows=shown.header_rows, data_start_row=shown.data_start_row,
            columns=[ColumnInfo(index=c.index, name=c.name, field=c.field, type=c.type, unit=c.unit,
                                group=c.group, missing=c.missing, decimal=c.decimal,
                                decimal_source=c.decimal_source) for c in shown.columns],
            rows=shown.rows, warnings=shown.warnings, rows_read=shown.rows_read, complete=shown.complete)

    def import_file(self, caller: Caller, tool: str, dataset: str, upload, mapping: tabular.TableMapping, *,
                    filename: str | None = None, sheet: str | None = None,
                    options: tabular.TableOptions | None = None) -> IngestReport:
        """Reads and publishes the file in chunks; if a later chunk fails (Kafka, quota, a broken
        file structure), the error says how much was published before."""
        municipality, _ = self._target(caller, tool, dataset)
        accepted = rejected = 0
        shown: list[RejectionInfo] = []
        warnings: list[str] = []
        try:
            with _table_errors():
                for chunk in _chunks(upload, caller.tenant, mapping, filename, sheet, options):
                    report = self._deliver(caller, municipality, tool, dataset, len(chunk.events),
                                           lambda: self._publish(caller, tool, chunk))
                    accepted, rejected = accepted + report.events, rejected + report.rejections
                    self._records.labels("upload", "accepted").inc(report.events)
                    self._records.labels("upload", "rejected").inc(report.rejections)
                    shown += [RejectionInfo(where=r.where, reason=r.reason)
                              for r in chunk.rejected[:SHOWN_REJECTIONS - len(shown)]]
                    warnings += chunk.warnings
        except IngestError as error:
            if accepted or rejected:
                error.message += (f". Before this, {accepted} events and {rejected} rejected rows of the "
                                  f"file were published; send the whole file again once this is fixed: "
                                  f"the rows already stored are not doubled")
            raise
        return IngestReport(tenant=caller.tenant, tool=tool, dataset=dataset, accepted=accepted,
                            rejected=rejected, topic=naming.topic(caller.tenant, tool, dataset),
                            dlq=naming.dlq_topic(caller.tenant), rejections=shown,
                            warnings=warnings[:SHOWN_REJECTIONS])

    def _publish(self, caller: Caller, tool: str, chunk: ParseResult) -> PublishReport:
        return self._publishers.publish(chunk, tenant=caller.tenant, tool=tool)


class Writes:
    """Events of a caller whose token another app checked (the SensorThings API's POST of an
    Observation, runtime/api/sensorthings/write.py): the push endpoints' checks (tool enabled,
    dataset of the tenant, not suspended), daily quota and Kafka acknowledgement. Blocks; raises
    :class:`IngestError`."""

    def __init__(self, target: Callable, deliver: Callable, publishers: TenantPublishers, records: Counter,
                 catalogue_ready: Callable[[], bool]):
        self._target, self._deliver, self._publishers, self._records = target, deliver, publishers, records
        self._ready = catalogue_ready

    def publish(self, tenant: str, subject: str, tool: str, dataset: str, events: list[Observation]) -> PublishReport:
        if not self._ready():
            raise IngestError(503, "starting", "the ingest service is still loading the catalogue; retry shortly",
                              {"Retry-After": "5"})
        caller = Caller(tenant=tenant, via="token", subject=subject)
        municipality, _ = self._target(caller, tool, dataset)
        if any(event.tenant != tenant or event.dataset != dataset for event in events):
            raise IngestError(400, "invalid", f"every event must belong to {tenant}/{tool}/{dataset}")
        result = ParseResult(events=list(events))
        report = self._deliver(caller, municipality, tool, dataset, len(events),
                               lambda: self._publishers.publish(result, tenant=tenant, tool=tool))
        self._records.labels("sensorthings-api", "accepted").inc(report.events)
        return report


# The application ---------------------------------------------------------------

def create_push_app(catalogue: Catalogue, publishers: TenantPublishers, credentials: CredentialSource, *,
                    verifier: TokenVerifier, quota: DailyQuota | None = None,
                    catalogue_ready: Callable[[], bool] = lambda: True,
                    sources_status: Callable[[str], list[dict[str, Any]]] | None = None,
                    registry: CollectorRegistry | None = None, route_prefix: str = "/ingest/v1") -> FastAPI:
    """The push endpoints. ``sources_status(tenant)`` (the pull scheduler's) adds
    ``GET /ingest/v1/sources``; ``registry`` is where metrics go (``/metrics``).
    ``route_prefix="/v1"`` is for mounting the app under ``/ingest`` in another one."""
    app = FastAPI(title="Urban Stack ingest", version="1", description=DESCRIPTION)
    registry = registry or CollectorRegistry()
    quota = quota or DailyQuota()
    records = Counter("urbanstack_ingest_push_records", "Pushed records by connector and outcome.",
                      ["connector", "outcome"], registry=registry)
    refused = Counter("urbanstack_ingest_push_refused", "Refused push requests by reason.", ["reason"],
                      registry=registry)

    bearer = HTTPBearer(auto_error=False, description="Keycloak access token with role gov-editor or gov-admin.")
    webhook = APIKeyHeader(name=KEY_HEADER, auto_error=False,
                           description="The municipality's webhook key (Secret urbanstack-ingest, key webhook-key).")

    def authenticate(request: Request, permission: Permission) -> Caller:
        if not catalogue_ready():
            raise IngestError(503, "starting", "the service is still loading the catalogue; retry shortly",
                              {"Retry-After": "5"})
        key = request.headers.get(KEY_HEADER)
        header = request.headers.get("authorization")
        if key is not None and header is not None:
            refused.labels("ambiguous").inc()
            raise IngestError(400, "ambiguous_credentials", f"send either a bearer token or {KEY_HEADER}, not both")
        if key is not None:
            return _by_key(key.strip())
        if header is None:
            refused.labels("unauthenticated").inc()
            raise IngestError(401, "unauthenticated", f"send 'Authorization: Bearer <access token>' or "
                                                      f"'{KEY_HEADER}: <webhook key>'",
                              {"WWW-Authenticate": "Bearer"})
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            refused.labels("invalid_token").inc()
            raise IngestError(401, "unauthenticated", "send the token as 'Authorization: Bearer <access token>'",
                              {"WWW-Authenticate": 'Bearer error="invalid_request"'})
        try:
            principal = verifier.verify(token.strip())
        except AuthError as error:
            refused.labels("invalid_token").inc()
            raise IngestError(401, "unauthenticated", str(error),
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if not principal.can(permission):
            refused.labels("forbidden").inc()
            raise IngestError(403, "forbidden", f"your roles do not allow {permission.value} in {principal.tenant}; "
                                                "writing needs gov-editor or gov-admin")
        return Caller(tenant=principal.tenant, via="token", subject=principal.subject)

    def _by_key(key: str) -> Caller:
        invalid = IngestError(401, "unauthenticated", f"the {KEY_HEADER} is not a valid webhook key",
                              {"WWW-Authenticate": "Bearer"})
        tenant = tenant_of_key(key)
        if tenant is None or catalogue.municipality(tenant) is None:
            refused.labels("invalid_key").inc()
            raise invalid
        try:
            stored = credentials.get(tenant)
            if stored is None or not key_matches(key, stored.webhook_key):
                stored = credentials.get(tenant, refresh=True)  # the key may have been rotated
        except CredentialsUnavailable:
            raise IngestError(503, "unavailable", "webhook keys cannot be checked right now; retry shortly",
                              {"Retry-After": "10"}) from None
        if stored is None or not key_matches(key, stored.webhook_key):
            refused.labels("invalid_key").inc()
            raise invalid
        return Caller(tenant=tenant, via="webhook-key", subject="webhook")

    def writer(request: Request, _b: HTTPAuthorizationCredentials | None = Depends(bearer),
               _k: str | None = Depends(webhook)) -> Caller:
        return authenticate(request, Permission.write_own)

    def reader(request: Request, _b: HTTPAuthorizationCredentials | None = Depends(bearer),
               _k: str | None = Depends(webhook)) -> Caller:
        return authenticate(request, Permission.read_own)

    def target(caller: Caller, tool: str, dataset: str):
        municipality = catalogue.municipality(caller.tenant)
        if municipality is None:
            raise IngestError(404, "not_found", f"municipality {caller.tenant!r} is not known to this platform")
        if municipality.spec.suspended:
            raise IngestError(403, "suspended", f"municipality {caller.tenant!r} is suspended; nothing is accepted")
        info = catalogue.get(caller.tenant, tool, dataset)
        if info is None:
            enabled = sorted(t.name for t in municipality.spec.tools)
            if tool not in enabled:
                raise IngestError(404, "not_found", f"tool {tool!r} is not enabled for {caller.tenant!r}; "
                                                    f"enabled tools: {enabled}")
            known = sorted(d.name for d in catalogue.datasets() if d.owner == caller.tenant and d.tool == tool)
            raise IngestError(404, "not_found", f"tool {tool!r} has no dataset {dataset!r}; its datasets: {known}")
        return municipality, info

    def deliver(caller: Caller, municipality, tool: str, dataset: str, records: int,
                publish: Callable[[], PublishReport]) -> PublishReport:
        """Reserve ``records`` (events and rejections) of the daily quota, publish, wait for
        Kafka: 429 over the quota, 503 (reservation given back) when Kafka did not
        acknowledge everything."""
        try:
            quota.reserve(caller.tenant, records, municipality.spec.plan.quotas().events_per_day)
        except QuotaExceeded as exc:
            refused.labels("quota").inc()
            raise IngestError(429, "quota_exceeded", str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            return publish()
        except (DeliveryError, CredentialsUnavailable) as exc:
            quota.release(caller.tenant, records)
            refused.labels("kafka").inc()
            log.warning("push for %s/%s/%s not delivered: %s", caller.tenant, tool, dataset, exc)
            maybe = isinstance(exc, DeliveryError) and exc.possibly_delivered
            stored = ("some may have been stored all the same, " if maybe else "none were stored, ")
            raise IngestError(503, "unavailable", "the event stream did not acknowledge the records in time; "
                                                  f"{stored}so the request was not accepted: send the same "
                                                  "request again later (records sent twice are stored once)",
                              {"Retry-After": str(KAFKA_RETRY_AFTER)}) from None
        except ValueError as exc:  # the publisher's own tenant check; cannot happen after the filter above
            raise IngestError(400, "invalid", str(exc)) from None

    def ingest(caller: Caller, tool: str, dataset: str, connector: str, parse: Callable[[], ParseResult],
               max_records: int | None = None) -> JSONResponse:
        """Parse, check, publish and answer; more than ``max_records`` records are refused
        (413) before anything is counted or published."""
        municipality, _ = target(caller, tool, dataset)
        result = parse()
        if max_records is not None and len(result.events) + len(result.rejected) > max_records:
            raise too_many_records(max_records)
        # A parser that names another dataset would publish elsewhere: never.
        stray = [event for event in result.events if event.dataset != dataset or event.tenant != caller.tenant]
        if stray:
            strays = {id(event) for event in stray}
            result.events = [event for event in result.events if id(event) not in strays]
            result.rejected += [Rejection(f"event {event.sensor_id}", f"belongs to dataset {event.dataset!r}, "
                                          f"not {dataset!r}", event.to_dict()) for event in stray]
        report = deliver(caller, municipality, tool, dataset, len(result.events) + len(result.rejected),
                         lambda: publishers.publish(result, tenant=caller.tenant, tool=tool))
        records.labels(connector, "accepted").inc(report.events)
        records.labels(connector, "rejected").inc(report.rejections)
        warnings = result.warnings[:SHOWN_REJECTIONS]
        if report.summarised:
            warnings.append(f"{report.rejections} records were rejected: the first {DLQ_RECORDS_PER_CALL} are in "
                            f"the dead-letter topic one by one, the other {report.summarised} in one summary "
                            "message that counts their reasons (header 'omitted'); fix the source and send them "
                            "again")
        body = IngestReport(
            tenant=caller.tenant, tool=tool, dataset=dataset, accepted=report.events, rejected=report.rejections,
            topic=naming.topic(caller.tenant, tool, dataset), dlq=naming.dlq_topic(caller.tenant),
            rejections=[RejectionInfo(where=r.where, reason=r.reason) for r in result.rejected[:SHOWN_REJECTIONS]],
            warnings=warnings)
        return JSONResponse(body.model_dump(), status_code=202)

    def ingest_batch(caller: Caller, tool: str, dataset: str, data: dict) -> JSONResponse:
        """A columnar ObservationBatch: validated as a whole and published as a whole, or
        refused as a whole with the column and row of the first problem (nothing published)."""
        municipality, _ = target(caller, tool, dataset)
        for key, expected in (("tenant", caller.tenant), ("dataset", dataset)):
            if data.setdefault(key, expected) != expected:
                raise IngestError(422, "invalid", f"batch: {key} is {data[key]!r}, but this request writes "
                                                  f"{expected!r} (from the credential and the URL)")
        rows = data.get("sensor_id")
        if isinstance(rows, list) and len(rows) > MAX_RECORDS:
            raise too_many_records(MAX_RECORDS)
        try:
            batch = ObservationBatch.from_dict(data)
        except EventError as exc:
            raise IngestError(422, "invalid", f"batch: {exc}; nothing was published, fix it and send the "
                                              "batch again") from None
        report = deliver(caller, municipality, tool, dataset, len(batch),
                         lambda: publishers.publish_batch(batch, tool=tool))
        records.labels("observations", "accepted").inc(report.events)
        body = IngestReport(tenant=caller.tenant, tool=tool, dataset=dataset, accepted=report.events, rejected=0,
                            topic=naming.topic(caller.tenant, tool, dataset), dlq=naming.dlq_topic(caller.tenant),
                            rejections=[], warnings=[])
        return JSONResponse(body.model_dump(), status_code=202)

    uploads = Uploads(target, deliver, publishers, records)
    app.state.uploads = uploads
    app.state.writes = Writes(target, deliver, publishers, records, catalogue_ready)

    responses = {
        400: {"description": "Bad request (empty body, both credentials)"},
        401: {"description": "No or invalid token or webhook key"},
        403: {"description": "The token's roles do not allow writing, or the municipality is suspended"},
        404: {"description": "Tool not enabled for the municipality, or no such dataset"},
        413: {"description": "Body too large, or more records than one request may carry"},
        429: {"description": "Daily event quota exhausted (see Retry-After)"},
        503: {"description": "Kafka did not acknowledge; nothing was accepted (see Retry-After)"},
    }
    prefix = f"{route_prefix}/{{tool}}/{{dataset}}"

    async def uplink(caller: Caller, tool: str, dataset: str, connector: str, data: bytes, codec: str | None):
        check_codec(codec)
        return await run_in_threadpool(ingest, caller, tool, dataset, connector,
                                       lambda: lorawan.parse_uplink(data, caller.tenant, dataset=dataset,
                                                                    codec=codec), MAX_RECORDS)

    @app.post(f"{prefix}/ttn-uplink", status_code=202, response_model=IngestReport, responses=responses,
              summary="The Things Stack v3 uplink webhook")
    async def ttn_uplink(request: Request, tool: str, dataset: str,
                         codec: str | None = Query(None, description=CODEC_HELP),
                         caller: Caller = Depends(writer)):
        """Set this URL as the webhook's base URL with *Uplink message* enabled, and add the
        header `X-Ingest-Key`. Fields come from `uplink_message.decoded_payload` (a payload
        formatter in TTS), else from a built-in decoder chosen by the device's model ids or
        pinned with `?codec=`; otherwise the uplink is rejected."""
        data = await read_body(request, MAX_JSON_BYTES)
        return await uplink(caller, tool, dataset, "ttn-uplink", data, codec)

    @app.post(f"{prefix}/chirpstack-uplink", status_code=202, response_model=IngestReport, responses=responses,
              summary="ChirpStack v4 HTTP integration")
    async def chirpstack_uplink(request: Request, tool: str, dataset: str,
                                event: str = Query("up", description="ChirpStack adds ?event=up|join|status|…"),
                                codec: str | None = Query(None, description=CODEC_HELP),
                                caller: Caller = Depends(writer)):
        """Use this URL as the HTTP integration's endpoint with the JSON encoding. Only `up`
        events carry data; the others are acknowledged and ignored. Fields come from the
        decoded `object` (a codec in the device profile), else from a built-in decoder named by
        the profile or pinned with `?codec=`."""
        data = await read_body(request, MAX_JSON_BYTES)
        check_codec(codec)
        if event != "up":
            target(caller, tool, dataset)
            return JSONResponse(IngestReport(
                tenant=caller.tenant, tool=tool, dataset=dataset, accepted=0, rejected=0,
                topic=naming.topic(caller.tenant, tool, dataset), dlq=naming.dlq_topic(caller.tenant),
                ignored=f"ChirpStack event {event!r} carries no measurements").model_dump(), status_code=202)
        return await uplink(caller, tool, dataset, "chirpstack-uplink", data, codec)

    @app.post(f"{prefix}/sensorthings", status_code=202, response_model=IngestReport, responses=responses,
              summary="OGC SensorThings Observations")
    async def sensorthings_push(request: Request, tool: str, dataset: str,
                                field: str | None = Query(None, description="Field name for the results "
                                                          "(default: the ObservedProperty's name)"),
                                caller: Caller = Depends(writer)):
        """A SensorThings response: Things with Datastreams and Observations, Datastreams with
        Observations, or Observations with their Datastream."""
        data = await read_body(request, MAX_JSON_BYTES)
        return await run_in_threadpool(ingest, caller, tool, dataset, "sensorthings",
                                       lambda: sensorthings.parse_observations(data, caller.tenant, dataset,
                                                                               field=field), MAX_RECORDS)

    @app.post(f"{prefix}/observations", status_code=202, response_model=IngestReport, responses=responses,
              summary="Observation events (JSON or NDJSON)")
    async def observations(request: Request, tool: str, dataset: str, caller: Caller = Depends(writer)):
        """The platform's own event format (docs/connectors.md): one JSON object, an array,
        or NDJSON; or one columnar batch (`{"v": 2, "sensor_id": [...], "observed_at": [...],
        "fields": {...}}`), which is accepted or refused as a whole. `tenant` and `dataset` may
        be omitted; they come from the credential and URL."""
        data = await read_body(request, MAX_JSON_BYTES)
        batch = _as_batch(data)
        if batch is not None:
            return await run_in_threadpool(ingest_batch, caller, tool, dataset, batch)
        return await run_in_threadpool(ingest, caller, tool, dataset, "observations",
                                       lambda: parse_events(data, caller.tenant, dataset))

    @app.post(f"{prefix}/upload/preview", response_model=PreviewReport, responses=responses,
              summary="Preview a CSV/XLSX file before importing it")
    async def upload_preview(request: Request, tool: str, dataset: str,
                             filename: str | None = Query(None, description="Original file name (.csv/.xlsx)"),
                             sheet: str | None = Query(None, description="XLSX sheet (default: the first)"),
                             rows: int = Query(20, ge=1, le=200),
                             header_row: int | None = Query(None, ge=1, description=HEADER_ROW),
                             header_rows: int = Query(1, ge=1, le=20, description=HEADER_ROWS),
                             data_start_row: int | None = Query(None, ge=1, description=DATA_START_ROW),
                             decimal: list[str] = Query([], description=DECIMAL),
                             caller: Caller = Depends(writer)):
        """Send the file as the body. Nothing is stored: the answer shows the header rows,
        each column's type, unit, decimal mark and suggested field name, sample rows, and
        warnings. Only the head of the file is read (`rows_read`); the import checks every row."""
        target(caller, tool, dataset)
        options = _options(header_row, header_rows, data_start_row, sheet, decimal)
        upload = await read_upload(request)

        def run() -> PreviewReport:
            with upload:
                return uploads.preview(caller, tool, dataset, upload, filename=filename, sheet=sheet, rows=rows,
                                       options=options)

        return await run_in_threadpool(run)

    @app.post(f"{prefix}/upload", status_code=202, response_model=IngestReport, responses=responses,
              summary="Import a CSV/XLSX file")
    async def upload(request: Request, tool: str, dataset: str,
                     field: list[str] = Query([], description="Column to import; 'Column=field_name' renames. "
                                                              "Repeat for each column."),
                     sensor_column: str | None = Query(None, description="Column identifying sensor or area"),
                     sensor_id: str | None = Query(None, description="Fixed sensor id for every row"),
                     sensor_map: list[str] = Query([], description="'name in the file=sensor id': store that "
                                                                   "sensor under another id (e.g. a name damaged by "
                                                                   "a wrong encoding). Repeat for each name."),
                     timestamp_column: str | None = Query(None, description="Column with date or time"),
                     reference_date: date | None = Query(None, description="Fixed date for every row"),
                     timezone: str = Query("Europe/Berlin", description="Zone of times without an offset"),
                     unit: list[str] = Query([], description="'field=unit' overrides a guessed unit"),
                     filename: str | None = Query(None), sheet: str | None = Query(None),
                     header_row: int | None = Query(None, ge=1, description=HEADER_ROW),
                     header_rows: int = Query(1, ge=1, le=20, description=HEADER_ROWS),
                     data_start_row: int | None = Query(None, ge=1, description=DATA_START_ROW),
                     decimal: list[str] = Query([], description=DECIMAL),
                     caller: Caller = Depends(writer)):
        """Send the file as the body, with the mapping from the preview as query parameters.
        Give `sensor_column` or `sensor_id`, and `timestamp_column` or `reference_date`. The
        file is read and published in chunks; if a later chunk fails (Kafka, quota, a broken
        file structure), the answer says how much was published before: send the whole file
        again once fixed, the rows already stored are not doubled."""
        target(caller, tool, dataset)
        mapping = table_mapping(dataset, field, sensor_column, sensor_id, timestamp_column, reference_date,
                                timezone, unit, sensor_map)
        options = _options(header_row, header_rows, data_start_row, sheet, decimal)
        upload = await read_upload(request)

        def run() -> JSONResponse:
            with upload:
                body = uploads.import_file(caller, tool, dataset, upload, mapping, filename=filename, sheet=sheet,
                                           options=options)
            return JSONResponse(body.model_dump(), status_code=202)

        return await run_in_threadpool(run)

    if sources_status is not None:
        @app.get(f"{route_prefix}/sources", summary="State of the municipality's pull sources")
        def sources(caller: Caller = Depends(reader)) -> list[dict[str, Any]]:
            """Per source in `spec.sources`: last success, last error, events published, next run."""
            return sources_status(caller.tenant)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(IngestError)
    async def ingest_error(request: Request, error: IngestError) -> JSONResponse:
        return _error(error.status, error.code, error.message, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "error")
        return _error(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg')}"
                             for item in error.errors())
        return _error(422, "invalid_parameter", problems[:2000])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error; it has been logged")

    return app



def _as_batch(data: bytes) -> dict | None:
    """The body as a columnar batch (schema version 2), or None for single events."""
    head = data.lstrip()[:1]
    if head != b"{" or b'"v"' not in data[:4096]:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None   # NDJSON or broken JSON: the event parser says what is wrong, per line
    if isinstance(parsed, dict) and parsed.get("v") == BATCH_SCHEMA_VERSION:
        return parsed
    return None


HEADER_ROW = "Row with the column names (1 = first row), instead of header detection; as the preview shows"
HEADER_ROWS = "How many rows the header spans, ending at header_row (merged group labels above the names)"
DATA_START_ROW = "First data row (default: the first non-blank row below the header)"


DECIMAL = ("Decimal mark of numbers written as text: ',' or '.' for every column, or 'Column=,' per column "
           "(repeat); instead of the decision the preview shows per column")


def _options(header_row: int | None, header_rows: int, data_start_row: int | None, sheet: str | None,
             decimal: list[str]) -> tabular.TableOptions | None:
    if header_row is None and data_start_row is None and header_rows == 1 and not decimal:
        return None
    marks: str | dict[str, str] | None = None
    if decimal in ([","], ["."]):
        marks = decimal[0]
    elif decimal:
        pairs = [item.rpartition("=") for item in decimal]
        if any(not equals or not column.strip() or mark not in (",", ".") for column, equals, mark in pairs):
            raise IngestError(422, "invalid_parameter", f"decimal: expected ',' or '.' (for every column) or "
                                                        f"'Column=,' / 'Column=.' per column, got {decimal}")
        marks = {column.strip(): mark for column, _, mark in pairs}
    return tabular.TableOptions(header_row=header_row, header_rows=header_rows, data_start_row=data_start_row,
                                sheet=sheet, decimal=marks)


def _chunks(upload, tenant: str, mapping: tabular.TableMapping, filename: str | None, sheet: str | None,
            options: tabular.TableOptions | None) -> Iterator[ParseResult]:
    try:
        return tabular.import_chunks(upload, tenant, mapping, filename=filename, sheet=sheet, options=options)
    except tabular.TableError:
        raise
    except ValueError as exc:  # the mapping does not fit the file: nothing was read beyond the head
        raise IngestError(422, "invalid_mapping", str(exc)) from None


@contextlib.contextmanager
def _table_errors() -> Iterator[None]:
    """A file the table reader refuses: its code and status (413 for a limit, 422 otherwise)."""
    try:
        yield
    except tabular.TableError as exc:
        raise IngestError(exc.status, exc.code, str(exc)) from None
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl/zipfile raise many kinds for a broken file
        raise IngestError(422, "unreadable_file", f"the file cannot be read as a table: {exc}") from None


async def read_upload(request: Request, limit: int = MAX_UPLOAD_BYTES) -> tempfile.SpooledTemporaryFile:
    """The body in a spooled file (memory up to a megabyte, then disk), its size checked as
    it arrives: a body over ``limit`` is refused at the first byte too many."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IngestError(413, "too_large", f"the file has {int(declared)} bytes; at most {limit} are accepted "
                                            "per upload, split it")
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise IngestError(413, "too_large", f"the file is larger than {limit} bytes, the most accepted "
                                                    "per upload; split it")
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


CODEC_HELP = ("Built-in decoder for uplinks without a decoded payload, when the device's identity does not "
              "name one (milesight-em300-th, decentlab-dl-pr26, bosch-tps110, yobiiq-sd1001)")


def check_codec(codec: str | None) -> None:
    if codec is None:
        return
    from urbanstack.runtime.connectors import lorawan_codecs

    try:
        lorawan_codecs.codec_name(codec)
    except lorawan_codecs.CodecError as exc:
        raise IngestError(422, "invalid", str(exc)) from None
