"""The hourly rollup the operator keeps next to every dataset table, against the real
ClickHouse engine (chDB, or a server when URBANSTACK_WAREHOUSE_URL names one):
the materialized view counts each insert once, a replayed batch not at all, a table
from before the rollup existed is backfilled exactly once, a new field reaches the
rollup and its view, and a lost view is rebuilt."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

from urbanstack.operator.models import CityTool, Municipality
from urbanstack.operator.plan import EMPTY_SOURCE_CUTOFF, RollupState, parse_rollup_comment, plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner

pytestmark = pytest.mark.platform

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 30, 22, 0, tzinfo=UTC)
COLUMNS = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", "level", "temperature"]


def _tool(extra_fields: list[dict] | None = None) -> CityTool:
    fields = [{"name": "level", "type": "Int32", "required": True, "unit": "cm"},
              {"name": "temperature", "type": "Float64", "unit": "°C"}] + (extra_fields or [])
    return CityTool.model_validate({
        "metadata": {"name": "probe-tool"},
        "spec": {"displayName": "Probe", "version": "1.0.0", "owner": "platform", "audience": "gov",
                 "datasets": [{"name": "gauges", "retentionDays": 3650, "fields": fields}]}})


def _town(slug: str, **spec) -> Municipality:
    return Municipality.model_validate({
        "metadata": {"name": slug},
        "spec": {"displayName": slug, "ags": "05754008", "admins": [f"ops@{slug}.example.org"],
                 "tools": [{"name": "probe-tool"}]} | spec})


def _rows(prefix: str, count: int, start: dt.datetime = T0) -> list[list]:
    rows = []
    for i in range(count):
        temperature = None if i % 5 == 0 else 0.25 * (i % 40) - 3
        rows.append([f"{prefix}-{i}", "probe", f"s{i % 3}", start + dt.timedelta(minutes=7 * i), None, None,
                     i % 11 - 4, temperature])
    return rows


class Tenant:
    def __init__(self, warehouse, tool: CityTool | None = None):
        self.slug = f"rollup-{uuid.uuid4().hex[:8]}"
        self.warehouse = warehouse
        self.part = plan(_town(self.slug), [tool or _tool()]).warehouse
        self.table = self.part.tables[0]
        self.rollup = self.table.rollup
        self.provisioner = WarehouseProvisioner(lambda: warehouse, embedded=True, backfill_delay=0.3)

    def replan(self, tool: CityTool) -> None:
        self.part = plan(_town(self.slug), [tool]).warehouse
        self.table, self.rollup = self.part.tables[0], self.part.tables[0].rollup

    def insert(self, rows: list[list], token: str | None = None) -> None:
        settings = {"insert_deduplication_token": token} if token else None
        self.warehouse.insert(self.table.name, rows, database=self.part.database, column_names=COLUMNS,
                              settings=settings)

    def from_table(self) -> list[tuple]:
        return self.warehouse.query(
            f"SELECT sensor_id, toStartOfHour(observed_at) AS hour, count(), count(temperature), sum(temperature), "
            f"min(temperature), max(temperature), sum(level), min(level), max(level) "
            f"FROM `{self.part.database}`.`{self.table.name}` FINAL GROUP BY sensor_id, hour "
            f"ORDER BY sensor_id, hour").result_rows

    def from_rollup(self) -> list[tuple]:
        return self.warehouse.query(
            f"SELECT sensor_id, hour, sum(rows), sum(temperature__count), sum(temperature__sum), "
            f"min(temperature__min), max(temperature__max), sum(level__sum), min(level__min), max(level__max) "
            f"FROM `{self.part.database}`.`{self.rollup.name}` GROUP BY sensor_id, hour "
            f"ORDER BY sensor_id, hour").result_rows

    def state(self) -> RollupState | None:
        rows = self.warehouse.query("SELECT comment FROM system.tables WHERE database = {db:String} "
                                    "AND name = {t:String}",
                                    parameters={"db": self.part.database, "t": self.rollup.name}).result_rows
        return parse_rollup_comment(rows[0][0]) if rows else None

    def drop(self) -> None:
        self.provisioner.delete(self.part, keep_data=False)


@pytest.fixture
def tenant(warehouse):
    made = Tenant(warehouse)
    yield made
    made.drop()


def test_every_insert_reaches_the_rollup_once_and_a_replayed_batch_not_at_all(tenant):
    actions = ensure(tenant.provisioner, tenant.part, {})
    # A new tenant's table is empty: no cutoff to wait for, no backfill to run.
    assert f"rollup {tenant.rollup.name}: its table was empty, nothing to backfill" in actions
    assert not any(a.startswith("backfilled") or "waits" in a for a in actions), actions
    assert tenant.state().backfilled
    assert tenant.provisioner.observe(tenant.part, {}).in_sync

    batch = _rows("a", 60)
    tenant.insert(batch, token="probe.t.gauges:0:0-59")
    after_first = tenant.from_rollup()
    assert after_first == tenant.from_table() and sum(row[2] for row in after_first) == 60

    # The sink's replay after a crash between insert and commit: same rows, same token.
    tenant.insert(batch, token="probe.t.gauges:0:0-59")
    assert tenant.from_rollup() == after_first
    assert tenant.warehouse.command(
        f"SELECT count() FROM `{tenant.part.database}`.`{tenant.table.name}`") == 60

    # Another batch whose rollup rows look exactly like the first one's still counts.
    tenant.insert([[f"b-{row[0]}", *row[1:]] for row in batch], token="probe.t.gauges:1:0-59")
    assert sum(row[2] for row in tenant.from_rollup()) == 120
    assert tenant.from_rollup() == tenant.from_table()


def test_a_table_from_before_the_rollup_is_backfilled_once(tenant):
    # A deployment made before rollups existed: the table alone, with data.
    old = dataclasses.replace(tenant.part, tables=tuple(dataclasses.replace(t, rollup=None) for t in tenant.part.tables))
    ensure(tenant.provisioner, old, {})
    tenant.insert(_rows("old", 300))
    observed = tenant.provisioner.observe(tenant.part, {})
    assert observed.about(f"rollup {tenant.rollup.name}", "exists")

    actions = ensure(tenant.provisioner, tenant.part, {})
    assert f"backfilled rollup {tenant.rollup.name}" in actions
    assert tenant.state().backfilled
    assert tenant.from_rollup() == tenant.from_table()

    # Later inserts go through the view; reconciling again (an operator restart) backfills nothing.
    tenant.insert(_rows("new", 50, T0 + dt.timedelta(days=3)))
    assert tenant.provisioner.observe(tenant.part, {}).in_sync
    assert ensure(tenant.provisioner, tenant.part, {}) == []
    assert tenant.from_rollup() == tenant.from_table()
    assert sum(row[2] for row in tenant.from_rollup()) == 350


def test_an_interrupted_backfill_runs_again_without_counting_twice(tenant):
    old = dataclasses.replace(tenant.part, tables=tuple(dataclasses.replace(t, rollup=None) for t in tenant.part.tables))
    ensure(tenant.provisioner, old, {})
    tenant.insert(_rows("x", 200))
    expected = tenant.from_table()
    # The operator created rollup and view, then waited for the cutoff ...
    now = tenant.warehouse.query("SELECT now64(3, 'UTC')").result_rows[0][0].replace(tzinfo=UTC)
    pending = RollupState(cutoff=now + dt.timedelta(hours=1), backfilled=False)
    tenant.warehouse.command(tenant.rollup.ddl(pending))
    tenant.warehouse.command(tenant.rollup.view_sql(pending))
    name = tenant.rollup.name
    waiting = f"rollup {name}: backfill waits until {pending.cutoff.isoformat()}"
    assert ensure(tenant.provisioner, tenant.part, {}) == [waiting]
    assert tenant.from_rollup() == [] and not tenant.state().backfilled
    # ... then ran the backfill and died before recording it.
    tenant.warehouse.command(tenant.rollup.backfill_sql(pending))
    assert tenant.from_rollup() == expected
    assert [d.found for d in tenant.provisioner.observe(tenant.part, {}).about(f"rollup {name}", "backfill")] == [
        "pending"]

    # The restarted operator (cutoff now passed) backfills again, replacing what the first run wrote.
    passed = RollupState(cutoff=now, backfilled=False)
    tenant.warehouse.command(tenant.rollup.comment_sql(passed))
    tenant.warehouse.command(tenant.rollup.modify_view_sql(passed))
    assert f"backfilled rollup {name}" in ensure(tenant.provisioner, tenant.part, {})
    assert tenant.state().backfilled
    assert tenant.from_rollup() == expected
    assert tenant.provisioner.observe(tenant.part, {}).in_sync


def _built_empty_then_crashed(tenant: "Tenant") -> None:
    """Table, then rollup and view as a build leaves them before it checked the source (no cutoff:
    the view counts every row), as if the operator died right there."""
    old = dataclasses.replace(tenant.part, tables=tuple(dataclasses.replace(t, rollup=None) for t in tenant.part.tables))
    ensure(tenant.provisioner, old, {})
    built = RollupState(cutoff=EMPTY_SOURCE_CUTOFF, backfilled=False)
    tenant.warehouse.command(tenant.rollup.ddl(built))
    tenant.warehouse.command(tenant.rollup.view_sql(built))
    assert tenant.state() == built


def test_a_rollup_built_over_an_empty_table_and_interrupted_is_finished_without_a_backfill(tenant):
    _built_empty_then_crashed(tenant)
    observed = tenant.provisioner.observe(tenant.part, {})
    assert [d.found for d in observed.about(f"rollup {tenant.rollup.name}", "backfill")] == ["pending"]
    assert not observed.about(f"view {tenant.rollup.view}", "query"), "its view already counts every row"

    actions = ensure(tenant.provisioner, tenant.part, {})
    assert actions == [f"rollup {tenant.rollup.name}: its table was empty, nothing to backfill"]
    assert tenant.state().backfilled
    tenant.insert(_rows("later", 40))
    assert tenant.from_rollup() == tenant.from_table() and sum(r[2] for r in tenant.from_rollup()) == 40


def test_rows_that_arrived_while_an_empty_build_was_unfinished_are_counted_once(tenant):
    """The view counted them, the table has them: the check cannot tell them from rows that came in
    without the view, so the rollup is built again with a cutoff and everything counted once."""
    _built_empty_then_crashed(tenant)
    tenant.insert(_rows("meanwhile", 120))
    assert sum(r[2] for r in tenant.from_rollup()) == 120, "the view counted them"

    actions = ensure(tenant.provisioner, tenant.part, {})
    assert f"backfilled rollup {tenant.rollup.name}" in actions, actions
    assert tenant.state().backfilled and tenant.state().cutoff > EMPTY_SOURCE_CUTOFF
    assert tenant.from_rollup() == tenant.from_table()
    assert sum(r[2] for r in tenant.from_rollup()) == 120
    assert tenant.provisioner.observe(tenant.part, {}).in_sync


def test_a_new_field_reaches_the_rollup_and_its_view(warehouse):
    tenant = Tenant(warehouse)
    try:
        ensure(tenant.provisioner, tenant.part, {})
        tenant.insert(_rows("a", 100))
        tenant.replan(_tool([{"name": "discharge", "type": "Float32", "unit": "m³/s"},
                             {"name": "gauge_ok", "type": "UInt8", "required": True}]))
        drifted = tenant.provisioner.observe(tenant.part, {})
        assert drifted.about(f"rollup {tenant.rollup.name}", "column discharge__sum")
        assert drifted.about(f"view {tenant.rollup.view}", "query")
        ensure(tenant.provisioner, tenant.part, {})
        assert tenant.provisioner.observe(tenant.part, {}).in_sync
        more = [[*row, 1.5 * (i % 4), 1] for i, row in enumerate(_rows("b", 40, T0 + dt.timedelta(hours=2)))]
        warehouse.insert(tenant.table.name, more, database=tenant.part.database,
                         column_names=COLUMNS + ["discharge", "gauge_ok"])
        table = warehouse.query(
            f"SELECT sensor_id, toStartOfHour(observed_at) AS hour, count(discharge), sum(discharge), "
            f"min(discharge), max(discharge), count(gauge_ok), sum(gauge_ok), min(gauge_ok) "
            f"FROM `{tenant.part.database}`.`{tenant.table.name}` FINAL GROUP BY sensor_id, hour "
            f"ORDER BY sensor_id, hour").result_rows
        rollup = warehouse.query(
            f"SELECT sensor_id, hour, sum(discharge__count), sum(discharge__sum), min(discharge__min), "
            f"max(discharge__max), sum(gauge_ok__count), sum(gauge_ok__sum), min(gauge_ok__min) "
            f"FROM `{tenant.part.database}`.`{tenant.rollup.name}` GROUP BY sensor_id, hour "
            f"ORDER BY sensor_id, hour").result_rows
        # Hours rolled up before the field existed read like the table's old rows: no discharge (NULL)
        # and the default 0 for the required gauge_ok, counted for every row.
        assert rollup == table
        assert any(row[2] == 0 and row[3] is None for row in rollup)
        assert any(row[2] > 0 for row in rollup)
    finally:
        tenant.drop()


def test_a_lost_view_is_rebuilt_and_backfilled_from_the_table(tenant):
    ensure(tenant.provisioner, tenant.part, {})
    tenant.insert(_rows("a", 80))
    tenant.warehouse.command(f"DROP TABLE `{tenant.part.database}`.`{tenant.rollup.view}`")
    tenant.insert(_rows("b", 80, T0 + dt.timedelta(days=1)))  # not counted: no view
    assert [d.found for d in tenant.provisioner.observe(tenant.part, {}).about(f"rollup {tenant.rollup.name}")] == [
        f"{tenant.rollup.view} missing"]
    ensure(tenant.provisioner, tenant.part, {})
    assert tenant.state().backfilled
    assert tenant.from_rollup() == tenant.from_table()
    assert sum(row[2] for row in tenant.from_rollup()) == 160


def test_rollup_retention_follows_the_dataset(tenant):
    ensure(tenant.provisioner, tenant.part, {})
    engine = tenant.warehouse.query("SELECT engine_full FROM system.tables WHERE database = {db:String} AND "
                                    "name = {t:String}", parameters={"db": tenant.part.database,
                                                                     "t": tenant.rollup.name}).result_rows[0][0]
    assert "toIntervalDay(3650)" in engine and "toIntervalHour(1)" in engine


def test_a_dropped_table_takes_its_rollup_along_when_it_is_recreated(tenant):
    ensure(tenant.provisioner, tenant.part, {})
    tenant.insert(_rows("a", 80))
    tenant.warehouse.command(f"DROP TABLE `{tenant.part.database}`.`{tenant.table.name}`")
    assert tenant.provisioner.observe(tenant.part, {}).about(f"table {tenant.table.name}", "exists")
    ensure(tenant.provisioner, tenant.part, {})
    assert tenant.from_rollup() == tenant.from_table() == []
    tenant.insert(_rows("b", 30))
    assert tenant.from_rollup() == tenant.from_table() and sum(row[2] for row in tenant.from_rollup()) == 30


def test_the_drift_sweep_sees_what_is_gone_from_the_system_tables_and_nothing_else(warehouse):
    """The bulk comparison (system-table queries for all tenants) agrees with the tenant's own
    observe: in sync after provisioning, and a dropped table, view or column is seen. After the
    first sweep it reads again only the tables whose metadata time changed, so a change to a table
    it has read before must move that time."""
    import time

    def settled() -> bool:   # the sweep keeps a table's time only once it lies 2 s before the server's now
        (age,), = warehouse.query("SELECT dateDiff('second', max(metadata_modification_time), now()) "
                                  "FROM system.tables WHERE database IN {dbs:Array(String)}",
                                  parameters={"dbs": [made.part.database for made in tenants]}).result_rows
        return age >= 2

    tenants = [Tenant(warehouse), Tenant(warehouse)]
    try:
        for made in tenants:
            ensure(made.provisioner, made.part, {})
        provisioner = tenants[0].provisioner
        parts = [made.part for made in tenants]
        deadline = time.monotonic() + 30
        while not settled():
            assert time.monotonic() < deadline, "the tables' metadata times never lay 2 s in the past"
            time.sleep(0.1)
        snapshot = provisioner.snapshot(parts)
        assert all(provisioner.observe_from(snapshot, part).in_sync for part in parts)
        snapshot = provisioner.snapshot(parts)   # nothing changed: read from memory, still in sync
        assert all(provisioner.observe_from(snapshot, part).in_sync for part in parts)
        first, second = tenants
        warehouse.command(f"DROP TABLE `{first.part.database}`.`{first.rollup.view}`")
        warehouse.command(f"ALTER TABLE `{first.part.database}`.`{first.table.name}` DROP COLUMN temperature")
        warehouse.command(f"ALTER TABLE `{second.part.database}`.`{second.rollup.name}` MODIFY COMMENT 'edited'")
        snapshot = provisioner.snapshot(parts)
        swept = provisioner.observe_from(snapshot, first.part)
        observed = provisioner.observe(first.part, {})
        assert {(d.object, d.attribute) for d in swept} == {(d.object, d.attribute) for d in observed}
        assert swept.about(f"table {first.table.name}", "column temperature")
        assert swept.about(f"rollup {first.rollup.name}", "exists")
        edited = provisioner.observe_from(snapshot, second.part)
        assert [d.found for d in edited.about(f"rollup {second.rollup.name}", "state comment")] == ["unreadable"]
    finally:
        for made in tenants:
            made.drop()
