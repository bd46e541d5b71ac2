"""The producer's bounds without a broker: librdkafka for real, pointed at a loopback
port nothing listens on (bound, then closed), so Kafka is unreachable the way a
stopped or firewalled broker is."""

from __future__ import annotations

import socket
import threading

import pytest

from urbanstack.runtime.connectors import ParseResult, Rejection
from urbanstack.runtime.events import ObservationBatch
from urbanstack.runtime.ingest.tenants import StaticCredentials, TenantPublishers
from urbanstack.runtime.producer import DeliveryError, Publisher

TENANT = "guetersloh"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable(message_timeout_ms: int) -> dict:
    return {"bootstrap.servers": f"127.0.0.1:{closed_port()}", "message.timeout.ms": message_timeout_ms,
            "log_level": 0}   # the refused connects are the point, not news


def batch() -> ObservationBatch:
    return ObservationBatch.from_dict({"v": 2, "tenant": TENANT, "dataset": "weather", "source": "test",
                                       "sensor_id": ["s1"], "observed_at": ["2024-10-27T01:00:00Z"],
                                       "fields": {"temperature": [9.5]}})


def rejected_only() -> ParseResult:
    return ParseResult(rejected=[Rejection("line 1", "no fields", {})])


def test_an_unreachable_broker_is_a_typed_error_after_the_metadata_timeout():
    """Before: a raw KafkaException after a fixed 30 s lookup."""
    publisher = Publisher(unreachable(10_000), metadata_timeout=1)
    with pytest.raises(DeliveryError, match="did not describe topic guetersloh.tool.weather within 1 s") as error:
        publisher.publish_batch(batch(), tool="tool")
    assert error.value.possibly_delivered is False and error.value.failed == 0


def test_a_delivery_timeout_leaves_nothing_queued_and_says_the_records_may_be_stored():
    """The wait covers message.timeout.ms, so when the error comes every message has its
    final report: none is written later behind the caller's back. A timed-out message
    may have been in flight, so the error does not claim it was not stored."""
    publisher = Publisher(unreachable(1_500))
    with pytest.raises(DeliveryError, match="some may have been written: send the same records again") as error:
        publisher.publish(rejected_only(), tenant=TENANT, tool="tool")
    assert error.value.possibly_delivered is True and error.value.failed == 1
    publisher.flush()   # would raise, the broker being unreachable, if a message were still queued


def test_requests_of_one_tenant_do_not_wait_for_each_other():
    """A request stuck on its DLQ message's delivery timeout (3 s) and one failing at the
    metadata lookup (0.5 s), sent right after it through the same tenant's producer: the
    second is answered first. Before, the tenant's lock made it wait for the first."""
    publishers = TenantPublishers(None, StaticCredentials({TENANT: {"kafka-username": "u", "kafka-password": "p"}}),
                                  config_for=lambda tenant, credentials: unreachable(3_000),
                                  extra_config={"message.timeout.ms": 3_000}, metadata_timeout=0.5)
    finished: list[str] = []

    def run(name: str, call) -> None:
        with pytest.raises(DeliveryError):
            call()
        finished.append(name)

    slow = threading.Thread(target=run, args=("rejected-only", lambda: publishers.publish(
        rejected_only(), tenant=TENANT, tool="tool")))
    fast = threading.Thread(target=run, args=("batch", lambda: publishers.publish_batch(batch(), tool="tool")))
    slow.start()
    fast.start()
    slow.join()
    fast.join()
    assert finished == ["batch", "rejected-only"]
