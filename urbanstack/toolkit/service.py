"""Health and Prometheus metrics of a tool, and the process around its main loop.

``GET /healthz`` answers 200 while the main loop runs and has made progress within
``stale_after`` seconds (503 otherwise, with the reason); ``GET /metrics`` is the Prometheus
text format of the tool's own registry. The server binds 127.0.0.1 unless
``URBANSTACK_TOOL_BIND`` says otherwise (a pod sets ``0.0.0.0`` for the kubelet's probes).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .context import ContextError, ToolContext

log = logging.getLogger(__name__)


class Health:
    def __init__(self, stale_after: float = 60.0):
        self.stale_after = stale_after
        self.registry = CollectorRegistry()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.last_beat = 0.0
        self.problem = ""
        self.beats = Counter("urbanstack_tool_loop_iterations", "Iterations of the tool's main loop.",
                             registry=self.registry)
        self.up = Gauge("urbanstack_tool_up", "1 while the tool's main loop runs.", registry=self.registry)

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        self.problem = ""
        self.beats.inc()
        self.up.set(1)
        self.started.set()

    def fail(self, reason: str) -> None:
        self.problem = reason

    def status(self) -> tuple[int, str]:
        if self.stopped.is_set():
            return 503, "stopped"
        if not self.started.is_set():
            return 503, "starting"
        if self.problem:
            return 503, self.problem
        if time.monotonic() - self.last_beat > self.stale_after:
            return 503, f"no progress for {self.stale_after:.0f} s"
        return 200, "ok"


def serve_health(health: Health, port: int, host: str | None = None) -> ThreadingHTTPServer:
    host = host or os.environ.get("URBANSTACK_TOOL_BIND", "127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/healthz":
                code, text = health.status()
                body, kind = (text + "\n").encode(), "text/plain; charset=utf-8"
            elif self.path == "/metrics":
                code, body, kind = 200, generate_latest(health.registry), CONTENT_TYPE_LATEST
            else:
                code, body, kind = 404, b"not found\n", "text/plain; charset=utf-8"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # probes every few seconds: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tool-health", daemon=True).start()
    return server


ToolMain = Callable[[ToolContext, Health, threading.Event], None]


def run(main: ToolMain, ctx: ToolContext | None = None, *, stop: threading.Event | None = None) -> int:
    """Run ``main(ctx, health, stop)`` with the health server; SIGTERM/SIGINT set ``stop``."""
    try:
        ctx = ctx or ToolContext.from_environment()
    except ContextError as exc:
        print(f"urbanstack tool: {exc}", file=sys.stderr)
        return 2
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    health = Health()
    server = serve_health(health, ctx.port)
    log.info("tool %s of %s running; health on port %s", ctx.tool, ctx.municipality, server.server_address[1])
    try:
        main(ctx, health, stop)
        return 0
    except Exception as exc:  # noqa: BLE001 - the process exits with the reason, secrets redacted
        print(f"urbanstack tool {ctx.tool}: {ctx.redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1
    finally:
        health.stopped.set()
        server.shutdown()


def load_main(module: str) -> ToolMain:
    """``module`` (``package.module`` or ``package.module:function``) → the tool's main function."""
    name, _, function = module.partition(":")
    loaded = importlib.import_module(name)
    main = getattr(loaded, function or "main", None)
    if not callable(main):
        raise ContextError(f"{module}: no callable {function or 'main'}(ctx, health, stop)")
    return main


def launch(argv: list[str] | None = None) -> int:
    """``python -m urbanstack.toolkit MODULE``: what a tool's container (and ``tool run``) executes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m urbanstack.toolkit package.module[:function]", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(load_main(args[0]))
