"""Impact figures of the platform: how many municipalities are on it, how many residents
they have, what they use. As Prometheus gauges (on the API's ``/metrics``) and as a dict
for ``GET /api/v1/impact``.

Residents are the populations the operator writes into ``status.usage.residents`` from the
Destatis directory of municipalities, **as of 31.12.2023**; only municipalities whose phase
is ``Ready`` count as reached. Readings per day come from the usage ledger.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from .events import READINGS_INGESTED
from .ledger import Ledger

POPULATION_AS_OF = "2023-12-31"


class Impact:
    def __init__(self, catalogue, ledger: Ledger | None = None, cache_seconds: float = 60.0):
        self.catalogue, self.ledger, self.cache_seconds = catalogue, ledger, cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    def figures(self) -> dict:
        """Computed at most once per ``cache_seconds``, however often it is asked for."""
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= self.cache_seconds:
                self._cached = (time.monotonic(), self._compute())
            return self._cached[1]

    def _compute(self) -> dict:
        municipalities = self.catalogue.municipalities()
        ready = [m for m in municipalities if m.status is not None and m.status.phase is not None
                 and getattr(m.status.phase, "value", m.status.phase) == "Ready"]
        ready_slugs = {m.slug for m in ready}
        residents = sum((m.status.usage.residents or 0) for m in ready if m.status.usage is not None)
        per_tool: dict[str, int] = {}
        for municipality in ready:
            for tool in municipality.spec.tools:
                per_tool[tool.name] = per_tool.get(tool.name, 0) + 1
        datasets = sum(1 for d in self.catalogue.datasets() if d.owner in ready_slugs)
        readings = None
        if self.ledger is not None:
            end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
            try:
                totals = self.ledger.totals(end - timedelta(hours=24), end)
                readings = sum(t.get(READINGS_INGESTED, 0) for t in totals.values())
            except Exception:  # noqa: BLE001 - shown as unknown, never an error on /metrics
                readings = None
        return {"municipalities": len(municipalities), "municipalities_ready": len(ready),
                "residents_reached": residents, "population_as_of": POPULATION_AS_OF,
                "datasets_in_use": datasets, "municipalities_per_tool": dict(sorted(per_tool.items())),
                "readings_last_24h": readings}

    # prometheus_client custom collector
    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        figures = self.figures()
        yield GaugeMetricFamily("urbanstack_municipalities", "Municipalities on the platform.",
                                value=figures["municipalities"])
        yield GaugeMetricFamily("urbanstack_municipalities_ready", "Municipalities whose phase is Ready.",
                                value=figures["municipalities_ready"])
        yield GaugeMetricFamily("urbanstack_residents_reached", "Population of the Ready municipalities per the "
                                f"Destatis directory, as of {POPULATION_AS_OF}.", value=figures["residents_reached"])
        yield GaugeMetricFamily("urbanstack_datasets_in_use", "Datasets of Ready municipalities.",
                                value=figures["datasets_in_use"])
        tools = GaugeMetricFamily("urbanstack_tool_municipalities", "Ready municipalities that switched a "
                                  "CityTool on.", labels=["tool"])
        for tool, count in figures["municipalities_per_tool"].items():
            tools.add_metric([tool], count)
        yield tools
        if figures["readings_last_24h"] is not None:
            yield GaugeMetricFamily("urbanstack_readings_last_24h", "Readings ingested in the last 24 whole hours "
                                    "(usage ledger).", value=figures["readings_last_24h"])
