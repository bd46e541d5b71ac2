"""SensorThings Create-Update-Delete on the real platform: Observations POSTed with real Keycloak
tokens enter through Kafka (the municipality's own topic and user, as every reading), the sink
writes them into chDB, and the 201 answer already reads them back. Anonymous callers, viewers
and other municipalities' tokens are refused and publish nothing; every other write is refused
with the reason (405). Fraunhofer's frost-sta-client creates an Observation over HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import threading
import time
import uuid

import pytest
import requests
from fastapi.testclient import TestClient
from served_app import serving
from sink_harness import read_topic
from test_api import PEDESTRIANS, PEGEL
from test_api_keycloak import Tenants, world  # noqa: F401 - fixture
from test_identity_provisioner import _add_viewer

from urbanstack.devplatform import keycloak
from urbanstack.operator.provisioners.identity import IdentityProvisioner

from urbanstack.devplatform import kafka
from urbanstack.operator import naming
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.runtime.api import TokenVerifier, create_app
from urbanstack.runtime.api.sensorthings.graph import StaLimits, stable_id
from urbanstack.runtime.ingest.push import create_push_app
from urbanstack.runtime.ingest.tenants import DailyQuota, StaticCredentials, TenantPublishers
from urbanstack.runtime.sink import Sink, SinkConfig

pytestmark = pytest.mark.platform

WEATHER = "weather"


@pytest.fixture(scope="module")
def tenants(platform, keycloak_admin, world):  # noqa: F811 - fixture
    """Gütersloh and Bielefeld in the shared realm, exactly as the operator provisions them (the
    dedicated-realm tenant of test_api_keycloak.py is not needed here)."""
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    made = Tenants(platform, keycloak_admin, world, provisioner)
    made.parts = [made.gue, made.bi]
    try:
        made.apply()
        yield made
    finally:
        for part in made.parts:
            provisioner.delete(part, keep_data=False)
        provisioner.close()


@pytest.fixture(scope="module")
def admin_config(platform):
    return kafka.admin_config(platform)


@pytest.fixture(scope="module")
def streams(platform, admin_config, world):  # noqa: F811 - fixture
    """Kafka topics, users and ACLs of both municipalities, as the operator provisions them."""
    provisioner = StreamingProvisioner(admin_config)
    parts, credentials = [], {}
    for municipality in world.municipalities:
        part = plan(municipality, world.tools).streaming
        password = secrets.token_urlsafe(18)
        ensure(provisioner, part, {part.password_key: password})
        parts.append(part)
        credentials[municipality.slug] = {"kafka-username": part.user, "kafka-password": password}
    yield StaticCredentials(credentials)
    for part in parts:
        provisioner.delete(part, keep_data=False)


@pytest.fixture(scope="module")
def sink(admin_config, warehouse, world, streams):  # noqa: F811 - fixture
    """The sink in this process, for Gütersloh's topics only: Bielefeld's readings stay in Kafka
    (the read-your-writes timeout is tested with them)."""
    config = SinkConfig(group_id=f"test-sta-sink-{uuid.uuid4().hex[:8]}",
                        topic_pattern=rf"^{world.gue}\.[^.]+\.[^.]+$", retry_initial_seconds=0.05,
                        schema_refresh_seconds=1.0)
    running = Sink(admin_config, warehouse, config)
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), name="test-sink", daemon=True)
    thread.start()
    yield running
    stop.set()
    thread.join(30)


def _app(platform, world, warehouse, streams, limits=None):  # noqa: F811 - fixture
    app = create_app(platform, world.catalogue, warehouse, keycloak_url=platform.keycloak_url,
                     audience="{tenant}-api")
    if limits is not None:
        app.state.sensorthings_limits = limits
    publishers = TenantPublishers(platform, streams)
    ingest = create_push_app(world.catalogue, publishers, streams, quota=DailyQuota(),
                             verifier=TokenVerifier(platform.keycloak_url, "{tenant}-api"))
    app.state.sensorthings_writes = ingest.state.writes
    return app, publishers


@pytest.fixture(scope="module")
def client(platform, world, warehouse, streams, sink):  # noqa: F811 - fixtures
    app, publishers = _app(platform, world, warehouse, streams)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    publishers.close()


@dataclasses.dataclass
class People:
    gue_editor: dict
    gue_viewer: dict
    bi_editor: dict


@pytest.fixture(scope="module")
def people(tenants):
    def header(part, role):
        return {"Authorization": f"Bearer {tenants.token(part, *_add_viewer(tenants.admin, part, role))}"}
    return People(header(tenants.gue, "gov-editor"), header(tenants.gue, "gov-viewer"),
                  header(tenants.bi, "gov-editor"))


def datastream_id(slug: str, tool: str, dataset: str, sensor: str, field: str) -> int:
    return stable_id("Datastream", f"{slug}/{tool}/{dataset}", sensor, field)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_an_editor_s_observation_goes_through_kafka_and_is_readable_when_201_comes(client, world, people,
                                                                                      admin_config):
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    at = now()
    began = time.monotonic()
    created = client.post(f"/v1.1/Datastreams({temperature})/Observations", headers=people.gue_editor,
                          json={"phenomenonTime": at, "result": 21.5})
    seconds = time.monotonic() - began
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["result"], body["phenomenonTime"], body["resultTime"]) == (21.5, at, at)
    assert created.headers["Location"] == body["@iot.selfLink"]
    assert created.headers["Access-Control-Expose-Headers"] == "Location"   # a map portal's page may read it
    assert created.headers["Location"].endswith(f"/v1.1/Observations({body['@iot.id']})")
    # Readable at once, by id and in the Datastream, by Gütersloh's viewer too.
    again = client.get(f"/v1.1/Observations({body['@iot.id']})", headers=people.gue_viewer,
                       params={"$expand": "Datastream"})
    assert again.status_code == 200 and again.json()["result"] == 21.5
    assert again.json()["Datastream"]["@iot.id"] == temperature
    latest = client.get(f"/v1.1/Datastreams({temperature})/Observations", headers=people.gue_viewer,
                        params={"$orderby": "phenomenonTime desc", "$top": "1"}).json()["value"]
    assert latest[0]["@iot.id"] == body["@iot.id"]
    # It went through Gütersloh's own topic like every reading, as an event of the weather dataset.
    topic = naming.topic(world.gue, PEDESTRIANS, WEATHER)
    events = [json.loads(m.value()) for m in read_topic(admin_config, topic, 1, timeout=10) if b"21.5" in m.value()]
    assert len(events) == 1, events
    assert (events[0]["source"], events[0]["fields"]) == ("sensorthings/temperature", {"temperature": [21.5]})
    assert events[0]["sensor_id"] == ["dwd-01303"]
    assert seconds < 15   # bounded by write_wait_seconds (10 s) plus the query time, never longer
    # Not readable for others: Bielefeld does not see Gütersloh's private weather.
    assert client.get(f"/v1.1/Observations({body['@iot.id']})", headers=people.bi_editor).status_code == 404


def test_post_to_the_collection_with_a_position(client, world, people):
    precipitation = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "precipitation")
    created = client.post("/v1.1/Observations", headers=people.gue_editor, json={
        "phenomenonTime": now(), "result": 3,
        "Datastream": {"@iot.id": precipitation},
        "FeatureOfInterest": {"name": "Garten", "encodingType": "application/geo+json",
                              "feature": {"type": "Point", "coordinates": [8.391, 51.907]}}})
    assert created.status_code == 201, created.text
    read = client.get("/v1.1" + created.headers["Location"].split("/v1.1", 1)[1],
                      headers=people.gue_editor, params={"$expand": "FeatureOfInterest,Datastream"}).json()
    assert read["result"] == 3.0
    assert read["FeatureOfInterest"]["feature"] == {"type": "Point", "coordinates": [8.391, 51.907]}
    assert read["Datastream"]["@iot.id"] == precipitation
    # The sensor has two places now; its Datastreams' observedArea is their envelope (once the sensor
    # index is read again, at most 30 s later).
    client.app.state.sensorthings_index.forget()
    area = client.get(f"/v1.1/Datastreams({precipitation})", headers=people.gue_editor).json()["observedArea"]
    assert area == {"type": "Polygon", "coordinates": [[[8.38, 51.9], [8.391, 51.9], [8.391, 51.907],
                                                        [8.38, 51.907], [8.38, 51.9]]]}
    # The same reading sent again replaces its value (one reading per Datastream and time).
    replaced = client.post(f"/v1.1/Datastreams({precipitation})/Observations", headers=people.gue_editor,
                           json={"phenomenonTime": read["phenomenonTime"], "result": 4.25})
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["@iot.id"] == read["@iot.id"] and replaced.json()["result"] == 4.25
    at_that_time = client.get(f"/v1.1/Datastreams({precipitation})/Observations", headers=people.gue_editor,
                              params={"$filter": f"phenomenonTime eq {read['phenomenonTime']}"}).json()["value"]
    assert [o["result"] for o in at_that_time] == [4.25]


def test_others_cannot_write_and_nothing_is_published(client, world, people, admin_config):
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    shared_level = datastream_id(world.gue, PEGEL, "water_levels", "dalke", "water_level")
    public_count = datastream_id(world.gue, PEDESTRIANS, "pedestrian_counts", "g-berliner", "pedestrians_ltr")
    marker = 123.456

    def post(headers, stream):
        return client.post(f"/v1.1/Datastreams({stream})/Observations", headers=headers,
                           json={"phenomenonTime": now(), "result": marker})

    anonymous = post({}, temperature)
    assert anonymous.status_code == 401 and "gov-editor" in anonymous.json()["error"]["message"]
    viewer = post(people.gue_viewer, temperature)
    assert viewer.status_code == 403 and "write:own" in viewer.json()["error"]["message"]
    # Bielefeld's editor: Gütersloh's private Datastream does not exist for it; the one Gütersloh
    # shares with Bielefeld and the open-data one are readable, but not Bielefeld's to write.
    assert post(people.bi_editor, temperature).status_code == 404
    for stream in (shared_level, public_count):
        refused = post(people.bi_editor, stream)
        assert refused.status_code == 403, refused.text
        assert f"belongs to dataset {world.gue}/" in refused.json()["error"]["message"]
    assert post({"Authorization": people.bi_editor["Authorization"][:-4] + "AAAA"}, shared_level).status_code == 401
    for dataset in (WEATHER, "pedestrian_counts"):
        messages = read_topic(admin_config, naming.topic(world.gue, PEDESTRIANS, dataset), 10**9, timeout=2)
        assert not [m for m in messages if b"123.456" in m.value()]
    messages = read_topic(admin_config, naming.topic(world.gue, PEGEL, "water_levels"), 10**9, timeout=2)
    assert not [m for m in messages if b"123.456" in m.value()]


def test_bad_observations_are_refused_with_the_reason(client, world, people):
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    counted = datastream_id(world.gue, PEDESTRIANS, "pedestrian_counts", "g-berliner", "pedestrians_ltr")
    url = f"/v1.1/Datastreams({temperature})/Observations"

    def refused(body, status=400, path=url) -> str:
        response = client.post(path, headers=people.gue_editor, json=body)
        assert response.status_code == status, response.text
        return response.json()["error"]["message"]

    assert "finite number" in refused({"phenomenonTime": now(), "result": "warm"})
    assert "retention" in refused({"phenomenonTime": "2015-03-01T00:00:00Z", "result": 1.0})
    assert "time zone" in refused({"phenomenonTime": "2026-12-01T10:00:00", "result": 1.0})
    assert "intervals" in refused({"phenomenonTime": "2026-12-01T10:00:00Z/2026-12-01T11:00:00Z", "result": 1.0})
    assert "resultTime must equal" in refused({"phenomenonTime": "2026-12-01T10:00:00Z",
                                               "resultTime": "2026-12-01T10:05:00Z", "result": 1.0})
    assert "no property 'colour'" in refused({"result": 1.0, "colour": "red"})
    assert "Datastream is required" in refused({"result": 1.0}, path="/v1.1/Observations")
    # A new Datastream inline is a deep insert: only with the CityTool sensorthings switched on.
    assert "'sensorthings'" in refused({"result": 1.0, "Datastream": {"name": "new"}}, 403,
                                       path="/v1.1/Observations")
    # Pedestrian counts need the total and the street in every reading; one value cannot be one.
    message = refused({"phenomenonTime": now(), "result": 5}, 409, f"/v1.1/Datastreams({counted})/Observations")
    assert "requires pedestrians, location_name" in message
    big = client.post(url, headers={**people.gue_editor, "Content-Type": "application/json"},
                      content=b'{"result": 1, "x": "' + b"a" * 70_000 + b'"}')
    assert big.status_code == 413


def test_every_other_write_is_refused_with_the_reason(client, world, people):
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    thing = stable_id("Thing", f"{world.gue}/{PEDESTRIANS}/{WEATHER}", "dwd-01303")
    reading = client.get(f"/v1.1/Datastreams({temperature})/Observations", headers=people.gue_editor,
                         params={"$top": "1"}).json()["value"][0]["@iot.id"]
    # Entities are created only where the CityTool sensorthings is switched on (test_sensorthings_created.py).
    for entity_set in ("Things", "Datastreams", "ObservedProperties", "Locations"):
        response = client.post(f"/v1.1/{entity_set}", headers=people.gue_editor, json={"name": "x"})
        assert response.status_code == 403 and "'sensorthings'" in response.json()["error"]["message"]
    cases = [
        ("PATCH", f"/v1.1/Things({thing})", "appears with the sensor's first reading"),
        ("DELETE", f"/v1.1/Datastreams({temperature})", "CityTool declares"),
        ("PATCH", f"/v1.1/Datastreams({temperature})/Observations", "PATCH one Observation"),
        ("DELETE", f"/v1.1/Observations({reading})", "retention deletes old readings"),
        ("PUT", f"/v1.1/Observations({reading})", "change an Observation's result with PATCH"),
    ]
    for method, path, reason in cases:
        response = client.request(method, path, headers=people.gue_editor, json={"name": "x"})
        assert response.status_code == 405, (method, path, response.text)
        assert reason in response.json()["error"]["message"], (method, path, response.text)
        assert "GET" in response.headers["Allow"]
    # What does not exist for the caller is 404, as for reading, whatever the method.
    for method, path, headers in (("DELETE", "/v1.1/Things(9007199254740991)", people.gue_editor),
                                  ("PATCH", "/v1.1/Sensors(9007199254740991)", people.gue_editor),
                                  ("DELETE", f"/v1.1/Datastreams({temperature})", people.bi_editor),
                                  ("PATCH", f"/v1.1/Things({thing})", {}),
                                  ("POST", f"/v1.1/Things({thing})/Locations", people.bi_editor)):
        response = client.request(method, path, headers=headers, json={"name": "x"})
        assert response.status_code == 404, (method, path, response.text)
    preflight = client.options("/v1.1/Observations", headers={"Origin": "https://portal.example",
                                                              "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, PUT, DELETE, OPTIONS"


def test_patch_corrects_one_value_of_a_reading_and_keeps_the_others(client, world, people, platform, streams):
    """A reading with two fields, sent by a connector through Kafka; PATCHing its temperature
    publishes the whole reading again, so precipitation stays as it was."""
    from urbanstack.runtime.connectors import ParseResult
    from urbanstack.runtime.events import Observation

    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=5)
    reading = Observation(tenant=world.gue, dataset=WEATHER, source="dwd", sensor_id="dwd-01303", observed_at=at,
                          fields={"temperature": 11.0, "precipitation": 0.4}, lon=8.38, lat=51.90)
    publishers = TenantPublishers(platform, streams)
    try:
        publishers.publish(ParseResult(events=[reading]), tenant=world.gue, tool=PEDESTRIANS)
    finally:
        publishers.close()
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    precipitation = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "precipitation")
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def at_that_time(stream):
        return client.get(f"/v1.1/Datastreams({stream})/Observations", headers=people.gue_viewer,
                          params={"$filter": f"phenomenonTime eq {stamp} and parameters/source eq 'dwd'"}
                          ).json()["value"]

    deadline = time.monotonic() + 20
    while not at_that_time(temperature) and time.monotonic() < deadline:
        time.sleep(0.2)
    [original] = at_that_time(temperature)
    url = f"/v1.1/Observations({original['@iot.id']})"
    for headers, status in (({}, 401), (people.gue_viewer, 403), (people.bi_editor, 404)):
        assert client.patch(url, headers=headers, json={"result": 99.0}).status_code == status
    moved = client.patch(url, headers=people.gue_editor, json={"result": 12.5, "phenomenonTime": now()})
    assert moved.status_code == 400 and "cannot change" in moved.json()["error"]["message"]
    patched = client.patch(url, headers=people.gue_editor, json={"result": 12.5})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["@iot.id"], patched.json()["result"]) == (original["@iot.id"], 12.5)
    assert [o["result"] for o in at_that_time(temperature)] == [12.5]
    assert [o["result"] for o in at_that_time(precipitation)] == [0.4]   # the other value of the reading
    # A reading stored under an id the event format does not give (written straight into the table
    # by the test world) cannot be sent again as it is: refused, nothing published.
    stale = client.get(f"/v1.1/Datastreams({temperature})/Observations", headers=people.gue_viewer,
                       params={"$filter": "parameters/eventId eq 'w-3'"}).json()["value"]
    refused = client.patch(f"/v1.1/Observations({stale[0]['@iot.id']})", headers=people.gue_editor,
                           json={"result": 1.0})
    assert refused.status_code == 409 and "correct it at its source" in refused.json()["error"]["message"]


def test_bielefeld_cannot_patch_what_guetersloh_shares_with_it(client, world, people):
    level = datastream_id(world.gue, PEGEL, "water_levels", "dalke", "water_level")
    shared = client.get(f"/v1.1/Datastreams({level})/Observations", headers=people.bi_editor,
                        params={"$top": "1"}).json()["value"]
    response = client.patch(f"/v1.1/Observations({shared[0]['@iot.id']})", headers=people.bi_editor,
                            json={"result": 1.0})
    assert response.status_code == 403 and f"of '{world.gue}'" in response.json()["error"]["message"]


def test_the_answer_says_when_the_sink_did_not_write_in_time(platform, world, warehouse, streams, people):
    """Bielefeld's topics have no sink here: the Observation is accepted by Kafka, and the answer
    is 504 after the configured wait instead of a 201 for a reading nobody can read yet."""
    app, publishers = _app(platform, world, warehouse, streams, StaLimits(write_wait_seconds=1.5))
    level = datastream_id(world.bi, PEGEL, "water_levels", "lutter", "water_level")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            began = time.monotonic()
            response = client.post(f"/v1.1/Datastreams({level})/Observations", headers=people.bi_editor,
                                   json={"phenomenonTime": now(), "result": 701.5})
            assert time.monotonic() - began < 12
    finally:
        publishers.close()
    assert response.status_code == 504, response.text
    assert "accepted by the event stream" in response.json()["error"]["message"]
    assert response.headers["Retry-After"] == "5"


def test_an_api_without_the_ingest_service_accepts_no_writes(platform, world, warehouse, people):
    app = create_app(platform, world.catalogue, warehouse, keycloak_url=platform.keycloak_url,
                     audience="{tenant}-api")
    temperature = datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "temperature")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(f"/v1.1/Datastreams({temperature})/Observations", headers=people.gue_editor,
                               json={"result": 1.0})
    assert response.status_code == 405 and "URBANSTACK_INGEST=0" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def server(platform, world, warehouse, streams, sink):  # noqa: F811 - fixtures
    app, publishers = _app(platform, world, warehouse, streams)
    try:
        with serving(app, platform) as base:
            yield f"{base}/v1.1"
    finally:
        publishers.close()


def test_frost_sta_client_creates_an_observation(server, world, people):
    import frost_sta_client as fsc

    from frost_sta_client.service.auth_handler import AuthHandler

    class Token(requests.auth.AuthBase):
        def __call__(self, request):
            request.headers["Authorization"] = people.gue_editor["Authorization"]
            return request

    class BearerHandler(AuthHandler):   # the client's own handler sends HTTP basic only
        def add_auth_header(self):
            return Token()

    service = fsc.SensorThingsService(server, auth_handler=BearerHandler())
    stream = service.datastreams().find(datastream_id(world.gue, PEDESTRIANS, WEATHER, "dwd-01303", "wind_speed"))
    observation = fsc.Observation(result=7.25, phenomenon_time=now(), datastream=stream)
    service.create(observation)
    assert isinstance(observation.id, int)
    found = service.observations().find(observation.id)
    assert found.result == 7.25
