"""Pegel-Warnung on the real local platform: latency from a reading in Kafka to the warning
e-mail in the mailbox, and the tool's CPU at a steady 1,000 readings/s.

    .venv/bin/python bench/pegel_warnung.py --crossings 100 --rate 1000 --seconds 20

Provisions one municipality with a uniquely named Pegel-Warnung CityTool through the real
operator (in this process, as in the tests), starts the tool as its own process with the
credentials of its Deployment (`urbanstack tool run`'s code path), then:

1. latency: ``--crossings`` times, one reading above the warn level of a fresh gauge is
   published (the clock starts when Kafka acknowledged it) and the bench polls the SMTP
   server's mail folder every 10 ms until the warning e-mail is there. Baseline in the same
   run: the same number of e-mails sent straight to the relay (``urbanstack.mail.send``) and
   waited for the same way — the part of the latency that is SMTP plus the mailbox poll.
2. CPU: readings below every level (no decisions: the steady state) at ``--rate`` per second
   for ``--seconds``, in batches of 100 every 100 ms; the tool process's user+system CPU
   time (from /proc) over the wall time, and whether it kept up (its readings counter).

Municipality and CityTool are deleted afterwards.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import platform as machine
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from procstat import read_stat  # noqa: E402
from operator_harness import (Cluster, OperatorThread, example, is_ready, operator_kubeconfig,  # noqa: E402
                              unique_municipality, use_operator_identity)

MODULE = "urbanstack.citytools.pegel_warnung"


def _cpu_seconds(pid: int) -> float:
    return read_stat(f"/proc/{pid}/stat")[2]


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crossings", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()

    from urbanstack import mail
    from urbanstack.devplatform import credentials
    from urbanstack.devplatform.mailbox import Mail
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends
    from urbanstack.runtime.events import Observation
    from urbanstack.settings import Settings
    from urbanstack.toolkit import ToolContext, local, streams
    from urbanstack import warehouse as wh
    import tempfile

    settings = credentials.fill(Settings.from_env())
    kube = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    cluster = Cluster(kube)
    tool = f"pwbench-{uuid.uuid4().hex[:6]}"
    citytool = example("citytool-pegel-warnung.yaml")
    citytool["metadata"] = {"name": tool}
    cluster.apply("citytools", citytool)
    body = unique_municipality("municipality-guetersloh.yaml", "pwbench")
    name = body["metadata"]["name"]
    address = f"leitstelle@{name}.example.org"
    body["spec"].update(tools=[{"name": tool, "settings": {"warnLevelCm": 100, "alarmLevelCm": 200,
                                                            "subscribers": [address]}}],
                        shares=[], deletionPolicy="Delete")
    cluster.apply("municipalities", body)

    use_operator_identity(settings)
    backends = Backends.from_settings(settings, warehouse_client=wh.connect(f"chdb://{tempfile.mkdtemp()}"),
                                      kube=kubernetes.config.new_client_from_config(
                                          config_file=operator_kubeconfig(settings)))
    handlers.configure(settings, backends, MunicipalityDirectory.load(
        ROOT / "tests" / "fixtures" / "municipalities.derived.csv"))
    runner = OperatorThread().start()
    process = None
    try:
        cluster.wait_for("municipalities", name, is_ready, timeout=300, what="Ready")
        folder = Path(tempfile.mkdtemp())
        env = local.deployment_environment(kube, name, tool, folder)
        ctx = ToolContext.from_environment(env | {"URBANSTACK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap})
        port = 18000 + os.getpid() % 1000
        caller = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "URBANSTACK_TOOL_PORT": str(port),
                  "URBANSTACK_SMTP_PORT": str(settings.smtp_port), "LOG_LEVEL": "WARNING"}
        process = local.start(kube, name, tool, bootstrap=settings.kafka_bootstrap, module=MODULE,
                              caller_env=caller)
        local.wait_healthy(process, port, timeout=60)
        producer = streams.publisher(ctx)
        start = datetime.now(timezone.utc) - timedelta(days=1)

        def wait_mail(subject: str, seen: set) -> None:
            """Only files not seen before are parsed, so the poll costs the same on a full mailbox."""
            while True:
                for path in sorted(set(Path(settings.mail_dir).glob("*.eml")) - seen):
                    seen.add(path)
                    with path.open("rb") as handle:
                        message = Mail(path, email.message_from_binary_file(handle, policy=email.policy.default))
                    if address in message.recipients and subject in message.subject:
                        return
                time.sleep(0.01)

        # Baseline: SMTP alone.
        seen = set(Path(settings.mail_dir).glob("*.eml"))
        baseline = []
        for index in range(args.crossings):
            t0 = time.perf_counter()
            mail.send(settings, address, f"baseline {index}", "baseline")
            wait_mail(f"baseline {index}", seen)
            baseline.append(time.perf_counter() - t0)

        latencies = []
        for index in range(args.crossings):
            gauge = f"bench-{index:04d}"
            event = Observation(tenant=name, dataset="water_levels", source="bench", sensor_id=gauge,
                                observed_at=start + timedelta(seconds=index), fields={"water_level": 150.0,
                                                                                       "station_name": gauge})
            t0 = time.perf_counter()
            streams.publish(ctx, producer, [event])          # returns once Kafka acknowledged
            wait_mail(f"Hochwasserwarnung: {gauge}", seen)
            latencies.append(time.perf_counter() - t0)

        # CPU at a steady rate, no decisions.
        read_before = _metric(port, "pegel_warnung_readings_total")
        cpu_before, wall_before = _cpu_seconds(process.pid), time.perf_counter()
        total, batch, tick = args.rate * args.seconds, max(1, args.rate // 10), 0.1
        sent = 0
        later = datetime.now(timezone.utc) - timedelta(hours=1)
        while sent < total:
            due = wall_before + (sent // batch) * tick
            if (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            events = [Observation(tenant=name, dataset="water_levels", source="bench", sensor_id=f"steady-{i % 200}",
                                  observed_at=later + timedelta(milliseconds=sent + i), fields={"water_level": 50.0})
                      for i in range(batch)]
            streams.publish(ctx, producer, events)
            sent += batch
        deadline = time.monotonic() + 120
        while _metric(port, "pegel_warnung_readings_total") < read_before + total and time.monotonic() < deadline:
            time.sleep(0.2)
        wall = time.perf_counter() - wall_before
        cpu = _cpu_seconds(process.pid) - cpu_before
        kept = _metric(port, "pegel_warnung_readings_total") - read_before
        producer.close()

        load = os.getloadavg()
        print(f"machine: {machine.node()} {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"latency reading in Kafka -> warning e-mail, {len(latencies)} crossings: "
              f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {_pct(latencies, 0.95) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
        print(f"baseline SMTP send -> mailbox, {len(baseline)} mails: p50 {statistics.median(baseline) * 1000:.0f} ms, "
              f"p95 {_pct(baseline, 0.95) * 1000:.0f} ms")
        print(f"steady state: {total} readings at {args.rate}/s sent in {wall:.1f} s wall (incl. drain), "
              f"{kept:.0f} read by the tool; tool CPU {cpu:.2f} s = {cpu / wall:.3f} cores "
              f"-> {cpu / wall * 1000 / args.rate:.3f} cores per 1,000 readings/s")
        return 0
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        cluster.delete("municipalities", name)
        try:
            cluster.wait_gone("municipalities", name, timeout=240)
        finally:
            runner.stop()
            cluster.delete("citytools", tool)


if __name__ == "__main__":
    sys.exit(main())
