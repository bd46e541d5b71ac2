"""Time from a SensorThings POST of an Observation to its 201 (read your writes), against the
push endpoint's 202 (Kafka acknowledged) and the push plus polling until the reading can be
read — what a REST client does to read its own write — in the same run.

    .venv/bin/python bench/sensorthings_write_latency.py --runs 30

The real local Kafka (``urbanstack dev up``), a throwaway municipality with the example
"Passantenfrequenz & Wetter" (topics, user and ACLs as the operator provisions them), the sink in
this process with its default batching (``SinkConfig``: a batch closes after 1 s), an embedded chDB
of its own, the API and the push app in-process (ASGI) with tokens of a local issuer. Requests
are sequential, one reading each; the municipality's Kafka topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform as machine
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from api_tokens import LocalIssuer  # noqa: E402

from urbanstack import warehouse as wh  # noqa: E402
from urbanstack.devplatform import kafka  # noqa: E402
from urbanstack.operator.models import Municipality, parse_citytool  # noqa: E402
from urbanstack.operator.plan import plan  # noqa: E402
from urbanstack.operator.provisioners.base import ensure  # noqa: E402
from urbanstack.operator.provisioners.streaming import StreamingProvisioner  # noqa: E402
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner  # noqa: E402
from urbanstack.runtime.api import Catalogue, TokenVerifier, create_app  # noqa: E402
from urbanstack.runtime.api.sensorthings.graph import stable_id  # noqa: E402
from urbanstack.runtime.ingest.push import create_push_app  # noqa: E402
from urbanstack.runtime.ingest.tenants import DailyQuota, StaticCredentials, TenantPublishers  # noqa: E402
from urbanstack.runtime.sink import Sink, SinkConfig  # noqa: E402
from urbanstack.settings import Settings  # noqa: E402

TOOL = "passantenfrequenz-wetter"
DATASET = "weather"
SENSOR = "dwd-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    settings = Settings.from_env()
    admin = kafka.admin_config(settings)
    slug = f"stabench{uuid.uuid4().hex[:6]}"
    tool = parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{TOOL}.yaml").read_text()))
    town = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": "Bench", "ags": "05754008", "admins": [f"admin@{slug}.example.org"],
                 "tools": [{"name": TOOL}]}})
    desired = plan(town, [tool])
    client = wh.connect(f"chdb://{tempfile.mkdtemp(prefix='sta-write-bench-')}")
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired.warehouse, {})
    password = secrets.token_urlsafe(18)
    streaming = StreamingProvisioner(admin)
    ensure(streaming, desired.streaming, {desired.streaming.password_key: password})
    credentials = StaticCredentials({slug: {"kafka-username": desired.streaming.user, "kafka-password": password}})
    catalogue = Catalogue([town], [tool])
    issuer = LocalIssuer()
    sink = Sink(admin, client, SinkConfig(group_id=f"bench-{slug}", topic_pattern=rf"^{slug}\.[^.]+\.[^.]+$"))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    publishers = TenantPublishers(settings, credentials)
    try:
        app = create_app(settings, catalogue, client, keycloak_url=issuer.url, audience="{tenant}-api")
        push = create_push_app(catalogue, publishers, credentials, quota=DailyQuota(),
                               verifier=TokenVerifier(issuer.url, "{tenant}-api"))
        app.state.sensorthings_writes = push.state.writes
        headers = {"Authorization": f"Bearer {issuer.token(tenant=slug, roles=('gov-editor',), lifetime=3600)}"}
        stream = stable_id("Datastream", f"{slug}/{TOOL}/{DATASET}", SENSOR, "temperature")
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        with TestClient(app) as api, TestClient(push) as ingest:
            # The sensor must exist (it is a Thing once it has a reading): one pushed reading first.
            first = {"sensor_id": SENSOR, "source": "bench", "observed_at": start.isoformat(),
                     "fields": {"temperature": 1.0}}
            assert ingest.post(f"/ingest/v1/{TOOL}/{DATASET}/observations", json=first, headers=headers).status_code == 202
            deadline = time.monotonic() + 30
            while api.get(f"/v1.1/Datastreams({stream})", headers=headers).status_code != 200:
                assert time.monotonic() < deadline, "the first reading did not arrive"
                app.state.sensorthings_index.forget()
                time.sleep(0.2)
            sta, pushed, pushed_readable = [], [], []
            for run in range(args.runs):
                at = start + timedelta(seconds=run + 1)
                began = time.perf_counter()
                response = api.post(f"/v1.1/Datastreams({stream})/Observations", headers=headers,
                                    json={"phenomenonTime": at.isoformat(), "result": 20.0 + run})
                sta.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 201, response.text
                at = start + timedelta(minutes=10, seconds=run + 1)
                reading = {"sensor_id": SENSOR, "source": "bench", "observed_at": at.isoformat(),
                           "fields": {"temperature": 30.0 + run}}
                began = time.perf_counter()
                assert ingest.post(f"/ingest/v1/{TOOL}/{DATASET}/observations", json=reading,
                                   headers=headers).status_code == 202
                pushed.append((time.perf_counter() - began) * 1000)
                stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
                while not api.get(f"/v1.1/Datastreams({stream})/Observations", headers=headers,
                                  params={"$filter": f"phenomenonTime eq {stamp}"}).json()["value"]:
                    time.sleep(0.05)
                pushed_readable.append((time.perf_counter() - began) * 1000)
    finally:
        publishers.close()
        stop.set()
        thread.join(30)
        streaming.delete(desired.streaming, keep_data=False)
        issuer.close()
    print(f"{args.runs} sequential requests each; {machine.node()} ({os.cpu_count()} cores), "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print("| request | p50 | p95 |")
    print("|---|---:|---:|")
    for name, samples in (("STA: POST an Observation → 201 (readable)", sta),
                          ("push: POST one reading → 202 (Kafka acknowledged)", pushed),
                          ("push, then poll the SensorThings API every 50 ms until readable", pushed_readable)):
        print(f"| {name} | {statistics.median(samples):.1f} ms | {pct(samples, 0.95):.1f} ms |")


if __name__ == "__main__":
    main()
