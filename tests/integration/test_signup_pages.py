"""The applicant's side of the signup, with a real store, real SMTP (the mailbox) and a real
proof of work: apply → confirmation e-mail → confirm once → status; refusals change nothing."""

from __future__ import annotations

import uuid
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
    state = client.get(status.replace("http://127.0.0.1:8080", ""))
    assert state.status_code == 200 and 'data-step="confirmed"' in state.text
    assert client.get("/signup/status/not-a-token").status_code == 404
    entries = [e.action for e in metadata_store.audit.list("platform-signup", limit=50)]
    assert "signup.received" in entries and "signup.confirmed" in entries
    # A second request for Verl while the first is open: refused, nothing created.
    before = _count(metadata_store)
    duplicate = client.post("/signup/", data=_form(client))
    assert duplicate.status_code == 409 and _count(metadata_store) == before


@pytest.mark.parametrize("overrides, field", [
    ({"ags": "05754999"}, "ags"),
    ({"email": "anna@gmail.com"}, "email"),
    ({"leitweg_id": "04011000-1234512345-07"}, "leitweg_id"),
    ({"altcha": ""}, "altcha"),
    ({"altcha": "e30="}, "altcha"),
    ({"terms": ""}, "terms"),
])
def test_bad_input_is_refused_and_nothing_is_created(client, metadata_store, overrides, field):
    before = _count(metadata_store)
    answer = client.post("/signup/", data=_form(client, **{"ags": "05711000", **overrides}))
    assert answer.status_code == 422
    assert f'id="{field}-error"' in answer.text
    assert _count(metadata_store) == before


def test_a_spent_proof_is_refused(client, metadata_store):
    values = _form(client, ags="05754028")
    assert client.post("/signup/", data=values, follow_redirects=False).status_code == 303
    before = _count(metadata_store)
    again = client.post("/signup/", data=dict(values, ags="05754008", email="x@guetersloh.de"))
    assert again.status_code == 422 and 'id="altcha-error"' in again.text and _count(metadata_store) == before


def test_the_honeypot_refuses_quietly(client, metadata_store):
    before = _count(metadata_store)
    assert client.post("/signup/", data=_form(client, ags="05754008", website="http://spam")).status_code == 400
    assert _count(metadata_store) == before
