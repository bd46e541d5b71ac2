"""Proof of work for the signup form (ALTCHA, PoW v2), without any third party.

The server issues a signed challenge (``GET /signup/altcha-challenge``); the browser's
self-hosted widget (``altcha.js``) finds the counter and puts the solution into the
form field ``altcha``. The server verifies signature, expiry and solution with the
``altcha`` package, and spends each solution once (the metadata store remembers it,
so no replica accepts it twice). Deterministic mode: the server picks the counter and
signs the derived key, so verifying costs one HMAC instead of re-deriving the key.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from dataclasses import dataclass

import altcha

ALGORITHM = "PBKDF2/SHA-256"


class ProofError(ValueError):
    """Missing, expired, forged, wrong or spent proof of work; the message is an English message id."""


@dataclass(frozen=True)
class ProofSettings:
    secret: str
    cost: int = 5000           # PBKDF2 iterations per try
    min_counter: int = 1000    # the solution lies in [min_counter, min_counter + spread)
    spread: int = 2000
    ttl: datetime.timedelta = datetime.timedelta(minutes=20)

    @property
    def key_secret(self) -> str:
        return hashlib.sha256(f"altcha-key:{self.secret}".encode()).hexdigest()


class Proofs:
    def __init__(self, settings: ProofSettings):
        if not settings.secret:
            raise ValueError("the proof-of-work key must not be empty")
        self.settings = settings

    def challenge(self) -> dict:
        s = self.settings
        expires = datetime.datetime.now(datetime.timezone.utc) + s.ttl
        challenge = altcha.create_challenge(ALGORITHM, s.cost, counter=s.min_counter + secrets.randbelow(s.spread),
                                            expires_at=expires, hmac_secret=s.secret,
                                            hmac_key_secret=s.key_secret)
        return challenge.to_dict()

    def verify(self, payload: str) -> str:
        """The spend key of a valid solution (SHA-256 hex of the challenge's signature);
        ProofError otherwise. The caller records the key so it is never accepted again."""
        if not payload or len(payload) > 10_000:
            raise ProofError("The anti-spam check (proof of work) is missing. Please wait until the check next "
                             "to the submit button says it is done, then send the form again; it needs JavaScript.")
        try:
            result = altcha.verify_solution(payload, self.settings.secret, hmac_key_secret=self.settings.key_secret)
            parsed = altcha.Payload.from_base64(payload)
        except Exception:  # noqa: BLE001 - anything unparsable is a wrong proof
            result, parsed = None, None
        if result is not None and result.expired:
            raise ProofError("The anti-spam check has expired. Please reload the page and send the form again.")
        if result is None or parsed is None or not result.verified:
            raise ProofError("The anti-spam check (proof of work) is not valid. Please reload the page and send "
                             "the form again.")
        return hashlib.sha256(str(parsed.challenge.signature).encode()).hexdigest()

    @staticmethod
    def solve(challenge: dict) -> str:
        """A solved payload, as the widget would send it (tests and scripted clients)."""
        parsed = altcha.Challenge.from_dict(challenge)
        solution = altcha.solve_challenge(parsed)
        if solution is None:
            raise RuntimeError("the challenge could not be solved")
        return altcha.Payload(parsed, solution).to_base64()
