"""The warehouse: one client library (clickhouse-connect), two backends.

``chdb://<path>`` is the embedded ClickHouse engine (chDB) in this process; only
one process may own a data path at a time. ``http(s)://user:password@host:port``
is a ClickHouse server. Callers get the same client API from both.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect


class WarehouseUnavailable(RuntimeError):
    pass


def is_embedded(url: str) -> bool:
    return url.startswith("chdb://")


def redact(url: str) -> str:
    """The URL with any password removed, safe for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str):
    if not (is_embedded(url) or url.startswith(("http://", "https://"))):
        raise ValueError(f"warehouse URL must start with chdb://, http:// or https://, got {redact(url)!r}")
    try:
        return clickhouse_connect.get_client(dsn=url)
    except Exception as exc:  # noqa: BLE001 - re-raised with an actionable message
        hint = ("another process owns this chDB data path; stop it or point URBANSTACK_WAREHOUSE_URL "
                "elsewhere" if is_embedded(url) else "check that the ClickHouse server is reachable")
        message = str(exc)
        parts = urlsplit(url)
        if parts.password:
            message = message.replace(parts.password, "***")
        raise WarehouseUnavailable(f"cannot open warehouse {redact(url)}: {hint} ({message[:300]})") from None


_shared: dict[str, object] = {}
_shared_lock = threading.Lock()


def shared(url: str):
    """One client per URL per process: chDB lets only one process own a data
    path, and within it operator, sink and API share one session."""
    with _shared_lock:
        if url not in _shared:
            _shared[url] = connect(url)
        return _shared[url]
