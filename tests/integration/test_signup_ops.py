"""The platform's side of the signup on the real platform: the web origin of `urbanstack serve`
(``serve.web_app``: Gov Hub, /signup, /ops with every dependency from settings) on 127.0.0.1,
real Keycloak (platform realm with a platform-admin using password + TOTP; the invitation of the
shared realm), the real kube-apiserver with the operator in a thread, real SMTP (the mailbox).

Verl applies, confirms through the mailed link, ops approve (twice at once: one tenant), the
operator makes Verl Ready, Keycloak's invitation arrives, the administrator sets a password and
a TOTP device and is gov-admin in Verl's Gov Hub. Refusals create nothing."""

from __future__ import annotations

import html
import re
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urljoin

import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from sqlalchemy import func, select

from hub_harness import browser_like_client, keycloak_form_action, page_text, sign_in
from keycloak_staff import KeycloakAdmin, Staff, totp
from operator_harness import is_ready
from signup_harness import World, application, csrf_of, follow, ops_sign_in, signup_world

pytestmark = pytest.mark.platform

M = "municipalities"
VERL = "05754044"


@pytest.fixture(scope="module")
def world(platform, warehouse, kube_api, mailbox, tmp_path_factory):
    with signup_world(platform, warehouse, kube_api, tmp_path_factory.mktemp("signup")) as built:
        yield built


def _requests_for(world: World, ags: str) -> int:
    from urbanstack.runtime.store.models import SignupRequest

    with world.signup.store.session() as session:
        return session.scalar(select(func.count()).select_from(SignupRequest).where(SignupRequest.ags == ags))


def _apply_and_confirm(world: World, mailbox, ags: str, email: str) -> tuple[str, str]:
    """(request id, status URL) of a confirmed request."""
    client = browser_like_client()
    seen = mailbox.box.seen()
    answer = client.post(f"{world.server.url}/signup/", data=application(client, world.server.url, ags, email))
    assert answer.status_code == 303, page_text(answer.text)
    message = mailbox.box.wait_for(email, timeout=20, after=seen)
    confirm = message.links(startswith=f"{world.server.url}/signup/confirm/")[0]
    status = message.links(startswith=f"{world.server.url}/signup/status/")[0]
    assert client.post(confirm).status_code == 200
    signup = world.signup.requests.by_status_token(status.rsplit("/", 1)[1])
    return signup.id, status


def _ops_client(world: World):
    """The platform-admin's signed-in browser, one for the module: Keycloak refuses a one-time
    code used before, so a second sign-in within the same 30 s would be refused."""
    if world.ops_client is None:
        client = browser_like_client()
        page = ops_sign_in(client, world.server.url, world.ops)
        assert page.status_code == 200 and "<h1" in page.text, page_text(page.text)
        world.ops_client = client
    return world.ops_client


def test_verl_applies_is_approved_becomes_ready_and_its_administrator_signs_in_as_gov_admin(world, mailbox):
    url = world.server.url
    domain = f"verl-{uuid.uuid4().hex[:6]}.de"  # Keycloak keeps organization domains unique
    email = f"anna.schmidt@{domain}"
    applicant = browser_like_client()
    search = applicant.get(f"{url}/signup/?q=Verl")
    assert "Verl, Stadt" in search.text and "Gütersloh" in search.text

    request_id, status_url = _apply_and_confirm(world, mailbox, VERL, email)
    assert 'data-step="confirmed"' in applicant.get(status_url).text

    ops = _ops_client(world)
    queue = ops.get(f"{url}/ops/")
    assert queue.status_code == 200 and f"/ops/requests/{request_id}" in queue.text and domain in queue.text
    detail = ops.get(f"{url}/ops/requests/{request_id}")
    assert detail.status_code == 200 and domain in detail.text
    csrf = csrf_of(detail.text)

    # Two operators approve at the same moment: one Municipality, the other is told.
    answers: list = []
    barrier = threading.Barrier(2)

    def approve():
        barrier.wait()
        answers.append(ops.post(f"{url}/ops/requests/{request_id}/approve", data={"csrf_token": csrf}))

    threads = [threading.Thread(target=approve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status_code for a in answers) == [303, 409], [page_text(a.text) for a in answers]
    created = world.cluster.get(M, "verl")
    assert created is not None
    spec = created["spec"]
    assert (spec["displayName"], spec["ags"], spec["plan"], spec["admins"]) == (
        "Verl", VERL, {"name": "small"}, [email])
    assert spec["identity"] == {"strategy": "organization", "domains": [domain]}
    assert spec["tools"] == []
    managers = {entry["manager"] for entry in created["metadata"]["managedFields"]}
    assert "urbanstack-signup" in managers
    assert created["metadata"]["labels"]["urbanstack.io/signup-request"] == request_id
    assert len([i for i in world.cluster.custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", M)["items"]
                if i["spec"].get("ags") == VERL]) == 1

    # A second request for Verl now: refused naming the tenant, nothing stored.
    before = _requests_for(world, VERL)
    again = applicant.post(f"{url}/signup/", data=application(applicant, url, VERL, f"bernd@{domain}"))
    assert again.status_code == 409 and "Verl nutzt Urban Stack bereits (als „verl“)" in html.unescape(again.text)
    assert _requests_for(world, VERL) == before

    # The operator makes Verl Ready; the console's conditions fragment follows it and sends the invitation.
    seen = mailbox.box.seen()
    world.cluster.wait_for(M, "verl", is_ready, timeout=300, what="Verl Ready")
    # Generous: after the suite's Keycloak restart tests a cold Keycloak can take a while to answer.
    deadline = time.monotonic() + 180
    while world.signup.requests.get(request_id).invited_at is None and time.monotonic() < deadline:
        fragment = ops.get(f"{url}/ops/requests/{request_id}/conditions")
        assert fragment.status_code == 200
        time.sleep(2)
    assert world.signup.requests.get(request_id).invited_at is not None, (
        world.signup.follow.errors, world.signup.requests.get(request_id).state,
        (world.cluster.get(M, "verl") or {}).get("status"))
    assert "Ready" in ops.get(f"{url}/ops/requests/{request_id}/conditions").text
    assert 'data-step="ready"' in applicant.get(status_url).text
    actions = [e.action for e in world.signup.store.audit.list("platform-signup", limit=100)
               if e.target == request_id]
    assert {"signup.received", "signup.confirmed", "signup.approved", "signup.ready", "signup.invited"} <= set(
        actions)

    invitation = mailbox.box.wait_for(email, timeout=180, after=seen)
    links = invitation.links(startswith=f"{world.settings.keycloak_url}/realms/urbanstack/")
    assert links, invitation.text
    keycloak = KeycloakAdmin(world.settings.keycloak_url, *world.settings.keycloak_admin())
    try:
        user = keycloak.call("GET", "/urbanstack/users", params={"username": email, "exact": "true"}).json()[0]
    finally:
        keycloak.close()
    assert (user.get("firstName"), user.get("lastName")) == ("Anna", "Schmidt")  # the contact person's name

    # The administrator follows the link: Keycloak asks for the authenticator (its secret is on the
    # page) and a password, in its own order.
    admin = browser_like_client()
    page = follow(admin, admin.get(links[0]))
    password, secret, code, done = f"Verl-{uuid.uuid4().hex}", "", "", set()
    for _ in range(6):
        if 'name="totpSecret"' in page.text and "totp" not in done:
            secret = html.unescape(re.search(r'name="totpSecret" value="([^"]+)"', page.text).group(1))
            code = totp(secret)
            page = admin.post(keycloak_form_action(page.text), data={
                "totp": code, "totpSecret": secret, "userLabel": "Diensthandy", "mode": "manual"})
            done.add("totp")
        elif 'name="password-new"' in page.text and "password" not in done:
            page = admin.post(keycloak_form_action(page.text),
                              data={"password-new": password, "password-confirm": password})
            done.add("password")
        elif done == {"totp", "password"}:
            break
        else:
            proceed = re.search(r'href="([^"]*login-actions[^"]*)"', page.text)
            assert proceed, page_text(page.text)
            page = admin.get(urljoin(str(page.url), html.unescape(proceed.group(1))))
        assert page.status_code < 400, page_text(page.text)
        page = follow(admin, page)
    assert done == {"totp", "password"}, page_text(page.text)

    # Signed in to Verl's Gov Hub as gov-admin (the next code: Keycloak refuses a code used before).
    world.refresh()
    while totp(secret) == code:
        time.sleep(1)
    person = Staff(username=email, password=password, otp_secret=secret, role="gov-admin")
    hub = browser_like_client()
    start = sign_in(hub, world.server, "verl", person)
    # The user carries the contact person's name from the application: Keycloak asks for nothing more.
    assert 'name="firstName"' not in start.text, page_text(start.text)
    assert start.status_code == 200 and str(start.url).startswith(f"{url}/gov/verl/"), page_text(start.text)
    assert "Verl" in start.text and "Gütersloh, Stadt" not in start.text
    people = hub.get(f"{url}/gov/verl/people")
    assert people.status_code == 200  # gov-admin only
    others = [m.slug for m in world.catalogue.municipalities() if m.slug != "verl"]
    for other in others[:3]:
        answer = hub.get(f"{url}/gov/{other}/", follow_redirects=False)
        assert answer.status_code in (302, 303, 404) and "/gov/verl" not in answer.headers.get("location", "")


def test_a_rejected_request_shows_its_reason_and_creates_nothing(world, mailbox):
    url = world.server.url
    request_id, status_url = _apply_and_confirm(world, mailbox, "05754012", f"amt@harsewinkel-{uuid.uuid4().hex[:6]}.de")
    ops = _ops_client(world)
    csrf = csrf_of(ops.get(f"{url}/ops/requests/{request_id}").text)
    empty = ops.post(f"{url}/ops/requests/{request_id}/reject", data={"csrf_token": csrf, "reason": " "})
    assert empty.status_code == 422 and "Begründung" in html.unescape(empty.text), page_text(empty.text)
    rejected = ops.post(f"{url}/ops/requests/{request_id}/reject",
                        data={"csrf_token": csrf, "reason": "Die Adresse gehört nicht zur Stadtverwaltung."})
    assert rejected.status_code == 303
    status = browser_like_client().get(status_url)
    assert "Die Adresse gehört nicht zur Stadtverwaltung." in html.unescape(status.text)
    assert "Abgelehnt" in status.text
    late = ops.post(f"{url}/ops/requests/{request_id}/approve", data={"csrf_token": csrf})
    assert late.status_code == 409
    assert world.cluster.get(M, "harsewinkel") is None


def test_an_expired_link_confirms_nothing_and_cannot_be_approved(world, mailbox):
    from urbanstack.runtime.store.models import SignupRequest, utcnow

    url = world.server.url
    email = f"amt@langenberg-{uuid.uuid4().hex[:6]}.de"
    client = browser_like_client()
    seen = mailbox.box.seen()
    assert client.post(f"{url}/signup/", data=application(client, url, "05754020", email)).status_code == 303
    message = mailbox.box.wait_for(email, timeout=20, after=seen)
    confirm = message.links(startswith=f"{url}/signup/confirm/")[0]
    status = message.links(startswith=f"{url}/signup/status/")[0]
    signup = world.signup.requests.by_status_token(status.rsplit("/", 1)[1])
    with world.signup.store.session() as session:  # 25 hours later
        session.get(SignupRequest, signup.id).confirm_expires_at = utcnow() - timedelta(hours=1)
    expired = client.post(confirm)
    assert expired.status_code == 410 and "abgelaufen" in html.unescape(expired.text).lower(), page_text(expired.text)
    assert world.signup.requests.get(signup.id).state == "received"
    ops = _ops_client(world)
    csrf = csrf_of(ops.get(f"{url}/ops/requests/{signup.id}").text)
    refused = ops.post(f"{url}/ops/requests/{signup.id}/approve", data={"csrf_token": csrf})
    assert refused.status_code == 409 and world.cluster.get(M, "langenberg") is None


def test_the_rate_limit_refuses_with_a_message_and_stores_nothing(world):
    from urbanstack.runtime.hubs.signup.service import SignupLimits

    url = world.server.url
    domain = f"rietberg-{uuid.uuid4().hex[:6]}.de"
    client = browser_like_client()
    previous = world.signup.limits
    world.signup.limits = SignupLimits(per_address=1000, per_domain=1, per_ags=1000)
    try:
        first = client.post(f"{url}/signup/", data=application(client, url, "05754032", f"amt@{domain}"))
        assert first.status_code == 303
        before = _requests_for(world, "05754040")
        second = client.post(f"{url}/signup/", data=application(client, url, "05754040", f"info@{domain}"))
        assert second.status_code == 429 and "zu viele Anträge" in html.unescape(second.text), page_text(second.text)
        assert _requests_for(world, "05754040") == before
    finally:
        world.signup.limits = previous


def test_two_requests_for_one_municipality_at_once_make_one_request(world):
    url = world.server.url
    client = browser_like_client()
    forms = [application(client, url, "05754048", f"amt{i}@versmold-{uuid.uuid4().hex[:6]}.de") for i in range(2)]
    answers: list = []
    barrier = threading.Barrier(2)

    def send(form):
        barrier.wait()
        answers.append(browser_like_client().post(f"{url}/signup/", data=form))

    threads = [threading.Thread(target=send, args=(form,)) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status_code for a in answers) == [303, 409]
    [refused] = [a for a in answers if a.status_code == 409]
    assert "Ein Antrag für Versmold wird bereits bearbeitet" in html.unescape(refused.text), page_text(refused.text)
    assert _requests_for(world, "05754048") == 1


def test_the_console_refuses_people_without_the_role_and_requests_without_csrf(world, mailbox):
    url = world.server.url
    outsider = browser_like_client()
    page = ops_sign_in(outsider, url, world.outsider)
    assert page.status_code == 403 and "platform-admin" in page.text
    assert outsider.get(f"{url}/ops/requests/whatever").status_code == 403
    request_id, _ = _apply_and_confirm(world, mailbox, "05754052", f"amt@werther-{uuid.uuid4().hex[:6]}.de")
    stranger_csrf = csrf_of(page.text) if 'name="csrf_token"' in page.text else "x"
    assert outsider.post(f"{url}/ops/requests/{request_id}/approve",
                         data={"csrf_token": stranger_csrf}).status_code == 403
    ops = _ops_client(world)
    assert ops.post(f"{url}/ops/requests/{request_id}/approve", data={}).status_code == 403
    assert ops.post(f"{url}/ops/requests/{request_id}/approve", data={"csrf_token": "forged"}).status_code == 403
    assert world.signup.requests.get(request_id).state == "confirmed"
    assert world.cluster.get(M, "werther-westf") is None and world.cluster.get(M, "werther") is None
    # Without any session: the console sends GETs to the sign-in and refuses POSTs.
    anonymous = browser_like_client()
    assert anonymous.get(f"{url}/ops/").headers["location"].startswith("/ops/login")
    assert anonymous.post(f"{url}/ops/requests/{request_id}/approve").status_code == 401


def test_the_signup_identity_cannot_delete_municipalities_or_read_secrets(world):
    from urbanstack.serve import signup_kubeconfig

    api = kubernetes.config.new_client_from_config(config_file=signup_kubeconfig(world.settings))
    custom, core = kubernetes.client.CustomObjectsApi(api), kubernetes.client.CoreV1Api(api)
    assert isinstance(custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", M)["items"], list)
    name = custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", M)["items"]
    refused = [lambda: core.list_secret_for_all_namespaces(), lambda: core.list_namespaced_secret("kube-system"),
               lambda: custom.patch_cluster_custom_object_status("urbanstack.io", "v1alpha1", M, "verl",
                                                                 {"status": {"phase": "Ready"}})]
    if name:
        refused.append(lambda: custom.delete_cluster_custom_object("urbanstack.io", "v1alpha1", M,
                                                                   name[0]["metadata"]["name"]))
    refused.append(lambda: custom.delete_cluster_custom_object("urbanstack.io", "v1alpha1", M, "does-not-matter"))
    for call in refused:
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403
