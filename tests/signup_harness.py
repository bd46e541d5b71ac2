"""The signup's web origin for tests, and the people and requests its tests need.

``SignupWorld`` serves ``serve.web_app`` (Gov Hub + ``/signup`` + ``/ops``, every dependency
built from settings exactly as ``urbanstack serve`` does) on 127.0.0.1 with a directory that
knows the Kreis Gütersloh, cheap proofs of work and a platform-admin with password and TOTP
in the platform realm."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from hub_harness import keycloak_form_action, page_text
from keycloak_staff import KeycloakAdmin, Staff
from urbanstack.runtime.hubs.signup.proof import Proofs

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_REALM = "urbanstack-platform"
M = "municipalities"

# Kreis Gütersloh (AGS, name, population) beside the fixture's rows: the signup tests' places.
PLACES = [("05754012", "Harsewinkel, Stadt", 25000), ("05754020", "Langenberg", 8500),
          ("05754032", "Rietberg, Stadt", 30000), ("05754040", "Steinhagen", 20500),
          ("05754044", "Verl, Stadt", 25691), ("05754048", "Versmold, Stadt", 22000),
          ("05754052", "Werther (Westf.), Stadt", 11000)]


def write_directory(folder: Path) -> tuple[Path, Path]:
    """(municipality CSV, Kreis CSV) for URBANSTACK_MUNICIPALITY_DIRECTORY and _DISTRICT_DIRECTORY."""
    csv = folder / "municipalities.csv"
    rows = [f'{ags},{ags[:5]}0{ags[5:]}{ags[5:]},"{name}",63,Stadt,1,50.0,{people},0,0,33415,8.5,51.9'
            for ags, name, people in PLACES]
    csv.write_text((ROOT / "tests" / "fixtures" / "municipalities.derived.csv").read_text(encoding="utf-8")
                   + "\n".join(rows) + "\n", encoding="utf-8")
    kreise = folder / "kreise.csv"
    kreise.write_text("kreis,name\n05754,Gütersloh\n05711,Bielefeld\n", encoding="utf-8")
    return csv, kreise


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    otp_secret: str

    def totp(self) -> str:
        from keycloak_staff import totp

        return totp(self.otp_secret)


def add_platform_person(admin: KeycloakAdmin, *, platform_admin: bool) -> Person:
    """A person of the platform realm with password and TOTP device; ``platform_admin``: with the role."""
    username = f"ops-{uuid.uuid4().hex[:8]}@platform.example.org"
    password, secret = f"Pw-{uuid.uuid4().hex}", base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    created = admin.call("POST", f"/{PLATFORM_REALM}/users", json={
        "username": username, "email": username, "firstName": "Olga", "lastName": "Betrieb", "enabled": True,
        "emailVerified": True, "requiredActions": [],
        "credentials": [{"type": "password", "value": password, "temporary": False},
                        {"type": "otp", "userLabel": "test device", "secretData": json.dumps({"value": secret}),
                         "credentialData": json.dumps({"subType": "totp", "digits": 6, "counter": 0, "period": 30,
                                                       "algorithm": "HmacSHA1"})}]})
    assert created.status_code == 201, created.text
    if platform_admin:
        user_id = created.headers["Location"].rsplit("/", 1)[-1]
        role = admin.call("GET", f"/{PLATFORM_REALM}/roles/platform-admin").json()
        assert admin.call("POST", f"/{PLATFORM_REALM}/users/{user_id}/role-mappings/realm",
                          json=[role]).status_code == 204
    return Person(username, password, secret)


def follow(client: httpx.Client, response: httpx.Response, hops: int = 10) -> httpx.Response:
    while response.is_redirect and hops > 0:
        response = client.get(urljoin(str(response.url), response.headers["location"]))
        hops -= 1
    return response


def ops_sign_in(client: httpx.Client, base_url: str, person: Person, start: str = "/ops/") -> httpx.Response:
    """Ops console → Keycloak (platform realm: username and password, then the one-time code) →
    callback; returns the page the person lands on."""
    response = follow(client, client.get(base_url + start))
    assert response.status_code == 200 and "kc-form-login" in response.text, page_text(response.text)
    assert f"/realms/{PLATFORM_REALM}/" in str(response.url)
    response = client.post(keycloak_form_action(response.text),
                           data={"username": person.username, "password": person.password, "credentialId": ""})
    assert response.status_code == 200 and 'name="otp"' in response.text, page_text(response.text)
    response = client.post(keycloak_form_action(response.text), data={"otp": person.totp()})
    assert response.is_redirect, page_text(response.text)
    return follow(client, response)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def application(client: httpx.Client, base_url: str, ags: str, email: str, **overrides) -> dict:
    challenge = client.get(f"{base_url}/signup/altcha-challenge").json()
    values = {"ags": ags, "contact_name": "Anna Schmidt", "email": email, "plan": "small", "tools": [],
              "leitweg_id": "04011000-1234512345-06", "terms": "yes", "avv": "yes",
              "altcha": Proofs.solve(challenge)}
    values.update(overrides)
    return values


@dataclass
class World:
    """The signup on the real platform: ``server`` (the web origin of ``urbanstack serve``),
    ``signup`` (its SignupApp: store, requests, limits, proofs), the cluster with the operator
    running, the Gov Hub's catalogue and its ``refresh``, a platform-admin ``ops`` and an
    ``outsider`` without the role (both with password and TOTP)."""
    server: object
    signup: object
    cluster: object
    catalogue: object
    refresh: object
    ops: Person
    outsider: Person
    settings: object
    ops_client: object = None


def remove_municipality(cluster, name: str, timeout: float = 240) -> None:
    """Delete a Municipality with everything the operator made for it."""
    if cluster.get(M, name) is None:
        return
    cluster.patch_spec(M, name, {"deletionPolicy": "Delete"})
    cluster.delete(M, name)
    cluster.wait_gone(M, name, timeout=timeout)


@contextmanager
def signup_world(platform, warehouse, kube_api, folder: Path, *, leftovers: tuple[str, ...] = ("verl",)):
    """The platform realm with its people, the operator in a thread, ``serve.web_app`` on 127.0.0.1
    with cheap proofs of work and no rate limits; ``leftovers`` (Municipalities of an earlier run
    that the signup would refuse as existing tenants) are removed before and after."""
    import kubernetes

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from hub_harness import WebServer
    from operator_harness import Cluster, OperatorThread, operator_kubeconfig, use_operator_identity

    from urbanstack import serve
    from urbanstack.devplatform import keycloak as dev_keycloak
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends
    from urbanstack.runtime.api import Catalogue
    from urbanstack.runtime.hubs.signup.proof import ProofSettings
    from urbanstack.runtime.hubs.signup.service import SignupLimits
    from urbanstack.runtime.store import open_store

    csv, kreise = write_directory(folder)
    settings = dataclasses.replace(platform, municipality_directory=str(csv), district_directory=str(kreise),
                                   state_dir=platform.state_dir)
    dev_keycloak.ensure_platform_realm(settings)
    admin = KeycloakAdmin(settings.keycloak_url, *settings.keycloak_admin())
    ops, outsider = add_platform_person(admin, platform_admin=True), add_platform_person(admin, platform_admin=False)
    admin.close()

    cluster = Cluster(kube_api)
    for name in leftovers:
        remove_municipality(cluster, name)
    use_operator_identity(platform)
    backends = Backends.from_settings(settings, warehouse_client=warehouse, kube=kubernetes.config.new_client_from_config(
        config_file=operator_kubeconfig(platform)))
    handlers.configure(settings, backends, MunicipalityDirectory.load(csv))
    runner = OperatorThread().start()

    runtime = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
        config_file=str(platform.state_dir / "kube" / "runtime.kubeconfig")))
    catalogue = Catalogue()

    def refresh():
        serve.refresh_catalogue(catalogue, runtime)

    refresh()
    store = open_store(f"sqlite:///{folder / 'store.db'}")
    store.upgrade()
    server = WebServer(settings, catalogue, warehouse, store)
    signup = server.web.signup.state.signup
    signup.proofs = Proofs(ProofSettings("test-key", cost=50, min_counter=10, spread=20))  # fast to solve
    signup.limits = SignupLimits(per_address=1000, per_domain=1000, per_ags=1000)
    try:
        with server:
            yield World(server, signup, cluster, catalogue, refresh, ops, outsider, settings)
    finally:
        try:
            for name in leftovers:
                remove_municipality(cluster, name)
        finally:
            runner.stop()
            store.close()
