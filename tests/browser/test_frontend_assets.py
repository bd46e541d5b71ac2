"""The built front end in a real browser under the pages' CSP: charts and the map draw from
the markup contract (docs/web.md "Front end"), nothing leaves the own origin, axe finds no
WCAG violation, the page reflows at 320 px, the table is reachable by keyboard, and the
auto-refresh swaps new content in (charts redraw) until the user pauses it."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from urbanstack import webassets as assets

CSP = ("default-src 'self'; img-src 'self' data: blob:; worker-src 'self'; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SCREENSHOT = "/tmp/frontend-demo.png"


def _number(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


def line_chart(chart_id: str, title: str, hours: int, offset: float = 0.0) -> str:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = []
    for h in range(hours):
        t = start + timedelta(hours=h)
        temperature = 2.0 + offset + 4 * ((h % 24) / 12 - 1) ** 2 * -1 + h * 0.05
        humidity_station = temperature - 1.5 + (h % 5) * 0.3
        local = t + timedelta(hours=1)
        rows.append(f'<tr><td data-value="{t:%Y-%m-%dT%H:%M:%SZ}">{local:%d.%m.%Y %H:%M}</td>'
                    f'<td data-value="{temperature:.1f}">{_number(temperature)}</td>'
                    f'<td data-value="{humidity_station:.1f}">{_number(humidity_station)}</td></tr>')
    return f"""
    <figure class="chart" data-chart="line" data-unit="°C" id="{chart_id}" aria-labelledby="{chart_id}-title">
      <figcaption id="{chart_id}-title">{title}</figcaption>
      <p class="chart-summary">Zwischen 01.01.2026 und 02.01.2026 lag die Lufttemperatur am Rathaus zwischen −2,0 und 3,2 °C,
        am Bahnhof meist 1 bis 2 Grad darunter.</p>
      <div class="chart-canvas" aria-hidden="true"></div>
      <details class="chart-table"><summary>Tabelle anzeigen</summary>
        <div class="table-scroll"><table>
          <caption class="visually-hidden">{title}</caption>
          <thead><tr><th scope="col">Zeit</th><th scope="col">Rathaus (°C)</th><th scope="col">Bahnhof (°C)</th></tr></thead>
          <tbody>{''.join(rows)}</tbody>
        </table></div>
      </details>
      <a class="chart-csv" href="/export/{chart_id}.csv">CSV herunterladen</a>
    </figure>"""


def bar_chart() -> str:
    districts = [("Mitte", 1240, 980), ("Nord", 860, 910), ("Süd", 1010, 720), ("Ost", 640, 700), ("West", 930, 1020)]
    rows = "".join(f'<tr><td data-value="{name}">{name}</td><td data-value="{a}">{a:,}</td><td data-value="{b}">{b:,}</td></tr>'
                   .replace(",", ".") for name, a, b in districts)
    return f"""
    <figure class="chart" data-chart="bar" data-unit="Personen" id="passanten" aria-labelledby="passanten-title">
      <figcaption id="passanten-title">Passantenfrequenz nach Stadtteil</figcaption>
      <p class="chart-summary">Am Samstag zählten die Sensoren in Mitte die meisten Passanten (1.240), am Sonntag in West (1.020).</p>
      <div class="chart-canvas" aria-hidden="true"></div>
      <details class="chart-table"><summary>Tabelle anzeigen</summary>
        <table>
          <caption class="visually-hidden">Passantenfrequenz nach Stadtteil</caption>
          <thead><tr><th scope="col">Stadtteil</th><th scope="col">Samstag (Personen)</th><th scope="col">Sonntag (Personen)</th></tr></thead>
          <tbody>{rows}</tbody>
        </table>
      </details>
      <a class="chart-csv" href="/export/passanten.csv">CSV herunterladen</a>
    </figure>"""


POINTS = [{"id": "s1", "name": "Rathaus", "lon": 8.3834, "lat": 51.9066},
          {"id": "s2", "name": "Bahnhof", "lon": 8.3790, "lat": 51.9010},
          {"id": "s3", "name": "Stadtpark", "lon": 8.3955, "lat": 51.9121},
          {"id": "s4", "name": "Klinikum", "lon": 8.3700, "lat": 51.9120}]


def map_figure() -> str:
    rows = "".join(f"<tr><td>{p['name']}</td><td>{_number(p['lat']).replace(',', ',')}</td><td>{p['lon']}</td></tr>"
                   for p in POINTS)
    points = json.dumps(POINTS).replace("'", "&#39;")
    return f"""
    <figure class="map" id="messstellen" data-points='{points}'>
      <figcaption>Messstellen in Gütersloh</figcaption>
      <div class="map-canvas"></div>
      <details class="map-table"><summary>Tabelle der Standorte anzeigen</summary>
        <table><thead><tr><th scope="col">Messstelle</th><th scope="col">Breite</th><th scope="col">Länge</th></tr></thead>
        <tbody>{rows}</tbody></table>
      </details>
    </figure>"""


def refresh_region(counter: int) -> str:
    return f"""
    <div id="live" data-refresh-seconds="5" hx-get="/fragment" hx-trigger="refresh" hx-swap="outerHTML">
      <p class="muted" id="live-stand">Stand: Abruf {counter}</p>
      {line_chart(f"live-chart-{counter}", "Lufttemperatur, letzte 24 Stunden", 24, offset=counter)}
    </div>"""


def demo_page(manifest: dict) -> str:
    dist = {name: f"/static/dist/{file}" for name, file in manifest["files"].items()}
    return f"""<!doctype html>
<html lang="de">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Testseite – Urban Gov Hub</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{dist['hub.css']}">
  <script src="{dist['hub.js']}" defer></script>
  <script src="{dist['charts.js']}" defer></script>
  <script src="{dist['map.js']}" defer></script>
</head>
<body>
  <a class="skip-link" href="#main">Zum Inhalt springen</a>
  <header class="site-header"><div class="site-header-inner">
    <p class="site-title"><a href="/">Urban Gov Hub · Gütersloh</a></p>
    <span>Erika Mustermann</span>
  </div></header>
  <nav class="site-nav" aria-label="Hauptnavigation"><ul>
    <li><a href="/" aria-current="page">Übersicht</a></li><li><a href="/dashboards">Dashboards</a></li>
    <li><a href="/daten">Daten</a></li><li><a href="/einstellungen">Einstellungen</a></li>
  </ul></nav>
  <main id="main" tabindex="-1">
    <h1>Umweltdaten</h1>
    <p class="notice">Die Werte werden alle 5 Sekunden aktualisiert.</p>
    <p><button type="button" class="refresh-toggle" aria-pressed="false" aria-controls="live" hidden>Automatische Aktualisierung anhalten</button></p>
    {refresh_region(0)}
    <div class="grid">
      {bar_chart()}
      {map_figure()}
    </div>
  </main>
  <footer class="site-footer"><div class="site-footer-inner"><a href="/impressum">Impressum</a> · <a href="/barrierefreiheit">Barrierefreiheit</a></div></footer>
</body>
</html>"""


@pytest.fixture(scope="module")
def manifest():
    assets.build()
    return assets.manifest()


@pytest.fixture
def demo(serve_app, manifest):
    fragments = []

    app = FastAPI()
    app.mount("/static", StaticFiles(directory=assets.WEB_DIR / "static"))

    @app.get("/")
    async def index():
        return HTMLResponse(demo_page(manifest))

    @app.get("/fragment")
    async def fragment():
        fragments.append(time.monotonic())
        return HTMLResponse(refresh_region(len(fragments)))

    @app.get("/export/{name}")
    async def csv(name: str):
        return PlainTextResponse("Zeit;Wert\n", media_type="text/csv")

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    url = serve_app(app)
    return url, fragments


def open_demo(page, url):
    page.goto(url + "/")
    page.wait_for_selector("figure.chart.chart-drawn .chart-canvas canvas")
    page.wait_for_selector("figure.map.map-drawn .map-canvas canvas", timeout=20_000)


def test_charts_and_map_draw_under_csp_from_the_own_origin_only(page, demo, assert_accessible, assert_own_origin):
    url, _ = demo
    open_demo(page, url)
    assert page.locator("figure.chart .chart-canvas canvas").count() >= 2
    assert page.locator("figure.chart .chart-legend li").count() == 4
    canvas = page.locator("figure.map .maplibregl-canvas")
    assert canvas.get_attribute("aria-label").startswith("Messstellen in Gütersloh")
    assert page.locator(".map-label", has_text="Rathaus").count() == 1
    page.wait_for_timeout(500)  # let the map's worker fetch the basemap
    assert any("/static/dist/basemap." in u for u in page.requests_seen)
    assert any("/static/dist/map-worker." in u for u in page.requests_seen)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert page.console_errors == []
    assert_own_origin(page, url)
    assert_accessible(page, "demo page with charts and map")


def test_page_reflows_at_320_px(page, demo):
    url, _ = demo
    page.set_viewport_size({"width": 320, "height": 800})
    open_demo(page, url)
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    width = page.evaluate("document.querySelector('#passanten .chart-canvas canvas').getBoundingClientRect().width")
    assert 200 <= width <= 300
    page.screenshot(path="/tmp/frontend-demo-320.png", full_page=True)


def test_keyboard_reaches_the_data_table_and_the_map(page, demo):
    url, _ = demo
    open_demo(page, url)
    focused = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim().slice(0, 40)"))
        if page.evaluate("document.activeElement.matches('#passanten summary')"):
            break
    else:
        pytest.fail(f"Tab never reached the bar chart's 'Tabelle anzeigen'; focus went: {focused}")
    page.keyboard.press("Enter")
    assert page.locator("#passanten details.chart-table").get_attribute("open") is not None
    assert page.locator("#passanten table td", has_text="Mitte").is_visible()

    map_canvas = page.locator("figure.map .maplibregl-canvas")
    map_canvas.focus()
    before = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert before != "none", "the focused map shows no outline"
    transform = page.locator(".map-label", has_text="Rathaus").evaluate("e => e.closest('.maplibregl-marker').style.transform")
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(600)
    moved = page.locator(".map-label", has_text="Rathaus").evaluate("e => e.closest('.maplibregl-marker').style.transform")
    assert moved != transform, "the arrow key did not pan the map"


def test_auto_refresh_swaps_in_new_charts_until_paused(page, demo, assert_accessible):
    url, fragments = demo
    open_demo(page, url)
    toggle = page.locator("button.refresh-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "false"
    page.wait_for_selector("#live-stand:has-text('Abruf 1')", timeout=9_000)
    page.wait_for_selector("#live-chart-1.chart-drawn .chart-canvas canvas")  # redrawn after the swap

    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-pressed") == "true"
    paused_at = len(fragments)
    page.wait_for_timeout(6_000)
    assert len(fragments) == paused_at, "the region refreshed while paused"
    assert page.locator("#live-stand").inner_text() == f"Stand: Abruf {paused_at}"

    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    page.wait_for_selector(f"#live-stand:has-text('Abruf {paused_at + 1}')", timeout=9_000)
    assert page.console_errors == []
    assert_accessible(page, "demo page after two refreshes")
