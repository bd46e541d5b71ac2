"""The Gov Hub application: ``/gov/<slug>/…``, one municipality per URL.

Every page is for the municipality in its URL, and only a session of that municipality
sees it: tenant and role are checked here, on the server, for every request (the
session's roles come from the token exactly as the API reads them). Data is read
through the API's :class:`QueryEngine` with the session's principal, so a panel can
never read what the API would refuse.

Feature routers (dashboards, tools, data access, people, upload) each live in their own
module and receive the :class:`GovHub` they need; this module holds sign-in, the start
page and the rules every route shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from urbanstack.runtime.api.catalogue import Catalogue
from urbanstack.runtime.api.query import QueryEngine
from urbanstack.runtime.web import i18n, security
from urbanstack.runtime.web.compression import PrecompressedStatic, compress_pages
from urbanstack.runtime.web.errors import install_error_pages
from urbanstack.runtime.web.i18n import N_
from urbanstack.runtime.web.oidc import HubClient, Keycloak, SignInError
from urbanstack.runtime.web.rendering import STATIC_DIR, STATIC_PREFIX, Renderer
from urbanstack.runtime.web.sessions import Session, Sessions

from pathlib import Path

log = logging.getLogger("urbanstack.govhub")
TEMPLATES = Path(__file__).parent / "templates"
APP = "gov-hub"
ROLES = ("gov-admin", "gov-editor", "gov-viewer")


class NeedsSignIn(Exception):
    def __init__(self, location: str):
        self.location = location


@dataclass
class GovHub:
    """Everything a Gov Hub route needs, built once per process."""
    settings: Any
    catalogue: Catalogue
    engine: QueryEngine
    store: Any
    keycloak: Keycloak
    sessions: Sessions
    renderer: Renderer
    prefix: str = "/gov"
    extras: dict[str, Any] = field(default_factory=dict)  # kube client, Keycloak admin, ingest … (feature modules)

    def municipality(self, slug: str):
        municipality = self.catalogue.municipality(slug)
        if municipality is None:
            raise HTTPException(404, "unknown municipality")
        return municipality

    def url(self, slug: str, path: str = "") -> str:
        return f"{self.prefix}/{slug}/{path.lstrip('/')}"

    def client(self, request: Request, slug: str) -> HubClient:
        redirect = str(request.base_url).rstrip("/") + self.url(slug, "auth/callback")
        return self.keycloak.client(self.municipality(slug), APP, redirect)

    def page(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        context.setdefault("messages", [])   # base.html's notices (error pages pass none)
        return self.renderer.page(request, template, hub=self, **context)


def _safe_return(slug: str, prefix: str, target: str | None) -> str:
    """Only paths inside this municipality's hub are followed after sign-in (no open redirect)."""
    home = f"{prefix}/{slug}/"
    if not target:
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(home) or "\\" in target:
        return home
    return target


def create_gov_hub(settings: Any, catalogue: Catalogue, engine: QueryEngine, store, keycloak: Keycloak, *,
                   prefix: str = "/gov", extras: dict[str, Any] | None = None,
                   feature_routers: tuple[Callable[[GovHub], APIRouter], ...] | None = None) -> FastAPI:
    """The Gov Hub as an ASGI app whose routes start with ``prefix`` (mount it at the root of the
    platform's origin, beside the API; static files are served under ``/static``)."""
    renderer = Renderer([TEMPLATES])
    hub = GovHub(settings=settings, catalogue=catalogue, engine=engine, store=store, keycloak=keycloak,
                 sessions=Sessions(store, keycloak), renderer=renderer, prefix=prefix, extras=dict(extras or {}))
    app = FastAPI(title="Urban Gov Hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    router = APIRouter(prefix=prefix)

    @router.get("/", response_class=HTMLResponse)
    def choose(request: Request):
        request.state.lang = i18n.language(request.query_params.get("lang"))
        municipalities = sorted(catalogue.municipalities(), key=lambda m: m.spec.display_name)
        return hub.page(request, "gov/choose.html", municipalities=municipalities)

    @router.get("/{slug}/login")
    def login(request: Request, slug: str, next: str | None = None):
        hub.municipality(slug)
        existing = hub.sessions.load(request, lambda tenant: hub.client(request, tenant))
        token, pending = hub.sessions.begin(slug, _safe_return(slug, prefix, next), existing)
        lang = i18n.language(request.query_params.get("lang"), existing.language if existing else None)
        response = RedirectResponse(hub.keycloak.authorize_url(hub.client(request, slug), pending, lang=lang), 303)
        security.set_session_cookie(response, request, token)
        return response

    @router.get("/{slug}/auth/callback")
    def callback(request: Request, slug: str, code: str = "", state: str = "", error: str = ""):
        session = hub.sessions.load(request, lambda tenant: hub.client(request, tenant))
        pending = hub.sessions.pending(session) if session is not None and session.tenant == slug else None
        request.state.lang = i18n.language(None, session.language if session else None)
        if error or pending is None or not code:
            return _sign_in_failed(request, slug, N_("The sign-in was cancelled or has expired. Please sign in again."))
        try:
            signed_in = hub.keycloak.finish(hub.client(request, slug), pending, code=code, state=state)
        except SignInError as failure:
            log.info("sign-in to %s failed: %s", slug, failure)
            return _sign_in_failed(request, slug, str(failure))
        if signed_in.principal.tenant != slug or not set(ROLES) & signed_in.principal.roles:
            hub.keycloak.revoke(hub.client(request, slug), signed_in.refresh_token)
            return _sign_in_failed(request, slug, N_("Your account has no staff role in this municipality's Gov Hub. "
                                                     "Ask its administrator for access."), status=403)
        token = hub.sessions.complete(session, signed_in)
        if token is None:
            return _sign_in_failed(request, slug, N_("The sign-in was cancelled or has expired. Please sign in again."))
        response = RedirectResponse(pending.return_to, 303)
        security.set_session_cookie(response, request, token)
        return response

    def _sign_in_failed(request: Request, slug: str, message: str, status: int = 400):
        translate = i18n.translations(getattr(request.state, "lang", "de")).gettext
        return hub.page(request, "error.html", status=status, title=translate("Sign-in failed"),
                        message=translate(message), back=hub.url(slug, "login"))

    @router.post("/{slug}/logout")
    def logout(request: Request, slug: str, session: Session = Depends(staff_session(hub))):
        id_token, refresh = hub.sessions.end(session)
        client = hub.client(request, slug)
        after = str(request.base_url).rstrip("/") + hub.url(slug, "logged-out")
        response = RedirectResponse(hub.keycloak.logout_url(client, id_token, after), 303)
        security.clear_session_cookie(response, request)
        return response

    @router.get("/{slug}/logged-out", response_class=HTMLResponse)
    def logged_out(request: Request, slug: str):
        request.state.lang = i18n.language(request.query_params.get("lang"))
        return hub.page(request, "gov/logged_out.html", municipality=hub.municipality(slug))

    @router.get("/{slug}/", response_class=HTMLResponse)
    def start(request: Request, slug: str, session: Session = Depends(staff_session(hub))):
        from .start import start_page
        return start_page(hub, request, slug, session)

    app.include_router(router)
    app.mount(STATIC_PREFIX, PrecompressedStatic(directory=STATIC_DIR, check_dir=False), name="static")
    for build in feature_routers if feature_routers is not None else default_features():
        app.include_router(build(hub))
    _error_pages(app, hub)
    app.add_middleware(security.SecurityHeaders, form_targets=(security.origin_of(keycloak.server_url),))
    compress_pages(app)
    meter = hub.extras.get("meter")
    if meter is not None:   # outermost: the bytes as sent (docs/metering.md, "The hubs")
        from urbanstack.runtime.metering.api_meter import MeteringMiddleware

        app.add_middleware(MeteringMiddleware, meter=meter, paths=None)
    return app


def default_features() -> tuple[Callable[[GovHub], APIRouter], ...]:
    """The feature routers of the Gov Hub (each module's ``router(hub)``)."""
    from . import dashboards, data, feedback, people, toolpages, tools, upload, usage

    return (dashboards.router, dashboards.published_router, tools.router, toolpages.router, data.router,
            people.router, upload.router, feedback.router, usage.router)


def staff_session(hub: GovHub, role: str = "gov-viewer"):
    """A dependency: the signed-in session of the URL's municipality with at least ``role``.

    GET without a session goes to sign-in and comes back; other methods get 401. A session
    of another municipality is not this municipality's: it signs in anew. A missing role is 403.
    State-changing requests must carry the CSRF token (form field or header)."""

    async def dependency(request: Request, slug: str) -> Session:
        hub.municipality(slug)
        session = hub.sessions.load(request, lambda tenant: hub.client(request, tenant))
        request.state.session = session
        request.state.lang = i18n.language(request.query_params.get("lang"), session.language if session else None)
        if session is not None and request.query_params.get("lang") in i18n.LANGUAGES:
            hub.sessions.remember_language(session, request.state.lang)
        if session is None or not session.signed_in or session.tenant != slug:
            if request.method in security.SAFE_METHODS:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise NeedsSignIn(hub.url(slug, f"login?next={quote(target, safe='')}"))
            raise HTTPException(401, "sign in first")
        if request.method not in security.SAFE_METHODS:
            form_token = None
            if request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded",
                                                                   "multipart/form-data")):
                form_token = (await request.form()).get(security.CSRF_FIELD)
            if not security.csrf_ok(request, form_token if isinstance(form_token, str) else None,
                                    session.csrf_token):
                raise HTTPException(403, "csrf")
        if not session.has(role):
            raise HTTPException(403, "role")
        return session

    return dependency


def _error_pages(app: FastAPI, hub: GovHub) -> None:
    texts = {
        401: (N_("Please sign in"), N_("Your session has ended. Sign in again to continue.")),
        403: (N_("Not allowed"), N_("Your role does not allow this. Ask your municipality's administrator.")),
        404: (N_("Not found"), N_("This page does not exist, or you may not see it.")),
        405: (N_("Not allowed"), N_("This page does not accept that kind of request.")),
        409: (N_("Conflict"), N_("Someone else changed this in the meantime. Reload and try again.")),
        413: (N_("Too large"), N_("The request is too large.")),
        422: (N_("Invalid input"), N_("Some input was not valid. Go back and check the form.")),
    }
    install_error_pages(app, texts, lambda request, status, title, message, headers: hub.page(
        request, "error.html", status=status, title=title, message=message, back=None, headers=headers),
        detail_statuses=frozenset({409, 413, 422}), sign_in=NeedsSignIn)
