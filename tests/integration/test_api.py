"""The Data Hub API against the real warehouse engine: tables made by the operator's
plan and provisioner, two municipalities per run, tokens from a local JWKS.

The API runs in this process (FastAPI's TestClient) and shares the test session's
warehouse client, because only one process may open a chDB data path."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import statistics
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from api_tokens import new_key
from fastapi.testclient import TestClient

from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue, create_app

pytestmark = pytest.mark.platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
PEDESTRIANS = "passantenfrequenz-wetter"
PEGEL = "pegel-warnung"


def _tool(name: str):
    return parse_citytool(yaml.safe_load((EXAMPLES / f"citytool-{name}.yaml").read_text()))


def _municipality(slug: str, ags: str, tools: list[str], shares: list[dict]) -> Municipality:
    return Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": slug, "ags": ags, "admins": [f"admin@{slug}.example.org"],
                 "tools": [{"name": tool} for tool in tools], "shares": shares}})


class World:
    """Two municipalities with known readings, and the numbers the API must give back."""

    def __init__(self, warehouse):
        suffix = uuid.uuid4().hex[:6]
        self.gue, self.bi = f"guetersloh-t{suffix}", f"bielefeld-t{suffix}"
        tools = self.tools = [_tool(PEDESTRIANS), _tool(PEGEL)]
        self.municipalities = [
            _municipality(self.gue, "05754008", [PEDESTRIANS, PEGEL], [
                {"tool": PEDESTRIANS, "dataset": "pedestrian_counts", "public": True, "licence": "dl-de/zero-2-0"},
                {"tool": PEGEL, "dataset": "water_levels", "municipalities": [self.bi]}]),
            _municipality(self.bi, "05711000", [PEDESTRIANS, PEGEL], []),
        ]
        self.catalogue = Catalogue(self.municipalities, tools)
        provisioner = WarehouseProvisioner(lambda: warehouse, embedded=True)
        for municipality in self.municipalities:
            ensure(provisioner, plan(municipality, tools).warehouse, {})
        self.warehouse = warehouse
        self._fill()

    def table(self, slug: str, tool: str, dataset: str) -> str:
        return f"`{naming.database(slug)}`.`{naming.table(tool, dataset)}`"

    def _insert(self, slug, tool, dataset, rows: list[dict]):
        columns = list(rows[0])
        self.warehouse.insert(f"{naming.database(slug)}.{naming.table(tool, dataset)}",
                              [[row[c] for c in columns] for row in rows], column_names=columns)

    def _fill(self):
        rng = np.random.default_rng(7)
        # Pedestrians: two counters, every 15 minutes for 48 hours.
        self.pedestrians = []
        for sensor, (lon, lat) in (("g-berliner", (8.383, 51.906)), ("g-koenig", (8.389, 51.909))):
            for step in range(48 * 4):
                at = T0 + dt.timedelta(minutes=15 * step)
                count = int(rng.integers(0, 500))
                self.pedestrians.append({"event_id": f"{sensor}-{step}", "source": "hystreet", "sensor_id": sensor,
                                         "observed_at": at, "lon": lon, "lat": lat, "pedestrians": count,
                                         "location_name": "=HYPERLINK(\"x\")" if step == 0 else sensor})
        old = T0 - dt.timedelta(days=1)
        stale = [{**row, "pedestrians": 99_999, "ingested_at": old} for row in self.pedestrians[:10]]
        fresh = [{**row, "ingested_at": T0 + dt.timedelta(days=30)} for row in self.pedestrians]
        self._insert(self.gue, PEDESTRIANS, "pedestrian_counts", fresh)
        # The sink writes an event once; a table written some other way may hold stale copies of the same
        # events in a separate part, and reading single observations (FINAL) must pick the fresh ones.
        self._insert(self.bi, PEDESTRIANS, "pedestrian_counts", fresh)
        self._insert(self.bi, PEDESTRIANS, "pedestrian_counts", stale)
        # Weather: hourly, one station, only the first 24 hours (the join is on the common hours).
        self.weather = [{"event_id": f"w-{h}", "source": "dwd", "sensor_id": "dwd-01303", "observed_at":
                         T0 + dt.timedelta(hours=h), "lon": 8.38, "lat": 51.90, "temperature": 5.0 + h / 2,
                         "precipitation": float(h % 3)} for h in range(24)]
        self._insert(self.gue, PEDESTRIANS, "weather", self.weather)
        self.gue_levels = [{"event_id": f"p-{h}", "source": "pegelonline", "sensor_id": "dalke", "observed_at":
                            T0 + dt.timedelta(hours=h), "lon": None, "lat": None, "water_level": 100.0 + h,
                            "station_name": "Dalke"} for h in range(6)]
        self._insert(self.gue, PEGEL, "water_levels", self.gue_levels)
        self.bi_levels = [{"event_id": f"b-{h}", "source": "pegelonline", "sensor_id": "lutter", "observed_at":
                           T0 + dt.timedelta(hours=h), "lon": 8.53, "lat": 52.02, "water_level": 700.0 + h,
                           "station_name": "Lutter"} for h in range(6)]
        self._insert(self.bi, PEGEL, "water_levels", self.bi_levels)
        self._insert(self.bi, PEDESTRIANS, "weather", [{**row, "event_id": "b" + row["event_id"], "temperature": -40.0}
                                                       for row in self.weather])


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def client(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(issuer, tenant, roles=("gov-viewer",), **kwargs):
    return {"Authorization": f"Bearer {issuer.token(tenant=tenant, roles=roles, **kwargs)}"}


def path(slug, tool, dataset, suffix=""):
    return f"/api/v1/datasets/{slug}/{tool}/{dataset}{suffix}"


RANGE = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-04T00:00:00Z"}


# Numbers --------------------------------------------------------------------------

def test_hourly_aggregates_are_correct_and_deduplicated(client, world, issuer):
    response = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"), headers=bearer(
        issuer, world.gue), params={**RANGE, "field": "pedestrians", "bucket": "hour",
                                   "aggregate": ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["rows"]) == 48
    by_hour: dict[dt.datetime, list[int]] = {}
    for row in world.pedestrians:
        by_hour.setdefault(row["observed_at"].replace(minute=0), []).append(row["pedestrians"])
    for row in body["rows"]:
        values = by_hour[dt.datetime.fromisoformat(row["bucket"].replace("Z", "+00:00"))]
        got = row["values"]
        assert row["events"] == len(values) == 8
        assert got["pedestrians_count"] == 8
        assert got["pedestrians_sum"] == sum(values)
        assert got["pedestrians_avg"] == pytest.approx(statistics.mean(values))
        assert (got["pedestrians_min"], got["pedestrians_max"]) == (min(values), max(values))
        for q in (50, 90, 95, 99):
            assert got[f"pedestrians_p{q}"] == pytest.approx(float(np.percentile(values, q)))
    assert {m["name"]: m["unit"] for m in body["metrics"]}["pedestrians_sum"] == "persons"


def test_day_and_week_buckets_respect_the_time_zone(client, world, issuer):
    params = {**RANGE, "field": "pedestrians", "aggregate": "sum"}
    url = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")
    utc = client.get(url, params={**params, "bucket": "day"}).json()["rows"]
    assert [r["bucket"] for r in utc] == ["2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"]
    assert sum(r["values"]["pedestrians_sum"] for r in utc) == sum(r["pedestrians"] for r in world.pedestrians)
    berlin = client.get(url, params={**params, "bucket": "day", "timezone": "Europe/Berlin"}).json()["rows"]
    # Midnight in Berlin is 23:00 UTC in March: the first hour of data falls on the Berlin day of the 2nd.
    assert [r["bucket"] for r in berlin] == ["2026-03-01T23:00:00Z", "2026-03-02T23:00:00Z", "2026-03-03T23:00:00Z"]
    assert berlin[0]["events"] == 23 * 8
    week = client.get(url, params={**params, "bucket": "week"}).json()["rows"]
    assert [(r["bucket"], r["events"]) for r in week] == [("2026-03-02T00:00:00Z", 384)]


def test_filters_by_sensor_and_bounding_box(client, world, issuer):
    url = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")
    base = {**RANGE, "field": "pedestrians", "aggregate": "sum", "bucket": "month"}
    one = client.get(url, params={**base, "sensor_id": "g-koenig"}).json()["rows"]
    assert one[0]["values"]["pedestrians_sum"] == sum(r["pedestrians"] for r in world.pedestrians
                                                      if r["sensor_id"] == "g-koenig")
    boxed = client.get(url, params={**base, "bbox": "8.38,51.90,8.385,51.907"}).json()["rows"]
    assert boxed[0]["values"]["pedestrians_sum"] == sum(r["pedestrians"] for r in world.pedestrians
                                                        if r["sensor_id"] == "g-berliner")
    nowhere = client.get(url, params={**base, "bbox": "0,0,1,1"}).json()["rows"]
    assert nowhere == []
    per_sensor = client.get(url, params={**base, "by_sensor": "true"}).json()["rows"]
    assert [r["sensor_id"] for r in per_sensor] == ["g-berliner", "g-koenig"]


def test_series_pages_with_a_cursor(client, world):
    url = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")
    params = {**RANGE, "field": "pedestrians", "aggregate": "sum", "by_sensor": "true"}
    full = client.get(url, params=params).json()["rows"]
    pages, cursor = [], None
    while True:
        body = client.get(url, params={**params, "limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        pages += body["rows"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(full) == 96 and pages == full


def test_observations_page_and_dedupe(client, world, issuer):
    url = path(world.bi, PEDESTRIANS, "pedestrian_counts", "/observations")
    seen, cursor = [], None
    while True:
        body = client.get(url, headers=bearer(issuer, world.bi),
                          params={**RANGE, "limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        seen += body["rows"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(world.pedestrians) == len({r["event_id"] for r in seen})
    assert 99_999 not in {r["values"]["pedestrians"] for r in seen}


def test_join_pedestrians_with_weather(client, world, issuer):
    response = client.get("/api/v1/join", headers=bearer(issuer, world.gue), params={
        **RANGE, "left": f"{world.gue}/{PEDESTRIANS}/pedestrian_counts", "left_field": "pedestrians",
        "left_aggregate": "sum", "right": f"{world.gue}/{PEDESTRIANS}/weather",
        "right_field": ["temperature", "precipitation"], "right_aggregate": "avg", "bucket": "hour"})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) == 24  # weather covers the first day only
    first = rows[3]
    hour = T0 + dt.timedelta(hours=3)
    assert first["left"]["pedestrians_sum"] == sum(r["pedestrians"] for r in world.pedestrians
                                                   if r["observed_at"].replace(minute=0) == hour)
    assert first["right"] == {"temperature_avg": 6.5, "precipitation_avg": 0.0}
    assert (first["left_events"], first["right_events"]) == (8, 1)


def test_join_pages(client, world, issuer):
    params = {**RANGE, "left": f"{world.gue}/{PEDESTRIANS}/pedestrian_counts", "left_field": "pedestrians",
              "right": f"{world.gue}/{PEDESTRIANS}/weather", "right_field": "temperature", "limit": 10}
    headers = bearer(issuer, world.gue)
    buckets, cursor = [], None
    while True:
        body = client.get("/api/v1/join", headers=headers, params={**params, **({"cursor": cursor} if cursor else {})}
                          ).json()
        buckets += [r["bucket"] for r in body["rows"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(buckets) == 24 == len(set(buckets))


# Isolation ------------------------------------------------------------------------

def test_bielefeld_cannot_read_guetersloh_data_it_was_not_given(client, world, issuer):
    bi = bearer(issuer, world.bi)
    weather = {**RANGE, "field": "temperature"}
    assert client.get(path(world.gue, PEDESTRIANS, "weather", "/series"), headers=bi, params=weather).status_code == 404
    assert client.get(path(world.gue, PEDESTRIANS, "weather"), headers=bi).status_code == 404
    for suffix in ("/observations", "/export", "/export?format=geojson", "/export?format=json"):
        response = client.get(path(world.gue, PEDESTRIANS, "weather", suffix), headers=bi, params=RANGE)
        assert response.status_code == 404, suffix
        assert "-40" not in response.text and "dwd" not in response.text
    join = client.get("/api/v1/join", headers=bi, params={
        **RANGE, "left": f"{world.bi}/{PEDESTRIANS}/weather", "left_field": "temperature",
        "right": f"{world.gue}/{PEDESTRIANS}/weather", "right_field": "temperature"})
    assert join.status_code == 404
    listed = {d["id"] for d in client.get("/api/v1/datasets", headers=bi).json()}
    assert f"{world.gue}/{PEDESTRIANS}/weather" not in listed
    assert f"{world.gue}/{PEGEL}/water_levels" in listed            # shared with Bielefeld
    assert f"{world.gue}/{PEDESTRIANS}/pedestrian_counts" in listed  # open data
    # The sharer's own list of partners is not shown to the partner.
    shared = next(d for d in client.get("/api/v1/datasets", headers=bi).json()
                  if d["id"] == f"{world.gue}/{PEGEL}/water_levels")
    assert shared["shared_with"] is None


def test_the_sensor_filter_cannot_reach_into_another_tenant(client, world, issuer):
    # Bielefeld's own weather table, filtered by Gütersloh's station id: only Bielefeld's rows exist there.
    rows = client.get(path(world.bi, PEDESTRIANS, "weather", "/observations"), headers=bearer(issuer, world.bi),
                      params={**RANGE, "sensor_id": "dwd-01303"}).json()["rows"]
    assert rows and {r["values"]["temperature"] for r in rows} == {-40.0}


def test_shared_dataset_is_readable_by_the_partner_only(client, world, issuer):
    url = path(world.gue, PEGEL, "water_levels", "/series")
    params = {**RANGE, "field": "water_level", "aggregate": "max", "bucket": "day"}
    shared = client.get(url, headers=bearer(issuer, world.bi), params=params)
    assert shared.status_code == 200
    assert shared.json()["rows"][0]["values"]["water_level_max"] == 105.0
    # Bielefeld did not share its gauges back.
    back = client.get(path(world.bi, PEGEL, "water_levels", "/series"), headers=bearer(issuer, world.gue),
                      params=params)
    assert back.status_code == 404
    stranger = client.get(url, headers=bearer(issuer, "rheda-wiedenbrueck"), params=params)
    assert stranger.status_code == 404


def test_only_mutating_methods_do_not_exist(client, world, issuer):
    # Shared data is read-only: the API has no route that writes.
    response = client.post(path(world.gue, PEGEL, "water_levels", "/observations"),
                           headers=bearer(issuer, world.bi), json={})
    assert response.status_code == 405


def test_graphql_enforces_the_same_isolation(client, world, issuer):
    query = """query($owner: String!) { series(dataset: {owner: $owner, tool: "passantenfrequenz-wetter",
               name: "weather"}, fields: ["temperature"], start: "2026-03-02T00:00:00Z", end: "2026-03-04T00:00:00Z")
               { points { bucket values { name value } } } }"""
    denied = client.post("/graphql", headers=bearer(issuer, world.bi), json={"query": query,
                                                                              "variables": {"owner": world.gue}})
    body = denied.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    own = client.post("/graphql", headers=bearer(issuer, world.gue), json={"query": query,
                                                                            "variables": {"owner": world.gue}}).json()
    points = own["data"]["series"]["points"]
    assert len(points) == 24 and points[0]["values"] == [{"name": "temperature_avg", "value": 5.0}]
    join = """query($gue: String!, $bi: String!) { join(
        left: {dataset: {owner: $bi, tool: "passantenfrequenz-wetter", name: "weather"}, fields: ["temperature"]},
        right: {dataset: {owner: $gue, tool: "passantenfrequenz-wetter", name: "weather"}, fields: ["temperature"]},
        start: "2026-03-02T00:00:00Z", end: "2026-03-04T00:00:00Z") { points { bucket } } }"""
    joined = client.post("/graphql", headers=bearer(issuer, world.bi),
                         json={"query": join, "variables": {"gue": world.gue, "bi": world.bi}}).json()
    assert joined["data"] is None and joined["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    listed = client.post("/graphql", headers=bearer(issuer, world.bi), json={"query": "{ datasets { id } }"}).json()
    assert f"{world.gue}/{PEDESTRIANS}/weather" not in {d["id"] for d in listed["data"]["datasets"]}


def test_graphql_observations_are_typed(client, world, issuer):
    query = """query($owner: String!) { observations(dataset: {owner: $owner, tool: "pegel-warnung",
               name: "water_levels"}, start: "2026-03-02T00:00:00Z", end: "2026-03-04T00:00:00Z", limit: 2)
               { rows { sensorId observedAt values { name number text } } nextCursor } }"""
    body = client.post("/graphql", headers=bearer(issuer, world.bi),
                       json={"query": query, "variables": {"owner": world.gue}}).json()
    page = body["data"]["observations"]
    assert page["nextCursor"]
    assert page["rows"][0]["values"][0] == {"name": "water_level", "number": 100.0, "text": None}
    assert {"name": "station_name", "number": None, "text": "Dalke"} in page["rows"][0]["values"]


def test_roles_limit_what_a_token_may_read(client, world, issuer):
    citizen = bearer(issuer, world.gue, roles=("citizen",))
    response = client.get(path(world.gue, PEDESTRIANS, "weather", "/series"), headers=citizen,
                          params={**RANGE, "field": "temperature"})
    assert response.status_code == 403
    assert "gov-viewer" in response.json()["error"]["message"]
    public = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"), headers=citizen,
                        params={**RANGE, "field": "pedestrians"})
    assert public.status_code == 200


# Tokens ---------------------------------------------------------------------------

def _bad_tokens(issuer, world):
    claims = {"tenant": world.gue}
    return {
        "forged": issuer.token(tenant=world.gue, key=new_key()),
        "expired": issuer.token(tenant=world.gue, lifetime=-3600),
        "wrong issuer": issuer.token(tenant=world.gue, issuer="http://127.0.0.1:1/realms/urbanstack"),
        "wrong audience": issuer.token(tenant=world.gue, audience="account"),
        "other tenant's audience": issuer.token(tenant=world.gue, audience=f"{world.bi}-api"),
        "alg none": _alg_none(issuer.token(**claims)),
        "not a jwt": "not-a-token",
    }


def _alg_none(token: str) -> str:
    import base64
    import json
    _, payload, _ = token.split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode().rstrip("=")
    return f"{header}.{payload}."


def test_bad_tokens_are_refused_with_401_everywhere(client, world, issuer):
    for name, token in _bad_tokens(issuer, world).items():
        headers = {"Authorization": f"Bearer {token}"}
        # Even for open data: a caller who sends a token gets it checked, not silently ignored.
        for url in (path(world.gue, PEDESTRIANS, "weather", "/series?field=temperature"),
                    path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series?field=pedestrians"), "/api/v1/datasets"):
            response = client.get(url, headers=headers)
            assert response.status_code == 401, (name, url, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
        graphql = client.post("/graphql", headers=headers, json={"query": "{ datasets { id } }"})
        assert graphql.status_code == 401, name
    assert client.get("/api/v1/datasets", headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401


# Open data ------------------------------------------------------------------------

def test_open_data_is_readable_without_a_token(client, world):
    listed = client.get("/api/v1/datasets").json()
    ids = {d["id"] for d in listed}
    assert f"{world.gue}/{PEDESTRIANS}/pedestrian_counts" in ids
    assert not any(d["owner"] in (world.gue, world.bi) and not d["public"] for d in listed)
    meta = next(d for d in listed if d["id"] == f"{world.gue}/{PEDESTRIANS}/pedestrian_counts")
    assert meta["licence"] == "dl-de/zero-2-0"
    assert {f["name"]: f["unit"] for f in meta["fields"]}["pedestrians"] == "persons"
    series = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"),
                        params={**RANGE, "field": "pedestrians", "aggregate": "sum", "bucket": "day"})
    assert series.status_code == 200 and len(series.json()["rows"]) == 2
    closed = client.get(path(world.gue, PEDESTRIANS, "weather", "/series"), params={**RANGE, "field": "temperature"})
    assert closed.status_code == 401
    assert "bearer token" in closed.json()["error"]["message"]
    graphql = client.post("/graphql", json={"query": "{ datasets { id licence } }"}).json()
    assert {d["id"] for d in graphql["data"]["datasets"]} >= {f"{world.gue}/{PEDESTRIANS}/pedestrian_counts"}
    nobody = client.get(path(world.bi, PEGEL, "water_levels", "/export"))
    assert nobody.status_code == 401


# Exports --------------------------------------------------------------------------

def test_exports(client, world):
    url = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/export")
    params = {**RANGE, "sensor_id": "g-berliner"}
    text = client.get(url, params={**params, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == 192 and rows[0]["observed_at"] == "2026-03-02T00:00:00Z"
    assert rows[0]["location_name"].startswith("'=")  # no formula injection into spreadsheets
    geo = client.get(url, params={**params, "format": "geojson"}).json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 192
    assert geo["features"][0]["geometry"] == {"type": "Point", "coordinates": [8.383, 51.906]}
    assert geo["metadata"]["licence"] == "dl-de/zero-2-0"
    document = client.get(url, params={**params, "format": "json"}).json()
    assert document["units"]["pedestrians"] == "persons" and len(document["rows"]) == 192
    series_csv = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"),
                            params={**RANGE, "field": "pedestrians", "aggregate": "sum", "bucket": "day",
                                    "format": "csv"})
    assert series_csv.text.splitlines()[0] == "bucket,sensor_id,events,pedestrians_sum"


# Errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("params, fragment", [
    ({"field": "nonexistent"}, "has no field 'nonexistent'"),
    ({"field": "location_name", "aggregate": "avg"}, "only 'count'"),
    ({"field": "pedestrians", "bucket": "minute", "from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
     "at most 7 days"),
    ({"field": "pedestrians", "from": "2026-03-02T00:00:00"}, "no time zone"),
    ({"field": "pedestrians", "from": "yesterday"}, "not an ISO-8601"),
    ({"field": "pedestrians", "from": "2026-03-05T00:00:00Z", "to": "2026-03-04T00:00:00Z"}, "must be before"),
    ({"field": "pedestrians", "cursor": "garbage"}, "cursor"),
    ({"field": "pedestrians", "timezone": "Mars/Olympus"}, "IANA"),
    ({"field": "pedestrians", "bbox": "1,2,3"}, "bbox"),
    ({"field": "pedestrians", "bbox": "10,60,5,50"}, "bbox"),
    ({"field": "pedestrians", "limit": "100000"}, "limit"),
    ({"field": "pedestrians') FROM system.users --"}, "has no field"),
])
def test_bad_input_gets_a_clear_400(client, world, params, fragment):
    response = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"), params=params)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert fragment in message
    assert "SELECT" not in message and "FINAL" not in message


def test_unknown_dataset_and_validation_errors(client, world, issuer):
    assert client.get(path("nowhere", "x", "y"), headers=bearer(issuer, world.gue)).status_code == 404
    assert client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")).status_code == 422
    assert client.get("/api/v1/datasets/Bad Slug/x/y").status_code == 422


def test_health_readiness_metrics_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "urbanstack_api_requests_total" in metrics and "urbanstack_api_query_seconds_bucket" in metrics
    spec = client.get("/openapi.json").json()
    assert "/api/v1/datasets/{owner}/{tool}/{dataset}/series" in spec["paths"]


# Schemathesis ---------------------------------------------------------------------

def test_openapi_fuzzing_finds_no_server_errors(client, world, issuer):
    import schemathesis
    from hypothesis import HealthCheck, given, settings as hypothesis_settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    token = bearer(issuer, world.bi)
    failures, calls = [], []
    for operation in schema.get_all_operations():
        operation = operation.ok()

        @hypothesis_settings(max_examples=25, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            case.headers = {**(case.headers or {}), **token}
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.query, response.status_code,
                                 response.text[:300]))

        run()
    assert failures == []
    assert len(calls) >= 6 * 10 and any(status == 200 for status in calls)


@pytest.mark.parametrize("kind, params", [
    ("series", {"field": ["pedestrians"], "aggregate": ["count", "sum", "avg", "p95"], "by_sensor": "true"}),
    ("series", {"field": ["pedestrians"], "aggregate": ["sum"], "bucket": "day", "timezone": "Europe/Berlin"}),
    ("join", {"left_field": "pedestrians", "left_aggregate": ["sum", "max"],
              "right_field": ["temperature", "precipitation"], "right_aggregate": ["avg", "min"], "limit": 5}),
])
def test_json_written_by_the_warehouse_matches_the_python_answer_and_the_schema(client, world, issuer, kind, params):
    """Series and joins are serialised by the warehouse for speed; the body must be exactly
    what the Python path builds and what the OpenAPI schema promises."""
    from urbanstack.runtime.api import rest
    from urbanstack.runtime.api.auth import Permission, Principal
    from urbanstack.runtime.api.query import (Aggregate, Bucket, DatasetRef, Filters, JoinQuery, JoinSide,
                                              SeriesQuery, parse_time)

    headers = bearer(issuer, world.gue)
    engine = client.app.state.engine
    principal = Principal(tenant=world.gue, roles=frozenset({"gov-viewer"}), subject="t",
                          permissions=frozenset(Permission))
    start, end = parse_time(RANGE["from"], "from"), parse_time(RANGE["to"], "to")
    bucket = Bucket(params.get("bucket", "hour"))
    if kind == "series":
        response = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"), headers=headers,
                              params={**RANGE, **params})
        python = rest.series_out(engine.series(principal, SeriesQuery(
            dataset=DatasetRef(world.gue, PEDESTRIANS, "pedestrian_counts"), fields=tuple(params["field"]),
            aggregates=tuple(Aggregate(a) for a in params["aggregate"]), bucket=bucket,
            by_sensor=params.get("by_sensor") == "true", timezone=params.get("timezone", "UTC"), limit=None,
            cursor=None, filters=Filters(start=start, end=end, sensor_ids=(), bbox=None))))
        model = rest.SeriesOut
    else:
        left, right = f"{world.gue}/{PEDESTRIANS}/pedestrian_counts", f"{world.gue}/{PEDESTRIANS}/weather"
        response = client.get("/api/v1/join", headers=headers, params={**RANGE, **params, "left": left,
                                                                       "right": right})
        python = rest.join_out(engine.join(principal, JoinQuery(
            left=JoinSide(DatasetRef(world.gue, PEDESTRIANS, "pedestrian_counts"), ("pedestrians",),
                          tuple(Aggregate(a) for a in params["left_aggregate"]), ()),
            right=JoinSide(DatasetRef(world.gue, PEDESTRIANS, "weather"), tuple(params["right_field"]),
                           tuple(Aggregate(a) for a in params["right_aggregate"]), ()),
            bucket=bucket, start=start, end=end, bbox=None, timezone="UTC", limit=5, cursor=None)))
        model = rest.JoinOut
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rows"], "the comparison needs rows"
    assert body == json.loads(rest.json_response(python).body)
    model.model_validate(body)
    if kind == "join":
        assert body["next_cursor"] is not None and len(body["rows"]) == 5
