"""``/api/v1/usage`` and ``/api/v1/statements``: a municipality's own metered usage and its
monthly statements. The municipality is always the token's; no parameter can name another."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response

from urbanstack.runtime.metering.ledger import BILLING_ZONE, month_range, parse_month
from urbanstack.runtime.metering.impact import Impact
from urbanstack.runtime.metering.exports import Billing, ExportRefused
from urbanstack.runtime.metering.prices import NoPrices

from .auth import Permission, Principal

MONTH = Query(None, description="Calendar month (Europe/Berlin) as YYYY-MM; default: the current month.",
              pattern=r"^\d{4}-\d{2}$")


def _caller(principal: Principal | None, permission: Permission, what: str) -> str:
    if principal is None:
        raise HTTPException(401, f"{what} needs a token of the municipality", headers={"WWW-Authenticate": "Bearer"})
    if not principal.can(permission):
        raise HTTPException(403, f"{what} needs the permission {permission.value} (role "
                                 f"{'gov-admin' if permission is Permission.manage_own else 'gov-viewer'} or higher)")
    return principal.tenant


def _month(text: str | None) -> date:
    if text is None:
        return datetime.now(BILLING_ZONE).date().replace(day=1)
    try:
        return parse_month(text)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def _unpriced(subject: str, error: NoPrices) -> JSONResponse:
    """503, as the Gov Hub's usage page: only the platform's operators can add the missing prices."""
    return JSONResponse({"error": {"code": "plan_not_priced", "plan": error.plan,
                                   "message": f"no statement for {subject}: {error}"}}, status_code=503)


def build_usage_router(principal_dependency, billing: Billing, impact: Impact | None = None) -> APIRouter:
    """``billing``: the ledger, the statements and the seller (without seller details the
    XRechnung format is refused with 503)."""
    router = APIRouter(prefix="/api/v1", tags=["usage"])
    ledger, statements = billing.ledger, billing.statements

    @router.get("/usage", summary="Metered usage of the caller's municipality in one month")
    def usage(month: str | None = MONTH, grain: Literal["hour", "day", "month"] = "day",
              principal: Principal | None = Depends(principal_dependency)):
        subject = _caller(principal, Permission.read_own, "usage")
        chosen = _month(month)
        start, end = month_range(chosen)
        rows = ledger.series(subject, start, end, grain)
        totals: dict[str, int] = {}
        for _bucket, meter, quantity in rows:
            totals[meter] = totals.get(meter, 0) + quantity
        users = ledger.active_users(start, end, [subject]).get(subject, 0)
        return {"municipality": subject, "month": f"{chosen:%Y-%m}", "timezone": BILLING_ZONE.key, "grain": grain,
                "totals": totals, "activeUsers": users, "rows": [{"bucket": b.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                            "meter": m, "quantity": q} for b, m, q in rows]}

    @router.get("/statements", summary="Monthly statements of the caller's municipality")
    def statement_list(principal: Principal | None = Depends(principal_dependency)):
        subject = _caller(principal, Permission.manage_own, "statements")
        try:
            return {"municipality": subject, "statements": statements.history(subject)}
        except NoPrices as error:
            return _unpriced(subject, error)

    @router.get("/statements/{month}", summary="One monthly statement (JSON, CSV or XRechnung)")
    def statement(month: str, format: Literal["json", "csv", "xrechnung"] = "json",
                  principal: Principal | None = Depends(principal_dependency)):
        subject = _caller(principal, Permission.manage_own, "statements")
        chosen = _month(month)
        try:
            found = statements.statement(subject, chosen)
        except NoPrices as error:
            return _unpriced(subject, error)
        if format == "json":
            return JSONResponse(found.to_dict())
        try:
            file = billing.file(found, format)
        except ExportRefused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        return Response(file.body, media_type=file.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{file.filename}"'})

    if impact is not None:
        @router.get("/impact", summary="What the platform reaches: municipalities, residents, datasets, tools")
        def impact_figures(_principal: Principal | None = Depends(principal_dependency)):
            # Counts of the whole platform, open like open data. Readings per day stay on /metrics (ops):
            # on a platform of two municipalities the total minus one's own would be the other's usage.
            return {k: v for k, v in impact.figures().items() if k != "readings_last_24h"}

    return router
