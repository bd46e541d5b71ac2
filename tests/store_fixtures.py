"""Fixtures for the metadata store on both backends.

``store`` is parametrised: ``sqlite`` (a fresh file per test) and ``postgresql`` (a
database made for this test session, emptied before each test and dropped at the end).
PostgreSQL is the local platform's when it runs (``urbanstack dev up``); otherwise a
private instance is started on a temporary state folder through the same
``platform.up`` code path, and purged afterwards.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
from dataclasses import dataclass

import pytest

from urbanstack.settings import Settings


@dataclass(frozen=True)
class PostgresDatabase:
    owner_url: str  # runs migrations
    app_url: str  # what services use: rows only
    settings: Settings
    name: str


def _free_port() -> int:
    # Below Linux's ephemeral range, like every port of the platform.
    for port in range(25400, 26000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 25400-25999 for a test PostgreSQL")


def _running_platform_postgres(settings: Settings) -> bool:
    from urbanstack.devplatform import processes
    from urbanstack.devplatform.postgres import Postgres

    return (processes.find("postgres", settings.run_dir) is not None and Postgres(settings).ready()
            and (settings.secrets_dir / "postgres-superuser-password").exists())


@pytest.fixture(scope="session")
def metadata_postgres(settings):
    from urbanstack.devplatform import platform
    from urbanstack.devplatform import postgres

    own = None
    if not _running_platform_postgres(settings):
        state = tempfile.mkdtemp(prefix="urbanstack-test-postgres-")
        own = Settings.from_env({"URBANSTACK_STATE_DIR": state, "URBANSTACK_POSTGRES_PORT": str(_free_port()),
                                 "URBANSTACK_READY_TIMEOUT": "120"})
        platform.up(own, ["postgres"])
    target = own or settings
    name = f"urbanstack_test_{secrets.token_hex(4)}"
    try:
        postgres.create_database(target, name)
        yield PostgresDatabase(postgres.url(target, postgres.OWNER_ROLE, name), postgres.url(target, database=name),
                               target, name)
    finally:
        try:
            postgres.drop_database(target, name)
        finally:
            if own is not None:
                platform.down(own, purge=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_urls(request, tmp_path):
    """(migration URL, application URL) of an empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
        yield url, url
        return
    database = request.getfixturevalue("metadata_postgres")
    from urbanstack.runtime.store import open_store

    yield database.owner_url, database.app_url
    owner = open_store(database.owner_url)
    try:
        owner.downgrade("base")
    finally:
        owner.close()


@pytest.fixture
def store(store_urls):
    """A migrated metadata store, connected as the application (on PostgreSQL: the app role)."""
    from urbanstack.runtime.store import open_store, upgrade

    migration_url, app_url = store_urls
    upgrade(migration_url)
    opened = open_store(app_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metadata_store(request, tmp_path_factory):
    """A migrated metadata store for a whole module of hub tests, once on each backend (the hubs'
    tests pass on SQLite and on PostgreSQL). On PostgreSQL the module gets the session's test
    database, emptied (downgraded) when the module is done."""
    from urbanstack.runtime.store import open_store, upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('metadata') / 'metadata.sqlite3'}"
        migration_url = app_url = url
    else:
        database = request.getfixturevalue("metadata_postgres")
        migration_url, app_url = database.owner_url, database.app_url
    upgrade(migration_url)
    opened = open_store(app_url)
    yield opened
    opened.close()
    if request.param == "postgresql":
        owner = open_store(migration_url)
        try:
            owner.downgrade("base")
        finally:
            owner.close()
