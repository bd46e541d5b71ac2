"""Keycloak: the tenant's identity space through the Admin REST API.

What a tenant gets (both strategies):

- a realm with the plan's security settings (password policy, brute-force
  protection, OTP policy). ``organization``: the shared realm, created if
  missing and never deleted by a tenant; ``realm``: a dedicated realm.
- clients for the Gov Hub, the Citizen Hub, the API and each enabled tool.
  Every one is tagged with the client attribute ``urbanstack.municipality=<slug>``,
  so tools that were switched off are found and removed, and a client of the
  expected name that belongs to another tenant is a conflict, not an adoption.
- roles. The shared realm is shared, so a realm role ``gov-admin`` would mean
  admin of *every* organization a user belongs to. The plan's roles therefore
  become client roles of the tenant's API client (``<slug>-api``), in both
  strategies, so the API reads roles from one place whatever the strategy. Users'
  ``realm_roles`` in the plan name these roles. Tool roles are client roles of the
  tool's client, as the plan says.
- MFA for gov roles: every gov role includes the realm marker role
  ``urbanstack-mfa-required``; the realm's browser flow (a copy of Keycloak's
  ``browser`` flow) asks those users for an OTP and makes them set one up at the
  first login; other users keep Keycloak's optional second factor. Admins are
  also created with the required actions UPDATE_PASSWORD and CONFIGURE_TOTP.
- ``organization`` strategy: an Organization (alias = slug) with the admins as
  members.

Tokens, as the API should read them (client ids are ``<slug>-<app>``):

- ``iss`` = ``<server>/realms/<realm>``; signature from that realm's JWKS
  (``endpoints()['jwks']``).
- ``aud`` contains ``<slug>-api`` (an audience mapper on every tenant client,
  the API client included).
- ``organization``: list of tenant slugs the user belongs to. In the shared realm
  Keycloak's organization scope fills it (a default scope of every tenant client);
  in a dedicated realm a hard-coded mapper on each tenant client sets ``[<slug>]``.
- ``resource_access["<slug>-api"].roles``: ``gov-admin``, ``gov-editor``,
  ``gov-viewer``, ``citizen``, composites expanded (a gov-admin also has
  gov-editor and gov-viewer).
- ``azp``: the client that asked; the API should accept only ``<slug>-*`` clients
  of the tenant it serves (Keycloak's own ``admin-cli`` can issue tokens too).

Tenant clients have ``fullScopeAllowed`` off and scope mappings for the tenant's
roles only, so a token issued by tenant A's client never carries tenant B's roles.

No tenant client allows the password grant (it bypasses the browser flow's MFA).
A test that needs a user token switches ``directAccessGrantsEnabled`` on for the
tenant's public ``<slug>-gov-hub`` client through the Admin API and uses the
password grant there (``client_id=<slug>-gov-hub``, no secret), so the token has
exactly the claims the Gov Hub's tokens have. ``observe`` reports that switch as
drift and ``apply`` turns it off again. The user must have no pending required
action (the plan's admins have two until they first sign in).

Suspension disables the tenant's clients and users (the plan says so) and, in the
shared realm, every other member of the organization; their ids are kept in the
organization attribute ``urbanstack.suspended-members`` so that resuming enables
exactly those again. A dedicated realm is disabled as a whole.

Deletion: ``keep_data=True`` (Retain) removes access the same way suspension does
(clients, the admins and the members disabled; a dedicated realm disabled) and
keeps organization, users, roles and secrets, so re-applying the Municipality adopts
and re-enables them. ``keep_data=False`` deletes the tenant's clients (and with the
API client its roles), the organization, and the users who belong to no other
organization; a dedicated realm is deleted entirely.

The Gov Hub's own identity: a confidential service-account client ``urbanstack-gov-hub``
in the master realm (created by the platform's installation; locally by ``dev up``). When
it exists, every tenant realm grants it exactly :func:`gov_hub_roles` of that realm's
``<realm>-realm`` management client: users and role mappings, reading clients; in the
shared realm also ``manage-realm``, which Keycloak 26 requires for organization
memberships (no narrower role covers them). It can create no client and no realm and
reaches no realm it was not granted.

Plain httpx rather than python-keycloak: every answer is classified in one place
(outage, already there, already gone, our mistake), and the admin token is renewed
before it expires and re-obtained after a 401 (Keycloak restarted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from urbanstack.operator.plan import IdentityPart, KeycloakClient, KeycloakRole
from urbanstack.operator.provisioners.base import BackendUnavailable, Conflict, Diff, DiffBuilder, Difference, dispatch

BACKEND = "Keycloak"
ADMIN_REALM = "master"
ADMIN_CLIENT = "admin-cli"

TENANT_ATTRIBUTE = "urbanstack.municipality"
SUSPENDED_MEMBERS_ATTRIBUTE = "urbanstack.suspended-members"
MFA_MARKER_ROLE = "urbanstack-mfa-required"
BROWSER_FLOW = "urbanstack browser"
GOV_MFA_FLOW = "urbanstack gov MFA"
TENANT_CLAIM = "organization"
GOV_HUB_CLIENT = "urbanstack-gov-hub"
GOV_HUB_USER_ROLES = ("manage-users", "view-users", "query-users", "view-clients")

# Client settings the plan decides or that must hold for every tenant client; others are left alone.
_CLIENT_FIELDS = ("name", "enabled", "publicClient", "standardFlowEnabled", "implicitFlowEnabled",
                  "directAccessGrantsEnabled", "serviceAccountsEnabled", "fullScopeAllowed")
# Actions that converge one object each; the others converge their whole area once per apply.
PER_OBJECT = ("set_client", "delete_client")
_TOKEN_MARGIN_SECONDS = 15
_PAGE = 100


def tenant_slug(part: IdentityPart) -> str:
    """The slug the part belongs to: the organization alias, or the dedicated realm without ``muni-``."""
    if part.organization is not None:
        return part.organization.alias
    return part.realm.removeprefix("muni-")


def client_representation(part: IdentityPart, client: KeycloakClient, hub_url: str) -> dict[str, Any]:
    """The settings we own on a client (a partial representation: Keycloak keeps the rest)."""
    representation: dict[str, Any] = {
        "clientId": client.client_id, "name": client.name, "enabled": client.enabled,
        "protocol": "openid-connect", "publicClient": client.public,
        "standardFlowEnabled": client.standard_flow, "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False, "serviceAccountsEnabled": client.service_account,
        "fullScopeAllowed": False,
        "attributes": {TENANT_ATTRIBUTE: tenant_slug(part)},
    }
    if client.pkce:
        representation["attributes"]["pkce.code.challenge.method"] = "S256"
    if client.standard_flow:
        representation["redirectUris"] = [f"{hub_url.rstrip('/')}/*"]
        representation["webOrigins"] = ["+"]
        # Sign-out from a hub returns to the hub: the same URIs as sign-in ("+").
        representation["attributes"]["post.logout.redirect.uris"] = "+"
    return representation


def protocol_mappers(part: IdentityPart, client: KeycloakClient) -> dict[str, dict[str, Any]]:
    """Mappers by name: an audience mapper per audience (the API client names itself),
    and in a dedicated realm the tenant claim."""
    audiences = tuple(client.audiences) + ((client.client_id,) if client.kind == "api" else ())
    mappers = {
        f"audience {audience}": {
            "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
            "config": {"included.client.audience": audience, "access.token.claim": "true",
                       "id.token.claim": "false", "introspection.token.claim": "true"},
        } for audience in dict.fromkeys(audiences)
    }
    if part.organization is None:
        mappers[f"{TENANT_CLAIM} claim"] = {
            "protocol": "openid-connect", "protocolMapper": "oidc-hardcoded-claim-mapper",
            "config": {"claim.name": TENANT_CLAIM, "claim.value": f'["{tenant_slug(part)}"]',
                       "jsonType.label": "JSON", "access.token.claim": "true", "id.token.claim": "true",
                       "introspection.token.claim": "true", "userinfo.token.claim": "true"},
        }
    return mappers


def settings_drift(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Names of the desired realm settings that differ in ``live`` (lists compare as sets; maps
    such as ``smtpServer`` by the keys we set, so the password Keycloak masks is never compared)."""
    drifted = []
    for key, value in desired.items():
        have = live.get(key)
        if isinstance(value, dict):
            have = have if isinstance(have, dict) else {}
            if any(str(item) != str(have.get(name)) for name, item in value.items()):
                drifted.append(key)
        elif isinstance(value, list):
            if sorted(map(str, value)) != sorted(map(str, have or [])):
                drifted.append(key)
        elif isinstance(value, bool) or isinstance(have, bool):
            if str(value).lower() != str(have).lower():
                drifted.append(key)
        elif str(value) != str(have):
            drifted.append(key)
    return drifted


def gov_hub_roles(part: IdentityPart) -> tuple[str, ...]:
    """What the Gov Hub's service account holds in the tenant's realm (roles of ``<realm>-realm``)."""
    return GOV_HUB_USER_ROLES + (("manage-realm",) if part.organization is not None else ())


def _client_secret(client: KeycloakClient, credentials: Mapping[str, str]) -> str | None:
    """The confidential client's secret from the tenant Secret (None for a public client)."""
    if not client.secret_key or client.public:
        return None
    secret = credentials.get(client.secret_key)
    if not secret:
        raise RuntimeError(f"the tenant Secret has no key {client.secret_key!r} for client "
                           f"{client.client_id}; create the Secret (runtime) before the identity")
    return secret


def _composites_of(part: IdentityPart, role: KeycloakRole) -> set[str]:
    """What a role must include: the plan's composites, and the MFA marker for gov roles."""
    return set(role.composites) | ({MFA_MARKER_ROLE} if role.name in part.mfa_required_roles else set())


def _api_client(part: IdentityPart) -> KeycloakClient:
    return next(client for client in part.clients if client.kind == "api")


def _tenant_roles(part: IdentityPart) -> dict[str, tuple[KeycloakRole, ...]]:
    """Client id -> its roles: the plan's tenant roles live on the API client."""
    roles = {client.client_id: tuple(client.client_roles) for client in part.clients}
    api = _api_client(part).client_id
    roles[api] = tuple(part.roles) + roles[api]
    return roles


class _AdminApi:
    """The Admin REST API with one rule for every answer.

    Outages (no connection, timeouts, 5xx, 429) raise BackendUnavailable; 401
    logs in again once (the token expired or Keycloak restarted); other 4xx come
    back to the caller, who knows whether 404/409 mean success.
    """

    def __init__(self, server_url: str, user: str, password: str, timeout: float):
        self.server_url = server_url.rstrip("/")
        self._user, self._password = user, password
        self._http = httpx.Client(base_url=self.server_url, timeout=timeout)
        self._token: str | None = None
        self._expires_at = 0.0

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise BackendUnavailable(BACKEND, f"{method} {url.split('?')[0]}: no answer in time") from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(BACKEND, f"cannot reach {self.server_url}: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise BackendUnavailable(BACKEND, f"{method} {url.split('?')[0]}: HTTP {response.status_code}")
        return response

    def _login_form(self) -> dict[str, str]:
        return {"grant_type": "password", "client_id": ADMIN_CLIENT, "username": self._user, "password": self._password}

    def _login_refused(self, status: int) -> str:
        return (f"Keycloak refused the admin login of user {self._user!r} in realm {ADMIN_REALM!r} "
                f"(HTTP {status}); check the admin user and password given to the operator")

    def _login(self) -> None:
        response = self._send("POST", f"/realms/{ADMIN_REALM}/protocol/openid-connect/token",
                              data=self._login_form())
        if response.status_code != 200:
            raise RuntimeError(self._login_refused(response.status_code))
        body = response.json()
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + float(body.get("expires_in", 60)) - _TOKEN_MARGIN_SECONDS

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        url = f"/admin/realms{path}"
        for attempt in (1, 2):
            if self._token is None or time.monotonic() >= self._expires_at:
                self._login()
            response = self._send(method, url, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            return response
        return response

    def user_id(self) -> str | None:
        """The id of the admin user this client signs in as (Keycloak's lightweight admin tokens
        carry no subject): its own changes are recognisable in the realm's admin events."""
        response = self.request("GET", f"/{ADMIN_REALM}/users", params={"username": self._user, "exact": "true"})
        if response.status_code != 200:
            return None
        return next((u["id"] for u in response.json() if u.get("username") == self._user.lower()), None)

    def close(self) -> None:
        self._http.close()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("errorMessage") or body.get("error_description") or body.get("error") or body)[:200]
    return str(body)[:200]


@dataclass
class KeycloakSnapshot:
    realms: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    clients: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)        # realm -> clientId -> client
    organizations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # realm -> alias -> org
    # What someone else changed since the previous sweep (admin events), per realm: the client ids,
    # organization aliases and user names it touched; those tenants get a full observe.
    touched: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    usernames: dict[str, set[str]] = field(default_factory=dict)   # realm -> every user name (listed when needed)
    first: dict[str, str] = field(default_factory=dict)            # realm -> lowest planned organization alias
    _tagged: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict, repr=False)

    def tagged(self, realm: str, slug: str) -> dict[str, dict[str, Any]]:
        """The realm's clients tagged with tenant ``slug``, clientId -> client (grouped once per
        snapshot, not scanned once per tenant)."""
        if realm not in self._tagged:
            grouped: dict[str, dict[str, dict[str, Any]]] = {}
            for client_id, client in self.clients.get(realm, {}).items():
                owner = (client.get("attributes") or {}).get(TENANT_ATTRIBUTE)
                if owner is not None:
                    grouped.setdefault(owner, {})[client_id] = client
            self._tagged[realm] = grouped
        return self._tagged[realm].get(slug, {})


@dataclass
class _RealmListing:
    clients: dict[str, dict[str, Any]]         # id -> client
    organizations: dict[str, dict[str, Any]]   # id -> organization
    listed_at: float                           # time.monotonic() of the last full listing


FULL_LISTING_SECONDS = 900.0   # the sweep pages every client and organization at least this often


# Admin events (the drift sweep's view of roles, scope mappings, users and members) -----------------
ADMIN_EVENTS_PAGE = 500
ADMIN_EVENTS_MAX_PAGES = 20        # 10,000 events per sweep at most; the rest next sweep
OWN_WRITE_SLACK_MS = 2_000         # clock skew and request time around our own writes
OWN_WRITE_WINDOWS_KEPT_MS = 600_000


class AdminEventFollower:
    """Reads the shared realm's admin events after a cursor and turns the ones this operator did
    not cause into (kind, key) pairs the sweep compares with each tenant's plan: ``("client",
    clientId)``, ``("org", alias)``, ``("user", username)`` and ``("realm", "")`` for realm-wide
    changes (authentication flows, realm roles) that one tenant's full observe repairs.

    Our own writes are recognised by the admin user's id *and* the time: an event of our user
    inside a window in which this process wrote that tenant (or, for realm-wide events, any
    tenant) is ours; the same account used by a person outside those windows still counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cursor: dict[str, int] = {}                    # realm -> newest event time read (ms)
        self._seen_at_cursor: dict[str, set[tuple]] = {}
        self._windows: list[tuple[str, int, int]] = []      # (tenant slug, start ms, end ms)
        self.started_ms = int(time.time() * 1000)
        self.unattributed = 0

    def wrote(self, slug: str, start_ms: int, end_ms: int) -> None:
        with self._lock:
            horizon = end_ms - OWN_WRITE_WINDOWS_KEPT_MS
            self._windows = [w for w in self._windows if w[2] >= horizon]
            self._windows.append((slug, start_ms, end_ms))

    def ours(self, event: dict[str, Any], own_user: str | None, slug: str | None) -> bool:
        if own_user is None or (event.get("authDetails") or {}).get("userId") != own_user:
            return False
        at = int(event.get("time") or 0)
        with self._lock:
            return any(w[1] - OWN_WRITE_SLACK_MS <= at <= w[2] + OWN_WRITE_SLACK_MS
                       for w in self._windows if slug is None or w[0] == slug)

    def new_events(self, realm: str, read_page) -> list[dict[str, Any]]:
        """Events after the cursor, oldest first; ``read_page(date_from, first, max)``."""
        since = self.cursor.get(realm, self.started_ms)
        seen = self._seen_at_cursor.get(realm, set())
        events: list[dict[str, Any]] = []
        for page in range(ADMIN_EVENTS_MAX_PAGES):
            batch = read_page(since, page * ADMIN_EVENTS_PAGE, ADMIN_EVENTS_PAGE)
            events.extend(batch)
            if len(batch) < ADMIN_EVENTS_PAGE:
                break
        fresh = [e for e in events if _event_key(e) not in seen]
        if events:
            newest = max(int(e.get("time") or 0) for e in events)
            at_newest = {_event_key(e) for e in events if int(e.get("time") or 0) == newest}
            self.cursor[realm] = newest
            self._seen_at_cursor[realm] = at_newest | (seen if newest == since else set())
        return fresh


def _event_key(event: dict[str, Any]) -> tuple:
    return (event.get("id"), event.get("time"), event.get("operationType"), event.get("resourcePath"))


class IdentityProvisioner:
    name = BACKEND
    condition = "IdentityReady"

    def __init__(self, server_url: str, admin_user: str, admin_password: str, timeout: float = 10.0,
                 *, hub_url: str = "http://127.0.0.1", smtp_password: str = ""):
        """``hub_url``: where the hubs run; their clients accept redirects below it.
        Keycloak ignores the port of loopback redirect URIs (RFC 8252), so the
        default fits the local platform."""
        self._api = _AdminApi(server_url, admin_user, admin_password, timeout)
        self.server_url = self._api.server_url
        self.hub_url = hub_url
        self._smtp_password = smtp_password  # only ever sent to Keycloak inside smtpServer
        self.events = AdminEventFollower()
        self._own_user: str | None = None
        # The drift sweep's listing of each shared realm, kept current from admin events between
        # full listings (snapshot).
        self.full_listing_seconds = FULL_LISTING_SECONDS
        self._listings: dict[str, _RealmListing] = {}

    def _realm_body(self, part: IdentityPart, keys) -> dict[str, Any]:
        """The realm settings to write; ``smtpServer`` gets the relay's password here, so it is
        neither in the plan nor in a diff, a status or a log line."""
        body = {key: part.realm_settings[key] for key in keys}
        smtp = body.get("smtpServer")
        if isinstance(smtp, dict) and smtp.get("auth") == "true" and self._smtp_password:
            body["smtpServer"] = dict(smtp, password=self._smtp_password)
        return body

    # HTTP helpers -------------------------------------------------------------
    def _call(self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (), **kwargs) -> httpx.Response:
        response = self._api.request(method, path, **kwargs)
        if response.status_code < 300 or response.status_code in ok:
            return response
        if response.status_code == 401:
            raise RuntimeError(f"Keycloak keeps refusing the admin token while {what}; check that the admin user "
                               f"has the realm 'admin' role")
        if response.status_code == 403:
            raise RuntimeError(f"Keycloak forbids {what}: the operator's admin user needs the realm 'admin' role "
                               f"in {ADMIN_REALM!r}")
        raise RuntimeError(f"Keycloak rejected {what} (HTTP {response.status_code}): {_error_text(response)}")

    def _get(self, path: str, what: str, **params) -> Any | None:
        response = self._call("GET", path, what, ok=(404,), params=params or None)
        return None if response.status_code == 404 else response.json()

    def _list(self, path: str, what: str, **params) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._get(path, what, **params, first=len(items), max=_PAGE) or []
            items += page
            if len(page) < _PAGE:
                return items

    # Lookups --------------------------------------------------------------------
    def _realm(self, realm: str) -> dict[str, Any] | None:
        return self._get(f"/{quote(realm)}", f"reading realm {realm}")

    def _client(self, realm: str, client_id: str) -> dict[str, Any] | None:
        found = self._get(f"/{quote(realm)}/clients", f"looking up client {client_id}", clientId=client_id)
        return next((c for c in found or [] if c["clientId"] == client_id), None)

    def _tenant_clients(self, part: IdentityPart,
                        named: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Every client tagged with this tenant (found by its slug, confirmed by the tag). ``named``
        receives every client the search found, tagged or not: each client id that contains the
        slug is among them, so no lookup by exact id is needed for those."""
        slug = tenant_slug(part)
        found = self._list(f"/{quote(part.realm)}/clients", "listing clients", clientId=slug, search="true")
        if named is not None:
            named.update((c["clientId"], c) for c in found)
        return {c["clientId"]: c for c in found if (c.get("attributes") or {}).get(TENANT_ATTRIBUTE) == slug}

    def _client_roles(self, realm: str, uuid: str) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self._get(f"/{quote(realm)}/clients/{uuid}/roles", "listing client roles") or []}

    def _composites(self, realm: str, uuid: str, role: str) -> set[str]:
        found = self._get(f"/{quote(realm)}/clients/{uuid}/roles/{quote(role)}/composites",
                          f"reading composites of role {role}") or []
        return {r["name"] for r in found}

    def _organization(self, part: IdentityPart) -> dict[str, Any] | None:
        org = part.organization
        assert org is not None
        realm = quote(part.realm)
        # The slug attribute finds our own organizations; the name finds one to adopt.
        candidates = self._get(f"/{realm}/organizations", "looking up the organization", q=f"slug:{org.alias}") or []
        candidates += self._get(f"/{realm}/organizations", "looking up the organization", search=org.name,
                                exact="true") or []
        match = next((o for o in candidates if o.get("alias") == org.alias), None)
        if match is None:
            return None
        return self._get(f"/{realm}/organizations/{match['id']}", "reading the organization")

    def _organization_by_alias(self, part: IdentityPart) -> dict[str, Any] | None:
        """A full scan: only needed when an organization with our alias has neither our slug nor our name."""
        for org in self._list(f"/{quote(part.realm)}/organizations", "listing organizations"):
            if org.get("alias") == part.organization.alias:
                return self._get(f"/{quote(part.realm)}/organizations/{org['id']}", "reading the organization")
        return None

    def _members(self, realm: str, org_id: str) -> list[dict[str, Any]]:
        return self._list(f"/{quote(realm)}/organizations/{org_id}/members", "listing organization members")

    def _user(self, realm: str, username: str) -> dict[str, Any] | None:
        found = self._get(f"/{quote(realm)}/users", f"looking up user {username}", username=username, exact="true")
        return next((u for u in found or [] if u["username"] == username.lower()), None)

    def _user_client_roles(self, realm: str, user_id: str, client_uuid: str) -> set[str]:
        found = self._get(f"/{quote(realm)}/users/{user_id}/role-mappings/clients/{client_uuid}",
                          "reading role mappings") or []
        return {r["name"] for r in found}

    # observe --------------------------------------------------------------------
    def observe(self, part: IdentityPart, credentials: Mapping[str, str]) -> Diff:
        found = DiffBuilder()
        secrets = {c.client_id: _client_secret(c, credentials) for c in part.clients}
        realm = self._realm(part.realm)
        if realm is None:
            found.add(f"realm {part.realm}", "exists", True, False, "set_realm")
            self._observe_mfa(part, None, found)
            for client in part.clients:
                self._observe_missing_client(part, client, found)
            if part.organization is not None:
                found.add(f"organization {part.organization.alias}", "exists", True, False, "set_organization")
            for user in part.users:
                found.add(f"user {user.username}", "exists", True, False, "set_users", user)
            self._observe_gov_hub(part, found)
            return found.diff()
        for key in settings_drift(part.realm_settings, realm):
            found.add(f"realm {part.realm}", key, part.realm_settings[key], realm.get(key), "set_realm")
        self._observe_mfa(part, realm, found)
        named: dict[str, dict[str, Any]] = {}
        clients = self._tenant_clients(part, named)
        slug = tenant_slug(part)
        planned: dict[str, dict[str, Any]] = {}   # ours, and untagged ones of our names to adopt
        for client in part.clients:
            # One whose id contains the slug was in the search (e.g. a new tenant's: not there at all).
            live = clients.get(client.client_id) or (
                named.get(client.client_id) if slug in client.client_id else self._client(part.realm, client.client_id))
            if live is None:
                self._observe_missing_client(part, client, found)
                continue
            self._observe_client(part, client, live, secrets[client.client_id], found)
            planned[client.client_id] = live
        for client_id in sorted(set(clients) - {c.client_id for c in part.clients}):
            found.add(f"client {client_id}", "exists", False, True, "delete_client", clients[client_id])
        self._observe_scope_mappings(part, planned, found)
        org = None
        if part.organization is not None:
            org = self._organization(part)
            if org is None:
                found.add(f"organization {part.organization.alias}", "exists", True, False, "set_organization")
                for user in part.users:
                    found.add(f"user {user.username}", f"member of {part.organization.alias}", True, False,
                              "set_users", user)
            else:
                self._observe_organization(part, org, found)
        self._observe_users(part, planned, org, found)
        self._observe_gov_hub(part, found)
        return found.diff()

    def _gov_hub_account(self) -> dict[str, Any] | None:
        """The Gov Hub's service-account user in the master realm (None: no Gov Hub installed)."""
        found = self._get(f"/{ADMIN_REALM}/clients", "looking up the Gov Hub's client", clientId=GOV_HUB_CLIENT)
        client = next((c for c in found or [] if c["clientId"] == GOV_HUB_CLIENT), None)
        if client is None or not client.get("serviceAccountsEnabled"):
            return None
        return self._get(f"/{ADMIN_REALM}/clients/{client['id']}/service-account-user",
                         "reading the Gov Hub's service account")

    def _observe_gov_hub(self, part: IdentityPart, found: DiffBuilder) -> None:
        account = self._gov_hub_account()
        if account is None:
            return
        management = self._client(ADMIN_REALM, f"{part.realm}-realm")
        have: set[str] = set()
        if management is not None:
            have = self._user_client_roles(ADMIN_REALM, account["id"], management["id"])
        want = set(gov_hub_roles(part))
        if not want <= have:
            found.add(f"gov hub access to realm {part.realm}", "roles", sorted(want), sorted(have & want),
                      "set_gov_hub_access", account["id"])

    def _observe_missing_client(self, part: IdentityPart, client: KeycloakClient, found: DiffBuilder) -> None:
        """A new client also needs what hangs on it: its roles, its scope mappings, the users' roles."""
        obj = f"client {client.client_id}"
        found.add(obj, "exists", True, False, "set_client", client)
        if _tenant_roles(part).get(client.client_id):
            found.add(f"roles of {client.client_id}", "exist", True, False, "set_roles", (client.client_id, None))
        found.add(obj, "scope mappings", "the tenant's roles", None, "set_scope_mappings", (client.client_id, None))
        if client.kind == "api":
            for user in part.users:
                found.add(f"user {user.username}", "roles", sorted(user.realm_roles), [], "set_users", user)

    def _observe_mfa(self, part: IdentityPart, realm: dict[str, Any] | None, found: DiffBuilder) -> None:
        """The MFA marker role, the browser flow that asks gov roles for an OTP, and its binding
        (``realm`` None: the realm does not exist yet, so none of them does)."""
        if realm is None or self._get(f"/{quote(part.realm)}/roles/{MFA_MARKER_ROLE}", "reading the MFA role") is None:
            found.add(f"realm role {MFA_MARKER_ROLE}", "exists", True, False, "set_mfa")
        if realm is None or not self._mfa_flow_complete(part.realm):
            found.add(f"flow {BROWSER_FLOW}", "steps", "OTP required for gov roles", "incomplete", "set_mfa")
        if realm is None or realm.get("browserFlow") != BROWSER_FLOW:
            found.add(f"realm {part.realm}", "browserFlow", BROWSER_FLOW, (realm or {}).get("browserFlow"),
                      "set_mfa")

    def _observe_client_representation(self, part: IdentityPart, client: KeycloakClient, live: dict[str, Any],
                                       found: DiffBuilder) -> None:
        """What the client's own representation shows: owner, fields, attributes, mappers."""
        obj = f"client {client.client_id}"
        desired = client_representation(part, client, self.hub_url)
        owner = (live.get("attributes") or {}).get(TENANT_ATTRIBUTE)
        if owner not in (None, tenant_slug(part)):
            raise Conflict(f"client {client.client_id} in realm {part.realm} belongs to municipality {owner!r}; "
                           f"rename or delete it before this municipality can use the name")
        for key in _CLIENT_FIELDS:
            if live.get(key) != desired[key]:
                found.add(obj, key, desired[key], live.get(key), "set_client", client)
        for key, value in desired["attributes"].items():
            have = (live.get("attributes") or {}).get(key)
            if have != value:
                found.add(obj, f"attribute {key}", value, have, "set_client", client)
        live_mappers = {m["name"]: m for m in live.get("protocolMappers") or []}
        for name, mapper in protocol_mappers(part, client).items():
            have = live_mappers.get(name)
            if have is None or any((have.get("config") or {}).get(k) != v for k, v in mapper["config"].items()):
                found.add(obj, f"mapper {name}", "as planned", "missing" if have is None else "changed",
                          "set_client", client)

    def _observe_client(self, part: IdentityPart, client: KeycloakClient, live: dict[str, Any], secret: str | None,
                        found: DiffBuilder) -> None:
        self._observe_client_representation(part, client, live, found)
        obj = f"client {client.client_id}"
        if client.default_scopes:
            scopes = {s["name"] for s in self._get(f"/{quote(part.realm)}/clients/{live['id']}/default-client-scopes",
                                                    "reading default client scopes") or []}
            for scope in client.default_scopes:
                if scope not in scopes:
                    found.add(obj, f"default scope {scope}", True, False, "set_client", client)
        if secret is not None:
            current = self._get(f"/{quote(part.realm)}/clients/{live['id']}/client-secret",
                                "reading a client secret") or {}
            if current.get("value") != secret:
                found.add(obj, "secret", "the tenant Secret's value", "a different value", "set_client", client)
        roles = _tenant_roles(part).get(client.client_id, ())
        if roles:
            have_roles = self._client_roles(part.realm, live["id"])
            for role in roles:
                if role.name not in have_roles:
                    found.add(f"role {client.client_id}/{role.name}", "exists", True, False, "set_roles",
                              (client.client_id, role))
                    continue
                want = _composites_of(part, role)
                have = self._composites(part.realm, live["id"], role.name)
                if not want <= have:
                    found.add(f"role {client.client_id}/{role.name}", "composites", sorted(want), sorted(have),
                              "set_roles", (client.client_id, role))

    def _observe_scope_mappings(self, part: IdentityPart, clients: dict[str, dict[str, Any]],
                                found: DiffBuilder) -> None:
        """Tenant tokens carry the tenant's roles: every client maps every role of every role owner.
        (A client that is missing gets all of them through its own difference.)"""
        realm = quote(part.realm)
        for owner_id, roles in _tenant_roles(part).items():
            if not roles:
                continue
            owner = clients.get(owner_id)
            # Planned roles too: one deleted behind our back is recreated and mapped in the same apply.
            names = {role.name for role in roles} | (set(self._client_roles(part.realm, owner["id"])) if owner
                                                     else set())
            for client in part.clients:
                live = clients.get(client.client_id)
                if live is None:
                    continue
                path = f"/{realm}/clients/{live['id']}/scope-mappings/clients/{owner['id']}" if owner else None
                have = {r["name"] for r in self._get(path, "reading scope mappings") or []} if path else set()
                if not names <= have:
                    found.add(f"client {client.client_id}", f"scope of {owner_id} roles", sorted(names),
                              sorted(have), "set_scope_mappings", (client.client_id, owner_id))

    def _observe_organization_representation(self, part: IdentityPart, org: dict[str, Any],
                                             found: DiffBuilder) -> None:
        desired = part.organization
        obj = f"organization {desired.alias}"
        if org.get("name") != desired.name:
            found.add(obj, "name", desired.name, org.get("name"), "set_organization")
        if bool(org.get("enabled")) != desired.enabled:
            found.add(obj, "enabled", desired.enabled, bool(org.get("enabled")), "set_organization")
        domains = sorted(d["name"] for d in org.get("domains") or [])
        if domains != sorted(desired.domains):
            found.add(obj, "domains", sorted(desired.domains), domains, "set_organization")
        attributes = org.get("attributes") or {}
        for key, values in desired.attributes.items():
            if sorted(attributes.get(key) or []) != sorted(values):
                found.add(obj, f"attribute {key}", sorted(values), sorted(attributes.get(key) or []),
                          "set_organization")

    def _observe_organization(self, part: IdentityPart, org: dict[str, Any], found: DiffBuilder) -> None:
        self._observe_organization_representation(part, org, found)
        desired = part.organization
        obj = f"organization {desired.alias}"
        attributes = org.get("attributes") or {}
        members = self._members(part.realm, org["id"])
        planned = {user.username for user in part.users}
        others = [m for m in members if m["username"] not in planned]
        if not desired.enabled and any(m.get("enabled") for m in others):
            found.add(obj, "other members", "disabled while suspended", "enabled", "set_member_suspension")
        if desired.enabled and attributes.get(SUSPENDED_MEMBERS_ATTRIBUTE):
            found.add(obj, "other members", "enabled again", "disabled by a suspension", "set_member_suspension")
        member_names = {m["username"] for m in members}
        for user in part.users:
            if user.username not in member_names:
                found.add(f"user {user.username}", f"member of {desired.alias}", True, False, "set_users", user)

    def _observe_users(self, part: IdentityPart, clients: dict[str, dict[str, Any]], org: dict[str, Any] | None,
                       found: DiffBuilder) -> None:
        api = clients.get(_api_client(part).client_id)
        for user in part.users:
            obj = f"user {user.username}"
            live = self._user(part.realm, user.username)
            if live is None:
                found.add(obj, "exists", True, False, "set_users", user)
                continue
            if bool(live.get("enabled")) != user.enabled:
                found.add(obj, "enabled", user.enabled, bool(live.get("enabled")), "set_users", user)
            if api is not None:
                have = self._user_client_roles(part.realm, live["id"], api["id"])
                missing = [r for r in user.realm_roles if r not in have]
                if missing:
                    found.add(obj, "roles", sorted(user.realm_roles), sorted(have), "set_users", user)

    # bulk observe (the drift sweep) -------------------------------------------
    def snapshot(self, parts: list[IdentityPart]) -> "KeycloakSnapshot":
        """The shared realm, its clients and its organizations. Paging all of them (a few calls per
        hundred tenants, but 7 s of Keycloak at 1,000) happens once every ``full_listing_seconds``;
        in between the previous listing is kept current from the realm's admin events (a client or
        organization an event names is read again, ours or not) and a tenant new to the sweep is
        looked up by its slug. A realm without admin events is paged every sweep. Dedicated realms
        are left to ``observe``."""
        realms = sorted({part.realm for part in parts if not part.owns_realm})
        snapshot = KeycloakSnapshot()
        for realm in realms:
            live = self._realm(realm)
            snapshot.realms[realm] = live
            if live is None:
                self._listings.pop(realm, None)
                continue
            events_on = bool(live.get("adminEventsEnabled"))
            listing = self._listings.get(realm)
            full = (not events_on or listing is None
                    or time.monotonic() - listing.listed_at >= self.full_listing_seconds)
            if full:
                started = time.monotonic()
                clients = self._list(f"/{quote(realm)}/clients", "listing clients")
                orgs = self._list(f"/{quote(realm)}/organizations", "listing organizations",
                                  briefRepresentation="false")
                listing = _RealmListing({c["id"]: c for c in clients}, {o["id"]: o for o in orgs}, started)
                self._listings[realm] = listing
            events = self._admin_events(realm) if events_on else []
            if not full:
                try:
                    self._follow(realm, listing, events, [p for p in parts if p.realm == realm])
                except BaseException:
                    del self._listings[realm]   # its events are read: list in full next time, miss nothing
                    raise
            snapshot.clients[realm] = {c["clientId"]: c for c in listing.clients.values()}
            snapshot.organizations[realm] = {o.get("alias"): o for o in listing.organizations.values()}
            aliases = [p.organization.alias for p in parts if p.realm == realm and p.organization is not None]
            snapshot.first[realm] = min(aliases, default="")
            if events:
                self._touched_since_last_sweep(realm, snapshot, events)
        return snapshot

    def _admin_events(self, realm: str) -> list[dict[str, Any]]:
        def read_page(since: int, first: int, size: int) -> list[dict[str, Any]]:
            return self._get(f"/{quote(realm)}/admin-events", "reading admin events", dateFrom=str(since),
                             direction="asc", first=str(first), max=str(size)) or []

        events = self.events.new_events(realm, read_page)
        if events and self._own_user is None:
            self._own_user = self._api.user_id()
        return events

    def _follow(self, realm: str, listing: "_RealmListing", events: list[dict[str, Any]],
                parts: list[IdentityPart]) -> None:
        """Bring the kept listing up to date: a tenant whose planned clients or organization it lacks
        is looked up by its slug (a new tenant, or one repaired since: 2 calls, once); a client or
        organization an admin event names is read again if the listing knows it (a change, a
        deletion) or someone else created it. Our own creations belong to tenants the lookup finds."""
        fresh: set[str] = set()
        by_client_id = {c["clientId"] for c in listing.clients.values()}
        by_alias = {o.get("alias") for o in listing.organizations.values()}
        for part in parts:
            if any(client.client_id not in by_client_id for client in part.clients):
                for client in self._tenant_clients(part).values():
                    listing.clients[client["id"]] = client
                    fresh.add(client["id"])
            if part.organization is not None and part.organization.alias not in by_alias:
                found = self._get(f"/{quote(realm)}/organizations", "looking up the organization",
                                  q=f"slug:{part.organization.alias}", briefRepresentation="false") or []
                for org in found:
                    if org.get("alias") == part.organization.alias:
                        listing.organizations[org["id"]] = org
                        fresh.add(org["id"])
        stale: set[tuple[str, str]] = set()   # (kind, id), kind "clients" or "organizations"
        for event in events:
            path = (event.get("resourcePath") or "").split("/")
            if len(path) < 2 or path[0] not in ("clients", "organizations") or path[1] in fresh:
                continue
            known = path[1] in listing.clients or path[1] in listing.organizations
            if known or not self.events.ours(event, self._own_user, None):
                stale.add((path[0], path[1]))
        for kind, uuid in sorted(stale):
            kept = listing.clients if kind == "clients" else listing.organizations
            current = self._get(f"/{quote(realm)}/{kind}/{quote(uuid)}", f"reading one of the {kind}")
            if current is None:
                kept.pop(uuid, None)
            else:
                kept[uuid] = current

    def _touched_since_last_sweep(self, realm: str, snapshot: "KeycloakSnapshot",
                                  events: list[dict[str, Any]]) -> None:
        """What someone other than this operator changed in ``realm`` since the previous sweep,
        from the realm's admin events: one or a few calls per sweep, however many tenants."""
        clients = {c["id"]: cid for cid, c in snapshot.clients.get(realm, {}).items()}
        tenants = {c["id"]: (c.get("attributes") or {}).get(TENANT_ATTRIBUTE)
                   for c in snapshot.clients.get(realm, {}).values()}
        orgs = {o.get("id"): alias for alias, o in snapshot.organizations.get(realm, {}).items()}
        touched = snapshot.touched.setdefault(realm, set())
        users: dict[str, str] | None = None
        for event in events:
            parts = (event.get("resourcePath") or "").split("/")
            found: set[tuple[str, str]] = set()
            slug: str | None = None
            if parts[0] == "clients" and len(parts) > 1:
                if parts[1] in clients:                  # not listed: deleted, the snapshot shows that
                    found.add(("client", clients[parts[1]]))
                    slug = tenants.get(parts[1])
            elif parts[0] == "organizations" and len(parts) > 1:
                if parts[1] in orgs:
                    found.add(("org", orgs[parts[1]]))
                    slug = orgs[parts[1]]
            elif parts[0] == "users" and len(parts) > 1:
                if users is None:
                    users = {u["id"]: u["username"] for u in self._list(
                        f"/{quote(realm)}/users", "listing users", briefRepresentation="true")}
                    snapshot.usernames[realm] = set(users.values())
                if parts[1] in users:
                    found.add(("user", users[parts[1]]))
                if len(parts) > 4 and parts[2] == "role-mappings" and parts[3] == "clients" and parts[4] in clients:
                    found.add(("client", clients[parts[4]]))
                # a deleted user is not listed: observe_from finds planned users missing from the listing
            elif parts[0] == "roles-by-id" and len(parts) > 1:
                role = self._get(f"/{quote(realm)}/roles-by-id/{quote(parts[1])}", "reading a role")
                if role and role.get("clientRole") and role.get("containerId") in clients:
                    found.add(("client", clients[role["containerId"]]))
                    slug = tenants.get(role["containerId"])
                else:
                    found.add(("realm", ""))
            elif parts[0] in ("authentication", "roles", "client-scopes", "default-default-client-scopes"):
                found.add(("realm", ""))
            if found and not self.events.ours(event, self._own_user, slug):
                touched |= found
            elif not found and not self.events.ours(event, self._own_user, None):
                self.events.unattributed += 1

    def observe_from(self, snapshot: "KeycloakSnapshot", part: IdentityPart,
                     credentials: Mapping[str, str] | None = None) -> Diff | None:
        """``observe`` from the snapshot for what a client's and an organization's representation
        show (realm settings, clients with their fields, attributes and mappers, clients to delete,
        the organization with its name, domains and attributes). Roles, scope mappings, default
        scopes, client secrets, members and the MFA flow need calls per tenant: the full observe
        of a change, a repair or the rotating audit checks them. None: not answerable from the
        snapshot (a dedicated realm)."""
        if part.owns_realm or part.realm not in snapshot.realms:
            return None
        realm = snapshot.realms[part.realm]
        if realm is None:
            return self.observe_missing_realm(part)
        touched = snapshot.touched.get(part.realm, set())
        if touched and (touched & self._keys(part) or (("realm", "") in touched and self._first(snapshot, part))):
            return None   # changed behind our back (admin events): roles, mappings, members need the full observe
        usernames = snapshot.usernames.get(part.realm)
        if usernames is not None and any(user.username not in usernames for user in part.users):
            return None
        found = DiffBuilder()
        for key in settings_drift(part.realm_settings, realm):
            found.add(f"realm {part.realm}", key, part.realm_settings[key], realm.get(key), "set_realm")
        slug = tenant_slug(part)
        every = snapshot.clients.get(part.realm, {})
        tagged = snapshot.tagged(part.realm, slug)
        for client in part.clients:
            live = every.get(client.client_id)
            if live is None:
                self._observe_missing_client(part, client, found)
                continue
            self._observe_client_representation(part, client, live, found)
        for client_id in sorted(set(tagged) - {c.client_id for c in part.clients}):
            found.add(f"client {client_id}", "exists", False, True, "delete_client", tagged[client_id])
        if part.organization is not None:
            org = snapshot.organizations.get(part.realm, {}).get(part.organization.alias)
            if org is None:
                return None   # not ours by alias in the listing: the full observe looks for one to adopt
            self._observe_organization_representation(part, org, found)
        return found.diff()

    @staticmethod
    def _keys(part: IdentityPart) -> set[tuple[str, str]]:
        keys = {("client", client.client_id) for client in part.clients}
        keys |= {("user", user.username) for user in part.users}
        if part.organization is not None:
            keys.add(("org", part.organization.alias))
        return keys

    @staticmethod
    def _first(snapshot: "KeycloakSnapshot", part: IdentityPart) -> bool:
        """Whether ``part`` is the one tenant whose full observe checks a realm-wide change (the
        MFA flow, shared roles): the lowest organization alias of the sweep's tenants."""
        return part.organization is not None and part.organization.alias == snapshot.first.get(part.realm)

    def observe_missing_realm(self, part: IdentityPart) -> Diff:
        found = DiffBuilder()
        found.add(f"realm {part.realm}", "exists", True, False, "set_realm")
        return found.diff()

    # apply --------------------------------------------------------------------------
    def apply(self, part: IdentityPart, diff: Diff, credentials: Mapping[str, str]) -> list[str]:
        """Realm settings and clients get exactly the attributes the diff names; the other areas
        (MFA flow, roles, scope mappings, organization, users, members) are each converged once,
        however many of their differences the diff lists."""
        done: set[tuple[str, str]] = set()

        def once(run):
            def handler(difference: Difference) -> str | None:
                key = (difference.action, difference.object if difference.action in PER_OBJECT else "")
                if key in done:
                    return None
                done.add(key)
                same = [d for d in diff if (d.action, d.object if d.action in PER_OBJECT else "") == key]
                actions: list[str] = []
                run(difference, same, actions)
                return "; ".join(actions) or None
            return handler

        # New clients (all of a new municipality's) are created with their roles in one partial
        # import instead of ~8 Admin API calls each; the per-client path below is the fallback.
        new_clients = [d.payload for d in diff if d.action == "set_client" and d.attribute == "exists"]
        imported: set[str] = set()

        def import_new(difference: Difference, same: list[Difference], actions: list[str]) -> None:
            if difference.attribute == "exists" and len(new_clients) > 1 and not done & {("import", "")}:
                done.add(("import", ""))
                imported.update(self._import_clients(part, new_clients, credentials, actions))
            if difference.payload.client_id not in imported:
                self._apply_client(part, difference.payload, same, credentials, actions)

        def roles(difference: Difference, same: list[Difference], actions: list[str]) -> None:
            rest = [d for d in same if not (d.payload[1] is None and d.payload[0] in imported)]
            if rest:
                self._apply_roles(part, rest, actions)

        handlers = {
            "set_realm": once(lambda d, same, actions: self._apply_realm(part, same, actions)),
            "set_mfa": once(lambda d, same, actions: self._apply_mfa(part, same, actions)),
            "set_client": once(import_new),
            "delete_client": once(lambda d, same, actions: self._delete_client(part, d.payload, actions)),
            "set_roles": once(roles),
            "set_scope_mappings": once(lambda d, same, actions: self._apply_scope_mappings(part, same, actions)),
            "set_organization": once(lambda d, same, actions: self._apply_organization(part, same, actions)),
            "set_users": once(lambda d, same, actions: self._apply_users(part, same, actions)),
            "set_member_suspension": once(lambda d, same, actions: self._apply_member_suspension(
                part, self._org(part), actions)),
            "set_gov_hub_access": once(lambda d, same, actions: self._apply_gov_hub(part, d.payload, actions)),
        }
        # Areas depend on each other (roles on their client, memberships on the organization): phase order.
        phases = list(handlers)
        ordered = sorted(diff, key=lambda d: phases.index(d.action) if d.action in phases else len(phases))
        started = int(time.time() * 1000)
        try:
            return dispatch(BACKEND, handlers, Diff(tuple(ordered)))
        finally:
            self.events.wrote(tenant_slug(part), started, int(time.time() * 1000))

    def _import_clients(self, part: IdentityPart, clients: list[KeycloakClient], credentials: Mapping[str, str],
                        actions: list[str]) -> set[str]:
        """Create ``clients`` with their mappers, secrets, default scopes and roles (composites
        included) in one partial import; the client ids created. Nothing when any of them exists
        already (the import then fails as a whole and changes nothing): the per-client path adopts
        or refuses each one as before."""
        realm = quote(part.realm)
        defaults = {s["name"] for s in self._get(f"/{realm}/default-default-client-scopes",
                                                  "reading the realm's default client scopes") or []}
        optional = {s["name"] for s in self._get(f"/{realm}/default-optional-client-scopes",
                                                  "reading the realm's optional client scopes") or []}
        roles = _tenant_roles(part)
        body_clients, client_roles = [], {}
        for client in clients:
            body = client_representation(part, client, self.hub_url) | {
                "protocolMappers": [{"name": n} | m for n, m in protocol_mappers(part, client).items()],
                "defaultClientScopes": sorted(defaults | set(client.default_scopes)),
                "optionalClientScopes": sorted(optional - defaults - set(client.default_scopes))}
            secret = _client_secret(client, credentials)
            if secret:
                body["secret"] = secret
            body_clients.append(body)
            if roles.get(client.client_id):
                client_roles[client.client_id] = [self._role_import(part, client.client_id, role)
                                                  for role in roles[client.client_id]]
        response = self._call("POST", f"/{realm}/partialImport",
                              f"creating clients {', '.join(c.client_id for c in clients)}", ok=(409,),
                              json={"ifResourceExists": "FAIL", "clients": body_clients,
                                    "roles": {"client": client_roles}})
        if response.status_code == 409:
            return set()
        actions.append(f"created clients {', '.join(c.client_id for c in clients)} with their roles (one import)")
        return {c.client_id for c in clients}

    @staticmethod
    def _role_import(part: IdentityPart, client_id: str, role: KeycloakRole) -> dict[str, Any]:
        composites = _composites_of(part, role)
        body: dict[str, Any] = {"name": role.name, "description": role.description}
        if composites:
            body["composite"] = True
            body["composites"] = {key: value for key, value in (
                ("realm", sorted(composites & {MFA_MARKER_ROLE})),
                ("client", {client_id: sorted(composites - {MFA_MARKER_ROLE})} if composites - {MFA_MARKER_ROLE}
                 else {})) if value}
        return body

    def _uuids(self, part: IdentityPart) -> dict[str, str]:
        uuids = {client_id: live["id"] for client_id, live in self._tenant_clients(part).items()}
        missing = [c.client_id for c in part.clients if c.client_id not in uuids]
        if missing:
            raise RuntimeError(f"clients {', '.join(missing)} are not in realm {part.realm} yet; the next "
                               f"reconcile creates them")
        return uuids

    def _org(self, part: IdentityPart) -> dict[str, Any] | None:
        if part.organization is None:
            return None
        org = self._organization(part)
        if org is None:
            raise RuntimeError(f"organization {part.organization.alias} is not in realm {part.realm} yet; the "
                               f"next reconcile creates it")
        return org

    def _delete_client(self, part: IdentityPart, live: dict[str, Any], actions: list[str]) -> None:
        self._call("DELETE", f"/{quote(part.realm)}/clients/{live['id']}", f"deleting client {live['clientId']}",
                   ok=(404,))
        actions.append(f"deleted client {live['clientId']} (no longer in the plan)")

    def _apply_realm(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        if any(d.attribute == "exists" for d in differences):
            self._call("POST", "", f"creating realm {part.realm}", ok=(409,),
                       json=self._realm_body(part, part.realm_settings))
            actions.append(f"created realm {part.realm}")
            return
        drifted = [d.attribute for d in differences]
        self._call("PUT", f"/{quote(part.realm)}", f"updating realm {part.realm}",
                   json=self._realm_body(part, drifted) | {"realm": part.realm})
        actions.append(f"set realm {part.realm} {', '.join(drifted)}")

    def _apply_mfa(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        realm = quote(part.realm)
        objects = {d.object for d in differences}
        if f"realm role {MFA_MARKER_ROLE}" in objects:
            self._call("POST", f"/{realm}/roles", "creating the MFA role", ok=(409,), json={
                "name": MFA_MARKER_ROLE,
                "description": "Marker: holders must use a second factor (Urban Stack gov roles include it)."})
            actions.append(f"created realm role {MFA_MARKER_ROLE}")
        if f"flow {BROWSER_FLOW}" in objects:
            self._build_mfa_flow(part.realm)   # adds only the steps that are missing
            actions.append(f"built browser flow {BROWSER_FLOW!r} (OTP for gov roles)")
        if f"realm {part.realm}" in objects:
            self._call("PUT", f"/{realm}", "binding the browser flow", json={"realm": part.realm,
                                                                          "browserFlow": BROWSER_FLOW})
            actions.append(f"bound browser flow {BROWSER_FLOW!r}")

    def _executions(self, realm: str, flow: str) -> list[dict[str, Any]]:
        return self._get(f"/{quote(realm)}/authentication/flows/{quote(flow)}/executions",
                         f"reading flow {flow}") or []

    def _mfa_flow_complete(self, realm: str) -> bool:
        executions = self._executions(realm, BROWSER_FLOW)
        names = {(e.get("displayName"), e.get("requirement")) for e in executions}
        inside = False
        providers = set()
        for execution in executions:
            if execution.get("displayName") == GOV_MFA_FLOW:
                inside = True
                level = execution["level"]
                continue
            if inside:
                if execution["level"] <= level:
                    break
                providers.add((execution.get("providerId"), execution.get("requirement")))
        return ((GOV_MFA_FLOW, "CONDITIONAL") in names
                and {("conditional-user-role", "REQUIRED"), ("auth-otp-form", "REQUIRED")} <= providers)

    def _build_mfa_flow(self, realm: str) -> None:
        """A copy of Keycloak's browser flow whose forms end in "gov role → OTP required";
        the built-in optional 2FA step is skipped for gov roles so nobody is asked twice."""
        base = f"/{quote(realm)}/authentication"
        if not self._executions(realm, BROWSER_FLOW):
            self._call("POST", f"{base}/flows/browser/copy", "copying the browser flow", ok=(409,),
                       json={"newName": BROWSER_FLOW})
        executions = self._executions(realm, BROWSER_FLOW)
        forms = next(e for e in executions if e.get("authenticationFlow") and e["level"] == 0
                     and e["displayName"].endswith("forms"))["displayName"]
        optional_2fa = next((e for e in executions if e.get("authenticationFlow") and e["level"] == 1
                             and "Conditional 2FA" in e["displayName"]), None)
        if optional_2fa and not any(e.get("alias") == "urbanstack not gov" for e in executions):
            self._add_role_condition(realm, optional_2fa["displayName"], "urbanstack not gov", negate=True)
        if not any(e.get("displayName") == GOV_MFA_FLOW for e in executions):
            self._call("POST", f"{base}/flows/{quote(forms)}/executions/flow", "adding the gov MFA step", ok=(409,),
                       json={"alias": GOV_MFA_FLOW, "type": "basic-flow", "provider": "registration-page-form",
                             "description": "Gov roles must present a second factor."})
        gov = next(e for e in self._executions(realm, BROWSER_FLOW) if e.get("displayName") == GOV_MFA_FLOW)
        self._set_requirement(realm, forms, gov, "CONDITIONAL")
        inner = self._executions(realm, GOV_MFA_FLOW)
        if not any(e.get("providerId") == "conditional-user-role" for e in inner):
            self._add_role_condition(realm, GOV_MFA_FLOW, "urbanstack gov", negate=False)
        if not any(e.get("providerId") == "auth-otp-form" for e in inner):
            self._call("POST", f"{base}/flows/{quote(GOV_MFA_FLOW)}/executions/execution", "adding the OTP form",
                       json={"provider": "auth-otp-form"})
        for execution in self._executions(realm, GOV_MFA_FLOW):
            if execution.get("providerId") in ("conditional-user-role", "auth-otp-form"):
                self._set_requirement(realm, GOV_MFA_FLOW, execution, "REQUIRED")

    def _add_role_condition(self, realm: str, flow: str, alias: str, *, negate: bool) -> None:
        base = f"/{quote(realm)}/authentication"
        response = self._call("POST", f"{base}/flows/{quote(flow)}/executions/execution",
                              f"adding a role condition to {flow}", json={"provider": "conditional-user-role"})
        execution_id = response.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        execution = next(e for e in self._executions(realm, flow) if e["id"] == execution_id)
        self._set_requirement(realm, flow, execution, "REQUIRED")
        self._call("POST", f"{base}/executions/{execution_id}/config", f"configuring the role condition in {flow}",
                   json={"alias": alias, "config": {"condUserRole": MFA_MARKER_ROLE, "negate": str(negate).lower()}})

    def _set_requirement(self, realm: str, flow: str, execution: dict[str, Any], requirement: str) -> None:
        if execution.get("requirement") != requirement:
            self._call("PUT", f"/{quote(realm)}/authentication/flows/{quote(flow)}/executions",
                       f"setting a step of {flow} to {requirement}", json=execution | {"requirement": requirement})

    def _apply_client(self, part: IdentityPart, client: KeycloakClient, differences: list[Difference],
                      credentials: Mapping[str, str], actions: list[str]) -> None:
        realm = quote(part.realm)
        desired = client_representation(part, client, self.hub_url)
        attributes = [d.attribute for d in differences]
        secret = _client_secret(client, credentials)
        if "exists" in attributes:
            body = desired | {"protocolMappers": [{"name": n} | m for n, m in protocol_mappers(part, client).items()]}
            if secret:
                body["secret"] = secret
            self._call("POST", f"/{realm}/clients", f"creating client {client.client_id}", ok=(409,), json=body)
            live = self._client(part.realm, client.client_id)
            if live is None:
                raise BackendUnavailable(BACKEND, f"client {client.client_id} not readable right after creation")
            owner = (live.get("attributes") or {}).get(TENANT_ATTRIBUTE)
            if owner not in (None, tenant_slug(part)):  # another tenant created it in the meantime
                raise Conflict(f"client {client.client_id} in realm {part.realm} belongs to municipality "
                               f"{owner!r}; rename or delete it before this municipality can use the name")
            actions.append(f"created client {client.client_id}")
            self._apply_default_scopes(part, client, live["id"], client.default_scopes, actions)
            return
        # Ours, or one of the expected name without an owner that observe found to adopt.
        live = self._tenant_clients(part).get(client.client_id) or self._client(part.realm, client.client_id)
        if live is None:
            raise RuntimeError(f"client {client.client_id} disappeared from realm {part.realm} while it was "
                               f"repaired; the next reconcile creates it")
        changed = [a for a in attributes if a in _CLIENT_FIELDS or a.startswith("attribute ")]
        if changed:
            update = desired | {"attributes": (live.get("attributes") or {}) | desired["attributes"]}
            self._call("PUT", f"/{realm}/clients/{live['id']}", f"updating client {client.client_id}", json=update)
            actions.append(f"set client {client.client_id} {', '.join(changed)}")
        mappers = [a.removeprefix("mapper ") for a in attributes if a.startswith("mapper ")]
        if mappers:
            self._apply_mappers(part, client, live, mappers, actions)
        scopes = [a.removeprefix("default scope ") for a in attributes if a.startswith("default scope ")]
        if scopes:
            self._apply_default_scopes(part, client, live["id"], scopes, actions)
        if "secret" in attributes:
            self._call("PUT", f"/{realm}/clients/{live['id']}", f"setting the secret of {client.client_id}",
                       json={"clientId": client.client_id, "secret": secret})
            actions.append(f"set the secret of client {client.client_id} from the tenant Secret")

    def _apply_mappers(self, part: IdentityPart, client: KeycloakClient, live: dict[str, Any], names: list[str],
                       actions: list[str]) -> None:
        """Add the named mappers, or put back their configuration."""
        base = f"/{quote(part.realm)}/clients/{live['id']}/protocol-mappers/models"
        have = {m["name"]: m for m in live.get("protocolMappers") or []}
        planned = protocol_mappers(part, client)
        for name in names:
            mapper, current = planned[name], have.get(name)
            if current is None:
                self._call("POST", base, f"adding mapper {name} to {client.client_id}", ok=(409,),
                           json={"name": name} | mapper)
                actions.append(f"added mapper {name!r} to client {client.client_id}")
            else:
                self._call("PUT", f"{base}/{current['id']}", f"updating mapper {name} of {client.client_id}",
                           json=current | {"config": (current.get("config") or {}) | mapper["config"]})
                actions.append(f"repaired mapper {name!r} of client {client.client_id}")

    def _apply_default_scopes(self, part: IdentityPart, client: KeycloakClient, uuid: str,
                              missing: tuple[str, ...] | list[str], actions: list[str]) -> None:
        if not missing:
            return
        realm = quote(part.realm)
        scopes = {s["name"]: s["id"] for s in self._get(f"/{realm}/client-scopes", "listing client scopes") or []}
        for scope in missing:
            if scope not in scopes:
                raise RuntimeError(f"realm {part.realm} has no client scope {scope!r}; enable organizations in the "
                                   f"realm (organizationsEnabled) or remove the scope from the plan")
            # A scope is either default or optional for a client; Keycloak makes new clients' organization optional.
            self._call("DELETE", f"/{realm}/clients/{uuid}/optional-client-scopes/{scopes[scope]}",
                       f"unsetting optional scope {scope}", ok=(404,))
            self._call("PUT", f"/{realm}/clients/{uuid}/default-client-scopes/{scopes[scope]}",
                       f"adding default scope {scope} to {client.client_id}", ok=(409,))
            actions.append(f"made {scope!r} a default scope of client {client.client_id}")

    def _apply_roles(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        """Create the missing roles (all of a new client's), then add the composites they lack."""
        realm = quote(part.realm)
        uuids = self._uuids(part)
        todo: list[tuple[str, KeycloakRole, set[str] | None]] = []   # (client, role, its composites; None: new)
        for difference in differences:
            client_id, role = difference.payload
            if role is None:
                todo += [(client_id, r, None) for r in _tenant_roles(part)[client_id]]
            else:
                todo.append((client_id, role, set(difference.found) if difference.attribute == "composites"
                             else None))
        for client_id, role, have in todo:
            if have is None:
                self._call("POST", f"/{realm}/clients/{uuids[client_id]}/roles", f"creating role {role.name}",
                           ok=(409,), json={"name": role.name, "description": role.description})
                actions.append(f"created role {client_id}/{role.name}")
        marker = None
        for client_id, role, have in todo:
            missing = sorted(_composites_of(part, role) - (have or set()))
            if not missing:
                continue
            roles = self._client_roles(part.realm, uuids[client_id])
            if MFA_MARKER_ROLE in missing:
                marker = marker or self._get(f"/{realm}/roles/{MFA_MARKER_ROLE}", "reading the MFA role")
            reps = [marker if name == MFA_MARKER_ROLE else roles[name] for name in missing]
            self._call("POST", f"/{realm}/clients/{uuids[client_id]}/roles/{quote(role.name)}/composites",
                       f"adding composites to role {role.name}",
                       json=[{"id": r["id"], "name": r["name"]} for r in reps])
            actions.append(f"role {client_id}/{role.name} includes {', '.join(missing)}")

    def _apply_scope_mappings(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        """Tenant clients carry exactly the tenant's roles in their tokens (fullScopeAllowed is off):
        map the roles the diff names as missing (all roles, for a new client)."""
        realm = quote(part.realm)
        uuids = self._uuids(part)
        owners = [client_id for client_id, roles in _tenant_roles(part).items() if roles]
        owner_roles: dict[str, dict[str, dict[str, Any]]] = {}   # read once per owner, not once per client
        for difference in differences:
            client_id, owner = difference.payload
            for owner_id in [owner] if owner else owners:
                have = set(difference.found) if owner else set()
                if owner_id not in owner_roles:
                    owner_roles[owner_id] = self._client_roles(part.realm, uuids[owner_id])
                wanted = [r for name, r in owner_roles[owner_id].items() if name not in have]
                if wanted:
                    self._call("POST", f"/{realm}/clients/{uuids[client_id]}/scope-mappings/clients/"
                               f"{uuids[owner_id]}", f"mapping {owner_id} roles into {client_id} tokens",
                               json=[{"id": r["id"], "name": r["name"]} for r in wanted])
                    actions.append(f"client {client_id} tokens carry {owner_id} roles")

    def _apply_organization(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        desired = part.organization
        realm = quote(part.realm)
        body = {"alias": desired.alias, "name": desired.name, "enabled": desired.enabled,
                "domains": [{"name": domain} for domain in desired.domains],
                "attributes": {key: list(values) for key, values in desired.attributes.items()}}
        org = None
        if any(d.attribute == "exists" for d in differences):
            response = self._call("POST", f"/{realm}/organizations", f"creating organization {desired.alias}",
                                  ok=(409,), json=body)
            if response.status_code != 409:
                actions.append(f"created organization {desired.alias}")
                return
            # Ours by alias, but found neither by our slug nor by our name: adopted and updated below.
            org = self._organization_by_alias(part)
            if org is None:
                raise Conflict(f"organization {desired.alias} cannot be created in realm {part.realm}: "
                               f"{_error_text(response)}; another organization uses this name or a domain "
                               f"({', '.join(desired.domains) or 'none'})")
        org = org or self._org(part)
        update = org | body | {"id": org["id"], "attributes": (org.get("attributes") or {}) | body["attributes"]}
        self._call("PUT", f"/{realm}/organizations/{org['id']}", f"updating organization {desired.alias}",
                   json=update)
        actions.append(f"set organization {desired.alias} {', '.join(d.attribute for d in differences)}")

    def _apply_users(self, part: IdentityPart, differences: list[Difference], actions: list[str]) -> None:
        """Per user exactly what the diff names: create, enable or disable, membership, missing roles."""
        realm = quote(part.realm)
        api = _api_client(part)
        uuids = self._uuids(part)
        api_roles = self._client_roles(part.realm, uuids[api.client_id])
        org = self._org(part)
        users: dict[str, list[Difference]] = {}
        for difference in differences:
            users.setdefault(difference.payload.username, []).append(difference)
        for found in users.values():
            user = found[0].payload
            attributes = {d.attribute: d for d in found}
            new = "exists" in attributes
            if new:
                self._call("POST", f"/{realm}/users", f"creating user {user.username}", ok=(409,), json={
                    "username": user.username, "email": user.email, "enabled": user.enabled,
                    "requiredActions": list(user.required_actions)})
                actions.append(f"created user {user.username}")
            live = self._user(part.realm, user.username)
            if live is None:
                if new:
                    raise Conflict(f"user {user.username} cannot be created in realm {part.realm}: another user "
                                   f"has this email address")
                raise RuntimeError(f"user {user.username} disappeared from realm {part.realm} while it was "
                                   f"repaired; the next reconcile creates it")
            if "enabled" in attributes:
                self._call("PUT", f"/{realm}/users/{live['id']}", f"updating user {user.username}",
                           json={"enabled": user.enabled})
                actions.append(f"{'enabled' if user.enabled else 'disabled'} user {user.username}")
            if org is not None and (new or f"member of {org['alias']}" in attributes):
                self._call("POST", f"/{realm}/organizations/{org['id']}/members",
                           f"adding {user.username} to organization {org['alias']}", ok=(409,), json=live["id"])
                actions.append(f"added {user.username} to organization {org['alias']}")
            have = set() if new else set(attributes["roles"].found) if "roles" in attributes else None
            if have is None:
                continue
            missing = [name for name in user.realm_roles if name not in have]
            unknown = [name for name in missing if name not in api_roles]
            if unknown:
                raise RuntimeError(f"user {user.username} should get roles {unknown}, which the plan does not "
                                   f"define (it defines {sorted(api_roles)})")
            if missing:
                self._call("POST", f"/{realm}/users/{live['id']}/role-mappings/clients/{uuids[api.client_id]}",
                           f"granting roles to {user.username}",
                           json=[{"id": api_roles[n]["id"], "name": n} for n in missing])
                actions.append(f"granted {', '.join(missing)} to {user.username}")

    def _apply_gov_hub(self, part: IdentityPart, account_id: str, actions: list[str]) -> None:
        management = self._client(ADMIN_REALM, f"{part.realm}-realm")
        if management is None:
            raise RuntimeError(f"realm {part.realm} has no management client {part.realm}-realm in "
                               f"{ADMIN_REALM!r} yet; the next reconcile grants the Gov Hub access")
        have = self._user_client_roles(ADMIN_REALM, account_id, management["id"])
        roles = self._client_roles(ADMIN_REALM, management["id"])
        missing = [name for name in gov_hub_roles(part) if name not in have]
        if missing:
            self._call("POST", f"/{ADMIN_REALM}/users/{account_id}/role-mappings/clients/{management['id']}",
                       f"granting the Gov Hub access to realm {part.realm}",
                       json=[{"id": roles[n]["id"], "name": n} for n in missing])
            actions.append(f"granted the Gov Hub {', '.join(missing)} in realm {part.realm}")

    def _apply_member_suspension(self, part: IdentityPart, org: dict[str, Any], actions: list[str]) -> None:
        """Members other than the plan's users: disabled while the tenant is suspended, enabled again after."""
        if part.organization.enabled:
            self._resume_members(part, org, actions)
        else:
            self._suspend_members(part, org, actions)

    def _suspend_members(self, part: IdentityPart, org: dict[str, Any], actions: list[str]) -> None:
        realm = quote(part.realm)
        planned = {user.username for user in part.users}
        suspended = list((org.get("attributes") or {}).get(SUSPENDED_MEMBERS_ATTRIBUTE) or [])
        newly = []
        for member in self._members(part.realm, org["id"]):
            if member["username"] in planned or not member.get("enabled"):
                continue
            # Someone who also works for another municipality keeps that access.
            orgs = self._get(f"/{realm}/organizations/members/{member['id']}/organizations",
                             "reading a member's organizations") or []
            if len(orgs) > 1:
                continue
            newly.append(member["id"])
        if not newly:
            return
        # Record first: a crash in between must not leave members disabled with no record of why.
        self._set_org_attribute(part, org, SUSPENDED_MEMBERS_ATTRIBUTE, sorted(set(suspended) | set(newly)))
        for user_id in newly:
            self._call("PUT", f"/{realm}/users/{user_id}", "disabling a member", ok=(404,), json={"enabled": False})
        actions.append(f"disabled {len(newly)} members of organization {org['alias']}")

    def _resume_members(self, part: IdentityPart, org: dict[str, Any], actions: list[str]) -> None:
        realm = quote(part.realm)
        suspended = (org.get("attributes") or {}).get(SUSPENDED_MEMBERS_ATTRIBUTE) or []
        if not suspended:
            return
        for user_id in suspended:
            self._call("PUT", f"/{realm}/users/{user_id}", "enabling a member", ok=(404,), json={"enabled": True})
        self._set_org_attribute(part, org, SUSPENDED_MEMBERS_ATTRIBUTE, [])
        actions.append(f"enabled {len(suspended)} members of organization {org['alias']} again")

    def _set_org_attribute(self, part: IdentityPart, org: dict[str, Any], key: str, values: list[str]) -> None:
        attributes = dict(org.get("attributes") or {})
        if values:
            attributes[key] = values
        else:
            attributes.pop(key, None)
        self._call("PUT", f"/{quote(part.realm)}/organizations/{org['id']}", f"updating organization {org['alias']}",
                   json=org | {"attributes": attributes})
        org["attributes"] = attributes

    # delete -------------------------------------------------------------------------
    def delete(self, part: IdentityPart, *, keep_data: bool) -> list[str]:
        if part.owns_realm:
            return self._delete_realm(part, keep_data=keep_data)
        if self._realm(part.realm) is None:
            return []
        return self._retire_tenant(part) if keep_data else self._remove_tenant(part)

    def _delete_realm(self, part: IdentityPart, *, keep_data: bool) -> list[str]:
        realm = self._realm(part.realm)
        if realm is None:
            return []
        if not keep_data:
            self._call("DELETE", f"/{quote(part.realm)}", f"deleting realm {part.realm}", ok=(404,))
            return [f"deleted realm {part.realm}"]
        actions = self._disable_clients(part)
        if realm.get("enabled"):
            self._call("PUT", f"/{quote(part.realm)}", f"disabling realm {part.realm}",
                       json={"realm": part.realm, "enabled": False})
            actions.append(f"disabled realm {part.realm} (its data is kept)")
        return actions

    def _disable_clients(self, part: IdentityPart) -> list[str]:
        actions = []
        for client_id, live in self._tenant_clients(part).items():
            if live.get("enabled"):
                self._call("PUT", f"/{quote(part.realm)}/clients/{live['id']}", f"disabling client {client_id}",
                           ok=(404,), json={"clientId": client_id, "enabled": False})
                actions.append(f"disabled client {client_id}")
        return actions

    def _retire_tenant(self, part: IdentityPart) -> list[str]:
        """Retain: nobody of the tenant can sign in any more; organization, users, roles stay."""
        actions = self._disable_clients(part)
        for user in part.users:
            live = self._user(part.realm, user.username)
            if live is not None and live.get("enabled"):
                self._call("PUT", f"/{quote(part.realm)}/users/{live['id']}", f"disabling user {user.username}",
                           ok=(404,), json={"enabled": False})
                actions.append(f"disabled user {user.username}")
        org = self._organization(part)
        if org is not None:
            self._suspend_members(part, org, actions)
            if org.get("enabled"):
                self._call("PUT", f"/{quote(part.realm)}/organizations/{org['id']}",
                           f"disabling organization {org['alias']}", json=org | {"enabled": False})
                actions.append(f"disabled organization {org['alias']} (its data is kept)")
        return actions

    def _remove_tenant(self, part: IdentityPart) -> list[str]:
        realm = quote(part.realm)
        actions = []
        for client_id, live in self._tenant_clients(part).items():
            self._call("DELETE", f"/{realm}/clients/{live['id']}", f"deleting client {client_id}", ok=(404,))
            actions.append(f"deleted client {client_id} and its roles")
        org = self._organization(part)
        usernames = {user.username for user in part.users}
        if org is not None:
            for member in self._members(part.realm, org["id"]):
                orgs = self._get(f"/{realm}/organizations/members/{member['id']}/organizations",
                                 "reading a member's organizations") or []
                if len(orgs) <= 1:
                    self._call("DELETE", f"/{realm}/users/{member['id']}", f"deleting user {member['username']}",
                               ok=(404,))
                    actions.append(f"deleted user {member['username']}")
                usernames.discard(member["username"])
            self._call("DELETE", f"/{realm}/organizations/{org['id']}", f"deleting organization {org['alias']}",
                       ok=(404,))
            actions.append(f"deleted organization {org['alias']}")
        # Planned users who were no (longer a) member: ours only if they belong to no organization.
        for username in sorted(usernames):
            live = self._user(part.realm, username)
            if live is None:
                continue
            orgs = self._get(f"/{realm}/organizations/members/{live['id']}/organizations",
                             "reading a user's organizations") or []
            if not orgs:
                self._call("DELETE", f"/{realm}/users/{live['id']}", f"deleting user {username}", ok=(404,))
                actions.append(f"deleted user {username}")
        return actions

    # endpoints ----------------------------------------------------------------------
    def endpoints(self, part: IdentityPart) -> dict[str, str]:
        issuer = f"{self.server_url}/realms/{quote(part.realm)}"
        endpoints = {
            "issuer": issuer,
            "openidConfiguration": f"{issuer}/.well-known/openid-configuration",
            "jwks": f"{issuer}/protocol/openid-connect/certs",
            "token": f"{issuer}/protocol/openid-connect/token",
            "accountConsole": f"{issuer}/account",
        }
        if part.owns_realm:
            endpoints["adminConsole"] = f"{self.server_url}/admin/{quote(part.realm)}/console/"
        return endpoints

    def close(self) -> None:
        self._api.close()
