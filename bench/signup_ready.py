"""Self-service signup: approval in the ops console → Municipality Ready → Keycloak's invitation
in the mailbox, on the real local platform (operator, Keycloak, kube-apiserver, SMTP).

    .venv/bin/python bench/signup_ready.py [--runs 5] [--follow-interval 5]

The human steps are not timed: each run applies for a municipality of the Kreis Gütersloh over
HTTP, confirms through the mailed link and has a platform-admin (password + TOTP, signed in once)
ready in the console. Timed from the approve POST: until the POST answers (the Municipality is
created), until the operator reports it Ready, until the invitation is in the SMTP server's
folder. The invitation is sent by the signup's follower thread, as in ``urbanstack serve``
(every ``--follow-interval`` seconds, ``serve.SIGNUP_FOLLOW_SECONDS`` by default), so up to one
interval of the last figure is waiting for the next round.

Baseline in the same run: the same Municipality manifest created directly (no signup, no
invitation) under another name, until Ready — the operator's share. The runs alternate
signup/baseline so both see the same load. Everything created is deleted afterwards.

Uses the tests' harness (tests/signup_harness.py): the web origin of ``urbanstack serve``, the
operator in a thread, the platform realm with a platform-admin; it does not start the platform
(``urbanstack dev up`` must be running).
"""

from __future__ import annotations

import argparse
import os
import platform as machine
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_LABEL = "urbanstack.io/bench-signup"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

# (AGS, slug) of the places of tests/signup_harness.PLACES the runs apply for.
PLACES = [("05754012", "harsewinkel"), ("05754020", "langenberg"), ("05754032", "rietberg"),
          ("05754040", "steinhagen"), ("05754044", "verl"), ("05754048", "versmold"),
          ("05754052", "werther-westf")]


def _ready(obj: dict | None) -> bool:
    status = (obj or {}).get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _until_ready(cluster, name: str, timeout: float) -> set[str]:
    """Wait until ``name`` is Ready; returns what held it up (conditions not True on the way)."""
    held: set[str] = set()

    def ready() -> bool:
        obj = cluster.get("municipalities", name)
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c.get("status") != "True" and c.get("type") != "Ready":
                held.add(f"{c.get('type')} {c.get('reason')}: {str(c.get('message'))[:160]}")
        return _ready(obj)

    _wait(ready, timeout, f"{name} Ready")
    return held


def _wait(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise SystemExit(f"timeout after {timeout:.0f} s: {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help=f"approvals (at most {len(PLACES)})")
    parser.add_argument("--follow-interval", type=float, default=None,
                        help="seconds between the follower's rounds (default: serve.SIGNUP_FOLLOW_SECONDS)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if not 1 <= args.runs <= len(PLACES):
        parser.error(f"--runs must be 1..{len(PLACES)}")

    import kubernetes

    from hub_harness import browser_like_client, page_text
    from signup_harness import application, csrf_of, ops_sign_in, remove_municipality, signup_world

    from urbanstack import serve, warehouse
    from urbanstack.devplatform import credentials
    from urbanstack.devplatform.mailbox import Mailbox
    from urbanstack.runtime.hubs.signup.app import _start_follower
    from urbanstack.runtime.hubs.signup.service import municipality_manifest
    from urbanstack.settings import Settings

    settings = credentials.fill(Settings.from_env())
    interval = serve.SIGNUP_FOLLOW_SECONDS if args.follow_interval is None else args.follow_interval
    places = PLACES[:args.runs]
    kube_api = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    client = warehouse.connect(f"chdb://{tempfile.mkdtemp(prefix='bench-signup-warehouse-')}")
    box = Mailbox(settings.mail_dir)
    run = uuid.uuid4().hex[:4]
    rows, baseline, created = [], [], []
    load_before = os.getloadavg()

    # Municipalities of an earlier, interrupted run go first (the operator must run to delete them).
    earlier = [item["metadata"]["name"] for item in kubernetes.client.CustomObjectsApi(kube_api)
               .list_cluster_custom_object("urbanstack.io", "v1alpha1", "municipalities",
                                           label_selector=BENCH_LABEL)["items"]]
    with signup_world(settings, client, kube_api, Path(tempfile.mkdtemp(prefix="bench-signup-")),
                      leftovers=(*earlier, *(slug for _, slug in places))) as world:
        _start_follower(world.signup, interval, world.server.web.signup)
        url, cluster = world.server.url, world.cluster
        ops = browser_like_client()
        landed = ops_sign_in(ops, url, world.ops)
        assert landed.status_code == 200, page_text(landed.text)
        for i, (ags, slug) in enumerate(places):
            # Not timed: the applicant applies and confirms.
            email = f"amt@{slug}-{run}{i}.bench.example.org"
            applicant = browser_like_client()
            seen = box.seen()
            answer = applicant.post(f"{url}/signup/", data=application(applicant, url, ags, email))
            assert answer.status_code == 303, page_text(answer.text)
            confirm = box.wait_for(email, timeout=30, after=seen).links(startswith=f"{url}/signup/confirm/")[0]
            assert applicant.post(confirm).status_code == 200
            request = next(r for r in world.signup.requests.queue() if r.email == email)
            csrf = csrf_of(ops.get(f"{url}/ops/requests/{request.id}").text)
            seen = box.seen()

            started = time.monotonic()
            approved = ops.post(f"{url}/ops/requests/{request.id}/approve", data={"csrf_token": csrf})
            assert approved.status_code == 303, page_text(approved.text)
            created_at = time.monotonic()
            created.append(slug)
            held = _until_ready(cluster, slug, args.timeout)
            ready_at = time.monotonic()
            invitation = box.wait_for(email, timeout=args.timeout, after=seen)
            assert invitation.links(startswith=f"{settings.keycloak_url}/realms/"), invitation.text
            mailed_at = time.monotonic()
            rows.append((created_at - started, ready_at - started, mailed_at - started))
            print(f"signup {i + 1}/{len(places)} {slug}: created {rows[-1][0]:.2f} s, Ready {rows[-1][1]:.1f} s, "
                  f"invitation delivered {rows[-1][2]:.1f} s", flush=True)
            for reason in sorted(held):
                print(f"    held up by {reason}", flush=True)

            # Baseline: the same manifest created directly, until Ready.
            name = f"b{run}-base{i}"
            body = municipality_manifest(request, "Delete")
            body["metadata"] = {"name": name, "labels": {BENCH_LABEL: "baseline"}}
            body["spec"]["displayName"] += f" ({name})"  # Keycloak's organization names are unique
            body["spec"]["identity"]["domains"] = [f"{name}.bench.example.org"]
            body["spec"]["admins"] = [f"admin@{name}.bench.example.org"]
            started = time.monotonic()
            cluster.custom.create_cluster_custom_object("urbanstack.io", "v1alpha1", "municipalities", body)
            created.append(name)
            held = _until_ready(cluster, name, args.timeout)
            baseline.append(time.monotonic() - started)
            print(f"baseline {i + 1}/{len(places)} {name}: Ready {baseline[-1]:.1f} s", flush=True)
            for reason in sorted(held):
                print(f"    held up by {reason}", flush=True)
        load_after = os.getloadavg()
        world.server.web.signup.state.signup_stop.set()
        cleanup = time.monotonic()
        for name in created:
            if name.startswith(f"b{run}-"):  # signup_world removes the signup's own
                remove_municipality(cluster, name)
    print(f"removed the baseline municipalities in {time.monotonic() - cleanup:.0f} s")

    print()
    print(f"machine: {machine.node()} {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, Python "
          f"{sys.version.split()[0]}; load average before {load_before[0]:.2f}/{load_before[1]:.2f}/"
          f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"follower interval {interval:g} s, n={len(rows)}")

    def line(label: str, values: list[float]) -> None:
        print(f"  {label:44} median {statistics.median(values):6.1f} s  (min {min(values):.1f}, "
              f"max {max(values):.1f})")

    line("approve POST answered (Municipality created)", [r[0] for r in rows])
    line("approval → Ready", [r[1] for r in rows])
    line("approval → invitation delivered", [r[2] for r in rows])
    line("Ready → invitation delivered", [r[2] - r[1] for r in rows])
    line("baseline: direct create → Ready", baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
