"""Usage metering end to end: meter events through the real Kafka meter topic into the
ledger in the real warehouse engine (chDB), statements from it, and the API routes.

Each test uses a meter topic, consumer group and ledger database of its own, so runs
and other tests never see each other's events."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from urbanstack.devplatform import kafka
from urbanstack.operator.models import Municipality
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.runtime.metering.api_meter import ApiMeter
from urbanstack.runtime.metering.consumer import MeterConsumer, ensure_meter_topic
from urbanstack.runtime.metering.emitter import MeterEmitter
from urbanstack.runtime.metering.events import (API_BYTES_READ, API_QUERIES, DEAD_LETTERED, READINGS_INGESTED,
                                                ROWS_STORED, TYPE_INGEST, TYPE_USER, USER_DAYS, MeterEvent,
                                                sink_batch_id, user_day_id, user_pseudonym)
from urbanstack.runtime.metering.ledger import Ledger, month_range
from urbanstack.runtime.metering.prices import parse_price_book
from urbanstack.runtime.metering.statements import Statements

pytestmark = pytest.mark.platform

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
NOVEMBER = date(2026, 11, 1)
# The price list of these tests, and the same numbers written out for the expected amounts.
PRICES = {"readings_ingested": ("1000", "0.40", 100), "rows_stored": ("1000", "0.20", 100),
          "dead_lettered": ("10", "1.00", 1), "api_queries": ("5", "0.50", 1000),
          "api_rows_read": ("0", "0.05", 1_000_000), "api_bytes_read": ("0", "0.08", 1024 ** 3)}
BASE_FEE = "49.00"
PRICE_BOOK = parse_price_book({"price_lists": [{"version": "test-1", "valid_from": "2026-01", "plans": {"small": {
    "base_fee": BASE_FEE, "meters": {m: {"included": int(i), "unit_price": p, "per": per}
                                     for m, (i, p, per) in PRICES.items()}}}}]})


@pytest.fixture
def meter_topic(platform):
    admin = kafka.admin_config(platform)
    topic = f"_urbanstack-meter-t{uuid.uuid4().hex[:8]}"
    ensure_meter_topic(admin, topic)
    yield topic
    AdminClient(admin).delete_topics([topic])


@pytest.fixture
def ledger(warehouse):
    ledger = Ledger(warehouse, database=f"_urbanstack_metering_t{uuid.uuid4().hex[:8]}")
    yield ledger
    warehouse.command(f"DROP DATABASE IF EXISTS `{ledger.database}`")


def drain(platform, ledger, topic, group=None) -> MeterConsumer:
    consumer = MeterConsumer(kafka.admin_config(platform), ledger, topic=topic,
                             group_id=group or f"test-metering-{uuid.uuid4().hex[:8]}")
    try:
        consumer.run(until_idle=1.0)
    finally:
        consumer.close()
    return consumer


def expected_amount(meter: str, used: int) -> Decimal:
    included, price, per = PRICES[meter]
    billable = max(used - int(included), 0)
    return (Decimal(billable) * Decimal(price) / per).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def ingest_event(subject: str, when: datetime, rows: int, dlq: int, offset: int) -> MeterEvent:
    return MeterEvent(id=sink_batch_id(f"{subject}.tool.data", 0, offset, offset + rows + dlq - 1),
                      source="/urbanstack/sink", type=TYPE_INGEST, subject=subject, time=when, dataset="tool/data",
                      quantities={READINGS_INGESTED: rows + dlq, ROWS_STORED: rows, DEAD_LETTERED: dlq})


def test_a_month_with_replays_duplicates_out_of_order_and_late_events_bills_exactly(platform, meter_topic, ledger):
    rng = random.Random(13)
    subjects = [f"guetersloh-m{uuid.uuid4().hex[:5]}", f"bielefeld-m{uuid.uuid4().hex[:5]}"]
    start, end = month_range(NOVEMBER)
    # Every hour of the Berlin month plus a day either side: the edges must fall into the right month.
    events, hour, offset = [], start - timedelta(days=1), 0
    while hour < end + timedelta(days=1):
        for subject in subjects:
            rows, dlq = rng.randint(0, 400), rng.choice([0, 0, 0, 1, 3])
            events.append(ingest_event(subject, hour + timedelta(minutes=rng.randint(0, 59)), rows, dlq, offset))
            offset += rows + dlq + 1
        hour += timedelta(hours=1)
    expected: dict[str, dict[str, int]] = {s: {} for s in subjects}
    for event in events:  # computed here from the events, not by the ledger
        local = event.time.astimezone(BERLIN)
        if (local.year, local.month) == (2026, 11):
            for meter, quantity in event.quantities.items():
                expected[event.subject][meter] = expected[event.subject].get(meter, 0) + quantity

    late = events[: len(events) // 10]                     # sent again at the very end
    replayed = events[100:400]                             # a replayed stretch
    duplicates = rng.sample(events, 500)                   # retried sends
    stream = events[len(events) // 10:] + replayed + duplicates
    rng.shuffle(stream)                                    # out of order
    emitter = MeterEmitter(kafka.admin_config(platform), topic=meter_topic)
    for event in stream:
        assert emitter.emit(event)
    assert emitter.settle(30)
    first = drain(platform, ledger, meter_topic)
    for event in late + duplicates[:50]:
        emitter.emit(event)
    assert emitter.settle(30)
    second = drain(platform, ledger, meter_topic, group=None)   # a new group reads the whole topic again
    emitter.close()

    assert first.recorded + second.recorded == len(events)
    assert second.recorded == len({e.id for e in late} - {e.id for e in stream})   # only those never sent before
    assert first.invalid == second.invalid == 0 and first.conflicts == second.conflicts == 0
    assert ledger.month_totals(NOVEMBER, subjects) == expected
    assert ledger.verify(start - timedelta(days=2), end + timedelta(days=2)) == []

    statements = Statements(ledger, prices=PRICE_BOOK)
    for subject, statement in statements.statements(subjects, NOVEMBER, now=end + timedelta(days=1)).items():
        lines = {line.meter: line for line in statement.lines if line.kind == "usage"}
        for meter in PRICES:
            used = expected[subject].get(meter, 0)
            assert (lines[meter].used, lines[meter].amount) == (used, expected_amount(meter, used)), meter
        total = Decimal(BASE_FEE) + sum(expected_amount(m, expected[subject].get(m, 0)) for m in PRICES)
        assert statement.total == total
        assert statement.status == "draft"
        assert [line.kind for line in statement.lines].count("adjustment") == 0


def test_usage_after_the_freeze_becomes_an_adjustment_next_month_and_the_frozen_statement_stays(ledger):
    subject = "guetersloh"
    statements = Statements(ledger, prices=PRICE_BOOK, grace=timedelta(days=5))
    start, end = month_range(NOVEMBER)
    ledger.record([ingest_event(subject, start + timedelta(hours=5), 1500, 12, 0),
                   ingest_event(subject, start + timedelta(days=20), 700, 0, 10_000)])
    with pytest.raises(ValueError, match="grace period"):
        statements.freeze([subject], NOVEMBER, now=end + timedelta(days=4))
    frozen = statements.freeze([subject], NOVEMBER, now=end + timedelta(days=5, minutes=1))[subject]
    assert frozen.status == "frozen" and frozen.hash == frozen.content_hash()
    assert frozen.used(ROWS_STORED) == 2200 and frozen.used(DEAD_LETTERED) == 12

    # Late: a November batch that reaches the ledger after the freeze, and a retried copy of it.
    late = ingest_event(subject, start + timedelta(days=29, hours=22), 300, 4, 20_000)
    assert ledger.record([late, late]).new == 1
    again = statements.statement(subject, NOVEMBER, now=end + timedelta(days=9))
    assert again == frozen and again.hash == frozen.hash            # unchanged, same hash
    assert statements.freeze([subject], NOVEMBER, now=end + timedelta(days=9))[subject].hash == frozen.hash

    december = statements.statement(subject, date(2026, 12, 1), now=end + timedelta(days=9))
    adjustments = {line.meter: line for line in december.lines if line.kind == "adjustment"}
    assert set(adjustments) == {READINGS_INGESTED, ROWS_STORED, DEAD_LETTERED}
    assert all(line.month == "2026-11" for line in adjustments.values())
    assert adjustments[ROWS_STORED].used == 300 and adjustments[DEAD_LETTERED].used == 4
    # Priced on top of what November already billed: 2200 → 2500 rows, 12 → 16 DLQ records.
    assert adjustments[ROWS_STORED].amount == expected_amount(ROWS_STORED, 2500) - expected_amount(ROWS_STORED, 2200)
    assert adjustments[DEAD_LETTERED].amount == Decimal("4.00")

    # Once December is frozen with the adjustment, January does not bill it again.
    statements.freeze([subject], date(2026, 12, 1), now=end + timedelta(days=40))
    january = statements.statement(subject, date(2027, 1, 1), now=end + timedelta(days=40))
    assert [line for line in january.lines if line.kind == "adjustment"] == []
    assert statements.statement(subject, NOVEMBER).hash == frozen.hash


def user_day(subject: str, user: str, day: date) -> MeterEvent:
    """The event the API meter sends for a user's first verified request of a UTC day."""
    pseudonym = user_pseudonym(subject, user)
    return MeterEvent(id=user_day_id(subject, pseudonym, day), source="/urbanstack/api", type=TYPE_USER,
                      subject=subject, time=datetime(day.year, day.month, day.day, tzinfo=UTC), dataset=pseudonym,
                      quantities={USER_DAYS: 1})


def _municipality(slug: str, ags: str) -> Municipality:
    return Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": slug, "ags": ags, "admins": [f"admin@{slug}.example.org"]}})


def test_the_api_meters_each_municipality_and_shows_it_only_its_own_usage_and_statements(
        platform, meter_topic, ledger, issuer, settings, warehouse):
    suffix = uuid.uuid4().hex[:6]
    gue, bi = f"guetersloh-u{suffix}", f"bielefeld-u{suffix}"
    catalogue = Catalogue([_municipality(gue, "05754008"), _municipality(bi, "05711000")], [])
    meter = ApiMeter(MeterEmitter(kafka.admin_config(platform), topic=meter_topic), window_seconds=3600)
    app = create_app(settings, catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     meter=meter, ledger=ledger)

    def bearer(tenant, roles=("gov-admin",)):
        return {"Authorization": f"Bearer {issuer.token(tenant=tenant, roles=roles)}"}

    now = datetime.now(UTC)
    this_month = now.astimezone(BERLIN).date().replace(day=1)
    ledger.record([ingest_event(gue, now - timedelta(minutes=5), 777, 7, 0)])
    with TestClient(app, raise_server_exceptions=False) as client:
        sizes = [len(client.get("/api/v1/datasets", headers=bearer(gue)).content) for _ in range(3)]
        client.get("/api/v1/datasets")                         # anonymous: open data, not metered
        client.get("/api/v1/datasets", headers={"Authorization": "Bearer forged"})   # 401, not metered
        assert meter.flush() == 1
        meter.emitter.settle(30)
        drain(platform, ledger, meter_topic)

        own = client.get("/api/v1/usage", headers=bearer(gue, ("gov-viewer",))).json()
        assert own["municipality"] == gue
        assert own["totals"][ROWS_STORED] == 777 and own["totals"][API_QUERIES] == 3
        assert own["totals"][API_BYTES_READ] == sum(sizes)

        # Bielefeld sees its own (empty) usage, whatever it puts into the request.
        for params in ({}, {"municipality": gue}, {"subject": gue}, {"tenant": gue}):
            other = client.get("/api/v1/usage", headers=bearer(bi), params=params)
            assert other.status_code == 200 and other.json()["municipality"] == bi
            assert other.json()["totals"] == {} and other.json()["rows"] == []
        month = f"{this_month:%Y-%m}"
        for url in ("/api/v1/statements", f"/api/v1/statements/{month}", f"/api/v1/statements/{month}?format=csv",
                    f"/api/v1/statements/{month}?municipality={gue}"):
            response = client.get(url, headers=bearer(bi))
            assert response.status_code == 200, response.text
            assert gue not in response.text and bi in response.text
        mine = client.get(f"/api/v1/statements/{month}", headers=bearer(gue)).json()
        rows = next(line for line in mine["lines"] if line["meter"] == ROWS_STORED)
        assert mine["subject"] == gue and mine["status"] == "draft"
        assert rows["used"] == 777
        csv_text = client.get(f"/api/v1/statements/{month}?format=csv", headers=bearer(gue)).text
        assert f"{gue},{month},usage,rows_stored,row,{month},777," in csv_text

        # Without a token or without the role: refused.
        assert client.get("/api/v1/usage").status_code == 401
        assert client.get("/api/v1/statements").status_code == 401
        assert client.get("/api/v1/statements", headers=bearer(gue, ("gov-viewer",))).status_code == 403
        assert client.get("/api/v1/usage", headers=bearer(gue, ("citizen",))).status_code == 403
        assert client.get("/api/v1/statements/2026-13", headers=bearer(gue)).status_code == 422
    meter.close()


def test_the_serve_process_records_meter_events_as_they_come(platform, meter_topic, warehouse):
    """What `urbanstack serve` starts: the consumer thread fills the ledger, the API meter sends."""
    import threading
    import time

    from urbanstack.runtime.metering import service

    subject = f"guetersloh-s{uuid.uuid4().hex[:5]}"
    stop = threading.Event()
    metering = service.start(kafka.admin_config(platform), warehouse, Catalogue([_municipality(subject, "05754008")], []),
                             stop, topic=meter_topic)
    try:
        now = datetime.now(UTC)
        emitter = MeterEmitter(kafka.admin_config(platform), topic=meter_topic)
        emitter.emit(ingest_event(subject, now, 42, 1, 0))
        emitter.emit(ingest_event(subject, now, 42, 1, 0))     # a retried send
        emitter.close()
        metering.api_meter.add(subject, rows_read=10, bytes_sent=2048)
        metering.api_meter.flush()
        metering.api_meter.emitter.settle(30)
        month = now.astimezone(BERLIN).date().replace(day=1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            totals = metering.ledger.month_totals(month, [subject]).get(subject, {})
            if totals.get(API_QUERIES) and totals.get(ROWS_STORED) and "storage_byte_hours" in totals:
                break
            time.sleep(0.5)
        # and the sampler's first sample (the municipality has no database and no tool here: 0 bytes, no tool-day)
        assert totals == {READINGS_INGESTED: 43, ROWS_STORED: 42, DEAD_LETTERED: 1, API_QUERIES: 1,
                          "api_rows_read": 10, API_BYTES_READ: 2048, "storage_byte_hours": 0}
    finally:
        stop.set()
        metering.api_meter.close()
        for thread in metering.threads:
            thread.join(10)
        warehouse.command(f"DROP DATABASE IF EXISTS `{metering.ledger.database}`")


def test_status_usage_shows_the_last_24_hours_from_the_ledger(warehouse):
    """What the operator writes into status.usage on each reconcile (operator/reconcile.py)."""
    from types import SimpleNamespace

    from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
    from urbanstack.operator.reconcile import _metered_usage

    subject = f"guetersloh-o{uuid.uuid4().hex[:5]}"
    ledger = Ledger(warehouse)
    now = datetime.now(UTC)
    try:
        ledger.record([ingest_event(subject, now - timedelta(hours=2), 100, 5, 0),
                       ingest_event(subject, now - timedelta(hours=30), 999, 0, 1000),   # older than 24 h
                       MeterEvent(id=str(uuid.uuid4()), source="/urbanstack/api", type="io.urbanstack.meter.query.v1",
                                  subject=subject, time=now, quantities={API_QUERIES: 17})]
                      + [user_day(subject, user, (now - timedelta(days=ago)).date())
                         for user, ago in (("anna", 1), ("anna", 2), ("ben", 29), ("carla", 40))])   # carla: too old
        backends = SimpleNamespace(warehouse=WarehouseProvisioner(lambda: warehouse, embedded=True))
        assert _metered_usage(backends, subject) == {"eventsLast24H": 105, "queriesLast24H": 17, "storageBytes": 0,
                                                     "activeUsers30d": 2}
        assert _metered_usage(backends, "bielefeld") == {"eventsLast24H": 0, "queriesLast24H": 0, "storageBytes": 0,
                                                         "activeUsers30d": 0}
        broken = SimpleNamespace(warehouse=WarehouseProvisioner(lambda: 1 / 0, embedded=True))
        assert _metered_usage(broken, subject) == {}
    finally:
        warehouse.command(f"DROP DATABASE IF EXISTS `{ledger.database}`")


def test_the_xrechnung_of_a_statement_passes_the_validator_and_one_without_leitweg_id_fails(ledger, settings,
                                                                                             tmp_path):
    import xrechnung_validator

    from urbanstack.runtime.metering.xrechnung import Address, Buyer, Seller, to_xrechnung

    reason = xrechnung_validator.missing_tools()
    if reason:
        pytest.skip(reason)
    validator = xrechnung_validator.install(settings.cache_dir)
    subject = "guetersloh"
    statements = Statements(ledger, prices=PRICE_BOOK)
    start, end = month_range(NOVEMBER)
    ledger.record([ingest_event(subject, start + timedelta(hours=3), 123_456, 17, 0)])
    statements.freeze([subject], NOVEMBER, now=end + timedelta(days=6))
    ledger.record([ingest_event(subject, start + timedelta(hours=4), 50, 0, 200_000)])   # late: adjusts December
    december = statements.statement(subject, date(2026, 12, 1), now=end + timedelta(days=7))
    seller = Seller("Urban Stack Plattformbetrieb GmbH", Address("Musterweg 1", "33602", "Bielefeld"), "DE123456789",
                    "Erika Mustermann", "+49 521 000000", "abrechnung@urbanstack.example",
                    "rechnungen@urbanstack.example", "DE02120300000000202051", "Musterbank")
    buyer = Buyer("Stadt Gütersloh", Address("Berliner Straße 70", "33330", "Gütersloh"), "05754008-0001-33",
                  "e-rechnung@guetersloh.example")
    november = statements.statement(subject, NOVEMBER)
    assert november.status == "frozen" and [line.kind for line in december.lines].count("adjustment") == 2   # readings and rows
    for statement in (november, december):
        invoice = tmp_path / f"{statement.month}.xml"
        invoice.write_bytes(to_xrechnung(statement, seller=seller, buyer=buyer, invoice_number=f"US-{statement.month}-1",
                                         issue_date=date(2027, 1, 2)))
        valid, report = xrechnung_validator.validate(validator, invoice)
        assert valid, report
        assert "xrechnung_3.0" in report and "05754008-0001-33" in invoice.read_text()

    broken = tmp_path / "no-leitweg-id.xml"
    text = (tmp_path / "2026-11.xml").read_text()
    broken.write_text(text.replace("<cbc:BuyerReference>05754008-0001-33</cbc:BuyerReference>", ""))
    assert "BuyerReference" not in broken.read_text()
    valid, report = xrechnung_validator.validate(validator, broken)
    assert not valid and "BR-DE-15" in report
    with pytest.raises(ValueError, match="Leitweg-ID"):
        to_xrechnung(november, seller=seller, buyer=Buyer(buyer.name, buyer.address, "", buyer.electronic_address),
                     invoice_number="US-1", issue_date=date(2027, 1, 2))


def test_impact_figures_count_ready_municipalities_and_their_residents(ledger, issuer, settings, warehouse):
    from prometheus_client.parser import text_string_to_metric_families

    from urbanstack.operator.models import parse_citytool

    examples = Path(__file__).resolve().parents[2] / "examples"
    tool = parse_citytool(yaml.safe_load((examples / "citytool-pegel-warnung.yaml").read_text()))

    def municipality(slug, ags, phase, residents, tools=()):
        return Municipality.model_validate({
            "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
            "spec": {"displayName": slug, "ags": ags, "admins": [f"admin@{slug}.example.org"],
                     "tools": [{"name": t} for t in tools]},
            "status": {"phase": phase, "usage": {"residents": residents}}})

    catalogue = Catalogue([municipality("guetersloh", "05754008", "Ready", 102_930, ["pegel-warnung"]),
                           municipality("bielefeld", "05711000", "Ready", 338_332, ["pegel-warnung"]),
                           municipality("harsewinkel", "05754012", "Provisioning", 25_000)], [tool])
    now = datetime.now(UTC)
    ledger.record([ingest_event("guetersloh", now - timedelta(hours=3), 500, 0, 0)])
    app = create_app(settings, catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api", ledger=ledger)
    with TestClient(app, raise_server_exceptions=False) as client:
        figures = client.get("/api/v1/impact").json()
        assert figures == {"municipalities": 3, "municipalities_ready": 2, "residents_reached": 441_262,
                           # pegel-warnung declares water_levels and warnings: 2 datasets × 2 Ready
                           "population_as_of": "2023-12-31", "datasets_in_use": 4,
                           "municipalities_per_tool": {"pegel-warnung": 2}}
        metrics = {sample.name: sample for family in text_string_to_metric_families(client.get("/metrics").text)
                   for sample in family.samples}
        assert metrics["urbanstack_residents_reached"].value == 441_262
        assert metrics["urbanstack_tool_municipalities"].labels == {"tool": "pegel-warnung"}
        assert metrics["urbanstack_readings_last_24h"].value == 500


def test_rest_and_graphql_requests_are_metered_with_the_rows_the_warehouse_read(
        platform, meter_topic, ledger, issuer, settings, warehouse):
    from test_api import World

    world = World(warehouse)
    meter = ApiMeter(MeterEmitter(kafka.admin_config(platform), topic=meter_topic), window_seconds=3600)
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     meter=meter, ledger=ledger)
    headers = {"Authorization": f"Bearer {issuer.token(tenant=world.gue, roles=('gov-viewer',))}"}
    query = """query($owner: String!) { series(dataset: {owner: $owner, tool: "passantenfrequenz-wetter",
               name: "weather"}, fields: ["temperature"], start: "2026-03-02T00:00:00Z", end: "2026-03-04T00:00:00Z")
               { points { bucket values { name value } } } }"""
    read = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        for kind in ("rest", "graphql"):
            if kind == "rest":
                response = client.get(f"/api/v1/datasets/{world.gue}/passantenfrequenz-wetter/weather/observations",
                                      headers=headers, params={"from": "2026-03-02T00:00:00Z",
                                                               "to": "2026-03-04T00:00:00Z"})
            else:
                response = client.post("/graphql", headers=headers,
                                       json={"query": query, "variables": {"owner": world.gue}})
            assert response.status_code == 200, response.text
            with meter._lock:
                read[kind] = dict(meter._sums[world.gue])
            meter.flush()
    meter.emitter.settle(30)
    drain(platform, ledger, meter_topic)
    for kind, sums in read.items():
        assert sums[API_QUERIES] == 1 and sums["api_rows_read"] > 0, (kind, sums)   # GraphQL runs in a thread pool
    today = datetime.now(BERLIN).date().replace(day=1)
    totals = ledger.month_totals(today, [world.gue])[world.gue]
    assert totals[API_QUERIES] == 2
    assert totals["api_rows_read"] == read["rest"]["api_rows_read"] + read["graphql"]["api_rows_read"]
    meter.close()


def test_sensorthings_and_features_requests_are_metered_but_not_the_features_landing_page(
        platform, meter_topic, ledger, issuer, settings, warehouse):
    from test_api import World

    world = World(warehouse)
    meter = ApiMeter(MeterEmitter(kafka.admin_config(platform), topic=meter_topic), window_seconds=3600)
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     meter=meter, ledger=ledger)
    headers = {"Authorization": f"Bearer {issuer.token(tenant=world.gue, roles=('gov-viewer',))}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/ogcapi", "/ogcapi/conformance"):
            assert client.get(path, headers=headers).status_code == 200
        with meter._lock:
            assert world.gue not in meter._sums          # landing pages are no data queries
        for path in ("/v1.1/Datastreams", "/ogcapi/collections"):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text[:300])
        with meter._lock:
            assert meter._sums[world.gue][API_QUERIES] == 2
    meter.close()


def test_storage_is_sampled_once_an_hour_per_municipality_and_sums_to_byte_hours(ledger, warehouse):
    from urbanstack.operator import naming
    from urbanstack.runtime.metering.events import STORAGE_BYTE_HOURS
    from urbanstack.runtime.metering.samples import storage_events

    subject, empty = f"guetersloh-b{uuid.uuid4().hex[:5]}", f"bielefeld-b{uuid.uuid4().hex[:5]}"
    database = naming.database(subject)
    warehouse.command(f"CREATE DATABASE `{database}`")
    try:
        warehouse.command(f"CREATE TABLE `{database}`.`t` (x UInt64) ENGINE = MergeTree ORDER BY x")
        warehouse.command(f"INSERT INTO `{database}`.`t` SELECT number FROM numbers(100000)")
        [[on_disk]] = warehouse.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                                      "{db:String}", parameters={"db": database}).result_rows
        assert on_disk > 0
        at = datetime(2026, 11, 10, 14, 5, tzinfo=UTC)
        first = storage_events(warehouse, [subject, empty], at)
        assert {e.subject: e.quantities[STORAGE_BYTE_HOURS] for e in first} == {subject: on_disk, empty: 0}
        warehouse.command(f"INSERT INTO `{database}`.`t` SELECT number FROM numbers(100000)")
        again = storage_events(warehouse, [subject], at.replace(minute=50))      # same hour, larger now
        later = storage_events(warehouse, [subject], at.replace(hour=15))
        assert ledger.record(first + again + later).new == 3                  # the hour's second sample adds nothing
        totals = ledger.month_totals(NOVEMBER, [subject])[subject]
        assert totals[STORAGE_BYTE_HOURS] == on_disk + later[0].quantities[STORAGE_BYTE_HOURS]
    finally:
        warehouse.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_each_switched_on_tool_is_one_tool_day_per_day(ledger):
    from urbanstack.runtime.metering.events import TOOL_DAYS
    from urbanstack.runtime.metering.samples import tool_day_events

    def municipality(slug, tools, suspended=False):
        return Municipality.model_validate({
            "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
            "spec": {"displayName": slug, "ags": "05754008", "admins": [f"admin@{slug}.example.org"],
                     "tools": [{"name": t} for t in tools], "suspended": suspended}})

    towns = [municipality("guetersloh", ["pegel-warnung", "passantenfrequenz-wetter"]),
             municipality("bielefeld", ["pegel-warnung"]), municipality("harsewinkel", ["pegel-warnung"], True)]
    start, _ = month_range(NOVEMBER)
    events = []
    for day in range(30):
        for sample in range(3):   # sampled three times a day: still one tool-day
            events += tool_day_events(towns, start + timedelta(days=day, hours=1 + 7 * sample))
    assert ledger.record(events).new == 30 * 3
    assert {s: t[TOOL_DAYS] for s, t in ledger.month_totals(NOVEMBER).items()} == {"guetersloh": 60, "bielefeld": 30}


def test_the_xrechnung_route_exports_a_valid_invoice_and_refuses_without_leitweg_id(ledger, issuer, settings,
                                                                                   warehouse, tmp_path):
    """GET /api/v1/statements/{month}?format=xrechnung (manage:own): the Municipality's
    spec.billing as buyer, checked by the Mustang validator; refused clearly without it."""
    import xrechnung_validator

    from urbanstack.runtime.metering.xrechnung import Address, Seller

    reason = xrechnung_validator.missing_tools()
    if reason:
        pytest.skip(reason)
    validator = xrechnung_validator.install(settings.cache_dir)
    suffix = uuid.uuid4().hex[:6]
    gue, bi = f"guetersloh-x{suffix}", f"bielefeld-x{suffix}"
    billed = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": gue},
        "spec": {"displayName": "Stadt Gütersloh", "ags": "05754008", "admins": [f"admin@{gue}.example.org"],
                 "billing": {"leitwegId": "05754008-0001-86", "street": "Berliner Straße 70", "postalCode": "33330",
                             "city": "Gütersloh", "email": "e-rechnung@guetersloh.example"}}})
    catalogue = Catalogue([billed, _municipality(bi, "05711000")], [])
    seller = Seller("Urban Stack Plattformbetrieb GmbH", Address("Musterweg 1", "33602", "Bielefeld"), "DE123456789",
                    "Erika Mustermann", "+49 521 000000", "abrechnung@urbanstack.example",
                    "rechnungen@urbanstack.example", "DE02120300000000202051", "Musterbank")
    statements = Statements(ledger, prices=PRICE_BOOK)
    app = create_app(settings, catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     ledger=ledger, statements=statements, seller=seller)
    start, end = month_range(NOVEMBER)
    ledger.record([ingest_event(gue, start + timedelta(hours=3), 123_456, 17, 0)])
    statements.freeze([gue], NOVEMBER, now=end + timedelta(days=6))

    def bearer(tenant, roles=("gov-admin",)):
        return {"Authorization": f"Bearer {issuer.token(tenant=tenant, roles=roles)}"}

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/statements/2026-11?format=xrechnung", headers=bearer(gue))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        assert f'filename="xrechnung-{gue}-2026-11.xml"' in response.headers["content-disposition"]
        invoice = tmp_path / "route.xml"
        invoice.write_bytes(response.content)
        valid, report = xrechnung_validator.validate(validator, invoice)
        assert valid, report
        text = invoice.read_text()
        assert "<cbc:BuyerReference>05754008-0001-86</cbc:BuyerReference>" in text and "Berliner Straße 70" in text

        refused = client.get("/api/v1/statements/2026-11?format=xrechnung", headers=bearer(bi))
        assert refused.status_code == 409
        assert "no Leitweg-ID" in refused.text and "spec.billing.leitwegId" in refused.text
        assert client.get("/api/v1/statements/2026-11?format=xrechnung",
                          headers=bearer(gue, ("gov-viewer",))).status_code == 403
        assert client.get("/api/v1/statements/2026-11?format=xrechnung").status_code == 401


def test_the_consumer_counts_are_prometheus_metrics(platform, meter_topic, ledger, issuer, settings, warehouse):
    from confluent_kafka import Producer

    from urbanstack.runtime.metering.consumer import ConsumerCollector

    now = datetime.now(UTC)
    good = [ingest_event("verl", now, 10, 0, n * 100) for n in range(3)]
    producer = Producer(kafka.admin_config(platform))
    for event in good + good[:1]:                      # one duplicate
        producer.produce(meter_topic, key=event.id, value=event.to_json())
    producer.produce(meter_topic, key="x", value=b'{"specversion": "1.0"}')   # invalid
    producer.flush(30)
    collector = ConsumerCollector()
    consumer = collector.track(MeterConsumer(kafka.admin_config(platform), ledger, topic=meter_topic,
                                             group_id=f"test-metering-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.run(until_idle=1.0)
    finally:
        consumer.close()
    app = create_app(settings, Catalogue([], []), warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     collectors=[collector])
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
    assert 'urbanstack_meter_consumer_events_total{outcome="recorded"} 3.0' in metrics
    assert 'urbanstack_meter_consumer_events_total{outcome="duplicate"} 1.0' in metrics
    assert 'urbanstack_meter_consumer_events_total{outcome="invalid"} 1.0' in metrics
    assert 'urbanstack_meter_consumer_events_total{outcome="conflict"} 0.0' in metrics
