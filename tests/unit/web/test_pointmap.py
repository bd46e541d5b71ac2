"""The server-drawn map: every sensor is a point inside the picture, framed like the interactive map,
over the self-hosted basemap, and nothing in it is taken from the request unescaped."""

from __future__ import annotations

import re

import pytest

from urbanstack import webassets as assets
from urbanstack.runtime.web import pointmap
from urbanstack.runtime.web.rendering import Assets

GUETERSLOH = [{"id": "s1", "name": "Berliner Straße", "lon": 8.3834, "lat": 51.9066},
              {"id": "s2", "name": "Kökerstraße", "lon": 8.3790, "lat": 51.9049},
              {"id": "s3", "name": "<b>Bahnhof</b>", "lon": 8.3905, "lat": 51.9012}]


@pytest.fixture(scope="module")
def basemap():
    assets.build()
    return Assets().path("basemap.json")


def circles(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r'<circle cx="([-\d.]+)" cy="([-\d.]+)"', svg)]


def test_points_lie_inside_the_picture_in_the_right_order(basemap):
    svg = str(pointmap.svg(GUETERSLOH, "Zähler", "m", basemap))
    points = circles(svg)
    assert len(points) == 3
    for x, y in points:
        assert pointmap.PADDING - 1 <= x <= pointmap.WIDTH - pointmap.PADDING + 1
        assert pointmap.PADDING - 1 <= y <= pointmap.HEIGHT - pointmap.PADDING + 1
    (x1, y1), (x2, y2), (x3, _y3) = points
    assert x2 < x1 < x3 and y1 < y2  # west is left, north is up
    assert 'role="img"' in svg and '<title id="m-svg-title">Zähler</title>' in svg
    assert "&lt;b&gt;Bahnhof&lt;/b&gt;" in svg and "<b>" not in svg
    assert "Grenzen: Natural Earth" in svg


def test_basemap_is_drawn_and_germany_is_home(basemap):
    svg = str(pointmap.svg(GUETERSLOH, "Zähler", "m", basemap))
    # at city scale the frame lies inside Germany: one home polygon fills the picture
    assert f'fill="{pointmap.COLOURS["home"]}"' in svg
    whole = str(pointmap.svg([], "Deutschland", "d", basemap))
    assert whole.count("<path d=") >= 5  # Germany and neighbours
    assert circles(whole) == []


def test_without_a_basemap_file_the_points_still_show(tmp_path):
    svg = str(pointmap.svg(GUETERSLOH[:1], "Ein Zähler", "m", tmp_path / "missing.json"))
    assert len(circles(svg)) == 1 and "<path d=\"M" not in svg.split("</title>")[1].split("<g ")[0]


def test_scale_bar_is_a_round_distance():
    length, text = pointmap._scale_bar(pointmap.frame(GUETERSLOH), 51.9)
    assert re.fullmatch(r"(1|2|5)(0*) (m|km)", text), text
    assert 0 < length <= pointmap.WIDTH / 5 + 1


def test_borders_far_outside_the_picture_are_clipped(basemap):
    city = str(pointmap.svg(GUETERSLOH, "Zähler", "m", basemap))
    numbers = [float(n) for d in re.findall(r'<path d="([^"]+)" fill', city) for n in re.findall(r"-?[\d.]+", d)]
    assert numbers, "no basemap in the picture"
    assert min(numbers) >= -pointmap.CLIP_MARGIN - 0.1
    assert max(numbers) <= pointmap.WIDTH + pointmap.CLIP_MARGIN + 0.1
    assert len(city) < 20_000  # Germany's 1:10m border alone would be ~100 KB
