"""Usage and statements: ``/gov/<slug>/usage`` — this month's metered usage against what the
plan includes, today's and this hour's usage against the plan's limits, the statement
history (draft or frozen, total, content hash) and each month's statement as CSV, JSON and
XRechnung (``/gov/<slug>/usage/statements/<YYYY-MM>.<csv|json|xml>``).

Finance data: only a gov-admin of the URL's municipality sees it (``staff_session``: the
session's municipality is the URL's, checked on the server for every request); editors
and viewers get 403 and no navigation entry. The figures are the same as the API's
``/api/v1/usage`` and ``/api/v1/statements`` (one :class:`~urbanstack.runtime.metering.exports.Billing`
per process, ``hub.extras["billing"]``); without metering the page says so.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

from babel import numbers
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, Response

from urbanstack.runtime.metering.events import (API_BYTES_READ, API_QUERIES, API_ROWS_READ, DEAD_LETTERED,
                                                QUOTA_QUERIES, READINGS_INGESTED, ROWS_STORED, STORAGE_BYTE_HOURS,
                                                TOOL_DAYS)
from urbanstack.runtime.metering.exports import ExportRefused
from urbanstack.runtime.metering.ledger import BILLING_ZONE, parse_month
from urbanstack.runtime.metering.prices import NoPrices
from urbanstack.runtime.metering.statements import HISTORY_MONTHS
from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session

log = logging.getLogger("urbanstack.govhub.usage")

GIB = 1024 ** 3
# meter -> (label, unit label, divisor): quantities are shown in the unit, divided by the divisor
METER_TEXT = {
    READINGS_INGESTED: (N_("Readings received"), N_("readings"), 1),
    ROWS_STORED: (N_("Rows stored"), N_("rows"), 1),
    DEAD_LETTERED: (N_("Records set aside as faulty (dead letter queue)"), N_("records"), 1),
    API_QUERIES: (N_("Data queries (API and hubs)"), N_("queries"), 1),
    API_ROWS_READ: (N_("Rows read by data queries"), N_("rows"), 1),
    API_BYTES_READ: (N_("Data sent by data queries"), N_("GiB"), GIB),
    STORAGE_BYTE_HOURS: (N_("Storage over the month"), N_("GiB-hours"), GIB),
    TOOL_DAYS: (N_("City Tool days"), N_("tool-days"), 1),
}
EXTENSIONS = {"csv": "csv", "json": "json", "xml": "xrechnung"}
STATUS_TEXT = {"draft": N_("Draft"), "frozen": N_("Frozen")}
REFUSED_TEXT = {
    "no_billing": N_("The e-invoice needs the municipality's billing data (Leitweg-ID, address and invoice inbox). "
                     "Ask the platform's operators to add them."),
    "no_seller": N_("The platform's operators have not set up e-invoices yet."),
    "not_in_catalogue": N_("The municipality is not available yet. Please try again in a minute."),
    "negative": N_("This statement's total is below zero; it needs a credit note, which the platform cannot "
                   "write yet. Ask the platform's operators."),
}


def share_text(percent: float | None, lang: str) -> str:
    """A share in whole percent for reading ("< 1" rather than a misleading "0" for a little)."""
    if percent is None:
        return ""
    if 0 < percent < 1:
        return "< 1"
    return i18n.format_number(percent, lang, 0)


def money(amount, lang: str) -> str:
    """Always two decimals (49,00), unlike numbers elsewhere."""
    return numbers.format_decimal(amount, format="#,##0.00", locale=i18n.BABEL_LOCALES[lang])


def meter_rows(statement) -> list[dict]:
    """One row per priced meter of the statement: used, included, share of the included amount."""
    rows = []
    for line in statement.lines:
        if line.kind != "usage":
            continue
        label, unit, divisor = METER_TEXT.get(line.meter, (line.meter, line.unit, 1))
        percent = None if line.included <= 0 else line.used * 100 / line.included
        rows.append({"meter": line.meter, "label": label, "unit": unit, "used": line.used / divisor,
                     "included": line.included / divisor, "digits": 2 if divisor > 1 else 0,
                     "percent": percent, "over": line.used > line.included, "raw_used": line.used,
                     "raw_included": line.included, "billable": line.billable / divisor, "amount": line.amount})
    return rows


def limit_rows(ledger, municipality, now: datetime) -> list[dict]:
    """Today's readings (UTC day, as the ingest quota counts them) and this hour's queries (as the
    query quota charges them) against the plan's limits."""
    quotas = municipality.spec.plan.quotas()
    slug = municipality.metadata.name
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    hour = now.replace(minute=0, second=0, microsecond=0)
    today = ledger.totals(day, now + timedelta(hours=1), [slug]).get(slug, {})
    this_hour = ledger.totals(hour, hour + timedelta(hours=1), [slug]).get(slug, {})
    rows = []
    for label, used, limit in ((N_("Readings today (UTC day)"), today.get(READINGS_INGESTED, 0), quotas.events_per_day),
                               (N_("Data queries this hour"), this_hour.get(QUOTA_QUERIES, 0), quotas.queries_per_hour)):
        rows.append({"label": label, "used": used, "limit": limit, "percent": used * 100 / limit if limit else None,
                     "over": used > limit})
    return rows


def _month(text: str, this: date) -> date:
    try:
        month = parse_month(text)
    except ValueError:
        raise HTTPException(404) from None
    oldest = this
    for _ in range(HISTORY_MONTHS):
        oldest = (oldest - timedelta(days=1)).replace(day=1)
    if not oldest <= month <= this:
        raise HTTPException(404)
    return month


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)
    admin = staff_session(hub, "gov-admin")

    @routes.get("/{slug}/usage", response_class=HTMLResponse)
    def usage_page(request: Request, slug: str, session: Session = Depends(admin)):
        municipality = hub.municipality(slug)
        billing = hub.extras.get("billing")
        context = {"municipality": municipality, "slug": slug, "metering": billing is not None, "unpriced": False}
        if billing is None:
            return hub.page(request, "gov/usage.html", **context)
        now = datetime.now(timezone.utc)
        this = now.astimezone(BILLING_ZONE).date().replace(day=1)
        try:
            history = billing.statements.overview(slug, now)
        except NoPrices as error:   # the price book has no prices for the municipality's plan
            log.warning("no statement for %s: %s", slug, error)
            return hub.page(request, "gov/usage.html", **{**context, "unpriced": True})
        current = next(s for s in history if s.month == f"{this:%Y-%m}")
        invoice_note = None
        if billing.seller is None:
            invoice_note = REFUSED_TEXT["no_seller"]
        else:
            from urbanstack.runtime.metering.xrechnung import NoBillingData, buyer_of
            try:
                buyer_of(municipality)
            except NoBillingData:
                invoice_note = REFUSED_TEXT["no_billing"]
        lang = getattr(request.state, "lang", i18n.DEFAULT_LANGUAGE)
        return hub.page(request, "gov/usage.html", **context, month=this, statement=current,
                        share=lambda percent: share_text(percent, lang), money=lambda amount: money(amount, lang),
                        meters=meter_rows(current), limits=limit_rows(billing.ledger, municipality, now),
                        plan=current.plan, history=history, status_text=STATUS_TEXT, invoice_note=invoice_note,
                        freezes_at=lambda month: billing.statements.freezes_at(parse_month(month)),
                        frozen_on=lambda s: datetime.fromisoformat(s.frozen_at.replace("Z", "+00:00")))

    @routes.get("/{slug}/usage/statements/{month}.{extension}")
    def download(request: Request, slug: str, month: str, extension: str, session: Session = Depends(admin)):
        billing = hub.extras.get("billing")
        fmt = EXTENSIONS.get(extension)
        if billing is None or fmt is None:
            raise HTTPException(404)
        this = datetime.now(BILLING_ZONE).date().replace(day=1)
        try:
            found = billing.statements.statement(session.tenant, _month(month, this))
        except NoPrices as error:   # the price book has no prices for the municipality's plan
            log.warning("no statement %s for %s: %s", month, slug, error)
            raise HTTPException(503) from None
        try:
            file = billing.file(found, fmt)
        except ExportRefused as refused:
            log.info("statement %s %s of %s refused: %s", month, fmt, slug, refused)
            # 409 shows its reason on the error page; a 503 (not configured, not yet known) the general text
            raise HTTPException(409 if refused.status == 409 else 503, REFUSED_TEXT[refused.reason]) from None
        return Response(file.body, media_type=file.media_type, headers={
            "Content-Disposition": f'attachment; filename="{file.filename}"', "Cache-Control": "no-store"})

    return routes
