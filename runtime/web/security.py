"""Sessions, CSRF and the security headers every page gets.

- The session lives on the server (``WebSession`` rows in the metadata store); the
  browser holds only a random token in one cookie: HttpOnly, SameSite=Lax, Path=/,
  Secure when the page was reached over TLS (directly or through a trusted proxy),
  and then named with the ``__Host-`` prefix. No other cookie is ever set.
- The token is rotated when the user signs in (no session fixation); a session ends
  after 30 minutes without requests or 8 hours in all (the store's session policy).
- Every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's CSRF
  token, as the form field ``csrf_token`` or the ``X-CSRF-Token`` header (htmx sends it
  from ``hx-headers`` on ``<body>``), and, when the browser sends ``Origin``, come from
  the page's own origin. Anything else is refused with 403 before a route runs.
- Headers: a Content-Security-Policy that allows only the own origin (plus Keycloak as
  a form target for sign-in/out redirects), no framing, no MIME sniffing, same-origin
  referrers.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

COOKIE = "urbanstack_session"
SECURE_COOKIE = "__Host-urbanstack_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_secure(request: Request) -> bool:
    """Reached over TLS: directly, or through a trusted proxy (``proxies.ForwardedClient`` sets the scheme)."""
    return request.url.scheme == "https"


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if is_secure(request) else COOKIE


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    secure = is_secure(request)
    response.set_cookie(SECURE_COOKIE if secure else COOKIE, token, httponly=True, samesite="lax", secure=secure,
                        path="/")


def clear_session_cookie(response: Response, request: Request) -> None:
    secure = is_secure(request)
    response.delete_cookie(SECURE_COOKIE if secure else COOKIE, path="/", httponly=True, samesite="lax",
                           secure=secure)


def session_token(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request))


def csrf_ok(request: Request, form_token: str | None, session_csrf: str | None) -> bool:
    """The request carries the session's CSRF token (header or form field) and, if it says
    where it comes from, comes from this origin."""
    if not session_csrf:
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if origin != f"{request.url.scheme}://{request.url.netloc}":
            return False
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    return hmac.compare_digest(sent.encode(), session_csrf.encode())


def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    """Only the own origin, for everything (MapLibre's control icons are data: images; its worker is a
    file of the bundle). ``form_targets``: origins a form may lead to (Keycloak, for sign-out)."""
    targets = " ".join(("'self'", *form_targets))
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "worker-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action {targets}")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class SecurityHeaders:
    """ASGI middleware adding the security headers to every HTML answer of the wrapped app."""

    def __init__(self, app, form_targets: tuple[str, ...] = ()):
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(form_targets).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower(): value for name, value in headers}
                headers += [h for h in self.headers if h[0] not in present]
                if present.get(b"content-type", b"").startswith(b"text/html") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))  # pages carry personal data and CSRF tokens
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def refuse_csrf() -> Response:
    return PlainTextResponse("Die Anfrage wurde abgelehnt: das Formular ist abgelaufen oder kam nicht von dieser "
                             "Seite. Bitte laden Sie die Seite neu und versuchen Sie es noch einmal. / The request "
                             "was refused: reload the page and try again.", status_code=403)

