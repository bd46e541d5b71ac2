"""Worst-case cost of one push request: wall time, peak memory of the serving process,
and Kafka messages it causes.

Each case gets a fresh push service (uvicorn in a process of its own, as
``urbanstack ingest`` serves it: ``tests/integration/push_server.py``) for a
throwaway municipality provisioned by the operator's own provisioners, one warm-up
event, then the request. Peak memory is the process's ``VmHWM`` after the request
minus its ``VmRSS`` before. Cases:

- ``reject-1m``: 1,000,000 lines of ``{}`` (2.9 MB) to ``/observations``, every line
  a rejected record (the amplification of issue #17);
- ``reject-max``: as many ``{}`` lines as one request may carry (``--records``);
- ``batch-max``: one columnar batch with ``--records`` rows, the largest accepted batch;
- ``events-10mib``: single events as NDJSON filling the 10 MiB body limit.

    .venv/bin/python bench/push_request_bounds.py [--records 100000] [--cases reject-1m,batch-max]

Needs the local platform (``urbanstack dev up``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from ingest_harness import (LORAWAN_TOOL, deprovision, ingest_secret, manifest, memory_kib,  # noqa: E402
                            provision, push_service, tool)
from ingest_throughput import machine  # noqa: E402
from sink_harness import end_offsets  # noqa: E402

from urbanstack.devplatform import kafka  # noqa: E402
from urbanstack.settings import Settings  # noqa: E402

ROUTE = "/ingest/v1/raumklima/lorawan/observations"
BODY_LIMIT = 10 * 1024 * 1024


def event(index: int) -> dict:
    return {"source": "bench", "sensor_id": f"s{index % 200:03d}",
            "observed_at": f"2026-01-{1 + index // 86_400 % 28:02d}T{index // 3600 % 24:02d}:"
                           f"{index // 60 % 60:02d}:{index % 60:02d}Z",
            "fields": {"temperature": 20.0 + index % 100 / 10, "humidity": 50.0 + index % 40}}


def bodies(records: int) -> dict[str, bytes]:
    lines, size, index = [], 0, 0
    while True:
        line = json.dumps(event(index)).encode()
        if size + len(line) + 1 > BODY_LIMIT:
            break
        lines.append(line)
        size += len(line) + 1
        index += 1
    rows = [event(i) for i in range(records)]
    batch = {"v": 2, "source": "bench", "units": {"temperature": "°C", "humidity": "%"},
             "sensor_id": [r["sensor_id"] for r in rows], "observed_at": [r["observed_at"] for r in rows],
             "fields": {"temperature": [r["fields"]["temperature"] for r in rows],
                        "humidity": [r["fields"]["humidity"] for r in rows]}}
    return {"reject-1m": b"{}\n" * 1_000_000, "reject-max": b"{}\n" * records,
            "batch-max": json.dumps(batch).encode(), "events-10mib": b"\n".join(lines)}


def messages(admin_config: dict, topics: list[str]) -> int:
    return sum(sum(end_offsets(admin_config, topic).values()) for topic in topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records of the largest accepted request")
    parser.add_argument("--cases", default="reject-1m,reject-max,batch-max,events-10mib")
    args = parser.parse_args()

    settings = Settings.from_env()
    admin_config = kafka.admin_config(settings)
    kube_api = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    print(f"machine: {machine()}")
    tenant = provision(kube_api, admin_config, manifest("bench", ["raumklima"], plan={"name": "large"}),
                       [tool(LORAWAN_TOOL)])
    try:
        key = ingest_secret(kube_api, tenant.slug)["webhook-key"]
        topics = [tenant.topic("raumklima", "lorawan"), tenant.dlq]
        made = bodies(args.records)
        for case in args.cases.split(","):
            body = made[case]
            with push_service([tenant], [LORAWAN_TOOL]) as (url, pid), \
                    httpx.Client(base_url=url, headers={"X-Ingest-Key": key}, timeout=900) as client:
                warm = client.post(ROUTE, content=json.dumps(event(0)))
                assert warm.status_code == 202, warm.text
                before, sent = memory_kib(pid), [messages(admin_config, [t]) for t in topics]
                began = time.monotonic()
                response = client.post(ROUTE, content=body)
                took = time.monotonic() - began
                peak = (memory_kib(pid)["VmHWM"] - before["VmRSS"]) / 1024
            after = [messages(admin_config, [t]) for t in topics]
            answer = response.json()
            outcome = (f"accepted {answer['accepted']:,}, rejected {answer['rejected']:,}"
                       if response.status_code == 202 else answer.get("error", {}).get("code"))
            print(f"{case}: {len(body) / 1e6:.1f} MB body → {response.status_code} ({outcome}) in {took:.2f} s; "
                  f"peak RSS +{peak:.0f} MiB over {before['VmRSS'] / 1024:.0f} MiB; Kafka messages: "
                  f"{after[0] - sent[0]:,} data, {after[1] - sent[1]:,} DLQ")
    finally:
        deprovision(kube_api, admin_config, tenant)


if __name__ == "__main__":
    main()
