"""``create_app``: the Data Hub API as one ASGI application (REST, GraphQL, health, metrics)."""


import logging
import time
from typing import Any, Iterable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from urbanstack.operator import naming
from urbanstack.runtime.metering.api_meter import ApiMeter, MeteringMiddleware, note_caller
from urbanstack.runtime.metering.exports import Billing, default_statements
from urbanstack.runtime.metering.impact import Impact
from urbanstack.runtime.metering.events import QUOTA_QUERIES
from urbanstack.runtime.metering.ledger import Ledger
from urbanstack.runtime.metering.quota import SharedCounts
from urbanstack.runtime.metering.statements import Statements

from .auth import AuthError, Principal, TokenVerifier
from .catalogue import Catalogue
from .features import add_features
from .graphql import BoundedGraphQLRouter, build_schema
from .query import ApiLimits, QueryEngine, QueryError
from .quota import QueryQuota, QuotaExceeded, plan_limit
from .rest import build_router
from .sensorthings import add_sensorthings
from .usage import build_usage_router

log = logging.getLogger(__name__)

DESCRIPTION = """\
The Urban Data Hub API: datasets of the municipalities on this platform, as time series,
joins of two datasets on common time buckets, single observations and file exports.

Send a Keycloak access token as `Authorization: Bearer <token>`. The municipality is taken
from the token. Open data (licence dl-de/zero-2-0) is readable on the same routes without
a token. Errors are JSON: `{"error": {"code": ..., "message": ...}}`.

Data queries are limited per hour: with a token by the plan of the caller's municipality,
without one per client address. Beyond the limit the answer is 429 with `Retry-After`.
A GraphQL request counts once per data field (alias) it asks for.
"""
DEFAULT_ANONYMOUS_QUERIES_PER_HOUR = 600
# Routes of this API whose request bodies are bounded; the ingest service mounted beside it
# under /ingest bounds its uploads itself.
BODY_LIMITED = ("/graphql", "/api/")


class BodyLimit:
    """Passes at most ``max_bytes`` of a request body to the routes: a body that says (Content-Length)
    or turns out (while it streams in) to be longer is refused with 413 before the route sees more,
    so no route ever holds a big body in memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(BODY_LIMITED):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = int(declared) if declared.isdigit() else 0

        async def bounded_receive():
            nonlocal received
            # Raised inside the route that reads the body, so the API's error handler answers it.
            if received > self.max_bytes:
                raise HTTPException(413, f"the request body is larger than {self.max_bytes} bytes, the API's "
                                         "limit; send a shorter query (fewer aliases, smaller variables)")
            message = await receive()
            if message["type"] == "http.request" and not declared:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return await bounded_receive()
            return message

        await self.app(scope, bounded_receive, send)


class RequestMetrics:
    """Counts every HTTP request by method, route and status and observes its latency (Prometheus).
    Labels name the route's template, not the raw path, so their number stays bounded whatever
    callers send; an answer that never started (the app raised) counts as 500."""

    def __init__(self, app, requests: Counter, latency: Histogram):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = 500

        async def noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            name = getattr(scope.get("route"), "path", None) or "unmatched"
            self.requests.labels(scope["method"], name, str(status)).inc()
            self.latency.labels(name).observe(time.perf_counter() - began)


def create_app(settings: Any, catalogue: Catalogue, warehouse_client, *, keycloak_url: str, audience: str,
               shared_realms: Iterable[str] = (naming.SHARED_REALM,), limits: ApiLimits | None = None,
               verifier: TokenVerifier | None = None, quota: QueryQuota | None = None,
               meter: ApiMeter | None = None, ledger: Ledger | None = None,
               statements: Statements | None = None, seller=None, collectors: Iterable = ()) -> FastAPI:
    """The API application.

    ``audience`` is the client id tokens must be issued for; ``{tenant}`` in it stands for
    the token's municipality (``"{tenant}-api"`` matches the per-tenant API clients of the
    operator's plan). ``warehouse_client`` is a clickhouse-connect client (chDB or server).
    ``quota``: the query quotas (see :mod:`.quota`); by default the plans of the catalogue's
    municipalities and ``settings.api_anonymous_queries_per_hour`` for callers without a token.
    ``meter``: meters what each municipality reads (docs/metering.md); ``ledger``: serves its
    usage and statements under ``/api/v1/usage`` and ``/api/v1/statements`` (``statements``: priced
    and frozen as the caller configured them; by default the built-in price book).
    """
    app = FastAPI(title="Urban Stack Data Hub API", version="1", description=DESCRIPTION)
    registry = CollectorRegistry()
    requests = Counter("urbanstack_api_requests", "HTTP requests by route and status.",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("urbanstack_api_request_seconds", "HTTP request latency by route.", ["route"],
                        registry=registry, buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10))
    query_latency = Histogram("urbanstack_api_query_seconds", "Warehouse query latency by kind.", ["kind"],
                              registry=registry, buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10))
    auth_failures = Counter("urbanstack_api_auth_failures", "Refused bearer tokens.", registry=registry)
    quota_refusals = Counter("urbanstack_api_quota_refusals", "Data queries refused with 429 because the caller's "
                             "municipality (or 'anonymous') used its queries per hour.", ["tenant"],
                             registry=registry)

    app.state.settings = settings
    limits = limits or ApiLimits()
    app.state.engine = QueryEngine(warehouse_client, catalogue, limits,
                                   observe=lambda kind, seconds: query_latency.labels(kind).observe(seconds))
    app.state.verifier = verifier or TokenVerifier(keycloak_url, audience, shared_realms=shared_realms,
                                                   tenant_tools=_enabled_tools(catalogue))
    if quota is None:
        anonymous = getattr(settings, "api_anonymous_queries_per_hour", DEFAULT_ANONYMOUS_QUERIES_PER_HOUR)
        if not isinstance(anonymous, int) or anonymous < 0:
            raise ValueError(f"URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR must be 0 (no limit) or a positive "
                             f"number of queries per hour, got {anonymous!r}")
        shared = None
        if ledger is not None and meter is not None:  # one count across replicas: read back from the ledger
            shared = SharedCounts(ledger, QUOTA_QUERIES, span="hour", settle_seconds=meter.window_seconds + 30)
        quota = QueryQuota(plan_limit(catalogue), anonymous, shared=shared,
                           charged=meter.add_quota if shared is not None else None)
    app.state.quota = quota
    bearer = HTTPBearer(auto_error=False, description="Keycloak access token; optional for open data.")

    def principal(request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            auth_failures.inc()
            raise HTTPException(401, "send the token as 'Authorization: Bearer <access token>'",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'})
        try:
            return app.state.verifier.verify(token.strip())
        except AuthError as error:
            auth_failures.inc()
            raise HTTPException(401, str(error), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None

    def charge(request: Request, caller: Principal | None, count: int = 1) -> None:
        """``count`` data queries of ``caller``: counted, or refused with 429 when its quota has no room."""
        try:
            app.state.quota.charge(caller, request.client.host if request.client else None, count)
        except QuotaExceeded as exceeded:
            quota_refusals.labels(exceeded.label).inc()
            raise HTTPException(429, exceeded.message, headers={"Retry-After": str(exceeded.retry_after)}) from None

    # Declared through HTTPBearer so OpenAPI shows the scheme; the header itself is parsed above.
    # Every REST route takes the caller from here, so every REST request is one counted query.
    def seen(request: Request, caller: Principal | None) -> None:
        note_caller(request, caller)
        if meter is not None and caller is not None:
            meter.note_user(caller.tenant, caller.subject)   # active users per month (docs/metering.md)

    def principal_dependency(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)):
        caller = principal(request)
        charge(request, caller)
        seen(request, caller)
        return caller

    app.include_router(build_router(principal_dependency))
    # OGC SensorThings API (read) under /v1.1: the same engine, token check, tenant rules and quota.
    add_sensorthings(app, principal, charge)
    # OGC API – Features under /ogcapi: sensors as features, over the same engine and the SensorThings index.
    add_features(app, principal, charge)
    # What the web pages of this process share with the API (urbanstack serve): the meter for the
    # hubs' queries, statements and impact figures for the Gov Hub's usage page and the ops console.
    app.state.meter, app.state.billing, app.state.impact = meter, None, None
    if ledger is not None:
        impact = Impact(catalogue, ledger)
        registry.register(impact)
        billing = Billing(ledger, statements or default_statements(ledger, catalogue), catalogue, seller)
        app.state.billing, app.state.impact = billing, impact
        app.include_router(build_usage_router(principal_dependency, billing, impact=impact))
    for collector in collectors:   # e.g. the metering consumer's counts in urbanstack serve
        registry.register(collector)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if meter is not None:
        app.add_middleware(MeteringMiddleware, meter=meter)

    def context(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict[str, Any]:
        caller = principal(request)
        seen(request, caller)
        # Charged by the schema (graphql.DataFieldBudget) once it knows the data fields; GraphiQL's page is free.
        return {"principal": caller, "engine": app.state.engine, "request": request,
                "charge": lambda count: charge(request, caller, count)}

    app.include_router(BoundedGraphQLRouter(build_schema(limits), context_getter=context, graphql_ide="graphiql"),
                       prefix="/graphql", include_in_schema=False)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})   # on the event loop: no worker thread for a constant

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        if app.state.engine.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "warehouse unavailable"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetrics, requests=requests, latency=latency)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, error: QueryError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.status,
                            headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 429: "quota_exceeded"}.get(
            error.status_code, "error")
        return JSONResponse({"error": {"code": code, "message": str(error.detail)}}, status_code=error.status_code,
                            headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg')}"
                             for item in error.errors())
        return JSONResponse({"error": {"code": "invalid_parameter", "message": problems[:2000]}}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": {"code": "internal", "message": "internal error; it has been logged"}},
                            status_code=500)

    return app


def _enabled_tools(catalogue: Catalogue):
    """The tools a municipality has enabled, from the catalogue (None when it does not know the municipality)."""
    def tools(slug: str) -> list[str] | None:
        municipality = catalogue.municipality(slug)
        return None if municipality is None else [tool.name for tool in municipality.spec.tools]
    return tools
