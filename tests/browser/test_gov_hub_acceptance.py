"""The Gov Hub's acceptance list (issue 10) in a real browser against the real platform.

Real Chromium, real Keycloak sign-in (password + one-time code; tenants provisioned by the
operator's IdentityProvisioner, one new member of staff per sign-in because Keycloak refuses
a one-time code twice), the API and the hub on one uvicorn server (``WebServer``), demo-like
readings in the session's chDB warehouse (Gütersloh pedestrians and weather, Bielefeld), and
the metadata store on SQLite and on PostgreSQL (``metadata_store``). The City Tools test runs
the real operator against the real kube-apiserver. Every page in every state tested passes
axe-core (WCAG 2.1 A/AA) and requests nothing from another origin; the hub never sets a
cookie other than its session cookie. Screenshots: gov-*.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
import screenshots
from conftest import check_accessible, check_own_origin
from hub_harness import WebServer, browser_sign_in
from keycloak_staff import KeycloakAdmin, add_staff, keycloak_sessions

from urbanstack.devplatform import keycloak
from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.store.dashboards import Actor

pytestmark = pytest.mark.platform

ROOT = Path(__file__).resolve().parents[2]
PEDESTRIANS, PEGEL = "passantenfrequenz-wetter", "pegel-warnung"
T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.timezone.utc)  # a Monday
VIEW = "from=2026-03-02&to=2026-03-03"  # Berlin dates, `to` inclusive
API_RANGE = {"from": "2026-03-01T23:00:00Z", "to": "2026-03-03T23:00:00Z", "timezone": "Europe/Berlin"}
SESSION_COOKIE = "urbanstack_session"


def _tool(name: str):
    return parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{name}.yaml").read_text()))


TOOLS = [_tool(PEDESTRIANS), _tool(PEGEL)]


def _municipality(slug: str, name: str, ags: str, shares: list[dict]) -> Municipality:
    return Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": name, "ags": ags, "admins": [f"admin@{slug}.test"],
                 "identity": {"strategy": "organization", "domains": [f"{slug}.test"]},
                 "tools": [{"name": PEDESTRIANS}, {"name": PEGEL}], "shares": shares}})


@dataclasses.dataclass
class Tenants:
    """Gütersloh and Bielefeld: readings in the warehouse, identity spaces in Keycloak."""
    gue: str
    bi: str
    municipalities: dict[str, Municipality]
    parts: dict
    secrets: dict
    admin: KeycloakAdmin

    def ref(self, dataset: str, tool: str = PEDESTRIANS, owner: str | None = None) -> str:
        return f"{owner or self.gue}/{tool}/{dataset}"

    def staff(self, slug: str, role: str, name: str = "Erika Mustermann"):
        return add_staff(self.admin, self.parts[slug], role, name=name)


GUE_SHARES = [{"tool": PEDESTRIANS, "dataset": "pedestrian_counts", "public": True, "licence": "dl-de/zero-2-0"}]


def _fill(warehouse, gue: str, bi: str) -> None:
    def insert(slug, tool, dataset, rows):
        columns = list(rows[0])
        warehouse.insert(f"{naming.database(slug)}.{naming.table(tool, dataset)}",
                         [[row[c] for c in columns] for row in rows], column_names=columns)

    # Pedestrians: two counters in Gütersloh's centre, every 15 minutes for 48 hours.
    counts = []
    for sensor, (lon, lat) in (("g-berliner", (8.383, 51.906)), ("g-koenig", (8.389, 51.909))):
        for step in range(48 * 4):
            counts.append({"event_id": f"{sensor}-{step}", "source": "hystreet", "sensor_id": sensor,
                           "observed_at": T0 + dt.timedelta(minutes=15 * step), "lon": lon, "lat": lat,
                           "pedestrians": (step * 37 + len(sensor) * 11) % 480, "location_name": sensor})
    insert(gue, PEDESTRIANS, "pedestrian_counts", counts)
    # Weather: hourly, one DWD station, the first 24 hours (the join is on the common hours).
    insert(gue, PEDESTRIANS, "weather", [
        {"event_id": f"w-{h}", "source": "dwd", "sensor_id": "dwd-01303", "observed_at": T0 + dt.timedelta(hours=h),
         "lon": 8.38, "lat": 51.90, "temperature": 5.0 + h / 2, "precipitation": float(h % 3)} for h in range(24)])
    insert(bi, PEGEL, "water_levels", [
        {"event_id": f"b-{h}", "source": "pegelonline", "sensor_id": "lutter", "observed_at":
         T0 + dt.timedelta(hours=h), "lon": 8.53, "lat": 52.02, "water_level": 700.0 + h, "station_name": "Lutter"}
        for h in range(6)])


@pytest.fixture(scope="module")
def tenants(platform, warehouse):
    suffix = uuid.uuid4().hex[:6]
    gue, bi = f"guetersloh-a{suffix}", f"bielefeld-a{suffix}"
    municipalities = {gue: _municipality(gue, "Gütersloh", "05754008", GUE_SHARES),
                      bi: _municipality(bi, "Bielefeld", "05711000", [])}
    storage = WarehouseProvisioner(lambda: warehouse, embedded=True)
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    admin = KeycloakAdmin(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    parts, secrets = {}, {}
    try:
        for slug, municipality in municipalities.items():
            desired = plan(municipality, TOOLS)
            ensure(storage, desired.warehouse, {})
            parts[slug] = desired.identity
            secrets[slug] = {c.secret_key: uuid.uuid4().hex for c in desired.identity.clients if c.secret_key}
            ensure(provisioner, desired.identity, secrets[slug])
        _fill(warehouse, gue, bi)
        yield Tenants(gue, bi, municipalities, parts, secrets, admin)
    finally:
        for part in parts.values():
            provisioner.delete(part, keep_data=False)
        provisioner.close()
        admin.close()


@pytest.fixture(scope="module")
def uploads(platform, tenants):
    """The ingest service's upload code (preview needs no Kafka; the import is test_gov_upload's)."""
    from urbanstack import kubeclient
    from urbanstack.runtime.api import TokenVerifier
    from urbanstack.runtime.ingest.push import create_push_app
    from urbanstack.runtime.ingest.tenants import DailyQuota, KubernetesCredentials, TenantPublishers

    credentials = KubernetesCredentials(kubeclient.api_client(str(platform.state_dir / "kube" / "runtime.kubeconfig")))
    publishers = TenantPublishers(platform, credentials)
    catalogue = Catalogue(list(tenants.municipalities.values()), TOOLS)
    push = create_push_app(catalogue, publishers, credentials,
                           verifier=TokenVerifier(platform.keycloak_url, "{tenant}-api"), quota=DailyQuota())
    yield push.state.uploads
    publishers.close()


@pytest.fixture(scope="module")
def server(platform, warehouse, metadata_store, tenants, uploads):
    catalogue = Catalogue(list(tenants.municipalities.values()), TOOLS)
    with WebServer(platform, catalogue, warehouse, metadata_store, extras={"ingest": uploads}) as web:
        web.catalogue = catalogue
        yield web


# Helpers ---------------------------------------------------------------------------------

def hub_cookies(context, server) -> list[str]:
    """Names of the cookies the hub's origin holds (Keycloak's, on the same host, live under /realms/)."""
    return sorted(c["name"] for c in context.cookies(server.url) if not c["path"].startswith("/realms"))


def only_session_cookie(context, server) -> None:
    names = hub_cookies(context, server)
    assert set(names) <= {SESSION_COOKIE}, f"the hub set other cookies: {names}"


def checked(page, server, label: str, status: int = 200) -> None:
    """The page as it is now: no axe-core violation, requests only to the own origin, no console error
    (but Chromium's note on the page's own status when it is an error page), no cookie but the session's."""
    own = f"the server responded with a status of {status} "
    errors = [e for e in page.console_errors if not (status >= 400 and own in e)]
    assert errors == [], f"{label}: {errors} {page.requests_seen}"
    check_accessible(page, label)
    check_own_origin(page, server.url)
    only_session_cookie(page.context, server)
    page.console_errors.clear()  # axe-core's injection is refused by the page's CSP (and then evaluated)


def visit(page, server, path: str, label: str, status: int = 200):
    page.requests_seen.clear()
    page.console_errors.clear()
    response = page.goto(server.url + path)
    assert response.status == status, f"{label}: HTTP {response.status} for {path}"
    checked(page, server, label, status)
    return response


def sign_in(page, server, slug, staff, path="") -> None:
    """Signs in through Keycloak's pages (another origin), then reloads the hub page it landed on, so the
    request log and the console hold the hub's page alone."""
    browser_sign_in(page, server, slug, staff, path)
    only_session_cookie(page.context, server)
    page.requests_seen.clear()
    page.console_errors.clear()
    page.reload()


def new_page(browser):
    """A second browser (own context, own cookies) with the same instrumentation as the ``page`` fixture."""
    context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests_seen, page.console_errors = [], []
    page.on("request", lambda request: page.requests_seen.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    return page


def screenshot(page, name: str) -> None:
    screenshots.save(page, f"gov-{name}")


def drawn(page, figure: str = "panel-1") -> None:
    """Wait until charts.js has drawn the figure (says what the page shows instead if it never does)."""
    try:
        page.wait_for_selector(f"#{figure}.chart-drawn canvas", timeout=15000)
    except Exception as error:
        raise AssertionError(f"#{figure} was not drawn; the page says: {page.locator('main').inner_text()[-2500:]}"
                             f"; console: {page.console_errors}") from error


def table_rows(page, figure: str) -> list[list[str]]:
    """The data-value cells of each body row of a figure's table."""
    return page.eval_on_selector_all(
        f"#{figure} table tbody tr",
        "rows => rows.map(r => Array.from(r.querySelectorAll('td')).map(td => td.dataset.value))")


def session_row(server, context):
    token = next(c["value"] for c in context.cookies(server.url) if c["name"] == SESSION_COOKIE)
    return server.hub.store.sessions.get(token)


def create_dashboard(server, slug, title, panels, owner="seed-owner", name="Seed Owner", range_="7d"):
    return server.hub.store.dashboards.create(slug, Actor(owner, name), title,
                                              {"range": range_, "refresh_seconds": 0, "panels": panels})


def join_panel(tenants, title="Passanten × Temperatur"):
    return {"type": "timeseries", "title": title, "bucket": "hour",
            "join": {"left": {"dataset": tenants.ref("pedestrian_counts"), "fields": ["pedestrians"],
                              "aggregate": "sum"},
                     "right": {"dataset": tenants.ref("weather"), "fields": ["temperature"], "aggregate": "avg"}}}


def series_panel(dataset, field, title, aggregate="avg", bucket="hour", kind="timeseries"):
    return {"type": kind, "title": title, "dataset": dataset, "fields": [field], "aggregate": aggregate,
            "bucket": bucket}


# Keyboard --------------------------------------------------------------------------------

def tab_to(page, selector: str, key: str = "Tab", limit: int = 150) -> None:
    """Press Tab (or Shift+Tab) until the focused element matches ``selector``."""
    for _ in range(limit):
        if page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{key} never reached {selector}")


def choose(page, selector: str, value: str) -> None:
    """Focus a select with Tab and pick ``value`` with the arrow keys."""
    tab_to(page, selector)
    for key in ("ArrowDown", "ArrowUp"):
        for _ in range(40):
            if page.evaluate("s => document.querySelector(s).value", selector) == value:
                return
            before = page.evaluate("s => document.querySelector(s).selectedIndex", selector)
            page.keyboard.press(key)
            if page.evaluate("s => document.querySelector(s).selectedIndex", selector) == before:
                break
    raise AssertionError(f"the arrow keys never chose {value!r} in {selector}")


def type_into(page, selector: str, text: str) -> None:
    tab_to(page, selector)
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


# Tests -----------------------------------------------------------------------------------

def test_editor_builds_pedestrians_by_temperature_with_the_keyboard_only(page, server, tenants):
    gue = tenants.gue
    editor = tenants.staff(gue, "gov-editor", "Erika Mustermann")
    sign_in(page, server, gue, editor, "dashboards/new")
    checked(page, server, "new dashboard")
    # From here on: the keyboard only.
    type_into(page, "#title", "Innenstadt: Passanten und Wetter")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/dashboards/[^/]+/edit$"))
    board = page.url.split("/dashboards/")[1].split("/")[0]
    choose(page, "#new_type", "timeseries")
    tab_to(page, "button[name=action][value=add]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    type_into(page, "#p0_title", "Passanten × Temperatur")
    choose(page, "#p0_dataset", tenants.ref("pedestrian_counts"))
    page.wait_for_selector("#p0_fields_hint:has-text('pedestrians')")  # htmx named the fields
    type_into(page, "#p0_fields", "pedestrians")
    choose(page, "#p0_aggregate", "sum")
    choose(page, "#p0_bucket", "hour")
    tab_to(page, "#panel-0 details > summary")
    page.keyboard.press("Enter")
    assert page.evaluate("document.querySelector('#panel-0 details').open")
    choose(page, "#p0_right_dataset", tenants.ref("weather"))
    page.wait_for_selector("#p0_right_fields_hint:has-text('temperature')")
    type_into(page, "#p0_right_fields", "temperature")
    choose(page, "#p0_right_aggregate", "avg")
    # A second panel: the day's total as a KPI, added with Space on the button this time.
    choose(page, "#new_type", "kpi")
    tab_to(page, "button[name=action][value=add]")
    with page.expect_navigation():
        page.keyboard.press("Space")
    assert page.input_value("#p0_right_dataset") == tenants.ref("weather")  # the form kept panel 1
    type_into(page, "#p1_title", "Passanten pro Tag")
    choose(page, "#p1_dataset", tenants.ref("pedestrian_counts"))
    type_into(page, "#p1_fields", "pedestrians")
    choose(page, "#p1_aggregate", "sum")
    choose(page, "#p1_bucket", "day")
    tab_to(page, "button[name=action][value=save]", key="Shift+Tab")  # the Save button at the top
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator(".notice-success").inner_text() == "Als Version 2 gespeichert."
    checked(page, server, "builder after saving")
    # Reload: the same panels.
    page.reload()
    assert page.input_value("#title") == "Innenstadt: Passanten und Wetter"
    assert [page.input_value(f"#p{i}_title") for i in range(2)] == ["Passanten × Temperatur", "Passanten pro Tag"]
    assert [page.input_value(f"#p{i}_type") for i in range(2)] == ["timeseries", "kpi"]
    assert (page.input_value("#p0_dataset"), page.input_value("#p0_right_dataset"),
            page.input_value("#p0_aggregate"), page.input_value("#p0_right_aggregate")) == (
        tenants.ref("pedestrian_counts"), tenants.ref("weather"), "sum", "avg")
    assert server.hub.store.dashboards.get(board).version == 2

    # The view for a range (the URL carries it); the table behind "Tabelle anzeigen", opened with Enter.
    page.goto(f"{server.url}/gov/{gue}/dashboards/{board}?{VIEW}")
    drawn(page)
    # Pedestrians and temperature each on their own scale: one y axis per unit (left, right), so the
    # temperature is not a flat line under the pedestrian counts; the legend names the side.
    assert page.get_attribute("#panel-1", "data-axes") == "2"
    assert page.get_attribute("#panel-1", "data-axis-units") == "Personen|°C"
    assert page.locator("#panel-1 .u-axis").count() == 3  # uPlot's axis elements: time, left, right
    legend = page.locator("#panel-1 .chart-legend").inner_text()
    assert "Achse links" in legend and "Achse rechts" in legend
    tab_to(page, "#panel-1 details.chart-table > summary")
    assert page.locator("#panel-1 summary").inner_text() == "Tabelle anzeigen"
    page.keyboard.press("Enter")
    assert page.locator("#panel-1 table").is_visible()
    shown = table_rows(page, "panel-1")
    # The same numbers from the REST API, with a token of the same Keycloak user (the hub session's
    # refresh token, redeemed at the hub's client).
    part, row = tenants.parts[gue], session_row(server, page.context)
    hub_client = next(c for c in part.clients if c.kind == "gov-hub")
    grant = {"grant_type": "refresh_token", "refresh_token": row.refresh_token, "client_id": hub_client.client_id}
    if hub_client.secret_key:
        grant["client_secret"] = tenants.secrets[gue][hub_client.secret_key]
    token = httpx.post(f"{server.hub.settings.keycloak_url}/realms/{part.realm}/protocol/openid-connect/token",
                       data=grant, timeout=20)
    assert token.status_code == 200, token.text
    joined = httpx.get(f"{server.url}/api/v1/join", headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                       params={"left": tenants.ref("pedestrian_counts"), "right": tenants.ref("weather"),
                               "left_field": "pedestrians", "right_field": "temperature", "left_aggregate": "sum",
                               "right_aggregate": "avg", "bucket": "hour", **API_RANGE}, timeout=30)
    assert joined.status_code == 200, joined.text
    expected = [[p["bucket"], float(p["left"]["pedestrians_sum"]), float(p["right"]["temperature_avg"])]
                for p in joined.json()["rows"]]
    assert len(expected) == 24
    assert [[t, float(a), float(b)] for t, a, b in shown] == expected
    checked(page, server, "dashboard view with the chart's table open")
    screenshot(page, "dashboard-view")


def test_bielefeld_cannot_reach_guetersloh_data_until_it_is_shared(page, server, tenants):
    gue, bi = tenants.gue, tenants.bi
    private = create_dashboard(server, gue, "Wetter intern", [series_panel(tenants.ref("weather"), "temperature",
                                                                          "Temperatur Gütersloh")])
    shared = create_dashboard(server, gue, "Wetter für die Region", [series_panel(
        tenants.ref("weather"), "temperature", "Temperatur Gütersloh")])
    server.hub.store.dashboards.share_with(shared.id, [bi])
    sign_in(page, server, bi, tenants.staff(bi, "gov-admin", "Bernd Bielefelder"), "dashboards")
    listed = page.locator("main").inner_text()
    assert "Wetter intern" not in listed and "Wetter für die Region" in listed
    checked(page, server, "dashboard list of Bielefeld")
    # Guessing the URL: every route of the private dashboard answers 404, also the published path.
    for path in (f"/gov/{bi}/dashboards/{private.id}", f"/gov/{bi}/dashboards/{private.id}/edit",
                 f"/gov/{bi}/dashboards/{private.id}/versions", f"/gov/{bi}/dashboards/{private.id}/settings",
                 f"/gov/{bi}/dashboards/{private.id}/panels/1.csv", f"/{gue}/dashboards/{private.id}"):
        page.requests_seen.clear()
        assert page.goto(server.url + path).status == 404, path
    check_accessible(page, "not-found page")
    assert "Wetter intern" not in page.content()
    # The shared dashboard opens, but its panel over Gütersloh's private weather shows no data.
    visit(page, server, f"/gov/{bi}/dashboards/{shared.id}?{VIEW}", "shared dashboard without data access")
    assert page.locator("section.panel .panel-message").count() == 1
    assert page.locator("section.panel table").count() == 0 and page.locator("td[data-value]").count() == 0
    assert page.locator("main a", has_text="Bearbeiten").count() == 0
    # Gütersloh shares the dataset with Bielefeld; the catalogue as the hub sees it after the refresh.
    with_share = _municipality(gue, "Gütersloh", "05754008", GUE_SHARES + [
        {"tool": PEDESTRIANS, "dataset": "weather", "municipalities": [bi]}])
    server.catalogue.replace([with_share, tenants.municipalities[bi]], TOOLS)
    try:
        page.reload()
        drawn(page)
        assert len(table_rows(page, "panel-1")) == 24 and page.locator(".panel-message").count() == 0
        assert f"Geteilt von {gue}; nur lesen." in page.locator("main .hint").first.inner_text()
        assert page.locator("main a", has_text="Bearbeiten").count() == 0
        page.locator("#panel-1 summary").press("Enter")
        checked(page, server, "shared dashboard with shared data")
        for path in (f"/gov/{bi}/dashboards/{shared.id}/edit", f"/gov/{bi}/dashboards/{shared.id}/settings"):
            assert page.goto(server.url + path).status == 404, path
        assert server.hub.store.dashboards.get(shared.id).version == 1
        # Gütersloh's own pages are not Bielefeld's: the hub sends the browser to Gütersloh's sign-in, where
        # Bielefeld's Keycloak session does not count (the sign-in fails and says so).
        page.goto(f"{server.url}/gov/{gue}/dashboards/{private.id}")
        assert "/dashboards/" not in page.url and "Wetter intern" not in page.content()
        assert page.locator("#username").count() == 1 or "/auth/callback" in page.url, page.url
        check_accessible(page, "sign-in refused for another municipality")
    finally:
        server.catalogue.replace(list(tenants.municipalities.values()), TOOLS)


def test_concurrent_saves_one_wins_the_other_gets_the_conflict_and_nothing_is_lost(page, browser, server, tenants):
    gue = tenants.gue
    sign_in(page, server, gue, tenants.staff(gue, "gov-editor", "Erika Mustermann"), "dashboards/new")
    page.fill("#title", "Pegel Dalke")
    page.click("button:has-text('Anlegen und Elemente hinzufügen')")
    page.wait_for_url(re.compile(r".*/edit$"))
    edit_url = page.url
    other = new_page(browser)
    try:
        sign_in(other, server, gue, tenants.staff(gue, "gov-admin", "Max Admin"))
        visit(other, server, edit_url.removeprefix(server.url), "builder (second editor)")
        # Both have version 1 open. Erika saves first and wins.
        page.fill("#title", "Pegel Dalke (Erika)")
        page.click("button[value=save] >> nth=0")
        assert page.locator(".notice-success").inner_text() == "Als Version 2 gespeichert."
        # Max saves the same version: the conflict page, his input still there, a way to reload.
        other.fill("#title", "Pegel Dalke (Max)")
        other.requests_seen.clear()
        with other.expect_response(lambda r: r.request.method == "POST") as answer:
            other.click("button[value=save] >> nth=0")
        assert answer.value.status == 409
        conflict = other.locator("section.conflict")
        assert "Nicht gespeichert" in conflict.inner_text() and "Erika Mustermann" in conflict.inner_text()
        assert other.input_value("#title") == "Pegel Dalke (Max)"
        checked(other, server, "conflict page", 409)
        reload_link = conflict.locator("a", has_text="Neueste Version laden")
        assert reload_link.get_attribute("href").endswith("/edit")
        # He keeps his: saved as version 3; version 2 stays.
        other.click("button[value=save] >> nth=0")
        assert other.locator(".notice-success").inner_text() == "Als Version 3 gespeichert."
        board = edit_url.split("/dashboards/")[1].split("/")[0]
        visit(other, server, f"/gov/{gue}/dashboards/{board}/versions", "versions page")
        versions = other.locator("main table").inner_text()
        assert "Erika Mustermann" in versions and "Max Admin" in versions
        assert [v.title for v in server.hub.store.dashboards.versions(board)] == [
            "Pegel Dalke (Max)", "Pegel Dalke (Erika)", "Pegel Dalke"]
        # Erika, now behind, reloads from her conflict-free page: she sees Max's version.
        page.goto(edit_url)
        assert page.input_value("#title") == "Pegel Dalke (Max)"
    finally:
        other.context.close()


def test_publishing_is_refused_for_private_data_and_the_published_dashboard_needs_no_session(page, browser, server,
                                                                                              tenants):
    gue = tenants.gue
    closed = create_dashboard(server, gue, "Wetter (intern)", [
        series_panel(tenants.ref("pedestrian_counts"), "pedestrians", "Passanten", "sum"),
        series_panel(tenants.ref("weather"), "temperature", "Temperatur")])
    open_ = create_dashboard(server, gue, "Passanten in der Innenstadt", [
        series_panel(tenants.ref("pedestrian_counts"), "pedestrians", "Passanten pro Stunde", "sum")])
    sign_in(page, server, gue, tenants.staff(gue, "gov-admin", "Grete Admin"), f"dashboards/{closed.id}/settings")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button[value=publish]")
    assert answer.value.status == 409
    refusal = page.locator("main [role=alert]").inner_text()
    assert "Nicht veröffentlicht" in refusal and "2 (Temperatur" in refusal and "Passanten" not in refusal
    checked(page, server, "settings page with the publishing refusal", 409)
    assert not server.hub.store.dashboards.get(closed.id).published
    visit(page, server, f"/gov/{gue}/dashboards/{open_.id}/settings", "settings page")
    page.click("button[value=publish]")
    public_path = f"/{gue}/dashboards/{open_.id}"
    assert page.locator(f"main a[href='{public_path}']").count() == 1
    checked(page, server, "settings page of a published dashboard")
    # Anyone: a fresh browser without cookies.
    anonymous = new_page(browser)
    try:
        response = anonymous.goto(f"{server.url}{public_path}?{VIEW}")
        assert response.status == 200
        drawn(anonymous)
        assert len(table_rows(anonymous, "panel-1")) == 47  # 23:00 UTC on the 3rd is the next Berlin day
        assert anonymous.context.cookies() == [] and "set-cookie" not in response.headers
        check_accessible(anonymous, "published dashboard")
        check_own_origin(anonymous, server.url)
        assert anonymous.goto(f"{server.url}/{gue}/dashboards/{closed.id}").status == 404
        assert anonymous.context.cookies() == []
    finally:
        anonymous.context.close()


def test_logout_ends_the_keycloak_session_csrf_is_enforced_and_only_the_session_cookie_is_set(page, server,
                                                                                               tenants):
    gue = tenants.gue
    part = tenants.parts[gue]
    editor = tenants.staff(gue, "gov-editor", "Carla Cookie")
    assert hub_cookies(page.context, server) == []
    sign_in(page, server, gue, editor)
    assert hub_cookies(page.context, server) == [SESSION_COOKIE]
    assert len(keycloak_sessions(tenants.admin, part, editor.username)) == 1
    visit(page, server, f"/gov/{gue}/dashboards", "dashboard list")
    before = len(server.hub.store.dashboards.overview(gue, "nobody").municipality)
    # POSTs without the session's CSRF token (the browser's cookie goes along) are refused.
    for form in ({"title": "Ohne Token"}, {"title": "Falsches Token", "csrf_token": "forged"}):
        refused = page.request.post(f"{server.url}/gov/{gue}/dashboards", form=form, max_redirects=0)
        assert refused.status == 403, form
        only_session_cookie(page.context, server)
    refused = page.request.post(f"{server.url}/gov/{gue}/logout", form={}, max_redirects=0)
    assert refused.status == 403
    assert len(server.hub.store.dashboards.overview(gue, "nobody").municipality) == before
    visit(page, server, f"/gov/{gue}/", "start page (still signed in)")
    assert page.locator(".account-name").inner_text() == "Carla Cookie"
    # Signing out with the keyboard: the hub session and the Keycloak session end.
    tab_to(page, ".account button[type=submit]")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Abmelden"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/gov/{gue}/logged-out**")
    page.requests_seen.clear()
    page.reload()
    checked(page, server, "signed-out page")
    assert keycloak_sessions(tenants.admin, part, editor.username) == []
    page.goto(f"{server.url}/gov/{gue}/dashboards")
    assert page.locator("#username").count() == 1  # Keycloak asks again
    only_session_cookie(page.context, server)


UPLOAD_CSV = ("Zähler;Zeitpunkt;Passanten\n"
              "g-berliner;02.03.2026 08:00;120\n"
              "g-berliner;02.03.2026 09:00;135\n"
              "g-koenig;02.03.2026 08:00;viele\n").encode()


def test_every_gov_hub_page_is_accessible_and_local(page, server, tenants, tmp_path):
    gue = tenants.gue
    board = create_dashboard(server, gue, "Innenstadt", [
        join_panel(tenants), series_panel(tenants.ref("pedestrian_counts"), "pedestrians", "Pro Tag", "sum", "day",
                                          "kpi"),
        series_panel(tenants.ref("pedestrian_counts"), "pedestrians", "Stunden", "sum", kind="table"),
        {"type": "map", "title": "Zähler", "dataset": tenants.ref("pedestrian_counts")},
        {"type": "text", "title": "Hinweis", "text": "Daten: **Hystreet** und DWD."}])
    sign_in(page, server, gue, tenants.staff(gue, "gov-admin", "Grete Güterslohn"))
    base = f"/gov/{gue}/dashboards"
    for path, label in ((f"/gov/{gue}/", "start page"), (base, "dashboard list"), (f"{base}/new", "new dashboard"),
                        (f"{base}/{board.id}/versions", "versions page"),
                        (f"{base}/{board.id}/settings", "settings page"), (f"/gov/{gue}/audit", "change log"), (f"/gov/{gue}/people", "people"),
                        (f"/gov/{gue}/upload", "upload"), (f"{base}/{board.id}/edit", "builder")):
        visit(page, server, path, label)
        if label in ("people", "builder"):
            screenshot(page, label)
    visit(page, server, f"{base}/{board.id}?{VIEW}", "dashboard view")
    drawn(page)
    for summary in page.locator("main details > summary").all():
        summary.press("Enter")
    # The map: drawn on the server (SVG); MapLibre only when asked for, with the keyboard.
    assert page.locator("figure.map svg.map-svg circle").count() >= 1
    assert not any("/static/dist/map." in u for u in page.requests_seen)
    checked(page, server, "dashboard view with every table open")
    page.locator("figure.map button.map-open").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("figure.map.map-drawn .maplibregl-canvas", timeout=20000)
    assert page.evaluate("document.activeElement.classList.contains('maplibregl-canvas')")
    assert not page.locator("figure.map svg.map-svg").is_visible()
    checked(page, server, "dashboard view with the interactive map open")
    # Upload: a file and its preview.
    sample = tmp_path / "zaehlung.csv"
    sample.write_bytes(UPLOAD_CSV)
    visit(page, server, f"/gov/{gue}/upload", "upload")
    page.select_option("select[name=dataset]", f"{PEDESTRIANS}/pedestrian_counts")
    page.set_input_files("input[type=file]", str(sample))
    page.requests_seen.clear()
    with page.expect_navigation():
        page.locator("main form button[type=submit]").first.click()
    assert "Passanten" in page.locator("main").inner_text() and "Zeitpunkt" in page.locator("main").inner_text()
    checked(page, server, "upload preview")
    screenshot(page, "upload-preview")
    # Error pages.
    visit(page, server, f"{base}/does-not-exist", "not-found page", status=404)
    visit(page, server, f"/gov/{gue}/nothing-here", "unknown page", status=404)


def test_dashboard_view_reflows_at_320_px(page, server, tenants):
    gue = tenants.gue
    board = create_dashboard(server, gue, "Innenstadt schmal", [
        join_panel(tenants), series_panel(tenants.ref("pedestrian_counts"), "pedestrians", "Stunden", "sum",
                                          kind="table")])
    sign_in(page, server, gue, tenants.staff(gue, "gov-viewer", "Vera Schmal"))
    page.set_viewport_size({"width": 320, "height": 800})
    visit(page, server, f"/gov/{gue}/dashboards/{board.id}?{VIEW}", "dashboard view at 320 px")
    drawn(page)
    for summary in page.locator("main details > summary").all():
        summary.press("Enter")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    canvas = page.locator("#panel-1 canvas").first.bounding_box()
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= 320
    checked(page, server, "dashboard view at 320 px with tables open")
    screenshot(page, "dashboard-view-320")


# City Tools against the real kube-apiserver and the real operator -------------------------------

@dataclasses.dataclass
class KubeWorld:
    cluster: object
    hub_api: object
    slug: str
    part: object
    wait_ready: object


@pytest.fixture(scope="module")
def kube_world(platform, warehouse, kube_api, tenants):
    """A Municipality of its own in the cluster (no tools: the hub owns spec.tools), reconciled by the
    operator in a thread as its least-privilege identity; Ready (its Keycloak space exists) before use."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import kubernetes
    from operator_harness import (Cluster, OperatorThread, example, is_ready, operator_kubeconfig,
                                  unique_municipality, use_operator_identity)
    from test_gov_tools import _without_hub_fields, gov_hub_api

    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends
    from urbanstack.operator.models import parse_municipality

    cluster = Cluster(kube_api)
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        cluster.apply("citytools", example(tool))
    body = _without_hub_fields(unique_municipality("municipality-guetersloh.yaml", "gva"))
    slug = body["metadata"]["name"]
    use_operator_identity(platform)
    settings = dataclasses.replace(platform, drift_interval=5.0)
    backends = Backends.from_settings(settings, warehouse_client=warehouse, kube=kubernetes.config.new_client_from_config(
        config_file=operator_kubeconfig(platform)))
    handlers.configure(settings, backends,
                       MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv"))
    runner = OperatorThread().start()
    cluster.apply("municipalities", body)

    def wait_ready(what: str):
        cluster.wait_for("municipalities", slug, is_ready, timeout=240, what=what)

    try:
        wait_ready("Ready after creation")
        part = plan(parse_municipality(cluster.get("municipalities", slug)), TOOLS).identity
        yield KubeWorld(cluster, gov_hub_api(platform), slug, part, wait_ready)
    finally:
        cluster.delete("municipalities", slug)
        try:
            cluster.wait_gone("municipalities", slug, timeout=180)
        finally:
            runner.stop()


@pytest.fixture(scope="module")
def kube_server(platform, warehouse, metadata_store, kube_world):
    import kubernetes

    from urbanstack import serve
    from urbanstack.runtime.hubs.gov.kube import GovKube

    catalogue = Catalogue()
    runtime = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
        config_file=str(platform.state_dir / "kube" / "runtime.kubeconfig")))

    def refresh():  # what serve's catalogue loop does every 10 s
        serve.refresh_catalogue(catalogue, runtime)

    refresh()
    with WebServer(platform, catalogue, warehouse, metadata_store,
                   extras={"kube": GovKube(kube_world.hub_api)}) as web:
        web.refresh = refresh
        yield web


def test_switching_on_pegel_warnung_reaches_ready_and_lists_its_datasets(page, kube_server, kube_world, tenants):
    server, slug = kube_server, kube_world.slug
    staff = add_staff(tenants.admin, kube_world.part, "gov-admin", name="Tilda Tools")
    sign_in(page, server, slug, staff, "tools")
    checked(page, server, "City Tools")
    form = page.locator(f"form[action='/gov/{slug}/tools/{PEGEL}/on']")
    form.locator("textarea").fill('{"warnLevelCm": 180, "alarmLevelCm": 240}')
    page.requests_seen.clear()
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    spec = kube_world.cluster.get("municipalities", slug)["spec"]
    assert spec["tools"] == [{"name": PEGEL, "settings": {"warnLevelCm": 180, "alarmLevelCm": 240}}]
    checked(page, server, "City Tools while the operator works")
    kube_world.wait_ready("Ready after switching on pegel-warnung")
    # The status region refreshes itself (every 5 s) and shows the operator's word.
    page.wait_for_selector("#tool-status:has-text('bereit, Datensätze: water_levels')", timeout=30000)
    page.reload()
    assert page.locator(f"code:has-text('{slug}/{PEGEL}/water_levels')").count() == 1
    checked(page, server, "City Tools, tool ready")
    screenshot(page, "tools")
    server.refresh()  # the catalogue's next round: the start page and data access list the dataset
    visit(page, server, f"/gov/{slug}/", "start page with the tool")
    assert "water_levels" in page.locator("main").inner_text()
    visit(page, server, f"/gov/{slug}/data", "data access")
    assert "water_levels" in page.locator("main").inner_text()
    screenshot(page, "data")
    # Off again (the other backend's run switches it on anew).
    visit(page, server, f"/gov/{slug}/tools", "City Tools")
    with page.expect_navigation():
        page.locator(f"form[action='/gov/{slug}/tools/{PEGEL}/off'] button").click()
    assert kube_world.cluster.get("municipalities", slug)["spec"].get("tools") in ([], None)
    checked(page, server, "City Tools after switching off")
