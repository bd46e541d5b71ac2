"""Metering inside ``urbanstack serve``: the meter topic, the consumer that fills the ledger,
the API's meter and the monthly freeze, as threads of the process that owns the warehouse."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta

from .api_meter import ApiMeter
from .consumer import MeterConsumer, ensure_meter_topic
from .emitter import MeterEmitter
from .ledger import Ledger
from .prices import DEFAULT_PRICE_BOOK, PriceBook, load_price_book
from .statements import DEFAULT_GRACE, Statements
from .samples import storage_events, tool_day_events

log = logging.getLogger(__name__)

FREEZE_INTERVAL_SECONDS = 3600
STORAGE_SAMPLE_SECONDS = 900   # several tries per hour; only the first sample of an hour counts


@dataclass
class Metering:
    ledger: Ledger
    api_meter: ApiMeter
    statements: Statements
    threads: list[threading.Thread]


def statement_settings(environ=None) -> tuple[PriceBook, timedelta]:
    """The price book (``URBANSTACK_PRICE_BOOK``: a JSON file, docs/metering.md; default the
    built-in example) and the grace period before a month is frozen
    (``URBANSTACK_STATEMENT_GRACE_DAYS``, default 5)."""
    environ = os.environ if environ is None else environ
    path = environ.get("URBANSTACK_PRICE_BOOK", "")
    try:
        prices = load_price_book(path) if path else DEFAULT_PRICE_BOOK
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"URBANSTACK_PRICE_BOOK={path}: not a usable price book ({exc})") from None
    raw = environ.get("URBANSTACK_STATEMENT_GRACE_DAYS", str(DEFAULT_GRACE.days))
    try:
        days = int(raw)
        if days < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"URBANSTACK_STATEMENT_GRACE_DAYS must be a whole number of days ≥ 0, got {raw!r}") from None
    return prices, timedelta(days=days)


def start(kafka_config: dict, warehouse_client, catalogue, stop: threading.Event, *, topic: str) -> Metering:
    """Start the consumer and the freeze loop; ``kafka_config`` must be allowed to create and
    read the meter topic (on the local platform: the platform admin the sink uses)."""
    prices, grace = statement_settings()
    try:
        ensure_meter_topic(kafka_config, topic)
    except Exception as exc:  # noqa: BLE001 - metering must not keep the data plane from starting
        log.warning("could not create the meter topic %s (usage is not recorded until it exists): %s", topic, exc)
    ledger = Ledger(warehouse_client)

    def plan_of(slug: str) -> str:
        municipality = catalogue.municipality(slug)
        return municipality.spec.plan.name.value if municipality is not None else "small"

    statements = Statements(ledger, prices=prices, grace=grace, plan_of=plan_of)

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

    emitter = MeterEmitter(kafka_config, topic=topic)

    def sample_storage():
        while True:
            try:
                municipalities = catalogue.municipalities()
                for event in storage_events(warehouse_client, [m.slug for m in municipalities]) + \
                        tool_day_events(municipalities):
                    emitter.emit(event)
            except Exception as exc:  # noqa: BLE001 - tried again at the next sample
                log.warning("sampling storage and tool-days failed: %s", str(exc).splitlines()[0][:300])
            if stop.wait(STORAGE_SAMPLE_SECONDS):
                return

    threads = [threading.Thread(target=consume, name="metering", daemon=True),
               threading.Thread(target=freeze, name="statements", daemon=True),
               threading.Thread(target=sample_storage, name="storage-meter", daemon=True)]
    for thread in threads:
        thread.start()
    api_meter = ApiMeter(emitter)
    api_meter.start()
    return Metering(ledger, api_meter, statements, threads)
