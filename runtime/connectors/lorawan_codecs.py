"""Built-in decoders for the raw payload of a few LoRaWAN devices.

Used by :mod:`urbanstack.runtime.connectors.lorawan` only when the network
server delivered no decoded payload. Each decoder was written from the vendor's
published frame description (byte layout, scaling, units, ports); the sources
are named in each decoder's docstring. A payload that does not fit the layout
(truncated, extra bytes, unknown channel, unsupported frame) raises
:class:`CodecError` with the reason; nothing is guessed.

Which decoder applies comes from the device's identity, never from the bytes:
a codec pinned by the caller, The Things Stack's Device Repository ids
(``version_ids.brand_id``/``model_id``), or ChirpStack's device-profile name
or a ``codec`` tag (:func:`choose`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


class CodecError(ValueError):
    """The payload does not fit the device's documented frame."""


@dataclass
class Decoded:
    fields: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what was left out, for the caller's warnings

    def put(self, name: str, value: Any, unit: str | None = None) -> None:
        self.fields[name] = value
        if unit:
            self.units[name] = unit


@dataclass(frozen=True)
class Options:
    """Per-device facts a payload does not carry."""

    pressure_range: tuple[float, float] | None = None   # DL-PR26: (Pmin, Pmax) in bar


def _need(payload: bytes, end: int, what: str) -> None:
    if len(payload) < end:
        raise CodecError(f"payload truncated: {what} needs byte {end} but the payload has {len(payload)} byte(s)")


# --- Milesight EM300-TH ----------------------------------------------------------------------------

def milesight_em300_th(port: int | None, payload: bytes, options: Options) -> Decoded:
    """Milesight EM300-TH (Milesight-IoT/SensorDecoders, EM300-TH README; TTN lorawan-devices
    ``vendor/milesight-iot/em300-th-codec.yaml``).

    The frame is a sequence of [channel id][channel type][value]:
    ``01 75`` battery, 1 byte unsigned, %; ``03 67`` temperature, 2 bytes signed little
    endian, 0.1 °C; ``04 68`` humidity, 1 byte unsigned, 0.5 %RH. Other channels (history
    ``20 CE``, device information ``FF ..``) are not decoded: the frame is rejected."""
    out, i = Decoded(), 0
    if not payload:
        raise CodecError("empty payload: no EM300-TH channel")
    while i < len(payload):
        _need(payload, i + 2, f"the channel header at byte {i}")
        channel, kind = payload[i], payload[i + 1]
        i += 2
        if (channel, kind) == (0x01, 0x75):
            _need(payload, i + 1, "battery (01 75)")
            out.put("battery_level", payload[i], "%")
            i += 1
        elif (channel, kind) == (0x03, 0x67):
            _need(payload, i + 2, "temperature (03 67)")
            out.put("temperature", int.from_bytes(payload[i:i + 2], "little", signed=True) / 10, "°C")
            i += 2
        elif (channel, kind) == (0x04, 0x68):
            _need(payload, i + 1, "humidity (04 68)")
            out.put("humidity", payload[i] / 2, "%")
            i += 1
        else:
            raise CodecError(f"channel {channel:02X} {kind:02X} at byte {i - 2} is not an EM300-TH reading "
                             "(only battery 01 75, temperature 03 67 and humidity 04 68 are decoded; "
                             "history and device-information frames are not)")
    return out


# --- Decentlab DL-PR26 ----------------------------------------------------------------------------

def decentlab_dl_pr26(port: int | None, payload: bytes, options: Options) -> Decoded:
    """Decentlab DL-PR26 pressure/liquid level and temperature sensor (decentlab/decentlab-decoders,
    ``DL-PR26/``; TTN lorawan-devices ``vendor/decentlab/dl-pr26-0-1.js``).

    Decentlab protocol version 2, all integers big endian: byte 0 version (2), bytes 1–2 device
    id, bytes 3–4 flags (bit n set: sensor n's words follow), then 16-bit words. Sensor 0 has two
    words: pressure ``(w0 - 16384) / 32768 * (Pmax - Pmin) + Pmin`` bar and temperature
    ``(w1 - 384) * 0.003125 - 50`` °C. Sensor 1 has one word: battery ``w / 1000`` V.
    Pmin/Pmax are the device's measuring range (ordered per device, not in the frame): without
    ``Options.pressure_range`` the pressure is left out and the raw word kept in metadata."""
    _need(payload, 5, "the header (version, device id, flags)")
    version = payload[0]
    if version != 2:
        raise CodecError(f"Decentlab protocol version {version}, expected 2")
    device_id = int.from_bytes(payload[1:3], "big")
    flags = int.from_bytes(payload[3:5], "big")
    if flags & ~0b11:
        raise CodecError(f"flags {flags:016b} name sensors a DL-PR26 does not have (only bits 0 and 1)")
    body = payload[5:]
    expected = (2 if flags & 1 else 0) + (1 if flags & 2 else 0)
    if len(body) != 2 * expected:
        raise CodecError(f"flags {flags:016b} announce {expected} word(s) ({2 * expected} bytes) after the "
                         f"header, the payload has {len(body)} byte(s)")
    words = [int.from_bytes(body[k:k + 2], "big") for k in range(0, len(body), 2)]
    out = Decoded(metadata={"decentlab_device_id": device_id, "protocol_version": version})
    if flags & 1:
        raw_pressure, raw_temperature = words[0], words[1]
        words = words[2:]
        if options.pressure_range is not None:
            low, high = options.pressure_range
            out.put("pressure", (raw_pressure - 16384) / 32768 * (high - low) + low, "bar")
            out.metadata["pressure_range_bar"] = [low, high]
        else:
            out.metadata["pressure_raw"] = raw_pressure
            out.notes.append("DL-PR26 pressure left out: the device's measuring range (Pmin, Pmax in bar) "
                             "was not given (pressure_range)")
        # (w - 384) * 0.003125 is (w - 384) / 320: the division keeps exact results exact.
        out.put("temperature", (raw_temperature - 384) / 320 - 50, "°C")
    if flags & 2:
        out.put("battery", words[0] / 1000, "V")
    if not out.fields:
        raise CodecError("flags 0: the frame carries no sensor values")
    return out


# --- Bosch Parking Lot Sensor (TPS110) ----------------------------------------------------------------

_BOSCH_NO_READING = {4: "device information", 5: "device usage", 6: "debug"}
_BOSCH_RESET = {1: "watchdog", 2: "power on", 3: "system request", 4: "other"}


def bosch_tps110(port: int | None, payload: bytes, options: Options) -> Decoded:
    """Bosch Parking Lot Sensor TPS110 (TTN lorawan-devices ``vendor/bosch/tps110.yaml`` and its
    firmware 0.29.2 codec).

    Port 1 parking status and port 2 heartbeat: byte 0 bit 0 is occupancy; a heartbeat's byte 1,
    when present, is the temperature in °C as a signed byte. Port 3 start-up: bytes 12–14 firmware
    version, byte 15 reset cause, byte 16 bit 0 occupancy. Ports 4 (device information), 5 (device
    usage) and 6 (debug) carry no observation and are rejected."""
    out = Decoded()
    if port in (1, 2):
        _need(payload, 1, "the occupancy byte")
        out.put("occupied", payload[0] & 1)
        if port == 2 and len(payload) >= 2:
            out.put("temperature", int.from_bytes(payload[1:2], "big", signed=True), "°C")
        if len(payload) > 2:
            raise CodecError(f"port {port} frame of {len(payload)} bytes: at most 2 are documented")
        out.metadata["frame"] = "parking status" if port == 1 else "heartbeat"
    elif port == 3:
        _need(payload, 17, "the start-up frame")
        out.put("occupied", payload[16] & 1)
        out.metadata.update(frame="startup", firmware_version=".".join(str(b) for b in payload[12:15]),
                            reset_cause=_BOSCH_RESET.get(payload[15], f"unknown ({payload[15]})"))
    elif port in _BOSCH_NO_READING:
        raise CodecError(f"port {port} ({_BOSCH_NO_READING[port]}) carries no observation")
    else:
        raise CodecError(f"port {port} is not a Parking Lot Sensor uplink port (1 status, 2 heartbeat, 3 start-up)")
    return out


# --- Yobiiq SD-1001 smoke detector ------------------------------------------------------------------

_YOBIIQ_CLASS = {0: "A", 1: "B", 2: "C"}
# data channel → (field, is a 0/1 state)
_YOBIIQ_DATA = {0x01: ("battery_level", False), 0x02: ("mains_power", True), 0x03: ("low_battery_alarm", True),
                0x04: ("fault_alarm", True), 0x05: ("smoke_alarm", True), 0x06: ("interconnect_alarm", True),
                0x07: ("test_button", True)}


def _state(value: int, what: str) -> int:
    if value not in (0, 1):
        raise CodecError(f"{what}: value {value}, documented are 0 and 1")
    return value


def yobiiq_sd1001(port: int | None, payload: bytes, options: Options) -> Decoded:
    """Yobiiq SD-1001 mains-powered smoke detector (Yobiiq-BV/codecs ``Codec_SD1001`` and its later
    SD-1001 codec 1.2; TTN lorawan-devices ``vendor/yobiiq/sd-1001-codec.yaml``).

    Device information (port 50, or a frame with FF at bytes 0, 4 and 8): entries ``FF <type>``:
    ``09`` hardware and ``0A`` firmware version (2 bytes: major, minor), ``16`` serial number
    (5 bytes read as hex digits), ``0F`` LoRaWAN class (1 byte: 0 A, 1 B, 2 C), ``0B`` power event
    (1 byte: 0 mains off, 1 mains on). Data frames (port 8): entries ``<channel> <type> <value>``
    with one value byte: ``01`` battery %, ``02`` mains power, ``03`` low-battery alarm, ``04``
    fault alarm, ``05`` smoke alarm, ``06`` interconnect alarm, ``07`` test button (0/1 each).
    A one-byte frame is a downlink acknowledgement; the temperature/humidity logs (channel ``80``)
    of newer firmware are not decoded."""
    if not payload:
        raise CodecError("empty payload")
    if len(payload) == 1:
        raise CodecError(f"one-byte frame {payload[0]:02X} is a downlink acknowledgement, not a reading")
    out = Decoded()
    info = port == 50 or (len(payload) > 8 and payload[0] == payload[4] == payload[8] == 0xFF)
    i = 0
    if info:
        out.metadata["frame"] = "device information"
        while i < len(payload):
            _need(payload, i + 2, f"the entry header at byte {i}")
            if payload[i] != 0xFF:
                raise CodecError(f"byte {i} is {payload[i]:02X}: device-information entries start with FF")
            kind = payload[i + 1]
            i += 2
            if kind in (0x09, 0x0A):
                _need(payload, i + 2, "a version (2 bytes)")
                name = "hardware_version" if kind == 0x09 else "firmware_version"
                out.metadata[name] = f"{payload[i]:x}.{payload[i + 1]:x}"
                i += 2
            elif kind == 0x16:
                _need(payload, i + 5, "the serial number (5 bytes)")
                out.metadata["serial_number"] = payload[i:i + 5].hex()
                i += 5
            elif kind == 0x0F:
                _need(payload, i + 1, "the device class")
                if payload[i] not in _YOBIIQ_CLASS:
                    raise CodecError(f"device class {payload[i]}, documented are 0, 1 and 2")
                out.metadata["lorawan_class"] = _YOBIIQ_CLASS[payload[i]]
                i += 1
            elif kind == 0x0B:
                _need(payload, i + 1, "the power event")
                out.put("mains_power", _state(payload[i], "power event (FF 0B)"))
                i += 1
            else:
                raise CodecError(f"device-information type FF {kind:02X} at byte {i - 2} is not documented")
        if not out.fields:
            raise CodecError("device-information frame without a power event carries no observation")
        return out
    while i < len(payload):
        _need(payload, i + 3, f"the entry at byte {i} (channel, type, value)")
        channel, value = payload[i], payload[i + 2]
        if channel == 0x80:
            raise CodecError("temperature/humidity log (channel 80) is not decoded")
        if channel not in _YOBIIQ_DATA:
            raise CodecError(f"channel {channel:02X} at byte {i} is not an SD-1001 data channel (01–07)")
        name, is_state = _YOBIIQ_DATA[channel]
        if is_state:
            out.put(name, _state(value, f"{name} (channel {channel:02X})"))
        else:
            if value > 100:
                raise CodecError(f"battery level {value} % is above 100")
            out.put(name, value, "%")
        i += 3
    return out


# --- choosing a decoder -------------------------------------------------------------------------------

Decoder = Callable[[Any, bytes, Options], Decoded]

CODECS: dict[str, Decoder] = {
    "milesight-em300-th": milesight_em300_th,
    "decentlab-dl-pr26": decentlab_dl_pr26,
    "bosch-tps110": bosch_tps110,
    "yobiiq-sd1001": yobiiq_sd1001,
}
ALIASES = {"bosch-parking-lot-sensor": "bosch-tps110", "yobiiq-sd-1001": "yobiiq-sd1001"}

# The Things Stack Device Repository ids (TheThingsNetwork/lorawan-devices: vendor/<brand>/<model>.yaml).
TTS_MODELS = {("milesight-iot", "em300-th"): "milesight-em300-th", ("decentlab", "dl-pr26"): "decentlab-dl-pr26",
              ("bosch", "tps110"): "bosch-tps110", ("yobiiq", "sd-1001"): "yobiiq-sd1001"}

# Model names that identify a device in a ChirpStack device-profile name, as lowercase letters and
# digits; matched against runs of whole words ("Milesight EM300-TH EU868" → "em300th").
PROFILE_MODELS = {"em300th": "milesight-em300-th", "dlpr26": "decentlab-dl-pr26", "tps110": "bosch-tps110",
                  "boschparkinglotsensor": "bosch-tps110", "sd1001": "yobiiq-sd1001"}


def codec_name(name: str) -> str:
    """The canonical name of a codec, or CodecError listing the known ones."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CODECS:
        raise CodecError(f"unknown codec {name!r}; built in: {', '.join(sorted(CODECS))}")
    return key


def _profile_model(profile: str) -> str | None:
    words = re.findall(r"[a-z0-9]+", profile.lower())
    for start in range(len(words)):
        for end in range(start + 1, len(words) + 1):
            found = PROFILE_MODELS.get("".join(words[start:end]))
            if found:
                return found
    return None


def choose(*, pinned: str | None = None, version_ids: Mapping[str, Any] | None = None,
           profile_name: str | None = None, tags: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """(codec, how it was chosen) from the device's identity, or None if it names no built-in codec."""
    if pinned:
        return codec_name(pinned), "pinned"
    if version_ids:
        key = (str(version_ids.get("brand_id", "")).lower(), str(version_ids.get("model_id", "")).lower())
        if key in TTS_MODELS:
            return TTS_MODELS[key], "version_ids"
    if tags and tags.get("codec"):
        return codec_name(tags["codec"]), "tag"
    if profile_name:
        found = _profile_model(profile_name)
        if found:
            return found, "device_profile"
    return None


def decode(codec: str, port: Any, payload: bytes, options: Options | None = None) -> Decoded:
    if port is not None and not isinstance(port, int):
        raise CodecError(f"f_port {port!r} is not a number")
    return CODECS[codec_name(codec)](port, payload, options or Options())
