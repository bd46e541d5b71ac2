"""Token validation and the claim → principal mapping, against a JWKS served on 127.0.0.1."""

import base64
import json
import time

import jwt
import pytest
from api_tokens import LocalIssuer, new_key

from urbanstack.runtime.api.auth import AuthError, Permission, TokenVerifier, principal_from_claims

SHARED = "http://kc/realms/urbanstack"


@pytest.fixture
def verifier(issuer):
    return TokenVerifier(issuer.url, "{tenant}-api", leeway=5)


# principal_from_claims ----------------------------------------------------------
# Claims shaped as the identity provisioner issues them (operator/provisioners/identity.py).

def _claims(tenant="guetersloh", roles=("gov-viewer",), azp="{tenant}-gov-hub", **extra):
    claims = {"sub": "u1", "typ": "Bearer", "azp": azp.format(tenant=tenant) if azp else None,
              "organization": [tenant], "resource_access": {f"{tenant}-api": {"roles": list(roles)}}}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def test_shared_realm_takes_the_tenant_from_the_organization_claim():
    principal = principal_from_claims(_claims(), SHARED)
    assert principal.tenant == "guetersloh"
    assert principal.subject == "u1"
    assert principal.roles == {"gov-viewer"}
    assert principal.can(Permission.read_own) and principal.can(Permission.read_shared)
    assert not principal.can(Permission.manage_own)


def test_organization_claim_may_be_a_map_keyed_by_alias():
    claims = _claims("bielefeld", organization={"bielefeld": {"id": "42"}})
    assert principal_from_claims(claims, SHARED).tenant == "bielefeld"


@pytest.mark.parametrize("organization", [[], ["guetersloh", "bielefeld"], {}])
def test_exactly_one_organization_is_required(organization):
    with pytest.raises(AuthError, match="exactly one"):
        principal_from_claims(_claims(organization=organization), SHARED)


def test_a_tenant_claim_no_longer_names_the_municipality():
    claims = _claims(organization=None, tenant="guetersloh")
    with pytest.raises(AuthError, match="no 'organization' claim"):
        principal_from_claims(claims, SHARED)


def test_dedicated_realm_names_the_tenant_and_cannot_be_overridden():
    issuer = "http://kc/realms/muni-rheda-wiedenbrueck"
    claims = _claims("rheda-wiedenbrueck")
    assert principal_from_claims(claims, issuer).tenant == "rheda-wiedenbrueck"
    assert principal_from_claims({**claims, "organization": None}, issuer).tenant == "rheda-wiedenbrueck"
    with pytest.raises(AuthError, match="dedicated realm belongs to one municipality"):
        principal_from_claims({**claims, "organization": ["guetersloh"]}, issuer)


def test_roles_of_the_api_client_count_and_others_do_not():
    claims = _claims(realm_access={"roles": ["citizen"]},
                     resource_access={"guetersloh-api": {"roles": ["gov-admin"]},
                                      "guetersloh-gov-hub": {"roles": ["gov-editor"]}})
    principal = principal_from_claims(claims, SHARED)
    assert principal.roles == {"gov-admin"}
    assert principal.permissions == frozenset(Permission)


def test_a_realm_role_without_the_client_role_grants_nothing():
    claims = _claims(realm_access={"roles": ["gov-admin"]}, resource_access={})
    principal = principal_from_claims(claims, SHARED)
    assert principal.roles == frozenset() and principal.permissions == frozenset()


def test_roles_of_another_tenants_api_client_grant_nothing():
    claims = _claims(resource_access={"bielefeld-api": {"roles": ["gov-admin"]}})
    assert principal_from_claims(claims, SHARED).permissions == frozenset()


def test_citizen_reads_open_data_only():
    principal = principal_from_claims(_claims(roles=("citizen",), azp="{tenant}-citizen-hub"), SHARED)
    assert principal.permissions == {Permission.read_public}


@pytest.mark.parametrize("tenant", ["Gütersloh", "guetersloh; drop", "", 7])
def test_tenant_must_be_a_slug(tenant):
    with pytest.raises(AuthError):
        principal_from_claims({**_claims(), "organization": [tenant]}, SHARED)


@pytest.mark.parametrize("azp", ["guetersloh-gov-hub", "guetersloh-citizen-hub", "guetersloh-api",
                                 "guetersloh--tool-passantenfrequenz-wetter"])
def test_the_tenants_own_clients_are_accepted(azp):
    assert principal_from_claims(_claims(azp=azp), SHARED).tenant == "guetersloh"


def test_a_token_of_tenant_a_s_client_presenting_organization_b_is_refused():
    claims = _claims("bielefeld", azp="guetersloh-gov-hub")
    with pytest.raises(AuthError, match="issued to client 'guetersloh-gov-hub', which is not a client of "
                                        "municipality 'bielefeld'"):
        principal_from_claims(claims, SHARED)


def test_a_missing_azp_is_refused():
    with pytest.raises(AuthError, match="no client \\('azp' claim\\)"):
        principal_from_claims(_claims(azp=None), SHARED)


@pytest.mark.parametrize("azp", ["admin-cli", "account", "guetersloh", "guetersloh-", "guetersloh-other",
                                 "guetersloh-tool-", "guetersloh-tool-Bad", "xguetersloh-api", "",
                                 "guetersloh--tool-", "guetersloh-tool-pegel-warnung"])
def test_an_unknown_azp_is_refused(azp):
    with pytest.raises(AuthError, match="client"):
        principal_from_claims(_claims(azp=None) | {"azp": azp}, SHARED)


def test_a_slug_prefix_is_not_enough():
    # bad-oeynhausen's clients start with "bad-" but are not clients of "bad".
    with pytest.raises(AuthError, match="not a client of municipality 'bad'"):
        principal_from_claims(_claims("bad", azp="bad-oeynhausen-gov-hub"), SHARED)


def test_tool_clients_can_be_narrowed_to_enabled_tools():
    tools = {"guetersloh": ["pegel-warnung"]}.get
    ok = _claims(azp="guetersloh--tool-pegel-warnung")
    assert principal_from_claims(ok, SHARED, tenant_tools=tools).tenant == "guetersloh"
    with pytest.raises(AuthError, match="not a client"):
        principal_from_claims(_claims(azp="guetersloh-tool-other"), SHARED, tenant_tools=tools)
    with pytest.raises(AuthError, match="not a client"):  # a tenant the API does not know has no tools
        principal_from_claims(_claims("bielefeld", azp="bielefeld--tool-pegel-warnung"), SHARED, tenant_tools=tools)
    # Hubs do not depend on the tool list.
    assert principal_from_claims(_claims("bielefeld"), SHARED, tenant_tools=tools).tenant == "bielefeld"


def test_a_platform_client_is_accepted_only_when_configured():
    claims = _claims(azp="urbanstack-hub")
    with pytest.raises(AuthError, match="not a client"):
        principal_from_claims(claims, SHARED)
    assert principal_from_claims(claims, SHARED, platform_clients=("urbanstack-hub",)).tenant == "guetersloh"


@pytest.mark.parametrize("typ", ["ID", "Refresh", "Logout", None])
def test_only_access_tokens_are_accepted(typ):
    claims = _claims()
    claims.pop("typ")
    if typ is not None:
        claims["typ"] = typ
    with pytest.raises(AuthError, match="token type .* is not accepted"):
        principal_from_claims(claims, SHARED)


# TokenVerifier ------------------------------------------------------------------

def test_valid_token(issuer, verifier):
    principal = verifier.verify(issuer.token(tenant="guetersloh"))
    assert principal.tenant == "guetersloh"


def test_dedicated_realm_token(issuer, verifier):
    principal = verifier.verify(issuer.token(realm="muni-bielefeld", roles=("gov-admin",)))
    assert principal.tenant == "bielefeld" and principal.can(Permission.manage_own)


def test_forged_token_with_another_key_is_refused(issuer, verifier):
    forged = issuer.token(tenant="guetersloh", key=new_key())
    with pytest.raises(AuthError, match="signature"):
        verifier.verify(forged)


def test_expired_token_is_refused(issuer, verifier):
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(issuer.token(tenant="guetersloh", lifetime=-60))


def test_token_valid_only_in_the_future_is_refused(issuer, verifier):
    with pytest.raises(AuthError, match="not valid yet"):
        verifier.verify(issuer.token(tenant="guetersloh", nbf=int(time.time()) + 600))


def test_token_issued_in_the_future_is_refused(issuer, verifier):
    with pytest.raises(AuthError, match="not valid yet"):
        verifier.verify(issuer.token(tenant="guetersloh", iat=int(time.time()) + 600))


def test_token_without_iat_is_refused(issuer, verifier):
    with pytest.raises(AuthError, match="iat"):
        verifier.verify(issuer.token(tenant="guetersloh", iat=None))


def test_verifier_refuses_another_tenants_client_and_realm_roles(issuer, verifier):
    with pytest.raises(AuthError, match="not a client of municipality 'bielefeld'"):
        verifier.verify(issuer.token(tenant="bielefeld", azp="guetersloh-gov-hub"))
    token = issuer.token(tenant="guetersloh", roles=(), realm_access={"roles": ["gov-admin"]})
    assert verifier.verify(token).permissions == frozenset()


def test_verifier_refuses_an_id_token(issuer, verifier):
    with pytest.raises(AuthError, match="token type 'ID'"):
        verifier.verify(issuer.token(tenant="guetersloh", typ="ID"))


def test_small_clock_skew_is_tolerated(issuer, verifier):
    assert verifier.verify(issuer.token(tenant="guetersloh", lifetime=-2)).tenant == "guetersloh"


@pytest.mark.parametrize("issuer_url", ["http://127.0.0.1:1/realms/urbanstack", "{base}/realms/master",
                                        "{base}/realms/other", "{base}/realms/muni-Bad", "{base}/realms/urbanstack/x"])
def test_foreign_issuer_is_refused_without_fetching_anything(issuer, verifier, issuer_url):
    before = issuer.fetches
    with pytest.raises(AuthError, match="issuer"):
        verifier.verify(issuer.token(tenant="guetersloh", issuer=issuer_url.format(base=issuer.url)))
    assert issuer.fetches == before


def test_wrong_audience_is_refused(issuer, verifier):
    with pytest.raises(AuthError, match="audience"):
        verifier.verify(issuer.token(tenant="guetersloh", audience="bielefeld-api"))
    with pytest.raises(AuthError, match="audience"):
        verifier.verify(issuer.token(tenant="guetersloh", audience=None))


def test_fixed_audience(issuer):
    verifier = TokenVerifier(issuer.url, "urbanstack-api")
    assert verifier.verify(issuer.token(tenant="guetersloh", audience="urbanstack-api")).tenant == "guetersloh"
    with pytest.raises(AuthError, match="audience"):
        verifier.verify(issuer.token(tenant="guetersloh"))


def _unsigned(claims: dict, alg: str = "none") -> str:
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none_is_refused(issuer, verifier):
    claims = jwt.decode(issuer.token(tenant="guetersloh"), options={"verify_signature": False})
    with pytest.raises(AuthError, match="algorithm"):
        verifier.verify(_unsigned(claims))


def test_hmac_token_is_refused(issuer, verifier):
    claims = jwt.decode(issuer.token(tenant="guetersloh"), options={"verify_signature": False})
    # The classic confusion attack: HMAC keyed with the public key.
    token = jwt.encode(claims, "a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256",
                       headers={"kid": issuer.kid})
    with pytest.raises(AuthError, match="algorithm"):
        verifier.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "ey.ey.ey"])
def test_garbage_is_refused(verifier, token):
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_jwks_is_cached_and_refreshed_for_a_new_key(issuer):
    verifier = TokenVerifier(issuer.url, "{tenant}-api", refresh_interval=0)
    before = issuer.fetches
    for _ in range(3):
        verifier.verify(issuer.token(tenant="guetersloh"))
    assert issuer.fetches == before + 1
    rotated = issuer.add_key()
    assert verifier.verify(issuer.token(tenant="guetersloh", kid=rotated)).tenant == "guetersloh"
    assert issuer.fetches == before + 2


def test_unknown_kid_does_not_hammer_the_jwks(issuer):
    verifier = TokenVerifier(issuer.url, "{tenant}-api", refresh_interval=3600)
    verifier.verify(issuer.token(tenant="guetersloh"))
    before = issuer.fetches
    for _ in range(5):
        with pytest.raises(AuthError, match="key"):
            verifier.verify(issuer.token(tenant="guetersloh", kid="nope", key=new_key()))
    assert issuer.fetches == before


def test_cache_is_bounded(issuer):
    verifier = TokenVerifier(issuer.url, "{tenant}-api", max_issuers=2)
    for slug in ("a", "b", "c", "d"):
        verifier.verify(issuer.token(realm=f"muni-{slug}"))
    assert len(verifier._jwks) == 2


def test_unreachable_identity_provider_is_a_401_with_a_clear_message():
    verifier = TokenVerifier("http://127.0.0.1:9", "{tenant}-api")
    issuer = LocalIssuer()
    try:
        token = issuer.token(tenant="guetersloh", issuer="http://127.0.0.1:9/realms/urbanstack")
    finally:
        issuer.close()
    with pytest.raises(AuthError, match="cannot reach"):
        verifier.verify(token)
