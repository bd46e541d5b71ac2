"""The Gov Hub in a real browser: a member of staff signs in through Keycloak's pages (password
and one-time code) and lands on the start page; every hub page tested has no WCAG 2.1 A/AA
violation (axe-core), requests nothing from another origin, reflows at 320 px, and signing out
ends the session. Screenshots: gov-hub-start.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import screenshots
from conftest import check_accessible, check_own_origin
from hub_harness import WebServer, browser_sign_in
from keycloak_staff import KeycloakAdmin, add_staff

from urbanstack.devplatform import keycloak
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.runtime.api import Catalogue

pytestmark = pytest.mark.platform
ROOT = Path(__file__).resolve().parents[2]
TOOL = "passantenfrequenz-wetter"


def _tool():
    import yaml
    return parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{TOOL}.yaml").read_text()))


def _secrets(part) -> dict[str, str]:
    return {client.secret_key: uuid.uuid4().hex for client in part.clients if client.secret_key}


@pytest.fixture(scope="module")
def hub(platform, warehouse, metadata_store):
    slug = f"guetersloh-b{uuid.uuid4().hex[:6]}"
    municipality = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": [f"admin@{slug}.test"],
                 "identity": {"strategy": "organization", "domains": [f"{slug}.test"]}, "tools": [{"name": TOOL}]}})
    part = plan(municipality, [_tool()]).identity
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    admin = KeycloakAdmin(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    ensure(provisioner, part, _secrets(part))
    try:
        with WebServer(platform, Catalogue([municipality], [_tool()]), warehouse, metadata_store) as server:
            yield server, slug, part, admin
    finally:
        provisioner.delete(part, keep_data=False)
        provisioner.close()
        admin.close()


def test_staff_signs_in_in_the_browser_and_the_start_page_is_accessible(page, hub):
    server, slug, part, admin = hub
    staff = add_staff(admin, part, "gov-admin", name="Grete Güterslohn")
    browser_sign_in(page, server, slug, staff)
    assert page.locator("h1").inner_text() == "Gütersloh"
    assert page.locator(".account-name").inner_text() == "Grete Güterslohn"
    # What the hub set: one cookie, the session, HttpOnly and Lax.
    hub_cookies = [c for c in page.context.cookies(server.url) if c["name"].startswith(("urbanstack", "__Host"))]
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in hub_cookies] == [("urbanstack_session", True, "Lax")]
    page.requests_seen.clear()
    page.reload()
    check_accessible(page, "Gov Hub start page")
    check_own_origin(page, server.url)
    screenshots.save(page, "gov-hub-start")
    page.set_viewport_size({"width": 320, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    check_accessible(page, "Gov Hub start page at 320 px")
    page.set_viewport_size({"width": 1280, "height": 900})
    # Keyboard: the skip link is the first stop and moves focus to the main content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_english_on_request_and_sign_out_ends_the_session(page, hub):
    server, slug, part, admin = hub
    staff = add_staff(admin, part, "gov-viewer")
    browser_sign_in(page, server, slug, staff)
    page.click("text=English")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("button", has_text="Sign out").is_visible()
    page.goto(f"{server.url}/gov/{slug}/")  # the choice is remembered in the session
    assert page.locator("html").get_attribute("lang") == "en"
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{server.url}/gov/{slug}/logged-out**")
    check_accessible(page, "signed-out page")
    # Signed out at Keycloak too: the hub sends the browser to Keycloak's form again.
    page.goto(f"{server.url}/gov/{slug}/")
    assert page.locator("#username").count() == 1


def test_public_hub_pages_are_accessible_and_local(page, hub):
    server, slug, _, _ = hub
    for path, label in ((f"/gov/", "municipality choice"), (f"/gov/{slug}/logged-out", "signed-out page"),
                        (f"/gov/no-such-town/", "not-found page")):
        page.requests_seen.clear()
        page.goto(server.url + path)
        check_accessible(page, label)
        check_own_origin(page, server.url)
