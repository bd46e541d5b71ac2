"""Real Keycloak tokens through the API, from tenants the operator's IdentityProvisioner made.

The two municipalities of the API test world (``test_api.World``) get their identity
space exactly as the operator provisions it (shared realm, one organization each,
``<slug>-*`` clients, roles as client roles of ``<slug>-api``), plus one tenant with
a dedicated realm. Tokens come from Keycloak's password grant on the tenant's Gov Hub
client, switched on for the test as test_identity_provisioner.py does; every tenant is
deleted afterwards."""

from __future__ import annotations

import uuid

import jwt
import pytest
from fastapi.testclient import TestClient
from test_api import PEDESTRIANS, RANGE, World, _tool, path
from test_identity_provisioner import Realm, _add_viewer, _allow_password_grant, _credentials, _password_grant

from urbanstack.devplatform import keycloak
from urbanstack.operator.models import Municipality
from urbanstack.operator.plan import IdentityPart, plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.runtime.api import AuthError, TokenVerifier, create_app

pytestmark = pytest.mark.platform


def _identity(slug: str, ags: str, strategy: str) -> IdentityPart:
    identity = {"strategy": strategy} | ({"domains": [f"{slug}.test"]} if strategy == "organization" else {})
    municipality = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": slug, "ags": ags, "admins": [f"admin@{slug}.test"], "identity": identity,
                 "tools": [{"name": PEDESTRIANS}]}})
    return plan(municipality, [_tool(PEDESTRIANS)]).identity


class Tenants:
    """The provisioned tenants, and tokens of users in them."""

    def __init__(self, platform, admin, world: World, provisioner: IdentityProvisioner):
        self.platform, self.admin, self.provisioner = platform, admin, provisioner
        self.gue = _identity(world.gue, "05754008", "organization")
        self.bi = _identity(world.bi, "05711000", "organization")
        self.dedicated = _identity(f"kc-{uuid.uuid4().hex[:8]}", "05754028", "realm")
        self.parts = [self.gue, self.bi, self.dedicated]

    def apply(self) -> None:
        for part in self.parts:
            ensure(self.provisioner, part, _credentials(part))
            _allow_password_grant(self.admin, part)

    def token(self, part: IdentityPart, username: str, password: str, client: str | None = None) -> str:
        client = client or next(c.client_id for c in part.clients if c.kind == "gov-hub")
        response = _password_grant(self.platform, part, client, username, password)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def tenants(platform, keycloak_admin, world):
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    tenants = Tenants(platform, keycloak_admin, world, provisioner)
    try:
        tenants.apply()
        yield tenants
    finally:
        for part in tenants.parts:
            provisioner.delete(part, keep_data=False)
        provisioner.close()


@pytest.fixture(scope="module")
def gue_viewer(tenants):
    return _add_viewer(tenants.admin, tenants.gue)


@pytest.fixture(scope="module")
def verifier(platform):
    return TokenVerifier(platform.keycloak_url, "{tenant}-api")


@pytest.fixture(scope="module")
def client(platform, world, tenants, warehouse):
    app = create_app(platform, world.catalogue, warehouse, keycloak_url=platform.keycloak_url,
                     audience="{tenant}-api")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_provisioned_viewer_token_maps_to_the_tenant_and_its_client_role(tenants, world, gue_viewer, verifier):
    token = tenants.token(tenants.gue, *gue_viewer)
    claims = _claims(token)
    # What Keycloak 26 really issues, and what the verifier relies on.
    assert (claims["typ"], claims["azp"], claims["organization"]) == ("Bearer", f"{world.gue}-gov-hub", [world.gue])
    principal = verifier.verify(token)
    assert principal.tenant == world.gue
    assert principal.roles == {"gov-viewer"}


def test_provisioned_token_reads_own_data_and_nothing_else(client, tenants, world, gue_viewer):
    headers = {"Authorization": f"Bearer {tenants.token(tenants.gue, *gue_viewer)}"}
    own = client.get(path(world.gue, PEDESTRIANS, "weather", "/series"), headers=headers,
                     params={**RANGE, "field": "temperature"})
    assert own.status_code == 200 and len(own.json()["rows"]) == 24
    other = client.get(path(world.bi, PEDESTRIANS, "weather", "/series"), headers=headers,
                       params={**RANGE, "field": "temperature"})
    assert other.status_code == 404


def test_a_token_of_tenant_a_s_client_presenting_organization_b_is_refused(client, tenants, world, verifier):
    # A member of Bielefeld's organization signs in through Gütersloh's Gov Hub: the token names
    # organization B but was issued to (and for the audience of) tenant A.
    username, password = _add_viewer(tenants.admin, tenants.bi)
    token = tenants.token(tenants.gue, username, password)
    claims = _claims(token)
    assert claims["organization"] == [world.bi] and claims["azp"] == f"{world.gue}-gov-hub"
    with pytest.raises(AuthError, match=f"issued to client '{world.gue}-gov-hub', which is not a client of "
                                        f"municipality '{world.bi}'"):
        verifier.verify(token)
    response = client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and "not a client of municipality" in response.json()["error"]["message"]


def test_dedicated_realm_token_names_the_realm_s_tenant(tenants, verifier):
    part = tenants.dedicated
    slug = part.realm.removeprefix("muni-")
    principal = verifier.verify(tenants.token(part, *_add_viewer(tenants.admin, part, "gov-editor")))
    assert principal.tenant == slug and principal.roles == {"gov-editor", "gov-viewer"}


def test_a_realm_role_gov_admin_without_the_client_role_grants_nothing(tenants, verifier):
    """A realm role named gov-admin, mapped into the Gov Hub's tokens, is in realm_access but means nothing."""
    part = tenants.dedicated
    hub = next(c.client_id for c in part.clients if c.kind == "gov-hub")
    username, password = f"realmrole-{uuid.uuid4().hex[:8]}@example.org", f"Pw-{uuid.uuid4().hex}"
    with Realm(tenants.admin, part.realm) as kc:
        kc.create_realm_role({"name": "gov-admin"}, skip_exists=True)
        role = kc.get_realm_role("gov-admin")
        user_id = kc.create_user({"username": username, "email": username, "firstName": "Rea", "lastName": "Lm",
                                  "enabled": True, "emailVerified": True,
                                  "credentials": [{"type": "password", "value": password, "temporary": False}]})
        kc.assign_realm_roles(user_id, [role])
        kc.assign_realm_roles_to_client_scope(kc.get_client_id(hub), [role])
    token = tenants.token(part, username, password)
    assert "gov-admin" in _claims(token)["realm_access"]["roles"]
    principal = verifier.verify(token)
    assert principal.roles == frozenset() and principal.permissions == frozenset()


def test_tokens_of_clients_the_provisioner_did_not_make_are_refused(platform, tenants, verifier):
    """admin-cli exists in every realm and allows the password grant (Keycloak 26 gives it lightweight
    tokens without ``sub``); a hand-made ``<slug>-reports`` client carries the slug and the API audience
    but is none of the tenant's clients. Both are refused."""
    part = tenants.dedicated
    slug = part.realm.removeprefix("muni-")
    username, password = _add_viewer(tenants.admin, part)
    with Realm(tenants.admin, part.realm) as kc:
        kc.create_client({"clientId": f"{slug}-reports", "enabled": True, "publicClient": True,
                          "directAccessGrantsEnabled": True, "standardFlowEnabled": False,
                          "protocolMappers": [{"name": "audience", "protocol": "openid-connect",
                                               "protocolMapper": "oidc-audience-mapper",
                                               "config": {"included.client.audience": f"{slug}-api",
                                                          "access.token.claim": "true"}}]})
    for client_id in ("admin-cli", f"{slug}-reports"):
        token = tenants.token(part, username, password, client=client_id)
        assert _claims(token)["azp"] == client_id
        with pytest.raises(AuthError):
            verifier.verify(token)
    with pytest.raises(AuthError, match=f"issued to client '{slug}-reports', which is not a client of municipality"):
        verifier.verify(token)


def test_tampered_token_and_foreign_realm_are_refused(client, platform, tenants, gue_viewer):
    header, payload, signature = tenants.token(tenants.gue, *gue_viewer).split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    only_other_shared_realm = TokenVerifier(platform.keycloak_url, "{tenant}-api", shared_realms=("elsewhere",))
    with pytest.raises(AuthError, match="issuer"):
        only_other_shared_realm.verify(tenants.token(tenants.gue, *gue_viewer))
