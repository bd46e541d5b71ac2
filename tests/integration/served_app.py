"""An API app behind the real HTTP server of every service (``serve.http_server``), on a free port of
127.0.0.1, for clients that speak HTTP themselves (OWSLib, …)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from urbanstack import serve


@contextmanager
def serving(app, settings) -> Iterator[str]:
    """Yields the server's base URL (``http://127.0.0.1:<port>``) once it accepts connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = serve.http_server(app, settings, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the API did not start within 20 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
