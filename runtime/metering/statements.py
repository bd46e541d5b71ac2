"""Monthly statements: per municipality and calendar month (Europe/Berlin) one line per
meter — used, included, billable, price — plus the plan's base fee.

A month's statement is a draft until ``grace`` after the month ended; then it is frozen:
stored with its content hash and never changed again. Usage of a frozen month that is
recorded later (a late event) does not touch it; the next statement that is not frozen
yet carries an adjustment line for the difference, priced with the frozen month's plan and
price list. What a month has been billed — frozen lines plus adjustments frozen since —
is compared with the ledger, so each late unit is billed exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable, Iterable, Sequence

from .events import METERS
from .ledger import BILLING_ZONE, Ledger, month_range, next_month
from .prices import CENT, DEFAULT_PRICE_BOOK, PriceBook

DEFAULT_GRACE = timedelta(days=5)
HISTORY_MONTHS = 24   # how far back late usage is still adjusted


@dataclass(frozen=True)
class Line:
    kind: str              # base | usage | adjustment
    meter: str             # "" for the base fee
    unit: str
    month: str             # the month the usage belongs to (an adjustment names the earlier month)
    used: int
    included: int
    billable: int
    unit_price: Decimal
    per: int
    amount: Decimal

    def to_dict(self) -> dict:
        return {"kind": self.kind, "meter": self.meter, "unit": self.unit, "month": self.month, "used": self.used,
                "included": self.included, "billable": self.billable, "unit_price": str(self.unit_price),
                "per": self.per, "amount": str(self.amount)}

    @classmethod
    def from_dict(cls, d: dict) -> "Line":
        return cls(d["kind"], d["meter"], d["unit"], d["month"], d["used"], d["included"], d["billable"],
                   Decimal(d["unit_price"]), d["per"], Decimal(d["amount"]))


@dataclass(frozen=True)
class Statement:
    subject: str
    month: str                  # YYYY-MM
    plan: str
    price_list: str
    currency: str
    lines: tuple[Line, ...]
    status: str = "draft"       # draft | frozen
    frozen_at: str | None = None
    hash: str | None = field(default=None, compare=False)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00")).quantize(CENT)

    def content(self) -> dict:
        return {"subject": self.subject, "month": self.month, "plan": self.plan, "price_list": self.price_list,
                "currency": self.currency, "lines": [line.to_dict() for line in self.lines],
                "total": str(self.total), "status": self.status, "frozen_at": self.frozen_at}

    def content_hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {**self.content(), "hash": self.hash}

    @classmethod
    def from_content(cls, doc: dict, content_hash: str | None = None) -> "Statement":
        return cls(doc["subject"], doc["month"], doc["plan"], doc["price_list"], doc["currency"],
                   tuple(Line.from_dict(x) for x in doc["lines"]), doc["status"], doc["frozen_at"], content_hash)

    def used(self, meter: str) -> int:
        return next((line.used for line in self.lines if line.kind == "usage" and line.meter == meter), 0)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(["municipality", "statement_month", "kind", "meter", "unit", "usage_month", "used",
                         "included", "billable", "unit_price", "per", f"amount_{self.currency}"])
        for line in self.lines:
            writer.writerow([self.subject, self.month, line.kind, line.meter, line.unit, line.month, line.used,
                             line.included, line.billable, line.unit_price, line.per, line.amount])
        writer.writerow([self.subject, self.month, "total", "", "", "", "", "", "", "", "", self.total])
        return buffer.getvalue()


def _month_text(month: date) -> str:
    return f"{month:%Y-%m}"


def _month_of(text: str) -> date:
    return date(int(text[:4]), int(text[5:7]), 1)


class Statements:
    """Builds, freezes and reads statements. ``plan_of(subject)`` names a municipality's plan."""

    def __init__(self, ledger: Ledger, *, prices: PriceBook = DEFAULT_PRICE_BOOK, grace: timedelta = DEFAULT_GRACE,
                 plan_of: Callable[[str], str] = lambda _subject: "small"):
        self.ledger, self.prices, self.grace, self.plan_of = ledger, prices, grace, plan_of
        self._lock = threading.Lock()   # one freeze at a time in this process
        self._ready = False

    @property
    def table(self) -> str:
        return f"`{self.ledger.database}`.`statements`"

    def ensure(self) -> None:
        if not self._ready:
            self.ledger.ensure()
            self.ledger.client.command(
                f"CREATE TABLE IF NOT EXISTS {self.table} (`subject` LowCardinality(String), `month` Date, "
                f"`frozen_at` DateTime64(3, 'UTC'), `hash` String, `content` String) "
                f"ENGINE = MergeTree ORDER BY (`subject`, `month`)")
            self._ready = True

    def freezes_at(self, month: date) -> datetime:
        return month_range(month)[1] + self.grace

    # Frozen statements are only ever inserted; the first frozen copy of a month is the statement.
    def frozen(self, subjects: Iterable[str] | None, first: date, last: date) -> dict[tuple[str, str], Statement]:
        self.ensure()
        where = "month >= {first:Date} AND month <= {last:Date}"
        params: dict = {"first": first, "last": last}
        if subjects is not None:
            where += " AND subject IN {subjects:Array(String)}"
            params["subjects"] = sorted(set(subjects))
        found = {}
        for subject, month, content, content_hash in self.ledger.client.query(
                f"SELECT subject, month, argMin(content, frozen_at), argMin(hash, frozen_at) FROM {self.table} "
                f"WHERE {where} GROUP BY subject, month", parameters=params).result_rows:
            found[(subject, _month_text(month))] = Statement.from_content(json.loads(content), content_hash)
        return found

    def statement(self, subject: str, month: date, now: datetime | None = None) -> Statement:
        return self.statements([subject], month, now)[subject]

    def statements(self, subjects: Sequence[str], month: date, now: datetime | None = None) -> dict[str, Statement]:
        """The statement of ``month`` for each subject: the frozen one if there is one, else a draft
        from the ledger as it is now (with adjustments for earlier frozen months)."""
        now = now or datetime.now(timezone.utc)
        first = month
        for _ in range(HISTORY_MONTHS):
            first = (first - timedelta(days=1)).replace(day=1)
        frozen = self.frozen(subjects, first, month)
        drafts = [s for s in subjects if (s, _month_text(month)) not in frozen]
        result = {s: frozen[(s, _month_text(month))] for s in subjects if s not in drafts}
        if drafts:
            usage = self._monthly_usage(drafts, first, month)
            for subject in drafts:
                result[subject] = self._draft(subject, month, usage.get(subject, {}), frozen)
        return result

    def _monthly_usage(self, subjects: Sequence[str], first: date, last: date) -> dict[str, dict[str, dict[str, int]]]:
        """subject -> month -> meter -> quantity, months of the billing zone from ``first`` to ``last``."""
        start, _ = month_range(first)
        _, end = month_range(last)
        usage: dict[str, dict[str, dict[str, int]]] = {}
        for bucket, meter, quantity, subject in self._series(subjects, start, end):
            usage.setdefault(subject, {}).setdefault(bucket, {})[meter] = quantity
        return usage

    def _series(self, subjects, start, end):
        client, db = self.ledger.client, self.ledger.database
        self.ledger.ensure()
        return [(f"{b:%Y-%m}", m, int(q), s) for s, b, m, q in client.query(
            f"SELECT subject, toStartOfMonth(hour, 'Europe/Berlin') AS b, meter, sum(quantity) FROM `{db}`.`hourly` "
            f"WHERE hour >= {{start:DateTime('UTC')}} AND hour < {{end:DateTime('UTC')}} "
            f"AND subject IN {{subjects:Array(String)}} GROUP BY subject, b, meter",
            parameters={"start": start, "end": end, "subjects": sorted(set(subjects))}).result_rows]

    def _draft(self, subject: str, month: date, usage: dict[str, dict[str, int]],
               frozen: dict[tuple[str, str], Statement]) -> Statement:
        price_list = self.prices.for_month(month)
        plan_name = self.plan_of(subject)
        plan = price_list.plan(plan_name)
        this = _month_text(month)
        lines = [Line("base", "", "month", this, 1, 0, 1, plan.base_fee, 1, plan.base_fee.quantize(CENT))]
        used_now = usage.get(this, {})
        for meter, price in plan.meters.items():
            used = used_now.get(meter, 0)
            billable, amount = price.charge(used)
            lines.append(Line("usage", meter, METERS[meter], this, used, price.included, billable, price.unit_price,
                              price.per, amount))
        lines += self._adjustments(subject, this, usage, frozen)
        return Statement(subject, this, plan_name, price_list.version, price_list.currency, tuple(lines))

    def _adjustments(self, subject: str, this: str, usage: dict[str, dict[str, int]],
                     frozen: dict[tuple[str, str], Statement]) -> list[Line]:
        """Late usage of earlier frozen months not yet billed by any frozen statement."""
        mine = sorted((month, s) for (subj, month), s in frozen.items() if subj == subject and month < this)
        lines = []
        for month, statement in mine:
            price_list = self.prices.version(statement.price_list)
            plan = price_list.plan(statement.plan)
            for meter, price in plan.meters.items():
                billed = statement.used(meter) + sum(
                    line.used for later_month, later in mine if later_month > month
                    for line in later.lines if line.kind == "adjustment" and line.month == month and line.meter == meter)
                now = usage.get(month, {}).get(meter, 0)
                if now == billed:
                    continue
                before_units, before = price.charge(billed)
                after_units, after = price.charge(now)
                lines.append(Line("adjustment", meter, METERS[meter], month, now - billed, price.included,
                                  after_units - before_units, price.unit_price, price.per, after - before))
        return lines

    # Freezing --------------------------------------------------------------------------
    def freeze(self, subjects: Sequence[str], month: date, now: datetime | None = None) -> dict[str, Statement]:
        """Freeze ``month`` for ``subjects`` once its grace period is over; statements frozen
        before stay exactly as they were. Returns every subject's frozen statement."""
        now = now or datetime.now(timezone.utc)
        if now < self.freezes_at(month):
            raise ValueError(f"{month:%Y-%m} can be frozen from {self.freezes_at(month):%Y-%m-%d %H:%M} UTC "
                             f"(grace period {self.grace.days} days after the month ends)")
        with self._lock:
            current = self.statements(subjects, month, now)
            stamp = now.astimezone(timezone.utc)
            rows, result = [], {}
            for subject, statement in current.items():
                if statement.status == "frozen":
                    result[subject] = statement
                    continue
                frozen = Statement(statement.subject, statement.month, statement.plan, statement.price_list,
                                   statement.currency, statement.lines, "frozen",
                                   stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z")
                frozen = Statement(**{**frozen.__dict__, "hash": frozen.content_hash()})
                result[subject] = frozen
                rows.append([subject, month, stamp, frozen.hash,
                             json.dumps(frozen.content(), sort_keys=True, ensure_ascii=False)])
            if rows:
                self.ledger.client.insert(self.table, rows, column_names=["subject", "month", "frozen_at", "hash",
                                                                         "content"])
        return result

    def freeze_due(self, subjects: Sequence[str], now: datetime | None = None, months_back: int = 3) -> list[str]:
        """Freeze every month of the last ``months_back`` whose grace period is over, oldest first."""
        now = now or datetime.now(timezone.utc)
        month = now.astimezone(BILLING_ZONE).date().replace(day=1)
        months = []
        for _ in range(months_back):
            month = (month - timedelta(days=1)).replace(day=1)
            if self.freezes_at(month) <= now:
                months.append(month)
        for month in sorted(months):
            self.freeze(subjects, month, now)
        return [_month_text(m) for m in sorted(months)]

    def overview(self, subject: str, now: datetime | None = None) -> list[Statement]:
        """A municipality's statements, newest first: every frozen month of the last
        ``HISTORY_MONTHS``, the current month as a draft, and the previous month as a draft
        while it is not frozen yet (its grace period, or until the next freeze run)."""
        now = now or datetime.now(timezone.utc)
        this = now.astimezone(BILLING_ZONE).date().replace(day=1)
        previous = (this - timedelta(days=1)).replace(day=1)
        first = this
        for _ in range(HISTORY_MONTHS):
            first = (first - timedelta(days=1)).replace(day=1)
        frozen = self.frozen([subject], first, this)
        found = [statement for (_s, _m), statement in frozen.items()]
        for month in (this, previous):
            if (subject, _month_text(month)) not in frozen:
                found.append(self.statement(subject, month, now))
        return sorted(found, key=lambda statement: statement.month, reverse=True)

    def history(self, subject: str, now: datetime | None = None) -> list[dict]:
        """:meth:`overview` in short: month, status, hash, total and when the month is frozen."""
        return [{"month": s.month, "status": s.status, "hash": s.hash, "total": str(s.total),
                 "freezes_at": self.freezes_at(_month_of(s.month)).strftime("%Y-%m-%dT%H:%M:%SZ")}
                for s in self.overview(subject, now)]


__all__ = ["Line", "Statement", "Statements", "DEFAULT_GRACE", "next_month"]
