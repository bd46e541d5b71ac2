"""Gov Hub: a dashboard of six panels over a year of hourly data of 100 sensors (876,000 rows).

    .venv/bin/python bench/gov_hub.py [--runs 20] [--loads 10] [--users 50] [--seconds 15]
                                      [--path <state dir>] [--skip browser,load]

What is measured (each against the bare API call for the same data in the same run):

1. server time per panel: each panel alone as a one-panel dashboard, its ``…/panels`` fragment
   (session, access check, engine query, figure, Jinja render), p50/p95 over ``--runs``,
   interleaved with the REST call(s) that return the same numbers (series, or the map's two
   pages of observations); then the six-panel fragment and the whole page against the six
   REST calls one after the other;
2. time until the last panel is drawn in headless Chromium (Debian's, Playwright for Python,
   the browser tests' flags): navigation start → every ``figure.chart`` has ``chart-drawn``
   and the map panel's server-drawn SVG is in the page; then, as a user would, a click on
   "Interaktive Karte öffnen" → MapLibre's first ``load`` (``map-drawn``); over ``--loads``
   page loads in fresh browser contexts (nothing cached);
3. JavaScript the dashboard page loads, as loaded and after opening the interactive map (the
   map's module worker included): bytes on the wire as the server sent them (pre-compressed
   by Accept-Encoding), and raw, gzip -9 and brotli sizes of the built files;
4. Gov Hub pages under ``--users`` concurrent signed-in users (each its own session cookie),
   no think time, from a load generator in its own process (httpx.AsyncClient per user):
   start page, dashboard list, the dashboard (one year and seven days), the data page;
   against ``/api/v1/datasets`` with a token and an open dataset's daily series without one
   (the anonymous quota is switched off for the run).

The server is the production composition (``serve.PathDispatch`` of the API app and the Gov
Hub, ``serve.http_server``: one uvicorn process) in a process of its own, which also owns the
embedded warehouse (chDB); the rows are generated inside the engine (INSERT … SELECT FROM
numbers()) and kept between runs in ``<state dir>/warehouse``. The metadata store (SQLite) is
made anew every run; sessions are created directly in it, as the page tests do. Tokens are
RS256, verified by the API against a key served by an in-process JWKS. The data page reads the
municipality from a stand-in of the Kubernetes API (the manifest below), not a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

SLUG = "benchtown"
SENSORS = 100
YEAR_HOURS = 8760
ROWS = SENSORS * YEAR_HOURS
KEYCLOAK = "http://keycloak.invalid"
DATASET = f"{SLUG}/klima/air"
YEAR = {"from": "2025-01-01", "to": "2025-12-31"}          # Berlin dates of the dashboard view (to inclusive)
API_YEAR = {"from": "2024-12-31T23:00:00Z", "to": "2025-12-31T23:00:00Z", "timezone": "Europe/Berlin"}
WEEK = {"from": "2025-12-25", "to": "2025-12-31"}
ROLES = ["gov-admin", "gov-editor", "gov-viewer"]

TOOL_MANIFEST = {
    "metadata": {"name": "klima"},
    "spec": {"displayName": "Klima", "version": "1.0.0", "owner": SLUG, "audience": "both",
             "datasets": [{"name": "air", "retentionDays": 3650,
                           "fields": [{"name": "temperature", "type": "Float64", "unit": "°C"}]}]}}
TOWN_MANIFEST = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality",
    "metadata": {"name": SLUG},
    "spec": {"displayName": "Benchtown", "ags": "05754008", "admins": ["ops@benchtown.example.org"],
             "plan": {"name": "large"}, "tools": [{"name": "klima"}],
             "shares": [{"tool": "klima", "dataset": "air", "public": True, "licence": "dl-de/zero-2-0"}]}}

# (panel spec, the REST calls that return the same data)
PANELS = [
    ({"type": "timeseries", "title": "Temperatur stündlich", "dataset": DATASET, "fields": ["temperature"],
      "aggregate": "avg", "bucket": "hour"}, "series", {"aggregate": "avg", "bucket": "hour"}),
    ({"type": "bar", "title": "Monatsmittel", "dataset": DATASET, "fields": ["temperature"],
      "aggregate": "avg", "bucket": "month"}, "series", {"aggregate": "avg", "bucket": "month"}),
    ({"type": "kpi", "title": "Tagesmittel", "dataset": DATASET, "fields": ["temperature"],
      "aggregate": "avg", "bucket": "day"}, "series", {"aggregate": "avg", "bucket": "day"}),
    ({"type": "table", "title": "Tageshöchstwerte", "dataset": DATASET, "fields": ["temperature"],
      "aggregate": "max", "bucket": "day"}, "series", {"aggregate": "max", "bucket": "day"}),
    ({"type": "map", "title": "Messstellen", "dataset": DATASET, "fields": ["temperature"]},
     "observations", {}),
    ({"type": "timeseries", "title": "95. Perzentil pro Tag", "dataset": DATASET, "fields": ["temperature"],
      "aggregate": "p95", "bucket": "day"}, "series", {"aggregate": "p95", "bucket": "day"}),
]
CHARTS = sum(1 for spec, _kind, _params in PANELS if spec["type"] in ("timeseries", "bar"))


# The server process ---------------------------------------------------------------------------

def prepare(client) -> None:
    """The table (by the operator's plan and provisioner) with a year of hourly readings of 100 sensors."""
    from urbanstack.operator.models import CityTool, Municipality
    from urbanstack.operator.plan import plan
    from urbanstack.operator.provisioners.base import ensure
    from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner

    desired = plan(Municipality.model_validate(TOWN_MANIFEST), [CityTool.model_validate(TOOL_MANIFEST)]).warehouse
    ensure(WarehouseProvisioner(lambda: client, embedded=True), desired, {})
    table = f"`{desired.database}`.`{desired.tables[0].name}`"
    rollup = f"`{desired.database}`.`{desired.tables[0].rollup.name}`"
    if (client.command(f"SELECT count() FROM {table}") == ROWS
            and client.command(f"SELECT sum(rows) FROM {rollup}") == ROWS):
        return
    client.command(f"TRUNCATE TABLE {table}")
    client.command(f"TRUNCATE TABLE {rollup}")
    began = time.perf_counter()
    # Sensors on a 10 × 10 grid around the town; temperature: season + day + a sensor's offset.
    client.command(f"""
        INSERT INTO {table} (event_id, source, sensor_id, observed_at, lon, lat, temperature)
        SELECT toString(number), 'bench', concat('s', leftPad(toString(number % {SENSORS}), 3, '0')),
               toDateTime64('2025-01-01 00:00:00', 3, 'UTC') + toIntervalHour(intDiv(number, {SENSORS})),
               8.30 + (number % 10) * 0.02, 51.85 + intDiv(number % {SENSORS}, 10) * 0.012,
               round(10 - 9 * cos(2 * pi() * intDiv(number, {SENSORS}) / {YEAR_HOURS})
                     + 4 * sin(2 * pi() * (intDiv(number, {SENSORS}) % 24 - 9) / 24)
                     + (number % 7) * 0.3 + ((number * 7919) % 100) / 100, 2)
        FROM numbers({ROWS})""", settings={"insert_deduplicate": 0})
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    print(f"inserted {ROWS:,} rows in {time.perf_counter() - began:.1f} s", flush=True)


def make_verifier():
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from urbanstack.runtime.api import TokenVerifier

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "use": "sig"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [jwk]}))
    now = int(time.time())
    token = jwt.encode({"iss": f"{KEYCLOAK}/realms/urbanstack", "sub": str(uuid.uuid4()), "aud": f"{SLUG}-api",
                        "organization": [SLUG], "typ": "Bearer", "azp": f"{SLUG}-gov-hub",
                        "resource_access": {f"{SLUG}-api": {"roles": ["gov-viewer"]}}, "iat": now,
                        "exp": now + 4 * 3600}, key, algorithm="RS256", headers={"kid": "k1"})
    return TokenVerifier(KEYCLOAK, "{tenant}-api", http_client=httpx.Client(transport=transport)), token


class ManifestKube:
    """Stands in for the Kubernetes API the data page reads the live Municipality from."""

    def municipality(self, slug: str):
        return json.loads(json.dumps(TOWN_MANIFEST)) if slug == SLUG else None


def server_main(state: str, port: int, ready, profile: str) -> None:
    log = open(Path(state) / "server.log", "a", encoding="utf-8")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    from urbanstack import serve, warehouse as wh
    from urbanstack.operator.models import CityTool, Municipality
    from urbanstack.runtime.api import Catalogue, create_app
    from urbanstack.runtime.store import open_store
    from urbanstack.settings import Settings

    client = wh.connect(f"chdb://{Path(state) / 'warehouse'}")
    prepare(client)
    verifier, token = make_verifier()
    settings = dataclasses.replace(Settings.from_env(), api_anonymous_queries_per_hour=0, keycloak_server_url=KEYCLOAK)
    catalogue = Catalogue([Municipality.model_validate(TOWN_MANIFEST)], [CityTool.model_validate(TOOL_MANIFEST)])
    api = create_app(settings, catalogue, client, keycloak_url=KEYCLOAK, audience="{tenant}-api", verifier=verifier)
    store = open_store(f"sqlite:///{Path(state) / 'metadata.sqlite3'}")
    web = serve.web_app(settings, catalogue, api, store, extras={"kube": ManifestKube()})
    app = serve.PathDispatch(api, web)
    if profile:
        profile_panels(web.state.hub, profile, Path(state))
        profile_pages(app, Path(state))
    ready.put(token)
    serve.http_server(app, settings, "127.0.0.1", port).run()


def profile_panels(hub, dashboard_id: str, state: Path) -> None:
    """pyinstrument profiles of the six panels' query and render (what one view of the dashboard does),
    one year and seven days, on this thread before the server starts."""
    from pyinstrument import Profiler

    from urbanstack.runtime.api.auth import ROLE_PERMISSIONS, Principal
    from urbanstack.runtime.hubs.gov import dashboards

    principal = Principal(tenant=SLUG, roles=frozenset(ROLES), subject="bench-profile",
                          permissions=frozenset(p for role in ROLES for p in ROLE_PERMISSIONS.get(role, ())))
    dashboard = hub.store.dashboards.get(dashboard_id)
    action = hub.url(SLUG, f"dashboards/{dashboard_id}")
    for label, dates in (("year", YEAR), ("week", WEEK)):
        view = dashboards.view_state(dates, "1y")
        for attempt in range(3):  # the last of three
            profiler = Profiler(interval=0.0005)
            profiler.start()
            panels, _problems = dashboards._panels(hub, principal, dashboard, view, "de", action)
            hub.renderer.render("gov/_dashboard_panels.html", "de", panels=panels, view=view, action=action,
                                refresh=0, request=None, session=None, csrf_token="")
            profiler.stop()
        (state / f"profile-panels-{label}.txt").write_text(profiler.output_text(unicode=True, show_all=False))


def profile_pages(app, state: Path, requests: int = 300) -> None:
    """pyinstrument profiles of the start page, the dashboard list and the data page: ``requests``
    requests each through the whole ASGI app in this process (httpx's ASGI transport), one session."""
    from pyinstrument import Profiler

    from urbanstack.runtime.store import open_store
    from urbanstack.runtime.store.models import utcnow
    from urbanstack.runtime.web import security

    store = open_store(f"sqlite:///{state / 'metadata.sqlite3'}")
    token, _row = store.sessions.create(SLUG, subject="bench-profile", username="bench-profile",
                                        display_name="Profil", email="profile@benchtown.example.org", roles=ROLES,
                                        access_expires_at=utcnow() + timedelta(hours=4))
    store.close()

    async def run(path: str) -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     cookies={security.COOKIE: token}) as client:
            for _ in range(20):  # warm-up
                assert (await client.get(path)).status_code == 200, path
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            began = time.perf_counter()
            profiler.start()
            for _ in range(requests):
                await client.get(path)
            profiler.stop()
            elapsed = (time.perf_counter() - began) / requests * 1000
            name = path.strip("/").replace("/", "-")
            (state / f"profile-page-{name}.txt").write_text(
                f"{requests} requests, {elapsed:.2f} ms each (profiler on)\n"
                + profiler.output_text(unicode=True, show_all=False))
            return elapsed

    for path in (f"/gov/{SLUG}/", f"/gov/{SLUG}/dashboards", f"/gov/{SLUG}/data"):
        asyncio.run(run(path))


# Measuring -----------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def stats(values: list[float]) -> str:
    return f"p50 {statistics.median(values):7.1f} ms  p95 {pct(values, 0.95):7.1f} ms"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**20:.1f} GiB RAM, Python {platform.python_version()}, "
            f"{platform.platform()}")


def timed_get(client: httpx.Client, url: str, **kwargs) -> tuple[float, httpx.Response]:
    began = time.perf_counter()
    response = client.get(url, **kwargs)
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return elapsed, response


def api_calls(client: httpx.Client, kind: str, params: dict, headers: dict) -> tuple[float, int]:
    """The REST call(s) for one panel's data; (ms, rows)."""
    if kind == "series":
        elapsed, response = timed_get(client, f"/api/v1/datasets/{DATASET}/series", headers=headers, params={
            "field": "temperature", **params, **API_YEAR, "limit": 10_000})
        return elapsed, len(response.json()["rows"])
    # The map: observations of the last week of the range, page by page (as the panel reads them).
    total, rows, cursor = 0.0, 0, None
    while True:
        query = {"field": "temperature", "from": "2025-12-24T23:00:00Z", "to": API_YEAR["to"], "limit": 10_000}
        if cursor:
            query["cursor"] = cursor
        elapsed, response = timed_get(client, f"/api/v1/datasets/{DATASET}/observations", headers=headers,
                                      params=query)
        body = response.json()
        total, rows, cursor = total + elapsed, rows + len(body["rows"]), body.get("next_cursor")
        if not cursor:
            return total, rows


def server_time(base: str, cookie: dict, token: str, single: list[str], whole: str, runs: int) -> dict:
    print(f"\n1. Server time per panel ({runs} runs; Gov Hub: the panel as a one-panel dashboard's "
          f"…/panels fragment; API: the same data over REST with a token)  load {loadavg()}")
    headers = {"Authorization": f"Bearer {token}"}
    hub: dict[int, list[float]] = {i: [] for i in range(len(PANELS))}
    api: dict[int, list[float]] = {i: [] for i in range(len(PANELS))}
    sizes, rows = {}, {}
    whole_fragment, whole_page, whole_api = [], [], []
    view = urlencode(YEAR)
    with httpx.Client(base_url=base, cookies=cookie, timeout=120) as client:
        for run in range(runs + 2):  # two warm-up runs
            for i, (_spec, kind, params) in enumerate(PANELS):
                elapsed, response = timed_get(client, f"/gov/{SLUG}/dashboards/{single[i]}/panels?{view}")
                sizes[i] = len(response.content)
                api_ms, rows[i] = api_calls(client, kind, params, headers)
                if run >= 2:
                    hub[i].append(elapsed)
                    api[i].append(api_ms)
            fragment, _ = timed_get(client, f"/gov/{SLUG}/dashboards/{whole}/panels?{view}")
            page, response = timed_get(client, f"/gov/{SLUG}/dashboards/{whole}?{view}")
            sizes["page"] = len(response.content)
            total = sum(api_calls(client, kind, params, headers)[0] for _spec, kind, params in PANELS)
            if run >= 2:
                whole_fragment.append(fragment)
                whole_page.append(page)
                whole_api.append(total)
    result = {"panels": []}
    print(f"   {'panel':32} {'rows':>6} {'HTML':>8}   {'Gov Hub fragment':34} {'REST API':32}")
    for i, (spec, kind, params) in enumerate(PANELS):
        label = f"{i + 1} {spec['type']} {spec.get('aggregate', '')}/{spec.get('bucket', '')}"
        if kind == "observations":
            label = f"{i + 1} map (latest positions, 7 days)"
        print(f"   {label:32} {rows[i]:>6} {sizes[i] / 1024:>6.0f}KB   {stats(hub[i]):34} {stats(api[i])}")
        result["panels"].append({"panel": label, "rows": rows[i], "html_bytes": sizes[i],
                                 "hub_p50": statistics.median(hub[i]), "hub_p95": pct(hub[i], .95),
                                 "api_p50": statistics.median(api[i]), "api_p95": pct(api[i], .95)})
    print(f"   {'six panels: …/panels fragment':42}   {stats(whole_fragment):34} {stats(whole_api)} (6 calls in a row)")
    print(f"   {'six panels: the whole page':32} {'':>6} {sizes['page'] / 1024:>6.0f}KB   {stats(whole_page)}")
    result.update(fragment_p50=statistics.median(whole_fragment), fragment_p95=pct(whole_fragment, .95),
                  page_p50=statistics.median(whole_page), page_p95=pct(whole_page, .95), page_bytes=sizes["page"],
                  api6_p50=statistics.median(whole_api), api6_p95=pct(whole_api, .95))
    return result


OBSERVER = """(() => {
  const marks = {};
  const check = () => {
    const now = performance.now();
    const charts = document.querySelectorAll('figure.chart');
    const drawn = document.querySelectorAll('figure.chart.chart-drawn');
    if (marks.panels === undefined && charts.length === %d && drawn.length === charts.length
        && document.querySelector('figure.map svg.map-svg')) { marks.panels = now; window.__bench = marks; }
    if (marks.map === undefined && document.querySelector('figure.map.map-drawn')) {
      marks.map = now; window.__benchMap = now; observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
})();""" % CHARTS


def _wait_for(page, expression: str, what: str, errors: list):
    deadline = time.monotonic() + 60
    while True:  # wait_for_function would evaluate a string, which the page's CSP refuses
        value = page.evaluate(expression)
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within 60 s: " + page.evaluate(
                "JSON.stringify([document.querySelectorAll('figure.chart').length, "
                "document.querySelectorAll('figure.chart.chart-drawn').length, "
                "!!document.querySelector('figure.map svg'), "
                "!!document.querySelector('figure.map.map-drawn'), document.title])") + f" {errors}")
        page.wait_for_timeout(20)


def _shipped(requests: list, static: Path, kinds=("script",)) -> list[dict]:
    """Scripts (by resource type or name) of a request log: bytes on the wire (as the server sent them,
    Content-Encoding), raw, gzip -9 and brotli as built."""
    files = []
    for request in requests:
        path = urlsplit(request.url).path
        if not (request.resource_type in kinds or path.endswith(".js")) or not path.startswith("/static/"):
            continue
        response = request.response()
        raw = static / path.removeprefix("/static/")
        encoding = response.headers.get("content-encoding") if response else None
        # The body as sent: the pre-compressed file the server chose (Chromium reports no body size for
        # requests of a module worker, so it is not read from the request log).
        sent = Path(f"{raw}{ {'br': '.br', 'gzip': '.gz'}.get(encoding, '') }")
        files.append({"path": path, "encoding": encoding, "wire": sent.stat().st_size, "raw": raw.stat().st_size,
                      "gzip": Path(f"{raw}.gz").stat().st_size if Path(f"{raw}.gz").exists() else None,
                      "br": Path(f"{raw}.br").stat().st_size if Path(f"{raw}.br").exists() else None})
    return files


def browser_time(base: str, token: str, whole: str, loads: int, static: Path) -> dict:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
    from conftest import CHROMIUM, CHROMIUM_ARGS  # the browser tests' Chromium and flags

    from urbanstack.runtime.web import security

    print(f"\n2. Headless Chromium, {loads} loads of the six-panel dashboard (one year), each in a fresh "
          f"context  load {loadavg()}")
    url = f"{base}/gov/{SLUG}/dashboards/{whole}?{urlencode(YEAR)}"
    panels, maps, dom, response_end, errors = [], [], [], [], []
    page_scripts, map_scripts, html_wire = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for load in range(loads + 1):  # one warm-up load (Chromium's own first start)
                context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin",
                                              viewport={"width": 1280, "height": 900})
                context.add_cookies([{"name": security.COOKIE, "value": token, "url": base}])
                page = context.new_page()
                page.add_init_script(OBSERVER)
                seen = []
                page.on("requestfinished", lambda request: seen.append(request))
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url, wait_until="commit")
                marks = _wait_for(page, "window.__bench || null", "drawing every panel", errors)
                nav = json.loads(page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))
                page.wait_for_timeout(300)  # late requests into the log
                loaded = list(seen)
                # The interactive map, as a user opens it: the button, then MapLibre's first 'load'.
                clicked = page.evaluate("performance.now()")
                page.locator("figure.map button.map-open").click()
                map_done = _wait_for(page, "window.__benchMap || null", "the interactive map", errors)
                page.wait_for_timeout(300)  # the worker's basemap into the log
                if load:
                    panels.append(marks["panels"])
                    maps.append(map_done - clicked)
                    dom.append(nav["domContentLoadedEventEnd"])
                    response_end.append(nav["responseEnd"])
                    html_wire.append(next(r.sizes()["responseBodySize"] for r in loaded
                                          if r.resource_type == "document"))
                    page_scripts = _shipped(loaded, static)
                    map_scripts = _shipped([r for r in seen if r not in loaded], static)
                context.close()
        finally:
            browser.close()
    print(f"   HTML received (responseEnd)       {stats(response_end)}   ({statistics.median(html_wire) / 1024:.0f} KB on the wire)")
    print(f"   DOMContentLoaded                  {stats(dom)}")
    print(f"   every chart drawn + map (SVG)     {stats(panels)}   (target < 1500 ms)")
    print(f"   interactive map: click → MapLibre 'load'  {stats(maps)}")
    if errors:
        print(f"   page errors: {errors[:3]}")
    print("\n3. JavaScript shipped (request log; bytes on the wire as the server sent them)")
    totals = {}
    for label, files in (("page as loaded", page_scripts), ("after 'Interaktive Karte öffnen'", map_scripts)):
        print(f"   {label}:")
        for f in files:
            print(f"     {f['path']:45} raw {f['raw'] / 1024:6.0f} KB  wire {f['wire'] / 1024:6.0f} KB "
                  f"({f['encoding'] or 'identity'})  gzip -9 {(f['gzip'] or 0) / 1024:5.0f} KB  "
                  f"brotli {(f['br'] or 0) / 1024:5.0f} KB")
        totals[label] = {k: sum(f[k] or 0 for f in files) for k in ("raw", "wire", "gzip", "br")}
        t = totals[label]
        print(f"     {'total':45} raw {t['raw'] / 1024:6.0f} KB  wire {t['wire'] / 1024:6.0f} KB  "
              f"gzip -9 {t['gzip'] / 1024:5.0f} KB  brotli {t['br'] / 1024:5.0f} KB   (target < 250 KB)")
    return {"panels_p50": statistics.median(panels), "panels_p95": pct(panels, .95),
            "map_click_p50": statistics.median(maps), "map_click_p95": pct(maps, .95),
            "dom_p50": statistics.median(dom), "dom_p95": pct(dom, .95),
            "response_end_p50": statistics.median(response_end), "response_end_p95": pct(response_end, .95),
            "html_wire": statistics.median(html_wire), "page_scripts": page_scripts, "map_scripts": map_scripts,
            "js_totals": totals, "errors": errors[:3]}


async def _hammer(base: str, url: str, cookies: list[str], headers: dict, seconds: float
                  ) -> tuple[list, int, float]:
    """Latencies of requests started after the first second, failures, completed requests per second."""
    from urbanstack.runtime.web import security

    latencies: list[float] = []
    failures = done = 0
    deadline = time.perf_counter() + seconds
    warm = time.perf_counter() + 1.0  # the first second is not counted

    async def user(token: str | None):
        nonlocal failures, done
        async with httpx.AsyncClient(base_url=base, timeout=120, headers=headers,
                                     cookies={security.COOKIE: token} if token else None) as client:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                response = await client.get(url)
                await response.aread()
                done += 1
                if began >= warm:
                    latencies.append((time.perf_counter() - began) * 1000)
                    if response.status_code != 200:
                        failures += 1

    began = time.perf_counter()
    await asyncio.gather(*(user(token) for token in cookies))
    return latencies, failures, done / (time.perf_counter() - began)


def load_main(base: str, phases: list, seconds: float, out) -> None:
    results = []
    for label, url, cookies, headers in phases:
        before = loadavg()
        latencies, failures, per_second = asyncio.run(_hammer(base, url, cookies, headers, seconds))
        results.append({"label": label, "url": url, "p50": statistics.median(latencies),
                        "p95": pct(latencies, .95), "max": max(latencies), "count": len(latencies),
                        "per_second": per_second, "failures": failures,
                        "load_before": before, "load_after": loadavg()})
    out.put(results)


def concurrency(base: str, tokens: list[str], api_token: str, dashboards: dict, seconds: float) -> list:
    users = len(tokens)
    print(f"\n4. {users} concurrent users, no think time, {seconds:.0f} s per page (load generator in its "
          f"own process)  load {loadavg()}")
    none = [None] * users
    bearer = {"Authorization": f"Bearer {api_token}"}
    phases = [
        ("Gov Hub start page", f"/gov/{SLUG}/", tokens, {}),
        ("Gov Hub dashboard list", f"/gov/{SLUG}/dashboards", tokens, {}),
        ("Gov Hub dashboard, 6 panels, one year", f"/gov/{SLUG}/dashboards/{dashboards['whole']}?{urlencode(YEAR)}",
         tokens, {}),
        ("Gov Hub dashboard, 6 panels, 7 days", f"/gov/{SLUG}/dashboards/{dashboards['whole']}?{urlencode(WEEK)}",
         tokens, {}),
        ("Gov Hub data page", f"/gov/{SLUG}/data", tokens, {}),
        ("API /api/v1/datasets (token)", "/api/v1/datasets", none, bearer),
        ("API daily series, one year (anonymous)", f"/api/v1/datasets/{DATASET}/series?" + urlencode(
            {"field": "temperature", "aggregate": "avg", "bucket": "day", **API_YEAR}), none, {}),
    ]
    out = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=load_main, args=(base, phases, seconds, out))
    process.start()
    results = out.get()
    process.join()
    for r in results:
        print(f"   {r['label']:42} p50 {r['p50']:7.0f} ms  p95 {r['p95']:7.0f} ms  max {r['max']:7.0f} ms  "
              f"{r['per_second']:6.1f}/s  {r['failures']} failed  load {r['load_before']}→{r['load_after']}")
    return results


# Setup ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_store(state: Path, users: int):
    from urbanstack.runtime.store import Actor, open_store
    from urbanstack.runtime.store.models import utcnow

    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{state / 'metadata.sqlite3'}{suffix}").unlink(missing_ok=True)
    store = open_store(f"sqlite:///{state / 'metadata.sqlite3'}")
    store.upgrade()
    owner = Actor("bench-owner", "Bench Owner")
    single = [store.dashboards.create(SLUG, owner, f"Panel {i + 1}", {"range": "1y", "panels": [spec]}).id
              for i, (spec, _kind, _params) in enumerate(PANELS)]
    whole = store.dashboards.create(SLUG, owner, "Klima Benchtown",
                                    {"range": "1y", "panels": [spec for spec, _k, _p in PANELS]}).id
    tokens = []
    for n in range(users + 1):
        subject = f"bench-user-{n}"
        token, _row = store.sessions.create(SLUG, subject=subject, username=subject, display_name=f"Nutzer {n}",
                                            email=f"{subject}@benchtown.example.org", roles=ROLES,
                                            access_expires_at=utcnow() + timedelta(hours=4))
        tokens.append(token)
    store.close()
    return single, whole, tokens


def main() -> None:
    from urbanstack.runtime.web.rendering import STATIC_DIR
    from urbanstack.runtime.web import security
    from urbanstack.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--skip", default="", help="comma-separated: browser, load")
    parser.add_argument("--profile", action="store_true", help="profile the panels' query and render in the server process first (pyinstrument)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--path", default=str(Settings.from_env().state_dir / "bench-gov-hub"))
    args = parser.parse_args()
    state = Path(args.path)
    state.mkdir(parents=True, exist_ok=True)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    print(f"machine: {machine()}")
    print(f"load average at start: {loadavg()}")
    single, whole, tokens = setup_store(state, args.users)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    began = time.perf_counter()
    server = context.Process(target=server_main, args=(str(state), port, ready, whole if args.profile else ""),
                             daemon=True)
    server.start()
    try:
        api_token = ready.get(timeout=1800)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not server.is_alive():
                raise SystemExit(f"the server did not start; see {state / 'server.log'}")
            time.sleep(0.2)
        print(f"server ready after {time.perf_counter() - began:.1f} s (pid {server.pid}; log {state / 'server.log'})")
        cookie = {security.COOKIE: tokens[0]}
        results: dict = {"machine": machine(), "rows": ROWS}
        if args.profile:
            print(f"profiles of the panels' query and render written to {state}/profile-panels-*.txt")
        results["server"] = server_time(base, cookie, api_token, single, whole, args.runs)
        if "browser" not in skip:
            results["browser"] = browser_time(base, tokens[0], whole, args.loads, STATIC_DIR)
        if "load" not in skip:
            results["load"] = concurrency(base, tokens[1:], api_token, {"whole": whole}, args.seconds)
        print(f"\nrows {ROWS:,}; load average at the end: {loadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
