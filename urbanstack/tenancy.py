"""What a tenant's data looks like in Kafka and in the warehouse, defined once.

The operator creates it (``operator/plan.py``); the sink writes into it and the API
reads from it (``runtime/``). Both import these definitions instead of each keeping
its own copy: the standard columns of a dataset table, how retention is written into
a table's TTL and read back, what the hourly rollup keeps per field and how a rollup
column is named and computed, the state a rollup's comment records, and the shape of
a tenant data topic. Names of topics, databases and tables are ``operator/naming.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from urbanstack.operator import naming


# Dataset tables -----------------------------------------------------------------

@dataclass(frozen=True)
class StandardColumn:
    name: str
    type: str
    comment: str
    default: str | None = None


STANDARD_COLUMNS = (
    StandardColumn("event_id", "String", "Stable id of the event; a re-sent event replaces itself."),
    StandardColumn("source", "LowCardinality(String)", "Connector that delivered the event."),
    StandardColumn("sensor_id", "String", "Source-specific id of the sensor or station."),
    StandardColumn("observed_at", "DateTime64(3, 'UTC')", "When the value was measured (UTC)."),
    StandardColumn("lon", "Nullable(Float64)", "WGS 84 longitude, if known."),
    StandardColumn("lat", "Nullable(Float64)", "WGS 84 latitude, if known."),
    StandardColumn("ingested_at", "DateTime64(3, 'UTC')", "When the platform stored the event; the latest copy wins.",
                   default="now64(3, 'UTC')"),
)
INGESTED_AT = "ingested_at"
# The standard columns every event fills; ingested_at is the table's own default.
EVENT_COLUMNS = tuple(column.name for column in STANDARD_COLUMNS if column.default is None)


def table_ttl(days: int) -> str:
    """A dataset table's TTL: rows go ``days`` after they were observed."""
    return f"toDateTime(`observed_at`) + INTERVAL {days} DAY DELETE"


def rollup_ttl(days: int) -> str:
    """A rollup hour goes once its last possible observation has expired from the dataset table."""
    return f"`hour` + INTERVAL 1 HOUR + INTERVAL {days} DAY DELETE"


# How ClickHouse shows table_ttl() in system.tables.engine_full.
_TABLE_TTL_SHOWN = re.compile(r"TTL\s+toDateTime\(observed_at\)\s*\+\s*toIntervalDay\((\d+)\)")


def retention_days(engine_full: str) -> int | None:
    """The days of :func:`table_ttl` as ClickHouse reports the table's engine; None without one."""
    found = _TABLE_TTL_SHOWN.search(engine_full)
    return int(found.group(1)) if found else None


# Hourly rollups -----------------------------------------------------------------

ROLLUP_PARTS = naming.ROLLUP_PARTS
# The parts each aggregate a caller may ask for is answered from.
AGGREGATE_PARTS = {"count": ("count",), "sum": ("sum",), "avg": ("sum", "count"), "min": ("min",), "max": ("max",)}


def rollup_measure(column: str) -> tuple[str, str] | None:
    """(field, part) of a rollup column named by :func:`naming.rollup_column`; None for the
    rollup's own columns (sensor_id, hour, backfilled, rows)."""
    field, separator, part = column.rpartition("__")
    return (field, part) if separator and field and part in ROLLUP_PARTS else None


def rollup_expression(field: str, part: str) -> str:
    """How a rollup part is computed from a dataset table's rows (the ClickHouse aggregate of the same name)."""
    if part not in ROLLUP_PARTS:
        raise ValueError(f"rollup part must be one of {ROLLUP_PARTS}, got {part!r}")
    return f"{part}(`{field}`)"


@dataclass(frozen=True)
class RollupState:
    """What the rollup table's comment records: the ingest instant that splits the rows the view
    counts (``ingested_at >= cutoff``) from those the backfill counts, and whether it ran."""
    cutoff: datetime
    backfilled: bool

    @property
    def unfiltered(self) -> bool:
        """Whether the view counts every row: after the backfill, and for a rollup built over a
        source table that was empty (cutoff :data:`EMPTY_SOURCE_CUTOFF`): there is nothing to
        backfill once the operator has seen that no row came in without the view."""
        return self.backfilled or self.cutoff == EMPTY_SOURCE_CUTOFF


# The cutoff a rollup gets when it is built: its source is checked for rows that came in without
# the view (then it is rebuilt with a real cutoff and backfilled), else it is done at once.
EMPTY_SOURCE_CUTOFF = datetime(1970, 1, 1, tzinfo=timezone.utc)

ROLLUP_PENDING = "backfill pending"
ROLLUP_BACKFILLED = "backfilled"
_ROLLUP_COMMENT = re.compile(r"; rows ingested before (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}): "
                             rf"({ROLLUP_PENDING}|{ROLLUP_BACKFILLED})$")


def instant_text(value: datetime) -> str:
    """An instant as the rollup comment and ClickHouse's DateTime64(3) literals write it (UTC)."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def rollup_comment(source: str, state: RollupState) -> str:
    flag = ROLLUP_BACKFILLED if state.backfilled else ROLLUP_PENDING
    return f"Hourly rollup of {source}; rows ingested before {instant_text(state.cutoff)}: {flag}"


def parse_rollup_comment(comment: str | None) -> RollupState | None:
    """The state :func:`rollup_comment` recorded; None for a comment it did not write."""
    match = _ROLLUP_COMMENT.search(comment or "")
    if match is None:
        return None
    cutoff = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return RollupState(cutoff=cutoff, backfilled=match.group(2) == ROLLUP_BACKFILLED)


# Topics -------------------------------------------------------------------------

# librdkafka treats a leading ^ as a regular expression. Three dot-separated parts
# (naming.topic): tenant data topics. The DLQ (naming.dlq_topic, two parts) stays out.
DATA_TOPIC_PATTERN = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+\.[a-z0-9_]+$"


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(tenant, tool, dataset) of a tenant data topic (the inverse of :func:`naming.topic`), else None."""
    parts = topic.split(".")
    if len(parts) != 3 or not naming.is_slug(parts[0]):
        return None
    return parts[0], parts[1], parts[2]


def tenant_of_topic(topic: str) -> str:
    """The tenant a data or DLQ topic belongs to: the part before the first dot."""
    return topic.split(".", 1)[0]
