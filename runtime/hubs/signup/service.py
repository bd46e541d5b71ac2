"""What the signup pages do, apart from HTTP: check a request, create it, confirm it, approve
(create the Municipality), follow it to Ready and send the administrator's invitation.

Every step is in the audit trail (tenant ``platform-signup``; no personal data in the entries,
only the request id, AGS and outcome). The Municipality is created with a create call, not
an update: if it exists already, the API server refuses (409) and nothing is overwritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

import httpx

from urbanstack.operator import naming
from urbanstack.runtime.store.dashboards import Actor
from urbanstack.runtime.store.signup import APPROVED, READY, Limit, SignupRequests

log = logging.getLogger("urbanstack.signup")
AUDIT_TENANT = "platform-signup"
GROUP, VERSION, PLURAL = "urbanstack.io", "v1alpha1", "municipalities"
INVITE_ACTIONS = ["UPDATE_PASSWORD", "CONFIGURE_TOTP"]
INVITE_LIFESPAN = 72 * 3600


@dataclass(frozen=True)
class SignupLimits:
    """Attempts (accepted or not) per window; every replica counts in the metadata store."""
    per_address: int = 5
    per_domain: int = 5
    per_ags: int = 3
    window: timedelta = timedelta(hours=24)
    address_window: timedelta = timedelta(hours=1)

    def limits(self) -> tuple[Limit, ...]:
        return (Limit("address", self.per_address, self.address_window), Limit("domain", self.per_domain, self.window),
                Limit("ags", self.per_ags, self.window))


class Kube:
    """The signup's view of Municipalities, as its own identity ``urbanstack-signup``."""

    def __init__(self, api_client):
        import kubernetes

        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    def municipalities(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=5000).get("items", [])

    def get(self, name: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, body: dict) -> dict:
        from urbanstack.operator.rbac import SIGNUP_FIELD_MANAGER

        return self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body,
                                                        field_manager=SIGNUP_FIELD_MANAGER)

    def tools(self) -> list[tuple[str, str]]:
        items = self.custom.list_cluster_custom_object(GROUP, VERSION, "citytools", limit=500).get("items", [])
        return sorted((item["metadata"]["name"], (item.get("spec") or {}).get("displayName")
                       or item["metadata"]["name"]) for item in items)


def existing_tenant(municipalities: list[dict], ags: str, slug: str) -> str | None:
    """The name of a Municipality that has this AGS or this slug already, else None."""
    for item in municipalities:
        if (item.get("spec") or {}).get("ags") == ags or item["metadata"]["name"] == slug:
            return item["metadata"]["name"]
    return None


def municipality_manifest(request, deletion_policy: str = "Retain") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Municipality",
        "metadata": {"name": request.slug, "labels": {"urbanstack.io/signup-request": request.id}},
        "spec": {
            "displayName": request.municipality_name, "ags": request.ags, "plan": {"name": request.plan},
            "admins": [request.email],
            "identity": {"strategy": "organization", "domains": [request.email_domain]},
            "tools": [{"name": tool} for tool in request.tools],
            "deletionPolicy": deletion_policy,
        },
    }


def conditions(obj: dict | None) -> list[dict]:
    return list(((obj or {}).get("status") or {}).get("conditions") or [])


def is_ready(obj: dict | None) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions(obj))


class Invitations:
    """Keycloak's execute-actions e-mail (set a password, set up one-time codes), sent by the
    realm through its SMTP relay, as the Gov Hub's people-management identity."""

    def __init__(self, keycloak_url: str, client_id: str, client_secret: str, timeout: float = 15.0):
        self.base, self.client_id, self.client_secret, self.timeout = keycloak_url.rstrip("/"), client_id, \
            client_secret, timeout

    def send(self, realm: str, username: str, client_id: str, redirect_uri: str,
             names: tuple[str, str] | None = None) -> None:
        """The invitation to ``username``; ``names`` (first, last) from the application are put on
        the user first if it has none, so Keycloak does not ask for them at the first sign-in."""
        with httpx.Client(base_url=self.base, timeout=self.timeout) as http:
            token = http.post("/realms/master/protocol/openid-connect/token", data={
                "grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret})
            if token.status_code != 200:
                raise RuntimeError(f"Keycloak refused the signup's identity (HTTP {token.status_code})")
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            found = http.get(f"/admin/realms/{realm}/users", params={"username": username, "exact": "true"},
                             headers=headers)
            found.raise_for_status()
            users = found.json()
            if not users:
                raise RuntimeError(f"the administrator is not in realm {realm} yet")
            if names and all(names) and not (users[0].get("firstName") or users[0].get("lastName")):
                # The whole representation back (a partial one may drop attributes of the user profile).
                user = http.get(f"/admin/realms/{realm}/users/{users[0]['id']}", headers=headers)
                user.raise_for_status()
                named = http.put(f"/admin/realms/{realm}/users/{users[0]['id']}", headers=headers,
                                 json=user.json() | {"firstName": names[0], "lastName": names[1]})
                if named.status_code >= 300:
                    raise RuntimeError(f"Keycloak did not take the administrator's name (HTTP {named.status_code})")
            sent = http.put(f"/admin/realms/{realm}/users/{users[0]['id']}/execute-actions-email",
                            params={"client_id": client_id, "redirect_uri": redirect_uri,
                                    "lifespan": INVITE_LIFESPAN}, json=INVITE_ACTIONS, headers=headers)
            if sent.status_code >= 300:
                raise RuntimeError(f"Keycloak did not send the invitation (HTTP {sent.status_code}): "
                                   f"{sent.text[:300]}")


@dataclass
class Follow:
    """Advances approved requests: Ready → state ready → invitation sent (once)."""
    requests: SignupRequests
    store: Any
    kube: Kube | None
    invitations: Invitations | None
    gov_hub_url: Callable[[str], str]  # slug → the Gov Hub's start page (the invitation's redirect)
    errors: dict[str, str] = field(default_factory=dict)

    def advance(self, request_id: str) -> dict | None:
        """The Municipality of an approved or ready request (None if not created); moves the request on."""
        request = self.requests.get(request_id)
        if request is None or request.state not in (APPROVED, READY) or self.kube is None:
            return None
        obj = self.kube.get(request.slug)
        if request.state == APPROVED and is_ready(obj):
            request = self.requests.mark_ready(request.id)
            self.store.audit.append(AUDIT_TENANT, None, "signup.ready", request.id, {"ags": request.ags,
                                                                                    "slug": request.slug})
        if request.state == READY and request.invited_at is None and self.invitations is not None and request.email:
            try:
                self.invitations.send(naming.SHARED_REALM, request.email, naming.client(request.slug, "gov-hub"),
                                      self.gov_hub_url(request.slug), names=split_name(request.contact_name))
            except (RuntimeError, httpx.HTTPError) as error:
                self.errors[request.id] = str(error)
                log.warning("invitation for signup request %s not sent yet: %s", request.id, error)
                return obj
            self.errors.pop(request.id, None)
            self.requests.mark_invited(request.id)
            self.store.audit.append(AUDIT_TENANT, None, "signup.invited", request.id, {"slug": request.slug})
        return obj


def split_name(full: str | None) -> tuple[str, str] | None:
    """(first names, last name) of the contact person as typed: the last word is the last name.
    None for a single word: Keycloak then asks the person, rather than guessing."""
    words = (full or "").split()
    if len(words) < 2:
        return None
    return " ".join(words[:-1])[:255], words[-1][:255]


def actor(subject: str, name: str) -> Actor:
    return Actor(subject[:255], name[:255])
