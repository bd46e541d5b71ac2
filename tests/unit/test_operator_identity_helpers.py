"""The identity provisioner's pure parts: what it asks Keycloak for, and how it compares."""

from pathlib import Path

import pytest
import yaml

from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.identity import (TENANT_ATTRIBUTE, TENANT_CLAIM, IdentityProvisioner,
                                                       client_representation, protocol_mappers, settings_drift,
                                                       tenant_slug)

ROOT = Path(__file__).resolve().parents[2]


def _identity(name):
    load = lambda path: yaml.safe_load((ROOT / "examples" / path).read_text(encoding="utf-8"))  # noqa: E731
    tools = [parse_citytool(load(f"citytool-{tool}.yaml")) for tool in ("passantenfrequenz-wetter", "pegel-warnung")]
    return plan(parse_municipality(load(f"municipality-{name}.yaml")), tools).identity


@pytest.mark.parametrize("name", ["guetersloh", "bielefeld", "rheda-wiedenbrueck"])
def test_tenant_slug_in_both_strategies(name):
    assert tenant_slug(_identity(name)) == name


def test_clients_never_allow_the_password_grant_and_carry_only_scoped_roles():
    part = _identity("guetersloh")
    for client in part.clients:
        representation = client_representation(part, client, "https://hub.example")
        assert representation["directAccessGrantsEnabled"] is False
        assert representation["implicitFlowEnabled"] is False
        assert representation["fullScopeAllowed"] is False
        assert representation["attributes"][TENANT_ATTRIBUTE] == "guetersloh"
    hub = client_representation(part, part.client("guetersloh-gov-hub"), "https://hub.example/")
    assert hub["publicClient"] and hub["attributes"]["pkce.code.challenge.method"] == "S256"
    assert hub["redirectUris"] == ["https://hub.example/*"]
    assert "redirectUris" not in client_representation(part, part.client("guetersloh-api"), "https://hub.example")


def test_every_client_puts_the_api_into_the_audience():
    part = _identity("guetersloh")
    for client in part.clients:
        audiences = {m["config"]["included.client.audience"] for m in protocol_mappers(part, client).values()
                     if m["protocolMapper"] == "oidc-audience-mapper"}
        assert audiences == {"guetersloh-api"}


def test_tenant_claim_is_hard_coded_only_in_a_dedicated_realm():
    shared, dedicated = _identity("guetersloh"), _identity("bielefeld")
    assert not any(m["protocolMapper"] == "oidc-hardcoded-claim-mapper"
                   for c in shared.clients for m in protocol_mappers(shared, c).values())
    for client in dedicated.clients:
        claim = protocol_mappers(dedicated, client)[f"{TENANT_CLAIM} claim"]["config"]
        assert claim["claim.name"] == TENANT_CLAIM and claim["claim.value"] == '["bielefeld"]'


def test_settings_drift_compares_what_the_plan_sets():
    desired = {"bruteForceProtected": True, "failureFactor": 5, "supportedLocales": ["de", "en"],
               "passwordPolicy": "length(12)"}
    live = {"bruteForceProtected": True, "failureFactor": 5, "supportedLocales": ["en", "de"],
            "passwordPolicy": "length(12)", "somethingElse": 1}
    assert settings_drift(desired, live) == []
    assert settings_drift(desired, live | {"bruteForceProtected": False, "failureFactor": "3"}) == [
        "bruteForceProtected", "failureFactor"]
    assert settings_drift(desired, {}) == list(desired)


def test_endpoints_need_no_server():
    provisioner = IdentityProvisioner("http://127.0.0.1:1/", "admin", "unused")
    endpoints = provisioner.endpoints(_identity("bielefeld"))
    assert endpoints["issuer"] == "http://127.0.0.1:1/realms/muni-bielefeld"
    assert endpoints["jwks"].endswith("/realms/muni-bielefeld/protocol/openid-connect/certs")
    assert endpoints["accountConsole"] == "http://127.0.0.1:1/realms/muni-bielefeld/account"
