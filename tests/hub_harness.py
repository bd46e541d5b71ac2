"""The platform's web origin for tests: API + Gov Hub on one uvicorn server on 127.0.0.1,
with a real metadata store, the real warehouse engine and real Keycloak sign-in.

Keycloak accepts the hubs' redirects to any port of 127.0.0.1 (loopback, RFC 8252), so the
server runs on a free port as it would behind ``urbanstack serve``."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from urllib.parse import urljoin

import httpx
import uvicorn

from urbanstack import serve
from urbanstack.runtime.api import create_app
from urbanstack.proxies import ForwardedClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebServer:
    def __init__(self, settings, catalogue, warehouse, store, *, extras: dict | None = None):
        self.api = create_app(settings, catalogue, warehouse, keycloak_url=settings.keycloak_url,
                              audience="{tenant}-api")
        self.web = serve.web_app(settings, catalogue, self.api, store, extras=extras)
        self.hub = self.web.state.hub
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = ForwardedClient(serve.PathDispatch(self.api, self.web), ())
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "WebServer":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test web server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)


_FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]+)"', re.S)


def keycloak_form_action(page: str) -> str:
    match = _FORM_ACTION.search(page)
    assert match, f"no form on Keycloak's page: {page[:500]}"
    return html.unescape(match.group(1))


def browser_like_client(*, event_hooks: dict | None = None, **options) -> httpx.Client:
    """An HTTP client that keeps and sends cookies as a browser does on 127.0.0.1: browsers treat
    http://127.0.0.1 as a secure context and send it Secure cookies (Keycloak marks its session
    cookies Secure); http.cookiejar does not, so received loopback cookies lose the flag here."""
    client = httpx.Client(timeout=30, follow_redirects=False, **options)

    def loopback_cookies(response: httpx.Response) -> None:
        for cookie in client.cookies.jar:
            if cookie.domain in ("127.0.0.1", "127.0.0.1.local"):
                cookie.secure = False

    hooks = dict(event_hooks or {})
    hooks["response"] = [loopback_cookies, *hooks.get("response", [])]
    client.event_hooks = hooks
    return client


def page_text(page: str, limit: int = 800) -> str:
    """The visible text of a page's body, for assertion messages."""
    body = page.split("<body", 1)[-1]
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))[:limit]


def sign_in(client: httpx.Client, server: WebServer, slug: str, staff, *, start: str = "") -> httpx.Response:
    """The whole browser sign-in over HTTP: hub page ``start`` (default the start page) → Keycloak
    login form (password) → OTP form → hub callback. Returns the hub page the user lands on."""
    response = client.get(f"{server.url}{start or f'/gov/{slug}/'}")
    hops = 0
    while response.is_redirect and hops < 10:
        response = client.get(urljoin(str(response.url), response.headers["location"]))
        hops += 1
    assert response.status_code == 200 and "kc-form-login" in response.text, page_text(response.text)
    # The shared realm with organizations asks for the username first, then the password.
    for _ in range(2):
        response = client.post(keycloak_form_action(response.text),
                               data={"username": staff.username, "password": staff.password, "credentialId": ""})
        if 'name="otp"' in response.text or 'name="password"' not in response.text:
            break
    assert response.status_code == 200 and 'name="otp"' in response.text, page_text(response.text)
    response = client.post(keycloak_form_action(response.text), data={"otp": staff.totp()})
    assert response.is_redirect, page_text(response.text)
    hops = 0
    while response.is_redirect and hops < 10:
        response = client.get(urljoin(str(response.url), response.headers["location"]))
        hops += 1
    return response


def browser_sign_in(page, server, slug: str, staff, path: str = "") -> None:
    """The sign-in in a real browser (Playwright page): hub page ``path`` → Keycloak's forms
    (username, password, one-time code) → back on the hub."""
    page.goto(f"{server.url}/gov/{slug}/{path}")
    page.fill("#username", staff.username)
    if page.locator("#password").count() == 0:  # the shared realm asks for the username first
        page.click("#kc-login")
    page.fill("#password", staff.password)
    page.click("#kc-login")
    page.fill("#otp", staff.totp())
    page.click("#kc-login")
    page.wait_for_url(f"{server.url}/gov/{slug}/**")
