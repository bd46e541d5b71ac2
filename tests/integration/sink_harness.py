"""A throwaway tenant for sink tests: the Gütersloh example under a unique
name, provisioned by the operator's own plan and provisioners, and helpers to
run the sink in-process and read the DLQ."""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from confluent_kafka import Consumer, TopicPartition

from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import DesiredState, plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SENSORS_TOOL = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "CityTool", "metadata": {"name": "verkehrszaehlung"},
    "spec": {"displayName": "Verkehrszählung", "description": "Counts from SensorThings servers.",
             "version": "0.1.0", "owner": "guetersloh", "audience": "gov",
             "datasets": [{"name": "bicycle_counts", "partitions": 1,
                           "fields": [{"name": "bicycles", "type": "UInt32", "required": True}]}]},
}


def _yaml(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def tools():
    found = []
    for name in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        found.append(parse_citytool(_yaml(name)))
    found.append(parse_citytool(copy.deepcopy(SENSORS_TOOL)))
    return found


@dataclass
class Tenant:
    slug: str
    password: str
    desired: DesiredState
    manifest: dict

    def topic(self, tool: str, dataset: str) -> str:
        return next(t.name for t in self.desired.streaming.topics if t.tool == tool and t.dataset == dataset)

    @property
    def dlq(self) -> str:
        return self.desired.streaming.dlq_topic

    @property
    def database(self) -> str:
        return self.desired.warehouse.database


def new_tenant(prefix: str = "gt", retention_days: int | None = None) -> tuple[dict, list]:
    manifest = _yaml("municipality-guetersloh.yaml")
    manifest["metadata"]["name"] = f"{prefix}{uuid.uuid4().hex[:8]}"
    if retention_days:
        manifest["spec"]["retentionDays"] = retention_days
    manifest["spec"]["tools"].append({"name": "verkehrszaehlung"})
    return manifest, tools()


def provision(admin_config: dict, warehouse_client, prefix: str = "gt", retention_days: int | None = None) -> Tenant:
    """``retention_days``: the sample files are years old, older than the example's 730 days."""
    manifest, catalogue = new_tenant(prefix, retention_days)
    desired = plan(parse_municipality(manifest), catalogue)
    password = secrets.token_urlsafe(18)
    ensure(StreamingProvisioner(admin_config), desired.streaming, {desired.streaming.password_key: password})
    if warehouse_client is not None:
        ensure(WarehouseProvisioner(lambda: warehouse_client, embedded=True), desired.warehouse, {})
    return Tenant(slug=desired.slug, password=password, desired=desired, manifest=manifest)


def deprovision(admin_config: dict, warehouse_client, tenant: Tenant) -> None:
    StreamingProvisioner(admin_config).delete(tenant.desired.streaming, keep_data=False)
    if warehouse_client is not None:
        WarehouseProvisioner(lambda: warehouse_client, embedded=True).delete(tenant.desired.warehouse,
                                                                              keep_data=False)


def read_topic(admin_config: dict, topic: str, expected: int, timeout: float = 30.0, count=len) -> list:
    """Every message of ``topic`` (all partitions, from the start); waits until ``count(messages)``
    reaches ``expected`` (by default the number of messages)."""
    consumer = Consumer({**admin_config, "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        messages, deadline = [], time.monotonic() + timeout
        while count(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
        # A little longer: more than expected would be a bug worth seeing.
        for message in consumer.consume(1000, timeout=1.0):
            if message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


def committed(admin_config: dict, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**admin_config, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = consumer.committed([TopicPartition(topic, p) for p in metadata.partitions], timeout=10)
        return {tp.partition: tp.offset for tp in partitions}
    finally:
        consumer.close()


def end_offsets(admin_config: dict, topic: str) -> dict[int, int]:
    consumer = Consumer({**admin_config, "group.id": f"test-reader-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in metadata.partitions}
    finally:
        consumer.close()


def headers(message) -> dict[str, str]:
    return {key: value.decode() for key, value in (message.headers() or [])}


def drain(sink, admin_config: dict, group: str, topics: list[str], timeout: float = 60.0) -> None:
    """Step the in-process sink until the group committed every topic's end offset."""
    ends = {topic: end_offsets(admin_config, topic) for topic in topics}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _ in range(10):
            sink.step(timeout=0.2)
        if all(all(committed(admin_config, group, topic).get(p, -1) >= end for p, end in partition_ends.items()
                   if end > 0) for topic, partition_ends in ends.items()):
            return
    raise AssertionError(f"sink did not catch up with {topics} within {timeout:.0f} s")


# The warehouse in a process of its own: chDB lets one process own one data path.
_PROVISION_TABLES = """
import json, sys
sys.path.insert(0, sys.argv[1])
import sink_harness
from urbanstack import warehouse
from urbanstack.operator.models import parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
desired = plan(parse_municipality(json.loads(sys.argv[3])), sink_harness.tools())
client = warehouse.connect(sys.argv[2])
ensure(WarehouseProvisioner(lambda: client, embedded=True), desired.warehouse, {})
"""

_QUERY = """
import json, sys
from urbanstack import warehouse
client = warehouse.connect(sys.argv[1])
print(json.dumps([list(row) for row in client.query(sys.argv[2]).result_rows], default=str))
"""


def provision_tables_in_subprocess(url: str, tenant: Tenant) -> None:
    subprocess.run([sys.executable, "-c", _PROVISION_TABLES, str(Path(__file__).parent), url,
                    json.dumps(tenant.manifest)], check=True, timeout=120)


def query_in_subprocess(url: str, sql: str) -> list:
    done = subprocess.run([sys.executable, "-c", _QUERY, url, sql], check=True, timeout=120, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
