"""OGC SensorThings API 1.1 under ``/v1.1``, on the Data Hub API's app: the same query engine,
token verifier, tenant rules, quotas and limits as REST and GraphQL. Observations are created
through the ingest service (``app.state.sensorthings_writes``, set where the ingest service runs
beside the API; see :mod:`.write`); every other write is refused with the reason.

See docs/sensorthings.md for the mapping of datasets onto SensorThings entities.
"""

from __future__ import annotations

import json
from typing import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from urbanstack.runtime.metering.api_meter import note_caller

from .graph import SensorIndex, StaLimits
from .service import VERSION, run
from .write import MAX_BODY_BYTES, WriteRefused, create, delete, method_not_allowed, replace_entity, update

__all__ = ["add_sensorthings", "StaLimits", "VERSION"]


def add_sensorthings(app: FastAPI, principal: Callable, charge: Callable, limits: StaLimits | None = None) -> None:
    """Adds the SensorThings routes to the API ``app``. ``principal(request)`` is the API's token
    check (None without a token, 401 for a bad one); ``charge(request, caller)`` counts one
    query against the caller's quota (429 beyond it), as for every REST request."""
    limits = limits or StaLimits()
    index = SensorIndex(app.state.engine, limits)
    app.state.sensorthings_index = index
    app.state.sensorthings_writes = None   # the ingest service's Writes, where it runs beside the API
    app.state.sensorthings_limits = limits
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

    def write(change: Callable, request: Request, path: str, *args):
        """``change(engine, index, limits, writes, caller, base, path, *args)`` for the caller, in a
        worker thread (it waits for Kafka and the warehouse)."""
        caller = principal(request)
        charge(request, caller)
        note_caller(request, caller)
        base = f"{str(request.base_url).rstrip('/')}/{VERSION}"
        return change(app.state.engine, index, app.state.sensorthings_limits, app.state.sensorthings_writes, caller,
                      base, path, *args)

    @router.post(f"/{VERSION}/{{path:path}}", include_in_schema=False)
    async def create_entity(request: Request, path: str) -> Response:
        try:
            body = await _bounded_body(request)
            written, location = await run_in_threadpool(write, create, request, path, body)
        except WriteRefused as refused:
            return _refusal(refused)
        return Response(json.dumps(written, ensure_ascii=False, separators=(",", ":")), status_code=201,
                        media_type="application/json",
                        headers={"Location": location, "Access-Control-Expose-Headers": "Location"})

    @router.api_route(f"/{VERSION}/{{path:path}}", methods=["PATCH", "PUT"], include_in_schema=False)
    async def change_entity(request: Request, path: str) -> Response:
        try:
            body = await _bounded_body(request)
            written = await run_in_threadpool(write, update if request.method == "PATCH" else replace_entity,
                                              request, path, body)
        except WriteRefused as refused:
            return _refusal(refused)
        return Response(json.dumps(written, ensure_ascii=False, separators=(",", ":")),
                        media_type="application/json")

    @router.delete(f"/{VERSION}/{{path:path}}", include_in_schema=False)
    async def delete_one(request: Request, path: str) -> Response:
        try:
            await run_in_threadpool(write, delete, request, path)
        except WriteRefused as refused:
            return _refusal(refused)
        return Response(status_code=200)

    @router.api_route(f"/{VERSION}", methods=["POST", "PATCH", "PUT", "DELETE"], include_in_schema=False)
    async def change_root(request: Request) -> Response:
        return _refusal(method_not_allowed(request.method, ""))

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
PREFLIGHT = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, PATCH, PUT, DELETE, OPTIONS",
             "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"}


async def _bounded_body(request: Request) -> bytes:
    """The body, read no further than :data:`.write.MAX_BODY_BYTES` (one Observation)."""
    declared = request.headers.get("content-length", "")
    refused = WriteRefused(413, "payload_too_large", f"a request body is at most {MAX_BODY_BYTES} bytes of JSON")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise refused
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise refused
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(refused: WriteRefused) -> JSONResponse:
    return JSONResponse({"error": {"code": refused.code, "message": refused.message}}, status_code=refused.status,
                        headers=refused.headers)


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
