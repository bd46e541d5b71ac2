"""LoRaWAN uplinks from The Things Stack v3 (webhook) and ChirpStack v4 (``up`` event).

The network server's payload formatter/codec decodes the radio payload;
its result (``uplink_message.decoded_payload`` in TTS, ``object`` in
ChirpStack) becomes the event's fields, nested keys joined with ``_``.
Vendor payloads written as ``{"value": 21.3, "unit": "°C"}`` give the unit;
other units stay empty unless the caller passes ``units``. Booleans become
0/1. An uplink without a decoded payload is rejected with the reason: the raw
bytes are not interpretable without the device's codec.
"""

from __future__ import annotations

from typing import Any, Mapping

from urbanstack.runtime.connectors import ParseResult
from urbanstack.runtime.connectors.textformats import field_name
from urbanstack.runtime.events import FIELD_PATTERN, EventError, Observation, parse_instant

DEFAULT_DATASET = "lorawan"


def parse_uplink(data: bytes | str, tenant: str, *, dataset: str = DEFAULT_DATASET,
                 units: Mapping[str, str] | None = None) -> ParseResult:
    """One uplink message; the format (TTS v3 or ChirpStack v4) is recognised from its keys."""
    result = ParseResult()
    ok, body = result.load_json(data)
    if not ok:
        return result
    try:
        if isinstance(body, dict) and "uplink_message" in body:
            event = _things_stack(body, tenant, dataset, units or {})
        elif isinstance(body, dict) and "deviceInfo" in body:
            event = _chirpstack(body, tenant, dataset, units or {})
        else:
            raise ValueError("not a LoRaWAN uplink: expected The Things Stack 'uplink_message' "
                             "or ChirpStack 'deviceInfo'")
    except (EventError, ValueError, TypeError, AttributeError) as exc:
        result.reject("uplink", str(exc), body)
        return result
    result.events.append(event)
    return result


def _things_stack(body: dict[str, Any], tenant: str, dataset: str, units: Mapping[str, str]) -> Observation:
    ids = body.get("end_device_ids") or {}
    uplink = body["uplink_message"]
    device = ids.get("device_id")
    if not device:
        raise ValueError("end_device_ids.device_id is missing")
    decoded = uplink.get("decoded_payload")
    if decoded is None:
        raise ValueError(f"uplink of {device} has no uplink_message.decoded_payload: "
                         "set a payload formatter for the device or application in The Things Stack")
    fields, found_units = flatten(decoded)
    location = _tts_location(uplink)
    gateways = [m.get("gateway_ids", {}).get("gateway_id") for m in uplink.get("rx_metadata") or []]
    metadata = {k: v for k, v in (
        ("dev_eui", ids.get("dev_eui")), ("application_id", (ids.get("application_ids") or {}).get("application_id")),
        ("f_port", uplink.get("f_port")), ("f_cnt", uplink.get("f_cnt")),
        ("gateways", [g for g in gateways if g] or None),
        ("location_source", location[2] if location else None),
    ) if v is not None}
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


def _chirpstack(body: dict[str, Any], tenant: str, dataset: str, units: Mapping[str, str]) -> Observation:
    info = body["deviceInfo"]
    dev_eui = info.get("devEui")
    if not dev_eui:
        raise ValueError("deviceInfo.devEui is missing")
    decoded = body.get("object")
    if decoded is None:
        raise ValueError(f"uplink of {dev_eui} has no 'object': configure a codec in the "
                         "device profile in ChirpStack so the payload is decoded")
    fields, found_units = flatten(decoded)
    metadata = {k: v for k, v in (
        ("device_name", info.get("deviceName")), ("application_name", info.get("applicationName")),
        ("tenant_name", info.get("tenantName")), ("f_port", body.get("fPort")), ("f_cnt", body.get("fCnt")),
        ("gateways", [r.get("gatewayId") for r in body.get("rxInfo") or [] if r.get("gatewayId")] or None),
    ) if v is not None}
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
