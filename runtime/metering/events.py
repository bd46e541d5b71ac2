"""Meter events: CloudEvents 1.0 in structured JSON mode, one per measurement (a sink
batch, an API window), never one per row.

``id`` is derived from what was measured wherever that is possible (a sink batch is its
topic, partition and offset range), so measuring the same work again — a replayed batch,
a restarted sink, a retried send — yields the same id, and the ledger counts it once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from urbanstack.operator import naming

SPEC_VERSION = "1.0"
TYPE_INGEST = "io.urbanstack.meter.ingest.v1"
TYPE_QUERY = "io.urbanstack.meter.query.v1"
TYPE_STORAGE = "io.urbanstack.meter.storage.v1"
TYPE_TOOLS = "io.urbanstack.meter.tools.v1"
TYPES = (TYPE_INGEST, TYPE_QUERY, TYPE_STORAGE, TYPE_TOOLS)

# The meters, with the unit one of them counts in.
READINGS_INGESTED = "readings_ingested"     # records read from tenant topics (stored, duplicate or dead-lettered)
ROWS_STORED = "rows_stored"                 # rows the sink wrote to the tenant's tables
DEAD_LETTERED = "dead_lettered"             # records sent to the tenant's DLQ
API_QUERIES = "api_queries"                 # data requests answered by the API (REST, GraphQL, exports)
API_ROWS_READ = "api_rows_read"             # rows the warehouse read for them
API_BYTES_READ = "api_bytes_read"           # bytes of response bodies sent
STORAGE_BYTE_HOURS = "storage_byte_hours"   # bytes of the municipality's database, sampled once an hour
TOOL_DAYS = "tool_days"                     # days a CityTool was switched on (data.dataset names the tool)
METERS = {READINGS_INGESTED: "reading", ROWS_STORED: "row", DEAD_LETTERED: "record",
          API_QUERIES: "query", API_ROWS_READ: "row", API_BYTES_READ: "byte", STORAGE_BYTE_HOURS: "byte_hour",
          TOOL_DAYS: "tool_day"}

MAX_EVENT_BYTES = 64 * 1024
_ID_NAMESPACE = uuid.UUID("5b1f3a4e-8f0e-4b8e-9a57-2f6f0c1d9e11")


class InvalidEvent(ValueError):
    """A meter event that does not follow the schema; the message names the field."""


def derived_id(*parts: Any) -> str:
    """A stable id for a measurement of ``parts`` (UUID 5): the same parts, the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def sink_batch_id(topic: str, partition: int, first: int, last: int) -> str:
    return derived_id("sink-batch", topic, partition, first, last)


def format_time(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class MeterEvent:
    id: str
    source: str
    type: str
    subject: str                       # the municipality's slug
    time: datetime                     # when the measured work happened (UTC)
    quantities: Mapping[str, int]      # meter -> amount
    dataset: str = ""                  # tool/dataset where the meter is per dataset
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 200:
            raise InvalidEvent("id: must be 1..200 characters")
        if self.type not in TYPES:
            raise InvalidEvent(f"type: must be one of {', '.join(TYPES)}, got {self.type!r}")
        if not naming.is_slug(self.subject):
            raise InvalidEvent(f"subject: must be a municipality slug, got {self.subject!r}")
        if self.time.tzinfo is None:
            raise InvalidEvent("time: must carry a time zone")
        for meter, amount in self.quantities.items():
            if meter not in METERS:
                raise InvalidEvent(f"data.quantities: unknown meter {meter!r}; known: {', '.join(METERS)}")
            if type(amount) is not int or amount < 0 or amount >= 2 ** 62:
                raise InvalidEvent(f"data.quantities.{meter}: must be a whole number >= 0, got {amount!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"quantities": dict(self.quantities)}
        if self.dataset:
            data["dataset"] = self.dataset
        data.update(self.extra)
        return {"specversion": SPEC_VERSION, "id": self.id, "source": self.source, "type": self.type,
                "subject": self.subject, "time": format_time(self.time), "datacontenttype": "application/json",
                "data": data}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @property
    def fingerprint(self) -> str:
        """What two copies of one id must agree on (for conflict detection)."""
        return hashlib.sha256(self.to_json()).hexdigest()[:16]

    @classmethod
    def from_json(cls, payload: bytes | str | None) -> "MeterEvent":
        if payload is None:
            raise InvalidEvent("empty message")
        if len(payload) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"event of {len(payload)} bytes; at most {MAX_EVENT_BYTES}")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidEvent("not a JSON object")
        if doc.get("specversion") != SPEC_VERSION:
            raise InvalidEvent(f"specversion: must be {SPEC_VERSION!r}, got {doc.get('specversion')!r}")
        for name in ("id", "source", "type", "subject", "time"):
            if not isinstance(doc.get(name), str):
                raise InvalidEvent(f"{name}: missing or not a string")
        data = doc.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("quantities"), dict):
            raise InvalidEvent("data.quantities: missing or not an object")
        try:
            when = datetime.fromisoformat(doc["time"].replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"time: not an RFC 3339 instant: {doc['time']!r}") from None
        dataset = data.get("dataset", "")
        if not isinstance(dataset, str) or len(dataset) > 300:
            raise InvalidEvent("data.dataset: must be a string of at most 300 characters")
        extra = {k: v for k, v in data.items() if k not in ("quantities", "dataset")}
        return cls(id=doc["id"], source=doc["source"], type=doc["type"], subject=doc["subject"],
                   time=when.astimezone(timezone.utc), quantities=data["quantities"], dataset=dataset,
                   extra=extra)
