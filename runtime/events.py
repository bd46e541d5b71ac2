"""The one normalised observation event every connector emits.

An :class:`Observation` is what travels through Kafka to the sink: who owns it
(tenant), what it belongs to (dataset), where it came from (source connector and
sensor), when it was observed (UTC), and the measured fields with their units.
Its :attr:`Observation.event_id` depends only on the identity of the record, so
ingesting the same record twice yields the same id and the sink can drop the
duplicate.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Union

FieldValue = Union[int, float, str, None]

TENANT_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DATASET_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SCHEMA_VERSION = 1


class EventError(ValueError):
    """An event is invalid; the message names the offending attribute."""


def parse_instant(text: str, what: str = "timestamp") -> datetime:
    """Parse an ISO-8601 instant that carries a zone (``Z`` or an offset) into UTC.

    Nanosecond fractions (ChirpStack) are truncated to microseconds.
    """
    if not isinstance(text, str) or not text.strip():
        raise EventError(f"{what}: expected an ISO-8601 timestamp with a time zone, got {text!r}")
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise EventError(f"{what}: not an ISO-8601 timestamp: {text!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise EventError(f"{what}: timestamp {text!r} has no time zone; "
                         "add 'Z' or an offset such as '+01:00'")
    return value.astimezone(timezone.utc)


def format_instant(value: datetime) -> str:
    """ISO-8601 in UTC with ``Z``; fractions only where the instant has them."""
    value = value.astimezone(timezone.utc)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return value.strftime(pattern)


@dataclass(frozen=True)
class Observation:
    tenant: str
    dataset: str
    source: str
    sensor_id: str
    observed_at: datetime
    fields: Mapping[str, FieldValue]
    units: Mapping[str, str] = field(default_factory=dict)
    lon: float | None = None
    lat: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(isinstance(self.tenant, str) and TENANT_PATTERN.match(self.tenant),
                 f"tenant: must be a municipality slug (lowercase letters, digits, '-'), got {self.tenant!r}")
        _require(isinstance(self.dataset, str) and DATASET_PATTERN.match(self.dataset),
                 f"dataset: must match {DATASET_PATTERN.pattern}, got {self.dataset!r}")
        for name in ("source", "sensor_id"):
            value = getattr(self, name)
            _require(isinstance(value, str) and value.strip() != "",
                     f"{name}: must be a non-empty string, got {value!r}")
        _require(isinstance(self.observed_at, datetime),
                 f"observed_at: must be a datetime, got {type(self.observed_at).__name__}")
        _require(self.observed_at.tzinfo is not None and self.observed_at.utcoffset() is not None,
                 f"observed_at: {self.observed_at.isoformat()} is naive; give it a time zone "
                 "(local times must be localised by the connector)")
        object.__setattr__(self, "observed_at", self.observed_at.astimezone(timezone.utc))
        _require(isinstance(self.fields, Mapping) and len(self.fields) > 0,
                 "fields: an observation needs at least one field")
        for name, value in self.fields.items():
            _require(isinstance(name, str) and FIELD_PATTERN.match(name),
                     f"fields: name {name!r} must match {FIELD_PATTERN.pattern}")
            _require(value is None or isinstance(value, str)
                     or (isinstance(value, (int, float)) and not isinstance(value, bool)),
                     f"fields.{name}: must be a number, a string or null, got {type(value).__name__}")
            _require(not (isinstance(value, float) and not math.isfinite(value)),
                     f"fields.{name}: {value} is not a finite number")
        _require(isinstance(self.units, Mapping), "units: must be a mapping of field name to unit")
        for name, unit in self.units.items():
            _require(name in self.fields, f"units: {name!r} is not one of the fields {sorted(self.fields)}")
            _require(isinstance(unit, str), f"units.{name}: must be a string, got {type(unit).__name__}")
        _require((self.lon is None) == (self.lat is None),
                 "lon/lat: give both or neither")
        if self.lon is not None:
            for name, value, limit in (("lon", self.lon, 180.0), ("lat", self.lat, 90.0)):
                _require(isinstance(value, (int, float)) and not isinstance(value, bool)
                         and math.isfinite(value) and -limit <= value <= limit,
                         f"{name}: must be a number between -{limit:g} and {limit:g}, got {value!r}")
        _require(isinstance(self.metadata, Mapping), "metadata: must be a mapping")
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EventError(f"metadata: must be JSON-serialisable ({exc})") from None
        object.__setattr__(self, "fields", dict(self.fields))
        object.__setattr__(self, "units", dict(self.units))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def event_id(self) -> str:
        """Stable id of the record: the same reading ingested twice gets the same id."""
        key = "\x1f".join((self.tenant, self.dataset, self.source, self.sensor_id,
                           format_instant(self.observed_at)))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "event_id": self.event_id,
            "tenant": self.tenant,
            "dataset": self.dataset,
            "source": self.source,
            "sensor_id": self.sensor_id,
            "observed_at": format_instant(self.observed_at),
            "fields": dict(self.fields),
            "units": dict(self.units),
        }
        if self.lon is not None:
            data["lon"], data["lat"] = self.lon, self.lat
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data

    def to_json(self) -> bytes:
        """Compact, key-sorted UTF-8 JSON: equal events serialise to equal bytes."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Observation":
        _require(isinstance(data, Mapping), f"event: expected a JSON object, got {type(data).__name__}")
        version = data.get("v", SCHEMA_VERSION)
        _require(version == SCHEMA_VERSION,
                 f"v: schema version {version!r} is not supported (expected {SCHEMA_VERSION})")
        missing = [k for k in ("tenant", "dataset", "source", "sensor_id", "observed_at", "fields")
                   if k not in data]
        _require(not missing, f"event: missing required key(s) {', '.join(missing)}")
        known = {"v", "event_id", "tenant", "dataset", "source", "sensor_id", "observed_at",
                 "fields", "units", "lon", "lat", "metadata"}
        unknown = sorted(set(data) - known)
        _require(not unknown, f"event: unknown key(s) {', '.join(unknown)}")
        event = cls(
            tenant=data["tenant"], dataset=data["dataset"], source=data["source"],
            sensor_id=data["sensor_id"],
            observed_at=parse_instant(data["observed_at"], "observed_at"),
            fields=data["fields"], units=data.get("units") or {},
            lon=data.get("lon"), lat=data.get("lat"), metadata=data.get("metadata") or {},
        )
        claimed = data.get("event_id")
        _require(claimed is None or claimed == event.event_id,
                 f"event_id: {claimed!r} does not match the record's identity ({event.event_id})")
        return event

    @classmethod
    def from_json(cls, payload: bytes | str) -> "Observation":
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EventError(f"event: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise EventError(message)
