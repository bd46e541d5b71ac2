"""The server-drawn map: every sensor is a point inside the picture, framed like the interactive map,
over the self-hosted basemap, and nothing in it is taken from the request unescaped."""

from __future__ import annotations

import json
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


def _border_vertices_inside(svg: str, inset: float) -> int:
    """How many basemap vertices lie well inside the picture: where the picture shows a border or coast
    (a polygon that covers the whole picture is clipped to a frame outside it)."""
    pairs = [(float(x), float(y)) for d in re.findall(r'<path d="([^"]+)" fill', svg)
             for x, y in re.findall(r"(-?[\d.]+) (-?[\d.]+)", d)]
    return sum(inset <= x <= pointmap.WIDTH - inset and inset <= y <= pointmap.HEIGHT - inset for x, y in pairs)


def test_one_place_is_shown_in_its_region_with_the_nearest_border_not_in_an_empty_frame(basemap):
    """One gauge (Gütersloh's Dalke; its messages all at one position): the map shows where it is,
    with the nearest border (the Netherlands, ~110 km west) inside the picture, the gauge in the middle."""
    gauge = [{"id": "gt-dalke", "name": "Gütersloh (Dalke)", "lon": 8.3853, "lat": 51.9069}] * 3
    svg = str(pointmap.svg(gauge, "Karte mit 1 Messstellen", "m", basemap))
    assert _border_vertices_inside(svg, pointmap.LOCATOR_INSET / 2) > 0, "no border in the picture"
    (x, y), *_ = circles(svg)
    assert abs(x - pointmap.WIDTH / 2) < 1 and abs(y - pointmap.HEIGHT / 2) < 1
    distance = re.search(r'<text x="12" y="\d+">([^<]+)</text>', svg).group(1)
    assert distance.endswith(" km") and 10 <= float(distance.split()[0]) <= 100, distance
    # the interactive map opens on the same view; points in a town keep their city-scale frame
    west, south = json.loads(pointmap.bounds_json(gauge, basemap))[0]
    assert west < 7.0 < 8.3853 and south < 51.9069
    assert pointmap.bounds_json(GUETERSLOH, basemap) == "" and pointmap.bounds_json(gauge, None) == ""
    assert pointmap._scale_bar(pointmap.frame(GUETERSLOH, basemap), 51.9)[1].endswith(" m")
