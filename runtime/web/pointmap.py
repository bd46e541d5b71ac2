"""A map of points as SVG, drawn on the server: the default map of a page.

It needs no JavaScript and no WebGL and costs a few kilobytes of markup, where the interactive
MapLibre map (``map.js``) costs ~450 KB of compressed script; pages show this one and load
MapLibre only when the user asks for it (docs/web.md, "Map"). The background is the same
self-hosted basemap the interactive map uses (``basemap.json`` of the front-end build: Natural
Earth borders of Germany and its neighbours), projected in Web Mercator like MapLibre's, so both
maps frame the points the same way. The picture is decoration for sighted users (``role="img"``
with a title); the figure's table of positions carries the content.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 400
PADDING = 36  # px around the points' box (labels sit right of their point)
MIN_SPAN_DEGREES = 0.02  # ~2 km: points close together still show their surroundings
ONE_PLACE_DEGREES = 0.001  # ~100 m: points closer than this are one place (one gauge, one counter)
GERMANY = (5.87, 47.27, 15.04, 55.06)
MAX_LABELS = 30  # more names than this would overlap; the table names every point
COLOURS = {"sea": "#d9e6ef", "home": "#fbfaf6", "abroad": "#e6e4de", "border": "#6f767e", "point": "#1d5fa6",
           "text": "#1f2328"}


@lru_cache(maxsize=4)
def _basemap(path: str) -> tuple[tuple[bool, tuple[tuple[tuple[float, float], ...], ...]], ...]:
    """(home, rings) per polygon of the basemap file."""
    data = json.loads(Path(path).read_text())
    polygons = []
    for feature in data.get("features", []):
        home = bool(feature.get("properties", {}).get("home"))
        geometry = feature.get("geometry") or {}
        parts = geometry.get("coordinates", []) if geometry.get("type") == "MultiPolygon" else \
            [geometry.get("coordinates", [])] if geometry.get("type") == "Polygon" else []
        for polygon in parts:
            polygons.append((home, tuple(tuple((float(x), float(y)) for x, y in ring) for ring in polygon)))
    return tuple(polygons)


def _mercator_y(lat: float) -> float:
    lat = max(-85.0, min(85.0, lat))
    return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


class Projection:
    """Longitude/latitude to SVG pixels for a box, keeping the aspect ratio (Web Mercator)."""

    def __init__(self, west: float, south: float, east: float, north: float):
        x0, x1 = math.radians(west), math.radians(east)
        y0, y1 = _mercator_y(south), _mercator_y(north)
        self.scale = min((WIDTH - 2 * PADDING) / max(x1 - x0, 1e-9), (HEIGHT - 2 * PADDING) / max(y1 - y0, 1e-9))
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2

    @classmethod
    def around(cls, lon: float, lat: float, scale: float) -> "Projection":
        """(lon, lat) in the middle at ``scale`` px per radian."""
        found = cls.__new__(cls)
        found.scale, found.cx, found.cy = scale, math.radians(lon), _mercator_y(lat)
        return found

    def __call__(self, lon: float, lat: float) -> tuple[float, float]:
        return (WIDTH / 2 + (math.radians(lon) - self.cx) * self.scale,
                HEIGHT / 2 - (_mercator_y(lat) - self.cy) * self.scale)

    def metres_per_pixel(self, lat: float) -> float:
        return 6_378_137 * math.cos(math.radians(lat)) / self.scale

    def bounds(self) -> tuple[float, float, float, float]:
        """The box the picture shows (west, south, east, north)."""
        west = math.degrees(self.cx - WIDTH / 2 / self.scale)
        east = math.degrees(self.cx + WIDTH / 2 / self.scale)
        lat = lambda y: math.degrees(2 * math.atan(math.exp(y)) - math.pi / 2)  # noqa: E731
        return west, lat(self.cy - HEIGHT / 2 / self.scale), east, lat(self.cy + HEIGHT / 2 / self.scale)


def frame(points: Sequence[dict], basemap_file: Path | None = None) -> Projection:
    """The box around ``points``. Points at one place get a locator view instead: the
    basemap has borders only, so a city-scale box around one point would be an empty frame; the
    view widens until the nearest border (or coast) is well inside the picture."""
    if not points:
        return Projection(*GERMANY)
    lons = [p["lon"] for p in points]
    lats = [p["lat"] for p in points]
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    one_place = max(east - west, north - south) < ONE_PLACE_DEGREES
    if east - west < MIN_SPAN_DEGREES:
        middle = (east + west) / 2
        west, east = middle - MIN_SPAN_DEGREES / 2, middle + MIN_SPAN_DEGREES / 2
    if north - south < MIN_SPAN_DEGREES / 1.6:
        middle = (north + south) / 2
        south, north = middle - MIN_SPAN_DEGREES / 3.2, middle + MIN_SPAN_DEGREES / 3.2
    box = Projection(west, south, east, north)
    if one_place and basemap_file is not None and basemap_file.exists():
        lon, lat = (west + east) / 2, (south + north) / 2
        scale = _locator_scale(str(basemap_file), round(lon, 3), round(lat, 3))
        if scale < box.scale:
            return Projection.around(lon, lat, max(scale, Projection(*GERMANY).scale))
    return box


LOCATOR_INSET = 100  # px: the nearest border lies at least this far inside the picture's edge


@lru_cache(maxsize=256)
def _locator_scale(path: str, lon: float, lat: float) -> float:
    """The largest scale (px per radian) at which some vertex of the basemap's borders lies inside
    the picture, LOCATOR_INSET from its edges, with (lon, lat) in the middle."""
    x0, y0 = math.radians(lon), _mercator_y(lat)
    half_w, half_h = WIDTH / 2 - LOCATOR_INSET, HEIGHT / 2 - LOCATOR_INSET
    best = 0.0
    for _home, rings in _basemap(path):
        for ring in rings:
            for vlon, vlat in ring:
                dx, dy = abs(math.radians(vlon) - x0), abs(_mercator_y(vlat) - y0)
                best = max(best, min(half_w / max(dx, 1e-12), half_h / max(dy, 1e-12)))
    return best


def bounds_json(points: Sequence[dict], basemap_file: Path | None) -> str:
    """The locator view of :func:`frame` as ``[[west, south], [east, north]]`` for MapLibre's
    ``fitBounds``, so the interactive map opens on the same view; "" where the points frame it."""
    if not points:
        return ""
    box = frame(points, basemap_file)
    if box.scale >= frame(points).scale:
        return ""
    west, south, east, north = box.bounds()
    return json.dumps([[round(west, 4), round(south, 4)], [round(east, 4), round(north, 4)]])


def _overlaps(ring: Sequence[tuple[float, float]], box: tuple[float, float, float, float]) -> bool:
    west, south, east, north = box
    xs = [x for x, _ in ring]
    ys = [y for _, y in ring]
    return min(xs) <= east and max(xs) >= west and min(ys) <= north and max(ys) >= south


CLIP_MARGIN = 20  # px outside the picture: clipped edges never show


def _clip(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A ring clipped to the picture plus a margin (Sutherland–Hodgman against each side), so a
    city-scale map does not carry the whole of Germany's border."""
    low_x, low_y, high_x, high_y = -CLIP_MARGIN, -CLIP_MARGIN, WIDTH + CLIP_MARGIN, HEIGHT + CLIP_MARGIN
    edges = ((0, low_x, True), (0, high_x, False), (1, low_y, True), (1, high_y, False))
    for axis, limit, keep_above in edges:
        if not points:
            break
        inside = (lambda q: q[axis] >= limit) if keep_above else (lambda q: q[axis] <= limit)
        clipped = []
        previous = points[-1]
        for current in points:
            if inside(current) != inside(previous):
                share = (limit - previous[axis]) / (current[axis] - previous[axis])
                crossing = [previous[0] + share * (current[0] - previous[0]),
                            previous[1] + share * (current[1] - previous[1])]
                crossing[axis] = limit
                clipped.append((crossing[0], crossing[1]))
            if inside(current):
                clipped.append(current)
            previous = current
        points = clipped
    return points


def _path(rings: Iterable[Sequence[tuple[float, float]]], project: Projection) -> str:
    parts = []
    for ring in rings:
        last = None
        points = []
        for x, y in _clip([project(lon, lat) for lon, lat in ring]):
            point = (round(x, 1), round(y, 1))
            if point != last:  # far out, many vertices fall on one pixel
                points.append(f"{point[0]:g} {point[1]:g}")
                last = point
        if len(points) >= 3:
            parts.append("M" + "L".join(points) + "Z")
    return "".join(parts)


def _scale_bar(project: Projection, lat: float) -> tuple[float, str]:
    """A round distance about a fifth of the picture wide: (length in px, text)."""
    target = project.metres_per_pixel(lat) * WIDTH / 5
    step = 10 ** math.floor(math.log10(target))
    metres = max(m for m in (step, 2 * step, 5 * step) if m <= target)
    text = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    return metres / project.metres_per_pixel(lat), text


def svg(points: Sequence[dict], title: str, id: str, basemap_file: Path | None) -> Markup:
    """The map as an inline ``<svg>``; ``points``: dicts with ``id``, ``name``, ``lon``, ``lat``."""
    project = frame(points, basemap_file)
    box = project.bounds()
    shapes = []
    if basemap_file is not None and basemap_file.exists():
        for home, rings in _basemap(str(basemap_file)):
            if rings and _overlaps(rings[0], box):
                d = _path(rings, project)
                if d:
                    shapes.append(f'<path d="{d}" fill="{COLOURS["home" if home else "abroad"]}" '
                                  f'stroke="{COLOURS["border"]}" stroke-width="{1.5 if home else 0.75}" '
                                  'stroke-linejoin="round" fill-rule="evenodd"/>')
    marks, labels = [], []
    for point in points:
        x, y = project(point["lon"], point["lat"])
        marks.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{COLOURS["point"]}" stroke="#ffffff" '
                     'stroke-width="2"/>')
        if len(points) <= MAX_LABELS:
            labels.append(f'<text x="{x + 10:.1f}" y="{y + 4:.1f}">{escape(point.get("name") or point["id"])}</text>')
    length, distance = _scale_bar(project, (box[1] + box[3]) / 2)
    return Markup(
        f'<svg class="map-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{escape(id)}-svg-title" '
        f'focusable="false" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(id)}-svg-title">{escape(title)}</title>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="{COLOURS["sea"]}"/>'
        + "".join(shapes) + "".join(marks)
        + f'<g font-family="system-ui, sans-serif" font-size="13" fill="{COLOURS["text"]}" stroke="#ffffff" '
          'stroke-width="3" paint-order="stroke" stroke-linejoin="round">' + "".join(labels)
        + f'<path d="M12 {HEIGHT - 14}v6h{length:.1f}v-6" fill="none" stroke="{COLOURS["text"]}" stroke-width="1.5"/>'
          f'<text x="12" y="{HEIGHT - 20}">{distance}</text>'
          f'<text x="{WIDTH - 8}" y="{HEIGHT - 8}" text-anchor="end" font-size="11">Grenzen: Natural Earth</text></g>'
        '</svg>')
