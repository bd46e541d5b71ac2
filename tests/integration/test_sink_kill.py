"""kill -9 the sink in the middle of a stream, restart it: nothing lost, nothing twice.

The sink runs as ``python -m urbanstack.runtime.sink`` with a chDB data path of
its own; the test reads that path only after the last sink process exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import sink_harness as harness
from test_sink import DATASET, TABLE, TOOL, counts
from urbanstack.devplatform import kafka
from urbanstack.runtime.producer import Publisher

pytestmark = pytest.mark.platform

EVENTS = 20_000


def start_sink(env: dict, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "urbanstack.runtime.sink"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def test_kill_minus_nine_mid_stream_loses_and_duplicates_nothing(platform, tmp_path):
    admin_config = kafka.admin_config(platform)
    tenant = harness.provision(admin_config, None)
    url = f"chdb://{tmp_path / 'warehouse'}"
    group = f"test-sink-kill-{uuid.uuid4().hex[:8]}"
    topic = tenant.topic(TOOL, DATASET)
    env = {**os.environ, "URBANSTACK_WAREHOUSE_URL": url, "URBANSTACK_SINK_GROUP": group,
           "URBANSTACK_SINK_TOPIC_PATTERN": rf"^{tenant.slug}\.[^.]+\.[^.]+$",
           "URBANSTACK_SINK_BATCH_ROWS": "500", "URBANSTACK_SINK_BATCH_SECONDS": "0.3",
           # the identity `urbanstack serve` gives the sink on the local platform
           "URBANSTACK_SINK_KAFKA_USER": kafka.ADMIN_USER, "URBANSTACK_SINK_KAFKA_PASSWORD": kafka.admin_password(platform)}
    try:
        harness.provision_tables_in_subprocess(url, tenant)
        events = counts(tenant.slug, EVENTS, sensors=50)
        with Publisher(admin_config) as publisher:
            # Small publishes: many batch messages of up to ~20 readings, so the kill can land between them.
            for start in range(0, EVENTS, 60):
                publisher.publish_events(events[start:start + 60], tenant=tenant.slug, tool=TOOL)
        ends = harness.end_offsets(admin_config, topic)
        messages = sum(ends.values())
        assert messages >= EVENTS // 60

        sink = start_sink(env, tmp_path / "sink.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sink.poll() is None:
            done = sum(max(o, 0) for o in harness.committed(admin_config, group, topic).values())
            if done > 0:
                break
            time.sleep(0.05)
        committed_at_kill = sum(max(o, 0) for o in harness.committed(admin_config, group, topic).values())
        sink.send_signal(signal.SIGKILL)
        sink.wait(30)
        assert 0 < committed_at_kill < messages, "the kill should land mid-stream"

        sink = start_sink(env, tmp_path / "sink.log")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            offsets = harness.committed(admin_config, group, topic)
            if all(offsets.get(p, -1) >= end for p, end in ends.items()):
                break
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError(f"sink did not finish: {(tmp_path / 'sink.log').read_text()[-3000:]}")
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0

        table = f"`{tenant.database}`.`{TABLE}`"
        [[rows, distinct, final]] = harness.query_in_subprocess(
            url, f"SELECT count(), uniqExact(event_id), (SELECT count() FROM {table} FINAL) FROM {table}")
        assert (distinct, final) == (EVENTS, EVENTS)  # no loss
        assert rows == EVENTS  # no duplicate, even before ReplacingMergeTree merges
        assert harness.read_topic(admin_config, tenant.dlq, 0, timeout=1) == []
    finally:
        harness.deprovision(admin_config, None, tenant)
