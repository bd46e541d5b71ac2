"""Keycloak: realm, client and user through the admin API; a token whose
signature verifies against the realm's JWKS."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import jwt
import pytest

pytestmark = pytest.mark.platform


def test_realm_client_user_token_and_jwks(platform, keycloak_admin):
    realm = f"probe-{uuid.uuid4().hex[:8]}"
    keycloak_admin.create_realm({"realm": realm, "enabled": True}, skip_exists=False)
    try:
        keycloak_admin.change_current_realm(realm)
        client_id = "probe-api"
        keycloak_admin.create_client({
            "clientId": client_id, "enabled": True, "publicClient": False,
            "directAccessGrantsEnabled": True, "standardFlowEnabled": False,
            "protocolMappers": [{
                "name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": client_id, "access.token.claim": "true"},
            }],
        })
        internal_id = keycloak_admin.get_client_id(client_id)
        secret = keycloak_admin.get_client_secrets(internal_id)["value"]
        password = uuid.uuid4().hex
        keycloak_admin.create_user({
            "username": "erika", "email": "erika@example.org", "firstName": "Erika", "lastName": "Muster",
            "enabled": True, "emailVerified": True,
            "credentials": [{"type": "password", "value": password, "temporary": False}],
        })

        base = f"{platform.keycloak_url}/realms/{realm}"
        response = httpx.post(f"{base}/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": client_id, "client_secret": secret,
            "username": "erika", "password": password,
        })
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]

        jwks = jwt.PyJWKClient(f"{base}/protocol/openid-connect/certs")
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=client_id, issuer=base)
        assert claims["preferred_username"] == "erika"

        # A token whose payload was altered no longer verifies.
        header, payload, signature = token.split(".")
        forged_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged_claims["preferred_username"] = "admin"
        forged_payload = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(f"{header}.{forged_payload}.{signature}", key.key, algorithms=["RS256"],
                       audience=client_id, issuer=base)

        # A wrong password gets no token.
        refused = httpx.post(f"{base}/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": client_id, "client_secret": secret,
            "username": "erika", "password": "wrong",
        })
        assert refused.status_code == 401
    finally:
        keycloak_admin.change_current_realm("master")
        keycloak_admin.delete_realm(realm)
