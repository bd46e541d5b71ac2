"""Pegel-Warnung as a running tool: water levels in, CAP warnings out.

Reads ``water_levels`` of its own municipality and of every municipality that shares the
dataset with it (the broker decides which, see :mod:`urbanstack.toolkit.streams`), applies
:mod:`.rules` per gauge and, for each decision:

1. publishes the warning (with its CAP document) to its own dataset ``warnings`` — the sink
   stores it like every other dataset — and waits for Kafka's acknowledgement;
2. e-mails the subscribed staff (``settings.subscribers``) and posts the CAP document to each
   webhook (``settings.webhooks``), signed per subscription;
3. commits the readings' offsets.

On start the state is rebuilt from the warnings topic, so a restart (or readings delivered
again because the offsets were not committed yet) raises nothing twice. A crash between 1
and 2 loses that one notification (at most once); the warning itself is stored.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Histogram

from urbanstack.runtime.events import Observation
from urbanstack.toolkit import Health, ToolContext
from urbanstack.toolkit import streams
from urbanstack.toolkit.notify import Notifier

from . import cap
from .rules import LEVELS_BY_NAME, GaugeState, Message, SettingsError, decide, remember, thresholds

log = logging.getLogger(__name__)
READINGS, WARNINGS = "water_levels", "warnings"
SOURCE = "pegel-warnung"


def check_settings(settings) -> None:
    thresholds(settings, "-", "-")   # the tool-wide levels must be usable before anything runs
    for key in (settings.get("gauges") or {}):
        owner, _, gauge = key.rpartition("/")
        thresholds(settings, owner, gauge)
    subscribers = settings.get("subscribers", [])
    if not isinstance(subscribers, list) or not all(isinstance(s, str) and "@" in s for s in subscribers):
        raise SettingsError("settings subscribers must be a list of e-mail addresses")
    webhooks = settings.get("webhooks", [])
    if not isinstance(webhooks, list) or not all(isinstance(w, str) and w.startswith(("https://", "http://"))
                                                 for w in webhooks):
        raise SettingsError("settings webhooks must be a list of http(s) URLs")


class PegelWarnung:
    def __init__(self, ctx: ToolContext, registry=None):
        check_settings(ctx.settings)
        self.ctx = ctx
        self.states: dict[tuple[str, str], GaugeState] = {}
        kwargs = {"registry": registry} if registry is not None else {}
        self.readings = Counter("pegel_warnung_readings", "Water-level readings read.", ["owner"], **kwargs)
        self.ignored = Counter("pegel_warnung_readings_ignored",
                               "Readings not newer than the gauge's last (duplicates, out of order).", **kwargs)
        self.sent = Counter("pegel_warnung_messages", "CAP messages raised.", ["level"], **kwargs)
        self.lag = Histogram("pegel_warnung_decision_seconds", "From reading in Kafka to notifications sent.",
                             **kwargs)

    def state(self, owner: str, gauge: str) -> GaugeState:
        return self.states.setdefault((owner, gauge), GaugeState())

    def rebuild(self, events) -> int:
        """Restore the state from the tool's own warnings (oldest first)."""
        count = 0
        for event in sorted(events, key=lambda e: e.observed_at):
            fields = event.fields
            level = LEVELS_BY_NAME.get(fields.get("level"))
            if level is None:
                continue
            remember(self.state(fields["gauge_owner"], fields["gauge"]), level,
                     Message(fields["identifier"], event.observed_at))
            count += 1
        return count

    def handle(self, readings: list[streams.Reading]) -> list[tuple[Observation, bytes]]:
        """Decide on a batch of readings (by reading time); the warnings to publish with their CAP."""
        out = []
        for reading in sorted(readings, key=lambda r: r.event.observed_at):
            event = reading.event
            value = event.fields.get("water_level")
            self.readings.labels(reading.owner).inc()
            if not isinstance(value, (int, float)):
                continue
            state = self.state(reading.owner, event.sensor_id)
            rules = thresholds(self.ctx.settings, reading.owner, event.sensor_id)
            if state.last_time is not None and event.observed_at <= state.last_time:
                self.ignored.inc()    # seen already, or older than what was decided
                continue
            decision = decide(state, rules, event.observed_at, float(value))
            if decision is None:
                continue
            gauge = cap.Gauge(owner=reading.owner, owner_name=reading.owner, sensor_id=event.sensor_id,
                              name=str(event.fields.get("station_name") or event.sensor_id),
                              water=event.fields.get("water_name"), lon=event.lon, lat=event.lat)
            document = cap.document(self.ctx.municipality, self.ctx.municipality, gauge, decision)
            ident = cap.identifier(self.ctx.municipality, gauge, decision)
            remember(state, decision.level, Message(ident, decision.observed_at))
            warning = Observation(
                tenant=self.ctx.municipality, dataset=WARNINGS, source=SOURCE,
                sensor_id=f"{reading.owner}/{event.sensor_id}", observed_at=decision.observed_at,
                fields={"level": decision.name, "msg_type": decision.msg_type, "identifier": ident,
                        "gauge_owner": reading.owner, "gauge": event.sensor_id, "station_name": gauge.name,
                        "water_level": decision.value, "threshold": decision.threshold,
                        "cap": document.decode("utf-8")},
                units={"water_level": "cm", "threshold": "cm"}, lon=event.lon, lat=event.lat)
            out.append((warning, document))
            self.sent.labels(decision.name).inc()
        return out

    def notify(self, notifier: Notifier, warning: Observation, document: bytes) -> None:
        fields = warning.fields
        subject = {"warning": "Hochwasserwarnung", "alarm": "Hochwasseralarm", "all_clear": "Entwarnung"}[
            fields["level"]]
        text = (f"{subject} – Pegel {fields['station_name']} ({fields['gauge_owner']})\n\n"
                f"Wasserstand: {fields['water_level']:.0f} cm (Schwelle {fields['threshold']:.0f} cm)\n"
                f"Messzeit: {cap.cap_time(warning.observed_at)}\n"
                f"CAP-Meldung: {fields['identifier']} ({fields['msg_type']})\n\n"
                "Diese Nachricht wurde von Pegel-Warnung (Urban Stack) gesendet.\n")
        for address in self.ctx.settings.get("subscribers", []):
            notifier.mail(address, f"[Pegel-Warnung] {subject}: {fields['station_name']}", text)
        for url in self.ctx.settings.get("webhooks", []):
            notifier.webhook(url, document, "application/cap+xml")


def main(ctx: ToolContext, health: Health, stop: threading.Event) -> None:
    tool = PegelWarnung(ctx, health.registry)
    restored = tool.rebuild(streams.replay(ctx, ctx.topic(WARNINGS)))
    log.info("state rebuilt from %d warnings", restored)
    consumer = streams.DatasetConsumer(ctx, [READINGS], group="readings")
    log.info("watching %s", ", ".join(sorted(consumer.owners)))
    producer = streams.publisher(ctx)
    notifier = Notifier(ctx)
    try:
        while not stop.is_set():
            readings = consumer.poll(timeout=0.5)
            started = time.monotonic()
            warnings = tool.handle(readings)
            if warnings:
                streams.publish(ctx, producer, [warning for warning, _ in warnings])
                for warning, document in warnings:
                    tool.notify(notifier, warning, document)
                tool.lag.observe(time.monotonic() - started)
            if readings:
                consumer.commit()
            health.beat()
    finally:
        consumer.close()
        producer.close()

