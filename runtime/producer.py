"""Publish what a connector parsed to Kafka: events to the dataset's topic,
rejections to the tenant's dead-letter topic.

Events travel in batches (:class:`ObservationBatch`, one message per topic,
partition, source and units); the partition of a reading follows from its
``sensor_id`` (:func:`partition_of`), so the readings of one sensor stay in
order on one partition and one sink consumer sees all of them. The producer is idempotent with ``acks=all``: a retried send
never duplicates a message, and a send counts only once every in-sync replica
has it. :meth:`Publisher.publish` returns only after every message was
acknowledged; anything else raises :class:`DeliveryError`, so a caller that
advances a pull cursor after ``publish`` returned loses nothing.

**Bounded waits, one meaning of failure.** A call waits at most ``metadata_timeout``
for partition counts and ``message.timeout.ms`` (plus a short margin) for the delivery
reports of its own messages. librdkafka gives every message a final report within
``message.timeout.ms``, so when :class:`DeliveryError` is raised nothing of the call is
left queued to be written later. The error says whether some messages *may* be stored
anyway (a message timed out while the broker was writing it): sending the same records
again is then safe, because event ids follow from the records' content and the sink
drops duplicates. Each call counts only its own acknowledgements, so concurrent calls
on one producer (requests of one tenant) do not wait for each other.

**Bounded dead letters.** At most :data:`DLQ_RECORDS_PER_CALL` rejections of one call
go to the dead-letter topic one by one; the rest travel as one summary message (count,
first and last locator, the most frequent reasons), so a body of a million broken
records costs one call a thousand DLQ messages, not a million.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from urbanstack.operator import naming
from urbanstack.runtime.connectors import ParseResult, Rejection
from urbanstack.runtime.events import Observation, ObservationBatch, batch_key

# Header names shared with the sink's dead-letter records, so one consumer of
# the DLQ reads both.
HEADER_ERROR = "error"
HEADER_STAGE = "stage"
HEADER_WHERE = "where"
HEADER_TOOL = "tool"
HEADER_OMITTED = "omitted"
STAGE_CONNECTOR = "connector"

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # Fewer, larger requests: the broker shares two cores with everything else.
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    # A call waits this long (plus REPORT_MARGIN) for its reports; see the module doc.
    "message.timeout.ms": 60_000,
    "log_level": 3,
}


# Rows per batch message, and the size a message must stay under (the broker's
# default message.max.bytes is 1 MiB).
BATCH_ROWS = 2_000
MAX_MESSAGE_BYTES = 900_000
# Partition counts can grow (the operator raises them); look again this often.
METADATA_MAX_AGE = 300.0
# How long a call waits for partition counts; an unreachable broker fails here first.
METADATA_TIMEOUT = 10.0
# librdkafka scans for timed-out messages about once a second: the last report of a
# call arrives within message.timeout.ms plus this.
REPORT_MARGIN = 3.0
# Rejections of one call sent one by one; the rest become one summary message.
DLQ_RECORDS_PER_CALL = 1_000
SUMMARY_REASONS = 20
# Errors after which a message may still have been written by the broker.
_UNCERTAIN = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError.REQUEST_TIMED_OUT,
              KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND}


def partition_of(sensor_id: str, partitions: int) -> int:
    """The partition of a sensor's readings: CRC-32 of the key modulo the partition
    count, as librdkafka's default (consistent) partitioner computes it, so
    single events keyed by sensor and batches land in the same place and one
    sink consumer sees every reading of a sensor."""
    return zlib.crc32(sensor_id.encode("utf-8")) % partitions


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge ``failed`` messages of a call; send the records again.

    Nothing of the call is still queued when this is raised. ``possibly_delivered``
    is False when none of them can be stored (the broker refused them, or they were
    never sent); True when some timed out while the broker may have been writing
    them: a retry may then write them twice, which the sink's event-id dedup absorbs.
    """

    def __init__(self, message: str, failed: int, *, possibly_delivered: bool = False):
        super().__init__(message)
        self.failed = failed
        self.possibly_delivered = possibly_delivered


@dataclass(frozen=True)
class PublishReport:
    events: int
    rejections: int
    topics: dict[str, int] = field(default_factory=dict)
    summarised: int = 0   # rejections that went to the DLQ inside one summary message, not one by one


class _Deliveries:
    """The delivery reports of one call: its own outstanding count and failures, so
    calls sharing a producer neither wait for nor blame each other."""

    def __init__(self):
        self._lock = threading.Lock()
        self.pending = 0
        self.produced = 0
        self.failed = 0
        self.uncertain = 0
        self.errors: list[str] = []

    def sent(self) -> None:
        with self._lock:
            self.pending += 1
            self.produced += 1

    def unsent(self) -> None:
        with self._lock:
            self.pending -= 1
            self.produced -= 1

    def report(self, error: KafkaError | None, message) -> None:
        with self._lock:
            self.pending -= 1
            if error is None:
                return
            self.failed += 1
            if error.code() in _UNCERTAIN:
                self.uncertain += 1
            if len(self.errors) < 5:
                self.errors.append(f"{message.topic()}: {error.str()}")


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
    """A long-lived producer for one tenant (its SCRAM user) or for the platform (admin).

    Thread-safe: calls may run concurrently, each waits for its own messages only."""

    def __init__(self, kafka_config: Mapping[str, Any], *, metadata_timeout: float = METADATA_TIMEOUT):
        config = {**PRODUCER_DEFAULTS, **kafka_config}
        self._producer = Producer(config)
        self._metadata_timeout = metadata_timeout
        self._report_timeout = int(config["message.timeout.ms"]) / 1000 + REPORT_MARGIN
        self._sent_messages = 0
        self._partition_counts: dict[str, tuple[int, float]] = {}

    def _send(self, deliveries: _Deliveries, topic: str, value: bytes, key: bytes | None, headers=None,
              partition: int | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            deliveries.sent()   # before produce: another thread's poll may deliver the report at once
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=deliveries.report, **extra)
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                deliveries.unsent()
                self._producer.poll(0.05)
                continue
            except KafkaException as exc:   # refused locally (too large, fatal producer state): never sent
                deliveries.unsent()
                raise DeliveryError(f"Kafka refused a message for {topic}: {_kafka_reason(exc)}", 1) from None
            self._sent_messages += 1
            if self._sent_messages % 100 == 0:
                self._producer.poll(0)
            return

    def _call(self, send: Callable[[_Deliveries], Any]) -> Any:
        """Run ``send``, then wait for every report of what it sent; raise :class:`DeliveryError`
        unless all were acknowledged. Also when ``send`` fails half-way (a topic without
        metadata), its earlier messages are settled first, so none is left in flight."""
        deliveries = _Deliveries()
        try:
            result = send(deliveries)
        except DeliveryError as error:
            self._settle(deliveries)
            if not deliveries.produced:
                raise
            raise DeliveryError(f"{error}; {deliveries.produced} messages sent before may be stored: send the "
                                "same records again (the sink drops duplicates by event id)",
                                error.failed + deliveries.produced, possibly_delivered=True) from None
        except BaseException:
            self._settle(deliveries)
            raise
        self._settle(deliveries)
        if deliveries.pending:
            raise DeliveryError(f"{deliveries.pending} messages got no delivery report from Kafka within "
                                f"{self._report_timeout:g} s; they may still be written: send the same records "
                                "again (the sink drops duplicates by event id)",
                                deliveries.pending + deliveries.failed, possibly_delivered=True)
        if deliveries.failed:
            if deliveries.uncertain:
                raise DeliveryError(f"Kafka did not acknowledge {deliveries.failed} messages "
                                    f"(e.g. {'; '.join(deliveries.errors)}); some may have been written: send "
                                    "the same records again (the sink drops duplicates by event id)",
                                    deliveries.failed, possibly_delivered=True)
            raise DeliveryError(f"Kafka refused {deliveries.failed} messages, e.g. {'; '.join(deliveries.errors)}",
                                deliveries.failed)
        return result

    def _settle(self, deliveries: _Deliveries) -> None:
        deadline = time.monotonic() + self._report_timeout
        while deliveries.pending > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._producer.poll(min(left, 0.1))

    def publish(self, result: ParseResult, *, tenant: str, tool: str) -> PublishReport:
        """Send every event of ``result`` to ``<tenant>.<tool>.<dataset>`` and every
        rejection to the tenant's DLQ; return once Kafka acknowledged all of them."""
        def send(deliveries: _Deliveries) -> PublishReport:
            topics = self._send_events(deliveries, result.events, tenant=tenant, tool=tool)
            summarised = self._send_rejections(deliveries, result.rejected, tenant=tenant, tool=tool)
            return PublishReport(events=len(result.events), rejections=len(result.rejected), topics=dict(topics),
                                 summarised=summarised)
        return self._call(send)

    def publish_events(self, events: Iterable[Observation], *, tenant: str, tool: str) -> PublishReport:
        topics = self._call(lambda deliveries: self._send_events(deliveries, events, tenant=tenant, tool=tool))
        return PublishReport(events=sum(topics.values()), rejections=0, topics=dict(topics))

    def publish_batch(self, batch: ObservationBatch, *, tool: str) -> PublishReport:
        """Send a columnar batch (split by partition and size) and wait for the acknowledgements."""
        topic = naming.topic(batch.tenant, tool, batch.dataset)
        self._call(lambda deliveries: self._send_batch(deliveries, topic, batch))
        return PublishReport(events=len(batch), rejections=0, topics={topic: len(batch)})

    def _partitions(self, topic: str) -> int:
        cached = self._partition_counts.get(topic)
        if cached is None or time.monotonic() - cached[1] > METADATA_MAX_AGE:
            try:
                metadata = self._producer.list_topics(topic, timeout=self._metadata_timeout)
            except KafkaException as exc:
                raise DeliveryError(f"Kafka did not describe topic {topic} within {self._metadata_timeout:g} s "
                                    f"({_kafka_reason(exc)}); is the broker reachable?", 0) from None
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                reason = found.error.str() if found is not None and found.error is not None else "no partitions"
                raise DeliveryError(f"topic {topic} is not available ({reason}); is the dataset enabled for "
                                    "this municipality?", 0)
            cached = self._partition_counts[topic] = (len(found.partitions), time.monotonic())
        return cached[0]

    def _send_events(self, deliveries: _Deliveries, events: Iterable[Observation], *, tenant: str,
                     tool: str) -> Counter:
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
                self._send(deliveries, topic, event.to_json(), event.sensor_id.encode("utf-8"), partition=partition)
                continue
            group = groups[(topic, partition, batch_key(event))]
            group.append(event)
            if len(group) >= BATCH_ROWS:
                self._send_rows(deliveries, topic, partition, ObservationBatch.from_observations(group))
                group.clear()
        for (topic, partition, _key), group in groups.items():
            if group:
                self._send_rows(deliveries, topic, partition, ObservationBatch.from_observations(group))
        return topics

    def _send_batch(self, deliveries: _Deliveries, topic: str, batch: ObservationBatch) -> None:
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
                self._send_rows(deliveries, topic, partition, batch)
                continue
            for start in range(0, len(rows), BATCH_ROWS):
                self._send_rows(deliveries, topic, partition, batch.subset(rows[start:start + BATCH_ROWS]))

    def _send_rows(self, deliveries: _Deliveries, topic: str, partition: int, batch: ObservationBatch) -> None:
        payload = batch.to_json()
        if len(payload) > MAX_MESSAGE_BYTES and len(batch) > 1:
            half = len(batch) // 2
            self._send_rows(deliveries, topic, partition, batch.subset(range(half)))
            self._send_rows(deliveries, topic, partition, batch.subset(range(half, len(batch))))
            return
        self._send(deliveries, topic, payload, None, partition=partition)

    def _send_rejections(self, deliveries: _Deliveries, rejections: list[Rejection], *, tenant: str,
                         tool: str) -> int:
        """The first DLQ_RECORDS_PER_CALL rejections one by one, the rest in one summary;
        returns how many were summarised."""
        dlq = naming.dlq_topic(tenant)
        for rejection in rejections[:DLQ_RECORDS_PER_CALL]:
            headers = [(HEADER_ERROR, _header(rejection.reason)), (HEADER_STAGE, STAGE_CONNECTOR.encode()),
                       (HEADER_WHERE, _header(rejection.where)), (HEADER_TOOL, _header(tool))]
            self._send(deliveries, dlq, rejection_value(rejection.record),
                       f"{tool}:{rejection.where}".encode("utf-8"), headers)
        rest = rejections[DLQ_RECORDS_PER_CALL:]
        if rest:
            where = f"{rest[0].where} … {rest[-1].where}"
            reasons = Counter(rejection.reason for rejection in rest).most_common(SUMMARY_REASONS)
            summary = {"omitted": len(rest), "first": rest[0].where, "last": rest[-1].where,
                       "reasons": [{"reason": reason, "count": count} for reason, count in reasons]}
            headers = [(HEADER_ERROR, _header(f"{len(rest)} more rejected records of this request, not sent one by "
                                              f"one (at most {DLQ_RECORDS_PER_CALL} per request); the value "
                                              "counts their reasons")),
                       (HEADER_STAGE, STAGE_CONNECTOR.encode()), (HEADER_WHERE, _header(where)),
                       (HEADER_TOOL, _header(tool)), (HEADER_OMITTED, str(len(rest)).encode())]
            self._send(deliveries, dlq, json.dumps(summary, ensure_ascii=False).encode("utf-8"),
                       f"{tool}:{rest[0].where}".encode("utf-8"), headers)
        return len(rest)

    def flush(self) -> None:
        """Wait for every outstanding message of every call (at most one report timeout)."""
        remaining = self._producer.flush(self._report_timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages got no delivery report from Kafka within "
                                f"{self._report_timeout:g} s; is the broker reachable?", remaining,
                                possibly_delivered=True)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()


def _kafka_reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def publish(kafka_config: Mapping[str, Any], result: ParseResult, *, tenant: str, tool: str) -> PublishReport:
    """One-shot :meth:`Publisher.publish` with a producer of its own."""
    with Publisher(kafka_config) as publisher:
        return publisher.publish(result, tenant=tenant, tool=tool)
