"""Worst-case memory and time of one upload request: the XLSX bombs of issue 17 and a
valid 50 MB CSV, each sent once to the real push app (`create_push_app`, as `urbanstack
serve` mounts it) with a webhook key; imports publish to the real Kafka of the local
platform with the tenant's own SCRAM user.

    .venv/bin/python bench/upload_bounds.py [--csv-mb 50] [--only preview]

Every request runs in a fresh process: the figure is the peak resident set (VmHWM, reset
through /proc/self/clear_refs right before the request) above the resident set before
it, and the wall time of the request. A throwaway municipality (the Gütersloh example
under a unique name) gets its topics and Kafka user from the operator's
StreamingProvisioner; they are deleted afterwards. Needs the local platform.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform as host
import secrets
import sys
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
JUNE = ROOT.parent / "shared" / "fixtures" / "pedestrian" / "besucherzahlen-moers-juni-2022-stundlich.csv"
TOOL, DATASET = "passantenfrequenz-wetter", "pedestrian_counts"
sys.path.insert(0, str(ROOT / "tests"))  # the bomb workbooks are built like the tests build them


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), host.processor())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), {memory:.1f} GiB RAM, load average before the run {load}"


def large_csv(megabytes: int) -> bytes:
    """The Moers June export repeated under new sensor names until it has ``megabytes``."""
    lines = JUNE.read_bytes().decode("cp1252").split("\r\n")
    body, size, copy = [lines[0]], 0, 0
    while size < megabytes * 2**20:
        for line in lines[1:]:
            if line:
                body.append(line.replace("Steinstraße, Moers", f"Zähler {copy}"))
                size += len(body[-1]) + 2
        copy += 1
    data = "\r\n".join(body).encode("cp1252")[:megabytes * 2**20]
    return data[:data.rfind(b"\r\n")]


def _kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")))


def one_request(tenant: dict, scenario: str, route: str, csv_mb: int, out) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="Using `httpx`")  # the test client's notice, not ours
    from fastapi.testclient import TestClient
    from workbooks import cell_bomb, merge_bomb

    from urbanstack.operator.models import parse_citytool, parse_municipality
    from urbanstack.runtime.api import Catalogue, TokenVerifier
    from urbanstack.runtime.ingest.push import create_push_app
    from urbanstack.runtime.ingest.tenants import StaticCredentials, TenantPublishers
    from urbanstack.settings import Settings

    settings = Settings.from_env()
    credentials = StaticCredentials({tenant["slug"]: tenant["credentials"]})
    publishers = TenantPublishers(settings, credentials)
    tools = [parse_citytool(t) for t in tenant["tools"]]
    app = create_push_app(Catalogue([parse_municipality(tenant["manifest"])], tools), publishers, credentials,
                          verifier=TokenVerifier(settings.keycloak_url, "{tenant}-api"))
    data, filename = {"merge bomb": (merge_bomb, "x.xlsx"), "cell bomb": (cell_bomb, "x.xlsx"),
                      "csv": (lambda: large_csv(csv_mb), "big.csv")}[scenario]
    data = data()
    params = {"filename": filename}
    if route == "upload":
        params |= ({"field": "column 1", "sensor_id": "s", "reference_date": "2024-01-01"} if scenario != "csv" else
                   {"field": "Fußgänger insgesamt=pedestrians", "sensor_column": "Lage",
                    "timestamp_column": "Zeitpunkt der Messung"})
    headers = {"X-Ingest-Key": tenant["credentials"]["webhook-key"]}
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/healthz")
        Path("/proc/self/clear_refs").write_text("5")
        before = _kb("VmRSS")
        started = time.monotonic()
        response = client.post(f"/ingest/v1/{TOOL}/{DATASET}/{route}", params=params, content=data, headers=headers)
        seconds = time.monotonic() - started
        peak = _kb("VmHWM")
    publishers.close()
    body = response.json()
    outcome = (body["error"]["code"] if "error" in body else
               f"{body['accepted']:,} accepted" if "accepted" in body else f"{body['rows_read']} rows read")
    out.put((scenario, route, len(data), response.status_code, outcome, seconds, (peak - before) / 1024))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv-mb", type=int, default=50)
    parser.add_argument("--only", choices=("preview", "upload"))
    args = parser.parse_args()

    from urbanstack.devplatform import kafka
    from urbanstack.operator.models import parse_citytool, parse_municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.provisioners.base import ensure
    from urbanstack.operator.provisioners.streaming import StreamingProvisioner
    from urbanstack.settings import Settings

    admin_config = kafka.admin_config(Settings.from_env())
    manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
    manifest["metadata"]["name"] = f"bench{uuid.uuid4().hex[:8]}"
    tools = [yaml.safe_load((EXAMPLES / name).read_text())
             for name in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml")]
    desired = plan(parse_municipality(manifest), [parse_citytool(t) for t in tools])
    password = secrets.token_urlsafe(18)
    streaming = StreamingProvisioner(admin_config)
    ensure(streaming, desired.streaming, {desired.streaming.password_key: password})
    tenant = {"slug": desired.slug, "manifest": manifest, "tools": tools, "credentials": {
        "webhook-key": f"{desired.slug}.{secrets.token_urlsafe(32)}", "kafka-username": desired.streaming.user,
        "kafka-password": password}}
    print(f"machine: {machine()}")
    print("| request | body | answer | time | peak RSS above the start |")
    print("|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    try:
        for scenario in ("merge bomb", "cell bomb", "csv"):
            for route in ("upload/preview", "upload"):
                if args.only and route != {"preview": "upload/preview", "upload": "upload"}[args.only]:
                    continue
                out = context.Queue()
                worker = context.Process(target=one_request, args=(tenant, scenario, route, args.csv_mb, out))
                worker.start()
                name, route_, size, status, outcome, seconds, grown = out.get()
                worker.join()
                print(f"| {route_} {name} | {size / 1024:,.1f} KB | {status} {outcome} | {seconds:.1f} s | "
                      f"{grown:,.0f} MB |", flush=True)
    finally:
        streaming.delete(desired.streaming, keep_data=False)


if __name__ == "__main__":
    main()
