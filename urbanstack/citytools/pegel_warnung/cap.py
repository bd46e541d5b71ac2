"""CAP 1.2 documents for Pegel-Warnung, in the profile German authorities use (see the DWD
samples): identifier, sender, sent with the local offset, status, msgType with references,
one ``info`` in de-DE, and an area around the gauge as polygon and circle.

A document depends only on the decision, so the same reading always yields the same bytes:
``sent`` is the time of the reading that caused the message and the identifier is derived
from tenant, gauge and that time.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .rules import ALARM, NONE, WARNING, Decision

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
LOCAL = ZoneInfo("Europe/Berlin")
RADIUS_KM = 5.0
VALID_FOR = timedelta(hours=24)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Gauge:
    owner: str           # municipality whose gauge it is
    owner_name: str
    sensor_id: str
    name: str
    water: str | None
    lon: float | None
    lat: float | None


def cap_time(value: datetime) -> str:
    """``2026-12-05T14:00:00+01:00``: CAP forbids ``Z`` and fractions; local time like the DWD's."""
    return value.astimezone(LOCAL).replace(microsecond=0).isoformat()


def sender(tenant: str) -> str:
    return f"pegel-warnung@{tenant}.urbanstack.de"


def identifier(tenant: str, gauge: Gauge, decision: Decision) -> str:
    safe = _UNSAFE.sub("_", gauge.sensor_id)[:80]
    millis = int(decision.observed_at.timestamp() * 1000)
    return f"urbanstack.{tenant}.pegel-warnung.{gauge.owner}.{safe}.{millis}.{decision.name}"


def _circle_polygon(lat: float, lon: float, radius_km: float, points: int = 12) -> str:
    coordinates = []
    for index in range(points):
        angle = 2 * math.pi * index / points
        dlat = radius_km / 111.32 * math.cos(angle)
        dlon = radius_km / (111.32 * math.cos(math.radians(lat))) * math.sin(angle)
        coordinates.append(f"{lat + dlat:.6f},{lon + dlon:.6f}")
    coordinates.append(coordinates[0])   # CAP: the first and last pair are the same
    return " ".join(coordinates)


_TEXT = {
    WARNING: ("Moderate", "Immediate", "Prepare", "Hochwasserwarnung am Pegel {name}",
              "Der Wasserstand am Pegel {name}{water} hat {value:.0f} cm erreicht und damit die Warnstufe "
              "von {threshold:.0f} cm überschritten{fast}.",
              "Verfolgen Sie die Wasserstände. Sichern Sie Keller und tief liegende Räume."),
    ALARM: ("Severe", "Immediate", "Prepare", "Hochwasseralarm am Pegel {name}",
            "Der Wasserstand am Pegel {name}{water} hat {value:.0f} cm erreicht und damit die Alarmstufe "
            "von {threshold:.0f} cm überschritten.",
            "Meiden Sie Ufer und überflutete Straßen. Folgen Sie den Anweisungen der Einsatzkräfte."),
    NONE: ("Minor", "Past", "AllClear", "Entwarnung für den Pegel {name}",
           "Der Wasserstand am Pegel {name}{water} ist auf {value:.0f} cm gefallen und liegt wieder unter "
           "der Warnstufe von {threshold:.0f} cm.",
           "Es besteht keine Hochwassergefahr mehr an diesem Pegel."),
}


def document(tenant: str, tenant_name: str, gauge: Gauge, decision: Decision) -> bytes:
    """The CAP 1.2 XML of ``decision`` for the tool of municipality ``tenant``."""
    severity, urgency, response, headline, description, instruction = _TEXT[decision.level]
    words = {"name": gauge.name, "water": f" ({gauge.water})" if gauge.water else "", "value": decision.value,
             "threshold": decision.threshold,
             "fast": " und steigt schnell" if decision.rising_fast else ""}
    ET.register_namespace("", NAMESPACE)

    def sub(parent, tag, text=None):
        element = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
        if text is not None:
            element.text = text
        return element

    alert = ET.Element(f"{{{NAMESPACE}}}alert")
    sub(alert, "identifier", identifier(tenant, gauge, decision))
    sub(alert, "sender", sender(tenant))
    sub(alert, "sent", cap_time(decision.observed_at))
    sub(alert, "status", "Actual")
    sub(alert, "msgType", decision.msg_type)
    sub(alert, "source", "Pegel-Warnung")
    sub(alert, "scope", "Public")
    if decision.references:
        sub(alert, "references", " ".join(f"{sender(tenant)},{m.identifier},{cap_time(m.sent)}"
                                          for m in decision.references))
    info = sub(alert, "info")
    sub(info, "language", "de-DE")
    sub(info, "category", "Met")
    sub(info, "event", "HOCHWASSER")
    sub(info, "responseType", response)
    sub(info, "urgency", urgency)
    sub(info, "severity", severity)
    sub(info, "certainty", "Observed")
    code = sub(info, "eventCode")
    sub(code, "valueName", "LEVEL")
    sub(code, "value", decision.name)
    sub(info, "effective", cap_time(decision.observed_at))
    sub(info, "onset", cap_time(decision.observed_at))
    if decision.level != NONE:
        sub(info, "expires", cap_time(decision.observed_at + VALID_FOR))
    sub(info, "senderName", f"Pegel-Warnung – {tenant_name}")
    sub(info, "headline", headline.format(**words))
    sub(info, "description", description.format(**words))
    sub(info, "instruction", instruction.format(**words))
    for name, value in (("WASSERSTAND", f"{decision.value:.0f} cm"), ("SCHWELLE", f"{decision.threshold:.0f} cm"),
                        ("PEGEL", f"{gauge.owner}/{gauge.sensor_id}")):
        parameter = sub(info, "parameter")
        sub(parameter, "valueName", name)
        sub(parameter, "value", value)
    area = sub(info, "area")
    if gauge.lat is not None and gauge.lon is not None:
        sub(area, "areaDesc", f"Umkreis von {RADIUS_KM:g} km um den Pegel {gauge.name} ({gauge.owner_name})")
        sub(area, "polygon", _circle_polygon(gauge.lat, gauge.lon, RADIUS_KM))
        sub(area, "circle", f"{gauge.lat:.6f},{gauge.lon:.6f} {RADIUS_KM:g}")
    else:
        sub(area, "areaDesc", f"Pegel {gauge.name} ({gauge.owner_name}), Lage unbekannt")
    ET.indent(alert, space="  ")
    return ET.tostring(alert, encoding="utf-8", xml_declaration=True)
