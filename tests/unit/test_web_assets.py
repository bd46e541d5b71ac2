"""The front-end bundle: built by the Python entry, named in its manifest, small enough for a
dashboard, and free of any reference to a CDN, web font or tile server."""

from __future__ import annotations

import gzip
import re

import pytest

from urbanstack import webassets as assets

FORBIDDEN = ["fonts.googleapis", "fonts.gstatic", "unpkg", "jsdelivr", "cdnjs", "cdn.", "demotiles",
             "api.maptiler", "tile.openstreetmap", "tiles.", "{z}/{x}/{y}", "api.mapbox"]
# Hosts that only appear in licence comments, XML namespaces and error messages; nothing
# is ever requested from them.
DOCUMENTATION_HOSTS = {"www.w3.org", "github.com", "maplibre.org", "maplibre.invalid",
                       "wiki.openstreetmap.org", "htmx.org", "developer.mozilla.org", "gist.github.com",
                       # the ALTCHA widget: its footer link (hidden on our pages) and Svelte's error-doc links;
                       # the signup pages' browser test reads the request log to prove nothing is fetched.
                       "altcha.org", "svelte.dev"}
URL = re.compile(rb"https?://([A-Za-z0-9.-]+)")


@pytest.fixture(scope="module")
def bundle():
    assets.build()
    return assets.manifest()


def built(bundle, logical: str) -> bytes:
    return (assets.DIST / bundle["files"][logical]).read_bytes()


def test_manifest_names_every_bundle_and_each_file_exists(bundle):
    assert set(bundle["files"]) == {"hub.js", "charts.js", "map.js", "map-worker.js", "hub.css", "basemap.json",
                                    "altcha.js", "altcha-worker.js", "altcha.css"}
    for logical, name in bundle["files"].items():
        assert (assets.DIST / name).is_file(), f"{logical}: {name} is missing"
        stem, ext = logical.rsplit(".", 1)
        assert re.fullmatch(rf"{re.escape(stem)}\.[0-9a-f]{{10}}\.{ext}", name), name


def test_second_build_is_skipped(bundle):
    assert assets.build() is False
    assert assets.is_current()
    assert bundle["inputs_sha256"] == assets.input_hash()


def test_no_bundle_points_at_another_host(bundle):
    for logical, name in bundle["files"].items():
        content = (assets.DIST / name).read_bytes()
        for needle in FORBIDDEN:
            assert needle.encode() not in content, f"{logical} mentions {needle!r}"
        hosts = {m.decode() for m in URL.findall(content)}
        assert hosts <= DOCUMENTATION_HOSTS, f"{logical} names unexpected hosts: {sorted(hosts - DOCUMENTATION_HOSTS)}"


def test_dashboard_page_without_map_loads_little_javascript(bundle):
    dashboard = built(bundle, "hub.js") + built(bundle, "charts.js")
    assert len(gzip.compress(dashboard, 9)) < 250_000
    assert b"maplibre" not in dashboard.lower(), "MapLibre leaked into the dashboard bundles"


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_chart_colours_have_three_to_one_contrast_against_white():
    source = (assets.FRONTEND / "src" / "charts.js").read_text()
    palette = re.findall(r"#[0-9a-fA-F]{6}", re.search(r"const PALETTE = \[(.*?)\]", source).group(1))
    assert len(palette) >= 4
    for colour in palette:
        ratio = 1.05 / (_luminance(colour) + 0.05)
        assert ratio >= 3.0, f"{colour} has only {ratio:.2f}:1 against white"
