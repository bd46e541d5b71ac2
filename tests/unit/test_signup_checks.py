"""Signup checks without services: Leitweg-ID, free-mail, slug, proof of work."""

from __future__ import annotations

import pytest

from urbanstack.operator import naming
from urbanstack.runtime.hubs.signup import checks, leitweg
from urbanstack.runtime.hubs.signup.proof import ProofError, Proofs, ProofSettings


@pytest.mark.parametrize("value", ["04011000-1234512345-06", "991-33333TEST-33", "991-33333test-33"])
def test_known_valid_leitweg_ids(value):
    assert leitweg.problem(value) is None


@pytest.mark.parametrize("value, says", [
    ("04011000-1234512345-07", "check digits"),
    ("991-33333TEST-34", "check digits"),
    ("0401100012345", "looks like"),
    ("4-1234-06", "looks like"),
    ("04011000-12345_12345-06", "looks like"),
    ("", "looks like"),
])
def test_invalid_leitweg_ids_say_what_is_wrong(value, says):
    assert says in leitweg.problem(value)


def test_check_digits_are_computed_over_coarse_and_fine_address():
    assert leitweg.check_digits("04011000", "1234512345") == "06"
    assert leitweg.check_digits("991", "33333TEST") == "33"


@pytest.mark.parametrize("address", ["anna@gmail.com", "x@GMX.de", "a@web.de", "b@mail.t-online.de", "c@posteo.de"])
def test_free_mail_is_refused_with_a_reason(address):
    assert "free-mail" in checks.email_problem(address)


@pytest.mark.parametrize("address", ["anna.schmidt@verl.de", "it@kreis-guetersloh.de", "a@stadt.verl.de"])
def test_official_addresses_pass(address):
    assert checks.email_problem(address) is None


@pytest.mark.parametrize("address", ["anna", "anna@", "@verl.de", "anna@verl", "a b@verl.de"])
def test_malformed_addresses_are_refused(address):
    assert "complete e-mail address" in checks.email_problem(address)


@pytest.mark.parametrize("official, slug", [("Verl, Stadt", "verl"), ("Rheda-Wiedenbrück, Stadt", "rheda-wiedenbrueck"),
                                            ("Halle (Westf.), Stadt", "halle-westf"),
                                            ("Schloß Holte-Stukenbrock, Stadt", "schloss-holte-stukenbrock")])
def test_slug_from_the_directory_name(official, slug):
    assert naming.slugify(official) == slug


def test_proof_of_work_verifies_once_solved_and_refuses_forgeries():
    proofs = Proofs(ProofSettings("k1", cost=20, min_counter=5, spread=10))
    payload = Proofs.solve(proofs.challenge())
    assert len(proofs.verify(payload)) == 64
    with pytest.raises(ProofError, match="not valid"):
        Proofs(ProofSettings("another key", cost=20)).verify(payload)
    with pytest.raises(ProofError, match="missing"):
        proofs.verify("")
    with pytest.raises(ProofError, match="not valid"):
        proofs.verify("bm90IGEgcGF5bG9hZA==")


def test_an_expired_proof_is_named_so():
    import datetime

    proofs = Proofs(ProofSettings("k1", cost=20, min_counter=5, spread=10, ttl=datetime.timedelta(seconds=-5)))
    with pytest.raises(ProofError, match="expired"):
        proofs.verify(Proofs.solve(proofs.challenge()))


@pytest.mark.parametrize("typed, names", [
    ("Anna Schmidt", ("Anna", "Schmidt")),
    ("  Dr. Anna Maria   Schmidt ", ("Dr. Anna Maria", "Schmidt")),
    ("Anna", None),  # one word: Keycloak asks the person rather than the signup guessing
    ("", None),
    (None, None),
])
def test_the_contact_persons_name_becomes_first_and_last_name(typed, names):
    from urbanstack.runtime.hubs.signup.service import split_name

    assert split_name(typed) == names
