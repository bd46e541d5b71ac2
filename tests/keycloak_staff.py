"""Staff accounts in a tenant's Keycloak realm for sign-in tests: a password and a TOTP
device (Keycloak's browser flow asks gov roles for a one-time password), with the role as
a client role of ``<slug>-api`` and, in the shared realm, membership of the organization —
exactly what the operator's plan gives a municipality's people."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
import time
import uuid
from dataclasses import dataclass

import httpx

from urbanstack.operator.plan import IdentityPart


@dataclass(frozen=True)
class Staff:
    username: str
    password: str
    otp_secret: str  # Keycloak's stored secret: the HMAC key is its UTF-8 bytes (apps get it base32-encoded)
    role: str

    def totp(self, at: float | None = None) -> str:
        return totp(self.otp_secret, at)


def totp(secret: str, at: float | None = None, *, digits: int = 6, period: int = 30) -> str:
    """RFC 6238 time-based one-time password (HMAC-SHA1), as Keycloak's default OTP policy computes it
    from a stored secret."""
    key = secret.encode()
    counter = int((time.time() if at is None else at) // period)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(code).zfill(digits)


class KeycloakAdmin:
    """The master admin's Admin REST API, for test set-up only."""

    def __init__(self, url: str, user: str, password: str):
        self.url = url.rstrip("/")
        self._user, self._password = user, password
        self._http = httpx.Client(timeout=20)
        self._token = ""
        self._login()

    def _login(self) -> None:
        response = self._http.post(f"{self.url}/realms/master/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": "admin-cli", "username": self._user, "password": self._password})
        response.raise_for_status()
        self._token = response.json()["access_token"]

    def call(self, method: str, path: str, *, headers: dict | None = None, **kwargs) -> httpx.Response:
        for attempt in (1, 2):
            response = self._http.request(method, f"{self.url}/admin/realms{path}",
                                          headers={**(headers or {}), "Authorization": f"Bearer {self._token}"},
                                          **kwargs)
            if response.status_code != 401 or attempt == 2:
                return response
            self._login()
        return response

    def close(self) -> None:
        self._http.close()


def add_staff(admin: KeycloakAdmin, part: IdentityPart, role: str = "gov-editor", *, name: str = "Erika Mustermann",
              domain: str = "example.org") -> Staff:
    username = f"{role}-{uuid.uuid4().hex[:8]}@{domain}"
    password, secret = f"Pw-{uuid.uuid4().hex}", base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    first, _, last = name.partition(" ")
    realm = part.realm
    response = admin.call("POST", f"/{realm}/users", json={
        "username": username, "email": username, "firstName": first, "lastName": last or first, "enabled": True,
        "emailVerified": True, "requiredActions": [],
        "credentials": [{"type": "password", "value": password, "temporary": False},
                        {"type": "otp", "userLabel": "test device", "secretData": json.dumps({"value": secret}),
                         "credentialData": json.dumps({"subType": "totp", "digits": 6, "counter": 0, "period": 30,
                                                       "algorithm": "HmacSHA1"})}]})
    assert response.status_code == 201, response.text
    user_id = response.headers["Location"].rsplit("/", 1)[-1]
    api = next(c for c in part.clients if c.kind == "api").client_id
    client_uuid = admin.call("GET", f"/{realm}/clients", params={"clientId": api}).json()[0]["id"]
    role_rep = admin.call("GET", f"/{realm}/clients/{client_uuid}/roles/{role}").json()
    assert admin.call("POST", f"/{realm}/users/{user_id}/role-mappings/clients/{client_uuid}",
                      json=[role_rep]).status_code == 204
    if part.organization is not None:
        orgs = admin.call("GET", f"/{realm}/organizations", params={"search": part.organization.alias}).json()
        org = next(o for o in orgs if o["alias"] == part.organization.alias)
        added = admin.call("POST", f"/{realm}/organizations/{org['id']}/members", content=json.dumps(user_id),
                           headers={"Content-Type": "application/json"})
        assert added.status_code in (201, 204), added.text
    return Staff(username=username, password=password, otp_secret=secret, role=role)


def keycloak_sessions(admin: KeycloakAdmin, part: IdentityPart, username: str) -> list[dict]:
    """The user's live Keycloak (SSO) sessions."""
    users = admin.call("GET", f"/{part.realm}/users", params={"username": username, "exact": "true"}).json()
    return admin.call("GET", f"/{part.realm}/users/{users[0]['id']}/sessions").json() if users else []
