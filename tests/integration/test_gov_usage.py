"""The Gov Hub's usage page and statement downloads over the real ledger (chDB) and the real
metadata store (SQLite and PostgreSQL); the hubs' own queries metered through the real
Kafka meter topic into the ledger.

Sessions are made in the store (tests/hub_sessions.py); the Keycloak sign-in is tested in
test_gov_signin.py. The page is built by ``urbanstack.serve.web_app`` over an API app with
the ledger, as ``urbanstack serve`` builds it."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hub_harness import page_text
from hub_sessions import signed_in_cookie
from test_metering import PRICE_BOOK, drain, ingest_event, ledger, meter_topic  # noqa: F401 - fixtures

from urbanstack import serve
from urbanstack.operator.models import Municipality
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.runtime.metering.api_meter import ApiMeter
from urbanstack.runtime.metering.emitter import MeterEmitter
from urbanstack.runtime.metering.events import API_BYTES_READ, API_QUERIES, API_ROWS_READ, ROWS_STORED
from urbanstack.runtime.metering.ledger import BILLING_ZONE, month_range
from urbanstack.runtime.metering.statements import Statements
from urbanstack.runtime.metering.xrechnung import Address, Seller

pytestmark = pytest.mark.platform

UTC = timezone.utc
SELLER = Seller("Urban Stack Plattformbetrieb GmbH", Address("Musterweg 1", "33602", "Bielefeld"), "DE123456789",
                "Erika Mustermann", "+49 521 000000", "abrechnung@urbanstack.example", "rechnungen@urbanstack.example",
                "DE02120300000000202051", "Musterbank")
ROLES = {"gov-admin": ("gov-admin", "gov-editor", "gov-viewer"), "gov-editor": ("gov-editor", "gov-viewer"),
         "gov-viewer": ("gov-viewer",)}


def _municipality(slug: str, name: str, ags: str, residents: int, billing: dict | None = None,
                  plan: str = "small") -> Municipality:
    spec = {"displayName": name, "ags": ags, "admins": [f"admin@{slug}.example.org"], "plan": {"name": plan}}
    if billing:
        spec["billing"] = billing
    return Municipality.model_validate({"apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality",
                                        "metadata": {"name": slug}, "spec": spec,
                                        "status": {"phase": "Ready", "usage": {"residents": residents}}})


def months_back(month, count):
    for _ in range(count):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


class UsageWorld:
    """Gütersloh (with billing data): 1,500 rows and 12 faulty records this month, 2,345 rows in a
    frozen earlier month. Bielefeld (no billing data): 4,242 rows this month."""

    def __init__(self, ledger, settings, issuer, warehouse, store):
        suffix = uuid.uuid4().hex[:6]
        self.gue, self.bi, self.hw = f"guetersloh-g{suffix}", f"bielefeld-g{suffix}", f"harsewinkel-g{suffix}"
        self.catalogue = Catalogue([
            _municipality(self.gue, "Stadt Gütersloh", "05754008", 102_930, {
                "leitwegId": "05754008-0001-86", "street": "Berliner Straße 70", "postalCode": "33330",
                "city": "Gütersloh", "email": "e-rechnung@guetersloh.example"}),
            _municipality(self.bi, "Stadt Bielefeld", "05711000", 338_332),
            # a plan the test's price list has no prices for
            _municipality(self.hw, "Stadt Harsewinkel", "05754012", 25_000, plan="medium")], [])
        # each municipality's plan from the catalogue, as urbanstack serve prices them
        self.statements = Statements(ledger, prices=PRICE_BOOK,
                                     plan_of=lambda slug: self.catalogue.municipality(slug).spec.plan.name.value)
        now = datetime.now(UTC)
        self.this = now.astimezone(BILLING_ZONE).date().replace(day=1)
        # two months back: frozen whatever day of the month the test runs
        self.frozen_month = months_back(self.this, 2)
        start, end = month_range(self.frozen_month)
        ledger.record([ingest_event(self.gue, now - timedelta(minutes=3), 1500, 12, 0),
                       ingest_event(self.bi, now - timedelta(minutes=3), 4242, 0, 0),
                       ingest_event(self.gue, start + timedelta(days=3), 2345, 0, 100_000)])
        self.frozen = self.statements.freeze([self.gue, self.bi], self.frozen_month,
                                             now=end + timedelta(days=6))[self.gue]
        self.api = create_app(settings, self.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                              ledger=ledger, statements=self.statements, seller=SELLER)
        self.web = serve.web_app(settings, self.catalogue, self.api, store)
        self.client = TestClient(serve.PathDispatch(self.api, self.web), follow_redirects=False)
        self.store, self.issuer = store, issuer

    def staff(self, tenant: str, role: str = "gov-admin") -> dict:
        cookie, token, _csrf = signed_in_cookie(self.store, tenant, ROLES[role], subject=f"{role}-{tenant}")
        return {"Cookie": f"{cookie}={token}"}


@pytest.fixture(scope="module")
def module_ledger(warehouse):
    from urbanstack.runtime.metering.ledger import Ledger

    found = Ledger(warehouse, database=f"_urbanstack_metering_g{uuid.uuid4().hex[:8]}")
    yield found
    warehouse.command(f"DROP DATABASE IF EXISTS `{found.database}`")


@pytest.fixture(scope="module")
def world(module_ledger, settings, issuer, warehouse, metadata_store):
    found = UsageWorld(module_ledger, settings, issuer, warehouse, metadata_store)
    with found.client:
        yield found


def row_of(page: str, meter: str) -> str:
    match = re.search(rf'<tr data-meter="{meter}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {meter}: {page_text(page)}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))


def test_the_admin_sees_this_months_usage_against_the_included_amounts_and_the_statements(world):
    page = world.client.get(f"/gov/{world.gue}/usage", headers=world.staff(world.gue))
    assert page.status_code == 200, page_text(page.text)
    text = page.text
    # 1,500 rows stored of 1,000 included (the test price list): 150 %, said in words, not only by a colour.
    rows = row_of(text, ROWS_STORED)
    assert "1.500 Zeilen" in rows and "1.000 Zeilen" in rows and "150 %" in rows
    assert "über der enthaltenen Menge" in rows
    assert re.search(r'<meter id="share-rows_stored"[^>]*value="100"[^>]*aria-label="Gespeicherte Zeilen: 150 %', text)
    faulty = row_of(text, "dead_lettered")
    assert "12 Datensätze" in faulty and "10 Datensätze" in faulty and "120 %" in faulty
    readings = row_of(text, "readings_ingested")
    assert "1.512 Messwerte" in readings and "151 %" in readings
    # the daily limit of the plan (small: 1,000,000 readings a day) with today's readings
    assert "Messwerte heute (UTC-Tag)" in text and "1.000.000" in text
    assert "&lt; 1 %" in text       # 1,512 of 1,000,000: a little, not "0 %"
    # statements: this month a draft, the frozen month with its hash and downloads of all three formats
    frozen = f"{world.frozen_month:%Y-%m}"
    this = f"{world.this:%Y-%m}"
    assert f'data-month="{this}"' in text and f'data-month="{frozen}"' in text
    frozen_row = re.search(rf'<tr data-month="{frozen}">(.*?)</tr>', text, re.S).group(1)
    assert "Festgeschrieben" in frozen_row and world.frozen.hash in frozen_row
    total = f"{world.frozen.total:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
    assert f"{total} EUR" in frozen_row
    for extension in ("csv", "json", "xml"):
        assert f'href="/gov/{world.gue}/usage/statements/{frozen}.{extension}"' in frozen_row
    this_row = re.search(rf'<tr data-month="{this}">(.*?)</tr>', text, re.S).group(1)
    assert "Entwurf" in this_row and "keiner (Entwurf)" in this_row
    # the month before stays visible as a draft until it is frozen: nothing used, the base fee
    previous = re.search(rf'<tr data-month="{months_back(world.this, 1):%Y-%m}">(.*?)</tr>', text, re.S).group(1)
    assert "Entwurf" in previous and "49,00 EUR" in previous
    # Bielefeld's figures are nowhere on Gütersloh's page
    assert "4.242" not in text and world.bi not in text
    # the navigation links the page for the admin
    assert f'<a href="/gov/{world.gue}/usage" aria-current="page">Nutzung</a>' in text


def test_the_downloads_are_the_statement_exactly(world):
    headers = world.staff(world.gue)
    frozen = f"{world.frozen_month:%Y-%m}"
    base = f"/gov/{world.gue}/usage/statements/{frozen}"
    as_csv = world.client.get(f"{base}.csv", headers=headers)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert f'filename="statement-{world.gue}-{frozen}.csv"' in as_csv.headers["content-disposition"]
    assert as_csv.text == world.frozen.to_csv()
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert [r for r in rows if r[3] == ROWS_STORED][0][6] == "2345"
    as_json = world.client.get(f"{base}.json", headers=headers).json()
    assert as_json["hash"] == world.frozen.hash and as_json["status"] == "frozen" and as_json["subject"] == world.gue
    # the same statement as the API's (one truth for both)
    assert as_json == world.client.get(f"/api/v1/statements/{frozen}", headers={
        "Authorization": "Bearer " + world.issuer.token(tenant=world.gue, roles=("gov-admin",))}).json()
    invoice = world.client.get(f"{base}.xml", headers=headers)
    assert invoice.status_code == 200 and invoice.headers["content-type"].startswith("application/xml")
    assert "<cbc:BuyerReference>05754008-0001-86</cbc:BuyerReference>" in invoice.text
    assert f"<cbc:ID>US-{world.gue}-{frozen}</cbc:ID>" in invoice.text
    # this month's draft, as it stands
    draft = world.client.get(f"/gov/{world.gue}/usage/statements/{world.this:%Y-%m}.json", headers=headers).json()
    assert draft["status"] == "draft" and draft["hash"] is None
    assert next(line for line in draft["lines"] if line["meter"] == ROWS_STORED)["used"] == 1500
    # months outside the history, malformed months and unknown formats: not found
    for path in (f"{world.this.replace(year=world.this.year + 1):%Y-%m}.csv", "2026-13.csv", "latest.csv",
                 f"{frozen}.pdf", f"{months_back(world.this, 30):%Y-%m}.csv"):
        assert world.client.get(f"/gov/{world.gue}/usage/statements/{path}", headers=headers).status_code == 404, path


def test_bielefeld_never_sees_guetersloh_usage_through_the_page_or_the_downloads(world):
    bielefeld = world.staff(world.bi)
    frozen = f"{world.frozen_month:%Y-%m}"
    for path in ("usage", f"usage/statements/{frozen}.csv", f"usage/statements/{frozen}.json",
                 f"usage/statements/{frozen}.xml", f"usage/statements/{world.this:%Y-%m}.json"):
        response = world.client.get(f"/gov/{world.gue}/{path}", headers=bielefeld)
        # a session of another municipality is no session here: sign in to Gütersloh first
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"].startswith(f"/gov/{world.gue}/login")
        assert "2345" not in response.text and "1.500" not in response.text
    own = world.client.get(f"/gov/{world.bi}/usage", headers=bielefeld)
    assert own.status_code == 200
    assert "4.242 Zeilen" in row_of(own.text, ROWS_STORED)
    assert world.gue not in own.text and world.frozen.hash not in own.text
    # Bielefeld's own frozen month is its own (nothing used), and it has no billing data: no e-invoice link
    assert f'href="/gov/{world.bi}/usage/statements/{frozen}.csv"' in own.text
    assert ".xml" not in own.text and "Leitweg-ID" in own.text
    mine = world.client.get(f"/gov/{world.bi}/usage/statements/{frozen}.csv", headers=bielefeld)
    assert mine.status_code == 200 and world.gue not in mine.text and world.bi in mine.text
    refused = world.client.get(f"/gov/{world.bi}/usage/statements/{frozen}.xml", headers=bielefeld)
    assert refused.status_code == 409 and "Leitweg-ID" in page_text(refused.text)


def test_a_plan_without_prices_is_said_plainly(world):
    headers = world.staff(world.hw)
    page = world.client.get(f"/gov/{world.hw}/usage", headers=headers)
    assert page.status_code == 200
    assert "keine Preise für den Tarif von Stadt Harsewinkel" in page_text(page.text)
    assert world.client.get(f"/gov/{world.hw}/usage/statements/{world.this:%Y-%m}.csv",
                            headers=headers).status_code == 503


def test_the_api_answers_a_plan_without_prices_with_503_and_says_what_to_do(world):
    """The same municipality through /api/v1/statements: no 500, but what lacks prices and who mends it."""
    bearer = {"Authorization": f"Bearer {world.issuer.token(tenant=world.hw, roles=('gov-admin',))}"}
    for path in ("/api/v1/statements", f"/api/v1/statements/{world.this:%Y-%m}",
                 f"/api/v1/statements/{world.this:%Y-%m}?format=csv"):
        answer = world.client.get(path, headers=bearer)
        assert answer.status_code == 503, (path, answer.status_code, answer.text[:300])
        error = answer.json()["error"]
        assert error["code"] == "plan_not_priced" and error["plan"] == "medium", error
        assert "'medium'" in error["message"] and world.hw in error["message"]
        assert "operators must add it to the price book (URBANSTACK_PRICE_BOOK" in error["message"]
    # the others' statements are priced as before
    gue = {"Authorization": f"Bearer {world.issuer.token(tenant=world.gue, roles=('gov-admin',))}"}
    assert world.client.get("/api/v1/statements", headers=gue).status_code == 200


def test_editors_and_viewers_do_not_see_finance_data(world):
    for role in ("gov-editor", "gov-viewer"):
        headers = world.staff(world.gue, role)
        assert world.client.get(f"/gov/{world.gue}/usage", headers=headers).status_code == 403
        download = world.client.get(f"/gov/{world.gue}/usage/statements/{world.frozen_month:%Y-%m}.csv",
                                    headers=headers)
        assert download.status_code == 403 and "2345" not in download.text
        start = world.client.get(f"/gov/{world.gue}/", headers=headers)
        assert start.status_code == 200 and f'href="/gov/{world.gue}/usage"' not in start.text


def ops_headers(store, roles=("platform-admin",)) -> dict:
    from urbanstack.runtime.hubs.signup.ops_auth import COOKIE, PLATFORM_REALM
    from urbanstack.runtime.store.models import utcnow

    token, _row = store.sessions.create(PLATFORM_REALM, subject=f"ops-{uuid.uuid4().hex[:6]}", username="ops",
                                        display_name="Ops", roles=list(roles),
                                        access_expires_at=utcnow() + timedelta(hours=1))
    return {"Cookie": f"{COOKIE}={token}"}


def test_the_ops_console_shows_the_impact_figures_with_the_population_date(world):
    page = world.client.get("/ops/impact", headers=ops_headers(world.store))
    assert page.status_code == 200, page_text(page.text)
    text = page_text(page.text, 3000)
    assert re.search(r'data-figure="municipalities_ready">3<', page.text)
    assert re.search(r'data-figure="residents_reached">466\.262<', page.text)      # 102,930 + 338,332 + 25,000
    assert "Stand 31.12.2023 (Destatis)" in text
    assert '<a href="/ops/impact" aria-current="page">Wirkung</a>' in page.text
    # the same figures as the open API's
    figures = world.client.get("/api/v1/impact").json()
    assert figures["residents_reached"] == 466_262 and figures["population_as_of"] == "2023-12-31"
    # staff of a municipality are no operators
    assert world.client.get("/ops/impact", headers=ops_headers(world.store, roles=())).status_code == 403


# The hubs' own queries -------------------------------------------------------------------

def test_hub_panels_and_citizen_downloads_are_metered_against_the_owning_municipality(
        platform, meter_topic, ledger, settings, issuer, warehouse, metadata_store):  # noqa: F811 - fixtures
    from citizen_world import CitizenWorld

    from urbanstack.runtime.store import Actor
    from urbanstack.devplatform import kafka

    world = CitizenWorld(warehouse)
    meter = ApiMeter(MeterEmitter(kafka.admin_config(platform), topic=meter_topic), window_seconds=3600)
    api = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     meter=meter, ledger=ledger)
    web = serve.web_app(settings, world.catalogue, api, metadata_store)
    counts = f"{world.gue}/passantenfrequenz-wetter/pedestrian_counts"
    dashboard = metadata_store.dashboards.create(world.gue, Actor("metered-admin", "Erika"), "Zählung", {
        "range": "7d", "refresh_seconds": 0, "panels": [
            {"type": "bar", "title": "Pro Tag", "dataset": counts, "fields": ["pedestrians"], "aggregate": "sum",
             "bucket": "day"}]})
    cookie, token, _csrf = signed_in_cookie(metadata_store, world.gue, ROLES["gov-viewer"], subject="metered-admin")
    with TestClient(serve.PathDispatch(api, web), follow_redirects=False) as client:
        panel = client.get(f"/gov/{world.gue}/dashboards/{dashboard.id}/panels/1.csv",
                           params={"from": "2026-03-02", "to": "2026-03-11"}, headers={"Cookie": f"{cookie}={token}"})
        assert panel.status_code == 200 and "pedestrians" in panel.text.lower(), panel.text[:300]
        download = client.get(f"/{world.gue}/data/passantenfrequenz-wetter/pedestrian_counts/download",
                              params={"format": "csv"})
        assert download.status_code == 200
        stored = len(download.text.strip().splitlines()) - 1
        assert stored == len(world.pedestrians)
        # pages without data queries and refused downloads are not metered
        assert client.get(f"/{world.gue}/").status_code == 200
        assert client.get(f"/{world.bi}/data/passantenfrequenz-wetter/pedestrian_counts/download").status_code == 404
        assert meter.flush() == 1
        meter.emitter.settle(30)
        drain(platform, ledger, meter_topic)
    now = datetime.now(UTC)
    totals = ledger.totals(now - timedelta(hours=2), now + timedelta(hours=1))
    assert set(totals) == {world.gue}, totals          # the owner, for the anonymous download too
    mine = totals[world.gue]
    assert mine[API_QUERIES] == 2
    # bytes as sent over the wire (compressed where the hub compressed them)
    assert mine[API_BYTES_READ] == panel.num_bytes_downloaded + download.num_bytes_downloaded
    # rows: the download's text blocks count the rows they hold (chDB's raw query reports no
    # read_rows itself), on top of what its hour count and the panel's aggregate read (both
    # small here: they read hourly rollups)
    assert mine[API_ROWS_READ] > stored
    meter.close()
