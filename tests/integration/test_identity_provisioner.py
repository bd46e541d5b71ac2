"""The identity provisioner against the real Keycloak: tenants from the example
manifests (with a per-run slug, names and domains), tokens a user gets, drift,
suspension, both deletion policies, adoption and outages."""

from __future__ import annotations

import hashlib
import html
import re
import socket
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from urbanstack.devplatform import keycloak
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import DesiredState, IdentityPart, plan
from urbanstack.operator.provisioners.base import BackendUnavailable, Conflict, Diff, Difference, ensure
from urbanstack.operator.provisioners.identity import (MFA_MARKER_ROLE, SUSPENDED_MEMBERS_ATTRIBUTE, TENANT_CLAIM,
                                                       IdentityProvisioner)

pytestmark = pytest.mark.platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOOLS = ("passantenfrequenz-wetter", "pegel-warnung")


def _tools():
    return [parse_citytool(yaml.safe_load((EXAMPLES / f"citytool-{name}.yaml").read_text())) for name in TOOLS]


def _desired(example: str, tag: str, **changes) -> DesiredState:
    """The example municipality under a slug, display name, domain and admin of its own,
    so reruns and the shared realm never see the same names twice."""
    manifest = yaml.safe_load((EXAMPLES / f"municipality-{example}.yaml").read_text())
    slug = f"{example[:10]}-{tag}"
    manifest["metadata"]["name"] = slug
    spec = manifest["spec"]
    spec["displayName"] = f"{spec['displayName']} {tag}"
    spec["admins"] = [f"admin-{i}-{tag}@{slug}.test" for i, _ in enumerate(spec["admins"])]
    spec.setdefault("identity", {})
    if spec["identity"].get("strategy", "organization") == "organization":
        spec["identity"]["domains"] = [f"{slug}.test"]
    spec.update(changes)
    return plan(parse_municipality(manifest), _tools())


def _credentials(desired: DesiredState | IdentityPart) -> dict[str, str]:
    """The tenant Secret's client secrets; derived from the names so every apply of a tenant sees the same."""
    part = desired.identity if isinstance(desired, DesiredState) else desired
    return {client.secret_key: hashlib.sha256(f"{part.realm}/{client.client_id}".encode()).hexdigest()
            for client in part.clients if client.secret_key}


@pytest.fixture
def provisioner(platform):
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    yield provisioner
    provisioner.close()


@pytest.fixture
def tenants(provisioner):
    """Tenants a test applied; removed completely afterwards."""
    applied: list[IdentityPart] = []
    yield applied
    for part in applied:
        provisioner.delete(part, keep_data=False)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def _apply(provisioner, tenants, desired: DesiredState) -> IdentityPart:
    tenants.append(desired.identity)
    _repair(provisioner, desired.identity)
    return desired.identity


def _observe(provisioner, part: IdentityPart) -> Diff:
    return provisioner.observe(part, _credentials(part))


def _repair(provisioner, part: IdentityPart, credentials: dict[str, str] | None = None) -> list[str]:
    """One reconcile of the part: observe, then apply exactly that diff."""
    return ensure(provisioner, part, _credentials(part) if credentials is None else credentials)


def _did(actions: list[str], text: str) -> bool:
    return any(text in action for action in actions)


class Realm:
    """Direct Admin API access for the test's own checks and sabotage."""

    def __init__(self, admin, realm: str):
        self.admin, self.realm = admin, realm

    def __enter__(self):
        self.admin.change_current_realm(self.realm)
        return self.admin

    def __exit__(self, *exc):
        self.admin.change_current_realm("master")


def _add_viewer(admin, part: IdentityPart, role: str = "gov-viewer") -> tuple[str, str]:
    """A staff member with a password and ``role``, a member of the tenant's organization."""
    username, password = f"viewer-{uuid.uuid4().hex[:8]}@example.org", f"Pw-{uuid.uuid4().hex}"
    with Realm(admin, part.realm) as kc:
        user_id = kc.create_user({"username": username, "email": username, "firstName": "Vera", "lastName": "Viewer",
                                  "enabled": True, "emailVerified": True,
                                  "credentials": [{"type": "password", "value": password, "temporary": False}]})
        api = next(c for c in part.clients if c.kind == "api").client_id
        api_uuid = kc.get_client_id(api)
        kc.assign_client_role(user_id, api_uuid, [kc.get_client_role(api_uuid, role)])
        if part.organization is not None:
            org = next(o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                       if o["alias"] == part.organization.alias)
            kc.organization_user_add(user_id, org["id"])
    return username, password


def _allow_password_grant(admin, part: IdentityPart) -> str:
    """Switch the password grant on for the tenant's Gov Hub client (drift the provisioner undoes)."""
    hub = next(c for c in part.clients if c.kind == "gov-hub").client_id
    with Realm(admin, part.realm) as kc:
        kc.update_client(kc.get_client_id(hub), {"clientId": hub, "directAccessGrantsEnabled": True})
    return hub


def _password_grant(platform, part: IdentityPart, client_id: str, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{platform.keycloak_url}/realms/{part.realm}/protocol/openid-connect/token", data={
        "grant_type": "password", "client_id": client_id, "username": username, "password": password,
        "scope": "openid"}, timeout=10)


def _verified_claims(platform, part: IdentityPart, token: str, audience: str) -> dict:
    issuer = f"{platform.keycloak_url}/realms/{part.realm}"
    key = jwt.PyJWKClient(f"{issuer}/protocol/openid-connect/certs").get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)


def _token_claims(platform, keycloak_admin, provisioner, part: IdentityPart, role: str = "gov-viewer") -> dict:
    username, password = _add_viewer(keycloak_admin, part, role)
    hub = _allow_password_grant(keycloak_admin, part)
    try:
        response = _password_grant(platform, part, hub, username, password)
        assert response.status_code == 200, response.text
        api = next(c for c in part.clients if c.kind == "api").client_id
        return _verified_claims(platform, part, response.json()["access_token"], audience=api)
    finally:
        assert [(d.wanted, d.found) for d in _observe(provisioner, part).about(
            f"client {hub}", "directAccessGrantsEnabled")] == [(False, True)]
        _repair(provisioner, part)


# --- organization strategy ---------------------------------------------------------

def test_organization_tenant_is_created_in_sync_and_idempotent(platform, keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    part = desired.identity
    credentials = _credentials(desired)
    tenants.append(part)
    assert _observe(provisioner, part).about(f"organization {part.organization.alias}", "exists")

    calls = []
    send = provisioner._api.request
    provisioner._api.request = lambda method, path, **kwargs: calls.append((method, path)) or send(method, path,
                                                                                                  **kwargs)
    try:
        actions = _repair(provisioner, part, credentials)
    finally:
        provisioner._api.request = send
    # All clients of a new municipality and their roles come in one partial import (onboarding at
    # scale: docs/scale.md); the Admin API calls of the whole first reconcile stay few.
    assert _did(actions, "(one import)") and not _did(actions, "created client ")
    writes = [c for c in calls if c[0] != "GET"]
    assert len(writes) <= 24, [f"{m} {p}" for m, p in writes]
    print(f"first reconcile of a new organization tenant: {len(calls)} Admin API calls, {len(writes)} writes")
    observed = _observe(provisioner, part)
    assert observed.in_sync, observed.summary()
    assert provisioner.apply(part, observed, credentials) == []

    with Realm(keycloak_admin, part.realm) as kc:
        realm = kc.get_realm(part.realm)
        assert realm["bruteForceProtected"] is True
        assert "length(12)" in realm["passwordPolicy"]
        assert realm["browserFlow"] == "urbanstack browser"
        orgs = [o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                if o["alias"] == part.organization.alias]
        assert len(orgs) == 1 and orgs[0]["name"] == part.organization.name
        assert [d["name"] for d in orgs[0]["domains"]] == list(part.organization.domains)
        admin_user = kc.get_users({"username": part.users[0].username, "exact": True})[0]
        assert set(admin_user["requiredActions"]) == {"UPDATE_PASSWORD", "CONFIGURE_TOTP"}
        assert [m["username"] for m in kc.get_organization_members(orgs[0]["id"])] == [part.users[0].username]
        api_uuid = kc.get_client_id(f"{desired.slug}-api")
        granted = {u["username"] for u in kc.get_client_role_members(api_uuid, "gov-admin")}
        assert part.users[0].username in granted
        # Gov roles carry the MFA marker that the browser flow's OTP step asks for.
        assert MFA_MARKER_ROLE in {r["name"] for r in kc.get_composite_client_roles_of_role(api_uuid, "gov-viewer")}
        tool = kc.get_client(kc.get_client_id(f"{desired.slug}--tool-pegel-warnung"))
        assert tool["serviceAccountsEnabled"] and not tool["publicClient"]
        secret = kc.get_client_secrets(tool["id"])["value"]
        assert secret == credentials["tool-pegel-warnung-client-secret"]


def test_viewer_token_verifies_and_names_tenant_and_role(platform, keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    part = _apply(provisioner, tenants, desired)
    claims = _token_claims(platform, keycloak_admin, provisioner, part)

    api = f"{desired.slug}-api"
    assert api in (claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]])
    assert claims["azp"] == f"{desired.slug}-gov-hub"
    assert claims[TENANT_CLAIM] == [desired.slug]
    assert claims["resource_access"][api]["roles"] == ["gov-viewer"]
    # Scope mappings keep everything but the tenant's own roles out; the realm part is only the MFA marker
    # that gov-viewer includes (for the browser flow, not for authorisation).
    assert set(claims["resource_access"]) <= {c.client_id for c in part.clients}
    assert claims.get("realm_access", {}).get("roles", []) == [MFA_MARKER_ROLE]
    assert _observe(provisioner, part).in_sync


def test_admin_role_includes_editor_and_viewer_in_token(platform, keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag, tools=[], shares=[])
    part = _apply(provisioner, tenants, desired)
    claims = _token_claims(platform, keycloak_admin, provisioner, part, role="gov-admin")
    assert set(claims["resource_access"][f"{desired.slug}-api"]["roles"]) == {"gov-admin", "gov-editor",
                                                                                "gov-viewer"}


def _browser_login(platform, part: IdentityPart, username: str, password: str) -> httpx.Response:
    """Sign in through the Gov Hub's browser flow (authorization code with PKCE) like a browser would:
    identity-first username page, then the password page. Returns the answer to the password."""
    hub = next(c for c in part.clients if c.kind == "gov-hub").client_id
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(f"{platform.keycloak_url}/realms/{part.realm}/protocol/openid-connect/auth", params={
            "client_id": hub, "redirect_uri": "http://127.0.0.1/callback", "response_type": "code",
            "scope": "openid", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"})
        for _ in range(3):
            assert page.status_code == 200, page.text[-500:]
            # Keycloak marks its cookies Secure; browsers send those to http://127.0.0.1, httpx does not.
            for cookie in browser.cookies.jar:
                cookie.secure = False
            action = html.unescape(re.search(r'action="([^"]+)"', page.text).group(1))
            if 'name="password"' in page.text:
                return browser.post(action, data={"username": username, "password": password})
            page = browser.post(action, data={"username": username})
    raise AssertionError("no password page")


def test_gov_roles_must_set_up_otp_at_browser_login_citizens_need_not(platform, keycloak_admin, provisioner,
                                                                       tenants, tag):
    part = _apply(provisioner, tenants, _desired("guetersloh", tag, tools=[], shares=[]))
    staff = _browser_login(platform, part, *_add_viewer(keycloak_admin, part, "gov-viewer"))
    assert staff.status_code == 302
    assert "required-action" in staff.headers["location"] and "CONFIGURE_TOTP" in staff.headers["location"]
    citizen = _browser_login(platform, part, *_add_viewer(keycloak_admin, part, "citizen"))
    assert citizen.status_code == 302
    assert citizen.headers["location"].startswith("http://127.0.0.1/callback?") and "code=" in citizen.headers[
        "location"]


def test_drift_is_observed_and_repaired(platform, keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    part = _apply(provisioner, tenants, desired)
    api, hub = f"{desired.slug}-api", f"{desired.slug}-citizen-hub"
    with Realm(keycloak_admin, part.realm) as kc:
        kc.delete_client_role(kc.get_client_id(api), "gov-viewer")
        kc.delete_client(kc.get_client_id(hub))
        kc.delete_user(kc.get_users({"username": part.users[0].username, "exact": True})[0]["id"])
        kc.update_realm(part.realm, {"bruteForceProtected": False, "passwordPolicy": "length(4)"})
    try:
        observed = _observe(provisioner, part)
        assert observed.about(f"role {api}/gov-viewer", "exists")
        assert observed.about(f"client {hub}", "exists")
        assert observed.about(f"user {part.users[0].username}", "exists")
        assert [d.found for d in observed.about(f"realm {part.realm}", "bruteForceProtected")] == [False]
        assert [d.found for d in observed.about(f"realm {part.realm}", "passwordPolicy")] == ["length(4)"]
    finally:
        actions = _repair(provisioner, part)
    assert _did(actions, f"created role {api}/gov-viewer")
    assert _did(actions, f"created client {hub}")
    assert _observe(provisioner, part).in_sync

    with Realm(keycloak_admin, part.realm) as kc:
        org = next(o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                   if o["alias"] == part.organization.alias)
        kc.delete_organization(org["id"])
    assert _observe(provisioner, part).about(f"organization {part.organization.alias}", "exists")
    _repair(provisioner, part)
    assert _observe(provisioner, part).in_sync


def test_switched_off_tool_loses_its_client(provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    _apply(provisioner, tenants, desired)
    fewer = _desired("guetersloh", tag, tools=[{"name": "pegel-warnung"}], shares=[])
    observed = _observe(provisioner, fewer.identity)
    assert [d.action for d in observed.about(f"client {desired.slug}--tool-passantenfrequenz-wetter")] == [
        "delete_client"]
    _repair(provisioner, fewer.identity)
    assert _observe(provisioner, fewer.identity).in_sync


def test_suspended_tenant_gets_no_tokens_and_resumes(platform, keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    part = _apply(provisioner, tenants, desired)
    username, password = _add_viewer(keycloak_admin, part)
    hub = _allow_password_grant(keycloak_admin, part)
    assert _password_grant(platform, part, hub, username, password).status_code == 200

    suspended = _desired("guetersloh", tag, suspended=True).identity
    _repair(provisioner, suspended, _credentials(suspended))
    assert _observe(provisioner, suspended).in_sync
    refused = _password_grant(platform, part, hub, username, password)
    assert refused.status_code in (400, 401), refused.text
    with Realm(keycloak_admin, part.realm) as kc:
        viewer = kc.get_users({"username": username, "exact": True})[0]
        assert viewer["enabled"] is False
        assert kc.get_users({"username": part.users[0].username, "exact": True})[0]["enabled"] is False
        assert all(not kc.get_client(kc.get_client_id(c.client_id))["enabled"] for c in part.clients)
        org = next(o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                   if o["alias"] == part.organization.alias)
        assert kc.get_organization(org["id"])["attributes"][SUSPENDED_MEMBERS_ATTRIBUTE] == [viewer["id"]]

    _repair(provisioner, part, _credentials(part))
    assert _observe(provisioner, part).in_sync
    hub = _allow_password_grant(keycloak_admin, part)
    assert _password_grant(platform, part, hub, username, password).status_code == 200
    _repair(provisioner, part, _credentials(part))


# --- realm strategy --------------------------------------------------------------

def test_realm_strategy_has_a_dedicated_realm_and_the_same_token_shape(platform, keycloak_admin, provisioner,
                                                                        tenants, tag):
    desired = _desired("bielefeld", tag)
    part = desired.identity
    assert part.owns_realm and part.organization is None
    _apply(provisioner, tenants, desired)
    assert _observe(provisioner, part).in_sync
    with Realm(keycloak_admin, part.realm) as kc:
        assert kc.get_realm(part.realm)["passwordPolicy"] == part.realm_settings["passwordPolicy"]
        assert len(kc.get_users({"briefRepresentation": True})) == len(part.users) == 2

    claims = _token_claims(platform, keycloak_admin, provisioner, part)
    assert claims[TENANT_CLAIM] == [desired.slug]
    assert claims["resource_access"][f"{desired.slug}-api"]["roles"] == ["gov-viewer"]

    _repair(provisioner, _desired("bielefeld", tag, suspended=True).identity, _credentials(part))
    with Realm(keycloak_admin, "master") as kc:
        assert kc.get_realm(part.realm)["enabled"] is False
    _repair(provisioner, part, _credentials(part))
    assert _observe(provisioner, part).in_sync


# --- deletion ------------------------------------------------------------------------

def test_delete_keep_data_removes_access_then_delete_removes_everything(platform, keycloak_admin, provisioner,
                                                                        tenants, tag):
    desired = _desired("guetersloh", tag)
    part = _apply(provisioner, tenants, desired)
    username, _ = _add_viewer(keycloak_admin, part)

    provisioner.delete(part, keep_data=True)
    provisioner.delete(part, keep_data=True)  # idempotent
    with Realm(keycloak_admin, part.realm) as kc:
        assert all(not kc.get_client(kc.get_client_id(c.client_id))["enabled"] for c in part.clients)
        assert kc.get_client_roles(kc.get_client_id(f"{desired.slug}-api"))
        for name in (username, part.users[0].username):
            assert kc.get_users({"username": name, "exact": True})[0]["enabled"] is False
        orgs = [o for o in kc.get_organizations({"q": f"slug:{part.organization.alias}"})
                if o["alias"] == part.organization.alias]
        assert len(orgs) == 1 and orgs[0]["enabled"] is False

    # Re-applying adopts what was kept and restores access.
    _repair(provisioner, part, _credentials(desired))
    assert _observe(provisioner, part).in_sync
    with Realm(keycloak_admin, part.realm) as kc:
        assert kc.get_users({"username": username, "exact": True})[0]["enabled"] is True

    provisioner.delete(part, keep_data=False)
    provisioner.delete(part, keep_data=False)  # already gone is success
    with Realm(keycloak_admin, part.realm) as kc:
        assert kc.get_realm(part.realm)["realm"] == part.realm  # the shared realm stays
        assert all(kc.get_client_id(c.client_id) is None for c in part.clients)
        assert not [o for o in kc.get_organizations({"search": part.organization.name})
                    if o["alias"] == part.organization.alias]
        for name in (username, part.users[0].username):
            assert kc.get_users({"username": name, "exact": True}) == []
    observed = _observe(provisioner, part)
    assert observed.about(f"organization {part.organization.alias}", "exists")
    assert observed.about(f"user {part.users[0].username}", "exists")


def test_delete_dedicated_realm_keeps_or_removes_it(keycloak_admin, provisioner, tenants, tag):
    desired = _desired("bielefeld", tag)
    part = _apply(provisioner, tenants, desired)
    provisioner.delete(part, keep_data=True)
    with Realm(keycloak_admin, "master") as kc:
        realm = kc.get_realm(part.realm)
        assert realm["enabled"] is False
    provisioner.delete(part, keep_data=False)
    provisioner.delete(part, keep_data=False)
    with Realm(keycloak_admin, "master") as kc:
        assert part.realm not in {r["realm"] for r in kc.get_realms()}
    assert provisioner.delete(part, keep_data=True) == []


# --- adoption and conflicts ---------------------------------------------------------------

def test_existing_objects_with_expected_names_are_adopted(keycloak_admin, provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    part = desired.identity
    _apply(provisioner, tenants, _desired("rheda-wiedenbrueck", tag))  # the shared realm exists from here on
    api = f"{desired.slug}-api"
    with Realm(keycloak_admin, part.realm) as kc:
        kc.create_client({"clientId": api, "publicClient": True, "directAccessGrantsEnabled": True})
        kc.create_organization({"alias": part.organization.alias, "name": part.organization.name,
                                "domains": [{"name": d} for d in part.organization.domains]})
    tenants.append(part)
    _repair(provisioner, part, _credentials(desired))
    assert _observe(provisioner, part).in_sync
    with Realm(keycloak_admin, part.realm) as kc:
        clients = [c for c in kc.get_clients() if c["clientId"] == api]
        assert len(clients) == 1
        assert clients[0]["publicClient"] is False and clients[0]["directAccessGrantsEnabled"] is False
        orgs = [o for o in kc.get_organizations({"search": part.organization.name})
                if o["alias"] == part.organization.alias]
        assert len(orgs) == 1


def test_client_of_another_tenant_is_a_conflict(keycloak_admin, provisioner, tenants, tag):
    other = _desired("rheda-wiedenbrueck", tag)
    _apply(provisioner, tenants, other)
    desired = _desired("guetersloh", tag)
    hub = f"{desired.slug}-gov-hub"
    with Realm(keycloak_admin, other.identity.realm) as kc:
        kc.create_client({"clientId": hub, "attributes": {"urbanstack.municipality": other.slug}})
    try:
        with pytest.raises(Conflict, match=other.slug):
            _repair(provisioner, desired.identity, _credentials(desired))
    finally:
        with Realm(keycloak_admin, other.identity.realm) as kc:
            kc.delete_client(kc.get_client_id(hub))
        tenants.append(desired.identity)


# --- outages and credentials -----------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_keycloak_is_backend_unavailable(tag):
    part = _desired("guetersloh", tag).identity
    provisioner = IdentityProvisioner(f"http://127.0.0.1:{_closed_port()}", "admin", "secret-password", timeout=2)
    diff = Diff((Difference(f"realm {part.realm}", "passwordPolicy", "length(12)", "length(4)", "set_realm"),))
    for verb in (lambda: _observe(provisioner, part), lambda: provisioner.apply(part, diff, _credentials(part)),
                 lambda: provisioner.delete(part, keep_data=True)):
        with pytest.raises(BackendUnavailable) as raised:
            verb()
        assert raised.value.backend == "Keycloak"
        assert "secret-password" not in str(raised.value)


def test_wrong_admin_password_is_an_actionable_error(platform, tag):
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, "not-the-password")
    with pytest.raises(RuntimeError, match="admin login") as raised:
        _observe(provisioner, _desired("guetersloh", tag).identity)
    assert not isinstance(raised.value, BackendUnavailable)
    assert "not-the-password" not in str(raised.value)


def test_expired_or_revoked_admin_token_logs_in_again(provisioner, tenants, tag):
    part = _apply(provisioner, tenants, _desired("guetersloh", tag))
    valid = provisioner._api._token
    # A token Keycloak no longer accepts (it restarted or revoked it): a 401, a new login, the same answer.
    provisioner._api._token = "expired-or-from-before-a-restart"
    assert _observe(provisioner, part).in_sync
    renewed = provisioner._api._token
    assert renewed not in (None, valid, "expired-or-from-before-a-restart")
    # A token about to expire is renewed before it is used.
    provisioner._api._expires_at = 0
    assert _observe(provisioner, part).in_sync
    assert provisioner._api._token not in (None, renewed)


def test_missing_client_secret_in_credentials_is_reported(provisioner, tenants, tag):
    desired = _desired("guetersloh", tag)
    tenants.append(desired.identity)
    with pytest.raises(RuntimeError, match=r"has no key 'tool-[a-z-]+-client-secret'"):
        _repair(provisioner, desired.identity, {})


def test_endpoints_name_issuer_and_consoles(platform, provisioner, tag):
    part = _desired("guetersloh", tag).identity
    endpoints = provisioner.endpoints(part)
    assert endpoints["issuer"] == f"{platform.keycloak_url}/realms/urbanstack"
    discovery = httpx.get(endpoints["openidConfiguration"], timeout=10).json()
    assert discovery["issuer"] == endpoints["issuer"] and discovery["jwks_uri"] == endpoints["jwks"]
    assert "adminConsole" in provisioner.endpoints(_desired("bielefeld", tag).identity)
