"""Accessibility feedback for the municipality's administrators: what residents reported
through the Citizen Hub's accessibility statement (``/gov/<slug>/feedback``), newest first,
with a way to remove a message once it has been dealt with."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from urbanstack.runtime.store.dashboards import Actor
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)

    @routes.get("/{slug}/feedback", response_class=HTMLResponse)
    def feedback_list(request: Request, slug: str, session: Session = Depends(staff_session(hub, "gov-admin"))):
        return hub.page(request, "gov/feedback_list.html", municipality=hub.municipality(slug), slug=slug,
                        entries=hub.store.feedback.list(slug), done=request.query_params.get("done") == "1")

    @routes.post("/{slug}/feedback/{feedback_id}/delete")
    def feedback_delete(request: Request, slug: str, feedback_id: int,
                        session: Session = Depends(staff_session(hub, "gov-admin"))):
        if not hub.store.feedback.delete(slug, feedback_id):
            raise HTTPException(404, "no such message")
        hub.store.audit.append(slug, Actor(session.subject or "", session.display_name or session.username),
                               "feedback.delete", f"accessibility feedback {feedback_id}")
        return RedirectResponse(hub.url(slug, "feedback?done=1"), 303)

    return routes
