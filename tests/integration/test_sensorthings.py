"""The SensorThings API 1.1 (read) over the real warehouse engine, on the Data Hub API's app:
entities and ids, values against what was inserted, query options, paging, limits, tenant
rules (tokens from a local JWKS here; test_sensorthings_keycloak.py uses real Keycloak
tokens), Masterportal's own requests and Fraunhofer's Python client over HTTP."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fastapi.testclient import TestClient
from served_app import serving
from sensorthings_checks import assert_invisible, private_entities
from test_api import PEDESTRIANS, PEGEL, T0, World, bearer

from urbanstack.operator import naming
from urbanstack.runtime.api import create_app
from urbanstack.runtime.api.quota import QueryQuota
from urbanstack.runtime.api.sensorthings.graph import stable_id

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def client(world, issuer, settings, warehouse):
    # No quota for callers without a token: this module sends hundreds of anonymous requests
    # (the quota itself is tested with an app of its own below).
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def as_masterportal_sends(url: str) -> str:
    """A link as Masterportal follows it: the query parsed and written again by url-parse (every key
    and value through encodeURIComponent), with $count=true set."""
    parts = urlsplit(url)
    query = {name: value[0] for name, value in parse_qs(parts.query, keep_blank_values=True).items()}
    query["$count"] = "true"
    encoded = "&".join(f"{quote(k, safe=ENCODE_URI_COMPONENT)}={quote(v, safe=ENCODE_URI_COMPONENT)}"
                       for k, v in query.items())
    return f"{parts.path}?{encoded}"


ENCODE_URI_COMPONENT = "-_.!~*'()"


def follows(url: str) -> bool:
    """Masterportal does not follow a link whose $top is at most its $skip (the caller's own $top)."""
    query = parse_qs(urlsplit(url).query)
    top, skip = int(query.get("$top", ["0"])[0]), int(query.get("$skip", ["0"])[0])
    return not (top > 0 and top <= skip)


def values(response) -> list[dict]:
    assert response.status_code == 200, response.text[:500]
    return response.json()["value"]


def thing(client, world, sensor: str, headers=None) -> dict:
    found = [t for t in values(client.get("/v1.1/Things", headers=headers or {})) if t["name"] == sensor]
    assert len(found) == 1, found
    return found[0]


def stream(client, thing_id: int, field: str, headers=None) -> dict:
    streams = values(client.get(f"/v1.1/Things({thing_id})/Datastreams", headers=headers or {}))
    return next(s for s in streams if s["properties"]["field"] == field)


# Mapping -------------------------------------------------------------------------------------

def test_open_data_maps_onto_things_datastreams_and_units(client, world):
    things = values(client.get("/v1.1/Things"))
    assert sorted(t["name"] for t in things) == ["g-berliner", "g-koenig"]
    berliner = next(t for t in things if t["name"] == "g-berliner")
    ref = f"{world.gue}/{PEDESTRIANS}/pedestrian_counts"
    assert berliner["@iot.id"] == stable_id("Thing", ref, "g-berliner")
    assert berliner["@iot.selfLink"] == f"http://testserver/v1.1/Things({berliner['@iot.id']})"
    assert berliner["properties"]["licence"] == "dl-de/zero-2-0"
    assert berliner["Datastreams@iot.navigationLink"].endswith(f"Things({berliner['@iot.id']})/Datastreams")
    streams = values(client.get(f"/v1.1/Things({berliner['@iot.id']})/Datastreams"))
    # One Datastream per field of the CityTool's dataset, with the field's unit.
    assert {s["properties"]["field"]: s["unitOfMeasurement"]["symbol"] for s in streams} == {
        "pedestrians": "persons", "pedestrians_ltr": "persons", "pedestrians_rtl": "persons", "adults": "persons",
        "children": "persons", "location_name": None}
    counts = next(s for s in streams if s["properties"]["field"] == "pedestrians")
    assert counts["observationType"].endswith("OM_CountObservation")
    assert counts["phenomenonTime"] == "2026-03-02T00:00:00.000Z/2026-03-03T23:45:00.000Z"
    locations = values(client.get(f"/v1.1/Things({berliner['@iot.id']})/Locations"))
    assert [loc["location"] for loc in locations] == [{"type": "Point", "coordinates": [8.383, 51.906]}]
    historical = values(client.get(f"/v1.1/Things({berliner['@iot.id']})/HistoricalLocations"))
    assert [h["time"] for h in historical] == ["2026-03-02T00:00:00.000Z"]
    sensor = client.get(f"/v1.1/Datastreams({counts['@iot.id']})/Sensor").json()
    assert sensor["name"] == "g-berliner" and sensor["metadata"] == f"/api/v1/datasets/{ref}"
    observed = client.get(f"/v1.1/Datastreams({counts['@iot.id']})/ObservedProperty").json()
    assert observed["name"] == "pedestrians" and observed["description"] == "Pedestrians in both directions."
    # Path forms: a property, its raw value, and a reference.
    assert client.get(f"/v1.1/Things({berliner['@iot.id']})/name").json() == {"name": "g-berliner"}
    assert client.get(f"/v1.1/Things({berliner['@iot.id']})/name/$value").text == "g-berliner"
    refs = client.get("/v1.1/Things/$ref").json()["value"]
    assert {r["@iot.selfLink"] for r in refs} == {t["@iot.selfLink"] for t in things}


def test_ids_are_the_same_in_another_api_process(client, world, issuer, settings, warehouse):
    again = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    with TestClient(again) as other:
        first = {t["@iot.id"] for t in values(client.get("/v1.1/Datastreams", params={"$top": "1000"}))}
        second = {t["@iot.id"] for t in values(other.get("/v1.1/Datastreams", params={"$top": "1000"}))}
        assert first == second and len(first) == 12
        # An Observation id this process never wrote: the warehouse finds the row by its id.
        listed = values(client.get("/v1.1/Observations", params={"$top": "5", "$skip": "100"}))
        found = other.get(f"/v1.1/Observations({listed[3]['@iot.id']})").json()
        assert found == listed[3]
        assert other.get(f"/v1.1/Observations({listed[3]['@iot.id'] ^ 1})").status_code == 404


def test_observations_carry_the_inserted_values_deduplicated(client, world, issuer):
    headers = bearer(issuer, world.bi)
    # Bielefeld's pedestrian table holds stale copies (99,999) of ten events: FINAL shows the fresh ones.
    things = [t for t in values(client.get("/v1.1/Things", headers=headers, params={"$top": "100"}))
              if t["properties"]["dataset"] == f"{world.bi}/{PEDESTRIANS}/pedestrian_counts"]
    berliner = next(t for t in things if t["name"] == "g-berliner")
    counts = stream(client, berliner["@iot.id"], "pedestrians", headers)
    got = values(client.get(f"/v1.1/Datastreams({counts['@iot.id']})/Observations", headers=headers,
                            params={"$orderby": "phenomenonTime asc", "$top": "1000"}))
    expected = [row for row in world.pedestrians if row["sensor_id"] == "g-berliner"]
    assert [o["result"] for o in got] == [row["pedestrians"] for row in expected]
    assert 99_999 not in {o["result"] for o in got}
    assert got[0]["phenomenonTime"] == "2026-03-02T00:00:00.000Z"
    one = client.get(f"/v1.1/Observations({got[5]['@iot.id']})", headers=headers).json()
    assert one["result"] == expected[5]["pedestrians"]
    assert client.get(f"/v1.1/Observations({got[5]['@iot.id']})/Datastream", headers=headers).json()[
        "@iot.id"] == counts["@iot.id"]
    feature = client.get(f"/v1.1/Observations({got[5]['@iot.id']})/FeatureOfInterest", headers=headers).json()
    assert feature["feature"] == {"type": "Point", "coordinates": [8.383, 51.906]}
    in_feature = values(client.get(f"/v1.1/FeaturesOfInterest({feature['@iot.id']})/Observations",
                                   headers=headers, params={"$top": "10000"}))
    # Every field value of the sensor's events at that position: 192 events × 2 non-empty fields.
    assert len(in_feature) == 2 * len(expected)


def test_filters_on_observations_match_a_count_in_python(client, world):
    berliner = thing(client, world, "g-berliner")
    counts = stream(client, berliner["@iot.id"], "pedestrians")
    url = f"/v1.1/Datastreams({counts['@iot.id']})/Observations"
    rows = [r for r in world.pedestrians if r["sensor_id"] == "g-berliner"]
    cases = {
        "result gt 250": lambda r: r["pedestrians"] > 250,
        "result ge 100 and result lt 200 or result eq 7": lambda r: 100 <= r["pedestrians"] < 200 or
        r["pedestrians"] == 7,
        "not (result le 400)": lambda r: r["pedestrians"] > 400,
        "result mod 2 eq 0 and result add 1 gt 300": lambda r: r["pedestrians"] % 2 == 0 and r["pedestrians"] > 299,
        "phenomenonTime ge 2026-03-03T00:00:00Z and phenomenonTime lt 2026-03-03T06:00:00+00:00":
            lambda r: dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc) <= r["observed_at"] <
            dt.datetime(2026, 3, 3, 6, tzinfo=dt.timezone.utc),
        "hour(phenomenonTime) eq 13": lambda r: r["observed_at"].hour == 13,
        "resultTime lt 2026-03-04T00:00:00Z sub duration'PT12H'": lambda r: r["observed_at"] <
            dt.datetime(2026, 3, 3, 12, tzinfo=dt.timezone.utc),
    }
    for text, predicate in cases.items():
        body = client.get(url, params={"$filter": text, "$count": "true", "$top": "1000"}).json()
        assert body["@iot.count"] == sum(map(predicate, rows)), text
        assert [o["result"] for o in body["value"]] == [r["pedestrians"] for r in rows if predicate(r)], text
    # Nothing in the last 24 hours (the data is from March): the chart request of Masterportal gives [].
    assert values(client.get(url, params={"$filter": "(resultTime gt now() sub duration'PT24H')"})) == []
    # Text results: the location_name field.
    names = values(client.get(f"/v1.1/Datastreams({stream(client, berliner['@iot.id'], 'location_name')['@iot.id']})"
                              "/Observations", params={"$filter": "startswith(result, '=HYP')"}))
    assert [o["result"] for o in names] == ['=HYPERLINK("x")']


def test_observations_filtered_by_their_datastream(client, world, issuer):
    headers = bearer(issuer, world.bi)
    berliner = thing(client, world, "g-berliner")
    counts = stream(client, berliner["@iot.id"], "pedestrians")
    own = values(client.get(f"/v1.1/Datastreams({counts['@iot.id']})/Observations",
                            params={"$filter": "result gt 250", "$top": "1000"}))
    root = client.get("/v1.1/Observations", params={
        "$filter": f"Datastream/@iot.id eq {counts['@iot.id']} and result gt 250", "$top": "1000",
        "$count": "true"}).json()
    assert [o["@iot.id"] for o in root["value"]] == [o["@iot.id"] for o in own] and root["@iot.count"] == len(own)
    # All pedestrian counts Bielefeld may read: its own two counters and Gütersloh's open ones.
    everything = client.get("/v1.1/Observations", headers=headers, params={
        "$filter": "Datastream/properties/field eq 'pedestrians' and Datastream/Thing/name eq 'g-koenig'",
        "$count": "true", "$top": "1"}).json()
    assert everything["@iot.count"] == 2 * 192
    two = [own[3]["@iot.id"], own[7]["@iot.id"]]
    by_id = values(client.get("/v1.1/Observations", params={
        "$filter": f"@iot.id eq {two[0]} or id eq {two[1]}", "$orderby": "phenomenonTime"}))
    assert [o["@iot.id"] for o in by_id] == two
    mixed = client.get("/v1.1/Observations", params={"$filter": "Datastream/name eq 'x' or result gt 1"})
    assert mixed.status_code == 400 and "not both" in mixed.json()["error"]["message"]
    # Through a Datastream filter nobody reaches data they may not read.
    hidden = client.get("/v1.1/Observations", params={"$filter": "Datastream/properties/field eq 'temperature'",
                                                      "$count": "true"}).json()
    assert hidden == {"@iot.count": 0, "value": []}


def test_injection_attempts_are_values_or_refusals(client, world):
    berliner = thing(client, world, "g-berliner")
    url = f"/v1.1/Datastreams({stream(client, berliner['@iot.id'], 'location_name')['@iot.id']})/Observations"
    assert values(client.get(url, params={"$filter": "result eq 'x'' OR 1=1 --'"})) == []
    response = client.get(url, params={"$filter": "result eq 1; DROP TABLE x"})
    assert response.status_code == 400 and "unexpected character ';'" in response.json()["error"]["message"]
    assert client.get("/v1.1/Things").status_code == 200


def test_random_filters_are_answered_or_refused_never_failed(world, issuer, settings, warehouse):
    """A fixed-seed fuzz of the grammar: every filter gets 200 or a 400 that names $filter."""
    import random

    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=QueryQuota(lambda slug: None, 0))   # no limit for callers without a token
    client = TestClient(app)

    generator = random.Random(14)
    operands = ["result", "phenomenonTime", "name", "properties/field", "Locations/location", "@iot.id", "1", "-2.5",
                "'x'", "'it''s'", "null", "true", "2026-03-02T00:00:00Z", "now()", "duration'PT1H'",
                "geography'POINT (8.38 51.9)'", "geography'POLYGON ((8 51, 9 51, 9 52, 8 51))'", "Datastream/name",
                "FeatureOfInterest/feature", "parameters/eventId", "Datastream/@iot.id"]
    functions = ["length", "tolower", "startswith", "substringof", "year", "round", "st_intersects", "st_within",
                 "concat", "indexof", "substring", "now", "nosuch"]
    operators = ["eq", "ne", "gt", "ge", "lt", "le", "and", "or", "add", "sub", "mul", "div", "mod"]

    def term(depth: int) -> str:
        choice = generator.random()
        if depth > 2 or choice < 0.4:
            return generator.choice(operands)
        if choice < 0.6:
            name = generator.choice(functions)
            return f"{name}({', '.join(term(depth + 1) for _ in range(generator.randint(0, 3)))})"
        if choice < 0.7:
            return f"not ({term(depth + 1)})"
        return f"({term(depth + 1)} {generator.choice(operators)} {term(depth + 1)})"

    berliner = thing(client, world, "g-berliner")
    urls = ["/v1.1/Things", "/v1.1/Datastreams",
            f"/v1.1/Datastreams({stream(client, berliner['@iot.id'], 'pedestrians')['@iot.id']})/Observations"]
    answered = 0
    for _ in range(150):
        text = term(0)
        for url in urls:
            response = client.get(url, params={"$filter": text})
            assert response.status_code in (200, 400), (url, text, response.text[:300])
            if response.status_code == 400:
                assert response.json()["error"]["message"].startswith("$filter"), (text, response.text[:300])
            answered += response.status_code == 200
    assert answered > 30


def test_paging_with_next_links_covers_everything_once(client, world):
    berliner = thing(client, world, "g-berliner")
    counts = stream(client, berliner["@iot.id"], "pedestrians")
    url = f"/v1.1/Datastreams({counts['@iot.id']})/Observations?$top=50&$orderby=result desc,phenomenonTime"
    seen, pages = [], 0
    while url:
        body = client.get(url.replace("http://testserver", "")).json()
        seen += [o["@iot.id"] for o in body["value"]]
        url, pages = body.get("@iot.nextLink"), pages + 1
    assert pages == 4 and len(seen) == len(set(seen)) == 192
    things = client.get("/v1.1/Things", params={"$top": "1"}).json()
    query = parse_qs(urlsplit(things["@iot.nextLink"]).query)
    assert query == {"$top": ["1"], "$skip": ["1"]}
    # Without $top the page size is the server's, and the link says only where to go on.
    streams = client.get("/v1.1/Datastreams", params={"$filter": "properties/field ne 'x'"}).json()
    assert len(streams["value"]) == 12 and "@iot.nextLink" not in streams
    url = f"/v1.1/Datastreams({counts['@iot.id']})/Observations?$orderby=phenomenonTime"
    seen = []
    while url:
        body = client.get(url.replace("http://testserver", "")).json()
        seen += [o["@iot.id"] for o in body["value"]]
        url = body.get("@iot.nextLink")
        if url:
            assert parse_qs(urlsplit(url).query).keys() == {"$skip", "$orderby"} and follows(url)
    assert len(seen) == len(set(seen)) == 192
    # $top=0 with $count: the number alone, and no link that would lead round in a circle.
    for url in ("/v1.1/Things", f"/v1.1/Datastreams({stream(client, berliner['@iot.id'], 'pedestrians')['@iot.id']})"
                                "/Observations"):
        assert client.get(url, params={"$top": "0", "$count": "true"}).json() in (
            {"@iot.count": 2, "value": []}, {"@iot.count": 192, "value": []})


def test_in_memory_filters_orderby_select_and_count(client, world):
    body = client.get("/v1.1/Datastreams", params={
        "$filter": "properties/field eq 'pedestrians' or endswith(name, 'g-koenig') and unitOfMeasurement/symbol "
                   "eq 'persons'", "$orderby": "name desc", "$select": "@iot.id,name", "$count": "true"}).json()
    assert body["@iot.count"] == 6
    assert [s["name"] for s in body["value"]] == sorted([f"{f} – g-koenig" for f in
                                                         ("pedestrians", "pedestrians_ltr", "pedestrians_rtl",
                                                          "adults", "children")] + ["pedestrians – g-berliner"],
                                                        reverse=True)
    assert set(body["value"][0]) == {"@iot.id", "name"}
    bad = client.get("/v1.1/Things", params={"$filter": "nosuch eq 1"})
    assert bad.status_code == 400 and "a Thing has no property 'nosuch'" in bad.json()["error"]["message"]


def test_built_entities_are_shared_within_a_memory_bound(client, world):
    from urbanstack.runtime.api.sensorthings.graph import SensorIndex, StaLimits

    engine = client.app.state.engine
    datasets = engine.datasets(None)
    shared = SensorIndex(engine, StaLimits())
    first = shared.graph(datasets)
    assert first.size == 2 + 2 + 12 + 2 + 2 + 2 + 6 and shared.graph(datasets) is first
    small = SensorIndex(engine, StaLimits(cached_entities=first.size - 1))
    assert small.graph(datasets) is not small.graph(datasets)   # too big to keep: built per request


def test_limits_are_enforced(client, world):
    too_many = client.get("/v1.1/Observations", params={"$top": "10001"})
    assert too_many.status_code == 400 and "at most 10000" in too_many.json()["error"]["message"]
    deep = client.get("/v1.1/Things", params={"$expand": "Datastreams/Observations/FeatureOfInterest/Observations"})
    assert deep.status_code == 400 and "at most 3" in deep.json()["error"]["message"]
    long_filter = client.get("/v1.1/Things", params={"$filter": " or ".join(["name eq 'x'"] * 400)})
    assert long_filter.status_code == 400
    assert client.get("/v1.1/Things(1)").status_code == 404
    assert client.get("/v1.1/Nothing").status_code == 404


# Tenant rules (local tokens; real Keycloak tokens in test_sensorthings_keycloak.py) ----------

def test_anonymous_and_other_tenant_cannot_see_private_data(client, world, issuer):
    owner = bearer(issuer, world.gue)
    weather = private_entities(client, owner, f"{world.gue}/{PEDESTRIANS}/weather")
    private_values = {5.0 + h / 2 for h in range(24) if h % 2}
    assert assert_invisible(client, {}, weather, private_values) > 50
    assert assert_invisible(client, bearer(issuer, world.bi), weather, private_values) > 50


def test_shared_data_is_readable_by_the_partner_only(client, world, issuer):
    levels = f"{world.gue}/{PEGEL}/water_levels"
    partner = [t for t in values(client.get("/v1.1/Things", headers=bearer(issuer, world.bi),
                                            params={"$top": "100"})) if t["properties"]["dataset"] == levels]
    assert [t["name"] for t in partner] == ["dalke"]
    stream_id = stream(client, partner[0]["@iot.id"], "water_level", bearer(issuer, world.bi))["@iot.id"]
    got = values(client.get(f"/v1.1/Datastreams({stream_id})/Observations", headers=bearer(issuer, world.bi)))
    assert [o["result"] for o in got] == [100.0 + h for h in range(6)]
    # Dalke reports no position: no Location, and a FeatureOfInterest without a feature.
    assert values(client.get(f"/v1.1/Things({partner[0]['@iot.id']})/Locations", headers=bearer(issuer, world.bi))) == []
    assert client.get(f"/v1.1/Datastreams({stream_id})/Observations", headers={}).status_code == 404
    # A citizen role reads open data only, even its own municipality's.
    citizen = bearer(issuer, world.gue, roles=("citizen",))
    assert {t["properties"]["dataset"] for t in values(client.get("/v1.1/Things", headers=citizen))} == {
        f"{world.gue}/{PEDESTRIANS}/pedestrian_counts"}
    bad = client.get("/v1.1/Things", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_request_counts_against_the_callers_quota(world, issuer, settings, warehouse):
    quota = QueryQuota(lambda slug: 3, 2)
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api",
                     quota=quota)
    with TestClient(app) as limited:
        assert [limited.get("/v1.1/Things").status_code for _ in range(3)] == [200, 200, 429]
        refused = limited.get("/v1.1/Datastreams")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        headers = bearer(issuer, world.bi)
        assert [limited.get("/v1.1/Things", headers=headers).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_platform_origin_sends_v1_1_to_the_api(world, issuer, settings, warehouse):
    from starlette.responses import PlainTextResponse

    from urbanstack import serve

    async def pages(scope, receive, send):
        await PlainTextResponse("a page", status_code=418)(scope, receive, send)

    api = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    with TestClient(serve.PathDispatch(api, pages)) as origin:
        assert origin.get("/v1.1").json()["serverSettings"]["conformance"]
        assert len(origin.get("/v1.1/Things").json()["value"]) == 2
        assert origin.get("/v1").status_code == 418


# Masterportal's requests, as it sends them -------------------------------------------------

MASTERPORTAL_EXTENT = (
    "/v1.1/Things?$filter=st_intersects(Locations/location,geography%27POLYGON%20((8.3%2051.8,%208.5%2051.8,"
    "%208.5%2052.0,%208.3%2052.0,%208.3%2051.8))%27)&$expand=Locations,Datastreams/Observations("
    "$orderby=phenomenonTime%20desc;$top=1)")


def test_masterportal_extent_request(client, world):
    origin = {"Origin": "https://geoportal.example.org"}
    response = client.get(MASTERPORTAL_EXTENT, headers=origin)
    # A map on another origin may read the answer (and errors), and send a token after a preflight.
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert client.get("/v1.1/Things(1)", headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    preflight = client.options("/v1.1/Things", headers={**origin, "Access-Control-Request-Method": "GET",
                                                        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert "Access-Control-Allow-Origin" not in client.get("/api/v1/datasets", headers=origin).headers
    body = response.json()
    # The same request with every key and value encoded by url-parse (%24filter, %27, %28, ...).
    encoded = client.get(as_masterportal_sends(MASTERPORTAL_EXTENT)).json()
    assert encoded["@iot.count"] == 2 and encoded["value"] == body["value"]
    things = body["value"]
    assert sorted(t["name"] for t in things) == ["g-berliner", "g-koenig"]
    for item in things:
        assert item["Locations"][0]["location"]["type"] == "Point"
        assert len(item["Datastreams"]) == 6
        latest = {s["properties"]["field"]: s["Observations"] for s in item["Datastreams"]}
        last = max((r for r in world.pedestrians if r["sensor_id"] == item["name"]), key=lambda r: r["observed_at"])
        assert [o["result"] for o in latest["pedestrians"]] == [last["pedestrians"]]
        assert latest["adults"] == [] and "Observations@iot.nextLink" not in next(
            s for s in item["Datastreams"] if s["properties"]["field"] == "adults")
        assert latest["pedestrians"][0]["phenomenonTime"] == "2026-03-03T23:45:00.000Z"
        # More than one Observation exists: the nested nextLink leads to the next one.
        nested = next(s for s in item["Datastreams"] if s["properties"]["field"] == "pedestrians")
        following = client.get(nested["Observations@iot.nextLink"].replace("http://testserver", "")).json()
        assert following["value"][0]["phenomenonTime"] == "2026-03-03T23:30:00.000Z"
        assert not follows(nested["Observations@iot.nextLink"])   # Masterportal asked for the latest only
    outside = client.get(MASTERPORTAL_EXTENT.replace("8.3%2051.8", "9.3%2051.8").replace("8.5%20", "9.5%20")
                         .replace("8.3%2052.0", "9.3%2052.0")).json()
    assert outside["value"] == []


@pytest.mark.parametrize("options", ["$orderby=phenomenonTime desc;$top=1", "$orderby=phenomenonTime desc;$top=150",
                                     "$orderby=phenomenonTime desc;$top=20;$skip=90",
                                     "$orderby=resultTime desc,result;$top=3;$filter=result lt 300",
                                     "$orderby=result desc;$top=4"])
def test_expanded_observations_equal_each_datastream_s_own_list(client, world, issuer, options):
    """Expansions read many Datastreams in one query (newest first: a day's window, then the rest
    where the window held too few); each must equal what the Datastream's own route gives."""
    headers = bearer(issuer, world.bi)
    # Bielefeld's counters: 48 hours of readings, so that a day's window holds 96 of 192 and $top=150
    # or $skip=90 must read the rest.
    things = values(client.get("/v1.1/Things", headers=headers, params={
        "$top": "100", "$expand": f"Datastreams/Observations({options})",
        "$filter": f"properties/dataset eq '{world.bi}/{PEDESTRIANS}/pedestrian_counts'"}))
    assert len(things) == 2
    compared = 0
    pairs = dict(part.split("=", 1) for part in options.split(";"))
    for item in things:
        for stream_item in item["Datastreams"]:
            own = values(client.get(f"/v1.1/Datastreams({stream_item['@iot.id']})/Observations", headers=headers,
                                    params=pairs))
            assert [o["@iot.id"] for o in stream_item["Observations"]] == [o["@iot.id"] for o in own]
            compared += len(own)
    assert compared >= 4  # two counters × two fields with readings, at least one each


def test_masterportal_datastreams_with_thing_locations_and_nested_next_links(client, world):
    body = client.get("/v1.1/Datastreams?$expand=Thing/Locations&$top=2").json()
    assert all(s["Thing"]["Locations"][0]["location"]["coordinates"] for s in body["value"])
    assert body["@iot.nextLink"].startswith("http://testserver/v1.1/Datastreams?$top=2&$skip=2")
    things = client.get("/v1.1/Things?$expand=Datastreams($top=2;$expand=Observations($top=3;"
                        "$orderby=phenomenonTime%20desc))&$top=1").json()["value"]
    first = things[0]
    assert len(first["Datastreams"]) == 2 and "Datastreams@iot.nextLink" in first
    rest = client.get(first["Datastreams@iot.nextLink"].replace("http://testserver", "")).json()
    assert len(rest["value"]) == 2 and {s["@iot.id"] for s in rest["value"]}.isdisjoint(
        {s["@iot.id"] for s in first["Datastreams"]})
    observed = first["Datastreams"][0]
    assert len(observed["Observations"]) == 3 and "Observations@iot.nextLink" in observed
    # The nextLink keeps the nested $expand (those two fields have no readings in this world).
    assert [s["Observations"] for s in rest["value"]] == [[], []]


def test_masterportal_follows_every_link_as_it_rewrites_them(client, world):
    """Masterportal's loop over @iot.nextLink and <collection>@iot.nextLink, with each link parsed and
    encoded again by url-parse and $count=true added: it collects every Observation exactly once."""
    berliner = thing(client, world, "g-berliner")
    url = f"/v1.1/Things({berliner['@iot.id']})/Datastreams?$expand=Observations($orderby=phenomenonTime)"
    queue, collected, requests = [(as_masterportal_sends(url), None)], {}, 0
    while queue:
        link, stream_id = queue.pop(0)
        response = client.get(link)
        requests += 1
        assert response.status_code == 200, (link, response.text[:300])
        body = response.json()
        assert "@iot.count" in body
        for item in body["value"]:
            key = stream_id or item["@iot.id"]
            if stream_id is None:
                collected.setdefault(key, []).extend(o["result"] for o in item["Observations"])
                nested = item.get("Observations@iot.nextLink")
                if nested and follows(nested):
                    queue.append((as_masterportal_sends(nested.replace("http://testserver", "")), key))
            else:
                collected[key].append(item["result"])
        if body.get("@iot.nextLink") and follows(body["@iot.nextLink"]):
            queue.append((as_masterportal_sends(body["@iot.nextLink"].replace("http://testserver", "")), stream_id))
    counts = next(s for s in values(client.get(f"/v1.1/Things({berliner['@iot.id']})/Datastreams"))
                  if s["properties"]["field"] == "pedestrians")
    assert collected[counts["@iot.id"]] == [r["pedestrians"] for r in world.pedestrians if r["sensor_id"] == "g-berliner"]
    assert requests == 1 + 2 * 1   # two Datastreams with 192 readings: one more page of 92 each


def test_masterportal_chart_request(client, world):
    berliner = thing(client, world, "g-berliner")
    counts = stream(client, berliner["@iot.id"], "pedestrians")
    url = (f"/v1.1/Datastreams({counts['@iot.id']})/Observations?$filter=(resultTime%20gt%20now()%20sub%20"
           "duration%27PT24H%27)&$orderby=phenomenonTime%20asc")
    assert client.get(url).json()["value"] == []
    since = (f"/v1.1/Datastreams({counts['@iot.id']})/Observations?$filter=(resultTime%20gt%202026-03-04T00:00:00Z"
             "%20sub%20duration%27PT24H%27)&$orderby=phenomenonTime%20asc")
    got = client.get(since).json()["value"]
    assert [o["result"] for o in got] == [r["pedestrians"] for r in world.pedestrians
                                          if r["sensor_id"] == "g-berliner"
                                          and r["observed_at"] > dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)][:100]


# A real client ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    with serving(app, settings) as base:
        yield f"{base}/v1.1"


def test_frost_sta_client_lists_things_datastreams_and_reads_observations(server, world):
    import frost_sta_client as fsc

    service = fsc.SensorThingsService(server)
    things = list(service.things().query().list())
    assert sorted(t.name for t in things) == ["g-berliner", "g-koenig"]
    streams = list(service.datastreams().query().filter("properties/field eq 'pedestrians'").list())
    assert len(streams) == 2
    berliner = next(s for s in streams if s.name.endswith("g-berliner"))
    assert berliner.unit_of_measurement.symbol == "persons"
    observations = list(berliner.get_observations().query().orderby("phenomenonTime", "asc").top(100).list())
    # The client follows @iot.nextLink: all 192 readings, in order.
    assert [o.result for o in observations] == [r["pedestrians"] for r in world.pedestrians
                                                 if r["sensor_id"] == "g-berliner"]
    one = service.observations().find(observations[3].id)
    assert one.result == observations[3].result


def test_an_event_without_position_belongs_to_the_sensor_s_current_place(client, world, issuer):
    """Runs last in this module: it adds a reading to Bielefeld's gauge."""
    headers = bearer(issuer, world.bi)
    table = f"{naming.database(world.bi)}.{naming.table(PEGEL, 'water_levels')}"
    world.warehouse.insert(table, [["b-unplaced", "pegelonline", "lutter", T0 + dt.timedelta(hours=7), None, None,
                                    777.0, "Lutter"]],
                           column_names=["event_id", "source", "sensor_id", "observed_at", "lon", "lat",
                                         "water_level", "station_name"])
    client.app.state.sensorthings_index.forget()
    lutter = thing(client, world, "lutter", headers)
    level = stream(client, lutter["@iot.id"], "water_level", headers)
    latest = values(client.get(f"/v1.1/Datastreams({level['@iot.id']})/Observations", headers=headers,
                               params={"$orderby": "phenomenonTime desc", "$top": "1",
                                       "$expand": "FeatureOfInterest"}))[0]
    assert latest["result"] == 777.0
    feature = latest["FeatureOfInterest"]
    assert feature["feature"] == {"type": "Point", "coordinates": [8.53, 52.02]}
    at_place = values(client.get(f"/v1.1/FeaturesOfInterest({feature['@iot.id']})/Observations", headers=headers,
                                 params={"$filter": "result ge 700", "$top": "100"}))
    assert sorted(o["result"] for o in at_place) == [700.0 + h for h in range(6)] + [777.0]
