"""Time from `apply` to `Ready` for municipalities, with the real operator and
the real backends of the local platform.

    .venv/bin/python bench/operator_ready.py --single 5 --batch 100
    .venv/bin/python bench/operator_ready.py --single 0 --batch 1000 --keep

Runs the operator in this process (like `urbanstack serve`), applies
municipalities in the organization strategy with both example CityTools, and
reports the median of single applies, the wall time until a batch applied at
once is Ready, the operator process's peak memory and a breakdown of where the
reconcile time goes (per backend). Municipalities are deleted (policy Delete)
afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import platform as machine
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "urbanstack.io", "v1alpha1", "municipalities"


def _body(name: str) -> dict:
    body = yaml.safe_load((ROOT / "examples" / "municipality-guetersloh.yaml").read_text())
    body = copy.deepcopy(body)
    body["metadata"] = {"name": name}
    spec = body["spec"]
    spec.update(displayName=f"Bench {name}", admins=[f"admin@{name}.example.org"], deletionPolicy="Delete")
    spec["identity"] = {"strategy": "organization", "domains": [f"{name}.example.org"]}
    spec.pop("shares", None)
    return body


def _ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


class Timings:
    """Wraps each provisioner's verbs to learn where reconcile time goes."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def wrap(self, provisioner):
        for verb in ("observe", "apply", "delete"):
            original = getattr(provisioner, verb)

            def timed(*args, __original=original, __key=f"{provisioner.name}.{verb}", **kwargs):
                started = time.perf_counter()
                try:
                    return __original(*args, **kwargs)
                finally:
                    with self.lock:
                        self.seconds[__key] += time.perf_counter() - started
                        self.calls[__key] += 1

            setattr(provisioner, verb, timed)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=5, help="sequential single applies (median reported)")
    parser.add_argument("--batch", type=int, default=100, help="municipalities applied at once")
    parser.add_argument("--workers", type=int, default=8, help="operator worker threads for sync handlers")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="do not delete the municipalities afterwards")
    args = parser.parse_args()

    import kopf

    from urbanstack import warehouse
    from urbanstack.devplatform import credentials, platform
    from urbanstack.operator import handlers
    from urbanstack.operator.backends import Backends, operator_kubeconfig
    from urbanstack.settings import Settings

    settings = credentials.fill(Settings.from_env())
    platform.up(settings)
    admin = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(admin)
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        body = yaml.safe_load((ROOT / "examples" / tool).read_text())
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "citytools", body)
        except kubernetes.client.rest.ApiException as exc:
            if exc.status != 409:
                raise

    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='bench-warehouse-')}")
    kube = kubernetes.config.new_client_from_config(config_file=operator_kubeconfig(settings))
    backends = Backends.from_settings(settings, warehouse_client=client, kube=kube)
    timings = Timings()
    for provisioner in (backends.runtime, backends.streaming, backends.warehouse, backends.identity):
        timings.wrap(provisioner)
    handlers.configure(settings, backends)
    os.environ["KUBECONFIG"] = operator_kubeconfig(settings) or ""
    stop, ready = threading.Event(), threading.Event()

    def run_operator():
        loop = asyncio.new_event_loop()
        from concurrent.futures import ThreadPoolExecutor

        loop.set_default_executor(ThreadPoolExecutor(max_workers=args.workers))
        loop.run_until_complete(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=run_operator, daemon=True)
    thread.start()
    ready.wait(60)
    run = uuid.uuid4().hex[:4]
    created: list[str] = []

    def wait_all(names: list[str], started: float) -> float:
        pending = set(names)
        while pending:
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"timeout: {len(pending)} of {len(names)} not Ready")
            for item in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
                if item["metadata"]["name"] in pending and _ready(item):
                    pending.discard(item["metadata"]["name"])
            time.sleep(0.2)
        return time.monotonic() - started

    singles = []
    for i in range(args.single):
        name = f"b{run}-s{i}"
        started = time.monotonic()
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _body(name))
        created.append(name)
        singles.append(wait_all([name], started))
        print(f"single {i + 1}/{args.single}: {singles[-1]:.1f} s", flush=True)

    batch_seconds = None
    if args.batch:
        names = [f"b{run}-m{i:04d}" for i in range(args.batch)]
        started = time.monotonic()
        for name in names:
            custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _body(name))
        created += names
        applied = time.monotonic() - started
        batch_seconds = wait_all(names, started)
        print(f"batch of {args.batch}: all Ready after {batch_seconds:.1f} s (applying took {applied:.1f} s)",
              flush=True)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"machine: {machine.node()} {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
          f"load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    if singles:
        print(f"apply → Ready, single municipality: median {statistics.median(singles):.1f} s "
              f"(min {min(singles):.1f}, max {max(singles):.1f}, n={len(singles)})")
    if batch_seconds is not None:
        print(f"apply → Ready, {args.batch} at once: {batch_seconds:.1f} s "
              f"({args.batch / batch_seconds:.2f} municipalities/s)")
    print(f"operator process peak RSS (includes chDB and this script): {peak_mib:.0f} MiB")
    print("where reconcile time goes (summed over worker threads):")
    for key in sorted(timings.seconds, key=timings.seconds.get, reverse=True):
        print(f"  {key:24} {timings.seconds[key]:8.1f} s in {timings.calls[key]:5d} calls "
              f"({timings.seconds[key] / timings.calls[key] * 1000:.0f} ms each)")

    if not args.keep:
        started = time.monotonic()
        for name in created:
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        while any(i["metadata"]["name"] in created
                  for i in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]):
            if time.monotonic() - started > args.timeout:
                print("cleanup timed out; delete the remaining municipalities by hand")
                break
            time.sleep(1)
        print(f"deleted {len(created)} municipalities in {time.monotonic() - started:.1f} s")
    stop.set()
    thread.join(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
