"""A municipality's people in Keycloak, as the Gov Hub's own identity sees them.

The hub signs in to Keycloak's Admin REST API as the service-account client
``urbanstack-gov-hub`` of the master realm (``URBANSTACK_GOV_HUB_KEYCLOAK_USER`` /
``…_PASSWORD``). The operator grants it, per tenant realm, users and role mappings,
reading clients and — only in the shared realm, because Keycloak 26 asks for it on every
organization endpoint — ``manage-realm`` (see ``operator/provisioners/identity.py``).

A member is a user holding a staff role (``gov-admin``, ``gov-editor``, ``gov-viewer``)
of the tenant's ``<slug>-api`` client — the same place the API reads roles from, in both
identity strategies. Every change is scoped to this tenant: role mappings of
``<slug>-api`` and the membership of the organization ``<slug>``; a user who also works
for another municipality keeps that access. A user who holds no role of this tenant
(and, in the shared realm, is no member of its organization) is answered as not found,
so ids of other tenants' people cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from urbanstack.operator import naming
from urbanstack.operator.models import IdentityStrategy
from urbanstack.operator.provisioners.base import BackendUnavailable
from urbanstack.operator.provisioners.identity import _AdminApi, _error_text

STAFF_ROLES = ("gov-admin", "gov-editor", "gov-viewer")   # highest first
NEW_USER_ACTIONS = ("UPDATE_PASSWORD", "CONFIGURE_TOTP")
INVITE_LIFESPAN_SECONDS = 72 * 3600
MAX_MEMBERS = 500


class NotMember(LookupError):
    """The user is not one of this municipality's people (404 for the page)."""


class DirectoryError(RuntimeError):
    """Keycloak refused or is unreachable; the message is for the administrator."""


@dataclass(frozen=True)
class Member:
    id: str
    username: str
    email: str
    name: str
    role: str
    enabled: bool
    pending: tuple[str, ...]


@dataclass(frozen=True)
class Invitation:
    member: Member
    created: bool
    mail: str          # "sent", "not_sent" (no working mail server), "not_needed" (the user exists already)
    mail_problem: str = ""


class _ServiceAccountApi(_AdminApi):
    """The operator's Admin API helper, signed in with client credentials instead of a user."""

    def _login_form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": self._user, "client_secret": self._password}

    def _login_refused(self, status: int) -> str:
        return (f"Keycloak refused the Gov Hub's service-account login (client {self._user!r}, HTTP {status}); "
                f"check URBANSTACK_GOV_HUB_KEYCLOAK_USER and URBANSTACK_GOV_HUB_KEYCLOAK_PASSWORD")


def _display(user: dict[str, Any]) -> str:
    return " ".join(filter(None, (user.get("firstName"), user.get("lastName")))) or user.get("username", "")


class Directory:
    """People management for every municipality this process serves (one token, many realms)."""

    def __init__(self, server_url: str, client_id: str, secret: str, timeout: float = 10.0):
        self._api = _ServiceAccountApi(server_url, client_id, secret, timeout)

    @classmethod
    def from_settings(cls, settings) -> "Directory":
        return cls(settings.keycloak_url, *settings.gov_hub_keycloak())

    def close(self) -> None:
        self._api.close()

    # HTTP ------------------------------------------------------------------------
    def _call(self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (), **kwargs):
        try:
            response = self._api.request(method, path, **kwargs)
        except BackendUnavailable as exc:
            raise DirectoryError(f"Keycloak cannot be reached right now ({exc}); try again in a minute") from None
        except RuntimeError as exc:   # login refused
            raise DirectoryError(str(exc)) from None
        if response.status_code < 300 or response.status_code in ok:
            return response
        if response.status_code == 403:
            raise DirectoryError(f"Keycloak forbids the Gov Hub {what}; the platform team must grant the hub's "
                                 f"client access to this municipality's realm (the operator does so when it "
                                 f"reconciles the municipality)")
        raise DirectoryError(f"Keycloak rejected {what} (HTTP {response.status_code}): {_error_text(response)}")

    def _get(self, path: str, what: str, **params) -> Any:
        response = self._call("GET", path, what, ok=(404,), params=params or None)
        return None if response.status_code == 404 else response.json()

    # The tenant's places ----------------------------------------------------------
    @staticmethod
    def realm(municipality) -> str:
        if municipality.spec.identity.strategy is IdentityStrategy.realm:
            return naming.realm(municipality.slug)
        return naming.SHARED_REALM

    @staticmethod
    def _shared(municipality) -> bool:
        return municipality.spec.identity.strategy is not IdentityStrategy.realm

    def _api_client(self, municipality) -> tuple[str, dict[str, dict[str, Any]]]:
        realm = quote(self.realm(municipality))
        client_id = naming.client(municipality.slug, "api")
        found = self._get(f"/{realm}/clients", "reading the municipality's clients", clientId=client_id) or []
        client = next((c for c in found if c["clientId"] == client_id), None)
        if client is None:
            raise DirectoryError(f"the client {client_id} is not in Keycloak yet; the operator creates it when it "
                                 f"sets up the municipality")
        roles = {r["name"]: r for r in self._get(f"/{realm}/clients/{client['id']}/roles", "reading roles") or []}
        return client["id"], roles

    def _organization(self, municipality) -> dict[str, Any]:
        realm = quote(self.realm(municipality))
        alias = naming.organization(municipality.slug)
        found = self._get(f"/{realm}/organizations", "reading organizations", q=f"slug:{alias}") or []
        org = next((o for o in found if o.get("alias") == alias), None)
        if org is None:
            raise DirectoryError(f"the organization {alias} is not in Keycloak yet; the operator creates it when it "
                                 f"sets up the municipality")
        return org

    def _roles_of(self, municipality, user_id: str, client_uuid: str) -> set[str]:
        realm = quote(self.realm(municipality))
        mapped = self._get(f"/{realm}/users/{user_id}/role-mappings/clients/{client_uuid}", "reading role mappings")
        return {r["name"] for r in mapped or []}

    def _is_org_member(self, municipality, user_id: str, org_id: str) -> bool:
        realm = quote(self.realm(municipality))
        orgs = self._get(f"/{realm}/organizations/members/{user_id}/organizations", "reading memberships") or []
        return any(o.get("id") == org_id for o in orgs)

    def _member(self, user: dict[str, Any], roles: set[str]) -> Member:
        role = next((r for r in STAFF_ROLES if r in roles), "")
        return Member(id=user["id"], username=user.get("username", ""), email=user.get("email") or "",
                      name=_display(user), role=role, enabled=bool(user.get("enabled", True)),
                      pending=tuple(user.get("requiredActions") or ()))

    # Reading ---------------------------------------------------------------------
    def members(self, municipality) -> list[Member]:
        """Everyone with a staff role of this municipality (at most MAX_MEMBERS), by name."""
        realm = quote(self.realm(municipality))
        client_uuid, roles = self._api_client(municipality)
        by_id: dict[str, tuple[dict[str, Any], set[str]]] = {}
        for role in STAFF_ROLES:
            if role not in roles:
                continue
            users = self._get(f"/{realm}/clients/{client_uuid}/roles/{quote(role)}/users",
                              "listing the municipality's people", first=0, max=MAX_MEMBERS) or []
            for user in users:
                by_id.setdefault(user["id"], (user, set()))[1].add(role)
        members = [self._member(user, have) for user, have in by_id.values()]
        return sorted(members, key=lambda m: (STAFF_ROLES.index(m.role), m.email or m.username))[:MAX_MEMBERS]

    def member(self, municipality, user_id: str) -> Member:
        """One of this municipality's people; NotMember for anyone else (other tenants' users included)."""
        realm = quote(self.realm(municipality))
        user = self._get(f"/{realm}/users/{quote(user_id)}", "reading a user") if user_id else None
        if user is None:
            raise NotMember(user_id)
        client_uuid, _ = self._api_client(municipality)
        roles = self._roles_of(municipality, user["id"], client_uuid)
        if not roles & set(STAFF_ROLES):
            if not (self._shared(municipality)
                    and self._is_org_member(municipality, user["id"], self._organization(municipality)["id"])):
                raise NotMember(user_id)
        return self._member(user, roles)

    # Changing --------------------------------------------------------------------
    def _set_role(self, municipality, user_id: str, role: str) -> None:
        if role not in STAFF_ROLES:
            raise ValueError(f"role must be one of {', '.join(STAFF_ROLES)}, got {role!r}")
        realm = quote(self.realm(municipality))
        client_uuid, roles = self._api_client(municipality)
        if role not in roles:
            raise DirectoryError(f"the role {role} is not defined on {naming.client(municipality.slug, 'api')} yet")
        have = self._roles_of(municipality, user_id, client_uuid)
        path = f"/{realm}/users/{user_id}/role-mappings/clients/{client_uuid}"
        drop = [roles[name] for name in STAFF_ROLES if name in have and name != role]
        if drop:
            self._call("DELETE", path, "removing a role", json=[{"id": r["id"], "name": r["name"]} for r in drop])
        if role not in have:
            self._call("POST", path, "granting a role", json=[{"id": roles[role]["id"], "name": role}])

    def invite(self, municipality, email: str, role: str, *, redirect_uri: str | None = None) -> Invitation:
        """Creates the user if nobody has this address (password and authenticator app to be set
        at the first sign-in), makes them a member with ``role``, and asks Keycloak to send the
        e-mail that lets them do so."""
        if role not in STAFF_ROLES:
            raise ValueError(f"role must be one of {', '.join(STAFF_ROLES)}, got {role!r}")
        realm = quote(self.realm(municipality))
        email = email.strip().lower()
        found = self._get(f"/{realm}/users", "looking up the address", email=email, exact="true") or []
        user = next((u for u in found if (u.get("email") or "").lower() == email), None)
        created = user is None
        if created:
            response = self._call("POST", f"/{realm}/users", "creating the user", ok=(409,), json={
                "username": email, "email": email, "enabled": True, "emailVerified": False,
                "requiredActions": list(NEW_USER_ACTIONS)})
            if response.status_code == 409:
                raise DirectoryError(f"Keycloak already has a user named {email} with another address; ask the "
                                     f"platform team to clean it up")
            found = self._get(f"/{realm}/users", "looking up the new user", email=email, exact="true") or []
            user = next(u for u in found if (u.get("email") or "").lower() == email)
        if self._shared(municipality):
            org = self._organization(municipality)
            self._call("POST", f"/{realm}/organizations/{org['id']}/members", "adding the organization member",
                       ok=(409,), json=user["id"])
        self._set_role(municipality, user["id"], role)
        mail, problem = "not_needed", ""
        if created or user.get("requiredActions"):
            mail, problem = self._send_actions_mail(municipality, user["id"], redirect_uri)
        return Invitation(member=self.member(municipality, user["id"]), created=created, mail=mail,
                          mail_problem=problem)

    def _send_actions_mail(self, municipality, user_id: str, redirect_uri: str | None) -> tuple[str, str]:
        realm = quote(self.realm(municipality))
        params = {"client_id": naming.client(municipality.slug, "gov-hub"), "lifespan": INVITE_LIFESPAN_SECONDS}
        if redirect_uri:
            params["redirect_uri"] = redirect_uri
        try:
            response = self._api.request("PUT", f"/{realm}/users/{user_id}/execute-actions-email", params=params,
                                         json=list(NEW_USER_ACTIONS))
        except BackendUnavailable as exc:   # Keycloak answers 500 when it has no (working) mail server
            return "not_sent", str(exc)
        if response.status_code < 300:
            return "sent", ""
        return "not_sent", _error_text(response)

    def change_role(self, municipality, user_id: str, role: str) -> Member:
        self.member(municipality, user_id)   # NotMember for anyone else
        self._set_role(municipality, user_id, role)
        return self.member(municipality, user_id)

    def remove(self, municipality, user_id: str) -> Member:
        """Ends the user's access to this municipality only: its roles and its organization
        membership (shared realm), or its roles and the account (dedicated realm: disabled)."""
        member = self.member(municipality, user_id)
        realm = quote(self.realm(municipality))
        client_uuid, roles = self._api_client(municipality)
        have = self._roles_of(municipality, user_id, client_uuid)
        drop = [roles[name] for name in have if name in roles]
        if drop:
            self._call("DELETE", f"/{realm}/users/{user_id}/role-mappings/clients/{client_uuid}", "removing roles",
                       json=[{"id": r["id"], "name": r["name"]} for r in drop])
        if self._shared(municipality):
            org = self._organization(municipality)
            self._call("DELETE", f"/{realm}/organizations/{org['id']}/members/{user_id}",
                       "removing the organization membership", ok=(404,))
        else:
            self._call("PUT", f"/{realm}/users/{user_id}", "disabling the user", json={"enabled": False})
            self._call("POST", f"/{realm}/users/{user_id}/logout", "ending the user's Keycloak sessions", ok=(404,))
        return member
