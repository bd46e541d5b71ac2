"""The usage ledger: meter events in the platform's own warehouse database, each id once.

``events`` keeps one row per event id (the consumer leaves out ids it has already
recorded before it inserts, and the table is a ReplacingMergeTree on ``id`` as a second
guard that ``FINAL`` reads honour). A materialized view sums every recorded event into
``hourly`` (SummingMergeTree: subject, UTC hour, meter, dataset); days and months are
sums of hours, always taken with ``sum() … GROUP BY`` so they never depend on when
ClickHouse merges. Because only ids not seen before reach the view, the aggregates stay
exact under replays and duplicates; an event that arrives late or out of order is simply
added to its own hour.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from .events import MeterEvent

log = logging.getLogger(__name__)

DATABASE = "_urbanstack_metering"
"""No municipality's database can be named like this: slugs start with a letter."""
BILLING_ZONE = ZoneInfo("Europe/Berlin")
_RANK_BASE = 2 ** 62

DDL = (
    "CREATE DATABASE IF NOT EXISTS `{db}`",
    """CREATE TABLE IF NOT EXISTS `{db}`.`events` (
        `id` String, `type` LowCardinality(String), `source` String, `subject` LowCardinality(String),
        `time` DateTime64(3, 'UTC'), `dataset` String, `meters` Array(LowCardinality(String)),
        `quantities` Array(UInt64), `fingerprint` String,
        `received_at` DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'),
        `rank` UInt64 COMMENT 'the first recorded copy of an id ranks highest and survives merges'
    ) ENGINE = ReplacingMergeTree(`rank`) ORDER BY `id`
    SETTINGS non_replicated_deduplication_window = 1000""",
    """CREATE TABLE IF NOT EXISTS `{db}`.`hourly` (
        `subject` LowCardinality(String), `hour` DateTime('UTC'), `meter` LowCardinality(String),
        `dataset` String, `quantity` UInt64, `events` UInt64
    ) ENGINE = SummingMergeTree((`quantity`, `events`)) ORDER BY (`subject`, `hour`, `meter`, `dataset`)
    SETTINGS non_replicated_deduplication_window = 1000""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`hourly_mv` TO `{db}`.`hourly` AS
    SELECT `subject`, toStartOfHour(`time`) AS `hour`, `meter`, `dataset`, `quantity`, toUInt64(1) AS `events`
    FROM `{db}`.`events` ARRAY JOIN `meters` AS `meter`, `quantities` AS `quantity`""",
)


@dataclass(frozen=True)
class Recorded:
    new: int          # events recorded now
    duplicates: int   # ids recorded before (or twice in this call) with the same content
    conflicts: int    # ids recorded before with other content: the first copy stands


def month_range(month: date, zone: ZoneInfo = BILLING_ZONE) -> tuple[datetime, datetime]:
    """The UTC instants where a calendar month of the billing time zone starts and ends."""
    first = datetime(month.year, month.month, 1, tzinfo=zone)
    following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=zone)
    return first.astimezone(timezone.utc), following.astimezone(timezone.utc)


def parse_month(text: str) -> date:
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise ValueError(f"month must look like 2026-11, got {text!r}") from None


class Ledger:
    def __init__(self, client, database: str = DATABASE):
        self.client, self.database = client, database
        self._ready = False

    def ensure(self) -> None:
        if not self._ready:
            for statement in DDL:
                self.client.command(statement.format(db=self.database))
            self._ready = True

    def record(self, events: Sequence[MeterEvent]) -> Recorded:
        """Record ``events``, each id at most once across all calls. Callers recording the same
        id concurrently must not exist: the meter topic is keyed by id, so all copies of one id
        reach one partition and one consumer, in order."""
        self.ensure()
        first: dict[str, MeterEvent] = {}
        duplicates = conflicts = 0
        for event in events:
            seen = first.get(event.id)
            if seen is None:
                first[event.id] = event
            elif seen.fingerprint == event.fingerprint:
                duplicates += 1
            else:
                conflicts += 1
        if not first:
            return Recorded(0, duplicates, conflicts)
        known = dict(self.client.query(
            f"SELECT id, any(fingerprint) FROM `{self.database}`.`events` WHERE id IN {{ids:Array(String)}} GROUP BY id",
            parameters={"ids": list(first)}).result_rows)
        fresh = []
        for event_id, event in first.items():
            if event_id in known:
                if known[event_id] == event.fingerprint:
                    duplicates += 1
                else:
                    conflicts += 1
                    log.warning("meter event %s seen again with other content; the first copy stands", event_id)
            else:
                fresh.append(event)
        if fresh:
            now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
            rows = [[e.id, e.type, e.source, e.subject, e.time, e.dataset, list(e.quantities),
                     [int(v) for v in e.quantities.values()], e.fingerprint, _RANK_BASE - now_ms] for e in fresh]
            # A retried insert of the same events is dropped by the table and by the view.
            token = hashlib.sha256("\n".join(sorted(e.id for e in fresh)).encode()).hexdigest()
            self.client.insert(f"`{self.database}`.`events`", rows,
                               column_names=["id", "type", "source", "subject", "time", "dataset", "meters",
                                             "quantities", "fingerprint", "rank"],
                               settings={"insert_deduplication_token": f"meter:{token}"})
        return Recorded(len(fresh), duplicates, conflicts)

    # Reading ---------------------------------------------------------------------------
    def totals(self, start: datetime, end: datetime, subjects: Iterable[str] | None = None
               ) -> dict[str, dict[str, int]]:
        """subject -> meter -> quantity over the whole hours in ``[start, end)``."""
        self.ensure()
        where, params = self._where(start, end, subjects)
        result: dict[str, dict[str, int]] = {}
        for subject, meter, quantity in self.client.query(
                f"SELECT subject, meter, sum(quantity) FROM `{self.database}`.`hourly` WHERE {where} "
                f"GROUP BY subject, meter", parameters=params).result_rows:
            result.setdefault(subject, {})[meter] = int(quantity)
        return result

    def month_totals(self, month: date, subjects: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        return self.totals(*month_range(month), subjects)

    def series(self, subject: str, start: datetime, end: datetime, grain: str = "day",
               zone: ZoneInfo = BILLING_ZONE) -> list[tuple[datetime, str, int]]:
        """(bucket start, meter, quantity) per ``hour``/``day``/``month`` of ``zone`` for one municipality."""
        self.ensure()
        bucket = {"hour": "hour", "day": "toStartOfDay(hour, {tz:String})",
                  "month": "toStartOfMonth(hour, {tz:String})"}[grain]
        where, params = self._where(start, end, [subject])
        params["tz"] = zone.key
        rows = self.client.query(
            f"SELECT toDateTime({bucket}, {{tz:String}}) AS b, meter, sum(quantity) FROM `{self.database}`.`hourly` "
            f"WHERE {where} GROUP BY b, meter ORDER BY b, meter", parameters=params).result_rows
        return [(b.astimezone(timezone.utc) if b.tzinfo else b.replace(tzinfo=timezone.utc), m, int(q))
                for b, m, q in rows]

    def verify(self, start: datetime, end: datetime) -> list[tuple]:
        """Differences between the hourly sums and the recorded events read with FINAL
        (subject, meter, hourly, events); empty when the aggregates are exact."""
        self.ensure()
        params = {"start": start, "end": end}
        return [tuple(r) for r in self.client.query(
            f"SELECT subject, meter, h, e FROM (SELECT subject, meter, sum(quantity) AS h FROM `{self.database}`.`hourly` "
            f"WHERE hour >= {{start:DateTime('UTC')}} AND hour < {{end:DateTime('UTC')}} GROUP BY subject, meter) AS a "
            f"FULL OUTER JOIN (SELECT subject, meter, sum(quantity) AS e FROM `{self.database}`.`events` FINAL "
            f"ARRAY JOIN meters AS meter, quantities AS quantity "
            f"WHERE time >= {{start:DateTime('UTC')}} AND time < {{end:DateTime('UTC')}} GROUP BY subject, meter) AS b "
            f"USING (subject, meter) WHERE h != e", parameters=params,
            settings={"join_use_nulls": 0}).result_rows]

    def _where(self, start: datetime, end: datetime, subjects: Iterable[str] | None) -> tuple[str, dict]:
        where = "hour >= {start:DateTime('UTC')} AND hour < {end:DateTime('UTC')}"
        params: dict = {"start": start.astimezone(timezone.utc), "end": end.astimezone(timezone.utc)}
        if subjects is not None:
            where += " AND subject IN {subjects:Array(String)}"
            params["subjects"] = sorted(set(subjects))
        return where, params


def previous_month(month: date) -> date:
    return (month.replace(day=1) - timedelta(days=1)).replace(day=1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)
