"""Ingest → MQTT: how long after a reading is handed to Kafka does a SensorThings subscriber
receive it, against the time the sink's warehouse insert was acknowledged (the baseline of
the same run: what MQTT adds on top of storing).

A throwaway municipality (the Gütersloh example under a unique name, pedestrian counts shared
as open data) gets its topics, tables (chDB in a temporary path of this process) and broker
roles from the operator's provisioners. One producer thread sends ``--readings`` single
readings ``--interval`` seconds apart with the real Publisher; this process runs the real
Sink (``--batch-seconds``, default 1.0 as in production) with the real ObservationPublisher;
an anonymous paho-mqtt client subscribed to ``v1.1/#`` records when each reading arrives.

    .venv/bin/python bench/sensorthings_mqtt_latency.py --readings 200 --interval 0.1

Needs the local platform (``urbanstack dev up``, which starts mosquitto).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as paho
import yaml

from urbanstack import warehouse
from urbanstack.devplatform import credentials, kafka, mosquitto
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.messaging import MessagingProvisioner
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.events import Observation
from urbanstack.runtime.mqtt.publisher import ObservationPublisher
from urbanstack.runtime.producer import Publisher
from urbanstack.runtime.sink import Sink, SinkConfig
from urbanstack.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOOL, DATASET = "passantenfrequenz-wetter", "pedestrian_counts"
SENSORS = 20


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), host.processor())
    return f"{os.cpu_count()} CPUs ({model}), {memory:.1f} GiB RAM"


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms (n={len(ordered)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    args = parser.parse_args()

    settings = credentials.fill(Settings.from_env())
    mosquitto.ensure_running(settings)
    admin = kafka.admin_config(settings)
    manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
    slug = f"mb{uuid.uuid4().hex[:8]}"
    manifest["metadata"]["name"] = slug
    tools = [parse_citytool(yaml.safe_load((EXAMPLES / name).read_text()))
             for name in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml")]
    desired = plan(parse_municipality(manifest), tools)
    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='bench-mqtt-')}")
    ensure(StreamingProvisioner(admin), desired.streaming, {desired.streaming.password_key: secrets.token_urlsafe(18)})
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired.warehouse, {})
    provisioner = MessagingProvisioner(settings.mqtt_server, settings.mqtt_port, *settings.mqtt_admin())
    ensure(provisioner, desired.messaging, {"mqtt-password": secrets.token_urlsafe(18)})

    sent: dict[str, float] = {}
    stored: dict[str, float] = {}
    received: dict[str, float] = {}
    subscribed = threading.Event()
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
    subscriber.on_connect = lambda c, *_: c.subscribe("v1.1/#")
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_message = lambda _c, _u, m: received.setdefault(
        json.loads(m.payload)["parameters"]["eventId"], time.monotonic())
    subscriber.connect(settings.mqtt_server, settings.mqtt_port)
    subscriber.loop_start()
    subscribed.wait(10)

    user, password = settings.mqtt_admin()
    publisher = ObservationPublisher(settings.mqtt_server, settings.mqtt_port, user, password, settings.sta_base).start()

    def on_stored(target, schema, rows):
        now = time.monotonic()
        for event_id in rows.columns[0]:
            stored.setdefault(event_id, now)
        publisher.stored(target, schema, rows)

    config = SinkConfig(group_id=f"bench-sink-{uuid.uuid4().hex[:8]}", topic_pattern=rf"^{slug}\.[^.]+\.[^.]+$",
                        batch_seconds=args.batch_seconds)
    sink = Sink(admin, client, config, on_stored=on_stored)
    sink.start()
    for _ in range(20):
        sink.step(timeout=0.2)

    start = datetime.now(timezone.utc) - timedelta(hours=1)

    def produce(first: int, count: int, into: dict) -> None:
        with Publisher(admin) as producer:
            for i in range(first, first + count):
                event = Observation(tenant=slug, dataset=DATASET, source="bench", sensor_id=f"s{i % SENSORS:02d}",
                                    observed_at=start + timedelta(seconds=i),
                                    fields={"pedestrians": i, "location_name": "Berliner Straße"},
                                    units={"pedestrians": "persons"})
                into[event.event_id] = time.monotonic()
                producer.publish_events([event], tenant=slug, tool=TOOL)
                time.sleep(args.interval)

    def run(first: int, count: int, into: dict) -> None:
        thread = threading.Thread(target=produce, args=(first, count, into))
        thread.start()
        deadline = time.monotonic() + count * args.interval + 60
        while time.monotonic() < deadline and (thread.is_alive() or any(e not in received for e in into)):
            sink.step(timeout=0.05)

    load_before = load()
    # New Datastreams first: one reading of each sensor (their topics join the dataset's role).
    warmup: dict[str, float] = {}
    run(0, SENSORS, warmup)
    run(SENSORS, args.readings, sent)
    sink.close()
    publisher.close()
    subscriber.disconnect()
    subscriber.loop_stop()

    first_seen = [received[e] - warmup[e] for e in warmup if e in received]
    to_stored = [stored[e] - sent[e] for e in sent if e in stored]
    to_mqtt = [received[e] - sent[e] for e in sent if e in received]
    extra = [received[e] - stored[e] for e in sent if e in received and e in stored]
    print(f"machine: {machine()}; load average before {load_before}, after {load()}")
    print(f"{args.readings} readings of {SENSORS} known sensors, one every {args.interval} s, sink batch_seconds "
          f"{args.batch_seconds}; before them one reading of each sensor (new Datastreams)")
    print(f"first reading of a new Datastream, produce → MQTT:  {percentiles(first_seen)}")
    print(f"produce → warehouse insert acknowledged (baseline): {percentiles(to_stored)}")
    print(f"produce → received by an MQTT subscriber:           {percentiles(to_mqtt)}")
    print(f"insert acknowledged → received (what MQTT adds):    {percentiles(extra)}")
    print(f"not received: {len(sent) - len(to_mqtt)} (new Datastreams: {len(warmup) - len(first_seen)}); publisher published {publisher.published}, "
          f"dropped {publisher.dropped}")

    provisioner.delete(desired.messaging, keep_data=False)
    provisioner.close()
    StreamingProvisioner(admin).delete(desired.streaming, keep_data=False)


if __name__ == "__main__":
    main()
