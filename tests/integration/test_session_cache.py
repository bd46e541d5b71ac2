"""The hubs' in-process session cache (runtime/web/sessions.py) against the real metadata store
(SQLite and PostgreSQL): a signed-in user's next pages are served from it, and whatever ends or
changes the session ends or changes it on the very next request."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

from starlette.requests import Request

from urbanstack.operator.models import Municipality
from urbanstack.runtime.store import open_store
from urbanstack.runtime.store.models import utcnow
from urbanstack.runtime.web import security
from urbanstack.runtime.web.oidc import Keycloak
from urbanstack.runtime.web.sessions import Sessions

TOWN = Municipality.model_validate({"metadata": {"name": "cachetown"},
                                    "spec": {"displayName": "Cachetown", "ags": "05754008",
                                             "admins": ["ops@cachetown.example.org"]}})


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sessions(store, cache_seconds: float = 60.0) -> Sessions:
    # A Keycloak nobody listens on: a refresh fails as it does when Keycloak is down.
    return Sessions(store, Keycloak(f"http://127.0.0.1:{_closed_port()}", verifier=None, timeout=2),
                    cache_seconds=cache_seconds)


def _request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/gov/cachetown/", "query_string": b"",
                    "scheme": "http", "server": ("127.0.0.1", 80),
                    "headers": [(b"host", b"127.0.0.1"), (b"cookie", f"{security.COOKIE}={token}".encode())]})


def _signed_in(store, subject: str = "erika", access: timedelta = timedelta(hours=1)) -> str:
    token, _row = store.sessions.create("cachetown", subject=subject, username=subject, display_name="Erika",
                                        email=f"{subject}@cachetown.example.org", roles=["gov-viewer"],
                                        refresh_token="not-a-real-one", access_expires_at=utcnow() + access)
    return token


def _delete_elsewhere(store, token: str) -> None:
    """Ends the session as another hub process over the same store would (its own store object)."""
    elsewhere = open_store(store.url)
    try:
        assert elsewhere.sessions.delete(token)
    finally:
        elsewhere.close()


def _load(sessions: Sessions, token: str):
    return sessions.load(_request(token), lambda tenant: sessions.keycloak.client(TOWN, "gov-hub", "http://x/cb"))


def test_signing_out_ends_a_cached_session_on_the_next_request(store):
    sessions = _sessions(store)
    token = _signed_in(store)
    first = _load(sessions, token)
    assert first is not None and _load(sessions, token) is first     # the second request: from the cache
    sessions.end(first)
    assert _load(sessions, token) is None


def test_removed_access_and_a_language_choice_show_on_the_next_request(store):
    sessions = _sessions(store)
    token, other = _signed_in(store), _signed_in(store, subject="max")
    session = _load(sessions, token)
    sessions.remember_language(session, "en")
    assert _load(sessions, token).language == "en"
    assert _load(sessions, other) is not None
    assert sessions.end_all_of("cachetown", "max") == 1
    assert _load(sessions, other) is None
    assert _load(sessions, token).language == "en"


def test_a_cached_session_is_read_again_when_its_access_token_expires(store):
    sessions = _sessions(store)
    token = _signed_in(store, access=timedelta(seconds=1))
    assert _load(sessions, token) is not None
    time.sleep(1.2)
    # The roles must be refreshed now; Keycloak cannot be reached, so the session ends.
    assert _load(sessions, token) is None
    assert store.sessions.get(token) is None


def test_a_session_ended_by_another_process_stops_working_within_the_cache_lifetime(store):
    sessions = _sessions(store, cache_seconds=1.0)
    token = _signed_in(store)
    assert _load(sessions, token) is not None
    _delete_elsewhere(store, token)
    assert _load(sessions, token) is not None   # the documented bound: up to CACHE_SECONDS
    time.sleep(1.1)
    assert _load(sessions, token) is None


def test_without_the_cache_a_session_ended_elsewhere_ends_at_once(store):
    sessions = _sessions(store, cache_seconds=0)
    token = _signed_in(store)
    assert _load(sessions, token) is not None
    _delete_elsewhere(store, token)
    assert _load(sessions, token) is None
