"""A municipality's statements as files for its finance office (JSON, CSV, XRechnung), the same
for the API (``/api/v1/statements/{month}``) and the Gov Hub's usage page.

:class:`Billing` bundles what both need: the ledger, the statements and the platform's
seller details. ``urbanstack serve`` builds one per process (``create_app`` keeps it as
``app.state.billing``; the web pages get it from there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from .ledger import BILLING_ZONE, Ledger
from .statements import Statement, Statements

FORMATS = ("json", "csv", "xrechnung")


class ExportRefused(Exception):
    """No file can be made; ``status`` is the HTTP status to answer, the message says why (English)."""

    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.reason = status, reason   # reason: no_billing | no_seller | not_in_catalogue | negative


@dataclass(frozen=True)
class StatementFile:
    body: bytes
    media_type: str
    filename: str


@dataclass
class Billing:
    ledger: Ledger
    statements: Statements
    catalogue: object
    seller: object = None   # xrechnung.Seller, or None: the XRechnung export is refused (503)

    def file(self, found: Statement, fmt: str) -> StatementFile:
        """``found`` (a statement of ``found.subject``) as ``fmt``; raises :class:`ExportRefused`."""
        subject = found.subject
        if fmt == "csv":
            return StatementFile(found.to_csv().encode("utf-8"), "text/csv; charset=utf-8",
                                 f"statement-{subject}-{found.month}.csv")
        if fmt == "json":
            return StatementFile(json.dumps(found.to_dict(), ensure_ascii=False, indent=2).encode("utf-8"),
                                 "application/json", f"statement-{subject}-{found.month}.json")
        if fmt != "xrechnung":
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        return StatementFile(self._xrechnung(found), "application/xml", f"xrechnung-{subject}-{found.month}.xml")

    def _xrechnung(self, found: Statement) -> bytes:
        from .xrechnung import SELLER_SETTING, NoBillingData, buyer_of, to_xrechnung

        municipality = self.catalogue.municipality(found.subject)
        if municipality is None:
            raise ExportRefused(503, f"municipality {found.subject!r} is not in the catalogue yet; try again shortly",
                                "not_in_catalogue")
        try:
            buyer = buyer_of(municipality)
        except NoBillingData as exc:
            raise ExportRefused(409, str(exc), "no_billing") from None
        if self.seller is None:
            raise ExportRefused(503, f"the platform's seller details are not configured ({SELLER_SETTING}); "
                                     "ask the platform's operators", "no_seller")
        issued = (datetime.fromisoformat(found.frozen_at.replace("Z", "+00:00")).astimezone(BILLING_ZONE).date()
                  if found.frozen_at else datetime.now(BILLING_ZONE).date())
        try:
            return to_xrechnung(found, seller=self.seller, buyer=buyer,
                                invoice_number=f"US-{found.subject}-{found.month}", issue_date=issued)
        except ValueError as exc:   # e.g. a total below zero needs a credit note
            raise ExportRefused(409, str(exc), "negative") from None


def default_statements(ledger: Ledger, catalogue) -> Statements:
    """Statements with the built-in price book and each municipality's plan from the catalogue."""
    def plan_of(slug: str) -> str:
        municipality = catalogue.municipality(slug)
        return municipality.spec.plan.name.value if municipality is not None else "small"

    return Statements(ledger, plan_of=plan_of)


__all__ = ["Billing", "ExportRefused", "FORMATS", "StatementFile", "default_statements"]
