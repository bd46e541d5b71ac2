"""Who is calling: Keycloak access tokens in, a :class:`Principal` out.

A token is accepted only if all of this holds:

- it is a JWS signed with RS256 (``none`` and HMAC are refused before any key is looked up);
- its issuer is one of the platform's realms under the configured Keycloak URL: a
  shared realm (``urbanstack`` by default) or a dedicated ``muni-<slug>`` realm. The
  JWKS URL is derived from that allow-listed issuer, never fetched from a URL a token names;
- the signature verifies with a key from the issuer's JWKS (cached per issuer, fetched
  again when a token names an unknown ``kid``, at most once per ``refresh_interval``);
- ``exp`` is in the future and ``nbf``/``iat`` not in the future, with a small leeway
  (``iat`` is required: Keycloak always sets it);
- the audience contains the API client.

What a token means is decided in :func:`principal_from_claims` and nowhere else. It
reads tokens exactly as the identity provisioner (``operator/provisioners/identity.py``)
issues them:

- ``typ`` is ``Bearer`` (Keycloak's access tokens; ID and refresh tokens say ``ID`` and
  ``Refresh`` and are refused);
- the municipality is the dedicated realm (``muni-<slug>``) or, in the shared realm,
  the one organization in the ``organization`` claim. No other claim can name it, and
  the municipality never comes from the request;
- ``azp``, the client the token was issued to, is one of that municipality's clients
  (``<slug>-gov-hub``, ``<slug>-citizen-hub``, ``<slug>-api``, ``<slug>--tool-<tool>``,
  see :func:`naming.client`) or a platform-wide client the API was told about. Keycloak's
  own clients (``admin-cli``, ``account``) and another tenant's clients are refused;
- roles are the client roles of the municipality's API client,
  ``resource_access["<slug>-api"].roles``. Realm roles are ignored: in the shared realm a
  realm role would hold in every organization a user belongs to.
"""

from __future__ import annotations

import enum
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import httpx
import jwt

from urbanstack.operator import naming

ALGORITHM = "RS256"
DEDICATED_REALM_PREFIX = "muni-"


class AuthError(Exception):
    """The caller could not be authenticated (HTTP 401); the message says why, without secrets."""


class Permission(str, enum.Enum):
    read_public = "read:public"
    read_own = "read:own"
    read_shared = "read:shared"
    write_own = "write:own"
    manage_own = "manage:own"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "citizen": frozenset({Permission.read_public}),
    "gov-viewer": frozenset({Permission.read_public, Permission.read_own, Permission.read_shared}),
    "gov-editor": frozenset({Permission.read_public, Permission.read_own, Permission.read_shared,
                             Permission.write_own}),
    "gov-admin": frozenset(Permission),
}


@dataclass(frozen=True)
class Principal:
    tenant: str
    roles: frozenset[str]
    subject: str
    permissions: frozenset[Permission] = field(default=frozenset())

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


TENANT_APPS = naming.CLIENT_APPS
"""Clients every municipality has (``naming.client(slug, app)``); tools add ``<slug>--tool-<tool>``."""
ACCESS_TOKEN_TYPE = "Bearer"


def tenant_client(slug: str, client_id: str, tools: Iterable[str] | None = None) -> bool:
    """Whether ``client_id`` is one of municipality ``slug``'s clients.

    Hubs and the API client are compared with :func:`naming.client`; a tool client must
    be ``naming.tool_client(slug, tool)`` for a tool name that is a slug (and, when
    ``tools`` is given, one of the municipality's enabled tools). The test is exact, not a
    prefix test: ``bad-oeynhausen-api`` starts with ``bad-`` but is no client of ``bad``.
    Tool client ids hold ``--``, which no slug, tool or app name does, so every id names
    exactly one (slug, app) or (slug, tool) (``tests/unit/test_operator_naming.py``).
    """
    if any(client_id == naming.client(slug, app) for app in TENANT_APPS):
        return True
    owner = naming.split_tool_client(client_id)
    if owner is None or owner[0] != slug:
        return False
    tool = owner[1]
    return tools is None or tool in set(tools)


def principal_from_claims(claims: Mapping[str, Any], issuer: str, *,
                          shared_realms: Iterable[str] = (naming.SHARED_REALM,),
                          platform_clients: Iterable[str] = (),
                          tenant_tools: Callable[[str], Iterable[str] | None] | None = None) -> Principal:
    """The one place that maps verified token claims to tenant, roles and permissions.

    Tenant: a dedicated realm's issuer ``…/realms/muni-<slug>`` names it (an
    ``organization`` claim there must agree); in a shared realm the Keycloak 26
    ``organization`` claim does (a list of aliases, or a map keyed by alias when the
    scope includes attributes), and exactly one organization is required. ``azp`` must
    be a client of that tenant (:func:`tenant_client`) or one of ``platform_clients``;
    ``tenant_tools(slug)`` may narrow tool clients to the tenant's enabled tools.
    Roles: ``resource_access["<slug>-api"].roles`` only.
    """
    token_type = claims.get("typ")
    if token_type != ACCESS_TOKEN_TYPE:
        raise AuthError(f"token type {token_type!r} is not accepted; send a Keycloak access token "
                        f"(typ {ACCESS_TOKEN_TYPE!r}), not an ID or refresh token")
    realm = issuer.rstrip("/").rsplit("/realms/", 1)[-1]
    if realm in set(shared_realms):
        tenant = _tenant_in_shared_realm(claims)
    elif realm.startswith(DEDICATED_REALM_PREFIX):
        tenant = realm[len(DEDICATED_REALM_PREFIX):]
        named = _organizations(claims)
        if named is not None and named != [tenant]:
            raise AuthError(f"token of realm {realm!r} names organizations {named}; "
                            "a dedicated realm belongs to one municipality")
    else:
        raise AuthError(f"realm {realm!r} is not a platform realm")
    if not isinstance(tenant, str) or not naming.is_slug(tenant):
        raise AuthError("the token's municipality is not a valid slug")

    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("token has no subject ('sub' claim)")

    azp = claims.get("azp")
    if not isinstance(azp, str) or not azp:
        raise AuthError("token names no client ('azp' claim); sign in through a hub or tool of the municipality")
    if azp not in set(platform_clients):
        tools = None if tenant_tools is None else tuple(tenant_tools(tenant) or ())
        if not tenant_client(tenant, azp, tools):
            raise AuthError(f"token was issued to client {azp!r}, which is not a client of municipality "
                            f"{tenant!r}; sign in through one of its hubs or tools")

    roles = set(_string_list(_get(claims, "resource_access", naming.client(tenant, "api"), "roles")))
    permissions = frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in roles))
    return Principal(tenant=tenant, roles=frozenset(roles), subject=subject, permissions=permissions)


def _organizations(claims: Mapping[str, Any]) -> list[str] | None:
    """Aliases in the ``organization`` claim (None when there is no such claim)."""
    organization = claims.get("organization")
    if organization is None:
        return None
    if isinstance(organization, Mapping):
        return [alias for alias in organization if isinstance(alias, str)]
    if isinstance(organization, str):
        return [organization]
    return _string_list(organization)


def _tenant_in_shared_realm(claims: Mapping[str, Any]) -> str:
    aliases = _organizations(claims)
    if aliases is None:
        raise AuthError("token names no municipality (no 'organization' claim); sign in through the "
                        "municipality's hub, whose tokens carry its organization")
    if len(aliases) != 1:
        raise AuthError(f"token names {len(aliases)} organizations; the API needs exactly one "
                        "(ask for the 'organization:<alias>' scope when signing in)")
    return aliases[0]


def _get(claims: Mapping[str, Any], *path: str) -> Any:
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


# Verification ------------------------------------------------------------------

@dataclass
class _KeySet:
    keys: dict[str, Any]
    fetched_at: float


class TokenVerifier:
    """Validates bearer tokens against the platform's Keycloak realms.

    ``audience`` is the API client id; ``{tenant}`` in it is replaced by the token's
    municipality. ``{tenant}-api`` matches the plan's per-tenant API clients
    (``guetersloh-api``) and makes a token minted for one municipality's API useless
    at another's.

    ``platform_clients``: client ids of platform-wide clients (a shared public hub)
    whose tokens the API accepts besides the municipality's own clients; the platform
    has none today. ``tenant_tools(slug)``: the municipality's enabled tool names, so
    only their clients count (unset: any ``<slug>--tool-<tool>`` client does).
    """

    def __init__(self, keycloak_url: str, audience: str, *,
                 shared_realms: Iterable[str] = (naming.SHARED_REALM,), leeway: float = 30.0,
                 refresh_interval: float = 30.0, max_issuers: int = 256,
                 http_client: httpx.Client | None = None, clock: Callable[[], float] = time.time,
                 platform_clients: Iterable[str] = (),
                 tenant_tools: Callable[[str], Iterable[str] | None] | None = None):
        self._base = keycloak_url.rstrip("/")
        if not audience or audience.replace("{tenant}", "") == "" or audience.count("{") != audience.count("{tenant}"):
            raise ValueError(f"audience: name the API client tokens must be issued for, optionally with "
                             f"'{{tenant}}' in it (like '{{tenant}}-api'); got {audience!r}")
        self._audience = audience
        self._shared_realms = tuple(shared_realms)
        self._platform_clients = tuple(platform_clients)
        self._tenant_tools = tenant_tools
        self._leeway = leeway
        self._refresh_interval = refresh_interval
        self._max_issuers = max_issuers
        self._http = http_client or httpx.Client(timeout=5.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks: OrderedDict[str, _KeySet] = OrderedDict()
        realms = "|".join(re.escape(realm) for realm in self._shared_realms)
        self._issuer_pattern = re.compile(
            rf"{re.escape(self._base)}/realms/(?:{realms}|{DEDICATED_REALM_PREFIX}[a-z][a-z0-9]*(?:-[a-z0-9]+)*)")

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"token algorithm {header.get('alg')!r} is not accepted; only {ALGORITHM}")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not self._issuer_pattern.fullmatch(issuer):
            raise AuthError("token issuer is not a realm of this platform's Keycloak")
        key = self._key(issuer, header.get("kid"))
        try:
            claims = jwt.decode(token, key=key, algorithms=[ALGORITHM], issuer=issuer, leeway=self._leeway,
                                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired; sign in again") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet (nbf/iat in the future); check the clocks") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected: {exc}") from None
        principal = principal_from_claims(claims, issuer, shared_realms=self._shared_realms,
                                          platform_clients=self._platform_clients,
                                          tenant_tools=self._tenant_tools)
        expected = self._audience.format(tenant=principal.tenant)
        if expected not in _audiences(claims):
            raise AuthError(f"token was not issued for this API (its audience must include {expected!r})")
        return principal

    def signing_key(self, issuer: str, kid: Any) -> Any:
        """The public key ``kid`` of a realm of this platform (for ID tokens the hubs check)."""
        if not self._issuer_pattern.fullmatch(issuer):
            raise AuthError("token issuer is not a realm of this platform's Keycloak")
        return self._key(issuer, kid)

    def _key(self, issuer: str, kid: Any) -> Any:
        if not isinstance(kid, str):
            raise AuthError("token header has no key id ('kid')")
        with self._lock:
            cached = self._jwks.get(issuer)
            if cached is not None:
                self._jwks.move_to_end(issuer)
                if kid in cached.keys:
                    return cached.keys[kid]
                if self._clock() - cached.fetched_at < self._refresh_interval:
                    raise AuthError("token was signed with a key this realm does not publish")
        keys = self._fetch(issuer)
        with self._lock:
            self._jwks[issuer] = _KeySet(keys=keys, fetched_at=self._clock())
            self._jwks.move_to_end(issuer)
            while len(self._jwks) > self._max_issuers:
                self._jwks.popitem(last=False)
        if kid not in keys:
            raise AuthError("token was signed with a key this realm does not publish")
        return keys[kid]

    def _fetch(self, issuer: str) -> dict[str, Any]:
        try:
            response = self._http.get(f"{issuer}/protocol/openid-connect/certs")
        except httpx.HTTPError:
            raise AuthError("cannot reach the identity provider to check the token; try again shortly") from None
        if response.status_code != 200:
            # Cache the miss too, so tokens naming a realm that does not exist cannot make us hammer Keycloak.
            return {}
        keys = {}
        try:
            for jwk in response.json().get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig" and isinstance(jwk.get("kid"), str):
                    keys[jwk["kid"]] = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        except (ValueError, AttributeError, jwt.PyJWTError):
            return {}
        return keys


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    audience = claims.get("aud")
    if isinstance(audience, str):
        return [audience]
    return _string_list(audience)

