"""A member of Gütersloh's staff for trying the Gov Hub after ``make demo``.

The user ``erika.mustermann@guetersloh.example`` gets the gov-editor role (a client role of
``guetersloh-api``, as the operator's plan defines roles) and membership of Gütersloh's
organization; the password is generated once and kept in the state folder's ``secrets/``
(mode 0600), never printed. Keycloak asks for an authenticator app at the first sign-in
(gov roles require a one-time code), exactly as for real staff.
"""

from __future__ import annotations

import httpx

from urbanstack.devplatform import keycloak, secrets
from urbanstack.operator import naming

SLUG = "guetersloh"
USERNAME = "erika.mustermann@guetersloh.example"
PASSWORD_SECRET = "demo-staff-password"


def ensure(settings) -> str:
    """Creates the demo user if missing (safe to run twice); returns the path of the password file."""
    password = secrets.get_or_create(settings.secrets_dir, PASSWORD_SECRET, 12)
    base = settings.keycloak_url.rstrip("/")
    with httpx.Client(timeout=20) as http:
        token = http.post(f"{base}/realms/master/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": "admin-cli", "username": keycloak.ADMIN_USER,
            "password": keycloak.admin_password(settings)}).raise_for_status().json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        realm = f"{base}/admin/realms/{naming.SHARED_REALM}"
        users = http.get(f"{realm}/users", params={"username": USERNAME, "exact": "true"}, headers=headers).json()
        if users:
            user_id = users[0]["id"]
        else:
            created = http.post(f"{realm}/users", headers=headers, json={
                "username": USERNAME, "email": USERNAME, "firstName": "Erika", "lastName": "Mustermann",
                "enabled": True, "emailVerified": True, "requiredActions": ["CONFIGURE_TOTP"],
                "credentials": [{"type": "password", "value": password, "temporary": False}]})
            created.raise_for_status()
            user_id = created.headers["Location"].rsplit("/", 1)[-1]
        api = http.get(f"{realm}/clients", params={"clientId": naming.client(SLUG, "api")}, headers=headers).json()[0]
        role = http.get(f"{realm}/clients/{api['id']}/roles/gov-editor", headers=headers).raise_for_status().json()
        http.post(f"{realm}/users/{user_id}/role-mappings/clients/{api['id']}", headers=headers,
                  json=[role]).raise_for_status()
        orgs = http.get(f"{realm}/organizations", params={"search": naming.organization(SLUG)}, headers=headers).json()
        org = next(o for o in orgs if o["alias"] == naming.organization(SLUG))
        joined = http.post(f"{realm}/organizations/{org['id']}/members", headers={**headers,
                           "Content-Type": "application/json"}, content=f'"{user_id}"')
        if joined.status_code not in (201, 204, 409):
            joined.raise_for_status()
    return str(settings.secrets_dir / PASSWORD_SECRET)
