"""Opening the metadata store: one bounded engine per process, SQLite or PostgreSQL.

``sqlite:///<path>`` is the embedded single-process default (WAL, foreign keys on,
writers wait up to the busy timeout); ``postgresql+psycopg://user:pass@host/db`` is the
shared server. On PostgreSQL the pool is bounded and every statement has a time
limit, so one request can never exhaust the shared service. URLs are masked
(:func:`mask_url`) wherever they appear in logs or errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 5
MAX_OVERFLOW = 5
POOL_TIMEOUT = 5.0  # seconds a request waits for a free connection
STATEMENT_TIMEOUT_MS = 5000  # PostgreSQL: no statement runs longer
CONNECT_TIMEOUT = 5  # seconds
SQLITE_BUSY_TIMEOUT_MS = 5000  # SQLite: how long a writer waits for another one


class StoreError(RuntimeError):
    """The store cannot be opened or reached; the message names what to do and never a password."""


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("URBANSTACK_METADATA_URL must look like sqlite:///<path> or "
                         "postgresql+psycopg://user:password@host:port/database") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=POOL_TIMEOUT,
                               connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=POOL_TIMEOUT,
                             pool_pre_ping=True, pool_recycle=1800,
                             connect_args={"connect_timeout": CONNECT_TIMEOUT,
                                           "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                                           "application_name": "urbanstack"})
    raise StoreError(f"metadata store URL {mask_url(url)!r}: only sqlite:/// and postgresql+psycopg:// are supported")


class Store:
    """The metadata store of one process. ``session()`` is a unit of work: it commits when
    the block ends and rolls back when it raises."""

    def __init__(self, url: str, *, session_idle: timedelta = timedelta(minutes=30),
                 session_absolute: timedelta = timedelta(hours=8)):
        self.url = url
        self.engine = _engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        from urbanstack.runtime.store.audit import Audit
        from urbanstack.runtime.store.dashboards import Dashboards
        from urbanstack.runtime.store.feedback import Feedback
        from urbanstack.runtime.store.sessions import Sessions

        self.dashboards = Dashboards(self)
        self.sessions = Sessions(self, idle=session_idle, absolute=session_absolute)
        self.audit = Audit(self)
        self.feedback = Feedback(self)

    def __repr__(self) -> str:
        return f"Store({mask_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def upgrade(self, revision: str = "head") -> None:
        from urbanstack.runtime.store import migrate

        migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        from urbanstack.runtime.store import migrate

        migrate.downgrade(self.engine, revision)

    def current_revision(self) -> str | None:
        from urbanstack.runtime.store import migrate

        return migrate.current(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, **options) -> Store:
    """The store at ``url`` (not migrated: call ``upgrade()`` or :func:`upgrade` with the owner's URL)."""
    return Store(url, **options)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest)."""
    store = open_store(url)
    try:
        store.upgrade(revision)
    finally:
        store.close()
