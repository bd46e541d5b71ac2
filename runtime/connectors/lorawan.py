"""LoRaWAN uplinks from The Things Stack v3 (webhook) and ChirpStack v4 (``up`` event).

The network server's payload formatter/codec decodes the radio payload;
its result (``uplink_message.decoded_payload`` in TTS, ``object`` in
ChirpStack) becomes the event's fields, nested keys joined with ``_``.
Vendor payloads written as ``{"value": 21.3, "unit": "°C"}`` give the unit;
other units stay empty unless the caller passes ``units``. Booleans become
0/1.

Without a decoded payload, the raw payload (TTS ``frm_payload``, ChirpStack
``data``) is decoded by a built-in codec (:mod:`.lorawan_codecs`) if the
device is identified as one it knows: pinned by the caller (``codec=``), by
TTS ``uplink_message.version_ids`` or by the ChirpStack device profile name or
``codec`` tag. Otherwise the uplink is rejected with the reason: the raw bytes
are not interpretable without the device's codec. A decoded payload always
wins over a built-in codec.
"""

from __future__ import annotations

from typing import Any, Mapping

import base64
import binascii

from urbanstack.runtime.connectors import ParseResult, lorawan_codecs
from urbanstack.runtime.connectors.lorawan_codecs import CodecError, Options
from urbanstack.runtime.connectors.textformats import field_name
from urbanstack.runtime.events import FIELD_PATTERN, EventError, Observation, parse_instant

DEFAULT_DATASET = "lorawan"


def parse_uplink(data: bytes | str, tenant: str, *, dataset: str = DEFAULT_DATASET,
                 units: Mapping[str, str] | None = None, codec: str | None = None,
                 pressure_range: tuple[float, float] | None = None) -> ParseResult:
    """One uplink message; the format (TTS v3 or ChirpStack v4) is recognised from its keys.

    ``codec`` pins a built-in codec (``milesight-em300-th``, ``decentlab-dl-pr26``,
    ``bosch-tps110``, ``yobiiq-sd1001``) for uplinks without a decoded payload, for
    devices the uplink does not identify. ``pressure_range`` is a DL-PR26's measuring
    range (Pmin, Pmax) in bar; without it its pressure is left out."""
    if pressure_range is not None:
        low, high = (float(v) for v in pressure_range)
        if not low < high:
            raise ValueError(f"pressure_range: Pmin {low} must be below Pmax {high} (bar)")
        pressure_range = (low, high)
    result = ParseResult()
    ok, body = result.load_json(data)
    if not ok:
        return result
    raw = _Raw(codec, Options(pressure_range=pressure_range), result.warnings)
    try:
        if isinstance(body, dict) and "uplink_message" in body:
            event = _things_stack(body, tenant, dataset, units or {}, raw)
        elif isinstance(body, dict) and "deviceInfo" in body:
            event = _chirpstack(body, tenant, dataset, units or {}, raw)
        else:
            raise ValueError("not a LoRaWAN uplink: expected The Things Stack 'uplink_message' "
                             "or ChirpStack 'deviceInfo'")
    except (EventError, ValueError, TypeError, AttributeError) as exc:
        result.reject("uplink", str(exc), body)
        return result
    result.events.append(event)
    return result


class _Raw:
    """How to treat an uplink without a decoded payload: the pinned codec and the device options."""

    def __init__(self, pinned: str | None, options: Options, warnings: list[str]) -> None:
        self.pinned, self.options, self.warnings = pinned, options, warnings

    def decode(self, device: str, missing: str, payload: Any, port: Any,
               **identity: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        """Fields, units and metadata from the built-in codec the device's identity names,
        or ValueError with the reason (``missing`` says what the network server should have set)."""
        try:
            chosen = lorawan_codecs.choose(pinned=self.pinned, **identity)
        except CodecError as exc:
            raise ValueError(f"uplink of {device}: {exc}") from None
        if chosen is None:
            raise ValueError(f"{missing}; or pin one of the platform's built-in codecs "
                             f"({', '.join(sorted(lorawan_codecs.CODECS))}) for the device")
        codec, how = chosen
        if not isinstance(payload, str) or not payload:
            raise ValueError(f"uplink of {device} has no decoded payload and no raw payload for codec {codec}")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"uplink of {device}: the raw payload is not valid base64") from None
        try:
            decoded = lorawan_codecs.decode(codec, port, raw, self.options)
        except CodecError as exc:
            raise ValueError(f"uplink of {device} (codec {codec}, port {port}, payload {raw.hex()}): {exc}") from None
        self.warnings.extend(f"{device}: {note}" for note in decoded.notes)
        return decoded.fields, decoded.units, {"codec": codec, "codec_chosen_by": how, **decoded.metadata}


def _things_stack(body: dict[str, Any], tenant: str, dataset: str, units: Mapping[str, str], raw: _Raw) -> Observation:
    ids = body.get("end_device_ids") or {}
    uplink = body["uplink_message"]
    device = ids.get("device_id")
    if not device:
        raise ValueError("end_device_ids.device_id is missing")
    decoded = uplink.get("decoded_payload")
    extra: dict[str, Any] = {}
    if decoded is None:
        fields, found_units, extra = raw.decode(
            device, f"uplink of {device} has no uplink_message.decoded_payload: set a payload formatter "
            "for the device or application in The Things Stack", uplink.get("frm_payload"), uplink.get("f_port"),
            version_ids=uplink.get("version_ids") or ids.get("version_ids"))
    else:
        fields, found_units = flatten(decoded)
    location = _tts_location(uplink)
    gateways = [m.get("gateway_ids", {}).get("gateway_id") for m in uplink.get("rx_metadata") or []]
    metadata = {k: v for k, v in (
        ("dev_eui", ids.get("dev_eui")), ("application_id", (ids.get("application_ids") or {}).get("application_id")),
        ("f_port", uplink.get("f_port")), ("f_cnt", uplink.get("f_cnt")),
        ("gateways", [g for g in gateways if g] or None),
        ("location_source", location[2] if location else None),
    ) if v is not None}
    metadata.update(extra)
    return Observation(
        tenant=tenant, dataset=dataset, source="tts", sensor_id=device,
        observed_at=parse_instant(uplink.get("received_at") or body.get("received_at"), "received_at"),
        fields=fields, units=_units(fields, found_units, units),
        lon=location[0] if location else None, lat=location[1] if location else None,
        metadata=metadata)


def _tts_location(uplink: dict[str, Any]) -> tuple[float, float, str] | None:
    """The device's own location (``locations.user``/``frm-payload``), never a gateway's."""
    for key in ("user", "frm-payload", "lora-rss"):
        place = (uplink.get("locations") or {}).get(key)
        if place and place.get("latitude") is not None and place.get("longitude") is not None:
            return place["longitude"], place["latitude"], key
    return None


def _chirpstack(body: dict[str, Any], tenant: str, dataset: str, units: Mapping[str, str], raw: _Raw) -> Observation:
    info = body["deviceInfo"]
    dev_eui = info.get("devEui")
    if not dev_eui:
        raise ValueError("deviceInfo.devEui is missing")
    decoded = body.get("object")
    extra: dict[str, Any] = {}
    if decoded is None:
        fields, found_units, extra = raw.decode(
            dev_eui, f"uplink of {dev_eui} has no 'object': configure a codec in the device profile in "
            "ChirpStack so the payload is decoded", body.get("data"), body.get("fPort"),
            profile_name=info.get("deviceProfileName"), tags=info.get("tags"))
    else:
        fields, found_units = flatten(decoded)
    metadata = {k: v for k, v in (
        ("device_name", info.get("deviceName")), ("application_name", info.get("applicationName")),
        ("tenant_name", info.get("tenantName")), ("f_port", body.get("fPort")), ("f_cnt", body.get("fCnt")),
        ("gateways", [r.get("gatewayId") for r in body.get("rxInfo") or [] if r.get("gatewayId")] or None),
    ) if v is not None}
    metadata.update(extra)
    return Observation(
        tenant=tenant, dataset=dataset, source="chirpstack", sensor_id=dev_eui.lower(),
        observed_at=parse_instant(body.get("time"), "time"),
        fields=fields, units=_units(fields, found_units, units), metadata=metadata)


def flatten(payload: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Flatten a decoded payload into fields (``{"a": {"b": 1}}`` → ``a_b``) and
    the units it states (``{"t": {"value": 1, "unit": "°C"}}`` → ``t`` in °C)."""
    if not isinstance(payload, dict):
        raise ValueError(f"decoded payload must be an object, got {type(payload).__name__}")
    fields: dict[str, Any] = {}
    units: dict[str, str] = {}

    def walk(value: Any, path: list[str]) -> None:
        name = "_".join(path) if path else "value"
        if not FIELD_PATTERN.match(name):
            name = field_name(name)
        if isinstance(value, dict):
            if "value" in value and isinstance(value.get("unit"), str):
                walk(value["value"], path)
                units[name] = value["unit"]
                return
            for key, inner in value.items():
                walk(inner, [*path, str(key)])
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(inner, [*path, str(index)])
        elif isinstance(value, bool):
            fields[name] = int(value)
        elif value is None or isinstance(value, (int, float, str)):
            fields[name] = value
        else:
            raise ValueError(f"{name}: unsupported value {value!r}")

    walk(payload, [])
    if not fields:
        raise ValueError("decoded payload is empty")
    return fields, units


def _units(fields: Mapping[str, Any], found: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
    merged = {**found, **{k: v for k, v in given.items() if k in fields}}
    return {k: v for k, v in merged.items() if k in fields}
