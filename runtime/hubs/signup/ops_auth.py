"""Sign-in to the ops console: OIDC code flow with PKCE against the platform's own realm
(``urbanstack-platform``, public client ``urbanstack-ops``), role ``platform-admin``.

Sessions are the hubs' server-side sessions (tenant ``urbanstack-platform``) under their own
cookie ``urbanstack_ops``, so an ops sign-in never replaces a Gov Hub session. Tokens are
verified with the realm's JWKS: signature, issuer, expiry, audience ``urbanstack-ops``,
``azp``; the role comes from ``realm_access``.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import httpx
import jwt

from urbanstack.runtime.web.oidc import PendingLogin, SignInError

PLATFORM_REALM = "urbanstack-platform"
OPS_CLIENT = "urbanstack-ops"
PLATFORM_ADMIN = "platform-admin"
COOKIE = "urbanstack_ops"
SECURE_COOKIE = "__Host-urbanstack_ops"


def platform_realm(smtp: dict | None = None) -> dict:
    """The platform realm's settings (Keycloak's RealmRepresentation): no self-registration,
    brute-force protection, a password policy, short tokens, German first; ``smtp`` is the
    realm's ``smtpServer`` (the platform's relay) when known."""
    realm = {"realm": PLATFORM_REALM, "displayName": "Urban Stack – Plattformbetrieb", "enabled": True,
             "sslRequired": "external", "registrationAllowed": False, "loginWithEmailAllowed": True,
             "resetPasswordAllowed": True, "bruteForceProtected": True, "failureFactor": 5,
             "passwordPolicy": "length(12) and maxLength(128) and notUsername and notEmail and passwordHistory(5)",
             "accessTokenLifespan": 300, "ssoSessionIdleTimeout": 1800, "ssoSessionMaxLifespan": 36000,
             "internationalizationEnabled": True, "supportedLocales": ["de", "en"], "defaultLocale": "de"}
    if smtp:
        realm["smtpServer"] = smtp
    return realm


def platform_admin_role() -> dict:
    return {"name": PLATFORM_ADMIN, "description": "Platform operations: decides on signup requests in the ops console."}


def ops_client(redirect_uris: list[str]) -> dict:
    """The console's public client: code flow with PKCE S256 only, redirects below ``/ops/``
    of the platform's origin(s), its own id in the access token's audience."""
    return {"clientId": OPS_CLIENT, "name": "Urban Stack – Betriebskonsole", "enabled": True,
            "protocol": "openid-connect", "publicClient": True, "standardFlowEnabled": True,
            "implicitFlowEnabled": False, "directAccessGrantsEnabled": False, "serviceAccountsEnabled": False,
            "redirectUris": list(redirect_uris),
            "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": "+"},
            "protocolMappers": [{"name": f"audience {OPS_CLIENT}", "protocol": "openid-connect",
                                 "protocolMapper": "oidc-audience-mapper",
                                 "config": {"included.client.audience": OPS_CLIENT, "access.token.claim": "true",
                                            "id.token.claim": "false"}}]}


def platform_realm_import(redirect_uris: list[str], smtp: dict | None = None) -> dict:
    """Realm, role and client in one representation (Keycloak's import format); people are added
    by hand and given the role."""
    return platform_realm(smtp) | {"roles": {"realm": [platform_admin_role()]},
                                   "clients": [ops_client(redirect_uris)]}


class OpsKeycloak:
    def __init__(self, server_url: str, timeout: float = 10.0):
        self.server_url = server_url.rstrip("/")
        self.issuer = f"{self.server_url}/realms/{PLATFORM_REALM}"
        self.endpoint = f"{self.issuer}/protocol/openid-connect"
        self._jwks = jwt.PyJWKClient(f"{self.endpoint}/certs", cache_keys=True, lifespan=300)
        self._http = httpx.Client(timeout=timeout)

    def authorize_url(self, redirect_uri: str, pending: PendingLogin, lang: str) -> str:
        query = {"client_id": OPS_CLIENT, "response_type": "code", "scope": "openid", "redirect_uri": redirect_uri,
                 "state": pending.state, "nonce": pending.nonce, "code_challenge": pending.code_challenge,
                 "code_challenge_method": "S256", "ui_locales": lang}
        return f"{self.endpoint}/auth?{urlencode(query)}"

    def logout_url(self, id_token: str | None, after: str) -> str:
        query = {"client_id": OPS_CLIENT, "post_logout_redirect_uri": after}
        if id_token:
            query["id_token_hint"] = id_token
        return f"{self.endpoint}/logout?{urlencode(query)}"

    def finish(self, redirect_uri: str, pending: PendingLogin, code: str, state: str) -> dict:
        if not secrets.compare_digest(state.encode(), pending.state.encode()):
            raise SignInError("the sign-in answer does not belong to this browser session; start the sign-in again")
        return self._tokens({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                             "code_verifier": pending.code_verifier}, pending.nonce)

    def refresh(self, refresh_token: str) -> dict:
        return self._tokens({"grant_type": "refresh_token", "refresh_token": refresh_token}, None)

    def _tokens(self, form: dict, nonce: str | None) -> dict:
        try:
            response = self._http.post(f"{self.endpoint}/token", data={"client_id": OPS_CLIENT, **form})
        except httpx.HTTPError:
            raise SignInError("the sign-in service (Keycloak) cannot be reached; try again in a minute") from None
        if response.status_code != 200:
            raise SignInError("the sign-in was not accepted (it expired or was already used); sign in again")
        tokens = response.json()
        try:
            access = self._decode(tokens["access_token"], OPS_CLIENT)
            ident = self._decode(tokens["id_token"], OPS_CLIENT) if tokens.get("id_token") else {}
        except (jwt.PyJWTError, KeyError) as error:
            raise SignInError(f"the sign-in token was refused ({error}); sign in again") from None
        if access.get("azp") != OPS_CLIENT or (ident and ident.get("sub") != access.get("sub")):
            raise SignInError("the sign-in token was not issued to the ops console; sign in again")
        if nonce is not None and not secrets.compare_digest(str(ident.get("nonce", "")).encode(), nonce.encode()):
            raise SignInError("the ID token does not answer this sign-in (nonce); sign in again")
        roles = sorted(set((access.get("realm_access") or {}).get("roles") or []) & {PLATFORM_ADMIN})
        return {"subject": access["sub"], "roles": roles,
                "username": str(ident.get("preferred_username") or access.get("preferred_username") or ""),
                "display_name": str(ident.get("name") or access.get("name") or ident.get("preferred_username") or ""),
                "email": str(ident.get("email") or ""), "id_token": tokens.get("id_token"),
                "refresh_token": tokens.get("refresh_token"),
                "access_expires_at": datetime.now(timezone.utc) + timedelta(seconds=int(tokens.get("expires_in", 60)))}

    def _decode(self, token: str, audience: str) -> dict:
        key = self._jwks.get_signing_key_from_jwt(token).key
        return jwt.decode(token, key=key, algorithms=["RS256"], audience=audience, issuer=self.issuer,
                          options={"require": ["exp", "iat", "sub"]})
