"""The one normalised observation event every connector emits.

An :class:`Observation` is what travels through Kafka to the sink: who owns it
(tenant), what it belongs to (dataset), where it came from (source connector and
sensor), when it was observed (UTC), and the measured fields with their units.
Its :attr:`Observation.event_id` depends only on the identity of the record, so
ingesting the same record twice yields the same id and the sink can drop the
duplicate.
"""

from __future__ import annotations

import functools
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
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat()[:-6] + "Z"   # "+00:00" → "Z"; isoformat writes fractions only when present


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
        # Every check raises with its message only when it fails: connectors build one of
        # these per reading, so formatting messages for valid values would dominate.
        if not (type(self.tenant) is str and TENANT_PATTERN.match(self.tenant)):
            raise EventError(f"tenant: must be a municipality slug (lowercase letters, digits, '-'), "
                             f"got {self.tenant!r}")
        if not (type(self.dataset) is str and DATASET_PATTERN.match(self.dataset)):
            raise EventError(f"dataset: must match {DATASET_PATTERN.pattern}, got {self.dataset!r}")
        for name in ("source", "sensor_id"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value.strip() != ""):
                raise EventError(f"{name}: must be a non-empty string, got {value!r}")
        observed_at = self.observed_at
        if not isinstance(observed_at, datetime):
            raise EventError(f"observed_at: must be a datetime, got {type(observed_at).__name__}")
        if observed_at.tzinfo is not timezone.utc:
            if observed_at.tzinfo is None or observed_at.utcoffset() is None:
                raise EventError(f"observed_at: {observed_at.isoformat()} is naive; give it a time zone "
                                 "(local times must be localised by the connector)")
            object.__setattr__(self, "observed_at", observed_at.astimezone(timezone.utc))
        fields = self.fields
        if not (isinstance(fields, Mapping) and len(fields) > 0):
            raise EventError("fields: an observation needs at least one field")
        for name, value in fields.items():
            if not (type(name) is str and FIELD_PATTERN.match(name)):
                raise EventError(f"fields: name {name!r} must match {FIELD_PATTERN.pattern}")
            kind = type(value)
            if kind is int or kind is str or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise EventError(f"fields.{name}: must be a number, a string or null, got {kind.__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise EventError(f"fields.{name}: {value} is not a finite number")
        units = self.units
        if not isinstance(units, Mapping):
            raise EventError("units: must be a mapping of field name to unit")
        for name, unit in units.items():
            if name not in fields:
                raise EventError(f"units: {name!r} is not one of the fields {sorted(fields)}")
            if not isinstance(unit, str):
                raise EventError(f"units.{name}: must be a string, got {type(unit).__name__}")
        if (self.lon is None) != (self.lat is None):
            raise EventError("lon/lat: give both or neither")
        if self.lon is not None:
            for name, value, limit in (("lon", self.lon, 180.0), ("lat", self.lat, 90.0)):
                if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                        and math.isfinite(value) and -limit <= value <= limit):
                    raise EventError(f"{name}: must be a number between -{limit:g} and {limit:g}, got {value!r}")
        if not isinstance(self.metadata, Mapping):
            raise EventError("metadata: must be a mapping")
        if self.metadata:
            try:
                json.dumps(self.metadata, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise EventError(f"metadata: must be JSON-serialisable ({exc})") from None
        object.__setattr__(self, "fields", dict(fields))
        object.__setattr__(self, "units", dict(units))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @functools.cached_property
    def event_id(self) -> str:
        """Stable id of the record: the same reading ingested twice gets the same id."""
        return event_id_of(self.tenant, self.dataset, self.source, self.sensor_id, format_instant(self.observed_at))

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


# Batches ------------------------------------------------------------------------
#
# One Kafka message per reading costs more per reading than the reading itself
# (framing, acknowledgement, a JSON object per message). Bulk producers - file
# imports, backfills, pull connectors, busy push endpoints - send an
# ObservationBatch instead: many readings of one dataset from one source in one
# message, column by column. Each row is the same observation a single event
# would be, with the same event id; the sink accepts both.

BATCH_SCHEMA_VERSION = 2
# Instants exactly as format_instant writes them; the event id is derived from this text.
CANONICAL_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")
_BATCH_KEYS = frozenset({"v", "tenant", "dataset", "source", "units", "sensor_id", "observed_at", "fields",
                         "lon", "lat"})


def event_id_of(tenant: str, dataset: str, source: str, sensor_id: str, instant: str) -> str:
    """:attr:`Observation.event_id` from its parts (``instant`` as :func:`format_instant` writes it)."""
    return hashlib.sha256(f"{tenant}\x1f{dataset}\x1f{source}\x1f{sensor_id}\x1f{instant}"
                          .encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ObservationBatch:
    """Readings of one tenant's dataset from one source, stored as columns.

    ``observed_at`` holds canonical UTC instants (:func:`format_instant`);
    ``fields`` maps each field name to one value per row (``None`` where a row
    has no value); ``lon``/``lat`` are either absent or one value (or ``None``)
    per row. Construction validates every rule an :class:`Observation` has,
    column by column, and raises :class:`EventError` naming the first problem
    and its row.
    """

    tenant: str
    dataset: str
    source: str
    sensor_ids: tuple[str, ...]
    observed_at: tuple[str, ...]
    fields: Mapping[str, tuple[FieldValue, ...]]
    units: Mapping[str, str] = field(default_factory=dict)
    lon: tuple[float | None, ...] | None = None
    lat: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.tenant, str) and TENANT_PATTERN.match(self.tenant),
                 f"tenant: must be a municipality slug (lowercase letters, digits, '-'), got {self.tenant!r}")
        _require(isinstance(self.dataset, str) and DATASET_PATTERN.match(self.dataset),
                 f"dataset: must match {DATASET_PATTERN.pattern}, got {self.dataset!r}")
        _require(isinstance(self.source, str) and self.source.strip() != "",
                 f"source: must be a non-empty string, got {self.source!r}")
        sensors, instants = tuple(self.sensor_ids), tuple(self.observed_at)
        rows = len(sensors)
        _require(rows > 0, "sensor_id: a batch needs at least one row")
        _require(len(instants) == rows, f"observed_at: {len(instants)} values for {rows} rows")
        for i, sensor in enumerate(sensors):
            if type(sensor) is not str or not sensor.strip():
                raise EventError(f"sensor_id[{i}]: must be a non-empty string, got {sensor!r}")
        for i, instant in enumerate(instants):
            if type(instant) is not str or not CANONICAL_INSTANT.fullmatch(instant):
                raise EventError(f"observed_at[{i}]: expected a UTC instant such as 2026-01-31T23:00:00Z "
                                 f"(fractions as 6 digits), got {instant!r}")
        _require(isinstance(self.fields, Mapping) and len(self.fields) > 0,
                 "fields: an observation needs at least one field")
        columns: dict[str, tuple] = {}
        for name, values in self.fields.items():
            _require(isinstance(name, str) and FIELD_PATTERN.match(name),
                     f"fields: name {name!r} must match {FIELD_PATTERN.pattern}")
            values = tuple(values)
            _require(len(values) == rows, f"fields.{name}: {len(values)} values for {rows} rows")
            for i, value in enumerate(values):
                kind = type(value)
                if kind is float:
                    if not math.isfinite(value):
                        raise EventError(f"fields.{name}[{i}]: {value} is not a finite number")
                elif not (value is None or kind is int or kind is str):
                    raise EventError(f"fields.{name}[{i}]: must be a number, a string or null, "
                                     f"got {kind.__name__}")
            columns[name] = values
        _require(isinstance(self.units, Mapping), "units: must be a mapping of field name to unit")
        for name, unit in self.units.items():
            _require(name in columns, f"units: {name!r} is not one of the fields {sorted(columns)}")
            _require(isinstance(unit, str), f"units.{name}: must be a string, got {type(unit).__name__}")
        _require((self.lon is None) == (self.lat is None), "lon/lat: give both or neither")
        if self.lon is not None:
            lon, lat = tuple(self.lon), tuple(self.lat)
            _require(len(lon) == rows and len(lat) == rows, f"lon/lat: need {rows} values each")
            for i, (x, y) in enumerate(zip(lon, lat)):
                if (x is None) != (y is None):
                    raise EventError(f"lon/lat[{i}]: give both or neither")
                for what, value, limit in (("lon", x, 180.0), ("lat", y, 90.0)):
                    if value is not None and not (type(value) in (int, float) and math.isfinite(value)
                                                  and -limit <= value <= limit):
                        raise EventError(f"{what}[{i}]: must be a number between -{limit:g} and {limit:g}, "
                                         f"got {value!r}")
            object.__setattr__(self, "lon", lon)
            object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "sensor_ids", sensors)
        object.__setattr__(self, "observed_at", instants)
        object.__setattr__(self, "fields", columns)
        object.__setattr__(self, "units", dict(self.units))

    def __len__(self) -> int:
        return len(self.sensor_ids)

    @classmethod
    def _unchecked(cls, **values: Any) -> "ObservationBatch":
        """A batch from values already known to be valid (or to be checked row by row by the
        caller): no second pass over every value."""
        batch = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(batch, name, value)
        return batch

    def subset(self, rows) -> "ObservationBatch":
        """The rows ``rows`` (indexes, in order) as a batch of their own; no need to validate again."""
        rows = list(rows)
        _require(rows, "a batch needs at least one row")
        pick = (lambda column: None if column is None else tuple(column[i] for i in rows))
        return self._unchecked(tenant=self.tenant, dataset=self.dataset, source=self.source, units=self.units,
                               sensor_ids=pick(self.sensor_ids), observed_at=pick(self.observed_at),
                               fields={name: pick(values) for name, values in self.fields.items()},
                               lon=pick(self.lon), lat=pick(self.lat))

    def event_ids(self) -> list[str]:
        # The shared prefix is hashed once; each row continues from a copy of that state.
        base = hashlib.sha256(f"{self.tenant}\x1f{self.dataset}\x1f{self.source}\x1f".encode("utf-8"))
        ids = []
        for sensor, instant in zip(self.sensor_ids, self.observed_at):
            state = base.copy()
            state.update(f"{sensor}\x1f{instant}".encode("utf-8"))
            ids.append(state.hexdigest()[:32])
        return ids

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as the single-event dict (:meth:`Observation.to_dict`)."""
        data: dict[str, Any] = {
            "v": SCHEMA_VERSION, "tenant": self.tenant, "dataset": self.dataset, "source": self.source,
            "sensor_id": self.sensor_ids[index], "observed_at": self.observed_at[index],
            "fields": {name: values[index] for name, values in self.fields.items()},
            "units": dict(self.units),
        }
        if isinstance(data["observed_at"], str) and CANONICAL_INSTANT.fullmatch(data["observed_at"]):
            data["event_id"] = event_id_of(self.tenant, self.dataset, self.source, data["sensor_id"],
                                           data["observed_at"])
        if self.lon is not None and (self.lon[index] is not None or self.lat[index] is not None):
            data["lon"], data["lat"] = self.lon[index], self.lat[index]
        return data

    def observations(self) -> list[Observation]:
        return [Observation.from_dict(self.row(i)) for i in range(len(self))]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": BATCH_SCHEMA_VERSION, "tenant": self.tenant, "dataset": self.dataset,
                                "source": self.source, "units": dict(self.units),
                                "sensor_id": list(self.sensor_ids), "observed_at": list(self.observed_at),
                                "fields": {name: list(values) for name, values in self.fields.items()}}
        if self.lon is not None:
            data["lon"], data["lat"] = list(self.lon), list(self.lat)
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, validate: bool = True) -> "ObservationBatch":
        """The batch ``data`` describes. ``validate=False`` checks only its shape (keys,
        header, one value per row in every column) and leaves the rows to a caller
        that checks each of them itself (the sink)."""
        _require(isinstance(data, Mapping), f"batch: expected a JSON object, got {type(data).__name__}")
        _require(data.get("v") == BATCH_SCHEMA_VERSION,
                 f"v: a batch has schema version {BATCH_SCHEMA_VERSION}, got {data.get('v')!r}")
        missing = [k for k in ("tenant", "dataset", "source", "sensor_id", "observed_at", "fields") if k not in data]
        _require(not missing, f"batch: missing required key(s) {', '.join(missing)}")
        unknown = sorted(set(data) - _BATCH_KEYS)
        _require(not unknown, f"batch: unknown key(s) {', '.join(unknown)}")
        for key in ("sensor_id", "observed_at"):
            _require(isinstance(data[key], list), f"{key}: expected a list with one value per row")
        _require(isinstance(data["fields"], Mapping) and all(isinstance(v, list) for v in data["fields"].values()),
                 "fields: expected an object of field name to a list with one value per row")
        for key in ("lon", "lat"):
            _require(data.get(key) is None or isinstance(data[key], list), f"{key}: expected a list or nothing")
        if validate:
            return cls(tenant=data["tenant"], dataset=data["dataset"], source=data["source"],
                       sensor_ids=data["sensor_id"], observed_at=data["observed_at"], fields=data["fields"],
                       units=data.get("units") or {}, lon=data.get("lon"), lat=data.get("lat"))
        rows = len(data["sensor_id"])
        units = data.get("units") or {}
        _require(rows > 0, "sensor_id: a batch needs at least one row")
        for key in ("tenant", "dataset", "source"):
            _require(type(data[key]) is str, f"{key}: must be a string")
        _require(len(data["observed_at"]) == rows, f"observed_at: {len(data['observed_at'])} values for {rows} rows")
        _require(len(data["fields"]) > 0, "fields: an observation needs at least one field")
        for name, values in data["fields"].items():
            _require(FIELD_PATTERN.match(name), f"fields: name {name!r} must match {FIELD_PATTERN.pattern}")
            _require(len(values) == rows, f"fields.{name}: {len(values)} values for {rows} rows")
        _require(isinstance(units, dict) and all(name in data["fields"] and type(unit) is str
                                                 for name, unit in units.items()),
                 "units: must map field names of this batch to strings")
        _require((data.get("lon") is None) == (data.get("lat") is None), "lon/lat: give both or neither")
        if data.get("lon") is not None:
            _require(len(data["lon"]) == rows and len(data["lat"]) == rows, f"lon/lat: need {rows} values each")
        return cls._unchecked(tenant=data["tenant"], dataset=data["dataset"], source=data["source"],
                              sensor_ids=data["sensor_id"], observed_at=data["observed_at"], fields=data["fields"],
                              units=units, lon=data.get("lon"), lat=data.get("lat"))

    @classmethod
    def from_observations(cls, events: list[Observation]) -> "ObservationBatch":
        """One batch of ``events``, which must share tenant, dataset, source and units
        (equal :func:`batch_key`) and carry no metadata."""
        first = events[0]
        names: dict[str, None] = {}
        for event in events:
            if (event.tenant, event.dataset, event.source) != (first.tenant, first.dataset, first.source) \
                    or event.units != first.units or event.metadata:
                raise ValueError("events of one batch must share tenant, dataset, source and units, "
                                 "and carry no metadata")
            names.update(dict.fromkeys(event.fields))
        located = any(event.lon is not None for event in events)
        # Each Observation was validated when it was built: assemble the columns without checking again.
        return cls._unchecked(tenant=first.tenant, dataset=first.dataset, source=first.source,
                              sensor_ids=tuple(e.sensor_id for e in events),
                              observed_at=tuple(format_instant(e.observed_at) for e in events),
                              fields={name: tuple(e.fields.get(name) for e in events) for name in names},
                              units=dict(first.units),
                              lon=tuple(e.lon for e in events) if located else None,
                              lat=tuple(e.lat for e in events) if located else None)


def batch_key(event: Observation) -> tuple:
    """Events with equal keys may travel in one :class:`ObservationBatch`."""
    units = event.units
    return (event.tenant, event.dataset, event.source, tuple(sorted(units.items())) if units else ())
