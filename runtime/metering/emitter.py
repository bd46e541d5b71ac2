"""Sending meter events to the platform's meter topic without ever holding up the data path.

The emitter queues events in librdkafka (idempotent producer, ``acks=all``), keyed by
their id so every copy of one id lands on one partition. The queue is bounded: when it
is full (the meter topic has been unreachable for long), the event is dropped and
counted (``urbanstack_meter_events_total{outcome="dropped"}``), never waited for. A
message librdkafka could not deliver within ``message.timeout.ms`` is counted the same
way. Usage is then under-counted, visibly, rather than the data path stalling.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from confluent_kafka import KafkaException, Producer

from .events import MeterEvent

log = logging.getLogger(__name__)

METER_TOPIC = "_urbanstack-meter"
"""The platform's meter topic. It starts with ``_``, which no municipality slug can, so
it is never one of a tenant's topics (``<slug>.…``) and no tenant ACL prefix covers it."""
DEFAULT_BUFFER = 20_000
DEFAULT_DELIVERY_TIMEOUT_MS = 300_000


class MeterMetrics:
    def __init__(self, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry or CollectorRegistry()
        self.events = Counter("urbanstack_meter_events", "Meter events by outcome: delivered to the meter "
                              "topic, or dropped (buffer full or undeliverable; usage under-counted).",
                              ["outcome"], registry=self.registry)
        self.buffered = Gauge("urbanstack_meter_buffered_events", "Meter events waiting for the meter topic.",
                              registry=self.registry)
        for outcome in ("delivered", "dropped"):
            self.events.labels(outcome)


class MeterEmitter:
    """``emit`` never blocks and never raises; ``settle`` waits a bounded time for delivery."""

    def __init__(self, kafka_config: Mapping[str, Any], *, topic: str = METER_TOPIC,
                 max_buffered: int = DEFAULT_BUFFER, delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
                 metrics: MeterMetrics | None = None):
        self.topic = topic
        self.metrics = metrics or MeterMetrics()
        self._producer = Producer({**kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                   "queue.buffering.max.messages": max_buffered,
                                   "message.timeout.ms": delivery_timeout_ms, "log_level": 3})
        self._lock = threading.Lock()
        self._pending = 0
        self.delivered = 0
        self.dropped = 0
        self.healthy = True   # False after a failed delivery or a wait that timed out, until one succeeds

    def _on_delivery(self, error, _message) -> None:
        with self._lock:
            self._pending -= 1
            if error is None:
                self.delivered += 1
                self.healthy = True
            else:
                self.dropped += 1
                self.healthy = False
        self.metrics.buffered.dec()
        if error is None:
            self.metrics.events.labels("delivered").inc()
        else:
            self.metrics.events.labels("dropped").inc()
            log.warning("meter event not delivered to %s (usage under-counted): %s", self.topic, error.str())

    def emit(self, event: MeterEvent) -> bool:
        """Queue ``event``; False (and counted as dropped) when the bounded buffer is full."""
        try:
            self._producer.produce(self.topic, event.to_json(), event.id.encode(), on_delivery=self._on_delivery)
        except (BufferError, KafkaException) as exc:
            with self._lock:
                self.dropped += 1
                self.healthy = False
            self.metrics.events.labels("dropped").inc()
            log.warning("meter event dropped (%s); usage under-counted", exc)
            return False
        with self._lock:
            self._pending += 1
        self.metrics.buffered.inc()
        self._producer.poll(0)
        return True

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued event; while the topic is known to be
        unreachable, do not wait at all. True when nothing is left to deliver."""
        if not self.healthy:
            timeout = 0.0
        deadline = time.monotonic() + timeout
        while True:
            self._producer.poll(min(0.05, max(deadline - time.monotonic(), 0)))
            if self.pending == 0:
                return True
            if time.monotonic() >= deadline:
                if timeout > 0:
                    with self._lock:
                        self.healthy = False
                    log.warning("meter topic %s did not acknowledge within %.1f s; not waiting for it until "
                                "it does", self.topic, timeout)
                return False

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        if self.pending:
            log.warning("%d meter events not delivered at shutdown (usage under-counted)", self.pending)
