"""The warehouse provisioner's server mode against the real ClickHouse engine (chDB).

chDB cannot enable SQL access control (CREATE USER/ROLE/QUOTA, GRANT and the access
system tables are refused), so here chDB stands in for a server this far:

- databases, tables, columns, TTLs, rollups and views: run for real;
- the reads of ``system.users/roles/role_grants/grants/quotas/quota_limits/row_policies``:
  planned by the engine (``EXPLAIN PLAN``: the tables, columns and types exist and the
  query is valid) and answered with rows the test gives, as a server would;
- CREATE ROLE/USER/QUOTA, GRANT, REVOKE, DROP ROW POLICY: parsed by the engine
  (``EXPLAIN AST``) and recorded, not executed.

What cannot run here at all: executing the access statements and reading their effect
back, and the password login check (``server_login``), which needs a server."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pytest

from test_warehouse_rollup import _town, _tool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner

pytestmark = pytest.mark.platform

ACCESS_STATEMENT = re.compile(r"^(CREATE (ROLE|USER|QUOTA)|GRANT|REVOKE|DROP (ROW POLICY|USER|QUOTA|ROLE))\b")
SECRET = "tenant-secret-password-0123456789"


class ServerOnChdb:
    """A client that behaves like one connected to a ClickHouse server, as far as chDB can."""

    def __init__(self, chdb):
        self.chdb = chdb
        self.rows: dict[str, list] = {}
        self.access: list[str] = []

    def query(self, sql: str, parameters=None):
        table = re.search(r"FROM (system\.(users|roles|role_grants|grants|quotas|quota_limits|row_policies))\b", sql)
        if table:
            self.chdb.query("EXPLAIN PLAN " + sql, parameters=parameters)
            return SimpleNamespace(result_rows=self.rows.get(table.group(1), []))
        return self.chdb.query(sql, parameters=parameters)

    def command(self, sql: str):
        if ACCESS_STATEMENT.match(sql):
            assert self.chdb.query("EXPLAIN AST " + sql).result_rows, sql
            self.access.append(sql)
            return None
        return self.chdb.command(sql)

    def in_sync_with(self, part) -> None:
        """System-table rows of a server where ``part``'s access is exactly as planned."""
        access = part.access
        self.rows = {
            "system.roles": [(access.role,)],
            "system.users": [(0, [access.role], part.database)],
            "system.role_grants": [(access.role,)],
            "system.grants": sorted(access.privileges(), key=str),
            "system.quotas": [([access.role],)],
            "system.quota_limits": [(3600, access.queries_per_hour, access.errors_per_hour)],
            "system.row_policies": [],
        }


@pytest.fixture
def server(warehouse):
    slug = f"srv-{uuid.uuid4().hex[:8]}"
    client = ServerOnChdb(warehouse)
    logins: list[bool] = [True]
    provisioner = WarehouseProvisioner(lambda: client, embedded=False, backfill_delay=0.3,
                                       login=lambda user, password: logins[-1])
    yield SimpleNamespace(slug=slug, client=client, provisioner=provisioner, logins=logins,
                          part=lambda **spec: plan(_town(slug, **spec), [_tool()]).warehouse)
    warehouse.command(f"DROP DATABASE IF EXISTS `{slug.replace('-', '_')}`")


def _reconcile(server, part):
    """One reconcile: observe, apply that diff; the access statements it sent."""
    server.client.access.clear()
    diff = server.provisioner.observe(part, {part.access.password_key: SECRET})
    server.provisioner.apply(part, diff, {part.access.password_key: SECRET})
    return diff, list(server.client.access)


def test_a_new_tenant_gets_database_tables_and_its_access(server, warehouse):
    part = server.part()
    diff, statements = _reconcile(server, part)
    tables = {row[0] for row in warehouse.query("SELECT name FROM system.tables WHERE database = {db:String}",
                                                parameters={"db": part.database}).result_rows}
    assert tables == {part.tables[0].name, part.tables[0].rollup.name, part.tables[0].rollup.view}
    access = part.access
    assert statements[0] == f"CREATE ROLE IF NOT EXISTS `{access.role}`"
    assert statements[1].startswith(f"CREATE QUOTA OR REPLACE `{access.quota}`")
    assert f"GRANT SELECT ON `{part.database}`.* TO `{access.role}`" in statements
    assert f"GRANT INSERT ON `{part.database}`.* TO `{access.role}`" in statements
    assert statements[-2].startswith(f"CREATE USER OR REPLACE `{access.user}` IDENTIFIED WITH sha256_hash")
    assert statements[-1] == f"GRANT `{access.role}` TO `{access.user}`"
    assert not any(SECRET in s for s in statements) and SECRET not in diff.summary()


def test_in_sync_server_is_left_alone(server):
    part = server.part()
    _reconcile(server, part)
    server.client.in_sync_with(part)
    diff, statements = _reconcile(server, part)
    assert diff.in_sync and statements == []


def test_suspension_revokes_insert_and_resuming_grants_it(server):
    active = server.part()
    _reconcile(server, active)
    server.client.in_sync_with(active)
    suspended = server.part(suspended=True)
    assert _reconcile(server, suspended)[1] == [f"REVOKE INSERT ON `{active.database}`.* FROM `{active.access.role}`"]
    server.client.in_sync_with(suspended)
    assert _reconcile(server, active)[1] == [f"GRANT INSERT ON `{active.database}`.* TO `{active.access.role}`"]


def test_shares_are_granted_and_taken_back(server):
    alone = server.part()
    _reconcile(server, alone)
    server.client.in_sync_with(alone)
    sharing = server.part(shares=[{"tool": "probe-tool", "dataset": "gauges", "municipalities": ["bielefeld"]}])
    table, rollup = sharing.tables[0].name, sharing.tables[0].rollup.name
    granted = _reconcile(server, sharing)[1]
    assert sorted(granted) == sorted(f"GRANT SELECT ON `{sharing.database}`.`{name}` TO `muni_bielefeld__role`"
                                     for name in (table, rollup))
    server.client.in_sync_with(sharing)
    revoked = _reconcile(server, alone)[1]
    assert sorted(revoked) == sorted(s.replace("GRANT", "REVOKE").replace(" TO ", " FROM ") for s in granted)


def test_quota_row_policy_and_password_drift_are_repaired(server):
    part = server.part()
    _reconcile(server, part)
    server.client.in_sync_with(part)
    server.client.rows["system.quota_limits"] = [(3600, 5, 50)]
    server.client.rows["system.row_policies"] = [("hide", part.database, part.tables[0].name)]
    server.logins.append(False)  # someone changed the user's password
    diff, statements = _reconcile(server, part)
    assert [(d.object, d.attribute) for d in diff] == [
        (f"quota {part.access.quota}", "limits"),
        (f"row policy hide on {part.database}.{part.tables[0].name}", "exists"),
        (f"user {part.access.user}", "password")]
    assert statements[0] == part.access.quota_sql()
    assert statements[1] == f"DROP ROW POLICY IF EXISTS `hide` ON `{part.database}`.`{part.tables[0].name}`"
    assert statements[2:] == list(part.access.user_sql(SECRET, part.database))


@pytest.mark.parametrize("drift,obj,attribute", [
    ("DROP TABLE `{db}`.`{table}` SYNC", "table {table}", "exists"),
    ("ALTER TABLE `{db}`.`{table}` DROP COLUMN lon", "table {table}", "column lon"),  # the view guards the others
    ("ALTER TABLE `{db}`.`{table}` MODIFY TTL toDateTime(observed_at) + INTERVAL 7 DAY", "table {table}",
     "retention"),
    ("DROP TABLE `{db}`.`{view}` SYNC", "rollup {rollup}", "exists"),
    ("ALTER TABLE `{db}`.`{rollup}` MODIFY TTL hour + INTERVAL 7 DAY", "rollup {rollup}", "retention"),
    ("ALTER TABLE `{db}`.`{rollup}` MODIFY COMMENT 'not ours'", "rollup {rollup}", "state comment"),
    ("DROP DATABASE `{db}` SYNC", "database {db}", "exists"),
])
def test_each_drifted_table_attribute_is_observed_and_repaired_for_real(server, warehouse, drift, obj, attribute):
    part = server.part()
    _reconcile(server, part)
    server.client.in_sync_with(part)
    names = dict(db=part.database, table=part.tables[0].name, rollup=part.tables[0].rollup.name,
                 view=part.tables[0].rollup.view)
    warehouse.command(drift.format(**names))
    diff = server.provisioner.observe(part, {part.access.password_key: SECRET})
    assert diff.about(obj.format(**names), attribute), diff.summary()
    server.provisioner.apply(part, diff, {part.access.password_key: SECRET})
    assert server.provisioner.observe(part, {part.access.password_key: SECRET}).in_sync
