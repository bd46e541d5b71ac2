"""Signing in to the Gov Hub with real Keycloak: authorization code flow with PKCE, the OTP that
Keycloak's browser flow demands for gov roles, server-side sessions, CSRF, and logout that ends
the Keycloak session too. Tenants are provisioned by the operator's IdentityProvisioner in both
identity strategies; users get a password and a TOTP device (tests/keycloak_staff.py)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from hub_harness import WebServer, browser_like_client, page_text, sign_in
from keycloak_staff import KeycloakAdmin, add_staff, keycloak_sessions
from test_api import PEDESTRIANS, _tool
from test_identity_provisioner import _credentials

from urbanstack.devplatform import keycloak
from urbanstack.operator.models import Municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.web.security import COOKIE

pytestmark = pytest.mark.platform


def _municipality(slug: str, ags: str, strategy: str) -> Municipality:
    identity = {"strategy": strategy} | ({"domains": [f"{slug}.test"]} if strategy == "organization" else {})
    return Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": f"Stadt {slug}", "ags": ags, "admins": [f"admin@{slug}.test"], "identity": identity,
                 "tools": [{"name": PEDESTRIANS}]}})


class Tenants:
    def __init__(self):
        suffix = uuid.uuid4().hex[:6]
        self.org = _municipality(f"gue-s{suffix}", "05754008", "organization")
        self.other = _municipality(f"bi-s{suffix}", "05711000", "organization")
        self.realm = _municipality(f"ded-s{suffix}", "05754028", "realm")
        self.all = [self.org, self.other, self.realm]
        self.parts = {m.slug: plan(m, [_tool(PEDESTRIANS)]).identity for m in self.all}


@pytest.fixture(scope="module")
def tenants(platform):
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    world = Tenants()
    try:
        for part in world.parts.values():
            ensure(provisioner, part, _credentials(part))
        yield world
    finally:
        for part in world.parts.values():
            provisioner.delete(part, keep_data=False)
        provisioner.close()


@pytest.fixture(scope="module")
def admin(platform):
    client = KeycloakAdmin(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    yield client
    client.close()


@pytest.fixture(scope="module")
def server(platform, tenants, warehouse, metadata_store):
    catalogue = Catalogue(tenants.all, [_tool(PEDESTRIANS)])
    with WebServer(platform, catalogue, warehouse, metadata_store) as web:
        yield web


def _client() -> httpx.Client:
    return browser_like_client()


@pytest.mark.parametrize("strategy", ["organization", "realm"])
def test_staff_sign_in_with_password_and_otp_lands_on_the_start_page(server, tenants, admin, strategy):
    municipality = tenants.org if strategy == "organization" else tenants.realm
    staff = add_staff(admin, tenants.parts[municipality.slug], "gov-editor", name="Erika Mustermann")
    with _client() as client:
        page = sign_in(client, server, municipality.slug, staff)
        assert page.status_code == 200, page_text(page.text)
        assert str(page.url) == f"{server.url}/gov/{municipality.slug}/"
        assert f"Stadt {municipality.slug}" in page.text and "Erika Mustermann" in page.text
        assert 'lang="de"' in page.text and "Abmelden" in page.text
        # Only the own origin for every kind of content; no framing; pages are not cached.
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and page.headers["cache-control"] == "no-store"
        assert page.headers["x-content-type-options"] == "nosniff"
        # The hub's only cookie: the session, HttpOnly and SameSite=Lax (no Secure over plain HTTP).
        hub_cookies = [c for c in client.cookies.jar if c.port in (None, str(server.port)) and c.name == COOKIE]
        assert len(hub_cookies) == 1


def test_sign_in_sets_only_the_session_cookie_with_its_flags(server, tenants, admin):
    staff = add_staff(admin, tenants.parts[tenants.org.slug], "gov-viewer")
    set_cookies: list[str] = []

    def record(response: httpx.Response) -> None:
        if str(response.url).startswith(server.url):
            set_cookies.extend(response.headers.get_list("set-cookie"))

    with browser_like_client(event_hooks={"response": [record]}) as client:
        page = sign_in(client, server, tenants.org.slug, staff)
        assert page.status_code == 200
    assert set_cookies, "the hub set no session cookie"
    for header in set_cookies:
        name = header.split("=", 1)[0]
        assert name == COOKIE, header
        flags = header.lower()
        assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags


def test_logout_ends_the_keycloak_session_and_the_hub_session(server, tenants, admin):
    part = tenants.parts[tenants.org.slug]
    staff = add_staff(admin, part, "gov-viewer")
    with _client() as client:
        page = sign_in(client, server, tenants.org.slug, staff)
        assert page.status_code == 200
        assert len(keycloak_sessions(admin, part, staff.username)) == 1
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        response = client.post(f"{server.url}/gov/{tenants.org.slug}/logout", data={"csrf_token": csrf})
        assert response.status_code == 303
        # The browser follows to Keycloak's end-session endpoint (id_token_hint) and back to the hub.
        response = client.get(response.headers["location"])
        hops = 0
        while response.is_redirect and hops < 5:
            response = client.get(httpx.URL(str(response.url)).join(response.headers["location"]))
            hops += 1
        assert response.status_code == 200 and "abgemeldet" in response.text, response.text[:500]
        assert keycloak_sessions(admin, part, staff.username) == []
        again = client.get(f"{server.url}/gov/{tenants.org.slug}/")
        assert again.status_code == 303 and "/login" in again.headers["location"]


def test_state_changing_request_without_csrf_token_is_refused(server, tenants, admin):
    staff = add_staff(admin, tenants.parts[tenants.org.slug], "gov-viewer")
    with _client() as client:
        assert sign_in(client, server, tenants.org.slug, staff).status_code == 200
        refused = client.post(f"{server.url}/gov/{tenants.org.slug}/logout", data={})
        assert refused.status_code == 403
        forged = client.post(f"{server.url}/gov/{tenants.org.slug}/logout", data={"csrf_token": "guessed"})
        assert forged.status_code == 403
        assert client.get(f"{server.url}/gov/{tenants.org.slug}/").status_code == 200  # still signed in


def test_member_of_another_municipality_cannot_sign_in_here(server, tenants, admin):
    stranger = add_staff(admin, tenants.parts[tenants.other.slug], "gov-admin")
    with _client() as client:
        page = sign_in(client, server, tenants.org.slug, stranger)
        assert page.status_code in (400, 403)
        assert client.get(f"{server.url}/gov/{tenants.org.slug}/").status_code == 303  # no session


def test_session_of_one_municipality_does_not_open_another(server, tenants, admin):
    staff = add_staff(admin, tenants.parts[tenants.org.slug], "gov-admin")
    with _client() as client:
        assert sign_in(client, server, tenants.org.slug, staff).status_code == 200
        elsewhere = client.get(f"{server.url}/gov/{tenants.other.slug}/")
        assert elsewhere.status_code == 303 and elsewhere.headers["location"].startswith(
            f"/gov/{tenants.other.slug}/login")


def test_return_address_after_sign_in_stays_inside_the_hub(server, tenants, admin):
    # One user per sign-in: Keycloak refuses a one-time code that was already used.
    def staff():
        return add_staff(admin, tenants.parts[tenants.org.slug], "gov-viewer")

    slug = tenants.org.slug
    for target in ("https://evil.example/phish", "//evil.example/x", f"/gov/{tenants.other.slug}/"):
        with _client() as client:  # a new browser each time (Keycloak's SSO session would skip the form)
            page = sign_in(client, server, slug, staff(), start=f"/gov/{slug}/login?next={target}")
            assert str(page.url) == f"{server.url}/gov/{slug}/", target
    with _client() as client:
        page = sign_in(client, server, slug, staff(), start=f"/gov/{slug}/?lang=en")
        assert str(page.url) == f"{server.url}/gov/{slug}/?lang=en"
        assert 'lang="en"' in page.text and "Sign out" in page.text and "Platform status" in page.text
