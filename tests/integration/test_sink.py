"""Producer → Kafka → sink → warehouse on the real platform: the invariant
records in = rows stored + records in the DLQ, reasons in the DLQ, replays
that add no rows, and a warehouse outage that loses nothing."""

from __future__ import annotations

import json
import uuid
import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

import sink_harness as harness
from urbanstack.devplatform import kafka
from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.events import Observation, ObservationBatch
from urbanstack.runtime.producer import DeliveryError, Publisher, partition_of
from urbanstack.runtime.sink import Sink, SinkConfig

pytestmark = pytest.mark.platform

TOOL, DATASET, TABLE = "passantenfrequenz-wetter", "pedestrian_counts", "passantenfrequenz_wetter__pedestrian_counts"
# Recent enough for the example's retention of 730 days: older rows are refused.
START = (datetime.now(timezone.utc) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def admin_config(platform):
    return kafka.admin_config(platform)


@pytest.fixture
def tenant(admin_config, warehouse):
    tenant = harness.provision(admin_config, warehouse)
    yield tenant
    harness.deprovision(admin_config, warehouse, tenant)


def counts(slug: str, n: int, sensors: int = 4, start: datetime = START) -> list[Observation]:
    return [Observation(tenant=slug, dataset=DATASET, source="hystreet", sensor_id=str(100 + i % sensors),
                        observed_at=start + timedelta(hours=i // sensors),
                        fields={"pedestrians": 10 + i, "pedestrians_ltr": 4 + i, "pedestrians_rtl": 6,
                                "location_name": "Berliner Straße"},
                        units={"pedestrians": "persons"})
            for i in range(n)]


def sink_for(admin_config, warehouse, tenant, **overrides) -> tuple[Sink, str]:
    group = f"test-sink-{uuid.uuid4().hex[:8]}"
    config = SinkConfig(group_id=group, topic_pattern=rf"^{tenant.slug}\.[^.]+\.[^.]+$", retry_initial_seconds=0.05,
                        **overrides)
    sink = Sink(admin_config, warehouse, config)
    sink.start()
    return sink, group


def rows(warehouse, tenant, final: bool = False) -> int:
    return warehouse.command(f"SELECT count() FROM `{tenant.database}`.`{TABLE}`{' FINAL' if final else ''}")


def test_publisher_with_tenant_credentials(platform, admin_config, tenant):
    config = kafka.client_config(platform, f"muni-{tenant.slug}", tenant.password)
    result = ParseResult(events=counts(tenant.slug, 6))
    result.reject("line 7", "'viele' is not a number", "27.10.2024 03:00;viele")
    with Publisher(config) as publisher:
        report = publisher.publish(result, tenant=tenant.slug, tool=TOOL)
    topic = tenant.topic(TOOL, DATASET)
    assert (report.events, report.rejections, report.topics) == (6, 1, {topic: 6})

    partitions = tenant.desired.streaming.topic(topic).partitions
    used = {partition_of(event.sensor_id, partitions) for event in result.events}
    messages = harness.read_topic(admin_config, topic, len(used))
    assert len(messages) == len(used)  # one batch per partition
    rows = [(message.partition(), event) for message in messages
            for event in ObservationBatch.from_dict(json.loads(message.value())).observations()]
    assert sorted(event.event_id for _p, event in rows) == sorted(event.event_id for event in result.events)
    for partition, event in rows:  # one sensor, one partition: its readings stay in order
        assert partition == partition_of(event.sensor_id, partitions)

    # A single event keyed by its sensor (librdkafka's own partitioner) lands where the batches did.
    single = Producer(config)
    for event in result.events[:4]:
        single.produce(topic, event.to_json(), event.sensor_id.encode(),
                       on_delivery=lambda error, message: placed.append((error, message.key(), message.partition())))
    placed: list = []
    assert single.flush(30) == 0
    assert placed and all(error is None and partition == partition_of(key.decode(), partitions)
                          for error, key, partition in placed)

    [dead] = harness.read_topic(admin_config, tenant.dlq, 1)
    assert dead.value() == "27.10.2024 03:00;viele".encode()
    assert harness.headers(dead) == {"error": "'viele' is not a number", "stage": "connector", "where": "line 7",
                                     "tool": TOOL}


def test_publisher_surfaces_refused_deliveries(platform, admin_config, tenant):
    """A tenant's credentials cannot write another tenant's topic: publish raises, nothing is silent."""
    other = harness.provision(admin_config, None)
    try:
        config = kafka.client_config(platform, f"muni-{tenant.slug}", tenant.password)
        with pytest.raises(DeliveryError, match="(?i:authori)") as refused:
            Publisher(config).publish_events(counts(other.slug, 2), tenant=other.slug, tool=TOOL)
        assert refused.value.possibly_delivered is False   # refused by the broker: certainly not stored
        with pytest.raises(ValueError, match="cannot be published"):
            Publisher(config).publish_events(counts(other.slug, 1), tenant=tenant.slug, tool=TOOL)
    finally:
        harness.deprovision(admin_config, None, other)


def test_invariant_and_dlq_reasons(admin_config, warehouse, tenant):
    good = counts(tenant.slug, 40)
    with Publisher(admin_config) as publisher:
        publisher.publish_events(good, tenant=tenant.slug, tool=TOOL)
    valid = good[0].to_dict()

    def variant(**changes):
        data = {**valid, **changes}
        data.pop("event_id")  # the id follows the identity, which some variants change
        return json.dumps(data).encode()

    bad = {
        "bad-json": b'{"tenant": "' + tenant.slug.encode() + b'", "fields": {',
        "wrong-type": variant(fields={**valid["fields"], "pedestrians": "viele"}, sensor_id="w1"),
        "negative": variant(fields={**valid["fields"], "pedestrians": -3}, sensor_id="w2"),
        "unknown-field": variant(fields={**valid["fields"], "bikes": 3, "scooters": 1}, sensor_id="u1"),
        "wrong-tenant": variant(tenant="bielefeld", sensor_id="t1"),
        "naive-time": variant(observed_at="2024-10-27T01:00:00", sensor_id="n1"),
        "missing-required": variant(fields={"pedestrians": 5}, sensor_id="m1"),
        "wrong-unit": variant(units={"pedestrians": "cars"}, sensor_id="x1"),
        "wrong-dataset": variant(dataset="weather", sensor_id="d1"),
        "too-old": variant(observed_at="2001-01-01T00:00:00Z", sensor_id="o1"),
    }
    producer = Producer({**admin_config, "enable.idempotence": True, "acks": "all"})
    for name, value in bad.items():
        producer.produce(tenant.topic(TOOL, DATASET), value, name.encode())
    assert producer.flush(30) == 0

    sink, group = sink_for(admin_config, warehouse, tenant, batch_rows=16)
    try:
        harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
    finally:
        sink.close()

    stored = rows(warehouse, tenant)
    dead = harness.read_topic(admin_config, tenant.dlq, len(bad))
    total_in = len(good) + len(bad)
    assert sink.metrics.totals == {"in": total_in, "stored": len(good), "duplicate": 0, "dlq": len(bad)}
    assert total_in == stored + len(dead)
    assert stored == len(good) == rows(warehouse, tenant, final=True)

    reasons = {}
    for message in dead:
        h = harness.headers(message)
        assert h["stage"] == "sink" and h["topic"] == tenant.topic(TOOL, DATASET)
        assert message.key() == f"{h['topic']}:{h['partition']}:{h['offset']}".encode()
        reasons[bad_name(bad, message.value())] = h["error"]
    assert set(reasons) == set(bad)
    assert "not valid JSON" in reasons["bad-json"]
    assert "fields.pedestrians (UInt32): expected a number, got 'viele'" in reasons["wrong-type"]
    assert "outside 0..4294967295" in reasons["negative"]
    assert "unknown field(s) bikes, scooters" in reasons["unknown-field"]
    assert "claims 'bielefeld'" in reasons["wrong-tenant"] and "own data" in reasons["wrong-tenant"]
    assert "has no time zone" in reasons["naive-time"]
    assert "fields.location_name: required, but missing" in reasons["missing-required"]
    assert "unit 'cars' differs from the dataset's 'persons'" in reasons["wrong-unit"]
    assert "carries 'pedestrian_counts'" in reasons["wrong-dataset"]
    assert "older than the dataset's retention of 730 days" in reasons["too-old"]

    stored_values = warehouse.query(
        f"SELECT sensor_id, observed_at, pedestrians, location_name, lon FROM `{tenant.database}`.`{TABLE}` "
        "WHERE sensor_id = '101' ORDER BY observed_at LIMIT 1").result_rows
    assert stored_values == [("101", START.replace(tzinfo=None), 11, "Berliner Straße", None)]


def bad_name(bad: dict, value: bytes) -> str:
    return next(name for name, payload in bad.items() if payload == value)


class Crash(Exception):
    pass


def crash_before_first_commit(admin_config, warehouse, tenant) -> str:
    """A sink that reads the tenant's backlog, inserts every partition's first batch and dies
    before its first offset commit; returns its consumer group (for the sink that replays)."""
    crashing, group = sink_for(admin_config, warehouse, tenant, batch_rows=1_000_000, batch_seconds=3600)
    original_commit = crashing._commit

    def commit(batch, offset, metadata):
        if metadata == "":
            raise Crash()
        original_commit(batch, offset, metadata)

    crashing._commit = commit
    try:
        for _ in range(30):
            crashing.step(timeout=0.3)
        with pytest.raises(Crash):
            crashing.flush_all()
    finally:
        crashing.close()
    return group


def test_replay_of_an_interrupted_batch_adds_no_rows(admin_config, warehouse, tenant):
    """Insert succeeded, commit never happened: the next sink replays the same batch and ClickHouse
    drops it by its deduplication token, visible without FINAL."""
    events = counts(tenant.slug, 300, sensors=3)
    with Publisher(admin_config) as publisher:
        publisher.publish_events(events, tenant=tenant.slug, tool=TOOL)

    group = crash_before_first_commit(admin_config, warehouse, tenant)
    written = rows(warehouse, tenant)
    assert 0 < written <= len(events)

    config = SinkConfig(group_id=group, topic_pattern=rf"^{tenant.slug}\.[^.]+\.[^.]+$", batch_rows=7, batch_seconds=0.2)
    replaying = Sink(admin_config, warehouse, config)
    replaying.start()
    try:
        harness.drain(replaying, admin_config, group, [tenant.topic(TOOL, DATASET)])
    finally:
        replaying.close()
    assert rows(warehouse, tenant) == len(events)  # no FINAL: the replayed batch added nothing
    assert warehouse.command(f"SELECT uniqExact(event_id) FROM `{tenant.database}`.`{TABLE}`") == len(events)


class FlakyWarehouse:
    """The real client, except that the first ``failures`` inserts fail like a lost connection."""

    def __init__(self, client, failures: int):
        self._client, self.failures, self.attempts = client, failures, 0

    def _attempt(self):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("Connection refused (simulated outage)")

    def insert(self, *args, **kwargs):
        self._attempt()
        return self._client.insert(*args, **kwargs)

    def raw_insert(self, *args, **kwargs):
        self._attempt()
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_warehouse_outage_is_retried_and_loses_nothing(admin_config, warehouse, tenant):
    events = counts(tenant.slug, 50)
    with Publisher(admin_config) as publisher:
        publisher.publish_events(events, tenant=tenant.slug, tool=TOOL)
    flaky = FlakyWarehouse(warehouse, failures=4)
    sink, group = sink_for(admin_config, flaky, tenant, batch_rows=100_000, batch_seconds=0.5)
    try:
        harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
    finally:
        sink.close()
    assert flaky.attempts > 4
    assert sink.metrics.write_retries.labels("writing")._value.get() == 4
    assert rows(warehouse, tenant) == len(events)


def test_run_sink_serves_prometheus_metrics(platform, admin_config, warehouse, tenant):
    import socket
    import threading
    import time

    import httpx

    from urbanstack.runtime.sink import run_sink

    with Publisher(admin_config) as publisher:
        publisher.publish_events(counts(tenant.slug, 10), tenant=tenant.slug, tool=TOOL)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SinkConfig(group_id=f"test-sink-{uuid.uuid4().hex[:8]}",
                        topic_pattern=rf"^{tenant.slug}\.[^.]+\.[^.]+$", batch_seconds=0.2, metrics_port=port)
    stop = threading.Event()
    # The sink shares the test's warehouse client, as in `urbanstack serve`.
    thread = threading.Thread(target=run_sink, args=(platform, stop, config), kwargs={"warehouse_client": warehouse},
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while rows(warehouse, tenant) < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rows(warehouse, tenant) == 10
        # Rows are visible as soon as the writer inserted them; the counters move when the batch is committed.
        stored = f'urbanstack_sink_rows_stored_total{{tenant="{tenant.slug}"}} 10.0'
        text = ""
        while stored not in text and time.monotonic() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            time.sleep(0.1)
        assert f'urbanstack_sink_records_in_total{{tenant="{tenant.slug}"}} 10.0' in text
        assert f'urbanstack_sink_rows_stored_total{{tenant="{tenant.slug}"}} 10.0' in text
        assert "urbanstack_sink_batch_seconds_count" in text and "urbanstack_sink_lag_records" in text
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_resent_readings_are_written_once_and_corrections_win(admin_config, warehouse, tenant):
    """A file sent twice adds nothing, visible without FINAL; a reading sent again with a
    new value replaces the stored one."""
    first = counts(tenant.slug, 40)
    with Publisher(admin_config) as publisher:
        publisher.publish_events(first, tenant=tenant.slug, tool=TOOL)
    sink, group = sink_for(admin_config, warehouse, tenant)
    try:
        harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
        corrected = [Observation(tenant=e.tenant, dataset=e.dataset, source=e.source, sensor_id=e.sensor_id,
                                 observed_at=e.observed_at, fields={**e.fields, "pedestrians": 9999},
                                 units=e.units) for e in first[35:]]
        with Publisher(admin_config) as publisher:
            publisher.publish_events(first[:35] + corrected, tenant=tenant.slug, tool=TOOL)
        harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
    finally:
        sink.close()
    assert sink.metrics.totals == {"in": 80, "stored": 45, "duplicate": 35, "dlq": 0}
    assert rows(warehouse, tenant, final=True) == 40
    assert rows(warehouse, tenant) == 45  # the 5 corrected readings, until a merge replaces them
    latest = warehouse.query(
        f"SELECT event_id, pedestrians FROM `{tenant.database}`.`{TABLE}` FINAL WHERE pedestrians = 9999").result_rows
    assert sorted(event_id for event_id, _ in latest) == sorted(e.event_id for e in corrected)
    # The hourly rollup counts each reading once, with its corrected value.
    per_hour = f"SELECT sensor_id, toStartOfHour(observed_at) AS h, count(), sum(pedestrians) FROM " \
               f"`{tenant.database}`.`{TABLE}` FINAL GROUP BY sensor_id, h ORDER BY sensor_id, h"
    rolled = f"SELECT sensor_id, hour, sum(rows), sum(pedestrians__sum) FROM " \
             f"`{tenant.database}`.`{TABLE}__hourly` GROUP BY sensor_id, hour ORDER BY sensor_id, hour"
    assert warehouse.query(rolled).result_rows == warehouse.query(per_hour).result_rows


def test_a_partition_whose_dlq_fails_is_parked_and_the_others_go_on(admin_config, warehouse, tenant):
    """Tenant A's dead-letter topic is gone: its partition pauses and is retried, tenant B's
    data keeps flowing; once the topic is back, A's batch is written and nothing is lost."""
    from confluent_kafka.admin import AdminClient, NewTopic

    other = harness.provision(admin_config, warehouse, prefix="gu")
    admin = AdminClient(admin_config)
    try:
        admin.delete_topics([tenant.dlq])[tenant.dlq].result(30)
        good = counts(tenant.slug, 10)
        with Publisher(admin_config) as publisher:
            publisher.publish_events(good, tenant=tenant.slug, tool=TOOL)
        producer = Producer(admin_config)
        producer.produce(tenant.topic(TOOL, DATASET), b'{"not": "an event"}', b"100")
        assert producer.flush(30) == 0

        group = f"test-sink-{uuid.uuid4().hex[:8]}"
        config = SinkConfig(group_id=group, topic_pattern=rf"^({tenant.slug}|{other.slug})\.[^.]+\.[^.]+$",
                            batch_seconds=0.2, retry_initial_seconds=0.2, retry_max_seconds=1.0,
                            dlq_timeout_seconds=2.0)
        sink = Sink(admin_config, warehouse, config)
        sink.start()
        try:
            deadline = time.monotonic() + 60
            while sink.metrics.parked._value.get() < 1 and time.monotonic() < deadline:
                sink.step()
            assert sink.metrics.parked._value.get() == 1, "tenant A's partition should be parked"
            stuck = harness.committed(admin_config, group, tenant.topic(TOOL, DATASET))

            later = counts(other.slug, 12)
            with Publisher(admin_config) as publisher:
                publisher.publish_events(later, tenant=other.slug, tool=TOOL)
            harness.drain(sink, admin_config, group, [other.topic(TOOL, DATASET)])
            assert rows(warehouse, other) == 12  # B is not held up by A
            assert sink.metrics.parked._value.get() == 1
            assert harness.committed(admin_config, group, tenant.topic(TOOL, DATASET)) == stuck

            futures = admin.create_topics([NewTopic(tenant.dlq, 1, 1)])
            futures[tenant.dlq].result(30)
            harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
        finally:
            sink.close()
        assert sink.metrics.parked._value.get() == 0
        assert rows(warehouse, tenant, final=True) == len(good)
        [dead] = harness.read_topic(admin_config, tenant.dlq, 1)
        assert "not valid" in harness.headers(dead)["error"] or "missing" in harness.headers(dead)["error"]
        assert sink.metrics.write_retries.labels("sending")._value.get() >= 1
        assert sink.metrics.totals == {"in": len(good) + 1 + len(later), "stored": len(good) + len(later),
                                       "duplicate": 0, "dlq": 1}
    finally:
        harness.deprovision(admin_config, warehouse, other)


def test_json_and_native_inserts_store_the_same_values(admin_config, warehouse):
    """Blocks go to the warehouse as one JSON document of columns where every column takes
    JSON, else through the Native encoder: both must store exactly the same values."""
    from urbanstack.runtime.sink import Batch, Rows, TableSchema, route

    database = f"jsonins{uuid.uuid4().hex[:8]}"
    columns = [("event_id", "String"), ("source", "LowCardinality(String)"), ("sensor_id", "String"),
               ("observed_at", "DateTime64(3, 'UTC')"), ("lon", "Nullable(Float64)"), ("lat", "Nullable(Float64)"),
               ("count", "UInt64"), ("delta", "Nullable(Int8)"), ("ratio", "Float32"), ("ok", "Nullable(Bool)"),
               ("label", "Nullable(String)")]
    rows = [("a" * 32, "test", "s1", 1735689600123, 8.38, 51.9, 2 ** 63 + 5, -128, 0.1, True, "Straße 🚲 \"quoted\""),
            ("b" * 32, "test", "s2", -86_400_001, None, None, 0, None, 3.4e38, None, None),
            ("c" * 32, "test", "s\u00e4", 4102444799999, -180.0, -90.0, 1, 127, -1.5, False, "\\back\nslash")]
    warehouse.command(f"CREATE DATABASE `{database}`")
    try:
        stored = []
        for table in ("t__json", "t__native"):
            warehouse.command(f"CREATE TABLE `{database}`.`{table}` ({', '.join(f'`{n}` {t}' for n, t in columns)}) "
                              f"ENGINE = MergeTree ORDER BY event_id")
            schema = TableSchema.from_columns(database, table, [(n, t, "", "") for n, t in columns])
            assert schema.json_insert
            if table == "t__native":
                schema.json_insert = False
            target = route(f"{database}.t.json")
            target = type(target)(**{**target.__dict__, "database": database, "table": table})
            batch = Batch(f"{database}.t.json", 0, target, schema=schema, first=0, last=2)
            batch.rows = Rows([list(column) for column in zip(*rows)])
            sink = Sink.__new__(Sink)
            sink._warehouse, sink._schemas = warehouse, {}
            sink._insert(batch)
            stored.append(warehouse.query(f"SELECT * FROM `{database}`.`{table}` ORDER BY event_id").result_rows)
        assert stored[0] == stored[1]
        assert len(stored[0]) == 3 and stored[0][0][6] == 2 ** 63 + 5 and stored[0][0][10] == rows[0][10]
        assert stored[0][2][10] == "\\back\nslash" and stored[0][2][2] == "s\u00e4"
        assert stored[0][0][3] == datetime(2025, 1, 1, 0, 0, 0, 123_000)        # ticks to the millisecond
        assert stored[0][1][3] == datetime(1969, 12, 30, 23, 59, 59, 999_000)   # before 1970 as well
    finally:
        warehouse.command(f"DROP DATABASE IF EXISTS `{database}`")
