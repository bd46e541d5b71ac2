"""Passantenfrequenz & Wetter in the Gov Hub (:mod:`urbanstack.toolkit.pages`): switching the
tool on installs the dashboard "Passanten und Wetter" in the municipality — pedestrians per
hour beside the temperature and the precipitation of the same hours, pedestrians per day, and
the counters on a map. The tool has no program of its own (connectors fill its datasets).

The dashboard is the municipality's like any other: staff may change or delete it; switching
the tool on again never overwrites it (see ``install_dashboards`` in ``runtime/hubs/gov/tools.py``).
"""

from __future__ import annotations

from pathlib import Path

from urbanstack.toolkit.pages import DashboardTemplate, ToolPages

ABOUT = ("Wie viele Menschen sind in der Innenstadt unterwegs, und wie hängt das mit dem Wetter zusammen? "
         "Die Passantenzahlen der Zählstellen (Summe je Stunde) stehen neben der Lufttemperatur (Mittel je "
         "Stunde) und dem Niederschlag (Summe je Stunde) derselben Stunden. So lässt sich ein ruhiger "
         "Samstag wegen Regen von einem wegen einer gesperrten Straße unterscheiden.\n\n"
         "Dieses Dashboard wurde beim Einschalten von *Passantenfrequenz & Wetter* angelegt; Sie können es "
         "wie jedes andere ändern.")


def dashboard_spec(municipality: str, tool: str) -> dict:
    def ref(dataset: str) -> str:
        return f"{municipality}/{tool}/{dataset}"

    def join(title: str, field: str, aggregate: str) -> dict:
        return {"type": "timeseries", "title": title, "bucket": "hour",
                "join": {"left": {"dataset": ref("pedestrian_counts"), "fields": ["pedestrians"], "aggregate": "sum"},
                         "right": {"dataset": ref("weather"), "fields": [field], "aggregate": aggregate}}}

    return {"range": "7d", "refresh_seconds": 0, "panels": [
        {"type": "text", "title": "Über dieses Dashboard", "text": ABOUT},
        join("Passanten und Temperatur je Stunde", "temperature", "avg"),
        join("Passanten und Niederschlag je Stunde", "precipitation", "sum"),
        {"type": "bar", "title": "Passanten je Tag", "dataset": ref("pedestrian_counts"), "fields": ["pedestrians"],
         "aggregate": "sum", "bucket": "day"},
        {"type": "map", "title": "Zählstellen", "dataset": ref("pedestrian_counts")},
    ]}


PAGES = ToolPages(
    name="passantenfrequenz_wetter", templates=Path(__file__).parent,
    dashboards=(DashboardTemplate(key="passanten-wetter", title="Passanten und Wetter", spec=dashboard_spec,
                                  description="Passantenzahlen der Innenstadt neben Temperatur und Niederschlag."),))
