"""ClickHouse: the tenant's database and one table per enabled dataset; against a
server also its user, role, grants and quota.

The embedded engine (chDB) has no SQL access control, so there the database is
all we create and the API enforces tenant isolation (see operator/DESIGN.md).
"""

from __future__ import annotations

import re

from urbanstack.operator.plan import WarehousePart
from urbanstack.operator.provisioners.base import BackendUnavailable, Observed

BACKEND = "ClickHouse"

class WarehouseProvisioner:
    name = BACKEND
    condition = "WarehouseReady"

    def __init__(self, client_factory, *, embedded: bool):
        self._client_factory = client_factory
        self.embedded = embedded

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
        if not self.embedded:
            users = {row[0] for row in self._query("SELECT name FROM system.users")}
            if part.access.user not in users:
                observed.missing.append(f"user {part.access.user}")
        return observed

    def apply(self, part: WarehousePart, password: str) -> list[str]:
        actions = []
        if not self._database_exists(part.database):
            self._command(part.database_sql)
            actions.append(f"created database {part.database}")
        tables = self._tables(part.database)
        columns = self._columns(part.database)
        for table in part.tables:
            if table.name not in tables:
                self._command(table.ddl)
                actions.append(f"created table {table.name}")
                continue
            for column in table.columns:
                if column.name not in columns.get(table.name, set()):
                    self._command(table.add_column_sql(column))
                    actions.append(f"added column {table.name}.{column.name}")
            if not _has_ttl_days(tables[table.name], table.retention_days):
                self._command(table.modify_ttl_sql())
                actions.append(f"set retention of {table.name} to {table.retention_days} days")
        if not self.embedded:
            for statement in part.access.role_sql():
                self._command(statement)
            users = {row[0] for row in self._query("SELECT name FROM system.users")}
            if part.access.user not in users:
                for statement in part.access.user_sql(password, part.database):
                    self._command(statement)
                actions.append(f"created user {part.access.user}")
        return actions

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
