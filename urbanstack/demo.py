"""``make demo``: the local platform, the example municipalities provisioned by
the operator, and what runs where."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import kubernetes
import yaml
from kubernetes.client.rest import ApiException

from urbanstack.settings import Settings

GROUP, VERSION = "urbanstack.io", "v1alpha1"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _apply(custom: kubernetes.client.CustomObjectsApi, body: dict) -> None:
    plural = {"Municipality": "municipalities", "CityTool": "citytools"}[body["kind"]]
    name = body["metadata"]["name"]
    try:
        custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"spec": body["spec"]})


def _examples() -> list[dict]:
    docs = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    # CityTools first: municipalities enable them.
    return sorted(docs, key=lambda d: d["kind"] != "CityTool")


def _conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def run(settings: Settings, timeout: float = 300) -> int:
    from urbanstack.devplatform import platform

    platform.up(settings)
    admin = kubernetes.config.new_client_from_config(config_file=str(settings.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(admin)
    examples = _examples()
    for body in examples:
        _apply(custom, body)
    print(f"applied {len(examples)} examples from {EXAMPLES}")
    from urbanstack import serve, warehouse

    stop = threading.Event()
    thread = serve.start_operator(settings, warehouse.shared(settings.warehouse_url), stop)
    names = [b["metadata"]["name"] for b in examples if b["kind"] == "Municipality"]
    deadline = time.monotonic() + timeout
    items = {}
    data_status = 0
    try:
        while time.monotonic() < deadline:
            items = {n: custom.get_cluster_custom_object(GROUP, VERSION, "municipalities", n) for n in names}
            if all(_conditions(o).get("Ready", {}).get("status") == "True" for o in items.values()):
                break
            time.sleep(1)
        _print_status(items, settings)
        if "guetersloh" in items and _conditions(items["guetersloh"]).get("Ready", {}).get("status") == "True":
            from urbanstack import demo_data

            data_status = demo_data.run(settings, custom, kubernetes.client.CoreV1Api(admin))
            _print_gov_hub(settings)
    finally:
        stop.set()
        thread.join(30)
    ok = all(_conditions(o).get("Ready", {}).get("status") == "True" for o in items.values())
    return 0 if ok and data_status == 0 else 1


def _print_gov_hub(settings: Settings) -> None:
    from urbanstack import demo_staff

    password_file = demo_staff.ensure(settings)
    print(f"\nGov Hub: run 'urbanstack serve' (or 'make serve'), then open "
          f"http://{settings.http_host}:{settings.http_port}/gov/{demo_staff.SLUG}/\n"
          f"  sign in as {demo_staff.USERNAME} with the password in {password_file};\n"
          f"  Keycloak asks you to set up an authenticator app (one-time codes) at the first sign-in.")


def _print_status(items: dict, settings: Settings) -> None:
    print()
    header = ("MUNICIPALITY", "PHASE", "READY", "IDENTITY", "STREAMING", "WAREHOUSE", "RUNTIME", "NAMESPACE")
    rows = []
    for name, obj in items.items():
        c = _conditions(obj)
        rows.append((name, (obj.get("status") or {}).get("phase", "-"),
                     *(c.get(t, {}).get("status", "-") for t in
                       ("Ready", "IdentityReady", "StreamingReady", "WarehouseReady", "RuntimeReady")),
                     ((obj.get("status") or {}).get("names") or {}).get("namespace", "-")))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)))
    for name, obj in items.items():
        for type_, cond in _conditions(obj).items():
            if cond.get("status") != "True":
                print(f"  {name} {type_}: {cond.get('reason')}: {cond.get('message')}")
    print(f"\nexport KUBECONFIG={settings.kubeconfig}; kubectl get municipalities,citytools")
