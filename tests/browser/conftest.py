"""Browser tests: Debian's Chromium driven by Playwright for Python, axe-core for WCAG checks.

Fixtures
- ``browser`` (session): headless Chromium from /usr/bin/chromium (installed with apt-get
  when missing; the tests skip only if that fails). ``playwright install`` is never used.
- ``page``: a fresh context and page per test; ``page.requests_seen`` lists every request
  URL, ``page.console_errors`` every console error and uncaught exception (CSP
  violations show up there).
- ``serve_app``: ``serve_app(asgi_app) -> base URL`` runs an ASGI app on 127.0.0.1 (a free
  port) for the test.
- ``assert_accessible(page, context_label)``: axe-core (WCAG 2.0/2.1 A and AA) finds no
  violation on the page as it is now.
- ``assert_own_origin(page, origin)``: every request went to ``origin`` (or data:/blob:).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # MapLibre needs WebGL; without a GPU Chromium renders it in software
                 "--enable-unsafe-swiftshader"]
AXE = ROOT / "runtime" / "web" / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture(scope="session")
def chromium() -> str:
    from urbanstack.devplatform.debian import ensure_installed

    try:
        ensure_installed("chromium", provides=CHROMIUM, what="browser tests")
    except RuntimeError as error:
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM}, which could not be installed: {error}")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # plain launch: Playwright gives every launch a fresh, temporary user data dir
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin",
                                  viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests_seen = []
    page.console_errors = []
    page.on("request", lambda request: page.requests_seen.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    yield page
    context.close()


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def serve_app():
    """``serve_app(app)`` serves an ASGI app on 127.0.0.1 until the test ends; returns its base URL."""
    import uvicorn

    servers = []

    def serve(app) -> str:
        sock = _free_socket()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test's web server did not start within 10 s")
            time.sleep(0.02)
        servers.append((server, thread, sock))
        host, port = sock.getsockname()
        return f"http://{host}:{port}"

    yield serve
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def check_accessible(page, context_label: str) -> None:
    """Fail listing every axe-core violation (WCAG 2.0/2.1 A + AA) on the page as it is now."""
    if not AXE.exists():
        raise AssertionError(f"axe-core is missing at {AXE}; run 'python -m urbanstack.webassets build'")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Not add_script_tag: it inserts an inline <script>, which the pages' CSP refuses (and the
        # refusal lands in page.console_errors); the DevTools protocol's evaluate is not subject to it.
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate(
        """async (tags) => {
             const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
             return r.violations.map(v => ({id: v.id, help: v.help, impact: v.impact,
                                            targets: v.nodes.map(n => n.target.join(' '))}));
           }""", AXE_TAGS)
    if result:
        lines = [f"- {v['id']} ({v['impact']}): {v['help']} -> {', '.join(v['targets'][:8])}" for v in result]
        raise AssertionError(f"{context_label}: {len(result)} accessibility violation(s):\n" + "\n".join(lines))


def check_own_origin(page, origin: str) -> None:
    """Fail listing every request that went anywhere but ``origin`` (data: and blob: are local)."""
    origin = origin.rstrip("/")
    foreign = [url for url in page.requests_seen
               if not (url == origin or url.startswith(origin + "/") or url.startswith(("data:", "blob:")))]
    assert not foreign, f"requests to other origins than {origin}: {foreign}"


@pytest.fixture
def assert_accessible():
    return check_accessible


@pytest.fixture
def assert_own_origin():
    return check_own_origin
