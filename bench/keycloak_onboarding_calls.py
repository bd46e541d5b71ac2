"""Admin API calls and wall time of a new municipality's first identity reconcile: the partial
import of its clients and roles (default) against the per-client path, alternating in one run.

    .venv/bin/python bench/keycloak_onboarding_calls.py [--tenants 5] [--rounds 2]

Needs the local platform (`urbanstack dev up`). Each tenant is the example Gütersloh under a
random slug, organization strategy, both example tools; all are deleted again at the end (also
after Ctrl-C). Figures go to docs/scale.md (Decision 4).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
import uuid
from pathlib import Path

import yaml

from urbanstack.devplatform import keycloak
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _desired(tag: str):
    manifest = yaml.safe_load((EXAMPLES / "municipality-guetersloh.yaml").read_text())
    slug = f"bench-kc-{tag}"
    manifest["metadata"]["name"] = slug
    spec = manifest["spec"]
    spec["displayName"] = f"{spec['displayName']} {tag}"
    spec["admins"] = [f"admin-{tag}@{slug}.test"]
    spec.setdefault("identity", {})["domains"] = [f"{slug}.test"]
    tools = [parse_citytool(yaml.safe_load(path.read_text())) for path in sorted(EXAMPLES.glob("citytool-*.yaml"))]
    return plan(parse_municipality(manifest), tools).identity


def _credentials(part) -> dict[str, str]:
    return {c.secret_key: hashlib.sha256(f"{part.realm}/{c.client_id}".encode()).hexdigest()
            for c in part.clients if c.secret_key}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=5, help="new municipalities per mode and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.from_env()
    provisioner = IdentityProvisioner(settings.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(settings))
    bulk = IdentityProvisioner._import_clients
    results: dict[str, list[tuple[int, int, float]]] = {"import": [], "per-client": []}
    created = []
    calls: list[str] = []
    send = provisioner._api.request
    provisioner._api.request = lambda method, path, **kw: calls.append(method) or send(method, path, **kw)
    try:
        for _ in range(args.rounds):
            for mode in ("per-client", "import"):
                IdentityProvisioner._import_clients = bulk if mode == "import" else (lambda self, *a, **k: set())
                for _ in range(args.tenants):
                    part = _desired(uuid.uuid4().hex[:8])
                    created.append(part)
                    calls.clear()
                    started = time.perf_counter()
                    ensure(provisioner, part, _credentials(part))
                    results[mode].append((len(calls), sum(method != "GET" for method in calls),
                                          time.perf_counter() - started))
    finally:
        IdentityProvisioner._import_clients = bulk
        provisioner._api.request = send
        for part in created:
            provisioner.delete(part, keep_data=False)
        provisioner.close()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.tenants} tenants × {args.rounds} rounds per mode")
    for mode, rows in results.items():
        print(f"{mode:>10}: {statistics.mean(r[0] for r in rows):.0f} calls per new tenant "
              f"({statistics.mean(r[1] for r in rows):.0f} writes), median {statistics.median(r[2] for r in rows):.2f} s")


if __name__ == "__main__":
    main()
