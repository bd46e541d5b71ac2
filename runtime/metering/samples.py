"""Meters that are sampled rather than counted where work happens.

- Storage: once an hour, the bytes each municipality's database holds in the warehouse
  (active parts on disk), one event per municipality and hour. Summed over a month the
  samples are byte-hours; divided by the hours of the month, the average size.
- Tool-days: once a day, one per CityTool a municipality has switched on.

The id is the municipality and the hour (or day and tool), so sampling again (a restart,
a second replica) adds nothing: the first sample counts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from urbanstack.operator import naming

from .events import STORAGE_BYTE_HOURS, TOOL_DAYS, TYPE_STORAGE, TYPE_TOOLS, MeterEvent, derived_id


def database_bytes(client, slugs: Iterable[str]) -> dict[str, int]:
    """slug -> bytes on disk of its database (0 when it has none yet)."""
    databases = {naming.database(slug): slug for slug in slugs}
    if not databases:
        return {}
    sizes = dict(client.query(
        "SELECT database, sum(bytes_on_disk) FROM system.parts WHERE active AND database IN {dbs:Array(String)} "
        "GROUP BY database", parameters={"dbs": sorted(databases)}).result_rows)
    return {slug: int(sizes.get(database, 0)) for database, slug in databases.items()}


def storage_events(client, slugs: Iterable[str], now: datetime | None = None) -> list[MeterEvent]:
    hour = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return [MeterEvent(id=derived_id("storage", slug, hour.isoformat()), source="/urbanstack/metering",
                       type=TYPE_STORAGE, subject=slug, time=hour, quantities={STORAGE_BYTE_HOURS: size})
            for slug, size in sorted(database_bytes(client, slugs).items())]


def tool_day_events(municipalities: Iterable, now: datetime | None = None) -> list[MeterEvent]:
    """One tool-day per CityTool each municipality has switched on, for the UTC day of ``now``."""
    day = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(hour=0, minute=0, second=0,
                                                                                microsecond=0)
    return [MeterEvent(id=derived_id("tool-day", m.slug, tool.name, day.date().isoformat()),
                       source="/urbanstack/metering", type=TYPE_TOOLS, subject=m.slug, time=day,
                       dataset=tool.name, quantities={TOOL_DAYS: 1})
            for m in municipalities if not m.spec.suspended for tool in m.spec.tools]
