"""City Tools' pages in the hubs (issue 15), in real Chromium against the real platform:
Pegel-Warnung's warnings in the Gov Hub (list and map, staff signed in through Keycloak) and
on the Citizen Hub (affected area, no script), with axe-core finding no WCAG 2.1 A/AA violation.

The warnings are produced by the tool's own decision code (``PegelWarnung.handle``) from a
Gütersloh hydrograph, as Gütersloh's tool and Rheda-Wiedenbrück's (which Gütersloh shares its
water levels with) decide them, and stored in each municipality's ``warnings`` table (columns as
the sink writes them; the Kafka → tool → sink path is tests/integration/test_pegel_warnung_platform.py).
A third municipality runs the tool too, but nobody shares with it: its tool got no reading, and
its staff and residents see no warning. Gütersloh publishes its warnings as open data; Rheda's
are not published, so its Citizen Hub shows none. Screenshots: tool-*.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import yaml
import screenshots
from conftest import check_accessible, check_own_origin
from hub_harness import WebServer, browser_sign_in
from keycloak_staff import KeycloakAdmin, add_staff
from prometheus_client import CollectorRegistry

from urbanstack.citytools.pegel_warnung import PegelWarnung
from urbanstack.devplatform import keycloak
from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.identity import IdentityProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.events import Observation
from urbanstack.settings import Settings
from urbanstack.toolkit import ToolContext
from urbanstack.toolkit.streams import Reading

pytestmark = pytest.mark.platform

ROOT = Path(__file__).resolve().parents[2]
TOOL = "pegel-warnung"
CITYTOOL = parse_citytool(yaml.safe_load((ROOT / "examples" / "citytool-pegel-warnung.yaml").read_text()))
START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, second=0) - dt.timedelta(hours=20)


@dataclasses.dataclass
class World:
    gue: str
    rh: str
    outsider: str
    parts: dict
    admin: KeycloakAdmin
    warnings: dict


def _municipality(slug: str, name: str, ags: str, shares: list[dict]) -> Municipality:
    return Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": slug},
        "spec": {"displayName": name, "ags": ags, "admins": [f"admin@{slug}.test"],
                 "identity": {"strategy": "organization", "domains": [f"{slug}.test"]},
                 "tools": [{"name": TOOL, "settings": {"warnLevelCm": 180, "alarmLevelCm": 240}}],
                 "shares": shares}})


def _decide(municipality: str, owner: str) -> list[Observation]:
    """What the tool of ``municipality`` raises for two of ``owner``'s gauges: the Dalke rises to
    the alarm level and stays there; the Lutter rose above the warning level and fell back."""
    ctx = ToolContext(municipality=municipality, ags="", tool=TOOL, client_id=naming.tool_client(municipality, TOOL),
                      settings={"warnLevelCm": 180, "alarmLevelCm": 240}, platform=Settings.from_env({}),
                      kafka_username=naming.kafka_user(municipality))
    tool = PegelWarnung(ctx, CollectorRegistry())

    def reading(i, gauge, name, level, lon, lat):
        event = Observation(tenant=owner, dataset="water_levels", source="pegelonline", sensor_id=gauge,
                            observed_at=START + dt.timedelta(minutes=15 * i),
                            fields={"water_level": float(level), "station_name": name}, lon=lon, lat=lat)
        return Reading(owner, f"{owner}.{TOOL}.water_levels", 0, i, event)

    dalke = [reading(i, "gt-dalke", "Gütersloh (Dalke)", level, 8.3853, 51.9069)
             for i, level in enumerate(range(100, 281, 20))]
    lutter = [reading(i, "gt-lutter", "Gütersloh (Lutter)", level, 8.3467, 51.9203)
              for i, level in enumerate([120, 160, 200, 210, 190, 150, 120])]
    return [warning for warning, _ in tool.handle(dalke + lutter)]


def _store(warehouse, municipality: str, warnings: list[Observation]) -> None:
    columns = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", *warnings[0].fields]
    rows = [[w.event_id, w.source, w.sensor_id, w.observed_at, w.lon, w.lat, *w.fields.values()] for w in warnings]
    warehouse.insert(f"{naming.database(municipality)}.{naming.table(TOOL, 'warnings')}", rows,
                     column_names=columns)


@pytest.fixture(scope="module")
def world(platform, warehouse):
    suffix = uuid.uuid4().hex[:6]
    gue, rh, outsider = f"guetersloh-p{suffix}", f"rheda-p{suffix}", f"outsider-p{suffix}"
    municipalities = {
        gue: _municipality(gue, "Gütersloh", "05754008", [
            {"tool": TOOL, "dataset": "water_levels", "municipalities": [rh]},
            {"tool": TOOL, "dataset": "warnings", "public": True, "licence": "dl-de/zero-2-0"}]),
        rh: _municipality(rh, "Rheda-Wiedenbrück", "05754028", []),
        outsider: _municipality(outsider, "Harsewinkel", "05754012", [])}
    storage = WarehouseProvisioner(lambda: warehouse, embedded=True)
    provisioner = IdentityProvisioner(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    admin = KeycloakAdmin(platform.keycloak_url, keycloak.ADMIN_USER, keycloak.admin_password(platform))
    parts = {}
    try:
        for slug, municipality in municipalities.items():
            desired = plan(municipality, [CITYTOOL])
            ensure(storage, desired.warehouse, {})
            if slug != rh:
                parts[slug] = desired.identity
                ensure(provisioner, desired.identity,
                       {c.secret_key: uuid.uuid4().hex for c in desired.identity.clients if c.secret_key})
        # Gütersloh's tool reads its own gauges, Rheda's the ones Gütersloh shares; the outsider's reads nothing.
        warnings = {gue: _decide(gue, gue), rh: _decide(rh, gue), outsider: []}
        for slug in (gue, rh):
            _store(warehouse, slug, warnings[slug])
        catalogue = Catalogue(list(municipalities.values()), [CITYTOOL])
        yield World(gue, rh, outsider, parts, admin, warnings), catalogue
    finally:
        for part in parts.values():
            provisioner.delete(part, keep_data=False)
        provisioner.close()
        admin.close()


@pytest.fixture(scope="module")
def server(platform, warehouse, world, tmp_path_factory):
    from urbanstack.runtime.store import open_store

    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('toolpages') / 'store.db'}")
    store.upgrade()
    with WebServer(platform, world[1], warehouse, store) as web:
        yield web


def visit(page, server, path: str, label: str, status: int = 200):
    page.requests_seen.clear()
    page.console_errors.clear()
    response = page.goto(server.url + path)
    assert response.status == status, f"{label}: HTTP {response.status} for {path}"
    assert page.console_errors == [], f"{label}: {page.console_errors}"
    check_accessible(page, label)
    check_own_origin(page, server.url)
    page.console_errors.clear()
    return response


def screenshot(page, name: str) -> None:
    screenshots.save(page, f"tool-{name}")


def _signed_in(page, server, world: World, slug: str, path: str) -> None:
    staff = add_staff(world.admin, world.parts[slug], "gov-viewer", name="Erika Mustermann")
    browser_sign_in(page, server, slug, staff, path)


def test_the_gov_hub_shows_the_warnings_the_tool_raised_with_list_and_map(page, server, world):
    world, _ = world
    produced = world.warnings[world.gue]
    assert sorted((w.fields["gauge"], w.fields["level"]) for w in produced) == [
        ("gt-dalke", "alarm"), ("gt-dalke", "warning"), ("gt-lutter", "all_clear"), ("gt-lutter", "warning")]
    alarm = next(w for w in produced if w.fields["level"] == "alarm")
    path = f"/gov/{world.gue}/tools/{TOOL}/"
    _signed_in(page, server, world, world.gue, "")
    visit(page, server, f"/gov/{world.gue}/", "Gov Hub start page with the tool's page")
    assert page.get_by_role("link", name="Hochwasserwarnungen").get_attribute("href") == path
    visit(page, server, path, "Gov Hub Pegel-Warnung")
    assert page.locator("h1").inner_text() == "Hochwasserwarnungen"
    current = page.locator("#current-caption + thead + tbody tr")
    assert current.count() == 1       # the Dalke's alarm; the Lutter had its all-clear
    row = current.first.inner_text()
    assert "Gütersloh (Dalke)" in row and "Hochwasseralarm" in row and "Umkreis von 5 km um den Pegel" in row
    assert alarm.fields["identifier"] in row and "Schwelle 240 cm" in row
    messages = page.locator("#messages-caption + thead + tbody tr")
    assert messages.count() == 4
    newest_first = [messages.nth(i).inner_text() for i in range(4)]
    assert ["Hochwasseralarm" in newest_first[0], "Entwarnung" in newest_first[1]] == [True, True], newest_first
    assert "Gütersloh (Dalke)" in newest_first[0] and "Gütersloh (Lutter)" in newest_first[1]
    # The server-drawn map needs no script; the interactive one opens on request.
    assert page.locator("#warnings-map svg.map-svg title").text_content() == "Karte mit 1 Messstellen"
    assert page.locator("#warnings-map svg.map-svg text").nth(1).text_content().endswith(" km")   # scale bar
    screenshot(page, "pegel-warnung-gov")
    page.get_by_role("button", name="Interaktive Karte öffnen").click()
    page.wait_for_selector("#warnings-map-canvas canvas", timeout=20000)
    page.wait_for_selector("#warnings-map.map-drawn", timeout=20000)   # basemap and points rendered
    # One gauge: both maps open on its region with the nearest border in view, not an empty 2 km frame.
    west, south = json.loads(page.locator("#warnings-map").get_attribute("data-bounds"))[0]
    assert west < 7.0 and south < 51.9
    assert page.evaluate("""() => { const c = document.querySelector('.maplibregl-ctrl-scale');
                                    return c && c.textContent.trim().endsWith('km'); }""")
    assert page.console_errors == [], page.console_errors
    check_accessible(page, "Gov Hub Pegel-Warnung, interactive map")
    check_own_origin(page, server.url)
    screenshot(page, "pegel-warnung-gov-map")
    # (The City Tools page links it too; it reads the live Municipality from Kubernetes, so
    # tests/integration/test_gov_tools.py checks that link with the real operator.)


def test_a_municipality_nobody_shares_with_sees_no_warning(page, server, world):
    world, _ = world
    _signed_in(page, server, world, world.outsider, f"tools/{TOOL}/")
    visit(page, server, f"/gov/{world.outsider}/tools/{TOOL}/", "Gov Hub Pegel-Warnung without warnings")
    main = page.locator("main").inner_text()
    assert "Derzeit liegt kein Pegel über seiner Warnstufe." in main
    assert "Pegel-Warnung hat für Harsewinkel noch keine Meldung ausgelöst." in main
    assert "Dalke" not in main and "Lutter" not in main and page.locator("#warnings-map").count() == 0
    screenshot(page, "pegel-warnung-gov-none")
    # Gütersloh's page, with the outsider's session: sign-in for Gütersloh, not its warnings.
    page.goto(f"{server.url}/gov/{world.gue}/tools/{TOOL}/")
    assert "Dalke" not in page.content() and page.locator("#current-caption").count() == 0, page.url


def test_the_citizen_hub_shows_published_warnings_with_the_affected_area_and_no_script(page, server, world):
    world, _ = world
    visit(page, server, f"/{world.gue}/services/{TOOL}", "Citizen Hub Pegel-Warnung")
    # the tool's German description (spec.descriptionDe), not its English one, on the German page
    assert page.locator("main > p").first.inner_text() == CITYTOOL.spec.description_de
    section = page.locator("section[aria-labelledby=warnings-heading]").inner_text()
    assert "Hochwasseralarm: Pegel Gütersloh (Dalke)" in section
    assert "Umkreis von 5 km um den Pegel Gütersloh (Dalke)" in section
    assert "Lutter" not in section                       # its warning ended with an all-clear
    assert page.locator("script").count() == 0 and page.locator("svg.map-svg").count() == 1
    assert page.locator("#recent-caption + thead + tbody tr").count() == 4
    screenshot(page, "pegel-warnung-citizen")
    page.set_viewport_size({"width": 320, "height": 800})
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 320, "the page does not reflow at 320 px"
    # The messages' table reflows too: every row's text within the screen, none in a sideways-scrolling box.
    beyond = page.evaluate("""() => [...document.querySelectorAll('#recent-caption ~ tbody td')]
        .filter(td => td.getBoundingClientRect().right > 320 || td.scrollWidth > td.clientWidth + 1)
        .map(td => td.textContent.trim())""")
    assert beyond == [], f"cells cut off at 320 px: {beyond}"
    labels = page.evaluate("""() => [...document.querySelectorAll('#recent-caption ~ tbody tr:first-child td')]
        .map(td => getComputedStyle(td, '::before').content)""")
    assert labels == ['"Zeit"', '"Pegel"', '"Meldung"', '"Betroffenes Gebiet"'], labels   # each value with its header
    check_accessible(page, "Citizen Hub Pegel-Warnung at 320 px")
    screenshot(page, "pegel-warnung-citizen-320")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Rheda's tool raised the same warnings, but Rheda does not publish them; nobody shares with the outsider.
    visit(page, server, f"/{world.rh}/services/{TOOL}", "Citizen Hub, warnings not published")
    assert "veröffentlicht die Warnungen dieses Dienstes nicht als offene Daten" in page.locator("main").inner_text()
    assert "Dalke" not in page.locator("main").inner_text()
    visit(page, server, f"/{world.outsider}/services/{TOOL}", "Citizen Hub, no warnings")
    assert "Dalke" not in page.locator("main").inner_text()


def test_a_page_reads_the_newest_rows_within_its_bound_even_when_an_hour_is_dense(world, warehouse, monkeypatch):
    """PageContext.latest against the real engine and warehouse (no browser): the engine reads oldest
    first, so an older hour with more rows than the bound is left out rather than shown as newest."""
    from urbanstack.runtime.api.auth import Permission, Principal
    from urbanstack.runtime.api.query import QueryEngine
    from urbanstack.toolkit import pages

    world, catalogue = world
    slug = world.outsider          # its table is empty: nobody shares with it (the tests above saw to it)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    dense_hour = now.replace(minute=0, second=0) - dt.timedelta(hours=3)

    def warning(at: dt.datetime, n: int) -> Observation:
        return Observation(tenant=slug, dataset="warnings", source="test", sensor_id=f"s/{n}", observed_at=at,
                           fields={"level": "warning", "msg_type": "Alert", "identifier": f"id-{n}",
                                   "gauge_owner": slug, "gauge": f"g{n}", "station_name": f"S{n}",
                                   "water_level": 1.0, "threshold": 1.0, "cap": "<alert/>"})

    older = [warning(dense_hour + dt.timedelta(seconds=i), i) for i in range(120)]
    newest = [warning(now - dt.timedelta(minutes=5, seconds=i), 1000 + i) for i in range(10)]
    _store(warehouse, slug, older + newest)
    monkeypatch.setattr(pages, "READ_PAGE_ROWS", 50)
    monkeypatch.setattr(pages, "MAX_READ_PAGES", 1)
    principal = Principal(tenant=slug, roles=frozenset({"gov-viewer"}), subject="t",
                          permissions=frozenset({Permission.read_own}))
    ctx = pages.PageContext(hub="gov", municipality=catalogue.municipality(slug), tool=catalogue.tool(TOOL),
                            lang="de", principal=principal, engine=QueryEngine(warehouse, catalogue), url=str)
    rows = ctx.latest("warnings", limit=20)
    assert [r.sensor_id for r in rows] == [f"s/{1000 + i}" for i in range(10)]   # newest first, none of the dense hour
    assert not ctx.incomplete
    monkeypatch.setattr(pages, "READ_PAGE_ROWS", 200)
    rows = ctx.latest("warnings", limit=20)          # now the dense hour fits: its newest 10 follow
    assert [r.sensor_id for r in rows] == [f"s/{1000 + i}" for i in range(10)] + [f"s/{i}" for i in range(119, 109, -1)]
