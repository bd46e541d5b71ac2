"""The signup pages and the ops console in a real browser: the ALTCHA widget solves its proof of
work in the page under the platform's CSP (own origin only: nothing goes to altcha.org), the form
is sent, the confirmation link works; every page and state has no WCAG 2.1 A/AA violation
(axe-core). Screenshots: signup-form.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import uuid

import pytest
import screenshots
from conftest import check_accessible, check_own_origin
from hub_sessions import signed_in_cookie

from urbanstack import mail
from urbanstack.operator.ags import MunicipalityDirectory
from urbanstack.runtime.hubs.signup.app import create_signup_app
from urbanstack.runtime.hubs.signup.directory import Directory
from urbanstack.runtime.hubs.signup.proof import ProofSettings
from urbanstack.runtime.hubs.signup.service import SignupLimits



def _wait_for_proof(page) -> None:
    """Until the widget has put its solved payload into the form field ``altcha``."""
    try:
        page.wait_for_function("() => { const f = document.querySelector('input[name=altcha]');"
                               " return f && f.value && f.value.length > 20; }", timeout=60_000)
    except Exception:
        raise AssertionError(f"the proof of work did not finish: console {page.console_errors}, requests "
                             f"{page.requests_seen}, widget {page.inner_html('#altcha')[:1500]}") from None


@pytest.fixture
def signup_url(serve_app, metadata_store, mailbox, tmp_path):
    from signup_harness import write_directory

    from urbanstack.settings import Settings

    csv, _ = write_directory(tmp_path)
    directory = Directory(MunicipalityDirectory.load(csv), {"05754": "Gütersloh", "05711": "Bielefeld"})
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path),
                                  "URBANSTACK_SMTP_PORT": str(mailbox.settings.smtp_port)})
    app = create_signup_app(settings, metadata_store, directory=directory,
                            tools=lambda: [("pegel-warnung", "Pegelwarnung")],
                            proof_settings=ProofSettings("browser-test-key", cost=1000, min_counter=50, spread=100),
                            limits=SignupLimits(per_address=100, per_domain=100, per_ags=100),
                            send_mail=lambda to, subject, text: mail.send(settings, to, subject, text))
    return serve_app(app), metadata_store


def test_an_applicant_solves_the_proof_of_work_in_the_browser_and_sends_the_request(page, signup_url, mailbox):
    url, store = signup_url
    page.goto(f"{url}/signup/?q=Verl")
    check_accessible(page, "signup search hits")
    page.click("a[href^='/signup/?ags=05754044']")
    assert page.input_value("#ags") == "05754044"
    page.fill("#contact_name", "Anna Schmidt")
    email = f"anna.schmidt@verl-{uuid.uuid4().hex[:6]}.de"
    page.fill("#email", email)
    page.check("#tools-pegel-warnung")
    page.fill("#leitweg_id", "04011000-1234512345-06")
    page.check("#terms")
    page.check("#avv")
    # The widget fetches its challenge from /signup/altcha-challenge and solves it in a worker of the own origin.
    _wait_for_proof(page)
    check_accessible(page, "signup form filled, proof of work solved")
    screenshots.save(page, "signup-form")
    seen = mailbox.box.seen()
    page.click("button[type=submit]:has-text('Antrag senden')")
    page.wait_for_url(f"{url}/signup/status/**")
    assert "Eingegangen" in page.inner_text("main") or "eingegangen" in page.inner_text("main")
    check_accessible(page, "signup status received")
    assert page.console_errors == []
    check_own_origin(page, url)
    assert not [u for u in page.requests_seen if "altcha.org" in u]
    assert any(u.startswith(f"{url}/signup/altcha-challenge") for u in page.requests_seen)

    message = mailbox.box.wait_for(email, timeout=20, after=seen)
    confirm = message.links(startswith=f"{url}/signup/confirm/")[0]
    page.goto(confirm)
    check_accessible(page, "confirm page")
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    check_accessible(page, "confirmed")
    page.goto(confirm)
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    check_accessible(page, "link used before")
    check_own_origin(page, url)


def test_refusals_and_the_ops_console_are_accessible(page, signup_url):
    url, store = signup_url
    page.goto(f"{url}/signup/?ags=05754044")
    page.fill("#email", "anna@gmail.com")
    page.click("button[type=submit]:has-text('Antrag senden')")
    page.wait_for_selector(".error-summary")
    assert page.locator("#email-error").count() == 1 and page.locator("#contact_name-error").count() == 1
    check_accessible(page, "signup form with errors")
    page.goto(f"{url}/signup/?lang=en")
    check_accessible(page, "signup form in English")
    page.goto(f"{url}/signup/status/not-a-token")
    check_accessible(page, "unknown status link")

    # The console with a platform-admin session (the real Keycloak sign-in: tests/integration/test_signup_ops.py).
    from urbanstack.runtime.hubs.signup.ops_auth import COOKIE, PLATFORM_REALM
    from urbanstack.runtime.store.signup import SignupRequests

    created = SignupRequests(store).create(
        ags="05754048", municipality_name="Versmold", kreis="Gütersloh", land="Nordrhein-Westfalen", slug="versmold",
        contact_name="Bernd Berg", email="bernd@versmold-test.de", email_domain="versmold-test.de", plan="small",
        tools=[], leitweg_id="04011000-1234512345-06", terms_version="2026-12", language="de",
        checks={"directory": "Versmold, Gütersloh, Nordrhein-Westfalen", "email_domain": "versmold-test.de",
                "free_mail": False, "leitweg_id": True, "proof_of_work": True, "existing_tenant": None,
                "slug": "versmold"})
    _, token, _ = signed_in_cookie(store, PLATFORM_REALM, ["platform-admin"], subject="ops-1", name="Olga Betrieb")
    page.context.add_cookies([{"name": COOKIE, "value": token, "url": url}])
    page.goto(f"{url}/ops/")
    assert "Versmold" in page.inner_text("main")
    check_accessible(page, "ops queue")
    page.click(f"a[href='/ops/requests/{created.request.id}']")
    page.wait_for_url(f"{url}/ops/requests/**")
    check_accessible(page, "ops request")
    page.click("form[action$='/reject'] button[type=submit]")  # no reason: the browser's required check
    page.fill("#reason", "Die Adresse gehört nicht zur Stadtverwaltung.")
    page.click("form[action$='/reject'] button[type=submit]")
    page.wait_for_load_state()
    assert "Die Adresse gehört nicht zur Stadtverwaltung." in page.inner_text("main")
    check_accessible(page, "ops request rejected")
    # The refused form's 422 and the unknown link's 404 are the only console errors: no CSP refusal.
    assert [e for e in page.console_errors if not e.startswith("Failed to load resource")] == [], page.console_errors
    check_own_origin(page, url)
