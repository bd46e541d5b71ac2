"""Query quotas through the API against the real warehouse engine: a municipality whose plan
allows 3 queries per hour gets 3 answers and then 429, on REST and on GraphQL; the other
municipality is not affected; anonymous open-data callers are limited per address.

Tokens come from a local JWKS (tests/api_tokens.py), as in test_api.py."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from test_api import PEDESTRIANS, PEGEL, RANGE, World, _tool, bearer, path

from urbanstack.operator.models import Plan
from urbanstack import serve
from urbanstack.runtime.api import Catalogue, create_app

pytestmark = pytest.mark.platform

SERIES_QUERY = """query ($owner: String!) {
  series(dataset: {owner: $owner, tool: "passantenfrequenz-wetter", name: "weather"}, fields: ["temperature"],
         start: "2026-03-02T00:00:00Z", end: "2026-03-03T00:00:00Z") { points { bucket } }
}"""


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def catalogue(world):
    """The world's municipalities, Gütersloh on a plan with 3 queries per hour."""
    municipalities = [m.model_copy(update={"spec": m.spec.model_copy(update={"plan": Plan(queries_per_hour=3)})})
                      if m.slug == world.gue else m for m in world.municipalities]
    return Catalogue(municipalities, [_tool(PEDESTRIANS), _tool(PEGEL)])


@pytest.fixture
def new_client(settings, catalogue, issuer, warehouse):
    """A fresh API process (fresh counters) per call."""
    clients = []

    def make(**changes):
        app = create_app(dataclasses.replace(settings, **changes), catalogue, warehouse, keycloak_url=issuer.url,
                         audience="{tenant}-api")
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _series(client, headers, owner):
    return client.get(path(owner, PEDESTRIANS, "weather", "/series"), headers=headers,
                      params={**RANGE, "field": "temperature"})


def _graphql(client, headers, owner):
    return client.post("/graphql", headers=headers, json={"query": SERIES_QUERY, "variables": {"owner": owner}})


def _refused_for(client, tenant: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("urbanstack_api_quota_refusals_total{") and f'tenant="{tenant}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _assert_quota_refusal(response, tenant: str):
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert f"municipality '{tenant}' has used its quota of 3 queries per hour" in error["message"]


def test_rest_three_answers_then_429_and_the_other_municipality_is_unaffected(new_client, world, issuer):
    client = new_client()
    gue, bi = bearer(issuer, world.gue), bearer(issuer, world.bi)
    answers = [_series(client, gue, world.gue) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len(answers[0].json()["rows"]) == 24
    _assert_quota_refusal(_series(client, gue, world.gue), world.gue)
    # Every data route counts, whatever it reads (here: the catalogue).
    _assert_quota_refusal(client.get("/api/v1/datasets", headers=gue), world.gue)
    # Health, metrics and the OpenAPI document are not data queries.
    assert [client.get(url).status_code for url in ("/healthz", "/openapi.json", "/metrics")] == [200, 200, 200]
    # Bielefeld (small plan, 2000 per hour) reads on, also Gütersloh's shared dataset.
    assert all(_series(client, bi, world.bi).status_code == 200 for _ in range(5))
    assert client.get(path(world.gue, PEGEL, "water_levels", "/series"), headers=bi,
                      params={**RANGE, "field": "water_level"}).status_code == 200
    assert _refused_for(client, world.gue) == 2 and _refused_for(client, world.bi) == 0
    assert "429" in client.get("/openapi.json").json()["paths"]["/api/v1/datasets"]["get"]["responses"]


def test_graphql_three_answers_then_429_and_the_other_municipality_is_unaffected(new_client, world, issuer):
    client = new_client()
    gue, bi = bearer(issuer, world.gue), bearer(issuer, world.bi)
    assert client.get("/graphql", headers={**gue, "Accept": "text/html"}).status_code == 200  # the IDE page: free
    answers = [_graphql(client, gue, world.gue) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len(answers[2].json()["data"]["series"]["points"]) == 24
    _assert_quota_refusal(_graphql(client, gue, world.gue), world.gue)
    other = _graphql(client, bi, world.bi)
    assert other.status_code == 200 and len(other.json()["data"]["series"]["points"]) == 24
    assert _refused_for(client, world.gue) == 1


def test_rest_and_graphql_share_one_quota(new_client, world, issuer):
    client = new_client()
    gue = bearer(issuer, world.gue)
    assert _series(client, gue, world.gue).status_code == 200
    assert _graphql(client, gue, world.gue).status_code == 200
    assert _series(client, gue, world.gue).status_code == 200
    _assert_quota_refusal(_graphql(client, gue, world.gue), world.gue)


def test_anonymous_open_data_callers_are_limited_per_address(new_client, world, issuer):
    client = new_client(api_anonymous_queries_per_hour=2)
    open_data = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")
    params = {**RANGE, "field": "pedestrians"}
    assert [client.get(open_data, params=params).status_code for _ in range(2)] == [200, 200]
    refused = client.get(open_data, params=params)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "without a token from this address: at most 2 per hour" in refused.json()["error"]["message"]
    assert _refused_for(client, "anonymous") == 1
    # With a token the caller counts against its municipality instead.
    assert client.get(open_data, params=params, headers=bearer(issuer, world.bi)).status_code == 200


def test_bad_anonymous_limit_setting_is_explained(settings, catalogue, issuer, warehouse):
    with pytest.raises(ValueError, match="URBANSTACK_API_ANONYMOUS_QUERIES_PER_HOUR"):
        create_app(dataclasses.replace(settings, api_anonymous_queries_per_hour=-5), catalogue, warehouse,
                   keycloak_url=issuer.url, audience="{tenant}-api")


@contextlib.contextmanager
def served(app, settings):
    """The app behind the real HTTP server of every service (serve.http_server) on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until the server accepts them
    server = serve.http_server(app, settings, "127.0.0.1", sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _anonymous_statuses(client, world, forwarded_for: list[str]) -> list[int]:
    open_data = path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series")
    return [client.get(open_data, params={**RANGE, "field": "pedestrians"},
                       headers={"X-Forwarded-For": value}).status_code for value in forwarded_for]


def test_a_direct_client_cannot_choose_its_address_with_x_forwarded_for(settings, world, catalogue, issuer, warehouse):
    """By default no proxy is trusted: whatever X-Forwarded-For a client sends, it counts
    under its own address, so it cannot reset the anonymous limit."""
    app = create_app(dataclasses.replace(settings, api_anonymous_queries_per_hour=2), catalogue, warehouse,
                     keycloak_url=issuer.url, audience="{tenant}-api")
    with served(app, settings) as client:
        assert _anonymous_statuses(client, world, forwarded_for=[
            "203.0.113.1", "203.0.113.2", "203.0.113.3", "not-an-address"]) == [200, 200, 429, 429]


def test_behind_a_trusted_proxy_the_hop_it_appended_is_the_client(settings, world, catalogue, issuer, warehouse):
    app = create_app(dataclasses.replace(settings, api_anonymous_queries_per_hour=1), catalogue, warehouse,
                     keycloak_url=issuer.url, audience="{tenant}-api")
    with served(app, dataclasses.replace(settings, trusted_proxies="127.0.0.0/8")) as client:
        statuses = _anonymous_statuses(client, world, forwarded_for=[
            "203.0.113.1",
            "198.51.100.9, 203.0.113.1",   # what the client wrote left of the proxy's hop is ignored
            "203.0.113.2",                 # another client behind the proxy: its own bucket
            "junk-1", "junk-2"])           # not addresses: both count under the proxy itself
    assert statuses == [200, 429, 200, 200, 429]
