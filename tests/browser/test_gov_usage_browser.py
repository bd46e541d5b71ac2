"""The Gov Hub's usage page and the ops console's impact page in real Chromium: axe-core
(WCAG 2.1 A/AA) at 1280 px and 320 px, no sideways scrolling at 320 px, nothing from another
origin, no console errors, and a statement download saved by the browser.

The data are the real ledger in chDB and the real metadata store (``UsageWorld`` of
tests/integration/test_gov_usage.py). The sessions are made in the store and handed to the
browser as its cookie: the Keycloak sign-in itself is tested in test_gov_hub_signin.py.
Screenshots: gov-usage.png, gov-usage-320.png, ops-impact.png (folder: tests/screenshots.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import screenshots
from conftest import check_accessible, check_own_origin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from test_gov_usage import ROLES, UsageWorld, module_ledger, ops_headers  # noqa: E402,F401 - fixture

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def world(module_ledger, settings, issuer, warehouse, metadata_store):
    return UsageWorld(module_ledger, settings, issuer, warehouse, metadata_store)


def _cookie(base: str, header: dict) -> dict:
    name, _, value = header["Cookie"].partition("=")
    return {"name": name, "value": value, "url": base}


def _check(page, base: str, label: str) -> None:
    check_accessible(page, label)
    check_own_origin(page, base)
    assert page.console_errors == [], f"{label}: {page.console_errors}"
    page.set_viewport_size({"width": 320, "height": 800})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                     && !(e.parentElement && e.parentElement.closest('.table-scroll')))
        .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
    assert overflow <= 0, f"{label} scrolls sideways at 320 px by {overflow} px: {wide}"
    check_accessible(page, f"{label} at 320 px")


def test_the_usage_page_is_accessible_reflows_and_downloads_a_statement(page, serve_app, world):
    from urbanstack import serve

    base = serve_app(serve.PathDispatch(world.api, world.web))
    page.context.add_cookies([_cookie(base, world.staff(world.gue))])
    response = page.goto(f"{base}/gov/{world.gue}/usage")
    assert response.status == 200
    # what a person reads: the share of the included amount in words, next to the bar
    row = page.locator('tr[data-meter="rows_stored"]')
    assert "150 %" in row.inner_text() and "über der enthaltenen Menge" in row.inner_text()
    assert page.locator('meter[aria-label^="Gespeicherte Zeilen: 150 %"]').count() == 1
    assert world.frozen.hash in page.locator(f'tr[data-month="{world.frozen_month:%Y-%m}"]').inner_text()
    screenshots.save(page, "gov-usage")
    page.console_errors.clear()
    with page.expect_download() as download:
        page.locator(f'a[href$="/usage/statements/{world.frozen_month:%Y-%m}.csv"]').click()
    saved = download.value
    assert saved.suggested_filename == f"statement-{world.gue}-{world.frozen_month:%Y-%m}.csv"
    assert Path(saved.path()).read_bytes() == world.frozen.to_csv().encode("utf-8")
    _check(page, base, "usage page")
    screenshots.save(page, "gov-usage-320")


def test_the_ops_impact_page_is_accessible(page, serve_app, world):
    from urbanstack import serve

    base = serve_app(serve.PathDispatch(world.api, world.web))
    page.context.add_cookies([_cookie(base, ops_headers(world.store))])
    response = page.goto(f"{base}/ops/impact")
    assert response.status == 200
    assert "Stand 31.12.2023 (Destatis)" in page.locator("main").inner_text()
    screenshots.save(page, "ops-impact")
    _check(page, base, "ops impact page")
