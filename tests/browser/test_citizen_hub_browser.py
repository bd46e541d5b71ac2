"""The Citizen Hub in a real browser: every page passes axe-core (WCAG 2.1 A/AA), asks only its
own origin, leaves no cookie and nothing in localStorage, reflows at 320 px without horizontal
scrolling, and the main flow (region → municipality → catalogue → dataset → download; the
feedback form) works with the keyboard. Screenshots: citizen-*.png (folder: tests/screenshots.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from citizen_world import DIRECTORY, TOOL, CitizenWorld
import screenshots
from conftest import check_accessible, check_own_origin

from urbanstack import serve
from urbanstack.runtime.api import create_app
from urbanstack.runtime.store import open_store, upgrade
from urbanstack.settings import Settings



@pytest.fixture(scope="module")
def site(warehouse, tmp_path_factory):
    world = CitizenWorld(warehouse)
    url = f"sqlite:///{tmp_path_factory.mktemp('citizen-store') / 'metadata.sqlite3'}"
    upgrade(url)
    store = open_store(url)
    settings = Settings.from_env({"URBANSTACK_MUNICIPALITY_DIRECTORY": str(DIRECTORY),
                                  "URBANSTACK_STATE_DIR": str(tmp_path_factory.mktemp("state"))})
    api = create_app(settings, world.catalogue, warehouse, keycloak_url="http://127.0.0.1:9", audience="{tenant}-api")
    app = serve.PathDispatch(api, serve.web_app(settings, world.catalogue, api, store))
    yield world, app, store
    store.close()


def _pages(world) -> list[tuple[str, str]]:
    gue = world.gue
    return [("region", "/"), ("start", f"/{gue}/"), ("catalogue", "/data/"),
            ("catalogue-search", "/data/?q=pedestrian&theme=TRAN"), ("municipality-catalogue", f"/{gue}/data/"),
            ("dataset", f"/{gue}/data/{TOOL}/pedestrian_counts"), ("services", f"/{gue}/services/"),
            ("service", f"/{gue}/services/{TOOL}"), ("accessibility", f"/{gue}/accessibility"),
            ("imprint", f"/{gue}/imprint"), ("privacy", f"/{gue}/privacy"), ("english-start", f"/{gue}/?lang=en"),
            ("not-found", "/no-such-town/")]


def _check(page, base: str, label: str) -> None:
    errors = [e for e in page.console_errors if not (label == "not-found" and "404" in e)]
    assert errors == [], f"{label}: {errors}"
    check_own_origin(page, base)
    check_accessible(page, label)
    assert page.evaluate("localStorage.length") == 0, f"{label} wrote localStorage"
    assert page.evaluate("sessionStorage.length") == 0, f"{label} wrote sessionStorage"
    assert page.evaluate("document.cookie") == "", f"{label} set a cookie"
    assert page.context.cookies() == [], f"{label}: {page.context.cookies()}"


def test_every_page_is_accessible_private_and_reflows(page, serve_app, site):
    world, app, _store = site
    base = serve_app(app)
    for label, path in _pages(world):
        page.set_viewport_size({"width": 1280, "height": 900})
        page.requests_seen.clear()
        page.console_errors.clear()   # axe's injection on the previous page logs a CSP refusal
        response = page.goto(base + path)
        assert response.status == (404 if label == "not-found" else 200), label
        assert "set-cookie" not in response.headers
        _check(page, base, label)
        if label in ("region", "start", "catalogue", "dataset"):
            screenshots.save(page, f"citizen-{label}")
        page.set_viewport_size({"width": 320, "height": 800})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{label} scrolls sideways at 320 px by {overflow} px"
        check_accessible(page, f"{label} at 320 px")


def test_the_main_flow_works_by_keyboard(page, serve_app, site):
    world, app, store = site
    base = serve_app(app)
    page.goto(base + "/")

    def follow(name: str) -> None:
        """Tab to the link or button whose text is ``name`` and press Enter."""
        for _ in range(80):
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement && document.activeElement.textContent.trim()")
            if focused == name:
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                return
        raise AssertionError(f"Tab never reached {name!r} on {page.url}")

    follow("Gütersloh")
    assert page.url == f"{base}/{world.gue}/"
    follow("Offene Daten")
    assert page.url == f"{base}/{world.gue}/data/"
    # search by keyboard: focus the keyword field, type, submit with Enter
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    page.keyboard.type("pedestrian")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "q=pedestrian" in page.url and "Gefundene Datensätze: 1" in page.inner_text("main")
    follow("Passantenfrequenz & Wetter: pedestrian counts")
    assert page.url.endswith(f"/{world.gue}/data/{TOOL}/pedestrian_counts")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "CSV":
            break
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 1 + world.count(world.gue, TOOL, "pedestrian_counts")
    # the feedback form by keyboard
    page.goto(f"{base}/{world.gue}/accessibility")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "message":
            break
    page.keyboard.type("Der Kontrast der Fußzeile ist zu schwach.")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "BUTTON":
            break
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Vielen Dank" in page.inner_text("main")
    check_accessible(page, "feedback sent")
    assert page.context.cookies() == [] and page.evaluate("localStorage.length") == 0
    assert any("Fußzeile" in entry.message for entry in store.feedback.list(world.gue))
