"""The applicant's side of the signup, with a real store, real SMTP (the mailbox) and a real
proof of work: apply → confirmation e-mail → confirm once → status; refusals change nothing."""

from __future__ import annotations

import dataclasses
import html
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from urbanstack import mail
from urbanstack.operator.ags import MunicipalityDirectory
from urbanstack.runtime.hubs.signup.app import create_signup_app
from urbanstack.runtime.hubs.signup.directory import Directory
from urbanstack.runtime.hubs.signup.proof import Proofs, ProofSettings
from urbanstack.runtime.hubs.signup.service import SignupLimits
from urbanstack.runtime.store.models import SignupRequest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "municipalities.derived.csv"


@pytest.fixture
def directory(tmp_path):
    csv = tmp_path / "dir.csv"
    csv.write_text(FIXTURE.read_text(encoding="utf-8") +
                   "05754044,057540044044,\"Verl, Stadt\",63,Stadt,1,71.3,25691,0,0,33415,8.51,51.88\n",
                   encoding="utf-8")
    return Directory(MunicipalityDirectory.load(csv), {"05754": "Gütersloh", "05711": "Bielefeld"})


@pytest.fixture
def client(metadata_store, mailbox, directory, tmp_path):
    from urbanstack.settings import Settings

    settings = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path),
                                  "URBANSTACK_SMTP_PORT": str(mailbox.settings.smtp_port)})
    app = create_signup_app(settings, metadata_store, directory=directory,
                            tools=lambda: [("pegel-warnung", "Pegelwarnung")],
                            proof_settings=ProofSettings("test-key", cost=50, min_counter=10, spread=20),
                            limits=SignupLimits(per_address=100, per_domain=100, per_ags=100),
                            send_mail=lambda to, subject, text: mail.send(settings, to, subject, text))
    with TestClient(app, base_url="http://127.0.0.1:8080") as test_client:
        yield test_client


def _form(client, **overrides):
    challenge = client.get("/signup/altcha-challenge").json()
    values = {"ags": "05754044", "contact_name": "Anna Schmidt", "email": f"anna-{uuid.uuid4().hex[:6]}@verl.de",
              "plan": "small", "tools": ["pegel-warnung"], "leitweg_id": "04011000-1234512345-06", "terms": "yes",
              "avv": "yes", "altcha": Proofs.solve(challenge)}
    values.update(overrides)
    return values


def _count(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(SignupRequest))


def test_verl_applies_confirms_once_and_sees_the_state(client, mailbox, metadata_store):
    page = client.get("/signup/?q=Verl")
    assert "Verl, Stadt" in page.text and "Gütersloh" in page.text and "Nordrhein-Westfalen" in page.text
    values = _form(client)
    seen = mailbox.box.seen()
    answer = client.post("/signup/", data=values, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    status_url = answer.headers["location"]
    message = mailbox.box.wait_for(values["email"], timeout=10, after=seen)
    assert "Verl" in message.subject
    confirm, status = (message.links(startswith="http://127.0.0.1:8080/signup/confirm/")[0],
                       message.links(startswith="http://127.0.0.1:8080/signup/status/")[0])
    assert status.endswith(status_url.split("?")[0].rsplit("/", 1)[1])
    assert client.get(confirm.replace("http://127.0.0.1:8080", "")).status_code == 200  # GET changes nothing
    first = client.post(confirm.replace("http://127.0.0.1:8080", ""))
    assert first.status_code == 200 and "data-step" not in first.text
    again = client.post(confirm.replace("http://127.0.0.1:8080", ""))
    assert again.status_code == 404  # single use
    assert "Der Link wurde schon verwendet" in html.unescape(again.text)
    state = client.get(status.replace("http://127.0.0.1:8080", ""))
    assert state.status_code == 200 and 'data-step="confirmed"' in state.text
    assert client.get("/signup/status/not-a-token").status_code == 404
    entries = [e.action for e in metadata_store.audit.list("platform-signup", limit=50)]
    assert "signup.received" in entries and "signup.confirmed" in entries
    # A second request for Verl while the first is open: refused, nothing created.
    before = _count(metadata_store)
    duplicate = client.post("/signup/", data=_form(client))
    assert duplicate.status_code == 409 and _count(metadata_store) == before
    assert "Ein Antrag für Verl wird bereits bearbeitet" in _notice(duplicate)


@pytest.mark.parametrize("overrides, field, german", [
    ({"ags": "05754999"}, "ags", "gibt es keine Gemeinde mit diesem AGS"),
    ({"email": "anna@gmail.com"}, "email", "Adressen von Freemail-Anbietern können wir nicht annehmen"),
    ({"leitweg_id": "04011000-1234512345-07"}, "leitweg_id", "Leitweg-ID"),
    ({"altcha": ""}, "altcha", "Die Spam-Schutz-Prüfung (Proof of Work) fehlt"),
    ({"altcha": "e30="}, "altcha", "Die Spam-Schutz-Prüfung (Proof of Work) ist ungültig"),
    ({"terms": ""}, "terms", "Bitte akzeptieren Sie die Nutzungsbedingungen"),
])
def test_bad_input_is_refused_and_nothing_is_created(client, metadata_store, overrides, field, german):
    before = _count(metadata_store)
    answer = client.post("/signup/", data=_form(client, **{"ags": "05711000", **overrides}))
    assert answer.status_code == 422
    assert f'id="{field}-error"' in answer.text
    assert german in _message(answer, field)
    assert _count(metadata_store) == before


def _message(answer, field: str) -> str:
    """The German text of the field's error message on the page."""
    match = re.search(rf'<p id="{field}-error" class="field-error">([^<]*)</p>', answer.text)
    assert match, f"no message for {field}"
    return html.unescape(match.group(1))


def _notice(answer) -> str:
    match = re.search(r'<div class="notice notice-error" role="alert">([^<]*)</div>', answer.text)
    assert match, "no notice on the page"
    return html.unescape(match.group(1))


def test_an_expired_proof_of_work_is_refused(client, metadata_store):
    from urbanstack.runtime.hubs.signup.proof import Proofs

    signup = client.app.state.signup
    stale = Proofs(dataclasses.replace(signup.proofs.settings, ttl=timedelta(seconds=-1)))
    before = _count(metadata_store)
    answer = client.post("/signup/", data=_form(client, ags="05754008", altcha=Proofs.solve(stale.challenge())))
    assert answer.status_code == 422 and "Die Spam-Schutz-Prüfung ist abgelaufen" in _message(answer, "altcha")
    assert _count(metadata_store) == before


@pytest.mark.parametrize("scope, german", [
    ("address", "Aus Ihrem Netz wurden zu viele Anträge gesendet"),
    ("domain", "Heute wurden zu viele Anträge mit Adressen dieser Domain gesendet"),
    ("ags", "Heute wurden zu viele Anträge für diese Gemeinde gesendet"),
])
def test_each_rate_limit_refuses_the_next_attempt_with_its_message(client, metadata_store, scope, german):
    """One attempt more than allowed (from one network, for one domain, for one AGS) is refused
    before anything is stored; the first counts whether it is accepted or not."""
    from urbanstack.runtime.store.models import SignupRateEvent

    signup = client.app.state.signup
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"  # a network of its own for this test
    domain = f"kreis-{uuid.uuid4().hex[:6]}.de"
    with metadata_store.session() as session:  # attempts for Bielefeld by earlier tests
        ags_seen = session.scalar(select(func.count()).select_from(SignupRateEvent).where(
            SignupRateEvent.scope == "ags", SignupRateEvent.key == "05711000"))
    limits = {"address": dict(per_address=1), "domain": dict(per_domain=1), "ags": dict(per_ags=ags_seen + 1)}[scope]
    previous = signup.limits
    signup.limits = SignupLimits(**{"per_address": 100, "per_domain": 100, "per_ags": 100, **limits})
    try:
        with TestClient(client.app, base_url="http://127.0.0.1:8080", client=(address, 50000)) as applicant:
            first = applicant.post("/signup/", data=_form(applicant, ags="05711000", email=f"a@{domain}"),
                                   follow_redirects=False)
            assert first.status_code in (303, 409), first.text  # 409: a request for Bielefeld is open
            before = _count(metadata_store)
            second = applicant.post("/signup/", data=_form(applicant, ags="05711000", email=f"b@{domain}"))
    finally:
        signup.limits = previous
    assert second.status_code == 429 and german in _notice(second)
    assert _count(metadata_store) == before


def test_a_spent_proof_is_refused(client, metadata_store):
    values = _form(client, ags="05754028")
    assert client.post("/signup/", data=values, follow_redirects=False).status_code == 303
    before = _count(metadata_store)
    again = client.post("/signup/", data=dict(values, ags="05754008", email="x@guetersloh.de"))
    assert again.status_code == 422 and _count(metadata_store) == before
    assert "Diese Spam-Schutz-Prüfung wurde schon verwendet" in _message(again, "altcha")


def test_the_honeypot_refuses_quietly(client, metadata_store):
    before = _count(metadata_store)
    answer = client.post("/signup/", data=_form(client, ags="05754008", website="http://spam"))
    assert answer.status_code == 400 and "Das Formular konnte nicht gesendet werden" in _notice(answer)
    assert _count(metadata_store) == before


def test_two_decisions_at_the_same_moment_one_wins(metadata_store):
    """Approve and reject of one request at once (two operators): the state changes once; the
    loser is told (WrongState) and changes nothing — on SQLite and PostgreSQL alike."""
    import threading

    from urbanstack.runtime.store.signup import APPROVED, REJECTED, SignupRequests, WrongState

    requests = SignupRequests(metadata_store)
    for _ in range(5):
        created = requests.create(
            ags=f"0599{uuid.uuid4().int % 10_000:04d}",  # a request of its own each round
            municipality_name="Verl", kreis="Gütersloh", land="Nordrhein-Westfalen", slug="verl",
            contact_name="Anna Schmidt", email=f"a-{uuid.uuid4().hex[:6]}@verl-race.de", email_domain="verl-race.de",
            plan="small", tools=[], leitweg_id="04011000-1234512345-06", terms_version="2026-12", language="de",
            checks={})
        with metadata_store.session() as session:
            session.get(SignupRequest, created.request.id).state = "confirmed"
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def decide(verb):
            barrier.wait()
            try:
                (requests.approve(created.request.id, "ops-1", {"by": "ops-1"}) if verb == "approve"
                 else requests.reject(created.request.id, "ops-2", "Doppelt."))
                outcomes.append(verb)
            except WrongState:
                outcomes.append("refused")

        threads = [threading.Thread(target=decide, args=(verb,)) for verb in ("approve", "reject")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) in (["approve", "refused"], ["refused", "reject"]), outcomes
        final = requests.get(created.request.id)
        assert final.state == (APPROVED if "approve" in outcomes else REJECTED)
        assert (final.decided_by == "ops-1") == (final.state == APPROVED)
