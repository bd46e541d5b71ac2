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
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from urbanstack.operator.plan import RollupState, WarehousePart, WarehouseRollup, parse_rollup_comment
from urbanstack.operator.provisioners.base import BackendUnavailable, Observed

BACKEND = "ClickHouse"
BACKFILL_DELAY_SECONDS = 2.0

class WarehouseProvisioner:
    name = BACKEND
    condition = "WarehouseReady"

    def __init__(self, client_factory, *, embedded: bool, backfill_delay: float = BACKFILL_DELAY_SECONDS):
        self._client_factory = client_factory
        self.embedded = embedded
        self.backfill_delay = backfill_delay

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

    def observe(self, part: WarehousePart) -> Observed:
        observed = Observed()
        if not self._database_exists(part.database):
            observed.missing.append(f"database {part.database}")
            observed.missing += [f"table {t.name}" for t in part.tables]
            return observed
        tables = self._tables(part.database)
        columns = self._columns(part.database)
        for table in part.tables:
            if table.name not in tables:
                observed.missing.append(f"table {table.name}")
                continue
            if not _has_ttl_days(tables[table.name], table.retention_days):
                observed.drifted.append(f"table {table.name} retention")
            for column in table.columns:
                if column.name not in columns.get(table.name, set()):
                    observed.drifted.append(f"table {table.name} column {column.name}")
            if table.rollup is not None:
                self._observe_rollup(table.rollup, tables, columns, observed)
        if not self.embedded:
            users = {row[0] for row in self._query("SELECT name FROM system.users")}
            if part.access.user not in users:
                observed.missing.append(f"user {part.access.user}")
        return observed

    def _observe_rollup(self, rollup: WarehouseRollup, tables: dict[str, str], columns: dict[str, set[str]],
                        observed: Observed) -> None:
        if rollup.name not in tables or rollup.view not in tables:
            observed.missing.append(f"rollup {rollup.name}" if rollup.name not in tables else f"view {rollup.view}")
            return
        details = self._details(rollup.database)
        comment, view_select = details.get(rollup.name, ("", ""))[0], details.get(rollup.view, ("", ""))[1]
        state = parse_rollup_comment(comment)
        if state is None or not state.backfilled:
            observed.drifted.append(f"rollup {rollup.name} backfill pending")
        for column in rollup.columns:
            if column.name not in columns.get(rollup.name, set()):
                observed.drifted.append(f"rollup {rollup.name} column {column.name}")
        if not _view_is_current(rollup, view_select, state):
            observed.drifted.append(f"view {rollup.view} query")
        if not _has_ttl_days(tables[rollup.name], rollup.retention_days):
            observed.drifted.append(f"rollup {rollup.name} retention")

    def apply(self, part: WarehousePart, password: str) -> list[str]:
        actions = []
        if not self._database_exists(part.database):
            self._command(part.database_sql)
            actions.append(f"created database {part.database}")
        tables = self._tables(part.database)
        columns = self._columns(part.database)
        created: set[str] = set()
        for table in part.tables:
            if table.name not in tables:
                self._command(table.ddl)
                actions.append(f"created table {table.name}")
                created.add(table.name)
                continue
            for column in table.columns:
                if column.name not in columns.get(table.name, set()):
                    self._command(table.add_column_sql(column))
                    actions.append(f"added column {table.name}.{column.name}")
            if not _has_ttl_days(tables[table.name], table.retention_days):
                self._command(table.modify_ttl_sql())
                actions.append(f"set retention of {table.name} to {table.retention_days} days")
        rollups = [table.rollup for table in part.tables if table.rollup is not None]
        if rollups:
            actions += self._apply_rollups(part.database, rollups, created)
        if not self.embedded:
            for statement in part.access.role_sql():
                self._command(statement)
            users = {row[0] for row in self._query("SELECT name FROM system.users")}
            if part.access.user not in users:
                for statement in part.access.user_sql(password, part.database):
                    self._command(statement)
                actions.append(f"created user {part.access.user}")
        return actions

    def _now(self) -> datetime:
        (value,), = self._query("SELECT now64(3, 'UTC')")
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def _apply_rollups(self, database: str, rollups: list[WarehouseRollup], created: set[str]) -> list[str]:
        actions: list[str] = []
        tables = self._tables(database)
        columns = self._columns(database)
        details = self._details(database)
        states: dict[str, RollupState] = {}
        for rollup in rollups:
            state = parse_rollup_comment(details.get(rollup.name, ("", ""))[0]) if rollup.name in tables else None
            if rollup.view not in tables or state is None or rollup.source in created:
                # New, the view was lost (inserts went by uncounted) or its table was (the rollup counts rows
                # that are gone): count everything again.
                state = RollupState(cutoff=self._now() + timedelta(seconds=self.backfill_delay), backfilled=False)
                if rollup.name in tables or rollup.view in tables:
                    # A new table, so that no insert still running through the old view can add to it.
                    for statement in rollup.drop_sql():
                        self._command(statement)
                    actions.append(f"dropped rollup {rollup.name} to rebuild it")
                self._command(rollup.ddl(state))
                self._command(rollup.view_sql(state))
                actions.append(f"created rollup {rollup.name} and view {rollup.view}")
            else:
                self._sync_rollup_columns(rollup, columns.get(rollup.name, set()), actions)
                if not _view_is_current(rollup, details.get(rollup.view, ("", ""))[1], state):
                    self._command(rollup.modify_view_sql(state))
                    actions.append(f"updated the query of view {rollup.view}")
                if not _has_ttl_days(tables[rollup.name], rollup.retention_days):
                    self._command(rollup.modify_ttl_sql())
                    actions.append(f"set retention of {rollup.name} to {rollup.retention_days} days")
            if not state.backfilled:
                states[rollup.name] = state
        if states:
            wait = (max(state.cutoff for state in states.values()) - self._now()).total_seconds()
            if 0 < wait <= self.backfill_delay:
                time.sleep(wait)
            for rollup in rollups:
                if rollup.name in states:
                    actions += self._backfill(rollup, states[rollup.name])
        return actions

    def _sync_rollup_columns(self, rollup: WarehouseRollup, present: set[str], actions: list[str]) -> None:
        for column in rollup.columns:
            if column.name not in present:
                self._command(rollup.add_column_sql(column))
                actions.append(f"added column {rollup.name}.{column.name}")

    def _backfill(self, rollup: WarehouseRollup, state: RollupState) -> list[str]:
        now = self._now()
        if now < state.cutoff:
            return [f"rollup {rollup.name}: backfill waits until {state.cutoff.isoformat()}"]
        # An insert that started before the view existed may still stamp rows after the cutoff.
        started_before = (now - state.cutoff).total_seconds() + self.backfill_delay
        (running,), = self._query(
            "SELECT count() FROM system.processes WHERE query_kind = 'Insert' AND elapsed >= {age:Float64} "
            "AND positionCaseInsensitive(query, {table:String}) > 0", age=started_before, table=rollup.source)
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
                              f"DROP ROLE IF EXISTS `{access.role}`"):
                self._command(statement)
            actions.append(f"dropped user {access.user}, its role and quota")
        if not keep_data and self._database_exists(part.database):
            self._command(f"DROP DATABASE IF EXISTS `{part.database}`")
            actions.append(f"dropped database {part.database}")
        return actions

def _view_is_current(rollup: WarehouseRollup, as_select: str, state: RollupState | None) -> bool:
    """Whether the view's query computes every rollup column (a field added later needs its own) and
    filters on the cutoff exactly while the backfill is pending."""
    filtered = re.search(r"\bWHERE\b", as_select) is not None
    if state is not None and filtered == state.backfilled:
        return False
    return all(re.search(rf"\bAS `?{re.escape(m.column)}`?(?![A-Za-z0-9_])", as_select) for m in rollup.measures)


def _has_ttl_days(engine_full: str, days: int) -> bool:
    return re.search(rf"toIntervalDay\({days}\)", engine_full) is not None

def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__

def _classify(exc: Exception) -> Exception:
    text = str(exc)
    # Syntax or schema errors are ours to fix, not an outage to wait out.
    if re.search(r"Code: (62|36|44|47|57|60|81|115|117)\b", text):
        return RuntimeError(f"ClickHouse rejected a statement: {_first_line(exc)}")
    return BackendUnavailable(BACKEND, _first_line(exc))
