from datetime import datetime, timezone

import pytest

from urbanstack.runtime.connectors import lorawan

SAMPLES = ["tts_v3_uplink_bosch_parking_lot_sensor.json", "tts_v3_uplink_decentlab_dl-pr26.json",
           "tts_v3_uplink_milesight_em300-th_tti_packetbroker.json", "tts_v3_uplink_yobiiq_sd1001.json",
           "chirpstack_v4_uplink_decentlab_dl-pr26.json", "chirpstack_v4_uplink_milesight_em300-th.json",
           "chirpstack_v4_uplink_yobiiq_sd1001.json"]


UNIDENTIFIED = [name for name in SAMPLES if name != "chirpstack_v4_uplink_yobiiq_sd1001.json"]


@pytest.mark.parametrize("name", UNIDENTIFIED)
def test_real_uplinks_of_unidentified_devices_are_rejected_with_reason(shared, name):
    """No decoded payload, and nothing in the uplink names the model (anonymised TTS envelopes
    without version_ids, ChirpStack profiles "Chirpstack default device profile" and
    "dev-prof-Decentlab"): no codec is tried on the bytes, the uplink keeps its reason."""
    result = lorawan.parse_uplink(shared(f"lorawan/{name}"), "x")
    assert not result.events
    (rejection,) = result.rejected
    assert ("payload formatter" in rejection.reason if name.startswith("tts") else "codec" in rejection.reason)
    assert "pin one of the platform's built-in codecs" in rejection.reason
    assert rejection.record is not None


def test_things_stack_decoded_payload(own):
    (event,) = lorawan.parse_uplink(own("tts_v3_uplink_decoded.json"), "guetersloh", dataset="klima").events
    assert event.source == "tts" and event.sensor_id == "gt-temp-01" and event.dataset == "klima"
    assert event.observed_at == datetime(2024, 7, 1, 10, 0, 5, 23000, tzinfo=timezone.utc)
    assert event.fields == {"temperature": 21.5, "humidity": 48, "battery": 3.61, "door_open": 1, "status": "ok"}
    assert event.units == {"battery": "V"}
    assert (event.lon, event.lat) == (8.3786, 51.9066)  # the device's location, not the gateway's
    assert event.metadata["dev_eui"] == "A84041000181C3E2" and event.metadata["gateways"] == ["gw-rathaus"]


def test_chirpstack_object(own):
    (event,) = lorawan.parse_uplink(own("chirpstack_v4_uplink_decoded.json"), "guetersloh",
                                    units={"battery_voltage": "V"}).events
    assert event.source == "chirpstack" and event.sensor_id == "70b3d57ba0003bb8" and event.dataset == "lorawan"
    assert event.observed_at == datetime(2024, 7, 1, 10, 15, 31, 319593, tzinfo=timezone.utc)
    assert event.fields == {"water_level": 57.2, "battery_voltage": 3.2, "sensor_errors_0": 0, "sensor_errors_1": 1}
    assert event.units == {"water_level": "cm", "battery_voltage": "V"}


def test_not_an_uplink():
    assert "not a LoRaWAN uplink" in lorawan.parse_uplink(b'{"hello": 1}', "x").rejected[0].reason
    assert "not valid JSON" in lorawan.parse_uplink(b"{", "x").rejected[0].reason
