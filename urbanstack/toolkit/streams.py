"""Kafka for a tool: read its datasets' topics (its own and those neighbours share with it),
publish readings and results to its own topics.

Which foreign topics a tool may read is decided by the broker, not by the tool: a share in
a municipality's ``spec.shares`` grants the neighbour's principal READ and DESCRIBE on
exactly that topic (``operator/plan.py``, ``_share_acls``), and a Kafka client only sees the
topics it may describe. :func:`readable_topics` therefore lists precisely the topics of a
dataset this tenant was granted.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from urbanstack.runtime.events import (BATCH_SCHEMA_VERSION, EventError, Observation, ObservationBatch)
from urbanstack.runtime.producer import Publisher, PublishReport

from .context import ToolContext

log = logging.getLogger(__name__)
METADATA_TIMEOUT = 10.0
MAX_POLL_MESSAGES = 500


class StreamError(RuntimeError):
    """Kafka refused or did not answer in time; the message names the topic, never a credential."""


@dataclass(frozen=True)
class Reading:
    """One observation from a dataset topic, with the municipality whose topic it came from."""
    owner: str
    topic: str
    partition: int
    offset: int
    event: Observation


def readable_topics(ctx: ToolContext, dataset: str, *, shared: bool = True,
                    timeout: float = METADATA_TIMEOUT) -> dict[str, str]:
    """``{topic: owner}`` of ``dataset`` of this tool that this tenant may read: its own topic
    and, with ``shared``, every neighbour's topic of the same tool and dataset shared with it."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(ctx.kafka_config() | {"log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise StreamError(ctx.redact(f"listing the topics of {ctx.municipality}: {exc.args[0].str()}")) from None
    suffix = f".{ctx.tool}.{dataset}"
    found = {}
    for name, topic in metadata.topics.items():
        if topic.error is not None or not name.endswith(suffix):
            continue
        owner = name[: -len(suffix)]
        if owner == ctx.municipality or (shared and owner):
            if ctx.topic(dataset, owner) == name:
                found[name] = owner
    return found


def decode(payload: bytes | None) -> list[Observation]:
    """The observations of one topic message: a single event or an :class:`ObservationBatch`."""
    if payload is None:
        raise EventError("empty message: expected an observation event")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"not valid JSON ({exc})") from None
    if isinstance(data, dict) and data.get("v") == BATCH_SCHEMA_VERSION:
        return ObservationBatch.from_dict(data).observations()
    return [Observation.from_dict(data)]


class DatasetConsumer:
    """A consumer group of the tool over its readable topics of some datasets.

    Offsets are committed only by :meth:`commit` (after the tool has acted on what it read),
    so a crash re-delivers, never loses; the tool must be idempotent (Pegel-Warnung is).
    A message whose event does not belong to the topic's municipality is skipped and logged:
    a neighbour's topic cannot speak for another municipality.
    """

    def __init__(self, ctx: ToolContext, datasets: Iterable[str], *, group: str = "main", shared: bool = True,
                 from_beginning: bool = True, rediscover_every: float = 60.0):
        self.ctx = ctx
        self.datasets, self.shared = tuple(datasets), shared
        self.rediscover_every = rediscover_every
        self.owners: dict[str, str] = {}
        config = ctx.kafka_config() | {
            "group.id": ctx.group(group), "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "max.poll.interval.ms": 300_000, "session.timeout.ms": 10_000, "log_level": 0,
        }
        self._consumer = Consumer(config)
        self.skipped = 0
        self._discover()

    def _discover(self) -> None:
        """(Re)subscribe to what the tenant may read now: shares come and go at runtime."""
        owners: dict[str, str] = {}
        for dataset in self.datasets:
            owners |= readable_topics(self.ctx, dataset, shared=self.shared)
        if not any(owner == self.ctx.municipality for owner in owners.values()):
            raise StreamError(f"{self.ctx.municipality} may read no topic of {self.ctx.tool} datasets "
                              f"{list(self.datasets)}; is the tool enabled for it?")
        if owners != self.owners:
            gone, new = sorted(set(self.owners) - set(owners)), sorted(set(owners) - set(self.owners))
            if self.owners:
                log.info("readable topics changed: no longer %s, now also %s", gone or "-", new or "-")
            self.owners = owners
            self._consumer.subscribe(sorted(owners))
        self._discovered = time.monotonic()

    def poll(self, timeout: float = 1.0, max_messages: int = MAX_POLL_MESSAGES) -> list[Reading]:
        if time.monotonic() - self._discovered > self.rediscover_every:
            self._discover()
        # Wait for the first message only, then take what is already fetched: consume() alone would
        # wait the whole timeout for a full batch and add that to every reading's latency.
        first = self._consumer.poll(timeout)
        messages = [] if first is None else [first, *self._consumer.consume(num_messages=max_messages - 1,
                                                                             timeout=0)]
        readings = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    # A share was withdrawn: read on without it. Losing the own topic raises in _discover.
                    log.warning("Kafka refused reading %s; looking again at what %s may read",
                                message.topic(), self.ctx.municipality)
                    self._discover()
                    continue
                log.warning("kafka: %s", self.ctx.redact(error.str()))
                continue
            owner = self.owners.get(message.topic())
            try:
                events = decode(message.value())
            except EventError as exc:
                self.skipped += 1
                log.warning("skipped a bad record in %s at offset %s: %s", message.topic(), message.offset(), exc)
                continue
            for event in events:
                if event.tenant != owner:
                    self.skipped += 1
                    log.warning("skipped an event of %r in %s's topic %s", event.tenant, owner, message.topic())
                    continue
                readings.append(Reading(owner, message.topic(), message.partition(), message.offset(), event))
        return readings

    def commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise StreamError(self.ctx.redact(f"committing offsets: {exc.args[0].str()}")) from None

    def close(self) -> None:
        self._consumer.close()


def replay(ctx: ToolContext, topic: str, *, timeout: float = 30.0) -> Iterator[Observation]:
    """Every event currently in ``topic`` (from its first offset to its end when called), without a
    consumer group: how a tool rebuilds its state from its own results after a restart."""
    consumer = Consumer(ctx.kafka_config() | {"group.id": ctx.group("replay"), "enable.auto.commit": False,
                                              "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        if metadata.topics.get(topic) is not None and metadata.topics[topic].error is not None:
            raise StreamError(f"cannot read {topic}: {metadata.topics[topic].error.str()}")
        ends = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=METADATA_TIMEOUT)
            if high > low:
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, partition, 0) for partition in ends])
        deadline = time.monotonic() + timeout
        done: set[int] = set()
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise StreamError(f"replaying {topic} took longer than {timeout:.0f} s")
            for message in consumer.consume(num_messages=MAX_POLL_MESSAGES, timeout=1.0):
                if message.error() is not None:
                    continue
                if message.offset() >= ends[message.partition()] - 1:
                    done.add(message.partition())
                try:
                    yield from decode(message.value())
                except EventError as exc:
                    log.warning("skipped a bad record in %s at offset %s: %s", topic, message.offset(), exc)
    finally:
        consumer.close()


def publisher(ctx: ToolContext) -> Publisher:
    """A producer for the tool's own dataset topics (acks=all, idempotent, bounded waits)."""
    return Publisher(ctx.kafka_config())


def publish(ctx: ToolContext, producer: Publisher, events: Iterable[Observation]) -> PublishReport:
    return producer.publish_events(events, tenant=ctx.municipality, tool=ctx.tool)
