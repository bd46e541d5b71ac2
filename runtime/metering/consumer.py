"""Meter topic → ledger. Offsets are committed after the events are recorded; whatever is
read again after a crash is recognised by its id and not counted twice.

``python -m urbanstack.runtime.metering.consumer`` runs it (settings as for the sink:
``URBANSTACK_WAREHOUSE_URL``, the Kafka identity in ``URBANSTACK_SINK_KAFKA_USER``/
``…_PASSWORD``, ``URBANSTACK_METER_TOPIC``); ``--until-idle`` stops once it has read
everything (tests, backfills).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import Any, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .emitter import METER_TOPIC
from .events import InvalidEvent, MeterEvent
from .ledger import Ledger

log = logging.getLogger(__name__)

METER_PARTITIONS = 3
METER_RETENTION_MS = 90 * 24 * 3600 * 1000   # longer than any grace period: a statement can be rebuilt


def ensure_meter_topic(admin_config: Mapping[str, Any], topic: str = METER_TOPIC,
                       partitions: int = METER_PARTITIONS) -> None:
    """Create the meter topic if it is missing (needs the platform's Kafka admin)."""
    admin = AdminClient(dict(admin_config))
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": str(METER_RETENTION_MS)})],
                                  request_timeout=15)
    try:
        futures[topic].result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


class MeterConsumer:
    def __init__(self, kafka_config: Mapping[str, Any], ledger: Ledger, *, topic: str = METER_TOPIC,
                 group_id: str = "urbanstack-metering", max_messages: int = 5_000):
        self.ledger, self.topic, self.max_messages = ledger, topic, max_messages
        self._consumer = Consumer({**kafka_config, "group.id": group_id, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "log_level": 3})
        self._consumer.subscribe([topic])
        self.recorded = self.duplicates = self.conflicts = self.invalid = 0

    def step(self, timeout: float = 0.5) -> int:
        """Read what is there (at most ``max_messages``), record it, commit; the messages read."""
        messages = self._consumer.consume(self.max_messages, timeout=timeout)
        events, offsets = [], {}
        for message in messages:
            if message.error() is not None:
                if message.error().fatal():
                    raise KafkaException(message.error())
                continue
            try:
                events.append(MeterEvent.from_json(message.value()))
            except InvalidEvent as exc:
                self.invalid += 1
                log.error("meter event at %s[%d]@%d refused: %s", message.topic(), message.partition(),
                          message.offset(), exc)
            offsets[(message.topic(), message.partition())] = message.offset() + 1
        if events:
            result = self.ledger.record(events)
            self.recorded += result.new
            self.duplicates += result.duplicates
            self.conflicts += result.conflicts
        if offsets:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        return len(messages)

    def caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        for tp in self._consumer.position(assignment):
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            if tp.offset < high and not (tp.offset < 0 and high == 0):
                return False
        return True

    def run(self, stop: threading.Event | None = None, until_idle: float | None = None) -> None:
        """Until ``stop`` is set; with ``until_idle``, also once everything is read and nothing
        new came for that many seconds."""
        stop = stop or threading.Event()
        idle_since = None
        while not stop.is_set():
            if self.step():
                idle_since = None
            elif until_idle is not None:
                if self.caught_up():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= until_idle:
                        return

    def close(self) -> None:
        self._consumer.close()


def main(argv: list[str] | None = None) -> None:
    import os

    from urbanstack import warehouse
    from urbanstack.settings import Settings

    parser = argparse.ArgumentParser(description="Record meter events in the usage ledger.")
    parser.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                        help="stop once everything is read and nothing new came for this long")
    parser.add_argument("--group", default=os.environ.get("URBANSTACK_METERING_GROUP", "urbanstack-metering"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    consumer = MeterConsumer(settings.sink_kafka_config(), Ledger(warehouse.connect(settings.warehouse_url)),
                             topic=os.environ.get("URBANSTACK_METER_TOPIC", METER_TOPIC), group_id=args.group)
    try:
        consumer.run(until_idle=args.until_idle)
    finally:
        consumer.close()
    log.info("meter events: %d recorded, %d duplicates, %d conflicts, %d invalid", consumer.recorded,
             consumer.duplicates, consumer.conflicts, consumer.invalid)


if __name__ == "__main__":
    main()
