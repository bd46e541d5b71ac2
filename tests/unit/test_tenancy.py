"""The tenant knowledge the operator and the data plane share (urbanstack/tenancy.py): what the
operator's plan creates is what the sink and the API read back."""

import pytest
from test_operator_plan import TOOLS, municipality

from urbanstack import tenancy
from urbanstack.operator import naming
from urbanstack.operator.plan import plan
from urbanstack.runtime.sink import SinkConfig, TableSchema, route


@pytest.fixture
def table():
    return plan(municipality(), TOOLS).warehouse.tables[0]


def test_the_sink_reads_the_retention_the_plan_writes(table):
    assert table.ttl == tenancy.table_ttl(table.retention_days)
    # How ClickHouse reports that TTL in system.tables.engine_full.
    engine = (f"ReplacingMergeTree(ingested_at) PARTITION BY toYYYYMM(observed_at) ORDER BY (sensor_id, event_id) "
              f"TTL toDateTime(observed_at) + toIntervalDay({table.retention_days}) SETTINGS index_granularity = 8192")
    assert tenancy.retention_days(engine) == table.retention_days
    assert tenancy.retention_days("MergeTree ORDER BY x") is None


def test_the_sink_accepts_the_tables_the_plan_creates(table):
    columns = [(c.name, c.type, "DEFAULT" if c.default else "", c.comment or "") for c in table.columns]
    schema = TableSchema.from_columns(table.database, table.name, columns)
    assert schema.problem is None
    assert set(schema.fields) == {c.name for c in table.columns} - {c.name for c in tenancy.STANDARD_COLUMNS}
    broken = TableSchema.from_columns(table.database, table.name, [c for c in columns if c[0] != "sensor_id"])
    assert "lacks the standard column(s) sensor_id" in broken.problem


def test_every_rollup_column_the_plan_creates_is_recognised(table):
    measures = {m.column: (m.field, m.function) for m in table.rollup.measures}
    assert measures and all(tenancy.rollup_measure(column) == pair for column, pair in measures.items())
    for own in ("sensor_id", "hour", "backfilled", "rows"):
        assert tenancy.rollup_measure(own) is None
    for field, part in measures.values():
        assert tenancy.rollup_expression(field, part) == f"{part}(`{field}`)"


def test_topics_route_back_to_the_tables_the_plan_names(table):
    import re

    target = route(table.topic)
    assert (target.database, target.table, target.dlq_topic) == (
        table.database, table.name, naming.dlq_topic(target.tenant))
    pattern = re.compile(SinkConfig().topic_pattern)
    assert pattern.match(table.topic) and not pattern.match(target.dlq_topic)
    assert tenancy.parse_topic(target.dlq_topic) is None


def test_the_namespaces_the_plan_creates_are_those_the_admission_policy_admits():
    from urbanstack.operator import rbac

    from urbanstack.operator.models import parse_municipality

    for slug in ("guetersloh", "a" * 60):   # a slug long enough for naming.fit to shorten
        body = {"apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
                "spec": {"displayName": "Test", "ags": "05754008", "admins": ["admin@example.org"]}}
        runtime = plan(parse_municipality(body), TOOLS).runtime
        assert runtime.namespace.startswith(rbac.OWNED_NAMESPACE_PREFIX)
        assert [obj.kind for obj in runtime.objects[:2]] == ["Namespace", "RoleBinding"]
        assert runtime.objects[1].namespace == runtime.namespace
