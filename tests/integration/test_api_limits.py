"""Bounded work per request (issue #17 §2, §5): every GraphQL data field counts against the
query quota, documents and bodies are bounded, a refused request cannot hold up others or
flood the log.

Most tests run the API in this process (TestClient), as test_api.py does; the ones about
bodies and the event loop run it under the real uvicorn server on a local port, because
only there does a client stream a body and wait on a socket."""

from __future__ import annotations

import dataclasses
import json
import logging
import select
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from test_api import PEDESTRIANS, RANGE, World, path

from urbanstack.runtime.api import ApiLimits, create_app
from urbanstack.serve import http_server

pytestmark = pytest.mark.platform

OPEN = '{{owner: "{owner}", tool: "passantenfrequenz-wetter", name: "pedestrian_counts"}}'


def _series_fields(owner: str, count: int) -> str:
    dataset = OPEN.format(owner=owner)
    return " ".join(f'a{i}: series(dataset: {dataset}, fields: ["pedestrians"], start: "2026-03-02T00:00:00Z", '
                    f'end: "2026-03-03T00:00:00Z") {{ points {{ events }} }}' for i in range(count))


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture
def new_client(settings, world, issuer, warehouse):
    """A fresh API (fresh counters) per call, in this process."""
    clients = []

    def make(limits: ApiLimits | None = None, **changes):
        app = create_app(dataclasses.replace(settings, **changes), world.catalogue, warehouse, keycloak_url=issuer.url,
                         audience="{tenant}-api", limits=limits)
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def served(settings, world, issuer, warehouse):
    """The API under uvicorn on a free local port; returns the port."""
    servers = []

    def start(**changes) -> int:
        app = create_app(dataclasses.replace(settings, **changes), world.catalogue, warehouse,
                         keycloak_url=issuer.url, audience="{tenant}-api")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = http_server(app, settings, "127.0.0.1", port)
        thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:  # uvicorn offers no event to wait on
            assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _warehouse_queries(client) -> float:
    """Warehouse queries the API ran, from its own /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith("urbanstack_api_query_seconds_count{"))


# The quota counts data fields -----------------------------------------------------

def test_700_aliased_series_count_700_queries_and_are_refused_before_any_runs(new_client, world):
    generous = ApiLimits(graphql_max_aliases=1_000, graphql_max_cost=1_000, graphql_max_tokens=100_000)
    client = new_client(generous, api_anonymous_queries_per_hour=600)
    refused = client.post("/graphql", json={"query": "{" + _series_fields(world.gue, 700) + "}"})
    assert refused.status_code == 429, refused.text
    assert "700 data queries at once, more than the 600 queries per hour without a token" in \
        refused.json()["error"]["message"]
    assert _warehouse_queries(client) == 0
    # Nothing of the refused request was counted: the full quota is still there, field by field.
    small = new_client(generous, api_anonymous_queries_per_hour=10)
    seven = small.post("/graphql", json={"query": "{" + _series_fields(world.gue, 7) + "}"})
    assert seven.status_code == 200 and len(seven.json()["data"]) == 7
    assert _warehouse_queries(small) == 7
    four = small.post("/graphql", json={"query": "{" + _series_fields(world.gue, 4) + "}"})
    assert four.status_code == 429 and int(four.headers["Retry-After"]) >= 1
    assert "at most 10 per hour and this request needs 4" in four.json()["error"]["message"]
    assert _warehouse_queries(small) == 7
    three = small.post("/graphql", json={"query": "{" + _series_fields(world.gue, 3) + "}"})
    assert three.status_code == 200 and len(three.json()["data"]) == 3
    # The REST and GraphQL quota is one: 10 used, REST is refused too.
    rest = small.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/series"),
                     params={**RANGE, "field": "pedestrians"})
    assert rest.status_code == 429


@pytest.mark.parametrize("document, message", [
    ("{" + " ".join(f"a{i}: __typename" for i in range(100)) + "}", "100 aliases found. Allowed: 30"),
    ("{" + "__typename " * 3_000 + "}", "Document contains more than 2000 tokens"),
    ("21 series", "this query costs 21, more than the 20 a request may cost"),
    ("3 big series", "this query costs 27, more than the 20 a request may cost"),
])
def test_documents_over_the_limits_are_refused_with_the_limit_named_and_run_nothing(new_client, world, document,
                                                                                    message):
    client = new_client()
    if document == "21 series":
        document = "{" + _series_fields(world.gue, 21) + "}"
    elif document == "3 big series":  # 10,000 rows × 9 aggregates each: 9 per field
        document = "{" + _series_fields(world.gue, 3).replace(
            '["pedestrians"],', '["pedestrians"], limit: 10000, aggregates: [count, sum, avg, min, max, p50, p90, '
                                'p95, p99],') + "}"
    response = client.post("/graphql", json={"query": document})
    assert response.status_code in (200, 400), response.text
    errors = response.json()["errors"]
    assert len(errors) == 1 and message in errors[0]["message"], errors
    assert _warehouse_queries(client) == 0


def test_a_result_over_the_size_limit_is_refused_not_held(new_client, world):
    client = new_client(ApiLimits(max_result_bytes=4_096))
    response = client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/export"), params=RANGE)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "query_too_expensive" and "result-size limit" in error["message"]
    assert client.get(path(world.gue, PEDESTRIANS, "pedestrian_counts", "/export"),
                      params={**RANGE, "sensor_id": "nobody"}).status_code == 200


def test_the_fields_of_a_graphql_request_share_one_warehouse_time_budget(new_client, world):
    # A budget that is over before the first query starts: the field is refused and nothing runs
    # (a refused non-null root field ends the request).
    client = new_client(ApiLimits(query_timeout_seconds=1e-9))
    response = client.post("/graphql", json={"query": "{" + _series_fields(world.gue, 2) + "}"})
    errors = response.json()["errors"]
    assert errors and all(e["extensions"]["code"] == "QUERY_TOO_EXPENSIVE" for e in errors), errors
    assert "used up its 1e-09 s of warehouse time (shared by all its fields)" in errors[0]["message"]
    assert _warehouse_queries(client) == 0


# Refusals log one line ------------------------------------------------------------

def test_a_refused_graphql_query_logs_one_line_and_refusals_are_rate_limited(new_client, world, caplog):
    client = new_client()
    caplog.set_level(logging.INFO)
    caplog.clear()
    unknown = client.post("/graphql", json={"query": '{ dataset(dataset: {owner: "nowhere", tool: "x", name: "y"}) '
                                                     '{ id } }'})
    assert unknown.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    lines = [r for r in caplog.records if not r.name.startswith("httpx")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno in (logging.INFO, logging.WARNING) and lines[0].exc_info is None
    assert "\n" not in lines[0].getMessage() and "is not open data" in lines[0].getMessage()
    fresh = new_client()
    caplog.clear()
    for _ in range(50):
        fresh.post("/graphql", json={"query": "{ nonsense other }"})  # two errors, one line
    lines = [r for r in caplog.records if not r.name.startswith("httpx")]
    assert len(lines) == 20 and all(r.exc_info is None for r in lines)
    assert "Cannot query field 'nonsense'" in lines[0].getMessage() and "(and 1 more)" in lines[0].getMessage()


# Bodies and the event loop, under the real server --------------------------------

def _send_until_answered(port: int, head: bytes, chunk: bytes, *, limit: int) -> tuple[bytes, int]:
    """Sends ``head`` then ``chunk`` after chunk until the server answers (or ``limit`` bytes went out);
    returns the answer and how many body bytes were sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head)
        sent = 0
        while sent < limit:
            if select.select([connection], [], [], 0)[0]:
                break
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed while the chunk was in flight
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 20:
            data = connection.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


def _head(port: int, headers: str) -> bytes:
    return (f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"{headers}\r\n").encode()


def test_a_body_over_the_limit_is_refused_while_it_streams_in(served):
    port = served()
    ten_mb = 10 * 2**20
    answer, sent = _send_until_answered(port, _head(port, f"Content-Length: {ten_mb}\r\n"), b" " * 65536,
                                        limit=ten_mb)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < ten_mb
    assert b"larger than 1048576 bytes" in answer
    # Without a length (chunked) the server stops reading once the body passes the limit.
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer, sent = _send_until_answered(port, _head(port, "Transfer-Encoding: chunked\r\n"), chunk, limit=ten_mb)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < ten_mb


def test_healthz_answers_quickly_while_oversized_graphql_requests_are_refused(served):
    port = served()
    base = f"http://127.0.0.1:{port}"
    # 50,000 aliases fit into the body limit (about 0.8 MB) and reach the parser; 150,000 do not.
    documents = ["{" + " ".join(f"a{i}: __typename" for i in range(count)) + "}" for count in (50_000, 150_000)]
    bodies = [json.dumps({"query": document}).encode() for document in documents]
    answers: list[httpx.Response | Exception] = []
    done = threading.Event()

    def bad_requests():
        with httpx.Client(base_url=base, timeout=60) as client:
            for body in bodies:
                try:
                    answers.append(client.post("/graphql", content=body,
                                               headers={"Content-Type": "application/json"}))
                except httpx.TransportError as error:  # the server may close while the body still streams
                    answers.append(error)
        done.set()

    latencies = []
    with httpx.Client(base_url=base, timeout=60) as health:
        assert health.get("/healthz").status_code == 200  # connection open before the bad requests start
        sender = threading.Thread(target=bad_requests)
        sender.start()
        while not done.is_set() or len(latencies) < 20:
            began = time.perf_counter()
            assert health.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - began)
        sender.join()
    parsed, oversized = answers
    assert parsed.status_code == 200 and "more than 2000 tokens" in parsed.json()["errors"][0]["message"]
    assert isinstance(oversized, Exception) or oversized.status_code == 413
    assert max(latencies) < 0.2, f"slowest /healthz {max(latencies) * 1000:.0f} ms over {len(latencies)} polls"
