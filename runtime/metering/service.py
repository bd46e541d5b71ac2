"""Metering inside ``urbanstack serve``: the meter topic, the consumer that fills the ledger,
the API's meter and the monthly freeze, as threads of the process that owns the warehouse."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from .api_meter import ApiMeter
from .consumer import MeterConsumer, ensure_meter_topic
from .emitter import MeterEmitter
from .ledger import Ledger
from .statements import Statements

log = logging.getLogger(__name__)

FREEZE_INTERVAL_SECONDS = 3600


@dataclass
class Metering:
    ledger: Ledger
    api_meter: ApiMeter
    statements: Statements
    threads: list[threading.Thread]


def start(kafka_config: dict, warehouse_client, catalogue, stop: threading.Event, *, topic: str) -> Metering:
    """Start the consumer and the freeze loop; ``kafka_config`` must be allowed to create and
    read the meter topic (on the local platform: the platform admin the sink uses)."""
    try:
        ensure_meter_topic(kafka_config, topic)
    except Exception as exc:  # noqa: BLE001 - metering must not keep the data plane from starting
        log.warning("could not create the meter topic %s (usage is not recorded until it exists): %s", topic, exc)
    ledger = Ledger(warehouse_client)

    def plan_of(slug: str) -> str:
        municipality = catalogue.municipality(slug)
        return municipality.spec.plan.name.value if municipality is not None else "small"

    statements = Statements(ledger, plan_of=plan_of)

    def consume():
        consumer = MeterConsumer(kafka_config, ledger, topic=topic)
        try:
            while not stop.is_set():
                try:
                    consumer.step()
                except Exception as exc:  # noqa: BLE001 - not committed: read again after the pause
                    log.warning("recording meter events failed, retrying: %s", str(exc).splitlines()[0][:300])
                    stop.wait(5)
        finally:
            consumer.close()

    def freeze():
        while not stop.wait(FREEZE_INTERVAL_SECONDS):
            try:
                frozen = statements.freeze_due([m.slug for m in catalogue.municipalities()])
                if frozen:
                    log.info("statements frozen for %s", ", ".join(frozen))
            except Exception as exc:  # noqa: BLE001 - tried again next hour
                log.warning("freezing statements failed: %s", str(exc).splitlines()[0][:300])

    threads = [threading.Thread(target=consume, name="metering", daemon=True),
               threading.Thread(target=freeze, name="statements", daemon=True)]
    for thread in threads:
        thread.start()
    api_meter = ApiMeter(MeterEmitter(kafka_config, topic=topic))
    api_meter.start()
    return Metering(ledger, api_meter, statements, threads)
