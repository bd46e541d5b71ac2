"""Publish what a connector parsed to Kafka: events to the dataset's topic,
rejections to the tenant's dead-letter topic.

Events travel in batches (:class:`ObservationBatch`, one message per topic,
partition, source and units); the partition of a reading follows from its
``sensor_id`` (:func:`partition_of`), so the readings of one sensor stay in
order on one partition and one sink consumer sees all of them. The producer is idempotent with ``acks=all``: a retried send
never duplicates a message, and a send counts only once every in-sync replica
has it. :meth:`Publisher.publish` returns only after every message was
acknowledged; anything the broker refused raises :class:`DeliveryError`, so a
caller that advances a pull cursor after ``publish`` returned loses nothing.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from urbanstack.operator import naming
from urbanstack.runtime.connectors import ParseResult, Rejection
from urbanstack.runtime.events import Observation, ObservationBatch, batch_key

# Header names shared with the sink's dead-letter records, so one consumer of
# the DLQ reads both.
HEADER_ERROR = "error"
HEADER_STAGE = "stage"
HEADER_WHERE = "where"
HEADER_TOOL = "tool"
STAGE_CONNECTOR = "connector"

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # Fewer, larger requests: the broker shares two cores with everything else.
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "message.timeout.ms": 120_000,
    "log_level": 3,
}


# Rows per batch message, and the size a message must stay under (the broker's
# default message.max.bytes is 1 MiB).
BATCH_ROWS = 2_000
MAX_MESSAGE_BYTES = 900_000
# Partition counts can grow (the operator raises them); look again this often.
METADATA_MAX_AGE = 300.0


def partition_of(sensor_id: str, partitions: int) -> int:
    """The partition of a sensor's readings: CRC-32 of the key modulo the partition
    count, as librdkafka's default (consistent) partitioner computes it, so
    single events keyed by sensor and batches land in the same place and one
    sink consumer sees every reading of a sensor."""
    return zlib.crc32(sensor_id.encode("utf-8")) % partitions


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge some messages; they must be sent again."""

    def __init__(self, message: str, failed: int):
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class PublishReport:
    events: int
    rejections: int
    topics: dict[str, int] = field(default_factory=dict)


def rejection_value(record: Any) -> bytes:
    """The original record as bytes: raw bytes and text as they were, anything
    decoded (a JSON object, a CSV row as a list) as JSON."""
    if record is None:
        return b""
    if isinstance(record, (bytes, bytearray)):
        return bytes(record)
    if isinstance(record, str):
        return record.encode("utf-8")
    return json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")


def _header(value: str) -> bytes:
    # Kafka headers have no size limit of their own, but a reason quoting a
    # whole record would bloat every DLQ message.
    return value[:2000].encode("utf-8")


class Publisher:
    """A long-lived producer for one tenant (its SCRAM user) or for the platform (admin)."""

    def __init__(self, kafka_config: Mapping[str, Any], *, flush_timeout: float = 60.0):
        self._producer = Producer({**PRODUCER_DEFAULTS, **kafka_config})
        self._flush_timeout = flush_timeout
        self._errors: list[str] = []
        self._failed = 0
        self._sent_messages = 0
        self._partition_counts: dict[str, tuple[int, float]] = {}

    def _on_delivery(self, error: KafkaError | None, message) -> None:
        if error is not None:
            self._failed += 1
            if len(self._errors) < 5:
                self._errors.append(f"{message.topic()}: {error.str()}")

    def _send(self, topic: str, value: bytes, key: bytes | None, headers=None, partition: int | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery, **extra)
                return
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                self._producer.poll(0.05)

    def publish(self, result: ParseResult, *, tenant: str, tool: str) -> PublishReport:
        """Send every event of ``result`` to ``<tenant>.<tool>.<dataset>`` and every
        rejection to the tenant's DLQ; return once Kafka acknowledged all of them."""
        topics = self._send_events(result.events, tenant=tenant, tool=tool)
        self._send_rejections(result.rejected, tenant=tenant, tool=tool)
        self.flush()
        return PublishReport(events=len(result.events), rejections=len(result.rejected), topics=dict(topics))

    def publish_events(self, events: Iterable[Observation], *, tenant: str, tool: str) -> PublishReport:
        topics = self._send_events(events, tenant=tenant, tool=tool)
        self.flush()
        return PublishReport(events=sum(topics.values()), rejections=0, topics=dict(topics))

    def publish_batch(self, batch: ObservationBatch, *, tool: str) -> PublishReport:
        """Send a columnar batch (split by partition and size) and wait for the acknowledgements."""
        topic = naming.topic(batch.tenant, tool, batch.dataset)
        self._send_batch(topic, batch)
        self.flush()
        return PublishReport(events=len(batch), rejections=0, topics={topic: len(batch)})

    def _partitions(self, topic: str) -> int:
        cached = self._partition_counts.get(topic)
        if cached is None or time.monotonic() - cached[1] > METADATA_MAX_AGE:
            metadata = self._producer.list_topics(topic, timeout=30)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                reason = found.error.str() if found is not None and found.error is not None else "no partitions"
                raise DeliveryError(f"topic {topic} is not available ({reason}); is the dataset enabled for "
                                    "this municipality?", 0)
            cached = self._partition_counts[topic] = (len(found.partitions), time.monotonic())
        return cached[0]

    def _send_events(self, events: Iterable[Observation], *, tenant: str, tool: str) -> Counter:
        """Events without metadata travel as batches (one message per topic, partition,
        source and units, up to BATCH_ROWS rows); events with metadata one by one."""
        topics: Counter = Counter()
        topic_of: dict[str, tuple[str, int]] = {}   # dataset → (topic, its partition count), once per call
        groups: dict[tuple, list[Observation]] = defaultdict(list)
        for event in events:
            if event.tenant != tenant:
                # The ACLs would refuse it anyway; saying so here names the culprit.
                raise ValueError(f"event for tenant {event.tenant!r} cannot be published as {tenant!r}")
            known = topic_of.get(event.dataset)
            if known is None:
                topic = naming.topic(tenant, tool, event.dataset)
                known = topic_of[event.dataset] = (topic, self._partitions(topic))
            topic, partitions = known
            partition = partition_of(event.sensor_id, partitions)
            topics[topic] += 1
            if event.metadata:
                self._send(topic, event.to_json(), event.sensor_id.encode("utf-8"), partition=partition)
                continue
            group = groups[(topic, partition, batch_key(event))]
            group.append(event)
            if len(group) >= BATCH_ROWS:
                self._send_rows(topic, partition, ObservationBatch.from_observations(group))
                group.clear()
        for (topic, partition, _key), group in groups.items():
            if group:
                self._send_rows(topic, partition, ObservationBatch.from_observations(group))
        return topics

    def _send_batch(self, topic: str, batch: ObservationBatch) -> None:
        partitions = self._partitions(topic)
        placement: dict[str, int] = {}
        rows_of: dict[int, list[int]] = defaultdict(list)
        for index, sensor in enumerate(batch.sensor_ids):
            partition = placement.get(sensor)
            if partition is None:
                partition = placement[sensor] = partition_of(sensor, partitions)
            rows_of[partition].append(index)
        for partition, rows in rows_of.items():
            if len(rows) == len(batch) and len(rows) <= BATCH_ROWS:
                self._send_rows(topic, partition, batch)
                continue
            for start in range(0, len(rows), BATCH_ROWS):
                self._send_rows(topic, partition, batch.subset(rows[start:start + BATCH_ROWS]))

    def _send_rows(self, topic: str, partition: int, batch: ObservationBatch) -> None:
        payload = batch.to_json()
        if len(payload) > MAX_MESSAGE_BYTES and len(batch) > 1:
            half = len(batch) // 2
            self._send_rows(topic, partition, batch.subset(range(half)))
            self._send_rows(topic, partition, batch.subset(range(half, len(batch))))
            return
        self._send(topic, payload, None, partition=partition)
        self._sent_messages += 1
        if self._sent_messages % 100 == 0:
            self._producer.poll(0)

    def _send_rejections(self, rejections: Iterable[Rejection], *, tenant: str, tool: str) -> None:
        dlq = naming.dlq_topic(tenant)
        for rejection in rejections:
            headers = [(HEADER_ERROR, _header(rejection.reason)), (HEADER_STAGE, b"connector"),
                       (HEADER_WHERE, _header(rejection.where)), (HEADER_TOOL, _header(tool))]
            self._send(dlq, rejection_value(rejection.record), f"{tool}:{rejection.where}".encode("utf-8"),
                       headers)

    def flush(self) -> None:
        """Wait for every outstanding acknowledgement; raise if any message failed."""
        remaining = self._producer.flush(self._flush_timeout)
        failed, errors = self._failed, self._errors
        self._failed, self._errors = 0, []
        if remaining:
            raise DeliveryError(f"{remaining} messages were not acknowledged by Kafka within "
                                f"{self._flush_timeout:g} s; is the broker reachable?", remaining + failed)
        if failed:
            raise DeliveryError(f"Kafka refused {failed} messages, e.g. {'; '.join(errors)}", failed)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()


def publish(kafka_config: Mapping[str, Any], result: ParseResult, *, tenant: str, tool: str) -> PublishReport:
    """One-shot :meth:`Publisher.publish` with a producer of its own."""
    with Publisher(kafka_config) as publisher:
        return publisher.publish(result, tenant=tenant, tool=tool)
