"""ClickHouse: the tenant's database and one table per enabled dataset, each with
its hourly rollup and the materialized view feeding it; against a server also its
user, role, grants and quota.

The embedded engine (chDB) has no SQL access control, so there the database is
all we create and the API enforces tenant isolation (see operator/DESIGN.md).

Rollups. The view counts the rows ingested at or after a cutoff (``ingested_at >=
cutoff``); a one-off backfill counts the rows before it, from the table with
``FINAL``. The cutoff lies ``backfill_delay`` seconds after the view was created,
so an insert that was already running without the view has stamped its rows
before the cutoff, and the backfill waits until the cutoff has passed and no such
insert is still running. Cutoff and progress live in the rollup table's comment:
a backfill that was interrupted is deleted (its rows carry ``backfilled = 1``)
and run again, and a finished one never runs twice. A view found missing means
inserts went by uncounted: the rollup is rebuilt with a new cutoff. The API uses
a rollup only once its comment says ``backfilled``.

A rollup is first built with no cutoff (``EMPTY_SOURCE_CUTOFF``: the view counts every row).
If then no insert into its source is running and the source holds no row, nothing came in
without the view and there is nothing to backfill: the comment says ``backfilled`` at once (a
new tenant's tables, every time). Otherwise it is built again with a real cutoff as above. A
comment still saying ``EMPTY_SOURCE_CUTOFF`` after a crash is checked the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

from urbanstack.operator.plan import (EMPTY_SOURCE_CUTOFF, RollupState, WarehouseAccess, WarehousePart,
                                      WarehouseRollup, grant_sql, parse_rollup_comment, revoke_sql)
from urbanstack.operator.provisioners.base import BackendUnavailable, Diff, DiffBuilder, Difference, dispatch
from urbanstack.operator.templating import quote_identifier, render

BACKEND = "ClickHouse"
BACKFILL_DELAY_SECONDS = 2.0
FULL_LISTING_SECONDS = 900.0   # the sweep reads every table's definition again at least this often

class WarehouseProvisioner:
    name = BACKEND
    condition = "WarehouseReady"

    def __init__(self, client_factory, *, embedded: bool, backfill_delay: float = BACKFILL_DELAY_SECONDS,
                 login: Callable[[str, str], bool] | None = None):
        """``login(user, password)``: whether a ClickHouse server accepts the password (server mode)."""
        self._client_factory = client_factory
        self.embedded = embedded
        self._login = login
        self.backfill_delay = backfill_delay
        # The drift sweep's memory (snapshot, observe_from): what it read of each table, keyed by
        # (database, table) -> (metadata time, engine_full, comment, as_select, columns), and which
        # tenant compared in sync against which metadata times.
        self.full_listing_seconds = FULL_LISTING_SECONDS
        self._listing: dict[tuple[str, str], tuple] = {}
        self._listed_at = float("-inf")
        self._in_sync: dict[str, tuple[WarehousePart, tuple]] = {}

    def _client(self):
        try:
            return self._client_factory()
        except Exception as exc:  # noqa: BLE001 - any connection failure is an outage to retry
            raise BackendUnavailable(BACKEND, str(exc)[:300]) from None

    def _query(self, sql: str, **parameters):
        try:
            return self._client().query(sql, parameters=parameters or None).result_rows
        except BackendUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailable(BACKEND, f"{_first_line(exc)}") from None

    def _command(self, sql: str) -> None:
        try:
            self._client().command(sql)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc) from None

    def _tables(self, database: str) -> dict[str, str]:
        rows = self._query("SELECT name, engine_full FROM system.tables WHERE database = {db:String}", db=database)
        return {name: engine_full for name, engine_full in rows}

    def _details(self, database: str) -> dict[str, tuple[str, str]]:
        """(comment, as_select) of every table and view of the database."""
        rows = self._query("SELECT name, comment, as_select FROM system.tables WHERE database = {db:String}",
                           db=database)
        return {name: (comment, as_select) for name, comment, as_select in rows}

    def _columns(self, database: str) -> dict[str, set[str]]:
        rows = self._query("SELECT table, name FROM system.columns WHERE database = {db:String}", db=database)
        columns: dict[str, set[str]] = {}
        for table, column in rows:
            columns.setdefault(table, set()).add(column)
        return columns

    def _database_exists(self, database: str) -> bool:
        return bool(self._query("SELECT 1 FROM system.databases WHERE name = {db:String}", db=database))

    def observe(self, part: WarehousePart, credentials: Mapping[str, str]) -> Diff:
        found = DiffBuilder()
        exists = self._database_exists(part.database)
        _observe_tables(part, exists, self._tables(part.database) if exists else {},
                        self._columns(part.database) if exists else {},
                        self._details(part.database) if exists else {}, found)
        if not self.embedded:
            password = _password(part, credentials)
            rows = self._access_rows(part)
            login = self._authenticates(part.access.user, password) if rows.user is not None else None
            for difference in access_differences(part.access, part.database, rows, login):
                found.items.append(difference)
        return found.diff()

    # bulk observe (the drift sweep) -------------------------------------------
    def snapshot(self, parts: list[WarehousePart]) -> "WarehouseSnapshot":
        """The system tables the sweep compares, for all ``parts``, whatever the number of tenants:
        the databases, and every table's name and metadata time; engines, comments, view queries and
        columns are read again only for tables whose metadata changed (or all of them every
        ``full_listing_seconds``: over 12,000 tables that listing took 6 s of the engine). On a server
        six more queries on the access tables."""
        databases = sorted({part.database for part in parts})
        existing = {row[0] for row in self._query("SELECT name FROM system.databases")}
        wanted = [database for database in databases if database in existing]
        listed: dict[tuple[str, str], Any] = {}
        if wanted:
            rows = self._query("SELECT database, name, metadata_modification_time, now() FROM system.tables "
                               "WHERE database IN {dbs:Array(String)}", dbs=wanted)
            listed = {(database, name): modified for database, name, modified, _ in rows}
            server_now = rows[0][3] if rows else None
            full = time.monotonic() - self._listed_at >= self.full_listing_seconds
            stale = set(listed) if full else {key for key, modified in listed.items()
                                                if self._listing.get(key, (None,))[0] != modified}
            if stale:
                self._read_tables(stale, listed, server_now)
            if full:
                self._listed_at = time.monotonic()
        self._listing = {key: entry for key, entry in self._listing.items() if key in listed}
        tables: dict[str, dict[str, str]] = {}
        details: dict[str, dict[str, tuple[str, str]]] = {}
        columns: dict[str, dict[str, set[str]]] = {}
        versions: dict[str, list] = {}
        for (database, name), (modified, engine_full, comment, as_select, names) in self._listing.items():
            tables.setdefault(database, {})[name] = engine_full
            details.setdefault(database, {})[name] = (comment, as_select)
            columns.setdefault(database, {})[name] = set(names)
            versions.setdefault(database, []).append((name, modified))
        access = None if self.embedded else self._all_access_rows()
        return WarehouseSnapshot(databases=existing, tables=tables, columns=columns, details=details, access=access,
                                 versions={db: tuple(sorted(v)) for db, v in versions.items()})

    def _read_tables(self, keys: set[tuple[str, str]], listed: dict[tuple[str, str], Any], server_now) -> None:
        """Engine, comment, view query and columns of ``keys`` into the listing. A table changed in the
        listing's own second keeps no time, so that a second change in that second is read too."""
        databases = sorted({database for database, _ in keys})
        names = sorted({name for _, name in keys})
        read: dict[tuple[str, str], list] = {}
        for database, name, engine_full, comment, as_select in self._query(
                "SELECT database, name, engine_full, comment, as_select FROM system.tables "
                "WHERE database IN {dbs:Array(String)} AND name IN {names:Array(String)}", dbs=databases, names=names):
            if (database, name) in keys:
                read[(database, name)] = [engine_full, comment, as_select, []]
        for database, table, column in self._query(
                "SELECT database, table, name FROM system.columns "
                "WHERE database IN {dbs:Array(String)} AND table IN {names:Array(String)}", dbs=databases, names=names):
            if (database, table) in read:
                read[(database, table)][3].append(column)
        for key, (engine_full, comment, as_select, names_) in read.items():
            modified = listed[key]
            settled = server_now is None or modified is None or (server_now - modified).total_seconds() >= 2
            self._listing[key] = (modified if settled else None, engine_full, comment, as_select, frozenset(names_))

    def observe_from(self, snapshot: "WarehouseSnapshot", part: WarehousePart,
                     credentials: Mapping[str, str] | None = None) -> Diff:
        """``observe`` from the snapshot, without the login that checks the user's password. A tenant
        whose plan (the same object) and whose tables' metadata times are what they were when it last
        compared in sync is in sync without comparing again (embedded engine: no access rows)."""
        database = part.database
        version = (database in snapshot.databases, snapshot.versions.get(database))
        if snapshot.access is None:
            last = self._in_sync.get(database)
            settled = all(modified is not None for _, modified in version[1] or ())
            if last is not None and last[0] is part and last[1] == version and settled:
                return Diff()
        found = DiffBuilder()
        _observe_tables(part, database in snapshot.databases, snapshot.tables.get(database, {}),
                        snapshot.columns.get(database, {}), snapshot.details.get(database, {}), found)
        if snapshot.access is not None:
            for difference in access_differences(part.access, database, snapshot.access.rows(part), None):
                found.items.append(difference)
        diff = found.diff()
        if diff.in_sync and snapshot.access is None:
            self._in_sync[database] = (part, version)
        else:
            self._in_sync.pop(database, None)
        return diff

    def _all_access_rows(self) -> "AllAccessRows":
        return AllAccessRows(
            users={name: (bool(a), tuple(lst), db) for name, a, lst, db in self._query(
                "SELECT name, default_roles_all, default_roles_list, default_database FROM system.users")},
            grants=[tuple(row) for row in self._query(
                "SELECT coalesce(user_name, role_name), database, table, toString(access_type), user_name, role_name "
                "FROM system.grants WHERE NOT is_partial_revoke AND column IS NULL")],
            limits=[tuple(row) for row in self._query(
                "SELECT quota_name, duration, max_queries, max_errors FROM system.quota_limits")],
            quotas={name: tuple(apply_to) for name, apply_to in self._query(
                "SELECT name, apply_to_list FROM system.quotas")},
            roles={row[0] for row in self._query("SELECT name FROM system.roles")},
            role_grants=[tuple(row) for row in self._query(
                "SELECT user_name, granted_role_name FROM system.role_grants WHERE user_name IS NOT NULL")],
            row_policies=[tuple(row) for row in self._query(
                "SELECT short_name, database, table FROM system.row_policies")],
        )

    def _access_rows(self, part: WarehousePart) -> "AccessRows":
        access = part.access
        users = self._query("SELECT default_roles_all, default_roles_list, default_database FROM system.users "
                            "WHERE name = {user:String}", user=access.user)
        grants = self._query(
            "SELECT coalesce(user_name, role_name), database, table, toString(access_type) FROM system.grants "
            "WHERE NOT is_partial_revoke AND column IS NULL AND (database = {db:String} OR "
            "(database IS NULL AND (user_name = {user:String} OR role_name = {role:String})))",
            db=part.database, user=access.user, role=access.role)
        limits = self._query("SELECT duration, max_queries, max_errors FROM system.quota_limits "
                             "WHERE quota_name = {quota:String}", quota=access.quota)
        quota = self._query("SELECT apply_to_list FROM system.quotas WHERE name = {quota:String}", quota=access.quota)
        return AccessRows(
            roles={row[0] for row in self._query("SELECT name FROM system.roles WHERE name = {role:String}",
                                                 role=access.role)},
            user=(bool(users[0][0]), tuple(users[0][1]), users[0][2]) if users else None,
            user_roles={row[0] for row in self._query("SELECT granted_role_name FROM system.role_grants "
                                                      "WHERE user_name = {user:String}", user=access.user)},
            grants={(grantee, database, table, privilege) for grantee, database, table, privilege in grants},
            quota=(tuple(quota[0][0]), {int(d): (q, e) for d, q, e in limits}) if quota else None,
            row_policies={(name, database, table) for name, database, table in self._query(
                "SELECT short_name, database, table FROM system.row_policies WHERE database = {db:String}",
                db=part.database)},
        )

    def _authenticates(self, user: str, password: str) -> bool:
        """Whether the server accepts the tenant Secret's password (a hash cannot be read back)."""
        if self._login is None:
            raise RuntimeError("a ClickHouse server needs a login check for tenant passwords; give the "
                               "provisioner the server URL")
        return self._login(user, password)

    def apply(self, part: WarehousePart, diff: Diff, credentials: Mapping[str, str]) -> list[str]:
        pending: dict[str, tuple[WarehouseRollup, RollupState]] = {}
        handlers = {"execute": self._execute, "rebuild_rollup": self._rebuild_rollup,
                    "modify_view": self._modify_view, "backfill": self._schedule_backfill,
                    "create_user": self._create_user}
        actions = dispatch(BACKEND, handlers, diff, part, credentials, pending)
        if pending:
            actions += self._backfills(list(pending.values()))
        return actions

    def _execute(self, difference: Difference, part: WarehousePart, credentials, pending) -> str:
        for statement in difference.payload:
            self._command(statement)
        return f"repaired {difference}"

    def _create_user(self, difference: Difference, part: WarehousePart, credentials, pending) -> str:
        for statement in part.access.user_sql(_password(part, credentials), part.database):
            self._command(statement)
        return f"set user {part.access.user} ({difference.attribute}) from the tenant Secret"

    def _now(self) -> datetime:
        (value,), = self._query("SELECT now64(3, 'UTC')")
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def _rebuild_rollup(self, difference: Difference, part: WarehousePart, credentials, pending) -> str:
        """New, its view was lost (inserts went by uncounted) or its table was (it counts rows that are
        gone): a new table and view counting every row, and the source checked for rows the view
        did not see (``_backfills``)."""
        rollup: WarehouseRollup = difference.payload
        state = RollupState(cutoff=EMPTY_SOURCE_CUTOFF, backfilled=False)
        self._build_rollup(rollup, state)
        pending[rollup.name] = (rollup, state)
        return f"built rollup {rollup.name} and view {rollup.view}"

    def _build_rollup(self, rollup: WarehouseRollup, state: RollupState) -> None:
        # A new table, so that no insert still running through an old view can add to it.
        for statement in rollup.drop_sql():
            self._command(statement)
        self._command(rollup.ddl(state))
        self._command(rollup.view_sql(state))

    def _settle_empty_source(self, rollup: WarehouseRollup) -> RollupState | None:
        """A rollup built with no cutoff: done if no row can have come in without its view (no insert
        into the source is running, then the source is empty: in this order, so that an insert
        finishing in between leaves its rows to be seen); else built again with a real cutoff for the
        usual backfill, whose state is returned."""
        if not self._inserts_running(rollup, older_than=0.0):
            (rows,), = self._query(
                f"SELECT count() FROM {quote_identifier(rollup.database)}.{quote_identifier(rollup.source)}")
            if not rows:
                self._command(rollup.comment_sql(RollupState(cutoff=EMPTY_SOURCE_CUTOFF, backfilled=True)))
                return None
        state = RollupState(cutoff=self._now() + timedelta(seconds=self.backfill_delay), backfilled=False)
        self._build_rollup(rollup, state)
        return state

    def _inserts_running(self, rollup: WarehouseRollup, *, older_than: float) -> int:
        """Inserts into the rollup's source running for at least ``older_than`` seconds (by the text
        of the query: one naming the database and the table)."""
        (running,), = self._query(
            "SELECT count() FROM system.processes WHERE query_kind = 'Insert' AND elapsed >= {age:Float64} "
            "AND positionCaseInsensitive(query, {table:String}) > 0 "
            "AND positionCaseInsensitive(query, {database:String}) > 0",
            age=older_than, table=rollup.source, database=rollup.database)
        return running

    def _modify_view(self, difference: Difference, part: WarehousePart, credentials, pending) -> str:
        rollup, state = difference.payload
        self._command(rollup.modify_view_sql(state))
        return f"updated the query of view {rollup.view}"

    def _schedule_backfill(self, difference: Difference, part: WarehousePart, credentials, pending) -> None:
        rollup, state = difference.payload
        pending[rollup.name] = (rollup, state)

    def _backfills(self, pending: list[tuple[WarehouseRollup, RollupState]]) -> list[str]:
        actions: list[str] = []
        timed: list[tuple[WarehouseRollup, RollupState]] = []
        for rollup, state in pending:
            if state.cutoff != EMPTY_SOURCE_CUTOFF:
                timed.append((rollup, state))
                continue
            settled = self._settle_empty_source(rollup)
            if settled is None:
                actions.append(f"rollup {rollup.name}: its table was empty, nothing to backfill")
            else:
                actions.append(f"rollup {rollup.name}: its table has rows from before the view, rebuilt with "
                               f"a cutoff to backfill them")
                timed.append((rollup, settled))
        if not timed:
            return actions
        wait = (max(state.cutoff for _, state in timed) - self._now()).total_seconds()
        if 0 < wait <= self.backfill_delay:
            time.sleep(wait)
        for rollup, state in timed:
            actions += self._backfill(rollup, state)
        return actions

    def _backfill(self, rollup: WarehouseRollup, state: RollupState) -> list[str]:
        now = self._now()
        if now < state.cutoff:
            return [f"rollup {rollup.name}: backfill waits until {state.cutoff.isoformat()}"]
        # An insert that started before the view existed may still stamp rows after the cutoff.
        started_before = (now - state.cutoff).total_seconds() + self.backfill_delay
        running = self._inserts_running(rollup, older_than=started_before)
        if running:
            return [f"rollup {rollup.name}: backfill waits for {running} insert(s) older than its view"]
        self._command(rollup.clear_backfill_sql())   # what an interrupted backfill left behind
        self._command(rollup.backfill_sql(state))
        done = RollupState(cutoff=state.cutoff, backfilled=True)
        self._command(rollup.comment_sql(done))
        self._command(rollup.modify_view_sql(done))
        return [f"backfilled rollup {rollup.name}"]

    def delete(self, part: WarehousePart, *, keep_data: bool) -> list[str]:
        actions = []
        if not self.embedded:
            access = part.access
            for statement in (f"DROP USER IF EXISTS `{access.user}`", f"DROP QUOTA IF EXISTS `{access.quota}`",
                              f"DROP ROLE IF EXISTS `{access.role}`",
                              *((f"DROP ROLE IF EXISTS `{access.legacy_role}`",) if access.legacy_role else ())):
                self._command(statement)
            actions.append(f"dropped user {access.user}, its role and quota")
        if not keep_data and self._database_exists(part.database):
            self._command(f"DROP DATABASE IF EXISTS `{part.database}`")
            actions.append(f"dropped database {part.database}")
        return actions

def _observe_tables(part: WarehousePart, exists: bool, tables: dict[str, str], columns: dict[str, set[str]],
                    details: dict[str, tuple[str, str]], found: DiffBuilder) -> None:
    """Database, tables, columns, TTLs and rollups against the plan (from live reads or a snapshot)."""
    if not exists:
        found.add(f"database {part.database}", "exists", True, False, "execute", (part.database_sql,))
    for table in part.tables:
        obj = f"table {table.name}"
        if table.name not in tables:
            found.add(obj, "exists", True, False, "execute", (table.ddl,))
            if table.rollup is not None:
                # A rollup of a table that is gone counts rows that are gone: it is built anew.
                found.add(f"rollup {table.rollup.name}", "source", f"table {table.name}", "recreated",
                          "rebuild_rollup", table.rollup)
            continue
        for column in table.columns:
            if column.name not in columns.get(table.name, set()):
                found.add(obj, f"column {column.name}", column.type, None, "execute",
                          (table.add_column_sql(column),))
        if not _has_ttl_days(tables[table.name], table.retention_days):
            found.add(obj, "retention", f"{table.retention_days} days", _ttl_text(tables[table.name]),
                      "execute", (table.modify_ttl_sql(),))
        if table.rollup is not None:
            _observe_rollup(table.rollup, tables, columns, details, found)


@dataclass(frozen=True)
class AllAccessRows:
    """The access tables of a ClickHouse server, whole (one read per sweep)."""
    users: dict[str, tuple[bool, tuple[str, ...], str | None]]
    grants: list[tuple]          # (grantee, database, table, privilege, user_name, role_name)
    limits: list[tuple]          # (quota, duration, max_queries, max_errors)
    quotas: dict[str, tuple[str, ...]]
    roles: set[str]
    role_grants: list[tuple]     # (user, role)
    row_policies: list[tuple]    # (short_name, database, table)

    def rows(self, part: WarehousePart) -> "AccessRows":
        """One tenant's ``AccessRows``, selected as ``WarehouseProvisioner._access_rows`` queries them."""
        access, database = part.access, part.database
        grants = {g[:4] for g in self.grants if g[1] == database or (g[1] is None and (g[4] == access.user
                                                                                     or g[5] == access.role))}
        limits = {int(d): (q, e) for name, d, q, e in self.limits if name == access.quota}
        return AccessRows(
            roles={access.role} & self.roles, user=self.users.get(access.user),
            user_roles={role for user, role in self.role_grants if user == access.user}, grants=grants,
            quota=(self.quotas[access.quota], limits) if access.quota in self.quotas else None,
            row_policies={p for p in self.row_policies if p[1] == database})


@dataclass(frozen=True)
class WarehouseSnapshot:
    databases: set[str]
    tables: dict[str, dict[str, str]]                     # database -> table -> engine_full
    columns: dict[str, dict[str, set[str]]]               # database -> table -> columns
    details: dict[str, dict[str, tuple[str, str]]]        # database -> table -> (comment, as_select)
    access: AllAccessRows | None                          # server mode only
    versions: dict[str, tuple] = field(default_factory=dict)   # database -> ((table, metadata time), ...)


def _observe_rollup(rollup: WarehouseRollup, tables: dict[str, str], columns: dict[str, set[str]],
                    details: dict[str, tuple[str, str]], found: DiffBuilder) -> None:
    obj = f"rollup {rollup.name}"
    if rollup.name not in tables or rollup.view not in tables:
        missing = rollup.name if rollup.name not in tables else rollup.view
        found.add(obj, "exists", f"table and view {rollup.view}", f"{missing} missing", "rebuild_rollup", rollup)
        return
    state = parse_rollup_comment(details.get(rollup.name, ("", ""))[0])
    if state is None:
        found.add(obj, "state comment", "cutoff and backfill state", "unreadable", "rebuild_rollup", rollup)
        return
    for column in rollup.columns:
        if column.name not in columns.get(rollup.name, set()):
            found.add(obj, f"column {column.name}", column.type, None, "execute", (rollup.add_column_sql(column),))
    if not _view_is_current(rollup, details.get(rollup.view, ("", ""))[1], state):
        found.add(f"view {rollup.view}", "query", "every measure, cutoff filter while the backfill is pending",
                  "different", "modify_view", (rollup, state))
    if not _has_ttl_days(tables[rollup.name], rollup.retention_days):
        found.add(obj, "retention", f"{rollup.retention_days} days", _ttl_text(tables[rollup.name]), "execute",
                  (rollup.modify_ttl_sql(),))
    if not state.backfilled:
        found.add(obj, "backfill", "done", "pending", "backfill", (rollup, state))


@dataclass(frozen=True)
class AccessRows:
    """What a ClickHouse server's system tables say about one tenant's access."""
    roles: set[str]                                          # system.roles, the tenant role if present
    user: tuple[bool, tuple[str, ...], str | None] | None    # system.users: (default_roles_all, list, database)
    user_roles: set[str]                                     # system.role_grants of the user
    grants: set[tuple[str, str | None, str | None, str]]     # system.grants (grantee, database, table, privilege)
    quota: tuple[tuple[str, ...], dict[int, tuple]] | None   # apply_to_list, {duration: (max_queries, max_errors)}
    row_policies: set[tuple[str, str, str]]                  # (short_name, database, table) on the tenant database


def access_differences(access: WarehouseAccess, database: str, rows: AccessRows,
                       login: bool | None) -> list[Difference]:
    """The statements that make a server's access rows what the plan says (pure: tests feed it rows).

    Owned here: every grant on the tenant's database, whoever the grantee (shares included; a share
    taken back is revoked), and global grants to the tenant's user or role. Grants the tenant's role
    holds on other databases are those tenants' shares and are theirs to manage."""
    found = DiffBuilder()
    if access.role not in rows.roles:
        found.add(f"role {access.role}", "exists", True, False, "execute", (access.role_sql(),))
    limits = {3600: (access.queries_per_hour, access.errors_per_hour)}
    have_quota = rows.quota or ((), {})
    if rows.quota is None:
        found.add(f"quota {access.quota}", "exists", True, False, "execute", (access.quota_sql(),))
    elif tuple(have_quota[0]) != (access.role,) or have_quota[1] != limits:
        found.add(f"quota {access.quota}", "limits", f"{limits} for {access.role}",
                  f"{have_quota[1]} for {', '.join(have_quota[0]) or 'nobody'}", "execute", (access.quota_sql(),))
    wanted = access.privileges()
    owned = {grant for grant in rows.grants
             if grant[1] == database or (grant[1] is None and grant[0] in (access.user, access.role))}
    for grantee, db, table, privilege in sorted(wanted - owned, key=str):
        found.add(f"grant {privilege} on {db}.{table or '*'}", f"to {grantee}", "granted", "absent", "execute",
                  (grant_sql(grantee, db, table, privilege),))
    for grantee, db, table, privilege in sorted(owned - wanted, key=str):
        where = "*.*" if db is None else f"{db}.{table or '*'}"
        found.add(f"grant {privilege} on {where}", f"to {grantee}", "absent", "granted", "execute",
                  (revoke_sql(grantee, db, table, privilege),))
    for name, db, table in sorted(rows.row_policies):
        found.add(f"row policy {name} on {db}.{table}", "exists", False, True, "execute",
                  (render("clickhouse/drop_row_policy.sql.j2", name=name, database=db, table=table),))
    user = f"user {access.user}"
    if rows.user is None:
        found.add(user, "exists", True, False, "create_user")
    else:
        roles_all, default_roles, default_database = rows.user
        if roles_all or tuple(default_roles) != (access.role,) or default_database != database:
            found.add(user, "defaults", f"role {access.role}, database {database}",
                      f"role {'ALL' if roles_all else ', '.join(default_roles) or 'none'}, "
                      f"database {default_database or 'none'}", "create_user")
        elif login is False:
            found.add(user, "password", "the tenant Secret's password authenticates", "rejected", "create_user")
        elif access.role not in rows.user_roles:
            found.add(user, f"role {access.role}", "granted", "absent", "execute",
                      (render("clickhouse/grant_role.sql.j2", role=access.role, user=access.user),))
        for role in sorted(rows.user_roles - {access.role}):
            found.add(user, f"role {role}", "absent", "granted", "execute",
                      (render("clickhouse/revoke_role.sql.j2", role=role, user=access.user),))
    return found.items


def _view_is_current(rollup: WarehouseRollup, as_select: str, state: RollupState | None) -> bool:
    """Whether the view's query computes every rollup column (a field added later needs its own) and
    filters on the cutoff exactly while the backfill is pending."""
    filtered = re.search(r"\bWHERE\b", as_select) is not None
    if state is not None and filtered == state.unfiltered:
        return False
    return all(re.search(rf"\bAS `?{re.escape(m.column)}`?(?![A-Za-z0-9_])", as_select) for m in rollup.measures)


def _has_ttl_days(engine_full: str, days: int) -> bool:
    return re.search(rf"toIntervalDay\({days}\)", engine_full) is not None


def _ttl_text(engine_full: str) -> str:
    days = re.search(r"toIntervalDay\((\d+)\)", engine_full)
    return f"{days.group(1)} days" if days else "no day TTL"


def _password(part: WarehousePart, credentials: Mapping[str, str]) -> str:
    password = credentials.get(part.access.password_key)
    if not password:
        raise RuntimeError(f"the tenant Secret has no key {part.access.password_key!r} for ClickHouse user "
                           f"{part.access.user}; the runtime provisioner creates it")
    return password


def server_login(url: str) -> Callable[[str, str], bool]:
    """A login check against the ClickHouse server at ``url`` (its own credentials are not used)."""
    parts = urlsplit(url)

    def login(user: str, password: str) -> bool:
        try:
            client = clickhouse_connect.get_client(host=parts.hostname, port=parts.port,
                                                   secure=parts.scheme == "https", username=user, password=password,
                                                   connect_timeout=10)
            client.close()
            return True
        except Exception as exc:  # noqa: BLE001 - classified below
            if re.search(r"Code: (516|192)\b|AUTHENTICATION_FAILED|UNKNOWN_USER", str(exc)):
                return False
            raise BackendUnavailable(BACKEND, f"checking the password of {user}: {_first_line(exc)}") from None

    return login

def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__

def _classify(exc: Exception) -> Exception:
    text = str(exc)
    # Syntax or schema errors are ours to fix, not an outage to wait out.
    if re.search(r"Code: (62|36|44|47|57|60|81|115|117)\b", text):
        return RuntimeError(f"ClickHouse rejected a statement: {_first_line(exc)}")
    return BackendUnavailable(BACKEND, _first_line(exc))
