"""Real Keycloak tokens through the API: a throwaway realm with an audience mapper and a
hard-coded ``tenant`` claim, a token from the password grant, read access by REST."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from test_api import PEDESTRIANS, RANGE, World, path

from urbanstack.runtime.api import TokenVerifier, create_app

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def realm(platform, keycloak_admin, world):
    name = f"apitest-{uuid.uuid4().hex[:8]}"
    keycloak_admin.create_realm({"realm": name, "enabled": True}, skip_exists=False)
    keycloak_admin.change_current_realm(name)
    try:
        keycloak_admin.create_realm_role({"name": "gov-viewer"})
        api = f"{world.gue}-api"
        keycloak_admin.create_client({"clientId": api, "enabled": True, "publicClient": False,
                                      "bearerOnly": False, "standardFlowEnabled": False})
        secrets = {}
        for client_id, audience in (("gov-hub", api), ("other-app", None)):
            mappers = [{"name": "tenant", "protocol": "openid-connect", "protocolMapper": "oidc-hardcoded-claim-mapper",
                        "config": {"claim.name": "tenant", "claim.value": world.gue, "jsonType.label": "String",
                                   "access.token.claim": "true"}}]
            if audience:
                mappers.append({"name": "audience", "protocol": "openid-connect",
                                "protocolMapper": "oidc-audience-mapper",
                                "config": {"included.client.audience": audience, "access.token.claim": "true"}})
            keycloak_admin.create_client({"clientId": client_id, "enabled": True, "publicClient": False,
                                          "directAccessGrantsEnabled": True, "standardFlowEnabled": False,
                                          "protocolMappers": mappers})
            secrets[client_id] = keycloak_admin.get_client_secrets(keycloak_admin.get_client_id(client_id))["value"]
        password = uuid.uuid4().hex
        user_id = keycloak_admin.create_user({
            "username": "sachbearbeiterin", "email": "sb@example.org", "firstName": "Erika", "lastName": "Muster",
            "enabled": True, "emailVerified": True,
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        keycloak_admin.assign_realm_roles(user_id, [keycloak_admin.get_realm_role("gov-viewer")])

        def token(client_id: str) -> str:
            response = httpx.post(f"{platform.keycloak_url}/realms/{name}/protocol/openid-connect/token", data={
                "grant_type": "password", "client_id": client_id, "client_secret": secrets[client_id],
                "username": "sachbearbeiterin", "password": password})
            assert response.status_code == 200, response.text
            return response.json()["access_token"]

        yield name, token
    finally:
        keycloak_admin.change_current_realm("master")
        keycloak_admin.delete_realm(name)


@pytest.fixture(scope="module")
def client(platform, world, realm, warehouse):
    name, _ = realm
    app = create_app(platform, world.catalogue, warehouse, keycloak_url=platform.keycloak_url,
                     audience="{tenant}-api", shared_realms=(name,))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_keycloak_token_maps_to_the_tenant_and_roles(platform, world, realm):
    name, token = realm
    verifier = TokenVerifier(platform.keycloak_url, "{tenant}-api", shared_realms=(name,))
    principal = verifier.verify(token("gov-hub"))
    assert principal.tenant == world.gue
    assert "gov-viewer" in principal.roles


def test_keycloak_token_reads_own_data_and_nothing_else(client, world, realm):
    _, token = realm
    headers = {"Authorization": f"Bearer {token('gov-hub')}"}
    own = client.get(path(world.gue, PEDESTRIANS, "weather", "/series"), headers=headers,
                     params={**RANGE, "field": "temperature"})
    assert own.status_code == 200 and len(own.json()["rows"]) == 24
    other = client.get(path(world.bi, PEDESTRIANS, "weather", "/series"), headers=headers,
                       params={**RANGE, "field": "temperature"})
    assert other.status_code == 404


def test_keycloak_token_for_another_audience_or_tampered_is_refused(client, world, realm):
    _, token = realm
    foreign = client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {token('other-app')}"})
    assert foreign.status_code == 401 and "audience" in foreign.json()["error"]["message"]
    header, payload, signature = token("gov-hub").split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert client.get("/api/v1/datasets", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_a_realm_outside_the_allow_list_is_refused(platform, world, realm):
    _, token = realm
    verifier = TokenVerifier(platform.keycloak_url, "{tenant}-api")  # only the default shared realm
    from urbanstack.runtime.api import AuthError
    with pytest.raises(AuthError, match="issuer"):
        verifier.verify(token("gov-hub"))
