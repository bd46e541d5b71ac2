"""People: a gov-admin sees the municipality's staff and their roles, invites colleagues by
e-mail, changes roles and removes access (``/gov/<slug>/people``).

Keycloak is reached through :class:`.members.Directory`, as the hub's own least-privilege
identity (``hub.extras["people"]``, built from the settings when absent). Removing access
also ends the person's Gov Hub sessions of this municipality at once.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session
from .members import STAFF_ROLES, Directory, DirectoryError, NotMember

log = logging.getLogger("urbanstack.govhub.people")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
ROLE_TEXT = {"gov-admin": "Administrator", "gov-editor": "Editor", "gov-viewer": "Viewer"}


def directory(hub: GovHub) -> Directory:
    if "people" not in hub.extras:
        hub.extras["people"] = Directory.from_settings(hub.settings)
    return hub.extras["people"]


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)
    admin = staff_session(hub, "gov-admin")

    def render(request: Request, slug: str, session: Session, *, notice: str = "", problem: str = "",
               field_errors: dict[str, str] | None = None, form: dict[str, str] | None = None, status: int = 200):
        municipality = hub.municipality(slug)
        members, unavailable = [], ""
        try:
            members = directory(hub).members(municipality)
        except DirectoryError as error:
            log.warning("people of %s cannot be listed: %s", slug, error)
            unavailable = str(error)
        except Exception as error:  # noqa: BLE001 - settings missing: say so on the page
            log.warning("people management is not configured: %s", error)
            unavailable = "People management is not configured on this platform: " + str(error)
        return hub.page(request, "gov/people.html", status=status, municipality=municipality, slug=slug,
                        members=members, roles=STAFF_ROLES, role_text=ROLE_TEXT, notice=notice, problem=problem,
                        unavailable=unavailable, field_errors=field_errors or {},
                        form=form or {"email": "", "role": "gov-viewer"}, me=session.subject, messages=[])

    def translate(request: Request, text: str, **values) -> str:
        return i18n.translations(request.state.lang).gettext(text) % values if values else \
            i18n.translations(request.state.lang).gettext(text)

    @routes.get("/{slug}/people", response_class=HTMLResponse)
    def people(request: Request, slug: str, session: Session = Depends(admin)):
        return render(request, slug, session)

    @routes.post("/{slug}/people/invite", response_class=HTMLResponse)
    async def invite(request: Request, slug: str, email: str = Form(""), role: str = Form("gov-viewer"),
                     session: Session = Depends(admin)):
        municipality = hub.municipality(slug)
        form = {"email": email, "role": role}
        errors = {}
        if not _EMAIL.match(email.strip()):
            errors["email"] = translate(request, "Enter an e-mail address like name@example.org.")
        if role not in STAFF_ROLES:
            errors["role"] = translate(request, "Choose one of the roles.")
        if errors:
            return render(request, slug, session, field_errors=errors, form=form, status=422)
        redirect = str(request.base_url).rstrip("/") + hub.url(slug, "")
        try:
            invitation = await run_in_threadpool(directory(hub).invite, municipality, email, role,
                                                 redirect_uri=redirect)
        except DirectoryError as error:
            return render(request, slug, session, problem=str(error), form=form, status=502)
        log.info("%s invited %s to %s as %s", session.subject, invitation.member.id, slug, role)
        who = invitation.member.email
        if invitation.mail == "sent":
            notice = translate(request, "%(who)s was invited. Keycloak sent an e-mail to set a password and an "
                                        "authenticator app.", who=who)
        elif invitation.mail == "not_needed":
            notice = translate(request, "%(who)s already has an account and can now sign in with the new role.",
                               who=who)
        else:
            notice = translate(request, "%(who)s now has the role, but the invitation e-mail could not be sent: "
                                        "no mail server is configured for sign-in e-mails on this platform. Your "
                                        "colleague cannot sign in before setting a password. Ask the platform team "
                                        "to configure the mail server, then invite %(who)s again to send the e-mail.",
                               who=who)
            return render(request, slug, session, problem=notice, status=200)
        return render(request, slug, session, notice=notice)

    @routes.post("/{slug}/people/{user_id}/role", response_class=HTMLResponse)
    async def change_role(request: Request, slug: str, user_id: str, role: str = Form(""),
                          session: Session = Depends(admin)):
        municipality = hub.municipality(slug)
        if user_id == session.subject:
            return render(request, slug, session, status=409, problem=translate(
                request, "You cannot change your own role. Ask another administrator."))
        if role not in STAFF_ROLES:
            return render(request, slug, session, status=422, problem=translate(request, "Choose one of the roles."))
        try:
            member = await run_in_threadpool(directory(hub).change_role, municipality, user_id, role)
        except NotMember:
            raise HTTPException(404) from None
        except DirectoryError as error:
            return render(request, slug, session, problem=str(error), status=502)
        # The person's open hub sessions carry the old roles: they sign in again with the new one.
        hub.sessions.end_all_of(slug, user_id)
        log.info("%s changed the role of %s in %s to %s", session.subject, user_id, slug, role)
        return render(request, slug, session, notice=translate(
            request, "%(who)s is now %(role)s.", who=member.email or member.username,
            role=translate(request, ROLE_TEXT[role])))

    @routes.post("/{slug}/people/{user_id}/remove", response_class=HTMLResponse)
    async def remove(request: Request, slug: str, user_id: str, session: Session = Depends(admin)):
        municipality = hub.municipality(slug)
        if user_id == session.subject:
            return render(request, slug, session, status=409, problem=translate(
                request, "You cannot remove your own access. Ask another administrator."))
        try:
            member = await run_in_threadpool(directory(hub).remove, municipality, user_id)
        except NotMember:
            raise HTTPException(404) from None
        except DirectoryError as error:
            return render(request, slug, session, problem=str(error), status=502)
        ended = hub.sessions.end_all_of(slug, user_id)
        log.info("%s removed %s from %s (%d hub sessions ended)", session.subject, user_id, slug, ended)
        return render(request, slug, session, notice=translate(
            request, "%(who)s no longer has access to this municipality.", who=member.email or member.username))

    return routes
