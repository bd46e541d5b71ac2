"""Versioned price lists: per plan a base fee and, per meter, an included amount and a price
per unit above it. Money is ``Decimal`` throughout; amounts are rounded to the cent per
line (half up), never earlier.

A price list applies from its ``valid_from`` month until the next version's; a statement
names the version it was priced with, so a later price change never alters it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

from .events import METERS

CENT = Decimal("0.01")


class NoPrices(ValueError):
    """The price book cannot price a municipality's month: its plan is missing from the price list
    of that month, or no price list is valid yet. Only the platform's operators can mend it."""

    def __init__(self, message: str, plan: str | None = None):
        super().__init__(f"{message}; the platform's operators must add it to the price book "
                         "(URBANSTACK_PRICE_BOOK, docs/metering.md) and restart the API")
        self.plan = plan


@dataclass(frozen=True)
class MeterPrice:
    included: int                 # units per month included in the base fee
    unit_price: Decimal           # price of `per` units above the included amount
    per: int = 1

    def charge(self, used: int) -> tuple[int, Decimal]:
        """(billable units, amount rounded to the cent) for ``used`` units."""
        billable = max(used - self.included, 0)
        return billable, (Decimal(billable) * self.unit_price / Decimal(self.per)).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class PlanPrice:
    base_fee: Decimal
    meters: Mapping[str, MeterPrice]


@dataclass(frozen=True)
class PriceList:
    version: str
    valid_from: date              # first month it prices
    plans: Mapping[str, PlanPrice]
    currency: str = "EUR"

    def plan(self, name: str) -> PlanPrice:
        try:
            return self.plans[name]
        except KeyError:
            raise NoPrices(f"price list {self.version} has no prices for plan {name!r} (it prices "
                           f"{', '.join(sorted(self.plans))})", plan=name) from None


@dataclass(frozen=True)
class PriceBook:
    lists: tuple[PriceList, ...] = field(default_factory=tuple)

    def for_month(self, month: date) -> PriceList:
        valid = [p for p in self.lists if p.valid_from <= month]
        if not valid:
            raise NoPrices(f"no price list is valid for {month:%Y-%m} (the first starts "
                           f"{min(p.valid_from for p in self.lists):%Y-%m})")
        return max(valid, key=lambda p: p.valid_from)

    def version(self, version: str) -> PriceList:
        for price_list in self.lists:
            if price_list.version == version:
                return price_list
        raise ValueError(f"unknown price list version {version!r}")


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise ValueError(f"{where}: write money as a string ('12.50'), not a float")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: not an amount: {value!r}") from None
    if amount < 0 or not amount.is_finite():
        raise ValueError(f"{where}: must be ≥ 0, got {value!r}")
    return amount


def parse_price_book(doc: Mapping[str, Any]) -> PriceBook:
    """``{"price_lists": [{"version", "valid_from": "2026-01", "currency", "plans": {plan: {"base_fee",
    "meters": {meter: {"included", "unit_price", "per"}}}}}]}``; amounts as strings."""
    lists = []
    for i, raw in enumerate(doc.get("price_lists", [])):
        where = f"price_lists[{i}]"
        year, month = str(raw["valid_from"]).split("-")[:2]
        plans = {}
        for plan, spec in raw["plans"].items():
            meters = {}
            for meter, price in spec.get("meters", {}).items():
                if meter not in METERS:
                    raise ValueError(f"{where}.plans.{plan}.meters: unknown meter {meter!r}")
                included, per = price.get("included", 0), price.get("per", 1)
                if type(included) is not int or included < 0 or type(per) is not int or per < 1:
                    raise ValueError(f"{where}.plans.{plan}.meters.{meter}: included ≥ 0 and per ≥ 1, whole numbers")
                meters[meter] = MeterPrice(included, _money(price["unit_price"], f"{where}.plans.{plan}.{meter}"), per)
            plans[plan] = PlanPrice(_money(spec["base_fee"], f"{where}.plans.{plan}.base_fee"), meters)
        lists.append(PriceList(str(raw["version"]), date(int(year), int(month), 1), plans,
                               str(raw.get("currency", "EUR"))))
    if not lists:
        raise ValueError("the price book has no price list")
    if len({p.version for p in lists}) != len(lists) or len({p.valid_from for p in lists}) != len(lists):
        raise ValueError("price list versions and valid_from months must be unique")
    return PriceBook(tuple(sorted(lists, key=lambda p: p.valid_from)))


def load_price_book(path: str | Path) -> PriceBook:
    return parse_price_book(json.loads(Path(path).read_text()))


def _plan(base: str, readings: int, queries: int) -> dict:
    return {"base_fee": base, "meters": {
        "readings_ingested": {"included": readings, "unit_price": "0.40", "per": 100_000},
        "rows_stored": {"included": readings, "unit_price": "0.20", "per": 100_000},
        "dead_lettered": {"included": 100_000, "unit_price": "0.10", "per": 100_000},
        "api_queries": {"included": queries, "unit_price": "0.50", "per": 1_000},
        "api_rows_read": {"included": 1_000 * queries, "unit_price": "0.05", "per": 1_000_000},
        "api_bytes_read": {"included": 10 * 1024 ** 3, "unit_price": "0.08", "per": 1024 ** 3},
        # 0.10 EUR per GiB and month of 730 hours, 10 GiB included
        "storage_byte_hours": {"included": 10 * 730 * 1024 ** 3, "unit_price": "0.10", "per": 730 * 1024 ** 3},
        "tool_days": {"included": 31, "unit_price": "1.00", "per": 1},
    }}


# An example price list for the presets of operator/models.py; a platform sets its own with
# URBANSTACK_PRICE_BOOK (a JSON file in the format above).
DEFAULT_PRICE_BOOK = parse_price_book({"price_lists": [{
    "version": "2026-01", "valid_from": "2026-01", "currency": "EUR", "plans": {
        "small": _plan("49.00", 5_000_000, 100_000),
        "medium": _plan("249.00", 50_000_000, 1_000_000),
        "large": _plan("990.00", 500_000_000, 10_000_000)}}]})
