"""Signup requests in the metadata store: creation with the one-open-request-per-AGS rule,
single-use confirmation links, rate limits every replica agrees on, spent proofs of work,
the ops decisions, and the purge of personal data.

Tokens (status link, confirmation link) are returned once and stored only as SHA-256 hex.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from urbanstack.runtime.store.models import SignupProofUse, SignupRateEvent, SignupRequest, utcnow

CONFIRM_VALIDITY = timedelta(hours=24)
MAX_QUEUE = 200
RECEIVED, CONFIRMED, APPROVED, READY, REJECTED, ABANDONED = (
    "received", "confirmed", "approved", "ready", "rejected", "abandoned")
STATES = (RECEIVED, CONFIRMED, APPROVED, READY, REJECTED, ABANDONED)
OPEN_STATES = (RECEIVED, CONFIRMED, APPROVED, READY)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DuplicateRequest(RuntimeError):
    """Another request for this municipality is open."""


class WrongState(RuntimeError):
    """The request is not in a state that allows this step."""


@dataclass(frozen=True)
class Created:
    request: SignupRequest
    status_token: str
    confirm_token: str


@dataclass(frozen=True)
class Limit:
    scope: str      # address | domain | ags
    count: int
    window: timedelta


class SignupRequests:
    def __init__(self, store):
        self._store = store

    # Abuse protection -------------------------------------------------------
    def over_limit(self, keys: dict[str, str], limits: tuple[Limit, ...], now: datetime | None = None) -> str | None:
        """The first scope whose limit this attempt would exceed (nothing is counted then), else
        None after counting the attempt in every scope."""
        now = now or utcnow()
        with self._store.session() as session:
            for limit in limits:
                key = keys.get(limit.scope)
                if key is None:
                    continue
                seen = session.scalar(select(func.count()).select_from(SignupRateEvent).where(
                    SignupRateEvent.scope == limit.scope, SignupRateEvent.key == key,
                    SignupRateEvent.at > now - limit.window))
                if seen >= limit.count:
                    return limit.scope
            for limit in limits:
                if keys.get(limit.scope) is not None:
                    session.add(SignupRateEvent(scope=limit.scope, key=keys[limit.scope][:255], at=now))
        return None

    def spend_proof(self, key: str) -> bool:
        """Record a proof of work as spent; False if it was spent before."""
        try:
            with self._store.session() as session:
                session.add(SignupProofUse(id=key, used_at=utcnow()))
        except IntegrityError:
            return False
        return True

    # Requests ----------------------------------------------------------------
    def create(self, **fields: Any) -> Created:
        """A new request in state ``received`` with fresh status and confirmation tokens.
        DuplicateRequest if another request for the AGS is open (an unconfirmed one whose
        link has expired is abandoned first)."""
        now = utcnow()
        status_token, confirm_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        ags = fields["ags"]
        with self._store.session() as session:
            session.execute(update(SignupRequest).where(
                SignupRequest.open_ags == ags, SignupRequest.state == RECEIVED,
                SignupRequest.confirm_expires_at < now).values(state=ABANDONED, open_ags=None, updated_at=now))
        request = SignupRequest(status_token_hash=token_hash(status_token), confirm_token_hash=token_hash(confirm_token),
                                confirm_expires_at=now + CONFIRM_VALIDITY, state=RECEIVED, open_ags=ags,
                                created_at=now, updated_at=now, **fields)
        try:
            with self._store.session() as session:
                session.add(request)
        except IntegrityError:
            raise DuplicateRequest(ags) from None
        return Created(request, status_token, confirm_token)

    def get(self, request_id: str) -> SignupRequest | None:
        with self._store.session() as session:
            return session.get(SignupRequest, request_id)

    def by_status_token(self, token: str) -> SignupRequest | None:
        with self._store.session() as session:
            return session.scalar(select(SignupRequest).where(SignupRequest.status_token_hash == token_hash(token)))

    def confirm(self, token: str, now: datetime | None = None) -> tuple[str, SignupRequest | None]:
        """(outcome, request): ``confirmed``, ``unknown`` (no such link, or already used: a used
        link's hash is gone), or ``expired``."""
        now = now or utcnow()
        with self._store.session() as session:
            request = session.scalar(select(SignupRequest).where(
                SignupRequest.confirm_token_hash == token_hash(token)).with_for_update())
            if request is None:
                return "unknown", None
            if request.confirm_expires_at is None or request.confirm_expires_at < now or request.state != RECEIVED:
                return "expired", request
            request.confirm_token_hash = None  # single use
            request.state, request.confirmed_at, request.updated_at = CONFIRMED, now, now
            return "confirmed", request

    def queue(self, limit: int = MAX_QUEUE) -> list[SignupRequest]:
        """Newest first; open requests before decided ones."""
        with self._store.session() as session:
            open_first = SignupRequest.state.in_((RECEIVED, CONFIRMED, APPROVED))
            return list(session.scalars(select(SignupRequest).order_by(open_first.desc(),
                                                                      SignupRequest.created_at.desc())
                                        .limit(max(1, min(limit, MAX_QUEUE)))))

    def _transition(self, request_id: str, allowed: tuple[str, ...], **values: Any) -> SignupRequest:
        # One conditional UPDATE (compare and set): of two deciders at the same moment exactly one
        # wins, on SQLite too, where SELECT ... FOR UPDATE locks nothing.
        with self._store.session() as session:
            changed = session.execute(update(SignupRequest).where(
                SignupRequest.id == request_id, SignupRequest.state.in_(allowed)).values(updated_at=utcnow(), **values))
            request = session.get(SignupRequest, request_id, populate_existing=True)
            if request is None:
                raise LookupError(request_id)
            if changed.rowcount != 1:
                raise WrongState(request.state)
            return request

    def approve(self, request_id: str, actor: str, checks: dict[str, Any]) -> SignupRequest:
        return self._transition(request_id, (CONFIRMED,), state=APPROVED, decided_by=actor, decided_at=utcnow(),
                                checks=checks)

    def undo_approval(self, request_id: str, checks: dict[str, Any]) -> SignupRequest:
        """The Municipality could not be created: back to confirmed, with the reason in the checks."""
        return self._transition(request_id, (APPROVED,), state=CONFIRMED, decided_by=None, decided_at=None,
                                checks=checks)

    def reject(self, request_id: str, actor: str, reason: str) -> SignupRequest:
        return self._transition(request_id, (RECEIVED, CONFIRMED), state=REJECTED, open_ags=None,
                                reject_reason=reason, decided_by=actor, decided_at=utcnow(), confirm_token_hash=None)

    def mark_ready(self, request_id: str) -> SignupRequest:
        return self._transition(request_id, (APPROVED,), state=READY, ready_at=utcnow())

    def mark_invited(self, request_id: str) -> SignupRequest:
        return self._transition(request_id, (READY,), invited_at=utcnow())

    def update_checks(self, request_id: str, checks: dict[str, Any]) -> None:
        with self._store.session() as session:
            session.execute(update(SignupRequest).where(SignupRequest.id == request_id).values(checks=checks))

    # Retention ---------------------------------------------------------------
    def purge(self, retention: timedelta, now: datetime | None = None) -> list[str]:
        """Empty the personal data of requests rejected, or never confirmed, longer than
        ``retention`` ago; drop rate-limit events and spent proofs older than two days. Returns
        the ids of the purged requests."""
        now = now or utcnow()
        cutoff = now - retention
        with self._store.session() as session:
            stale = select(SignupRequest.id).where(SignupRequest.purged_at.is_(None)).where(
                ((SignupRequest.state == REJECTED) & (SignupRequest.decided_at < cutoff))
                | ((SignupRequest.state.in_((RECEIVED, ABANDONED))) & (SignupRequest.confirm_expires_at < cutoff)))
            ids = list(session.scalars(stale))
            if ids:
                session.execute(update(SignupRequest).where(SignupRequest.id.in_(ids)).values(
                    contact_name=None, email=None, leitweg_id=None, reject_reason=None, confirm_token_hash=None,
                    open_ags=None, purged_at=now, updated_at=now))
                session.execute(update(SignupRequest).where(SignupRequest.id.in_(ids),
                                                            SignupRequest.state == RECEIVED)
                                .values(state=ABANDONED))
            session.execute(delete(SignupRateEvent).where(SignupRateEvent.at < now - timedelta(days=2)))
            session.execute(delete(SignupProofUse).where(SignupProofUse.used_at < now - timedelta(days=2)))
        return ids
