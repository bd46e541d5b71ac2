"""Pegel-Warnung's decisions and CAP documents, without a platform (the acceptance test in
tests/integration/test_pegel_warnung_acceptance.py runs the same code against Kafka and SMTP)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree
from prometheus_client import CollectorRegistry

from urbanstack.citytools.pegel_warnung import PegelWarnung
from urbanstack.citytools.pegel_warnung.rules import SettingsError
from urbanstack.runtime.events import Observation
from urbanstack.settings import Settings
from urbanstack.toolkit import ToolContext
from urbanstack.toolkit.streams import Reading

XSD = Path(__file__).resolve().parents[2] / "fixtures" / "cap" / "CAP-v1.2.xsd"
NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
START = datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)


def context(**settings):
    return ToolContext(municipality="rheda-wiedenbrueck", ags="05754028", tool="pegel-warnung",
                       client_id="rheda-wiedenbrueck--tool-pegel-warnung",
                       settings={"warnLevelCm": 120, "alarmLevelCm": 170, **settings},
                       platform=Settings.from_env({}), kafka_username="muni-rheda-wiedenbrueck")


def reading(minutes, value, gauge="ems-gt-1", owner="guetersloh"):
    event = Observation(tenant=owner, dataset="water_levels", source="pegelonline", sensor_id=gauge,
                        observed_at=START + timedelta(minutes=minutes),
                        fields={"water_level": float(value), "station_name": "Gütersloh Dalke", "water_name": "Dalke"},
                        lon=8.383, lat=51.906)
    return Reading(owner, f"{owner}.pegel-warnung.water_levels", 0, minutes, event)


def hydrograph(step=15):
    """Rises from 80 cm to 260 cm and falls back to 60 cm, a reading every ``step`` minutes."""
    levels = list(range(80, 261, 20)) + list(range(250, 59, -20))
    return [reading(i * step, level) for i, level in enumerate(levels)]


def tool(**settings):
    return PegelWarnung(context(**settings), CollectorRegistry())


def kinds(warnings):
    return [(w.fields["level"], w.fields["msg_type"]) for w, _ in warnings]


def test_one_warning_one_alarm_one_all_clear_per_crossing():
    out = tool().handle(hydrograph())
    assert kinds(out) == [("warning", "Alert"), ("alarm", "Update"), ("all_clear", "Cancel")]
    warning, alarm, clear = (w for w, _ in out)
    assert warning.fields["water_level"] == 120 and alarm.fields["water_level"] == 180
    assert clear.fields["water_level"] < 120 - 10   # hysteresis: all-clear only 10 cm below the warn level
    assert {w.sensor_id for w, _ in out} == {"guetersloh/ems-gt-1"} and {w.tenant for w, _ in out} == {
        "rheda-wiedenbrueck"}


def test_duplicates_and_out_of_order_readings_change_nothing():
    readings = hydrograph()
    pegel = tool()
    first = pegel.handle(readings)
    assert pegel.handle(readings) == []                       # the same readings again
    assert pegel.handle(list(reversed(readings))) == []        # and in reverse order
    shuffled = tool().handle(readings[::2] + readings[1::2])   # one batch out of order: sorted by reading time
    assert kinds(shuffled) == kinds(first)


def test_a_level_hovering_at_the_threshold_raises_no_storm():
    values = [100, 121, 118, 122, 115, 121, 119, 123]   # around 120, never 10 cm below
    assert kinds(tool().handle([reading(i, v) for i, v in enumerate(values)])) == [("warning", "Alert")]


def test_rate_of_rise_warns_below_the_warn_level():
    readings = [reading(0, 40), reading(20, 60), reading(40, 90)]  # +50 cm in 40 min: 75 cm/h
    assert kinds(tool(riseCmPerHour=60).handle(readings)) == [("warning", "Alert")]
    assert kinds(tool().handle(readings)) == []


def test_per_gauge_levels_override_the_tool_wide_ones():
    pegel = tool(gauges={"guetersloh/ems-gt-1": {"warnLevelCm": 200, "alarmLevelCm": 300}})
    assert kinds(pegel.handle(hydrograph())) == [("warning", "Alert"), ("all_clear", "Cancel")]


def test_state_rebuilt_from_the_warnings_raises_nothing_again():
    readings = hydrograph()
    first = tool()
    out = first.handle(readings[:8])                 # warning and alarm raised, then "restart"
    restarted = tool()
    assert restarted.rebuild([w for w, _ in out]) == 2
    rest = restarted.handle(readings)                # everything delivered again after the restart
    assert kinds(rest) == [("all_clear", "Cancel")]
    assert f"{out[-1][0].fields['identifier']}," in rest[0][0].fields["cap"]   # references the alarm


@pytest.mark.parametrize("settings, message", [
    ({"warnLevelCm": 200, "alarmLevelCm": 150}, "must be below"),
    ({"warnLevelCm": "hoch"}, "must be a number"),
    ({"subscribers": ["not-an-address"]}, "e-mail addresses"),
    ({"webhooks": ["ftp://x"]}, "http"),
])
def test_unusable_settings_are_refused_with_the_key(settings, message):
    with pytest.raises(SettingsError, match=message):
        tool(**settings)


def test_every_document_validates_against_the_oasis_cap_12_schema():
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    out = tool().handle(hydrograph())
    for warning, document in out:
        root = etree.fromstring(document)
        schema.assertValid(root)
        assert document.decode() == warning.fields["cap"]
        assert root.findtext("cap:info/cap:language", namespaces=NS) == "de-DE"
        assert root.findtext("cap:info/cap:area/cap:circle", namespaces=NS) == "51.906000,8.383000 5"
        polygon = root.findtext("cap:info/cap:area/cap:polygon", namespaces=NS).split()
        assert polygon[0] == polygon[-1] and len(polygon) >= 4
    alert, update, cancel = (etree.fromstring(d) for _, d in out)
    assert alert.find("cap:references", NS) is None
    first = f"{alert.findtext('cap:sender', namespaces=NS)},{alert.findtext('cap:identifier', namespaces=NS)}," \
            f"{alert.findtext('cap:sent', namespaces=NS)}"
    assert update.findtext("cap:references", namespaces=NS) == first
    assert cancel.findtext("cap:references", namespaces=NS).split(" ")[0] == first
    assert [d.findtext("cap:info/cap:severity", namespaces=NS) for d in (alert, update, cancel)] == [
        "Moderate", "Severe", "Minor"]
    assert alert.findtext("cap:sent", namespaces=NS) == "2026-11-20T07:30:00+01:00"  # 06:30Z reading, local time


def test_the_same_reading_gives_the_same_document():
    assert tool().handle(hydrograph()) == tool().handle(hydrograph())
