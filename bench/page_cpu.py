"""CPU time per request of Gov Hub pages against the API's, in one process (no HTTP server).

    .venv/bin/python bench/page_cpu.py [--requests 300] [--top 0]

Wall-clock figures on this shared 2-core machine move by a factor of two with the neighbours;
CPU time of this process barely does. Each page is requested ``--requests`` times (after 20
warm-up requests) through the production composition (``serve.PathDispatch`` of the API app
and the Gov Hub) over httpx's ASGI transport, signed in with one session (gov-admin) on the
town of ``bench/gov_hub.py`` (run that once first: it creates the warehouse and the
dashboards; the dashboard pages are measured when its six-panel dashboard is in the store,
with the panel cache on as in production). ``/healthz`` is the baseline: what the client and the ASGI layers cost with no
work at all, so "page − healthz" is the page's own CPU; "client alone" is what httpx and its
ASGI transport cost in this process with an empty app (no server at all). ``--top N`` prints the N functions
with the most own CPU time of the start page (yappi, all threads: FastAPI runs sync routes
in a thread pool).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import gov_hub  # noqa: E402  (the benchmark town: manifests, verifier, Kubernetes stand-in)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--top-path", default=None, help="the path --top profiles (default: the start page)")
    parser.add_argument("--compare-overview-cache", action="store_true",
                        help="measure each page also with the dashboard overview cache off (OVERVIEW_SECONDS = 0)")
    parser.add_argument("--path", default=str(Path.home() / ".local/state/urbanstack/bench-gov-hub"))
    args = parser.parse_args()

    from urbanstack import serve, warehouse as wh
    from urbanstack.operator.models import CityTool, Municipality
    from urbanstack.runtime.api import Catalogue, create_app
    from urbanstack.runtime.store import open_store
    from urbanstack.runtime.store.models import utcnow
    from urbanstack.runtime.web import security
    from urbanstack.settings import Settings

    state = Path(args.path)
    if not (state / "warehouse").exists():
        sys.exit(f"{state / 'warehouse'} does not exist: run bench/gov_hub.py once first")
    client = wh.connect(f"chdb://{state / 'warehouse'}")
    verifier, token = gov_hub.make_verifier()
    settings = dataclasses.replace(Settings.from_env(), api_anonymous_queries_per_hour=0,
                                   keycloak_server_url=gov_hub.KEYCLOAK)
    catalogue = Catalogue([Municipality.model_validate(gov_hub.TOWN_MANIFEST)],
                          [CityTool.model_validate(gov_hub.TOOL_MANIFEST)])
    api = create_app(settings, catalogue, client, keycloak_url=gov_hub.KEYCLOAK, audience="{tenant}-api",
                     verifier=verifier)
    store = open_store(f"sqlite:///{state / 'metadata.sqlite3'}")
    store.upgrade()
    web = serve.web_app(settings, catalogue, api, store, extras={"kube": gov_hub.ManifestKube()})
    app = serve.PathDispatch(api, web)
    session, _ = store.sessions.create(gov_hub.SLUG, subject="page-cpu", username="page-cpu", display_name="CPU",
                                       email="cpu@benchtown.example.org", roles=gov_hub.ROLES,
                                       access_expires_at=utcnow() + timedelta(hours=4))

    async def cpu_per_request(path: str, headers: dict[str, str] | None = None, target=None) -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=target or app), base_url="http://127.0.0.1",
                                     cookies={security.COOKIE: session}, headers=headers or {}) as http:
            for _ in range(20):
                answer = await http.get(path)
                if answer.status_code != 200:
                    sys.exit(f"{path}: {answer.status_code}")
            began = time.process_time()
            for _ in range(args.requests):
                await http.get(path)
            return (time.process_time() - began) / args.requests * 1000

    from urllib.parse import urlencode

    from urbanstack.runtime.store.models import Dashboard
    with store.session() as db:   # the six-panel dashboard bench/gov_hub.py made
        whole = db.query(Dashboard.id).filter(Dashboard.tenant == gov_hub.SLUG,
                                              Dashboard.title == "Klima Benchtown").order_by(Dashboard.id).first()
    dashboard = f"/gov/{gov_hub.SLUG}/dashboards/{whole[0]}" if whole else None

    async def trivial(scope, receive, send):   # what the client and httpx's ASGI transport cost alone
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})

    pages = [("Gov Hub start page", f"/gov/{gov_hub.SLUG}/", None),
             ("Gov Hub dashboard list", f"/gov/{gov_hub.SLUG}/dashboards", None),
             ("Gov Hub data page", f"/gov/{gov_hub.SLUG}/data", None),
             *([(f"Gov Hub dashboard, 6 panels, {label}", f"{dashboard}?{urlencode(dates)}", None)
                for label, dates in (("7 days", gov_hub.WEEK), ("one year", gov_hub.YEAR))] if dashboard else []),
             *([("Gov Hub …/panels fragment, one year", f"{dashboard}/panels?{urlencode(gov_hub.YEAR)}", None)]
               if dashboard else []),
             ("API /api/v1/datasets (token)", "/api/v1/datasets", {"Authorization": f"Bearer {token}"}),
             ("/healthz (baseline)", "/healthz", None)]
    from urbanstack.runtime.store import dashboards

    figures = {}
    for label, path, headers in pages:
        figures[label] = asyncio.run(cpu_per_request(path, headers))
        if args.compare_overview_cache and path.startswith("/gov/"):
            kept, dashboards.OVERVIEW_SECONDS = dashboards.OVERVIEW_SECONDS, 0.0
            figures[label + " (no overview cache)"] = asyncio.run(cpu_per_request(path, headers))
            dashboards.OVERVIEW_SECONDS = kept
    figures["client alone (empty ASGI app)"] = asyncio.run(cpu_per_request("/", target=trivial))
    baseline = figures["/healthz (baseline)"]
    print(f"{'request':50s} {'CPU ms/request':>15s} {'minus baseline':>15s}")
    for label, value in figures.items():
        print(f"{label:50s} {value:15.2f} {value - baseline:15.2f}")

    if args.top:
        try:
            import yappi
        except ImportError:
            raise SystemExit("--top needs the profiler: .venv/bin/pip install -e '.[bench]'") from None

        yappi.set_clock_type("cpu")
        yappi.start()
        named = {label: path for label, path, _ in pages}   # --top-path may also name a page by its label
        args.top_path = named.get(args.top_path, args.top_path)
        asyncio.run(cpu_per_request(args.top_path or f"/gov/{gov_hub.SLUG}/"))
        yappi.stop()
        stats = yappi.get_func_stats()
        stats.sort("tsub")
        print(f"\n{args.top_path or 'start page'}, own CPU per request (ms), top {args.top}:")
        for entry in list(stats)[:args.top]:
            print(f"{entry.tsub * 1000 / (args.requests + 20):8.3f}  {entry.module.split('site-packages/')[-1]}:"
                  f"{entry.lineno} {entry.name}")
    store.close()


if __name__ == "__main__":
    main()
