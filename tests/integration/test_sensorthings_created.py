"""SensorThings Create-Update-Delete of entities clients create, on the real platform: real
Keycloak tokens, every change an event in Kafka (the municipality's topics of the built-in CityTool
``sensorthings``), written by the sink into chDB, and readable when the answer comes. Deep insert,
the cascade of DELETE, reads merged with the entities derived from CityTool datasets, tenant
isolation, and bad bodies that write nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace

import pytest
import yaml
from fastapi.testclient import TestClient
from sink_harness import read_topic
from test_api import EXAMPLES, PEDESTRIANS, _municipality, _tool
# Keycloak tenants, Kafka topics and users, the sink (Gütersloh's topics) and tokens as there.
from test_sensorthings_write import _app as write_app
from test_sensorthings_write import admin_config, people, sink, streams, tenants  # noqa: F401 - fixtures

from urbanstack.operator import naming
from urbanstack.operator.models import parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.api.sensorthings.graph import StaLimits

pytestmark = pytest.mark.platform

STA = "sensorthings"
GEO = "application/geo+json"


def sta_tool():
    return parse_citytool(yaml.safe_load((EXAMPLES / f"citytool-{STA}.yaml").read_text()))


class World:
    """Gütersloh with the sensorthings tool and a derived dataset (one counter), Bielefeld with the
    tool too; nothing shared."""

    def __init__(self, warehouse, public: bool = False):
        suffix = uuid.uuid4().hex[:6]
        self.gue, self.bi = f"guetersloh-c{suffix}", f"bielefeld-c{suffix}"
        self.tools = [_tool(PEDESTRIANS), sta_tool()]
        self.municipalities = [_municipality(self.gue, "05754008", [PEDESTRIANS, STA], []),
                               _municipality(self.bi, "05711000", [STA], [])]
        self.catalogue = Catalogue(self.municipalities, self.tools)
        provisioner = WarehouseProvisioner(lambda: warehouse, embedded=True)
        for municipality in self.municipalities:
            ensure(provisioner, plan(municipality, self.tools).warehouse, {})
        warehouse.insert(f"{naming.database(self.gue)}.{naming.table(PEDESTRIANS, 'pedestrian_counts')}",
                         [["e1", "hystreet", "g-derived", dt.datetime.now(dt.timezone.utc), 8.38, 51.9, 12, "Markt"]],
                         column_names=["event_id", "source", "sensor_id", "observed_at", "lon", "lat", "pedestrians",
                                       "location_name"])

    def public_catalogue(self) -> Catalogue:
        """The same, with Gütersloh's sensorthings datasets shared as open data."""
        shared = _municipality(self.gue, "05754008", [PEDESTRIANS, STA], [
            {"tool": STA, "dataset": name, "public": True, "licence": "dl-de/zero-2-0"}
            for name in ("entities", "observations")])
        return Catalogue([shared, self.municipalities[1]], self.tools)


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


def _app(platform, catalogue, warehouse, streams, limits=None):
    return write_app(platform, SimpleNamespace(catalogue=catalogue), warehouse, streams, limits)


@pytest.fixture(scope="module")
def client(platform, world, warehouse, streams, sink):  # noqa: F811 - fixtures
    app, publishers = _app(platform, world.catalogue, warehouse, streams)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    publishers.close()


def thing_body(name: str, lon: float = 8.38, lat: float = 51.9, observations=()) -> dict:
    return {"name": name, "description": f"{name} thing", "properties": {"floor": 3},
            "Locations": [{"name": f"{name} place", "description": "roof", "encodingType": GEO,
                           "location": {"type": "Point", "coordinates": [lon, lat]}}],
            "Datastreams": [{"name": f"{name} lux", "description": "light", "observationType": "OM_Measurement",
                             "unitOfMeasurement": {"name": "Lumen", "symbol": "lm", "definition": None},
                             "ObservedProperty": {"name": "Luminous Flux", "definition": "urn:lux",
                                                  "description": "light"},
                             "Sensor": {"name": f"{name} sensor", "description": "flux meter",
                                        "encodingType": "application/pdf", "metadata": "sheet.pdf"},
                             "Observations": list(observations)}]}


def related(client, headers, path: str) -> list[dict]:
    answer = client.get(f"/v1.1/{path}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


def stored(warehouse, slug: str, dataset: str) -> int:
    return warehouse.query(f"SELECT count() FROM `{naming.database(slug)}`.`{naming.table(STA, dataset)}`"
                           ).result_rows[0][0]


def test_deep_insert_reads_back_at_once_and_travels_through_kafka(client, world, people, admin_config):
    created = client.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("office", observations=[
        {"phenomenonTime": "2026-01-01T10:00:00Z", "result": 10},
        {"phenomenonTime": "2026-01-01T10:15:00Z/2026-01-01T10:30:00Z", "result": {"lux": 12, "ok": True},
         "resultTime": "2026-01-01T10:31:00Z", "parameters": {"calibrated": True}}]))
    assert created.status_code == 201, created.text
    thing = created.json()
    assert created.headers["Location"] == thing["@iot.selfLink"]
    assert 2**53 <= thing["@iot.id"] < 2**54 and thing["@iot.id"] % 2 == 0   # never a derived id, exact in JS
    assert (thing["name"], thing["properties"]) == ("office", {"floor": 3})
    # Every part is readable now, linked both ways, with the HistoricalLocation the Locations imply.
    location = related(client, people.gue_editor, f"Things({thing['@iot.id']})/Locations")[0]
    assert location["location"] == {"type": "Point", "coordinates": [8.38, 51.9]}
    assert related(client, people.gue_editor, f"Locations({location['@iot.id']})/Things")[0]["name"] == "office"
    history = related(client, people.gue_editor, f"Things({thing['@iot.id']})/HistoricalLocations")
    assert len(history) == 1
    stream = client.get(f"/v1.1/Things({thing['@iot.id']})/Datastreams", headers=people.gue_editor, params={
        "$expand": "Sensor,ObservedProperty,Observations($orderby=phenomenonTime;$expand=FeatureOfInterest)"}
    ).json()["value"][0]
    assert (stream["Sensor"]["name"], stream["ObservedProperty"]["name"]) == ("office sensor", "Luminous Flux")
    first, second = stream["Observations"]
    assert (first["result"], first["phenomenonTime"], first["resultTime"]) == (10, "2026-01-01T10:00:00.000Z", None)
    assert second["result"] == {"lux": 12, "ok": True}   # JSON results keep their type
    assert second["phenomenonTime"] == "2026-01-01T10:15:00.000Z/2026-01-01T10:30:00.000Z"
    assert (second["resultTime"], second["parameters"]) == ("2026-01-01T10:31:00.000Z", {"calibrated": True})
    # Observations without a FeatureOfInterest got one from the Thing's Location, the same for both.
    assert first["FeatureOfInterest"]["@iot.id"] == second["FeatureOfInterest"]["@iot.id"]
    assert first["FeatureOfInterest"]["feature"] == location["location"]
    # Through the municipality's own topics, as events of the sensorthings datasets.
    entities = b"".join(m.value() for m in read_topic(admin_config, naming.topic(world.gue, STA, "entities"),
                                                      10**9, timeout=5))
    for kind in ("Thing", "Location", "Datastream", "Sensor", "ObservedProperty", "HistoricalLocation",
                 "FeatureOfInterest"):
        assert f'"{kind}/'.encode() in entities, kind   # sensor_id of an entity event: <kind>/<id>
    assert b"office sensor" in entities
    observations = b"".join(m.value() for m in read_topic(admin_config, naming.topic(world.gue, STA, "observations"),
                                                          10**9, timeout=5))
    assert b"calibrated" in observations


def test_each_kind_is_created_changed_and_deleted(client, people):
    def post(path, body):
        answer = client.post(f"/v1.1/{path}", headers=people.gue_editor, json=body)
        assert answer.status_code == 201, (path, answer.text)
        return answer.json()["@iot.id"]

    thing = post("Things", {"name": "kiosk", "description": "a kiosk"})
    location = post("Locations", {"name": "corner", "description": "a corner", "encodingType": GEO,
                                  "location": {"type": "Point", "coordinates": [8.4, 51.91]}})
    sensor = post("Sensors", {"name": "thermo", "description": "t", "encodingType": "text/html", "metadata": "x"})
    prop = post("ObservedProperties", {"name": "temperature", "definition": "urn:t", "description": "air"})
    feature = post("FeaturesOfInterest", {"name": "garden", "description": "g", "encodingType": GEO,
                                          "feature": {"type": "Point", "coordinates": [8.41, 51.92]}})
    stream = post("Datastreams", {"name": "air", "description": "air temperature", "observationType": "OM_Measurement",
                                  "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": None},
                                  "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": sensor},
                                  "ObservedProperty": {"@iot.id": prop}})
    historical = post("HistoricalLocations", {"time": "2026-01-02T00:00:00Z", "Thing": {"@iot.id": thing},
                                              "Locations": [{"@iot.id": location}]})
    observation = post(f"Datastreams({stream})/Observations", {"phenomenonTime": "2026-01-02T08:00:00Z",
                                                               "result": 3.5, "FeatureOfInterest": {"@iot.id": feature}})
    changes = {"Things": (thing, {"description": "a bigger kiosk"}),
               "Locations": (location, {"location": {"type": "Point", "coordinates": [8.5, 51.95]}}),
               "Sensors": (sensor, {"metadata": "v2"}), "ObservedProperties": (prop, {"description": "outdoor air"}),
               "FeaturesOfInterest": (feature, {"name": "big garden"}),
               "Datastreams": (stream, {"unitOfMeasurement": {"name": "Kelvin", "symbol": "K", "definition": None}}),
               "HistoricalLocations": (historical, {"time": "2026-01-03T00:00:00.000Z"}),
               "Observations": (observation, {"result": "broken"})}
    for entity_set, (entity_id, change) in changes.items():
        before = client.get(f"/v1.1/{entity_set}({entity_id})", headers=people.gue_editor).json()
        patched = client.patch(f"/v1.1/{entity_set}({entity_id})", headers=people.gue_editor, json=change)
        assert patched.status_code == 200, (entity_set, patched.text)
        after = client.get(f"/v1.1/{entity_set}({entity_id})", headers=people.gue_editor).json()
        assert after == patched.json() == {**before, **change}, entity_set
    replaced = client.put(f"/v1.1/Sensors({sensor})", headers=people.gue_editor,
                          json={"name": "thermo 2", "description": "new", "encodingType": "text/html", "metadata": "y"})
    assert replaced.status_code == 200 and replaced.json()["properties"] is None
    assert client.put(f"/v1.1/Sensors({sensor})", headers=people.gue_editor, json={"name": "x"}).status_code == 400
    # DELETE each, leaves first; each is gone at once.
    for entity_set, (entity_id, _) in reversed(list(changes.items())):
        deleted = client.delete(f"/v1.1/{entity_set}({entity_id})", headers=people.gue_editor)
        assert deleted.status_code == 200, (entity_set, deleted.text)
        assert client.get(f"/v1.1/{entity_set}({entity_id})", headers=people.gue_editor).status_code == 404
    assert client.delete(f"/v1.1/Things({thing})", headers=people.gue_editor).status_code == 404


def test_delete_cascades_as_the_standard_says(client, people):
    thing = client.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("cascade", observations=[
        {"phenomenonTime": "2026-01-05T00:00:00Z", "result": 1}])).json()["@iot.id"]
    stream = related(client, people.gue_editor, f"Things({thing})/Datastreams")[0]["@iot.id"]
    sensor = client.get(f"/v1.1/Datastreams({stream})/Sensor", headers=people.gue_editor).json()["@iot.id"]
    location = related(client, people.gue_editor, f"Things({thing})/Locations")[0]["@iot.id"]
    observation = related(client, people.gue_editor, f"Datastreams({stream})/Observations")[0]["@iot.id"]
    history = related(client, people.gue_editor, f"Things({thing})/HistoricalLocations")[0]["@iot.id"]
    assert client.delete(f"/v1.1/Things({thing})", headers=people.gue_editor).status_code == 200
    for gone in (f"Things({thing})", f"Datastreams({stream})", f"Observations({observation})",
                 f"HistoricalLocations({history})"):
        assert client.get(f"/v1.1/{gone}", headers=people.gue_editor).status_code == 404, gone
    for kept in (f"Sensors({sensor})", f"Locations({location})"):
        assert client.get(f"/v1.1/{kept}", headers=people.gue_editor).status_code == 200, kept


def test_a_delete_beyond_the_cascade_limit_is_refused_and_deletes_nothing(platform, world, warehouse, streams, sink,
                                                                         people):
    app, publishers = _app(platform, world.catalogue, warehouse, streams, StaLimits(max_cascade_observations=2))
    try:
        with TestClient(app, raise_server_exceptions=False) as small:
            thing = small.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("busy", observations=[
                {"phenomenonTime": f"2026-01-0{day}T00:00:00Z", "result": day} for day in (1, 2, 3)])).json()
            refused = small.delete(f"/v1.1/Things({thing['@iot.id']})", headers=people.gue_editor)
            assert refused.status_code == 409 and "more than 2 Observations" in refused.json()["error"]["message"]
            assert small.get(f"/v1.1/Things({thing['@iot.id']})", headers=people.gue_editor).status_code == 200
            stream = related(small, people.gue_editor, f"Things({thing['@iot.id']})/Datastreams")[0]["@iot.id"]
            assert len(related(small, people.gue_editor, f"Datastreams({stream})/Observations")) == 3
    finally:
        publishers.close()


def test_reads_merge_created_and_derived_entities(client, world, people):
    client.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("merge-north", 8.40, 52.20))
    client.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("merge-south", 8.40, 51.50))
    things = related(client, people.gue_editor, "Things?$top=10000")
    names = {t["name"] for t in things}
    assert "g-derived" in names and {"merge-north", "merge-south"} <= names
    # The sensorthings datasets themselves are not shown as derived Things.
    assert not [t for t in things if t.get("properties", {}) and t["properties"].get("tool") == STA]
    inside = related(client, people.gue_editor, "Things?$filter=st_within(Locations/location, geography'POLYGON(("
                                                "8.3 51.8, 8.5 51.8, 8.5 52.3, 8.3 52.3, 8.3 51.8))')")
    assert {t["name"] for t in inside} >= {"merge-north", "g-derived"} and "merge-south" not in {
        t["name"] for t in inside}
    ordered = related(client, people.gue_editor, "Things?$orderby=name desc&$filter=startswith(name, 'merge')")
    assert [t["name"] for t in ordered] == ["merge-south", "merge-north"]
    page = client.get("/v1.1/Things", headers=people.gue_editor, params={"$top": "1", "$count": "true",
                                                                         "$orderby": "name"}).json()
    assert page["@iot.count"] == len(things) and "@iot.nextLink" in page
    lux = related(client, people.gue_editor, "Observations?$filter=Datastream/name eq 'merge-north lux'")
    assert lux == []


def test_other_municipalities_and_anonymous_callers(platform, client, world, warehouse, streams, people):
    thing = client.post("/v1.1/Things", headers=people.gue_editor, json=thing_body("private")).json()["@iot.id"]
    for headers in (people.bi_editor, {}):
        assert client.get(f"/v1.1/Things({thing})", headers=headers).status_code == 404
        assert "private" not in {t["name"] for t in related(client, headers, "Things")}
    for method in ("PATCH", "DELETE"):
        assert client.request(method, f"/v1.1/Things({thing})", headers=people.bi_editor,
                              json={"name": "x"}).status_code == 404
    linked = client.post("/v1.1/Datastreams", headers=people.bi_editor, json={
        "name": "n", "description": "d", "observationType": "o", "unitOfMeasurement": {"name": "u", "symbol": "u"},
        "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": thing}, "ObservedProperty": {"@iot.id": thing}})
    assert linked.status_code == 400 and "does not exist or is not visible" in linked.json()["error"]["message"]
    assert client.post("/v1.1/Things", json={"name": "a", "description": "b"}).status_code == 401
    viewer = client.post("/v1.1/Things", headers=people.gue_viewer, json={"name": "a", "description": "b"})
    assert viewer.status_code == 403
    # Shared as open data, Gütersloh's created entities are readable without a token, never writable.
    app, publishers = _app(platform, world.public_catalogue(), warehouse, streams)
    try:
        with TestClient(app, raise_server_exceptions=False) as open_client:
            assert open_client.get(f"/v1.1/Things({thing})").json()["name"] == "private"
            foreign = open_client.patch(f"/v1.1/Things({thing})", headers=people.bi_editor, json={"name": "x"})
            assert foreign.status_code == 403 and "belongs to" in foreign.json()["error"]["message"]
    finally:
        publishers.close()


def test_bad_bodies_are_refused_with_the_reason_and_write_nothing(client, world, warehouse, people):
    before = (stored(warehouse, world.gue, "entities"), stored(warehouse, world.gue, "observations"))
    no_location = client.post("/v1.1/Things", headers=people.gue_editor, json={
        "name": "bare", "description": "no place"}).json()["@iot.id"]
    before = (before[0] + 1, before[1])
    bare_stream = {"name": "s", "description": "d", "observationType": "o",
                   "unitOfMeasurement": {"name": "u", "symbol": "u", "definition": None},
                   "Sensor": {"name": "s", "description": "d", "encodingType": "e", "metadata": "m"},
                   "ObservedProperty": {"name": "p", "definition": "d", "description": "d"}}
    cases = [
        ("Things", {"description": "no name"}, "Thing.name is required"),
        ("Things", {"name": 5, "description": "d"}, "Thing.name is text"),
        ("Things", {"name": "a", "description": "d", "colour": "red"}, "no property 'colour'"),
        ("Datastreams", {**bare_stream}, "needs its Thing"),
        ("Datastreams", {**bare_stream, "Thing": {"@iot.id": 2**53 + 2}}, "does not exist or is not visible"),
        # A deep insert whose last part is wrong writes none of its parts.
        ("Things", {**thing_body("half"), "Datastreams": [{**thing_body("x")["Datastreams"][0], "Sensor": None}]},
         "needs its Sensor"),
        ("Things", thing_body("late", observations=[{"phenomenonTime": "yesterday", "result": 1}]),
         "not an ISO 8601 time"),
        ("Things", thing_body("noresult", observations=[{"phenomenonTime": "2026-01-01T00:00:00Z"}]),
         "result is required"),
        ("Datastreams", {**bare_stream, "Thing": {"@iot.id": no_location},
                         "Observations": [{"result": 1}]}, "has no Location to take it from"),
    ]
    for path, body, reason in cases:
        answer = client.post(f"/v1.1/{path}", headers=people.gue_editor, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert reason in answer.json()["error"]["message"], (reason, answer.text)
    big = client.post("/v1.1/Things", headers={**people.gue_editor, "Content-Type": "application/json"},
                      content=b'{"name": "big", "description": "' + b"a" * 70_000 + b'"}')
    assert big.status_code == 413
    assert (stored(warehouse, world.gue, "entities"), stored(warehouse, world.gue, "observations")) == before
