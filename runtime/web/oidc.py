"""Sign-in with Keycloak: OpenID Connect authorization code flow with PKCE (S256).

The hubs are public clients (``<slug>-gov-hub``, ``<slug>-citizen-hub``) in the tenant's
realm (the shared realm for the ``organization`` strategy, ``muni-<slug>`` for a
dedicated one), as the operator creates them. The flow:

1. ``begin``: random ``state``, ``nonce`` and PKCE verifier, kept in the (pre-login)
   server-side session; the browser goes to the realm's authorization endpoint.
2. Keycloak authenticates (password, and the OTP its browser flow demands for gov roles)
   and sends the browser back with ``code`` and ``state``.
3. ``finish``: the state must be the session's; the code is exchanged (with the PKCE
   verifier) at the token endpoint, server to server; the access token is verified exactly
   as the API verifies it (signature via JWKS, issuer, audience ``<slug>-api``, expiry,
   ``azp`` a client of the tenant, roles from ``resource_access``) and the ID token's
   signature, audience and nonce are checked.
4. The refresh token keeps the session's roles current: when the access token has expired
   the hub refreshes it and verifies again; a refused refresh (user removed, Keycloak
   session ended) ends the hub session.
5. ``logout_url``: Keycloak's end-session endpoint with ``id_token_hint``, so signing out
   of the hub also ends the Keycloak session.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from urbanstack.operator import naming
from urbanstack.runtime.api.auth import AuthError, Principal, TokenVerifier


class SignInError(Exception):
    """The sign-in could not be completed; the message says what the user can do."""


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    code_verifier: str
    return_to: str

    @classmethod
    def new(cls, return_to: str) -> "PendingLogin":
        return cls(state=secrets.token_urlsafe(24), nonce=secrets.token_urlsafe(24),
                   code_verifier=secrets.token_urlsafe(64), return_to=return_to)

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "nonce": self.nonce, "code_verifier": self.code_verifier,
                "return_to": self.return_to}

    @property
    def code_challenge(self) -> str:
        digest = hashlib.sha256(self.code_verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    username: str
    display_name: str
    email: str
    id_token: str
    refresh_token: str | None
    access_expires_at: datetime


@dataclass(frozen=True)
class HubClient:
    """One hub's OIDC client of one municipality."""
    issuer: str        # <keycloak>/realms/<realm>
    client_id: str     # <slug>-gov-hub
    redirect_uri: str  # <hub>/gov/<slug>/auth/callback

    @property
    def endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect"


def realm_of(municipality) -> str:
    """The Keycloak realm of a municipality, as the operator's plan puts it."""
    dedicated = municipality.spec.identity.strategy.value == "realm"
    return naming.realm(municipality.slug) if dedicated else naming.SHARED_REALM


class Keycloak:
    def __init__(self, server_url: str, verifier: TokenVerifier, *, timeout: float = 10.0):
        self.server_url = server_url.rstrip("/")
        self.verifier = verifier
        self._http = httpx.Client(timeout=timeout)

    def client(self, municipality, app: str, redirect_uri: str) -> HubClient:
        return HubClient(issuer=f"{self.server_url}/realms/{realm_of(municipality)}",
                         client_id=naming.client(municipality.slug, app), redirect_uri=redirect_uri)

    def authorize_url(self, client: HubClient, pending: PendingLogin, *, lang: str = "de") -> str:
        query = {"client_id": client.client_id, "response_type": "code", "scope": "openid",
                 "redirect_uri": client.redirect_uri, "state": pending.state, "nonce": pending.nonce,
                 "code_challenge": pending.code_challenge, "code_challenge_method": "S256", "ui_locales": lang}
        return f"{client.endpoint}/auth?{urlencode(query)}"

    def finish(self, client: HubClient, pending: PendingLogin, *, code: str, state: str) -> SignedIn:
        if not secrets.compare_digest(state.encode(), pending.state.encode()):
            raise SignInError("the sign-in answer does not belong to this browser session; start the sign-in again")
        tokens = self._token(client, {"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": client.redirect_uri, "code_verifier": pending.code_verifier})
        return self._signed_in(client, tokens, nonce=pending.nonce)

    def refresh(self, client: HubClient, refresh_token: str) -> SignedIn:
        tokens = self._token(client, {"grant_type": "refresh_token", "refresh_token": refresh_token})
        return self._signed_in(client, tokens, nonce=None)

    def logout_url(self, client: HubClient, id_token: str | None, post_logout_redirect_uri: str) -> str:
        query = {"client_id": client.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token:
            query["id_token_hint"] = id_token
        return f"{client.endpoint}/logout?{urlencode(query)}"

    def revoke(self, client: HubClient, refresh_token: str | None) -> None:
        """Ends the Keycloak session behind a refresh token (server side, for logout without a browser)."""
        if not refresh_token:
            return
        try:
            self._http.post(f"{client.endpoint}/logout",
                            data={"client_id": client.client_id, "refresh_token": refresh_token})
        except httpx.HTTPError:
            pass  # the browser's end-session redirect still ends it

    def _token(self, client: HubClient, form: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._http.post(f"{client.endpoint}/token", data={"client_id": client.client_id, **form})
        except httpx.HTTPError:
            raise SignInError("the sign-in service (Keycloak) cannot be reached; try again in a minute") from None
        if response.status_code >= 500:
            raise SignInError("the sign-in service (Keycloak) is not available; try again in a minute")
        if response.status_code != 200:
            raise SignInError("the sign-in was not accepted (it expired or was already used); sign in again")
        return response.json()

    def _signed_in(self, client: HubClient, tokens: dict[str, Any], *, nonce: str | None) -> SignedIn:
        try:
            principal = self.verifier.verify(tokens["access_token"])
        except (AuthError, KeyError) as error:
            raise SignInError(f"the sign-in token was refused: {error}") from None
        id_token = tokens.get("id_token", "")
        claims = self._id_claims(client, id_token, nonce) if id_token else {}
        if principal.subject != claims.get("sub", principal.subject):
            raise SignInError("the ID token and the access token name different users; sign in again")
        expires = datetime.now(timezone.utc) + timedelta(seconds=int(tokens.get("expires_in", 60)))
        return SignedIn(principal=principal, username=str(claims.get("preferred_username", "")),
                        display_name=str(claims.get("name") or claims.get("preferred_username") or ""),
                        email=str(claims.get("email", "")), id_token=id_token,
                        refresh_token=tokens.get("refresh_token"), access_expires_at=expires)

    def _id_claims(self, client: HubClient, id_token: str, nonce: str | None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
            key = self.verifier.signing_key(client.issuer, header.get("kid"))
            claims = jwt.decode(id_token, key=key, algorithms=["RS256"], audience=client.client_id,
                                issuer=client.issuer, options={"require": ["exp", "iat", "sub"]})
        except (jwt.PyJWTError, AuthError) as error:
            raise SignInError(f"the ID token was refused ({error}); sign in again") from None
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInError("the ID token does not answer this sign-in (nonce); sign in again")
        return claims

    def close(self) -> None:
        self._http.close()
