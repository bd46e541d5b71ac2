"""OGC SensorThings API 1.1 (read) under ``/v1.1``, on the Data Hub API's app: the same query
engine, token verifier, tenant rules, quotas and limits as REST and GraphQL.

See docs/sensorthings.md for the mapping of datasets onto SensorThings entities.
"""

from __future__ import annotations

import json
from typing import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from urbanstack.runtime.metering.api_meter import note_caller

from .graph import SensorIndex, StaLimits
from .service import VERSION, run

__all__ = ["add_sensorthings", "StaLimits", "VERSION"]


def add_sensorthings(app: FastAPI, principal: Callable, charge: Callable, limits: StaLimits | None = None) -> None:
    """Adds the SensorThings routes to the API ``app``. ``principal(request)`` is the API's token
    check (None without a token, 401 for a bad one); ``charge(request, caller)`` counts one
    query against the caller's quota (429 beyond it), as for every REST request."""
    limits = limits or StaLimits()
    index = SensorIndex(app.state.engine, limits)
    app.state.sensorthings_index = index
    router = APIRouter()

    def answer(request: Request, path: str):
        # In a worker thread: the token check may fetch the realm's keys, the engine waits for the warehouse.
        caller = principal(request)
        charge(request, caller)
        note_caller(request, caller)   # metered like REST where the metering middleware covers /v1.1
        base = f"{str(request.base_url).rstrip('/')}/{VERSION}"
        return run(app.state.engine, index, limits, caller, base, path,
                   request.scope.get("query_string", b"").decode("utf-8", "replace"))

    async def handle(request: Request, path: str = "") -> Response:
        body, kind = await run_in_threadpool(answer, request, path)
        if kind == "text":
            return PlainTextResponse(body)
        return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                        media_type="application/json")

    @router.get(f"/{VERSION}", include_in_schema=False)
    async def landing(request: Request) -> Response:
        return await handle(request)

    @router.get(f"/{VERSION}/{{path:path}}", include_in_schema=False)
    async def resource(request: Request, path: str) -> Response:
        return await handle(request, path)

    @router.options(f"/{VERSION}", include_in_schema=False)
    @router.options(f"/{VERSION}/{{path:path}}", include_in_schema=False)
    async def preflight(path: str = "") -> Response:
        return Response(status_code=204, headers=PREFLIGHT)

    app.include_router(router)
    app.add_middleware(CrossOrigin)


# Web maps on other origins (Masterportal, a city's own portal) read the SensorThings API from the
# browser. Every answer may be read cross-origin: no cookie or other ambient credential is ever
# accepted here, a token must be sent explicitly (Authorization), so a foreign page learns nothing
# its visitor did not hand it.
PREFLIGHT = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS",
             "Access-Control-Allow-Headers": "Authorization", "Access-Control-Max-Age": "600"}


class CrossOrigin:
    """Adds ``Access-Control-Allow-Origin: *`` to every answer under /v1.1 (errors too)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(f"/{VERSION}"):
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"access-control-allow-origin"]
                message = {**message, "headers": headers + [(b"access-control-allow-origin", b"*")]}
            await send(message)

        await self.app(scope, receive, send_with_header)
