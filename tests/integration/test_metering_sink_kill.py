"""The sink's meters after ``kill -9``: readings and rows-stored meters equal the rows
actually stored, although the sink died mid-stream (twice) and replayed what it had not
committed. The sink and the meter consumer run as processes of their own on one chDB
data path (one at a time); the test reads it only after they exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

import sink_harness as harness
from test_sink import DATASET, TABLE, TOOL, counts, crash_before_first_commit, rows
from test_sink_kill import start_sink
from urbanstack.devplatform import kafka
from urbanstack.runtime.metering.consumer import ensure_meter_topic
from urbanstack.runtime.metering.consumer import MeterConsumer
from urbanstack.runtime.metering.emitter import MeterEmitter
from urbanstack.runtime.metering.ledger import DATABASE, Ledger
from urbanstack.runtime.sink import Sink, SinkConfig
from urbanstack.runtime.producer import Publisher

pytestmark = pytest.mark.platform

EVENTS = 20_000


def _wait_for_progress(admin_config, group, topic, sink, above: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sink.poll() is None:
        done = sum(max(o, 0) for o in harness.committed(admin_config, group, topic).values())
        if done > above:
            return done
        time.sleep(0.05)
    raise AssertionError("the sink made no progress")


def test_meters_match_the_rows_stored_after_kill_minus_nine(platform, tmp_path):
    admin_config = kafka.admin_config(platform)
    tenant = harness.provision(admin_config, None)
    meter_topic = f"_urbanstack-meter-t{uuid.uuid4().hex[:8]}"
    ensure_meter_topic(admin_config, meter_topic)
    url = f"chdb://{tmp_path / 'warehouse'}"
    group = f"test-meter-kill-{uuid.uuid4().hex[:8]}"
    topic = tenant.topic(TOOL, DATASET)
    env = {**os.environ, "URBANSTACK_WAREHOUSE_URL": url, "URBANSTACK_SINK_GROUP": group,
           "URBANSTACK_SINK_TOPIC_PATTERN": rf"^{tenant.slug}\.[^.]+\.[^.]+$",
           "URBANSTACK_SINK_BATCH_ROWS": "500", "URBANSTACK_SINK_BATCH_SECONDS": "0.3",
           "URBANSTACK_METER_TOPIC": meter_topic,
           "URBANSTACK_SINK_KAFKA_USER": kafka.ADMIN_USER, "URBANSTACK_SINK_KAFKA_PASSWORD": kafka.admin_password(platform)}
    log = tmp_path / "sink.log"
    try:
        harness.provision_tables_in_subprocess(url, tenant)
        events = counts(tenant.slug, EVENTS, sensors=50)
        # A tenth of the readings twice: producer-side duplicates are readings in, not rows stored.
        events += events[:EVENTS // 10]
        with Publisher(admin_config) as publisher:
            for start in range(0, len(events), 60):
                publisher.publish_events(events[start:start + 60], tenant=tenant.slug, tool=TOOL)
        ends = harness.end_offsets(admin_config, topic)
        messages = sum(ends.values())

        committed = 0
        for _ in range(2):   # killed twice, each time mid-stream
            sink = start_sink(env, log)
            committed = _wait_for_progress(admin_config, group, topic, sink, committed)
            sink.send_signal(signal.SIGKILL)
            sink.wait(30)
            committed = sum(max(o, 0) for o in harness.committed(admin_config, group, topic).values())
            assert committed < messages, "the kill should land mid-stream"

        sink = start_sink(env, log)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if all(harness.committed(admin_config, group, topic).get(p, -1) >= end for p, end in ends.items()):
                break
            assert sink.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError(f"sink did not finish: {log.read_text()[-3000:]}")
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0

        subprocess.run([sys.executable, "-m", "urbanstack.runtime.metering.consumer", "--until-idle", "2",
                        "--group", f"{group}-meter"], env=env, check=True, timeout=180)

        table = f"`{tenant.database}`.`{TABLE}`"
        [[rows, final, readings, stored, dead]] = harness.query_in_subprocess(url, (
            f"SELECT (SELECT count() FROM {table}), (SELECT count() FROM {table} FINAL), "
            f"sumIf(quantity, meter = 'readings_ingested'), sumIf(quantity, meter = 'rows_stored'), "
            f"sumIf(quantity, meter = 'dead_lettered') FROM `{DATABASE}`.`hourly` "
            f"WHERE subject = '{tenant.slug}'"))
        assert rows == final == EVENTS
        assert int(stored) == rows            # the meter equals what is stored
        assert int(readings) == len(events)   # every reading read once, duplicates included
        assert int(dead) == 0
    finally:
        harness.deprovision(admin_config, None, tenant)
        AdminClient(admin_config).delete_topics([meter_topic])


def test_a_batch_stored_by_a_dead_sink_is_metered_by_its_replay(platform, warehouse):
    """The worst moment to die: rows inserted, meter event not sent, nothing committed. The
    replay finds the rows stored after the batch's intent and meters them as its own."""
    admin_config = kafka.admin_config(platform)
    tenant = harness.provision(admin_config, warehouse)
    meter_topic = f"_urbanstack-meter-t{uuid.uuid4().hex[:8]}"
    ensure_meter_topic(admin_config, meter_topic)
    ledger = Ledger(warehouse, database=f"_urbanstack_metering_t{uuid.uuid4().hex[:8]}")
    try:
        events = counts(tenant.slug, 300, sensors=3)
        with Publisher(admin_config) as publisher:
            publisher.publish_events(events, tenant=tenant.slug, tool=TOOL)
        group = crash_before_first_commit(admin_config, warehouse, tenant)
        written = rows(warehouse, tenant)
        assert 0 < written <= len(events)

        config = SinkConfig(group_id=group, topic_pattern=rf"^{tenant.slug}\.[^.]+\.[^.]+$", batch_rows=7,
                            batch_seconds=0.2, meter_topic=meter_topic)
        replaying = Sink(admin_config, warehouse, config, meter=MeterEmitter(admin_config, topic=meter_topic))
        replaying.start()
        try:
            harness.drain(replaying, admin_config, group, [tenant.topic(TOOL, DATASET)])
        finally:
            replaying.close()
        assert rows(warehouse, tenant) == len(events)

        consumer = MeterConsumer(admin_config, ledger, topic=meter_topic, group_id=f"{group}-meter")
        try:
            consumer.run(until_idle=1.0)
        finally:
            consumer.close()
        [[stored, readings]] = warehouse.query(
            f"SELECT sumIf(quantity, meter = 'rows_stored'), sumIf(quantity, meter = 'readings_ingested') "
            f"FROM `{ledger.database}`.`hourly` WHERE subject = {{s:String}}", parameters={"s": tenant.slug}).result_rows
        assert (stored, readings) == (len(events), len(events))
    finally:
        harness.deprovision(admin_config, warehouse, tenant)
        AdminClient(admin_config).delete_topics([meter_topic])
        warehouse.command(f"DROP DATABASE IF EXISTS `{ledger.database}`")


def test_an_unreachable_meter_topic_neither_stops_nor_slows_the_sink_for_long(platform, warehouse):
    """The meter's Kafka cannot be reached at all: every row is still stored and committed,
    the sink waited for the meter once (bounded), and the lost events are counted."""
    from prometheus_client import generate_latest

    from urbanstack.runtime.metering.emitter import MeterMetrics
    from urbanstack.runtime.sink import SinkMetrics

    admin_config = kafka.admin_config(platform)
    tenant = harness.provision(admin_config, warehouse)
    try:
        events = counts(tenant.slug, 600, sensors=3)
        with Publisher(admin_config) as publisher:
            for start in range(0, len(events), 50):
                publisher.publish_events(events[start:start + 50], tenant=tenant.slug, tool=TOOL)
        metrics = SinkMetrics()
        # Nothing listens on port 1: the meter's broker is down for the whole run.
        unreachable = {**admin_config, "bootstrap.servers": "127.0.0.1:1"}
        meter = MeterEmitter(unreachable, topic="_urbanstack-meter", max_buffered=4, delivery_timeout_ms=2000,
                             metrics=MeterMetrics(metrics.registry))
        group = f"test-meter-down-{uuid.uuid4().hex[:8]}"
        config = SinkConfig(group_id=group, topic_pattern=rf"^{tenant.slug}\.[^.]+\.[^.]+$", batch_rows=40,
                            batch_seconds=0.2, meter_wait_seconds=1.0)
        waited = []   # per commit: whether the sink still waited for the meter (topic not yet known down)
        settle = meter.settle
        meter.settle = lambda timeout: waited.append(meter.healthy) or settle(timeout)
        sink = Sink(admin_config, warehouse, config, metrics, meter=meter)
        sink.start()
        try:
            harness.drain(sink, admin_config, group, [tenant.topic(TOOL, DATASET)])
        finally:
            sink.close()
        assert rows(warehouse, tenant) == len(events)
        assert len(waited) >= 10
        assert waited.count(True) == 1       # one bounded wait at the start of the outage, then none
        assert meter.dropped > 0 and meter.delivered == 0
        exposed = generate_latest(metrics.registry).decode()
        assert f'urbanstack_meter_events_total{{outcome="dropped"}} {float(meter.dropped)}' in exposed
    finally:
        harness.deprovision(admin_config, warehouse, tenant)
