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


# Engine configuration for the embedded engine (a ClickHouse server has its own config.xml).
# Every MergeTree table has two background assignees (data processing: merges, mutations, TTL;
# streaming) that, when a run finds nothing to do, sleep 0.1 s times a multiplier to the power of
# the idle runs in a row, up to 600 s. With the default multiplier of 1.1 an idle table reaches
# the 600 s cap only after ~90 runs, about 1.6 hours; in between, thousands of empty tenant
# tables (12 per municipality) kept the engine's schedule pools busy in the operator's and the
# sink's process: 3,000 empty tables cost 4-7 % of a core over the first minutes
# (bench/warehouse_idle.py). With 2 the cap is reached after 13 runs (~14 minutes). An insert,
# a mutation or an OPTIMIZE still wakes the assignee at once, so merges and deletes are not
# delayed; only work nobody announces (a TTL that expires) waits for the cap, as it does once
# the default has backed off.
EMBEDDED_ENGINE_OPTIONS = {
    "background_processing_pool_task_sleep_seconds_when_no_work_multiplier": "2",
    "background_streaming_processing_pool_task_sleep_seconds_when_no_work_multiplier": "2",
}


def connect(url: str, *, engine_options: dict[str, str] | None = None):
    """A client for ``url``; ``engine_options`` replace EMBEDDED_ENGINE_OPTIONS for an embedded
    engine started by this call (the first connection to a path in a process starts it)."""
    if not (is_embedded(url) or url.startswith(("http://", "https://"))):
        raise ValueError(f"warehouse URL must start with chdb://, http:// or https://, got {redact(url)!r}")
    try:
        if is_embedded(url):
            options = EMBEDDED_ENGINE_OPTIONS if engine_options is None else engine_options
            return clickhouse_connect.get_client(dsn=url, chdb_options=dict(options) or None)
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
