"""Issue #12's acceptance in Chromium on the real platform: Verl (AGS 05754044) applies in the
browser (the ALTCHA widget solves its proof of work under the CSP), the confirmation link is read
from the SMTP mailbox, a platform-admin signs in to the ops console (Keycloak's platform realm,
password + TOTP) and approves, the operator makes Verl Ready, Keycloak's invitation arrives, the
new administrator sets a password and a TOTP device (pyotp) and is gov-admin in Verl's Gov Hub,
seeing nothing of Gütersloh. axe-core checks every page on the way (WCAG 2.1 A/AA): ours with no
violation; Keycloak's (sign-ins, invitation steps, in our login theme ``urbanstack-<hash>``) with
no violation either.

Real: Keycloak, kube-apiserver with the operator in a thread, SMTP, the metadata store (SQLite
file), the web origin of ``urbanstack serve``. Screenshots: signup-*.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import time
import uuid

import pytest
import screenshots
from conftest import check_accessible, check_own_origin
from keycloak_staff import totp
from signup_harness import World, signup_world

pytestmark = pytest.mark.platform

VERL = "05754044"


@pytest.fixture(scope="module")
def world(platform, warehouse, kube_api, mailbox, tmp_path_factory):
    with signup_world(platform, warehouse, kube_api, tmp_path_factory.mktemp("signup-browser")) as built:
        yield built


def _page(browser):
    """A fresh browser (context) of its own: applicant, ops and the new administrator never share cookies."""
    context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests_seen, page.console_errors = [], []
    page.on("request", lambda request: page.requests_seen.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    return page


def _ours(page, url: str, label: str) -> None:
    """One of our pages: no axe-core violation, no console error, nothing from another origin."""
    assert page.url.startswith(url), (label, page.url)
    check_accessible(page, label)
    assert page.console_errors == [], (label, page.console_errors)
    check_own_origin(page, url)


def _keycloaks(page, label: str) -> None:
    """Keycloak's pages of the flow, in our login theme (templates/keycloak/theme): no axe-core
    finding; a read-only user name on the page is labelled."""
    check_accessible(page, label)
    if page.locator("#kc-attempted-username").count():
        assert page.locator("label[for=kc-attempted-username]").count() == 1, page.url


def _set_up_account(page, password: str) -> str:
    """Keycloak's required actions from the invitation link, in Keycloak's order: a TOTP device
    (the secret from the manual-entry form) and a password. Returns the TOTP secret."""
    secret, done = "", set()
    for _ in range(8):
        page.wait_for_load_state()
        _keycloaks(page, "Keycloak: invitation step")
        if page.locator("input[name=totpSecret]").count() and "totp" not in done:
            secret = page.locator("input[name=totpSecret]").get_attribute("value")
            page.fill("#totp", totp(secret))
            if page.locator("#userLabel").count():
                page.fill("#userLabel", "Diensthandy")
            page.locator("form#kc-totp-settings-form [type=submit]").first.click()
            done.add("totp")
        elif page.locator("#password-new").count() and "password" not in done:
            page.fill("#password-new", password)
            page.fill("#password-confirm", password)
            page.locator("form [type=submit]").first.click()
            done.add("password")
        elif done == {"totp", "password"}:
            break
        elif page.locator("a[href*='login-actions']").count():
            page.locator("a[href*='login-actions']").first.click()
        else:
            raise AssertionError(f"unexpected Keycloak page: {page.url}\n{page.inner_text('body')[:1500]}")
    assert done == {"totp", "password"}, page.inner_text("body")[:1500]
    return secret


def test_verl_applies_is_approved_in_the_console_and_its_administrator_lands_in_the_gov_hub(browser, world: World,
                                                                                              mailbox):
    url = world.server.url
    domain = f"verl-{uuid.uuid4().hex[:6]}.de"  # Keycloak keeps organization domains unique
    email = f"anna.schmidt@{domain}"

    # The applicant: search, choose, fill in; the widget solves the proof of work on the own origin.
    applicant = _page(browser)
    applicant.goto(f"{url}/signup/?q=Verl")
    _ours(applicant, url, "signup search")
    applicant.click(f"a[href^='/signup/?ags={VERL}']")
    assert applicant.input_value("#ags") == VERL
    applicant.fill("#contact_name", "Anna Schmidt")
    applicant.fill("#email", email)
    applicant.fill("#leitweg_id", "04011000-1234512345-06")
    applicant.check("#terms")
    applicant.check("#avv")
    applicant.wait_for_function("() => { const f = document.querySelector('input[name=altcha]');"
                                " return f && f.value.length > 20; }", timeout=60_000)
    _ours(applicant, url, "signup form filled, proof of work solved")
    assert any(u.startswith(f"{url}/signup/altcha-challenge") for u in applicant.requests_seen)
    seen = mailbox.box.seen()
    applicant.click("button[type=submit]:has-text('Antrag senden')")
    applicant.wait_for_url(f"{url}/signup/status/**")
    _ours(applicant, url, "status: received")

    message = mailbox.box.wait_for(email, timeout=30, after=seen)
    confirm = message.links(startswith=f"{url}/signup/confirm/")[0]
    status = message.links(startswith=f"{url}/signup/status/")[0]
    confirmed_seen = mailbox.box.seen()  # Keycloak's invitation comes after this
    applicant.goto(confirm)
    _ours(applicant, url, "confirmation page")
    applicant.click("main button[type=submit]")
    applicant.wait_for_load_state()
    _ours(applicant, url, "confirmed")
    applicant.goto(status)
    assert applicant.locator('[data-step="confirmed"]').count() == 1
    _ours(applicant, url, "status: confirmed")
    request_id = world.signup.requests.by_status_token(status.rsplit("/", 1)[1]).id

    # Platform operations: sign-in at the platform realm (password, one-time code), queue, approve.
    ops = _page(browser)
    ops.goto(f"{url}/ops/")
    assert "/realms/urbanstack-platform/" in ops.url
    _keycloaks(ops, "Keycloak: platform realm sign-in")
    ops.fill("#username", world.ops.username)
    ops.fill("#password", world.ops.password)
    ops.click("#kc-login")
    _keycloaks(ops, "Keycloak: platform realm one-time code")
    ops.fill("#otp", world.ops.totp())
    ops.click("#kc-login")
    ops.wait_for_url(f"{url}/ops/**")  # no further Keycloak page
    ops.requests_seen.clear()  # Keycloak's pages are on Keycloak's origin
    assert domain in ops.inner_text("main")
    _ours(ops, url, "ops queue")
    ops.click(f"a[href='/ops/requests/{request_id}']")
    ops.wait_for_url(f"{url}/ops/requests/{request_id}")
    _ours(ops, url, "ops request: confirmed")
    with ops.expect_navigation(timeout=60_000):
        ops.click("form[action$='/approve'] button[type=submit]")
    # The console answers an approval with the request's page; anything else (a refusal) says why.
    assert ops.url == f"{url}/ops/requests/{request_id}", (ops.url, ops.inner_text("body")[:2000])
    assert world.cluster.get("municipalities", "verl") is not None
    # The console follows the operator's conditions by itself until the invitation is out.
    ops.wait_for_selector("#conditions:not([hx-get])", timeout=360_000)
    assert world.signup.requests.get(request_id).invited_at is not None, world.signup.follow.errors
    assert ops.locator("[data-condition=Ready]").count() == 1
    screenshots.save(ops, "signup-ops-ready")
    _ours(ops, url, "ops request: ready, invitation sent")
    applicant.goto(status)
    assert applicant.locator('[data-step="ready"]').count() == 1
    _ours(applicant, url, "status: ready")

    # The new administrator: invitation → password and TOTP (no name asked: it came with the application).
    invitation = mailbox.box.wait_for(email, timeout=180, after=confirmed_seen)
    links = invitation.links(startswith=f"{world.settings.keycloak_url}/realms/urbanstack/")
    assert links, invitation.text
    admin = _page(browser)
    admin.goto(links[0])
    _keycloaks(admin, "Keycloak: invitation link")
    password = f"Verl-{uuid.uuid4().hex}"
    secret = _set_up_account(admin, password)
    assert admin.locator("input[name=firstName]").count() == 0
    code = totp(secret)
    while totp(secret) == code:  # Keycloak refuses a one-time code used before
        time.sleep(1)
    world.refresh()
    # The first sign-in to Verl's Gov Hub: the shared realm asks for the address, then the password,
    # then the one-time code — nothing else (no name, no profile).
    admin.goto(f"{url}/gov/verl/")
    _keycloaks(admin, "Keycloak: shared realm sign-in")
    admin.fill("#username", email)
    if admin.locator("#password").count() == 0:
        admin.click("#kc-login")
        _keycloaks(admin, "Keycloak: shared realm password")
    admin.fill("#password", password)
    admin.click("#kc-login")
    _keycloaks(admin, "Keycloak: shared realm one-time code")
    admin.fill("#otp", totp(secret))
    admin.click("#kc-login")
    admin.wait_for_url(f"{url}/gov/verl/**")
    admin.requests_seen.clear()
    admin.goto(f"{url}/gov/verl/")
    text = admin.inner_text("body")
    assert "Verl" in text and "Gütersloh, Stadt" not in text
    _ours(admin, url, "Verl's Gov Hub start page")
    admin.goto(f"{url}/gov/verl/people")
    assert email in admin.inner_text("main")  # the people page is gov-admin only
    _ours(admin, url, "Verl's people")
    screenshots.save(admin, "signup-verl-gov-hub")
    others = [m.slug for m in world.catalogue.municipalities() if m.slug != "verl"]
    for other in (["guetersloh"] + [o for o in others if o != "guetersloh"])[:3]:
        answer = admin.request.get(f"{url}/gov/{other}/", max_redirects=0)
        # Another tenant's hub sends Verl's administrator to that tenant's sign-in, or does not exist.
        assert answer.status in (302, 303, 404), (other, answer.status)
        assert "/gov/verl" not in answer.headers.get("location", "")
