"""OGC API – Features (Core, GeoJSON, OpenAPI 3.0) under /ogcapi over the real warehouse engine, on the
Data Hub API's app: landing page, conformance, the OpenAPI 3.0 definition, collections with extents,
items with bbox, datetime, limit and paging links, single features, content negotiation, tenant rules
(tokens from a local JWKS here; test_features_keycloak.py uses real Keycloak tokens) and OWSLib, a
real client, reading the collections over HTTP from the app served by uvicorn."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from served_app import serving
from test_api import PEDESTRIANS, PEGEL, T0, World, bearer

from urbanstack.runtime.api import create_app
from urbanstack.runtime.api.quota import QueryQuota

pytestmark = pytest.mark.platform

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def client(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def ids(world) -> dict[str, str]:
    return {"counts": f"{world.gue}.{PEDESTRIANS}.pedestrian_counts", "weather": f"{world.gue}.{PEDESTRIANS}.weather",
            "gue_levels": f"{world.gue}.{PEGEL}.water_levels",
            "bi_counts": f"{world.bi}.{PEDESTRIANS}.pedestrian_counts",
            "bi_weather": f"{world.bi}.{PEDESTRIANS}.weather", "bi_levels": f"{world.bi}.{PEGEL}.water_levels"}


def latest(rows: list[dict], sensor: str, before: dt.datetime | None = None) -> dict:
    """What the warehouse holds as the sensor's latest reading (at or before ``before``)."""
    mine = [r for r in rows if r["sensor_id"] == sensor and (before is None or r["observed_at"] <= before)]
    return max(mine, key=lambda r: r["observed_at"])


def features(response) -> dict[str, dict]:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "application/geo+json"
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["numberReturned"] == len(body["features"])
    return {f["id"]: f for f in body["features"]}


def time_text(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Capabilities -----------------------------------------------------------------------------------

def test_landing_conformance_and_openapi_definition(client):
    landing = client.get("/ogcapi/")
    assert landing.status_code == 200 and landing.headers["content-type"] == "application/json"
    links = {link["rel"]: link for link in landing.json()["links"]}
    assert links["conformance"]["href"] == "http://testserver/ogcapi/conformance"
    assert links["data"]["href"] == "http://testserver/ogcapi/collections"
    assert links["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert client.get("/ogcapi").json() == landing.json()
    conforms = client.get("/ogcapi/conformance").json()["conformsTo"]
    assert {c.rsplit("/", 1)[1] for c in conforms} == {"core", "geojson", "oas30"}
    api = client.get(links["service-desc"]["href"])
    assert api.status_code == 200 and api.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
    document = api.json()
    assert document["openapi"].startswith("3.0.")
    assert {"/", "/conformance", "/collections", "/collections/{collectionId}", "/collections/{collectionId}/items",
            "/collections/{collectionId}/items/{featureId}"} <= set(document["paths"])
    names = {p["name"] for p in document["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]}
    assert {"bbox", "datetime", "limit", "offset"} <= names
    from openapi_spec_validator import validate

    validate(document)   # a valid OpenAPI 3.0 document, references resolved


# Collections --------------------------------------------------------------------------------------

def test_anonymous_callers_see_the_open_dataset_with_its_extent(client, world):
    body = client.get("/ogcapi/collections").json()
    assert [c["id"] for c in body["collections"]] == [ids(world)["counts"]]
    collection = body["collections"][0]
    assert collection["itemType"] == "feature" and collection["license"] == "dl-de/zero-2-0"
    assert collection["extent"]["spatial"]["bbox"] == [[8.383, 51.906, 8.389, 51.909]]
    last = T0 + dt.timedelta(hours=47, minutes=45)
    assert collection["extent"]["temporal"]["interval"] == [[time_text(T0), time_text(last)]]
    assert {f["name"]: f["unit"] for f in collection["fields"]}["pedestrians"] == "persons"
    rels = {link["rel"]: link["href"] for link in collection["links"]}
    assert rels["items"] == f"http://testserver/ogcapi/collections/{collection['id']}/items"
    assert client.get(f"/ogcapi/collections/{collection['id']}").json() == collection


def test_sensors_are_features_with_their_latest_reading(client, world):
    counts = ids(world)["counts"]
    found = features(client.get(f"/ogcapi/collections/{counts}/items"))
    assert set(found) == {"g-berliner", "g-koenig"}
    berliner = found["g-berliner"]
    assert berliner["geometry"] == {"type": "Point", "coordinates": [8.383, 51.906]}
    expected = latest(world.pedestrians, "g-berliner")
    assert berliner["properties"]["observedAt"] == time_text(expected["observed_at"])
    assert berliner["properties"]["pedestrians"] == expected["pedestrians"]
    assert berliner["properties"]["location_name"] == "g-berliner"
    assert berliner["properties"]["children"] is None   # no value in that reading
    single = client.get(f"/ogcapi/collections/{counts}/items/g-koenig")
    assert single.status_code == 200 and single.headers["content-type"] == "application/geo+json"
    assert single.json()["properties"]["pedestrians"] == latest(world.pedestrians, "g-koenig")["pedestrians"]
    assert {link["rel"] for link in single.json()["links"]} == {"self", "collection"}
    missing = client.get(f"/ogcapi/collections/{counts}/items/no-such-sensor")
    assert missing.status_code == 404 and "no-such-sensor" in missing.json()["error"]["message"]


def test_bbox_keeps_the_sensors_inside_and_refuses_a_bad_box(client, world):
    url = f"/ogcapi/collections/{ids(world)['counts']}/items"
    assert set(features(client.get(url, params={"bbox": "8.38,51.90,8.385,51.907"}))) == {"g-berliner"}
    assert set(features(client.get(url, params={"bbox": "8.38,51.90,0,8.39,51.91,100"}))) == {"g-berliner",
                                                                                               "g-koenig"}
    empty = client.get(url, params={"bbox": "9,52,10,53"}).json()
    assert empty["features"] == [] and empty["numberMatched"] == 0
    # West edge east of the east edge: a box across the antimeridian, which holds Gütersloh only when it wraps.
    assert features(client.get(url, params={"bbox": "177,65,-177,70"})) == {}
    assert set(features(client.get(url, params={"bbox": "8.386,51.90,-170,51.91"}))) == {"g-koenig"}
    for bad in ("8.38,51.90,8.39", "8.38,51.91,8.39,51.90", "a,b,c,d", "8,51,9,95", "nan,51,9,52", "181,51,9,52"):
        answer = client.get(url, params={"bbox": bad})
        assert answer.status_code == 400, bad
        assert "bbox" in answer.json()["error"]["message"]


def test_datetime_instants_intervals_and_open_ends(client, world):
    url = f"/ogcapi/collections/{ids(world)['counts']}/items"
    at = T0 + dt.timedelta(hours=5, minutes=15)
    instant = features(client.get(url, params={"datetime": time_text(at)}))
    assert {k: f["properties"]["pedestrians"] for k, f in instant.items()} == {
        s: latest(world.pedestrians, s, at)["pedestrians"] for s in ("g-berliner", "g-koenig")}
    assert instant["g-koenig"]["properties"]["observedAt"] == time_text(at)
    # An instant between two readings matches none.
    assert features(client.get(url, params={"datetime": time_text(at + dt.timedelta(minutes=1))})) == {}
    interval = features(client.get(url, params={"datetime": f"{time_text(T0)}/{time_text(at)}"}))
    assert interval["g-berliner"]["properties"]["observedAt"] == time_text(at)
    open_start = features(client.get(url, params={"datetime": f"../{time_text(at)}"}))
    assert open_start["g-berliner"]["properties"]["pedestrians"] == latest(world.pedestrians, "g-berliner",
                                                                           at)["pedestrians"]
    open_end = features(client.get(url, params={"datetime": f"{time_text(at)}/.."}))
    assert open_end["g-berliner"]["properties"]["pedestrians"] == latest(world.pedestrians, "g-berliner")["pedestrians"]
    day = features(client.get(url, params={"datetime": "2026-03-02"}))
    last_of_day = T0 + dt.timedelta(hours=23, minutes=45)
    assert day["g-koenig"]["properties"]["observedAt"] == time_text(last_of_day)
    before = client.get(url, params={"datetime": "2020-01-01T00:00:00Z/2020-02-01T00:00:00Z"}).json()
    assert before["features"] == [] and before["numberMatched"] == 0
    for bad in ("yesterday", "2026-03-02T00:00:00", "2026-03-03T00:00:00Z/2026-03-02T00:00:00Z", "..", "a/b/c"):
        answer = client.get(url, params={"datetime": bad})
        assert answer.status_code == 400, bad
        assert "datetime" in answer.json()["error"]["message"]


def test_latest_reading_before_a_gap_and_times_outside_the_warehouse(world, issuer, settings, warehouse):
    """'As of' a time with no reading in the day before it: the latest one before the gap is found."""
    late = {**world.weather[0], "event_id": "bw-late", "observed_at": T0 + dt.timedelta(days=10), "temperature": 1.5}
    warehouse.insert(world.table(world.bi, PEDESTRIANS, "weather").replace("`", ""), [list(late.values())],
                     column_names=list(late))
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))
    url = f"/ogcapi/collections/{ids(world)['bi_weather']}/items"
    with TestClient(app, raise_server_exceptions=False) as fresh:
        bi = bearer(issuer, world.bi)
        as_of = f"../{time_text(T0 + dt.timedelta(days=5))}"
        station = features(fresh.get(url, headers=bi, params={"datetime": as_of}))
        assert station["dwd-01303"]["properties"]["observedAt"] == time_text(T0 + dt.timedelta(hours=23))
        assert station["dwd-01303"]["properties"]["temperature"] == -40.0
        now = features(fresh.get(url, headers=bi))["dwd-01303"]["properties"]
        assert now["observedAt"] == time_text(late["observed_at"]) and now["temperature"] == 1.5
        for far in ("1900-01-01T00:00:00Z", "0001-01-01/1960-01-01", "2200-01-01T00:00:00Z/..", "9999-12-31"):
            body = fresh.get(url, headers=bi, params={"datetime": far}).json()
            assert body.get("features") == [] and body["numberMatched"] == 0, (far, body)
        everything = features(fresh.get(url, headers=bi, params={"datetime": "0001-01-01T00:00:00Z/9999-01-01"}))
        assert everything["dwd-01303"]["properties"]["temperature"] == 1.5


def test_limit_and_paging_links_walk_every_feature_once(client, world):
    url = f"/ogcapi/collections/{ids(world)['counts']}/items"
    for extra in ({}, {"datetime": f"{time_text(T0)}/.."}):
        page = client.get(url, params={"limit": "1", **extra}).json()
        seen = []
        while True:
            assert page["numberMatched"] == 2 and page["numberReturned"] == 1
            seen += [f["id"] for f in page["features"]]
            links = {link["rel"]: link["href"] for link in page["links"]}
            if "next" not in links:
                break
            assert parse_qs(urlsplit(links["next"]).query).get("datetime") == ([extra["datetime"]] if extra else None)
            page = client.get(links["next"]).json()
        assert seen == ["g-berliner", "g-koenig"]
        assert "prev" in links and client.get(links["prev"]).json()["features"][0]["id"] == "g-berliner"
        past = client.get(url, params={"limit": "5", "offset": "7", **extra}).json()
        assert past["features"] == [] and past["numberMatched"] == 2
    for bad in ("0", "10001", "-1", "ten"):
        answer = client.get(url, params={"limit": bad})
        assert answer.status_code == 400 and "limit" in answer.json()["error"]["message"]


def test_unknown_parameters_formats_and_accept_headers_are_clear_errors(client, world):
    url = f"/ogcapi/collections/{ids(world)['counts']}/items"
    unknown = client.get(url, params={"sortby": "pedestrians"})
    assert unknown.status_code == 400 and "sortby" in unknown.json()["error"]["message"]
    html = client.get(url, params={"f": "html"})
    assert html.status_code == 400 and "no HTML" in html.json()["error"]["message"]
    refused = client.get(url, headers={"Accept": "text/html"})
    assert refused.status_code == 406 and "application/geo+json" in refused.json()["error"]["message"]
    assert client.get("/ogcapi/collections", headers={"Accept": "application/xml"}).status_code == 406
    as_json = client.get(url, headers={"Accept": "application/json"})
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    browser = client.get(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.headers["content-type"] == "application/geo+json"
    assert client.get(url, params={"f": "json"}).headers["content-type"] == "application/geo+json"
    assert client.get("/ogcapi/collections", params={"f": "json"}).status_code == 200
    assert client.get(url).headers["access-control-allow-origin"] == "*"
    assert client.get(url, params={"f": "html"}).headers["access-control-allow-origin"] == "*"
    assert client.post(url).status_code == 405


# Tenant rules -------------------------------------------------------------------------------------

def test_bielefeld_sees_its_own_shared_and_open_collections_only(client, world, issuer):
    names = ids(world)
    bi = bearer(issuer, world.bi)
    listed = [c["id"] for c in client.get("/ogcapi/collections", headers=bi).json()["collections"]]
    # Gütersloh's water levels are shared with Bielefeld but have no positions: no features, no collection.
    assert listed == sorted([names["counts"], names["bi_counts"], names["bi_weather"], names["bi_levels"]])
    assert client.get(f"/ogcapi/collections/{names['gue_levels']}", headers=bi).status_code == 404
    lutter = features(client.get(f"/ogcapi/collections/{names['bi_levels']}/items", headers=bi))["lutter"]
    assert lutter["properties"]["water_level"] == 705.0
    # Bielefeld's counts hold stale copies of early events: the latest copy counts (FINAL).
    early = T0 + dt.timedelta(minutes=30)
    got = features(client.get(f"/ogcapi/collections/{names['bi_counts']}/items", headers=bi,
                              params={"datetime": time_text(early)}))
    expected = latest(world.pedestrians, "g-berliner", early)["pedestrians"]
    assert got["g-berliner"]["properties"]["pedestrians"] == expected != 99_999
    gue = [c["id"] for c in client.get("/ogcapi/collections", headers=bearer(issuer, world.gue)).json()["collections"]]
    assert names["weather"] in gue and names["bi_counts"] not in gue


@pytest.mark.parametrize("who", ["anonymous", "bielefeld"])
def test_guetersloh_private_weather_is_invisible_through_every_route(client, world, issuer, who):
    names = ids(world)
    headers = {} if who == "anonymous" else bearer(issuer, world.bi)
    owner = bearer(issuer, world.gue)
    weather = f"/ogcapi/collections/{names['weather']}"
    no_such = f"{world.gue}.{PEDESTRIANS}.no_such"
    assert client.get(f"{weather}/items/dwd-01303", headers=owner).status_code == 200   # it exists
    listed = client.get("/ogcapi/collections", headers=headers).json()["collections"]
    assert names["weather"] not in {c["id"] for c in listed}
    for path in (weather, f"{weather}/items", f"{weather}/items/dwd-01303",
                 f"{weather}/items?datetime=../2030-01-01T00:00:00Z&bbox=-180,-90,180,90"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404, path
        # Word for word as a collection that never existed.
        never = client.get(path.replace(names["weather"], no_such), headers=headers)
        assert never.status_code == 404
        assert answer.json() == json.loads(never.text.replace(no_such, names["weather"]))
    everything = client.get(f"/ogcapi/collections/{names['counts']}/items", headers=headers,
                            params={"bbox": "8.37,51.89,8.39,51.91", "limit": "10000"}).json()
    assert "dwd-01303" not in {f["id"] for f in everything["features"]}


def test_tokens_are_checked_and_data_requests_count_against_the_quota(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 2))
    with TestClient(app, raise_server_exceptions=False) as limited:
        bad = limited.get("/ogcapi/collections", headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401
        url = f"/ogcapi/collections/{ids(world)['counts']}/items"
        assert limited.get(url).status_code == 200 and limited.get(url).status_code == 200
        refused = limited.get(url)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        # The landing page, conformance and the API definition read no dataset and are not counted.
        assert limited.get("/ogcapi/").status_code == 200
        assert limited.get("/ogcapi/conformance").status_code == 200


# A real client ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))
    with serving(app, settings) as base:
        yield f"{base}/ogcapi/"


@pytest.fixture
def owslib_headers():
    """OWSLib copies the headers given to one client into its module-wide defaults, so a token would
    be sent by every client made after it; each test starts from (and restores) the defaults."""
    import owslib.ogcapi

    saved = dict(owslib.ogcapi.REQUEST_HEADERS)
    yield
    owslib.ogcapi.REQUEST_HEADERS.clear()
    owslib.ogcapi.REQUEST_HEADERS.update(saved)


def test_owslib_reads_the_collections(server, world, owslib_headers):
    from owslib.ogcapi.features import Features

    service = Features(server)
    assert {c.rsplit("/", 1)[1] for c in service.conformance()["conformsTo"]} == {"core", "geojson", "oas30"}
    assert service.api()["openapi"].startswith("3.0.")
    counts = ids(world)["counts"]
    assert service.feature_collections() == [counts]
    assert service.collection(counts)["extent"]["spatial"]["bbox"] == [[8.383, 51.906, 8.389, 51.909]]
    items = service.collection_items(counts, bbox=[8.38, 51.90, 8.385, 51.907], limit=5)
    assert [f["id"] for f in items["features"]] == ["g-berliner"] and items["numberMatched"] == 1
    at = T0 + dt.timedelta(hours=3)
    page = service.collection_items(counts, datetime_=f"../{time_text(at)}", limit=1)
    assert page["features"][0]["properties"]["pedestrians"] == latest(world.pedestrians, "g-berliner",
                                                                      at)["pedestrians"]
    assert any(link["rel"] == "next" for link in page["links"])
    koenig = service.collection_item(counts, "g-koenig")
    assert koenig["properties"]["pedestrians"] == latest(world.pedestrians, "g-koenig")["pedestrians"]
    with pytest.raises(RuntimeError, match="not visible"):
        service.collection_items(ids(world)["weather"])


def test_owslib_with_bielefeld_token_reads_its_collections_only(server, world, issuer, owslib_headers):
    from owslib.ogcapi.features import Features

    names = ids(world)
    service = Features(server, headers=bearer(issuer, world.bi))
    assert sorted(service.feature_collections()) == sorted([names["counts"], names["bi_counts"],
                                                            names["bi_weather"], names["bi_levels"]])
    lutter = service.collection_items(names["bi_levels"])["features"]
    assert [f["properties"]["water_level"] for f in lutter] == [705.0]
    for private in (f"collections/{names['weather']}/items", f"collections/{names['weather']}/items/dwd-01303"):
        with pytest.raises(RuntimeError, match="not visible"):
            service._request(path=private)


def ogrinfo(url: str, *args: str, token: dict | None = None) -> str:
    from urbanstack.devplatform.debian import ensure_installed

    ensure_installed("gdal-bin", provides="ogrinfo", what="the OGC API – Features test with GDAL's OAPIF driver")
    env = dict(os.environ, GDAL_HTTP_HEADERS=f"Authorization: {token['Authorization']}" if token else "")
    run = subprocess.run(["ogrinfo", "-ro", "-al", f"OAPIF:{url}", *args], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-1000:]
    return run.stdout


def test_gdal_reads_the_features_as_qgis_and_geopandas_do(server, world, issuer):
    """GDAL's OAPIF driver (under ogr2ogr, geopandas and many desktop tools): layers, fields, a bbox."""
    counts = ids(world)["counts"]
    summary = ogrinfo(server, "-so")
    assert f"Layer name: {counts}" in summary and "Feature Count: 2" in summary
    assert "Geometry: Point" in summary and "pedestrians: Integer" in summary
    assert ids(world)["weather"] not in summary
    inside = ogrinfo(server, "-spat", "8.382", "51.905", "8.384", "51.907", counts)
    expected = latest(world.pedestrians, "g-berliner")["pedestrians"]
    assert "sensorId (String) = g-berliner" in inside and f"pedestrians (Integer) = {expected}" in inside
    assert "g-koenig" not in inside and "POINT (8.383 51.906)" in inside
    bielefeld = ogrinfo(server, "-so", token=bearer(issuer, world.bi))
    assert f"Layer name: {ids(world)['bi_levels']}" in bielefeld and ids(world)["weather"] not in bielefeld
