"""Active users per month: the API meters each verified user once per municipality and UTC
day with an id derived from both, through the real Kafka meter topic into the ledger in the
real warehouse engine (chDB); distinct users per month are counted exactly."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from test_metering import _municipality, drain, ledger, meter_topic, user_day  # noqa: F401 - fixtures

from urbanstack.devplatform import kafka
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.runtime.metering.api_meter import ApiMeter
from urbanstack.runtime.metering.emitter import MeterEmitter
from urbanstack.runtime.metering.events import USER_DAYS

pytestmark = pytest.mark.platform


def test_each_user_counts_once_per_day_whichever_replica_and_however_often(
        platform, meter_topic, ledger, issuer, settings, warehouse):
    suffix = uuid.uuid4().hex[:6]
    gue, bi = f"guetersloh-a{suffix}", f"bielefeld-a{suffix}"
    catalogue = Catalogue([_municipality(gue, "05754008"), _municipality(bi, "05711000")], [])
    replicas = []
    for _ in range(2):
        meter = ApiMeter(MeterEmitter(kafka.admin_config(platform), topic=meter_topic), window_seconds=3600)
        replicas.append((create_app(settings, catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                                    meter=meter, ledger=ledger), meter))

    def bearer(tenant, user):
        return {"Authorization": f"Bearer {issuer.token(tenant=tenant, roles=('gov-viewer',), sub=user)}"}

    for app, _ in replicas:
        with TestClient(app, raise_server_exceptions=False) as client:
            for tenant, user in ((gue, "anna"), (gue, "anna"), (gue, "ben"), (bi, "anna")):
                assert client.get("/api/v1/datasets", headers=bearer(tenant, user)).status_code == 200
            client.post("/graphql", json={"query": "{ datasets { id } }"}, headers=bearer(gue, "carla"))
            client.get("/api/v1/datasets")   # anonymous: no user
    for _, meter in replicas:
        meter.close()
    drain(platform, ledger, meter_topic)

    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=1), now + timedelta(days=1)
    assert ledger.active_users(start, end) == {gue: 3, bi: 1}
    # Two replicas sent the same ids: each user-day is recorded once.
    assert ledger.totals(start - timedelta(days=1), end, [gue])[gue][USER_DAYS] == 3
    app, _ = replicas[0]
    with TestClient(app) as client:
        answer = client.get("/api/v1/usage", headers=bearer(gue, "anna")).json()
    assert answer["activeUsers"] == 3 and answer["totals"][USER_DAYS] == 3


def test_distinct_users_of_a_month_are_exact_over_its_days(ledger):
    """A month of user-days with overlaps, repeats and a neighbouring month: the count is the
    number of distinct users, computed independently here."""
    rng = random.Random(13)
    subject = "verl"
    users = [f"user-{n}" for n in range(300)]
    november = [date(2026, 11, d) for d in range(1, 31)]
    seen: set[str] = set()
    events = []
    for day in november:
        for user in rng.sample(users, 40):
            seen.add(user)
            events.append(user_day(subject, user, day))
    events += events[:500]                                         # replayed copies
    events += [user_day(subject, "only-in-december", date(2026, 12, 2))]
    rng.shuffle(events)
    ledger.record(events)
    assert ledger.active_users(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc),
                               [subject]) == {subject: len(seen)}
    assert ledger.active_users(datetime(2026, 12, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc),
                               [subject]) == {subject: 1}
    assert 40 < len(seen) < 300   # overlaps and users never seen: a count of events would be wrong
    assert sum(q for q in ledger.hours_of(USER_DAYS, datetime(2026, 11, 1, tzinfo=timezone.utc),
               datetime(2026, 12, 1, tzinfo=timezone.utc))[subject].values()) == 30 * 40
