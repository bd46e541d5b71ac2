"""Built-in LoRaWAN codecs on the real vendor samples (../shared/fixtures/lorawan) and on
broken payloads. Expected values are worked out by hand from the documented frame layout
(see the comments); the connector must reach the same numbers."""

import base64
import json
from datetime import datetime, timezone

import pytest

from urbanstack.runtime.connectors import lorawan, lorawan_codecs
from urbanstack.runtime.connectors.lorawan_codecs import CodecError, Options

UTC = timezone.utc


def one(result):
    assert not result.rejected, [r.reason for r in result.rejected]
    (event,) = result.events
    return event


def reason(result) -> str:
    assert not result.events
    (rejection,) = result.rejected
    assert rejection.record is not None  # the whole uplink goes to the DLQ
    return rejection.reason


def with_payload(sample: bytes, payload: bytes, port: int | None = None) -> bytes:
    """The sample envelope carrying other raw bytes (and port)."""
    body = json.loads(sample)
    text = base64.b64encode(payload).decode()
    if "uplink_message" in body:
        body["uplink_message"]["frm_payload"] = text
        if port is not None:
            body["uplink_message"]["f_port"] = port
    else:
        body["data"] = text
        if port is not None:
            body["fPort"] = port
    return json.dumps(body).encode()


# Milesight EM300-TH ---------------------------------------------------------------------------------

# frm_payload "AXVcA2c0AQRoZQ==" = 01 75 5C | 03 67 34 01 | 04 68 65
#   01 75 battery: 0x5C = 92 %
#   03 67 temperature: int16 LE 0x0134 = 308 → 30.8 °C
#   04 68 humidity: 0x65 = 101 → 101 / 2 = 50.5 %
@pytest.mark.parametrize("name, sensor, at", [
    ("tts_v3_uplink_milesight_em300-th_tti_packetbroker.json", "eui-1000000000000001",
     datetime(2023, 5, 18, 8, 25, 25, 906399, tzinfo=UTC)),   # uplink_message.received_at, ns truncated
    ("chirpstack_v4_uplink_milesight_em300-th.json", "1000000000000001",
     datetime(2023, 5, 22, 7, 47, 5, 404859, tzinfo=UTC)),
])
def test_milesight_em300_th(shared, name, sensor, at):
    event = one(lorawan.parse_uplink(shared(f"lorawan/{name}"), "x", codec="milesight-em300-th"))
    assert (event.sensor_id, event.observed_at) == (sensor, at)
    assert event.fields == {"battery_level": 92, "temperature": 30.8, "humidity": 50.5}
    assert event.units == {"battery_level": "%", "temperature": "°C", "humidity": "%"}
    assert event.metadata["codec"] == "milesight-em300-th" and event.metadata["codec_chosen_by"] == "pinned"


def test_milesight_negative_temperature():
    # 03 67 9C FF: int16 LE 0xFF9C = -100 → -10.0 °C
    assert lorawan_codecs.decode("milesight-em300-th", 85, bytes.fromhex("03679CFF"), Options()).fields == {
        "temperature": -10.0}


# Decentlab DL-PR26 ----------------------------------------------------------------------------------

# frm_payload/data "AgFnAAM+gGAXDH8=" = 02 | 01 67 | 00 03 | 3E 80 60 17 | 0C 7F
#   version 2, device id 0x0167 = 359, flags 0b11: sensor 0 (2 words) and sensor 1 (1 word)
#   pressure: (0x3E80 = 16000 − 16384) / 32768 × (1 − 0) + 0 = −0.01171875 bar (range 0..1 bar)
#   temperature: (0x6017 = 24599 − 384) × 0.003125 − 50 = 75.671875 − 50 = 25.671875 °C
#   battery: 0x0C7F = 3199 / 1000 = 3.199 V
def test_decentlab_dl_pr26_with_range(shared):
    event = one(lorawan.parse_uplink(shared("lorawan/chirpstack_v4_uplink_decentlab_dl-pr26.json"), "x",
                                     codec="decentlab-dl-pr26", pressure_range=(0, 1)))
    assert event.sensor_id == "70b3d57ba0003bb8"
    assert event.observed_at == datetime(2024, 11, 10, 12, 51, 50, tzinfo=UTC)
    assert event.fields == {"pressure": -0.01171875, "temperature": 25.671875, "battery": 3.199}
    assert event.units == {"pressure": "bar", "temperature": "°C", "battery": "V"}
    assert event.metadata["decentlab_device_id"] == 359 and event.metadata["protocol_version"] == 2


def test_decentlab_without_range_leaves_pressure_out_and_says_so(shared):
    result = lorawan.parse_uplink(shared("lorawan/tts_v3_uplink_decentlab_dl-pr26.json"), "x",
                                  codec="decentlab-dl-pr26")
    event = one(result)
    assert event.sensor_id == "03022"
    assert event.observed_at == datetime(2020, 2, 6, 9, 46, 5, 234172, tzinfo=UTC)
    assert event.fields == {"temperature": 25.671875, "battery": 3.199}
    assert event.metadata["pressure_raw"] == 16000
    assert any("pressure left out" in w and "03022" in w for w in result.warnings)


def test_decentlab_battery_only_frame_and_other_range():
    # 02 0167 0002 0C7F: flags 0b10, only the battery word
    assert lorawan_codecs.decode("decentlab-dl-pr26", 1, bytes.fromhex("02016700020c7f"), Options()).fields == {
        "battery": 3.199}
    # raw 49152 is the top of the range: (49152 − 16384) / 32768 × (10 − 0) + 0 = 10 bar
    decoded = lorawan_codecs.decode("decentlab-dl-pr26", 1, bytes.fromhex("0201670001c0006017"),
                                    Options(pressure_range=(0.0, 10.0)))
    assert decoded.fields["pressure"] == 10.0


# Bosch Parking Lot Sensor ---------------------------------------------------------------------------

# frm_payload "ARI=" = 01 12 on port 2 (heartbeat): byte 0 bit 0 = 1 → occupied,
#   byte 1 = 0x12 = 18 (signed byte) → 18 °C
def test_bosch_parking_lot_sensor_heartbeat(shared):
    event = one(lorawan.parse_uplink(shared("lorawan/tts_v3_uplink_bosch_parking_lot_sensor.json"), "x",
                                     codec="bosch-parking-lot-sensor"))
    assert event.sensor_id == "eui-1000000000000001"
    assert event.observed_at == datetime(2023, 5, 19, 5, 33, 35, 641841, tzinfo=UTC)
    assert event.fields == {"occupied": 1, "temperature": 18}
    assert event.units == {"temperature": "°C"}
    assert event.metadata["frame"] == "heartbeat" and event.metadata["codec"] == "bosch-tps110"


def test_bosch_ports(shared):
    sample = shared("lorawan/tts_v3_uplink_bosch_parking_lot_sensor.json")
    # port 1 status 00: free; port 2 with byte 1 = 0xF6 → −10 °C
    assert one(lorawan.parse_uplink(with_payload(sample, b"\x00", 1), "x", codec="bosch-tps110")).fields == {
        "occupied": 0}
    assert one(lorawan.parse_uplink(with_payload(sample, b"\x00\xf6", 2), "x", codec="bosch-tps110")).fields == {
        "occupied": 0, "temperature": -10}
    # port 3 start-up: firmware 0.29.2 in bytes 12–14, reset cause 2 (power on), byte 16 occupancy
    startup = bytes(12) + bytes([0, 29, 2, 2, 1])
    event = one(lorawan.parse_uplink(with_payload(sample, startup, 3), "x", codec="bosch-tps110"))
    assert event.fields == {"occupied": 1}
    assert event.metadata["firmware_version"] == "0.29.2" and event.metadata["reset_cause"] == "power on"
    assert "port 4 (device information) carries no observation" in reason(
        lorawan.parse_uplink(with_payload(sample, b"\x01\x02", 4), "x", codec="bosch-tps110"))


# Yobiiq SD-1001 -------------------------------------------------------------------------------------

# frm_payload/data "/wkBAP8KAQX/FiQBZAAA/w8A/wsA" on port 50 (device information) =
#   FF 09 01 00 hardware 1.0 | FF 0A 01 05 firmware 1.5 | FF 16 24 01 64 00 00 serial 2401640000 |
#   FF 0F 00 class A | FF 0B 00 power event 0 = mains (AC) power off → mains_power 0
@pytest.mark.parametrize("name, sensor, at, how", [
    ("chirpstack_v4_uplink_yobiiq_sd1001.json", "8df95720000ee928",
     datetime(2024, 11, 10, 14, 55, 31, 319593, tzinfo=UTC), "device_profile"),   # profile "SD1001"
    ("tts_v3_uplink_yobiiq_sd1001.json", "smokedetector",
     datetime(2024, 11, 6, 8, 43, 11, 151969, tzinfo=UTC), "pinned"),
])
def test_yobiiq_sd1001_device_information(shared, name, sensor, at, how):
    pin = {"codec": "yobiiq-sd1001"} if how == "pinned" else {}
    event = one(lorawan.parse_uplink(shared(f"lorawan/{name}"), "x", **pin))
    assert (event.sensor_id, event.observed_at) == (sensor, at)
    assert event.fields == {"mains_power": 0}
    assert {k: event.metadata[k] for k in ("hardware_version", "firmware_version", "serial_number",
                                           "lorawan_class", "codec_chosen_by")} == {
        "hardware_version": "1.0", "firmware_version": "1.5", "serial_number": "2401640000",
        "lorawan_class": "A", "codec_chosen_by": how}


def test_yobiiq_sd1001_data_frame(shared):
    # port 8: 01 xx 64 battery 100 % | 05 xx 01 smoke alarm | 03 xx 00 low battery normal
    sample = shared("lorawan/chirpstack_v4_uplink_yobiiq_sd1001.json")
    event = one(lorawan.parse_uplink(with_payload(sample, bytes.fromhex("010164050101030100"), 8), "x"))
    assert event.fields == {"battery_level": 100, "smoke_alarm": 1, "low_battery_alarm": 0}
    assert event.units == {"battery_level": "%"}


# Choosing, broken payloads, precedence ----------------------------------------------------------------

def test_tts_version_ids_choose_the_codec(shared):
    body = json.loads(shared("lorawan/tts_v3_uplink_milesight_em300-th_tti_packetbroker.json"))
    body["uplink_message"]["version_ids"] = {"brand_id": "milesight-iot", "model_id": "em300-th",
                                             "band_id": "EU_863_870"}
    event = one(lorawan.parse_uplink(json.dumps(body), "x"))
    assert event.fields["temperature"] == 30.8 and event.metadata["codec_chosen_by"] == "version_ids"
    body["uplink_message"]["version_ids"] = {"brand_id": "acme", "model_id": "thing"}
    assert "payload formatter" in reason(lorawan.parse_uplink(json.dumps(body), "x"))


def test_chirpstack_profile_name_and_tag_choose_the_codec(shared):
    body = json.loads(shared("lorawan/chirpstack_v4_uplink_milesight_em300-th.json"))
    body["deviceInfo"]["deviceProfileName"] = "Milesight EM300-TH EU868"
    assert one(lorawan.parse_uplink(json.dumps(body), "x")).metadata["codec_chosen_by"] == "device_profile"
    body["deviceInfo"]["deviceProfileName"] = "Sensoren Rathaus"
    body["deviceInfo"]["tags"] = {"codec": "milesight-em300-th"}
    assert one(lorawan.parse_uplink(json.dumps(body), "x")).metadata["codec_chosen_by"] == "tag"
    body["deviceInfo"]["tags"] = {"codec": "acme-9000"}
    assert "unknown codec 'acme-9000'" in reason(lorawan.parse_uplink(json.dumps(body), "x"))


@pytest.mark.parametrize("codec, payload, port, expected", [
    ("milesight-em300-th", "0175", 85, "payload truncated: battery (01 75)"),
    ("milesight-em300-th", "01755C0367", 85, "payload truncated: temperature (03 67)"),
    ("milesight-em300-th", "20CE9E7446631001", 85, "channel 20 CE at byte 0 is not an EM300-TH reading"),
    ("decentlab-dl-pr26", "02016700033e806017", 1, "announce 3 word(s) (6 bytes)"),
    ("decentlab-dl-pr26", "03016700020c7f", 1, "protocol version 3, expected 2"),
    ("decentlab-dl-pr26", "020167", 1, "payload truncated: the header"),
    ("decentlab-dl-pr26", "02016700040c7f", 1, "name sensors a DL-PR26 does not have"),
    ("bosch-tps110", "", 1, "no raw payload for codec bosch-tps110"),
    ("bosch-tps110", "0112", 9, "port 9 is not a Parking Lot Sensor uplink port"),
    ("bosch-tps110", "00" * 10, 3, "the start-up frame needs byte 17"),
    ("yobiiq-sd1001", "ff0901", 50, "payload truncated: a version (2 bytes)"),
    ("yobiiq-sd1001", "ff0901000001", 50, "byte 4 is 00: device-information entries start with FF"),
    ("yobiiq-sd1001", "ff0901000501", 8, "channel FF at byte 0 is not an SD-1001 data channel"),
    ("yobiiq-sd1001", "0501", 8, "payload truncated: the entry at byte 0"),
    ("yobiiq-sd1001", "050107", 8, "smoke_alarm (channel 05): value 7"),
    ("yobiiq-sd1001", "00", 50, "downlink acknowledgement"),
])
def test_broken_payloads_are_rejections_with_reason(shared, codec, payload, port, expected):
    sample = shared("lorawan/tts_v3_uplink_yobiiq_sd1001.json")
    text = reason(lorawan.parse_uplink(with_payload(sample, bytes.fromhex(payload), port), "x", codec=codec))
    assert expected in text and "smokedetector" in text and f"codec {codec}" in text


def test_garbled_base64_is_a_rejection(shared):
    body = json.loads(shared("lorawan/chirpstack_v4_uplink_yobiiq_sd1001.json"))
    body["data"] = "/wkBAP8KAQX/Fi*QBZAAA"
    assert "not valid base64" in reason(lorawan.parse_uplink(json.dumps(body), "x"))
    del body["data"]
    assert "no raw payload" in reason(lorawan.parse_uplink(json.dumps(body), "x"))


def test_unknown_pinned_codec_is_a_rejection(shared):
    text = reason(lorawan.parse_uplink(shared("lorawan/tts_v3_uplink_bosch_parking_lot_sensor.json"), "x",
                                       codec="bosch-pls9"))
    assert "unknown codec 'bosch-pls9'" in text and "bosch-tps110" in text


def test_decoded_payload_wins_over_the_built_in_codec(shared):
    body = json.loads(shared("lorawan/tts_v3_uplink_milesight_em300-th_tti_packetbroker.json"))
    body["uplink_message"]["decoded_payload"] = {"temperature": 21.0}
    body["uplink_message"]["version_ids"] = {"brand_id": "milesight-iot", "model_id": "em300-th"}
    event = one(lorawan.parse_uplink(json.dumps(body), "x", codec="milesight-em300-th"))
    assert event.fields == {"temperature": 21.0} and "codec" not in event.metadata
    body = json.loads(shared("lorawan/chirpstack_v4_uplink_yobiiq_sd1001.json"))   # profile "SD1001"
    body["object"] = {"smokeAlarm": "Normal"}
    assert one(lorawan.parse_uplink(json.dumps(body), "x")).fields == {"smokeAlarm": "Normal"}


def test_pressure_range_must_be_ordered():
    with pytest.raises(ValueError, match="Pmin 1.0 must be below Pmax 0.0"):
        lorawan.parse_uplink(b"{}", "x", pressure_range=(1, 0))


def test_codec_errors_are_value_errors():
    with pytest.raises(CodecError):
        lorawan_codecs.decode("bosch-tps110", "2", b"\x01", Options())
