"""The signup application: ``/signup`` for applicants (public, no session cookie) and ``/ops``
for platform operations (role ``platform-admin`` of the platform realm).

The applicant's request is reached only through unguessable links: the status link
(``/signup/status/<token>``) and the single-use confirmation link
(``/signup/confirm/<token>``, 24 h), both e-mailed; the server stores only their hashes.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from urbanstack import mail
from urbanstack.operator import naming
from urbanstack.runtime.hubs.signup import checks, leitweg
from urbanstack.runtime.hubs.signup.directory import Directory
from urbanstack.runtime.hubs.signup.ops_auth import COOKIE, PLATFORM_ADMIN, PLATFORM_REALM, SECURE_COOKIE, OpsKeycloak
from urbanstack.runtime.hubs.signup.proof import ProofError, Proofs, ProofSettings
from urbanstack.runtime.hubs.signup.service import (AUDIT_TENANT, Follow, Invitations, Kube, SignupLimits, actor,
                                                    conditions, existing_tenant, municipality_manifest)
from urbanstack.runtime.store.models import utcnow
from urbanstack.runtime.store.signup import (APPROVED, CONFIRMED, READY, RECEIVED, DuplicateRequest,
                                             SignupRequests, WrongState)
from urbanstack.runtime.web import i18n, security
from urbanstack.runtime.web.errors import install_error_pages
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.oidc import PendingLogin, SignInError
from urbanstack.runtime.web.rendering import STATIC_DIR, STATIC_PREFIX, Renderer

log = logging.getLogger("urbanstack.signup")
TEMPLATES = Path(__file__).parent / "templates"
PLANS = ("small", "medium", "large")
TERMS_VERSION = "2026-12"
HONEYPOT = "website"

__all__ = ["SignupLimits", "create_signup_app"]


class SignupRenderer(Renderer):
    def gettext(self, lang: str):
        return i18n.translations(lang).gettext


@dataclass
class SignupApp:
    settings: Any
    store: Any
    requests: SignupRequests
    directory: Directory | None
    proofs: Proofs
    limits: SignupLimits
    renderer: SignupRenderer
    kube: Kube | None
    ops_keycloak: OpsKeycloak | None
    follow: Follow
    tools: Callable[[], list[tuple[str, str]]]
    deletion_policy: str = "Retain"
    retention: timedelta = timedelta(days=30)
    extras: dict[str, Any] = field(default_factory=dict)

    def t(self, request: Request) -> Callable[[str], str]:
        return self.renderer.gettext(getattr(request.state, "lang", "de"))

    def page(self, request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("messages", [])
        context.setdefault("retention_days", self.retention.days)
        return self.renderer.page(request, template, status=status, **context)


def _client_key(request: Request) -> str:
    """The client's address for the rate limit: IPv4 as is, IPv6 by its /64."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return not origin or origin == "null" or origin == f"{request.url.scheme}://{request.url.netloc}"


class PageLanguage:
    """ASGI: every request's page language (``?lang=``, else German) in ``request.state.lang``; the
    first request's origin becomes the base of the Gov Hub links in invitation mails."""

    def __init__(self, app, public_base: dict[str, str]):
        self.app, self.public_base = app, public_base

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            request = Request(scope)
            request.state.lang = i18n.language(request.query_params.get("lang"))
            self.public_base.setdefault("url", str(request.base_url).rstrip("/"))
        await self.app(scope, receive, send)


def create_signup_app(settings: Any, store: Any, *, directory: Directory | None, kube: Kube | None = None,
                      ops_keycloak: OpsKeycloak | None = None, invitations: Invitations | None = None,
                      tools: Callable[[], list[tuple[str, str]]] | None = None,
                      proof_settings: ProofSettings | None = None, limits: SignupLimits | None = None,
                      deletion_policy: str = "Retain", follow_interval: float = 0.0,
                      send_mail: Callable[..., Any] | None = None, impact: Any = None) -> FastAPI:
    """``/signup`` and ``/ops`` as one ASGI app (mount it at the root of the platform's origin).
    ``impact``: the platform's impact figures (``metering.impact.Impact``) for ``/ops/impact``."""
    proofs = Proofs(proof_settings or ProofSettings(settings.signup_secret or secrets.token_hex(32)))
    requests = SignupRequests(store)
    renderer = SignupRenderer([TEMPLATES])
    public_base: dict[str, str] = {}
    follow = Follow(requests, store, kube, invitations,
                    gov_hub_url=lambda slug: public_base.get("url", "http://127.0.0.1") + f"/gov/{slug}/")
    hub = SignupApp(settings=settings, store=store, requests=requests, directory=directory, proofs=proofs,
                    limits=limits or SignupLimits(), renderer=renderer, kube=kube, ops_keycloak=ops_keycloak,
                    follow=follow, tools=tools or (kube.tools if kube else (lambda: [])),
                    deletion_policy=deletion_policy, retention=timedelta(days=settings.signup_retention_days))
    sender = send_mail or (lambda to, subject, text: mail.send(settings, to, subject, text))
    app = FastAPI(title="Urban Stack signup", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.signup = hub
    if impact is not None:
        hub.extras["impact"] = impact

    app.include_router(_applicant_router(hub, sender))
    app.include_router(_ops_router(hub))
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    _error_pages(app, hub)
    targets = (security.origin_of(ops_keycloak.server_url),) if ops_keycloak else ()
    app.add_middleware(security.SecurityHeaders, form_targets=targets)
    app.add_middleware(PageLanguage, public_base=public_base)
    if follow_interval > 0:
        _start_follower(hub, follow_interval, app)
    return app


def _start_follower(hub: SignupApp, interval: float, app: FastAPI) -> None:
    stop = threading.Event()

    def loop():
        while not stop.wait(interval):
            try:
                for request in hub.requests.queue():
                    if request.state in (APPROVED, READY) and request.invited_at is None:
                        hub.follow.advance(request.id)
                hub.requests.purge(hub.retention)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("following signup requests failed")

    thread = threading.Thread(target=loop, name="signup-follow", daemon=True)
    thread.start()
    app.state.signup_stop = stop


# The applicant -------------------------------------------------------------

FIELDS = ("ags", "contact_name", "email", "plan", "leitweg_id", "terms", "avv", "altcha")


def _applicant_router(hub: SignupApp, sender) -> APIRouter:
    router = APIRouter(prefix="/signup")

    def form_page(request: Request, *, status: int = 200, values: dict | None = None,
                  errors: dict[str, str] | None = None, notice: str | None = None, query: str = ""):
        values = values or {}
        chosen = hub.directory.get(values.get("ags", "")) if hub.directory and values.get("ags") else None
        hits = hub.directory.search(query) if hub.directory and query else []
        return hub.page(request, "signup/form.html", status=status, values=values, errors=errors or {},
                        notice=notice, query=query, hits=hits, chosen=chosen, plans=PLANS, tools=hub.tools(),
                        honeypot=HONEYPOT, directory_missing=hub.directory is None)

    @router.get("/", response_class=HTMLResponse)
    def start(request: Request, q: str = "", ags: str = ""):
        return form_page(request, values={"ags": ags.strip(), "plan": "small"}, query=q.strip()[:100])

    @router.get("/altcha-challenge")
    def challenge():
        return JSONResponse(hub.proofs.challenge(), headers={"Cache-Control": "no-store"})

    @router.post("/", response_class=HTMLResponse)
    async def apply(request: Request):
        t = hub.t(request)
        form = await request.form()
        values = {name: str(form.get(name, "")).strip()[:10_000 if name == "altcha" else 400] for name in FIELDS}
        values["tools"] = [str(v) for v in form.getlist("tools")][:20]
        if not _same_origin(request):
            raise HTTPException(403, "csrf")
        if form.get(HONEYPOT):
            hub.store.audit.append(AUDIT_TENANT, None, "signup.refused", "", {"check": "honeypot"})
            return form_page(request, status=400, values=values, notice=t(
                "The form could not be sent. Please reload the page and fill it in again."))
        errors: dict[str, str] = {}
        place = None
        if not hub.directory:
            errors["ags"] = t("The municipality directory is not available; please try again later.")
        else:
            place = hub.directory.get(values["ags"])
            if place is None:
                errors["ags"] = t("There is no municipality with this AGS in the directory of the Federal "
                                  "Statistical Office. Search for your municipality by name and choose it from "
                                  "the list.")
        if not values["contact_name"]:
            errors["contact_name"] = t("Enter the name of the contact person.")
        if (problem := checks.email_problem(values["email"])) is not None:
            errors["email"] = t(problem)
        if values["plan"] not in PLANS:
            errors["plan"] = t("Choose one of the plans.")
        offered = {name for name, _ in hub.tools()}
        if not set(values["tools"]) <= offered:
            errors["tools"] = t("Choose only City Tools from the list.")
        if values["leitweg_id"] and (problem := leitweg.problem(values["leitweg_id"])) is not None:
            errors["leitweg_id"] = t(problem)
        elif not values["leitweg_id"]:
            errors["leitweg_id"] = t("Enter the Leitweg-ID to which invoices are to be sent.")
        if values["terms"] != "yes":
            errors["terms"] = t("Please accept the terms of use.")
        if values["avv"] != "yes":
            errors["avv"] = t("Please accept the data processing agreement (AVV).")
        spend_key = None
        try:
            spend_key = hub.proofs.verify(values["altcha"])
        except ProofError as error:
            errors["altcha"] = t(str(error))
        if errors:
            hub.store.audit.append(AUDIT_TENANT, None, "signup.refused", "",
                                   {"checks": sorted(errors), "ags": values["ags"][:8]})
            return form_page(request, status=422, values=values, errors=errors)
        assert place is not None and spend_key is not None
        slug = naming.slugify(place.official_name)
        domain = checks.email_domain(values["email"])
        if hub.kube is not None:
            taken = existing_tenant(hub.kube.municipalities(), place.ags, slug)
            if taken is not None:
                hub.store.audit.append(AUDIT_TENANT, None, "signup.refused", "",
                                       {"check": "existing_tenant", "ags": place.ags, "tenant": taken})
                return form_page(request, status=409, values=values, notice=t(
                    "{name} already uses Urban Stack (as \u201c{slug}\u201d). Please ask your administration's "
                    "Urban Stack administrator for access instead of applying again.").format(
                    name=place.name, slug=taken))
        exceeded = hub.requests.over_limit({"address": _client_key(request), "domain": domain, "ags": place.ags},
                                           hub.limits.limits())
        if exceeded is not None:
            hub.store.audit.append(AUDIT_TENANT, None, "signup.refused", "", {"check": f"rate_{exceeded}",
                                                                              "ags": place.ags})
            texts = {"address": N_("Too many requests were sent from your network. Please try again in an hour."),
                     "domain": N_("Too many requests were sent with addresses of this domain today. Please try "
                                  "again tomorrow or contact us."),
                     "ags": N_("Too many requests were sent for this municipality today. Please try again "
                               "tomorrow or contact us.")}
            return form_page(request, status=429, values=values, notice=t(texts[exceeded]))
        if not hub.requests.spend_proof(spend_key):
            return form_page(request, status=422, values=values, errors={"altcha": t(
                "This anti-spam check was used already. Please reload the page and send the form again.")})
        check_results = {"directory": f"{place.name}, {place.kreis}, {place.land}", "email_domain": domain,
                         "free_mail": False, "leitweg_id": True, "proof_of_work": True,
                         "existing_tenant": None if hub.kube is not None else "not checked (no cluster)",
                         "slug": slug}
        try:
            created = hub.requests.create(
                ags=place.ags, municipality_name=place.name, kreis=place.kreis, land=place.land, slug=slug,
                contact_name=values["contact_name"][:255], email=values["email"], email_domain=domain,
                plan=values["plan"], tools=sorted(set(values["tools"])),
                leitweg_id=leitweg.normalise(values["leitweg_id"]), terms_version=TERMS_VERSION,
                language=request.state.lang, checks=check_results)
        except DuplicateRequest:
            hub.store.audit.append(AUDIT_TENANT, None, "signup.refused", "", {"check": "duplicate", "ags": place.ags})
            return form_page(request, status=409, values=values, notice=t(
                "A request for {name} is already being processed. You will find its status through the link in "
                "the e-mail that was sent to the applicant.").format(name=place.name))
        base = str(request.base_url).rstrip("/")
        status_url = f"{base}/signup/status/{created.status_token}"
        confirm_url = f"{base}/signup/confirm/{created.confirm_token}"
        hub.store.audit.append(AUDIT_TENANT, actor(f"applicant:{created.request.id}", "applicant"),
                               "signup.received", created.request.id, {"ags": place.ags, "domain": domain})
        lang = request.state.lang
        text = t("Hello {name},\n\nthank you for the request of {municipality} to use Urban Stack.\n\nPlease "
                 "confirm your e-mail address within 24 hours with this link (it works once):\n{confirm}\n\n"
                 "The state of the request is shown here (keep this link to yourself):\n{status}\n\nIf you did "
                 "not send this request, ignore this e-mail; the data is deleted after {days} days.\n").format(
            name=values["contact_name"], municipality=place.name, confirm=confirm_url, status=status_url,
            days=hub.retention.days)
        try:
            sender(values["email"], t("Urban Stack: please confirm the request of {municipality}").format(
                municipality=place.name), text)
        except mail.MailError as error:
            log.warning("confirmation e-mail for request %s not sent: %s", created.request.id, error)
        response = RedirectResponse(f"/signup/status/{created.status_token}?sent=1" +
                                    (f"&lang={lang}" if lang != "de" else ""), 303)
        return response

    @router.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm_page(request: Request, token: str):
        return hub.page(request, "signup/confirm.html", token=token, outcome=None)

    @router.post("/confirm/{token}", response_class=HTMLResponse)
    def confirm(request: Request, token: str):
        if not _same_origin(request):
            raise HTTPException(403, "csrf")
        outcome, signup = hub.requests.confirm(token)
        if outcome == "confirmed" and signup is not None:
            hub.store.audit.append(AUDIT_TENANT, actor(f"applicant:{signup.id}", "applicant"), "signup.confirmed",
                                   signup.id, {"ags": signup.ags})
        else:
            hub.store.audit.append(AUDIT_TENANT, None, "signup.confirm_refused", signup.id if signup else "",
                                   {"outcome": outcome})
        status = {"confirmed": 200, "expired": 410, "unknown": 404}[outcome]
        return hub.page(request, "signup/confirm.html", status=status, token=token, outcome=outcome,
                        signup=signup)

    @router.get("/status/{token}", response_class=HTMLResponse)
    def status_page(request: Request, token: str, sent: int = 0):
        signup = hub.requests.by_status_token(token)
        if signup is None or signup.purged_at is not None:
            raise HTTPException(404)
        if signup.state in (APPROVED, READY):
            hub.follow.advance(signup.id)
            signup = hub.requests.get(signup.id)
        return hub.page(request, "signup/status.html", signup=signup, sent=bool(sent),
                        steps=_steps(signup))

    return router


def _steps(signup) -> list[tuple[str, str, bool]]:
    """(key, label, done) of the request's way; rejected ends it."""
    order = [(RECEIVED, N_("Received")), (CONFIRMED, N_("E-mail address confirmed")),
             (APPROVED, N_("Approved")), (READY, N_("Ready: invitation sent"))]
    reached = [RECEIVED, CONFIRMED, APPROVED, READY].index(signup.state) if signup.state in (
        RECEIVED, CONFIRMED, APPROVED, READY) else (1 if signup.confirmed_at else 0)
    return [(key, label, index <= reached) for index, (key, label) in enumerate(order)]


# Platform operations ----------------------------------------------------------

class NeedsSignIn(Exception):
    def __init__(self, location: str):
        self.location = location


def _ops_cookie(request: Request) -> str:
    return SECURE_COOKIE if security.is_secure(request) else COOKIE


def _set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(_ops_cookie(request), token, httponly=True, samesite="lax", secure=security.is_secure(request),
                        path="/")


def ops_session(hub: SignupApp):
    async def dependency(request: Request):
        token = request.cookies.get(_ops_cookie(request))
        row = hub.store.sessions.touch(token) if token else None
        if row is not None and row.tenant != PLATFORM_REALM:
            row = None
        if row is not None and row.subject and row.access_expires_at and utcnow() >= row.access_expires_at:
            try:
                fresh = hub.ops_keycloak.refresh(row.refresh_token or "")
            except SignInError:
                hub.store.sessions.delete(token)
                row = None
            else:
                row = hub.store.sessions.update(token, **fresh) if fresh["subject"] == row.subject else None
        if row is None or not row.subject:
            if request.method in security.SAFE_METHODS:
                target = request.url.path
                raise NeedsSignIn(f"/ops/login?next={quote(target, safe='')}")
            raise HTTPException(401, "sign in first")
        request.state.ops = row
        request.state.session = row  # base.html puts its CSRF token into htmx requests
        if request.method not in security.SAFE_METHODS:
            form_token = None
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                form_token = (await request.form()).get(security.CSRF_FIELD)
            if not security.csrf_ok(request, form_token if isinstance(form_token, str) else None, row.csrf_token):
                raise HTTPException(403, "csrf")
        if PLATFORM_ADMIN not in (row.roles or []):
            raise HTTPException(403, "role")
        return row

    return dependency


def _ops_router(hub: SignupApp) -> APIRouter:
    router = APIRouter(prefix="/ops")
    signed_in = ops_session(hub)

    def callback_url(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/ops/auth/callback"

    @router.get("/login")
    def login(request: Request, next: str = "/ops/"):
        if hub.ops_keycloak is None:
            raise HTTPException(404)
        target = next if next.startswith("/ops/") and not urlsplit(next).netloc and "\\" not in next else "/ops/"
        pending = PendingLogin.new(target)
        token, _ = hub.store.sessions.create(PLATFORM_REALM, pending_login=pending.as_dict())
        response = RedirectResponse(hub.ops_keycloak.authorize_url(callback_url(request), pending,
                                                                   request.state.lang), 303)
        _set_cookie(response, request, token)
        return response

    @router.get("/auth/callback")
    def callback(request: Request, code: str = "", state: str = "", error: str = ""):
        t = hub.t(request)
        token = request.cookies.get(_ops_cookie(request))
        row = hub.store.sessions.get(token) if token else None
        pending = PendingLogin(**row.pending_login) if row is not None and row.pending_login else None
        if error or pending is None or not code or hub.ops_keycloak is None:
            return hub.page(request, "error.html", status=400, title=t("Sign-in failed"),
                            message=t("The sign-in was cancelled or has expired. Please sign in again."),
                            back="/ops/login")
        try:
            identity = hub.ops_keycloak.finish(callback_url(request), pending, code, state)
        except SignInError as failure:
            return hub.page(request, "error.html", status=400, title=t("Sign-in failed"), message=str(failure),
                            back="/ops/login")
        rotated = hub.store.sessions.rotate(token, pending_login=None, **identity)
        if rotated is None:
            return hub.page(request, "error.html", status=400, title=t("Sign-in failed"),
                            message=t("The sign-in was cancelled or has expired. Please sign in again."),
                            back="/ops/login")
        response = RedirectResponse(pending.return_to, 303)
        _set_cookie(response, request, rotated[0])
        return response

    @router.post("/logout")
    def logout(request: Request, row=Depends(signed_in)):
        token = request.cookies.get(_ops_cookie(request))
        hub.store.sessions.delete(token)
        after = str(request.base_url).rstrip("/") + "/signup/"
        response = RedirectResponse(hub.ops_keycloak.logout_url(row.id_token, after), 303)
        response.delete_cookie(_ops_cookie(request), path="/")
        return response

    @router.get("/", response_class=HTMLResponse)
    def queue(request: Request, row=Depends(signed_in)):
        return hub.page(request, "signup/ops_queue.html", ops=row,
                        requests=hub.requests.queue())

    @router.get("/impact", response_class=HTMLResponse)
    def impact_page(request: Request, row=Depends(signed_in)):
        """The platform's reach (the figures of ``GET /api/v1/impact`` and the readings of the last 24 h)."""
        impact = hub.extras.get("impact")
        figures = impact.figures() if impact is not None else None
        names: dict[str, str] = {}
        if figures and figures["municipalities_per_tool"]:
            try:
                names = dict(hub.tools())
            except Exception as error:  # noqa: BLE001 - the tools' own names then
                log.info("ops impact: CityTool names not readable: %s", str(error)[:200])
        return hub.page(request, "signup/ops_impact.html", ops=row, figures=figures, tool_names=names)

    def _request_or_404(request_id: str):
        signup = hub.requests.get(request_id)
        if signup is None:
            raise HTTPException(404)
        return signup

    def detail_page(request: Request, row, signup, *, status: int = 200, notice: str | None = None,
                    notice_kind: str = "error"):
        obj = hub.kube.get(signup.slug) if hub.kube is not None and signup.state in (APPROVED, READY) else None
        return hub.page(request, "signup/ops_request.html", status=status, ops=row,
                        signup=signup, conditions=conditions(obj), notice=notice, notice_kind=notice_kind,
                        follow_error=hub.follow.errors.get(signup.id))

    @router.get("/requests/{request_id}", response_class=HTMLResponse)
    def detail(request: Request, request_id: str, row=Depends(signed_in)):
        return detail_page(request, row, _request_or_404(request_id))

    @router.get("/requests/{request_id}/conditions", response_class=HTMLResponse)
    def live_conditions(request: Request, request_id: str, row=Depends(signed_in)):
        signup = _request_or_404(request_id)
        obj = hub.follow.advance(signup.id) if signup.state in (APPROVED, READY) else None
        signup = hub.requests.get(signup.id)
        return hub.page(request, "signup/_ops_conditions.html", signup=signup, conditions=conditions(obj),
                        follow_error=hub.follow.errors.get(signup.id))

    @router.post("/requests/{request_id}/approve", response_class=HTMLResponse)
    def approve(request: Request, request_id: str, row=Depends(signed_in)):
        t = hub.t(request)
        signup = _request_or_404(request_id)
        who = row.display_name or row.username or row.subject
        if signup.state != CONFIRMED:
            return detail_page(request, row, signup, status=409, notice=t(
                "Only requests whose e-mail address is confirmed can be approved."))
        if hub.kube is None:
            return detail_page(request, row, signup, status=503, notice=t("The cluster is not available."))
        taken = existing_tenant(hub.kube.municipalities(), signup.ags, signup.slug)
        if taken is not None:
            return detail_page(request, row, signup, status=409, notice=t(
                "There is already a municipality \u201c{slug}\u201d with this AGS or name; reject the request "
                "with this reason.").format(slug=taken))
        try:
            hub.requests.approve(signup.id, who, dict(signup.checks, approved_by=who))
        except WrongState:
            return detail_page(request, row, hub.requests.get(signup.id), status=409, notice=t(
                "Someone else decided on this request in the meantime."))
        from kubernetes.client.rest import ApiException

        try:
            hub.kube.create(municipality_manifest(signup, hub.deletion_policy))
        except ApiException as error:
            reason = ("exists" if error.status == 409 else f"HTTP {error.status}")
            hub.requests.undo_approval(signup.id, dict(signup.checks, create_failed=reason))
            hub.store.audit.append(AUDIT_TENANT, actor(row.subject, who), "signup.approve_failed", signup.id,
                                   {"ags": signup.ags, "reason": reason})
            message = (t("A municipality \u201c{slug}\u201d exists already; nothing was created.").format(
                slug=signup.slug) if error.status == 409 else t("The cluster refused to create the municipality "
                                                               "({reason}).").format(reason=reason))
            return detail_page(request, row, hub.requests.get(signup.id), status=409, notice=message)
        hub.store.audit.append(AUDIT_TENANT, actor(row.subject, who), "signup.approved", signup.id,
                               {"ags": signup.ags, "slug": signup.slug})
        return RedirectResponse(f"/ops/requests/{signup.id}", 303)

    @router.post("/requests/{request_id}/reject", response_class=HTMLResponse)
    async def reject(request: Request, request_id: str, row=Depends(signed_in)):
        t = hub.t(request)
        signup = _request_or_404(request_id)
        reason = str((await request.form()).get("reason", "")).strip()[:2000]
        who = row.display_name or row.username or row.subject
        if not reason:
            return detail_page(request, row, signup, status=422, notice=t(
                "Give a reason: the applicant sees it on the status page."))
        try:
            hub.requests.reject(signup.id, who, reason)
        except WrongState:
            return detail_page(request, row, signup, status=409, notice=t(
                "Only requests that are not approved yet can be rejected."))
        hub.store.audit.append(AUDIT_TENANT, actor(row.subject, who), "signup.rejected", signup.id,
                               {"ags": signup.ags})
        return RedirectResponse(f"/ops/requests/{signup.id}", 303)

    return router


def _error_pages(app: FastAPI, hub: SignupApp) -> None:
    texts = {
        401: (N_("Please sign in"), N_("Your session has ended. Sign in again to continue.")),
        403: (N_("Not allowed"), N_("This console is for the platform's operations staff (role platform-admin).")),
        404: (N_("Not found"), N_("This page does not exist, or the link is no longer valid.")),
        405: (N_("Not allowed"), N_("This page does not accept that kind of request.")),
    }
    install_error_pages(app, texts, lambda request, status, title, message, headers: hub.page(
        request, "error.html", status=status, title=title, message=message, back=None), sign_in=NeedsSignIn)
