"""``create_app``: the Data Hub API as one ASGI application (REST, GraphQL, health, metrics)."""


import logging
import time
from typing import Any, Iterable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from strawberry.fastapi import GraphQLRouter

from urbanstack.operator import naming

from .auth import AuthError, Principal, TokenVerifier
from .catalogue import Catalogue
from .graphql import schema
from .query import ApiLimits, QueryEngine, QueryError
from .rest import build_router

log = logging.getLogger(__name__)

DESCRIPTION = """\
The Urban Data Hub API: datasets of the municipalities on this platform, as time series,
joins of two datasets on common time buckets, single observations and file exports.

Send a Keycloak access token as `Authorization: Bearer <token>`. The municipality is taken
from the token. Open data (licence dl-de/zero-2-0) is readable on the same routes without
a token. Errors are JSON: `{"error": {"code": ..., "message": ...}}`.
"""


def create_app(settings: Any, catalogue: Catalogue, warehouse_client, *, keycloak_url: str, audience: str,
               shared_realms: Iterable[str] = (naming.SHARED_REALM,), limits: ApiLimits | None = None,
               verifier: TokenVerifier | None = None) -> FastAPI:
    """The API application.

    ``audience`` is the client id tokens must be issued for; ``{tenant}`` in it stands for
    the token's municipality (``"{tenant}-api"`` matches the per-tenant API clients of the
    operator's plan). ``warehouse_client`` is a clickhouse-connect client (chDB or server).
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

    app.state.settings = settings
    app.state.engine = QueryEngine(warehouse_client, catalogue, limits,
                                   observe=lambda kind, seconds: query_latency.labels(kind).observe(seconds))
    app.state.verifier = verifier or TokenVerifier(keycloak_url, audience, shared_realms=shared_realms)
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

    # Declared through HTTPBearer so OpenAPI shows the scheme; the header itself is parsed above.
    def principal_dependency(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)):
        return principal(request)

    app.include_router(build_router(principal_dependency))

    def context(request: Request, caller: Principal | None = Depends(principal_dependency)) -> dict[str, Any]:
        return {"principal": caller, "engine": app.state.engine, "request": request}

    app.include_router(GraphQLRouter(schema, context_getter=context, graphql_ide="graphiql"), prefix="/graphql",
                       include_in_schema=False)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        if app.state.engine.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "warehouse unavailable"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        began = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            # Templates, not raw paths, so label cardinality stays bounded whatever callers send.
            name = getattr(route, "path", None) or "unmatched"
            requests.labels(request.method, name, str(status)).inc()
            latency.labels(name).observe(time.perf_counter() - began)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, error: QueryError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.status,
                            headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
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

