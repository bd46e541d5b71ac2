"""Error pages of the hubs: one handler shape for the Gov Hub, the signup pages and the Citizen Hub.

Each hub names its own texts per status (msgids, translated per request) and which statuses may
show the raised detail (a message written for people, e.g. a refused form); everything else gets
the hub's generic text, so no internal detail reaches a page."""

from __future__ import annotations

from typing import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import i18n, security
from .i18n import N_

GENERIC = (N_("Error"), N_("The request could not be completed."))

# render(request, status, title, message, headers) -> the hub's error page
Render = Callable[[Request, int, str, str, Mapping[str, str] | None], Response]


def install_error_pages(app: FastAPI, texts: Mapping[int, tuple[str, str]], render: Render, *,
                        detail_statuses: frozenset[int] = frozenset(), sign_in: type[Exception] | None = None,
                        language: Callable[[Request], None] | None = None,
                        defer: Callable[[Request], bool] | None = None) -> None:
    """Registers the HTTP error handler (and, with ``sign_in``, the redirect to sign in).

    ``defer(request)`` true hands the error to the handler registered before (a hub mounted in
    another hub's app answers only its own paths)."""
    previous = app.exception_handlers.get(StarletteHTTPException) if defer else None

    if sign_in is not None:
        async def needs_sign_in(request: Request, error: Exception) -> Response:
            return RedirectResponse(error.location, 303)
        app.add_exception_handler(sign_in, needs_sign_in)

    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if previous is not None and defer(request):
            answer: Awaitable[Response] | Response = previous(request, error)
            return await answer if hasattr(answer, "__await__") else answer
        if error.status_code == 403 and error.detail == "csrf":
            return security.refuse_csrf()
        if not hasattr(request.state, "lang"):
            if language is not None:
                language(request)
            else:
                request.state.lang = i18n.language(request.query_params.get("lang"))
        translate = i18n.translations(request.state.lang).gettext
        title, message = texts.get(error.status_code, GENERIC)
        detail = error.detail if isinstance(error.detail, str) and error.status_code in detail_statuses else None
        return render(request, error.status_code, translate(title), translate(detail or message),
                      getattr(error, "headers", None))

    app.add_exception_handler(StarletteHTTPException, http_error)
