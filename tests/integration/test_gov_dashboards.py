"""Gov Hub dashboards against the real metadata store (SQLite and PostgreSQL), the real chDB
warehouse with known readings and the real query engine: build, save, reload; the numbers
of a panel equal the REST API's; concurrent saves; who may see what across municipalities;
publishing; CSRF; sanitised text; the generated summary.

Sessions are made directly in the store (tests/hub_sessions.py); the Keycloak sign-in is
tested in test_gov_signin.py."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pytest
from fastapi.testclient import TestClient
from hub_sessions import signed_in_cookie
from test_api import PEDESTRIANS, PEGEL, World, _municipality, _tool

from urbanstack.runtime.api import create_app
from urbanstack.runtime.hubs.gov import create_gov_hub
from urbanstack.runtime.hubs.gov.app import TEMPLATES
from urbanstack.runtime.web import charts
from urbanstack.runtime.web.oidc import Keycloak
from urbanstack.runtime.web.rendering import Assets, Renderer

pytestmark = pytest.mark.platform

RANGE = {"from": "2026-03-02", "to": "2026-03-04"}  # Berlin dates: 2026-03-01T23:00Z .. 2026-03-04T23:00Z
API_RANGE = {"from": "2026-03-01T23:00:00Z", "to": "2026-03-04T23:00:00Z", "timezone": "Europe/Berlin"}


@pytest.fixture(scope="module")
def world(warehouse):
    return World(warehouse)


@pytest.fixture(scope="module")
def api(world, issuer, settings, warehouse):
    app = create_app(settings, world.catalogue, warehouse, keycloak_url=issuer.url, audience="{tenant}-api")
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static")
    (folder / "dist").mkdir()
    (folder / "dist" / "manifest.json").write_text(json.dumps(
        {"files": {name: name for name in ("hub.js", "hub.css", "charts.js", "map.js")}}))
    return folder


@pytest.fixture
def hub(world, api, store, settings, issuer, static_dir):
    engine = api.app.state.engine
    app = create_gov_hub(settings, world.catalogue, engine, store, Keycloak(issuer.url, api.app.state.verifier))
    app.state.hub.renderer = Renderer([TEMPLATES], Assets(static_dir))
    with TestClient(app, raise_server_exceptions=True, follow_redirects=False) as client:
        client.store = store
        yield client


class Staff:
    def __init__(self, client, tenant, roles, subject, name):
        self.client, self.tenant = client, tenant
        roles = {"gov-admin": ("gov-admin", "gov-editor", "gov-viewer"), "gov-editor": ("gov-editor", "gov-viewer"),
                 "gov-viewer": ("gov-viewer",)}[roles]
        cookie, token, self.csrf = signed_in_cookie(client.store, tenant, roles, subject=subject, name=name)
        self.headers = {"Cookie": f"{cookie}={token}"}

    def url(self, path=""):
        return f"/gov/{self.tenant}/dashboards{path}"

    def get(self, path="", params=None):
        return self.client.get(self.url(path), params=params, headers=self.headers)

    def post(self, path="", data=None, csrf=True):
        data = dict(data or {})
        if csrf:
            data["csrf_token"] = self.csrf
        return self.client.post(self.url(path), data=data, headers=self.headers)

    def create(self, title="Innenstadt"):
        response = self.post("", {"title": title})
        assert response.status_code == 303, response.text[:500]
        return response.headers["location"].split("/dashboards/")[1].split("/")[0]

    def save(self, dashboard_id, version, panels, title="Innenstadt", **extra):
        return self.post(f"/{dashboard_id}/edit", {**form(panels), "title": title, "version": str(version),
                                                   "range": "7d", "refresh_seconds": "0", "action": "save",
                                                   **extra})


def form(panels):
    data = {"panel_count": str(len(panels))}
    for i, panel in enumerate(panels):
        for key, value in panel.items():
            data[f"p{i}_{key}"] = value
    return data


def ref(slug, tool, dataset):
    return f"{slug}/{tool}/{dataset}"


def _figure_rows(page: str, figure_id: str) -> list[list[str]]:
    """The data-value cells of each row of the figure's table."""
    start = page.index(f'id="{figure_id}"')
    block = page[start:page.index("</figure>", start)]
    return [re.findall(r'data-value="([^"]*)"', row) for row in re.findall(r"<tr>(.*?)</tr>", block, re.S)
            if "data-value" in row]


def _panel(page: str, number: int) -> str:
    start = page.index(f'id="panel-{number}-heading"')
    end = page.find('<section class="panel', start)
    return page[start:end if end > 0 else len(page)]


def editor_session(hub, staff):
    from urbanstack.runtime.store.models import WebSession
    from urbanstack.runtime.store.sessions import token_id
    from urbanstack.runtime.web.sessions import _copy

    token = staff.headers["Cookie"].split("=", 1)[1]
    with hub.store.session() as db:
        return _copy(token, db.get(WebSession, token_id(token)))


def bearer(issuer, tenant):
    return {"Authorization": f"Bearer {issuer.token(tenant=tenant, roles=('gov-viewer',))}"}


def test_build_save_reload_and_table_equals_the_rest_api(hub, world, api, issuer):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = editor.create()
    counts, weather = ref(world.gue, PEDESTRIANS, "pedestrian_counts"), ref(world.gue, PEDESTRIANS, "weather")
    panels = [
        {"type": "timeseries", "title": "Passanten × Temperatur", "dataset": counts, "fields": "pedestrians",
         "aggregate": "sum", "bucket": "hour", "right_dataset": weather, "right_fields": "temperature",
         "right_aggregate": "avg"},
        {"type": "table", "title": "Passanten pro Stunde", "dataset": counts, "fields": "pedestrians",
         "aggregate": "sum", "bucket": "hour"},
        {"type": "kpi", "title": "Passanten pro Tag", "dataset": counts, "fields": "pedestrians",
         "aggregate": "sum", "bucket": "day"},
        {"type": "map", "title": "Zähler", "dataset": counts, "fields": "pedestrians"},
    ]
    saved = editor.save(board, 1, panels)
    assert saved.status_code == 303, saved.text[:2000]
    # Reload: the builder shows the same panels, in order, at version 2.
    page = editor.get(f"/{board}/edit").text
    assert 'name="version" value="2"' in page and 'name="panel_count" value="4"' in page
    for i, panel in enumerate(panels):
        assert f'name="p{i}_title" value="{html.escape(panel["title"])}"' in page
    assert f'<option value="{weather}" selected>' in page

    view = editor.get(f"/{board}", params=RANGE)
    assert view.status_code == 200
    # The table panel's numbers equal GET /series for the same range.
    series = api.get(f"/api/v1/datasets/{counts}/series", headers=bearer(issuer, world.gue),
                     params={"field": "pedestrians", "aggregate": "sum", "bucket": "hour", **API_RANGE}).json()
    expected = [[point["bucket"], float(point["values"]["pedestrians_sum"])] for point in series["rows"]]
    assert len(expected) == 48
    assert [[t, float(v)] for t, v in _figure_rows(view.text, "panel-2")] == expected
    # The join panel's numbers equal GET /join.
    joined = api.get("/api/v1/join", headers=bearer(issuer, world.gue), params={
        "left": counts, "right": weather, "left_field": "pedestrians", "right_field": "temperature",
        "left_aggregate": "sum", "right_aggregate": "avg", "bucket": "hour", **API_RANGE}).json()
    assert len(joined["rows"]) == 24
    assert [[t, float(a), float(b)] for t, a, b in _figure_rows(view.text, "panel-1")] == [
        [p["bucket"], float(p["left"]["pedestrians_sum"]), float(p["right"]["temperature_avg"])]
        for p in joined["rows"]]
    # The CSV download holds the same numbers (German spreadsheet CSV).
    csv_link = re.search(r'class="chart-csv" href="([^"]+panels/2\.csv[^"]*)"', view.text).group(1)
    download = hub.get(html.unescape(csv_link), headers=editor.headers)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text.lstrip("\ufeff")), delimiter=";"))
    assert rows[0][0] == "time_utc" and [[r[0], charts.parse_csv_number(r[2])] for r in rows[1:]] == expected
    # The map shows both counters at their positions; the KPI its last day with a trend in words.
    assert '"id": "g-berliner"' in html.unescape(view.text) and "<td data-value=\"8.383\">8,383</td>" in view.text
    kpi = _panel(view.text, 3)
    assert "Stand " in kpi and re.search(r"(steigend|fallend|gleichbleibend)", kpi)
    audit = hub.store.audit.list(world.gue, action="dashboard.save")
    assert audit and audit[0].target == f"dashboard:{board}" and audit[0].actor_name == "Erika Mustermann"


def test_invalid_panels_are_refused_naming_panel_and_field(hub, world):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = editor.create()
    counts = ref(world.gue, PEDESTRIANS, "pedestrian_counts")
    response = editor.save(board, 1, [
        {"type": "bar", "title": "Balken", "dataset": counts, "fields": "pedestrians", "aggregate": "sum"},
        {"type": "timeseries", "title": "Kaputt", "dataset": counts, "fields": "nope", "aggregate": "avg"}])
    assert response.status_code == 422
    assert "panel 2 (Kaputt), field &#39;fields&#39;: " in response.text and "no field &#39;nope&#39;" in response.text
    assert 'value="Balken"' in response.text  # the input is kept
    assert hub.store.dashboards.get(board).version == 1


def test_concurrent_saves_conflict_keeps_input_and_every_version(hub, world):
    owner = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    admin = Staff(hub, world.gue, "gov-admin", "max", "Max Admin")
    board = owner.create("Pegel")
    levels = ref(world.gue, PEGEL, "water_levels")
    first = [{"type": "timeseries", "title": "Pegel Dalke", "dataset": levels, "fields": "water_level"}]
    second = [{"type": "bar", "title": "Pegel als Balken", "dataset": levels, "fields": "water_level",
               "aggregate": "max"}]
    assert admin.save(board, 1, first, title="Pegel").status_code == 303
    conflict = owner.save(board, 1, second, title="Pegel (Erika)")
    assert conflict.status_code == 409
    text = conflict.text
    assert "Max Admin hat am " in text and "die Version 2 gespeichert" in text
    assert 'value="Pegel als Balken"' in text and 'value="Pegel (Erika)"' in text  # their input, visible
    assert 'name="version" value="2"' in text and "Neueste Version laden" in text
    versions = owner.get(f"/{board}/versions").text
    assert "Max Admin" in versions and re.search(r"<td>2 \(aktuell\)</td>", versions)
    # After looking, Erika saves hers as version 3; version 2 stays.
    assert owner.save(board, 2, second, title="Pegel (Erika)", after_conflict="1").status_code == 303
    stored = hub.store.dashboards.versions(board)
    assert [v.version for v in stored] == [3, 2, 1] and stored[1].spec["panels"][0]["title"] == "Pegel Dalke"
    # Restore version 2: a new version 4 with its panels.
    restored = owner.post(f"/{board}/versions/2/restore", {"version": "3"})
    assert restored.status_code == 303
    current = hub.store.dashboards.get(board)
    assert current.version == 4 and current.spec["panels"][0]["title"] == "Pegel Dalke"
    stale = owner.post(f"/{board}/versions/1/restore", {"version": "3"})
    assert stale.status_code == 409 and "Nicht wiederhergestellt" in stale.text
    assert {e.action for e in hub.store.audit.list(world.gue)} >= {"dashboard.save", "dashboard.restore"}


def test_another_municipality_gets_404_for_a_private_dashboard(hub, world):
    owner = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = owner.create("Geheim")
    assert owner.save(board, 1, [{"type": "table", "title": "T", "dataset": ref(world.gue, PEGEL, "water_levels"),
                                  "fields": "water_level"}], title="Geheim").status_code == 303
    other = Staff(hub, world.bi, "gov-admin", "bi-admin", "Bielefeld Admin")
    listing = other.get()
    assert listing.status_code == 200 and "Geheim" not in listing.text
    for path in (f"/{board}", f"/{board}/edit", f"/{board}/versions", f"/{board}/settings", f"/{board}/panels/1.csv"):
        assert other.get(path).status_code == 404, path
    assert other.post(f"/{board}/edit", form([])).status_code == 404
    assert other.post(f"/{board}/delete", {"confirm": "yes"}).status_code == 404
    # The owner's colleague with only gov-viewer sees it but may not edit.
    viewer = Staff(hub, world.gue, "gov-viewer", "vera", "Vera Viewer")
    assert viewer.get(f"/{board}").status_code == 200
    assert viewer.get(f"/{board}/edit").status_code == 403


def test_shared_dashboard_shows_only_data_the_viewer_may_read(hub, world):
    owner = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = owner.create("Wetter und Pegel")
    assert owner.save(board, 1, [
        {"type": "timeseries", "title": "Temperatur", "dataset": ref(world.gue, PEDESTRIANS, "weather"),
         "fields": "temperature"},
        {"type": "timeseries", "title": "Pegel", "dataset": ref(world.gue, PEGEL, "water_levels"),
         "fields": "water_level"}], title="Wetter und Pegel").status_code == 303
    assert owner.post(f"/{board}/shares", {"municipality": world.bi}).status_code == 303
    other = Staff(hub, world.bi, "gov-viewer", "bi-viewer", "Bielefeld Viewer")
    assert "Wetter und Pegel" in other.get().text
    # Gütersloh's own view of the same dashboard and range comes first (and is in the panel cache):
    # Bielefeld must not get it.
    assert len(_figure_rows(owner.get(f"/{board}", params=RANGE).text, "panel-1")) == 24
    page = other.get(f"/{board}", params=RANGE)
    assert page.status_code == 200 and "nur lesen" in page.text
    weather_panel, levels_panel = _panel(page.text, 1), _panel(page.text, 2)
    assert "Sie dürfen die Daten dieses Elements" in weather_panel and "data-value" not in weather_panel
    assert len(_figure_rows(page.text, "panel-2")) == 6  # water levels are shared with Bielefeld
    for path in (f"/{board}/edit", f"/{board}/versions", f"/{board}/settings"):
        assert other.get(path).status_code == 404, path
    assert other.get(f"/{board}/panels/1.csv", params=RANGE).status_code == 404
    # Gütersloh shares the weather with Bielefeld: now the panel shows it, still read-only.
    before = world.municipalities
    shared = [m if m.slug != world.gue else _municipality(world.gue, "05754008", [PEDESTRIANS, PEGEL], [
        {"tool": PEDESTRIANS, "dataset": "pedestrian_counts", "public": True, "licence": "dl-de/zero-2-0"},
        {"tool": PEDESTRIANS, "dataset": "weather", "municipalities": [world.bi]},
        {"tool": PEGEL, "dataset": "water_levels", "municipalities": [world.bi]}]) for m in before]
    world.catalogue.replace(shared, [_tool(PEDESTRIANS), _tool(PEGEL)])
    try:
        page = other.get(f"/{board}", params=RANGE)
        assert "Sie dürfen" not in page.text and len(_figure_rows(page.text, "panel-1")) == 24
        assert other.get(f"/{board}/panels/1.csv", params=RANGE).status_code == 200
        assert other.get(f"/{board}/edit").status_code == 404
    finally:
        world.catalogue.replace(before, [_tool(PEDESTRIANS), _tool(PEGEL)])
    # The share withdrawn: at once no data again (not after the cache's seconds).
    page = other.get(f"/{board}", params=RANGE)
    assert "Sie dürfen die Daten dieses Elements" in _panel(page.text, 1) and "data-value" not in _panel(page.text, 1)
    assert any(e.action == "dashboard.share" for e in hub.store.audit.list(world.gue))


def test_publish_only_open_data_and_the_published_page_needs_no_cookie(hub, world):
    owner = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    private = owner.create("Wetter")
    assert owner.save(private, 1, [
        {"type": "table", "title": "Passanten", "dataset": ref(world.gue, PEDESTRIANS, "pedestrian_counts"),
         "fields": "pedestrians", "aggregate": "sum"},
        {"type": "kpi", "title": "Temperatur", "dataset": ref(world.gue, PEDESTRIANS, "weather"),
         "fields": "temperature"}], title="Wetter").status_code == 303
    refused = owner.post(f"/{private}/publish", {"action": "publish"})
    assert refused.status_code == 409
    assert "Nicht veröffentlicht" in refused.text and "2 (Temperatur: " in refused.text
    assert "1 (Passanten" not in refused.text
    assert not hub.store.dashboards.get(private).published

    public = owner.create("Passanten")
    assert owner.save(public, 1, [
        {"type": "table", "title": "Passanten", "dataset": ref(world.gue, PEDESTRIANS, "pedestrian_counts"),
         "fields": "pedestrians", "aggregate": "sum"},
        {"type": "text", "title": "Hinweis", "text": "Daten: **Stadt**"}], title="Passanten").status_code == 303
    assert owner.post(f"/{public}/publish", {"action": "publish"}).status_code == 303
    assert hub.store.dashboards.get(public).published

    with TestClient(hub.app, follow_redirects=False) as anonymous:
        page = anonymous.get(f"/{world.gue}/dashboards/{public}", params={**RANGE, "sensor": "g-koenig"})
        assert page.status_code == 200 and "set-cookie" not in page.headers and not anonymous.cookies
        rows = _figure_rows(page.text, "panel-1")
        assert len(rows) == 48
        koenig = sum(r["pedestrians"] for r in world.pedestrians if r["sensor_id"] == "g-koenig")
        assert sum(int(r[1]) for r in rows) == koenig  # the sensor filter works on the published page
        assert "<strong>Stadt</strong>" in page.text and "csrf_token" not in page.text
        region = anonymous.get(f"/{world.gue}/dashboards/{public}/panels", params=RANGE)
        assert region.status_code == 200 and "set-cookie" not in region.headers
        assert len(_figure_rows(region.text, "panel-1")) == 48
        download = anonymous.get(f"/{world.gue}/dashboards/{public}/panels/1.csv", params=RANGE)
        assert download.status_code == 200 and "set-cookie" not in download.headers
        assert anonymous.get(f"/{world.gue}/dashboards/{private}").status_code == 404
        assert anonymous.get(f"/{world.bi}/dashboards/{public}").status_code == 404
    assert owner.post(f"/{public}/publish", {"action": "unpublish"}).status_code == 303
    with TestClient(hub.app, follow_redirects=False) as anonymous:
        assert anonymous.get(f"/{world.gue}/dashboards/{public}").status_code == 404
    actions = [e.action for e in hub.store.audit.list(world.gue)]
    assert "dashboard.publish" in actions and "dashboard.unpublish" in actions


def test_post_without_csrf_token_is_refused(hub, world):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    refused = editor.post("", {"title": "Ohne Token"}, csrf=False)
    assert refused.status_code == 403
    assert editor.post("", {"title": "Ohne Token", "csrf_token": "falsch"}, csrf=False).status_code == 403
    assert "Ohne Token" not in editor.get().text


def test_text_panel_is_sanitised(hub, world):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = editor.create()
    text = ("# Hinweis\n\n<script>alert(1)</script> <img src=x onerror=alert(2)>\n\n"
            "[böse](javascript:alert(3)) [gut](https://example.org/a) [intern](/gov/x)\n\n**fett**")
    assert editor.save(board, 1, [{"type": "text", "title": "Text", "text": text}]).status_code == 303
    panel = _panel(editor.get(f"/{board}").text, 1)
    assert "<script" not in panel and "<img" not in panel and 'href="javascript' not in panel
    assert "&lt;script&gt;" in panel  # shown as text, never run
    assert 'href="https://example.org/a"' in panel and 'href="/gov/x"' in panel
    assert "<strong>fett</strong>" in panel and "<h2>Hinweis</h2>" in panel


def test_summary_tells_trend_extremes_and_last_value(hub, world):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = editor.create()
    assert editor.save(board, 1, [{"type": "timeseries", "title": "Pegel Dalke",
                                   "dataset": ref(world.gue, PEGEL, "water_levels"),
                                   "fields": "water_level", "aggregate": "avg"}],
                       refresh_seconds="60").status_code == 303
    page = editor.get(f"/{board}", params=RANGE).text
    # Auto-refresh reloads the panels region with the same view; its pause button is there.
    assert 'data-refresh-seconds="60"' in page and 'class="refresh-toggle" aria-pressed="false"' in page
    region = re.search(r'hx-get="([^"]+/panels\?[^"]+)"', page).group(1)
    fragment = hub.get(html.unescape(region), headers=editor.headers)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert _figure_rows(fragment.text, "panel-1") == _figure_rows(page, "panel-1")
    summary = html.unescape(re.search(r'<p class="chart-summary">(.*?)</p>', page, re.S).group(1))
    # Levels 100..105 cm hourly from 2026-03-02T00:00Z (01:00 in Berlin).
    assert summary == ("water_level (Mittelwert) stieg um 5 cm von 02.03.2026 01:00 bis 02.03.2026 06:00. "
                       "Minimum 100 cm am 02.03.2026 01:00, Maximum 105 cm am 02.03.2026 06:00. "
                       "Letzter Wert 105 cm am 02.03.2026 06:00.")
    english = editor.get(f"/{board}", params={**RANGE, "lang": "en"}).text
    assert "water_level (average) rose by 5 cm from" in html.unescape(english)


def test_template_and_delete(hub, world):
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    listing = editor.get()
    assert "Vorlage: Passanten × Temperatur" in listing.text
    created = editor.post("", {"example": "passanten-temperatur"})
    assert created.status_code == 303
    board = created.headers["location"].rsplit("/", 1)[1]
    page = editor.get(f"/{board}", params=RANGE)
    assert page.status_code == 200 and "Passanten × Temperatur" in page.text
    assert len(_figure_rows(page.text, "panel-1")) == 24 and 'class="map"' in page.text
    overview = hub.app.state.hub.extras["dashboards_overview"](hub.app.state.hub, editor_session(hub, editor))
    assert [d.id for d in overview.mine] == [board]
    start = hub.get(f"/gov/{world.gue}/", headers=editor.headers)
    assert start.status_code == 200 and "Passanten × Temperatur" in start.text
    viewer = Staff(hub, world.gue, "gov-viewer", "vera", "Vera Viewer")
    assert viewer.post(f"/{board}/delete", {"confirm": "yes"}).status_code == 403
    assert editor.post(f"/{board}/delete", {}).status_code == 422
    assert editor.post(f"/{board}/delete", {"confirm": "yes"}).status_code == 303
    assert editor.get(f"/{board}").status_code == 404
    assert any(e.action == "dashboard.delete" for e in hub.store.audit.list(world.gue))


def test_builder_buttons_add_move_remove_without_saving_and_editors(hub, world):
    owner = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = owner.create("Baukasten")
    levels = ref(world.gue, PEGEL, "water_levels")
    rows = [{"type": "text", "title": "Erstes", "text": "eins"},
            {"type": "table", "title": "Zweites", "dataset": levels, "fields": "water_level"}]
    base = {"title": "Baukasten", "version": "1", "range": "7d", "refresh_seconds": "0"}
    added = owner.post(f"/{board}/edit", {**form(rows), **base, "action": "add", "new_type": "kpi"})
    assert added.status_code == 200 and 'name="panel_count" value="3"' in added.text
    assert 'id="p2_type" name="p2_type"><option value="timeseries">' in added.text
    assert '<option value="kpi" selected>' in added.text.split('id="p2_type"')[1].split("</select>")[0]
    moved = owner.post(f"/{board}/edit", {**form(rows), **base, "action": "down-0"})
    assert moved.text.index('value="Zweites"') < moved.text.index('value="Erstes"')
    removed = owner.post(f"/{board}/edit", {**form(rows), **base, "action": "remove-0"})
    assert 'name="panel_count" value="1"' in removed.text and 'value="Erstes"' not in removed.text
    assert hub.store.dashboards.get(board).version == 1  # nothing saved yet
    # A colleague becomes editor and may then edit; a viewer stays a viewer.
    colleague = Staff(hub, world.gue, "gov-editor", "paul", "Paul Kollege")
    assert colleague.get(f"/{board}/edit").status_code == 403
    assert colleague.post(f"/{board}/editors", {"subject": "paul"}).status_code == 403
    assert owner.post(f"/{board}/editors", {"subject": "paul", "name": "Paul Kollege"}).status_code == 303
    assert colleague.get(f"/{board}/edit").status_code == 200
    assert colleague.save(board, 1, rows, title="Baukasten").status_code == 303
    assert owner.post(f"/{board}/editors", {"remove": "paul"}).status_code == 303
    assert colleague.get(f"/{board}/edit").status_code == 403
    # Added by e-mail address (what a clerk knows): the colleague signed in with it may edit.
    mail = Staff(hub, world.gue, "gov-editor", "uuid-of-clara", "Clara")
    assert mail.get(f"/{board}/edit").status_code == 403
    assert owner.post(f"/{board}/editors", {"subject": "Uuid-Of-Clara@example.org"}).status_code == 303
    assert mail.get(f"/{board}/edit").status_code == 200
    hint = owner.get(f"/{board}/fields", params={"p0_right_dataset": levels, "target": "p0_right_fields_hint"})
    assert hint.status_code == 200 and 'id="p0_right_fields_hint"' in hint.text and "water_level" in hint.text


def test_panels_say_their_title_once_and_long_tables_load_when_opened(hub, world, api, issuer, monkeypatch):
    """A panel's title is its heading only (the figure is labelled by it); a chart's numbers travel as
    compact JSON with the unit of each series; a long table is a link (htmx loads it into the figure)
    to a page that holds the same numbers as the REST API; the map is drawn on the server and MapLibre
    is not loaded with the page."""
    monkeypatch.setattr(charts, "INLINE_TABLE_ROWS", 10)  # the 24 hours of the view count as long here
    editor = Staff(hub, world.gue, "gov-editor", "erika", "Erika Mustermann")
    board = editor.create()
    counts, weather = ref(world.gue, PEDESTRIANS, "pedestrian_counts"), ref(world.gue, PEDESTRIANS, "weather")
    saved = editor.save(board, 1, [
        {"type": "timeseries", "title": "Passanten × Temperatur", "dataset": counts, "fields": "pedestrians",
         "aggregate": "sum", "bucket": "hour", "right_dataset": weather, "right_fields": "temperature",
         "right_aggregate": "avg"},
        {"type": "kpi", "title": "Passanten pro Tag", "dataset": counts, "fields": "pedestrians",
         "aggregate": "sum", "bucket": "day"},
        {"type": "map", "title": "Zähler", "dataset": counts, "fields": "pedestrians"}])
    assert saved.status_code == 303, saved.text[:2000]
    view = editor.get(f"/{board}", params=RANGE)
    assert view.status_code == 200
    page = view.text
    for number, title in ((1, "Passanten × Temperatur"), (2, "Passanten pro Tag"), (3, "Zähler")):
        panel = _panel(page, number)
        assert html.unescape(re.sub(r"<[^>]+>", " ", panel)).count(title) == 1, panel[:1500]
        assert f'aria-labelledby="panel-{number}-heading"' in panel and "<figcaption" not in panel
    chart = _panel(page, 1)
    data = json.loads(re.search(r'<script type="application/json" class="chart-data">(.*?)</script>', chart).group(1))
    assert [(s["name"], s["unit"]) for s in data["series"]] == [("pedestrians (Summe) [Personen]", "Personen"),
                                                                 ("temperature (Mittelwert) [°C]", "°C")]
    assert "persons" not in html.unescape(chart)
    # Long: no inline table, a link to the table's own page (and htmx attributes to load it in place).
    assert "<table" not in chart and 'hx-trigger="toggle once"' in chart
    link = html.unescape(re.search(r'<a href="([^"]+/panels/1/table\?[^"]+)">Tabelle mit 24 Zeilen', chart).group(1))
    joined = api.get("/api/v1/join", headers=bearer(issuer, world.gue), params={
        "left": counts, "right": weather, "left_field": "pedestrians", "right_field": "temperature",
        "left_aggregate": "sum", "right_aggregate": "avg", "bucket": "hour", **API_RANGE}).json()
    expected = [[p["bucket"], float(p["left"]["pedestrians_sum"]), float(p["right"]["temperature_avg"])]
                for p in joined["rows"]]
    assert len(expected) == 24
    own_page = hub.get(link, headers=editor.headers)
    assert own_page.status_code == 200 and "<html" in own_page.text and "Zurück zum Dashboard" in own_page.text
    assert [[t, float(a), float(b)] for t, a, b in _figure_rows(own_page.text, "panel-1")] == expected
    fragment = hub.get(link, headers={**editor.headers, "HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    rows = [re.findall(r'data-value="([^"]*)"', r) for r in re.findall(r"<tr>(.*?)</tr>", fragment.text, re.S)]
    assert [[t, float(a), float(b)] for t, a, b in (r for r in rows if r)] == expected
    # The same data as the chart JSON, rounded only for drawing.
    assert [round(float(b), 4) for _t, _a, b in expected] == data["series"][1]["values"]
    # Another municipality cannot read the table by URL.
    other = Staff(hub, world.bi, "gov-admin", "bernd", "Bernd")
    assert hub.get(link.replace(f"/gov/{world.gue}/", f"/gov/{world.bi}/"), headers=other.headers).status_code == 404
    # The map: an SVG with both counters; the interactive map's script only on request.
    mapped = _panel(page, 3)
    assert '<svg class="map-svg"' in mapped and mapped.count("<circle ") == 2
    assert 'data-map-on-demand' in mapped and 'class="secondary map-open"' in mapped
    assert 'src="/static/dist/map.js"' not in page and 'data-map-script="/static/dist/map.js"' in mapped
