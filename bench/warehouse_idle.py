"""Idle CPU of the embedded warehouse engine with many empty tenant tables.

Each variant runs in a child process of its own (one embedded engine per process and path):
it creates ``--tables`` empty MergeTree tables shaped like a tenant's (12 per database,
partitioned by month, TTL, deduplication window), waits 10 s, then samples the CPU time of
every thread of the process over ``--rounds`` windows of ``--window`` seconds, grouped by
thread name (the engine names its schedule pools BgSchPool, BgStrmSchPool, PoolDelayExec).
Variants, in the same run so the noisy machine affects both alike:

- ``default``: the engine's own scheduling (idle backoff multiplier 1.1);
- ``platform``: ``urbanstack.warehouse.EMBEDDED_ENGINE_OPTIONS`` (multiplier 2).

    .venv/bin/python bench/warehouse_idle.py [--tables 3000] [--window 45] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform as machine
import subprocess
import sys
import tempfile
import time

from procstat import read_stat

TABLE = ("CREATE TABLE {db}.t{n} (observed_at DateTime64(3, 'UTC'), station String, value Float64, "
         "received_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree "
         "PARTITION BY toYYYYMM(observed_at) ORDER BY (station, observed_at) "
         "TTL toDateTime(observed_at) + toIntervalDay(730) "
         "SETTINGS non_replicated_deduplication_window = 1000")


def _threads() -> collections.Counter:
    seconds: collections.Counter = collections.Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            name, _, cpu = read_stat(f"/proc/self/task/{tid}/stat")
        except FileNotFoundError:
            continue
        seconds[name] += cpu
    return seconds


def child(variant: str, tables: int, window: float, rounds: int) -> None:
    from urbanstack import warehouse

    options = {} if variant == "default" else warehouse.EMBEDDED_ENGINE_OPTIONS
    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix=f'bench-idle-{variant}-')}", engine_options=options)
    started = time.perf_counter()
    for d in range(tables // 12):
        client.command(f"CREATE DATABASE d{d}")
        for n in range(12):
            client.command(TABLE.format(db=f"d{d}", n=n))
    created = time.perf_counter() - started
    time.sleep(10)
    windows = []
    for _ in range(rounds):
        before, wall = _threads(), time.perf_counter()
        time.sleep(window)
        after, wall = _threads(), time.perf_counter() - wall
        per_thread = {k: round(after[k] - before.get(k, 0.0), 2) for k in after if after[k] - before.get(k, 0.0) > 0}
        windows.append({"wall": wall, "cpu": sum(per_thread.values()), "threads": per_thread})
    print(json.dumps({"variant": variant, "created": created, "windows": windows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=3000)
    parser.add_argument("--window", type=float, default=45.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tables, args.window, args.rounds)
        return
    print(f"machine: {machine.node()} {os.cpu_count()} cores; {args.tables} empty tables; "
          f"{args.rounds} windows of {args.window:.0f} s after 10 s", flush=True)
    for variant in ("default", "platform"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--tables", str(args.tables),
                              "--window", str(args.window), "--rounds", str(args.rounds)],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{variant:9} created in {result['created']:.1f} s")
        for i, w in enumerate(result["windows"]):
            top = sorted(w["threads"].items(), key=lambda kv: -kv[1])[:4]
            print(f"  window {i + 1}: {w['cpu']:.2f} s CPU in {w['wall']:.0f} s = {w['cpu'] / w['wall'] * 100:.2f} % "
                  f"of one core ({', '.join(f'{k} {v:.2f}' for k, v in top)})", flush=True)


if __name__ == "__main__":
    main()
