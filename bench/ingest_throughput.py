"""End-to-end ingest: producer → Kafka → sink → warehouse, events per second.

A throwaway municipality (the Gütersloh example under a unique name) gets its
topics from the operator's StreamingProvisioner and its tables, in a chDB
path of this process, from the WarehouseProvisioner. A producer process
publishes ``--events`` pedestrian counts with the real Publisher while this
process runs the real Sink; the clock stops when the last row is stored.

    .venv/bin/python bench/ingest_throughput.py --events 1000000

``--mode drain`` publishes everything first and times the sink alone.
``--wire`` chooses what the producer sends:

- ``batch`` (default): columnar ObservationBatch messages built directly, as a bulk
  producer (import, backfill, push endpoint) does;
- ``observations``: one Observation object per reading through ``publish_events``
  (the connectors' path; the Publisher packs them into batches);
- ``single``: one message per reading (how every reading travelled before batches:
  the baseline to compare against in the same run).
Needs the local platform (``urbanstack dev up``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform as host
import secrets
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from urbanstack import warehouse
from urbanstack.devplatform import kafka
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.operator import naming
from urbanstack.runtime.events import Observation, ObservationBatch, format_instant
from urbanstack.runtime.producer import Publisher, partition_of
from urbanstack.runtime.metering.consumer import ensure_meter_topic
from urbanstack.runtime.metering.emitter import MeterEmitter
from urbanstack.runtime.sink import Sink, SinkConfig
from confluent_kafka.admin import AdminClient
from urbanstack.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOOL, DATASET = "passantenfrequenz-wetter", "pedestrian_counts"
SENSORS = 200
CHUNK = 50_000


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), host.processor())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), {memory:.1f} GiB RAM, load average before the run {load}"


def publish(admin_config: dict, slug: str, events: int, done, wire: str) -> None:
    start = (datetime.now(timezone.utc) - timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    sensors = [f"s{i:03d}" for i in range(SENSORS)]
    with Publisher(admin_config) as publisher:
        for base in range(0, events, CHUNK):
            indexes = range(base, min(base + CHUNK, events))
            if wire == "batch":
                instants = {}
                for i in range(indexes.start - indexes.start % SENSORS, indexes.stop, SENSORS):
                    instants[i // SENSORS] = format_instant(start + timedelta(seconds=i // SENSORS))
                batch = ObservationBatch(
                    tenant=slug, dataset=DATASET, source="bench",
                    sensor_ids=[sensors[i % SENSORS] for i in indexes],
                    observed_at=[instants[i // SENSORS] for i in indexes],
                    fields={"pedestrians": [i % 5000 for i in indexes],
                            "pedestrians_ltr": [i % 3000 for i in indexes],
                            "pedestrians_rtl": [i % 2000 for i in indexes],
                            "location_name": ["Berliner Straße"] * len(indexes)},
                    units={"pedestrians": "persons"})
                publisher.publish_batch(batch, tool=TOOL)
                continue
            chunk = [Observation(tenant=slug, dataset=DATASET, source="bench", sensor_id=sensors[i % SENSORS],
                                 observed_at=start + timedelta(seconds=i // SENSORS),
                                 fields={"pedestrians": i % 5000, "pedestrians_ltr": i % 3000,
                                         "pedestrians_rtl": i % 2000, "location_name": "Berliner Straße"},
                                 units={"pedestrians": "persons"})
                     for i in indexes]
            if wire == "observations":
                publisher.publish_events(chunk, tenant=slug, tool=TOOL)
            else:
                topic = naming.topic(slug, TOOL, DATASET)
                partitions = publisher._partitions(topic)

                def send(deliveries, chunk=chunk):
                    for event in chunk:
                        publisher._send(deliveries, topic, event.to_json(), event.sensor_id.encode(),
                                        partition=partition_of(event.sensor_id, partitions))
                publisher._call(send)
    done.value = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=SinkConfig.batch_rows)
    parser.add_argument("--mode", choices=("concurrent", "drain"), default="concurrent")
    parser.add_argument("--wire", choices=("batch", "observations", "single"), default="batch")
    parser.add_argument("--metering", choices=("off", "on", "both"), default="off",
                        help="sink with usage metering (docs/metering.md); 'both' runs without, then with, "
                             "then without and with again, each on a fresh tenant, to compare in one run")
    args = parser.parse_args()

    settings = Settings.from_env()
    admin_config = kafka.admin_config(settings)
    print(f"machine: {machine()}")
    if args.metering == "both":
        meter_topic = f"_urbanstack-meter-bench{uuid.uuid4().hex[:6]}"
        ensure_meter_topic(admin_config, meter_topic)
        try:
            for metered in (False, True, False, True):
                print(f"--- metering {'on' if metered else 'off'}")
                run_once(args, admin_config, meter_topic if metered else None)
        finally:
            AdminClient(admin_config).delete_topics([meter_topic])
    elif args.metering == "on":
        meter_topic = f"_urbanstack-meter-bench{uuid.uuid4().hex[:6]}"
        ensure_meter_topic(admin_config, meter_topic)
        try:
            run_once(args, admin_config, meter_topic)
        finally:
            AdminClient(admin_config).delete_topics([meter_topic])
    else:
        run_once(args, admin_config, None)


_CLIENT = []


def _client():
    """One chDB path for every run of this process (one process, one chDB session)."""
    if not _CLIENT:
        _CLIENT.append(warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='urbanstack-bench-')}"))
    return _CLIENT[0]


def run_once(args, admin_config: dict, meter_topic: str | None) -> None:
    manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
    manifest["metadata"]["name"] = f"bench{uuid.uuid4().hex[:8]}"
    tools = [parse_citytool(yaml.safe_load((EXAMPLES / name).read_text()))
             for name in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml")]
    desired = plan(parse_municipality(manifest), tools)
    slug, streaming = desired.slug, StreamingProvisioner(admin_config)
    ensure(streaming, desired.streaming, {desired.streaming.password_key: secrets.token_urlsafe(18)})
    client = _client()
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired.warehouse, {})
    table = f"`{desired.warehouse.database}`.`passantenfrequenz_wetter__{DATASET}`"
    print(f"tenant {slug}: {args.events:,} events, topic with "
          f"{desired.streaming.topic(f'{slug}.{TOOL}.{DATASET}').partitions} partitions, sink batches of "
          f"{args.batch_rows:,}, producer wire format: {args.wire}")

    try:
        # spawn, not fork: this process already runs the chDB engine's threads.
        context = multiprocessing.get_context("spawn")
        produced_at = context.Value("d", 0.0)
        producer = context.Process(target=publish, args=(admin_config, slug, args.events, produced_at, args.wire))
        started = time.monotonic()
        producer.start()
        if args.mode == "drain":
            producer.join()
            print(f"producer: {args.events / (produced_at.value - started):,.0f} events/s "
                  f"({produced_at.value - started:.1f} s)")
        meter = MeterEmitter(admin_config, topic=meter_topic) if meter_topic else None
        sink = Sink(admin_config, client, SinkConfig(group_id=f"bench-{slug}", topic_pattern=rf"^{slug}\.[^.]+\.[^.]+$",
                                                     batch_rows=args.batch_rows), meter=meter)
        sink.start()
        sink_started = time.monotonic()
        cpu_started = time.process_time()     # this process: the sink, its Kafka client and chDB's threads
        try:
            first_record = None
            while sum(sink.metrics.totals[k] for k in ("stored", "duplicate", "dlq")) < args.events:
                sink.step()
                if first_record is None and sink.metrics.totals["in"]:
                    first_record = time.monotonic()
                if not producer.is_alive() and producer.exitcode:
                    raise SystemExit(f"producer failed with exit code {producer.exitcode}")
        finally:
            sink.close()
        finished = time.monotonic()
        sink_cpu = time.process_time() - cpu_started
        producer.join()
        stored = client.command(f"SELECT count() FROM {table}")
        if args.mode == "concurrent":
            print(f"producer: {args.events / (produced_at.value - started):,.0f} events/s "
                  f"({produced_at.value - started:.1f} s, sharing the CPUs with the sink and the broker)")
            print(f"end-to-end: {args.events / (finished - started):,.0f} events/s sustained "
                  f"({finished - started:.1f} s from the first produce to the last row stored; "
                  f"{first_record - sink_started:.1f} s of it the sink joining its consumer group, "
                  f"{args.events / (finished - first_record):,.0f} events/s from the first record on)")
        else:
            print(f"sink: {args.events / (finished - sink_started):,.0f} events/s "
                  f"({finished - sink_started:.1f} s to drain the backlog, of which "
                  f"{first_record - sink_started:.1f} s joining the consumer group; "
                  f"{args.events / (finished - first_record):,.0f} events/s from the first record on)")
        print(f"sink CPU: {sink_cpu:.2f} s ({sink_cpu / args.events * 1e6:.2f} µs per event; CPU time of this "
              f"process, which the machine's other load barely changes)")
        if meter is not None:
            print(f"meter events: {meter.delivered:,} delivered, {meter.dropped:,} dropped")
        print(f"rows stored: {stored:,}, duplicates: {sink.metrics.totals['duplicate']:,}, "
              f"dead-lettered: {sink.metrics.totals['dlq']:,}")
    finally:
        streaming.delete(desired.streaming, keep_data=False)


if __name__ == "__main__":
    main()
