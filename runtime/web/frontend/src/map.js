// Draws every <figure class="map" data-points='[{"id","name","lon","lat"}]'> with MapLibre
// and a style that lives entirely on the own origin: a background, the Natural Earth
// borders built into basemap.json, the points, and HTML labels (no glyph or sprite
// downloads, no tiles). Loaded only by pages that show a map. The table of positions in
// the figure carries the content; the canvas is keyboard-operable (arrow keys pan,
// +/- zoom) and labelled. See docs/web.md "Front end".
import { AttributionControl, Map as MapLibreMap, Marker, NavigationControl, ScaleControl, setWorkerUrl } from 'maplibre-gl';

/* global __BASEMAP_FILE__, __MAP_WORKER_FILE__ */
const SCRIPT_URL = document.currentScript?.src || document.baseURI;
setWorkerUrl(new URL(__MAP_WORKER_FILE__, SCRIPT_URL).href);
const BASEMAP_URL = new URL(__BASEMAP_FILE__, SCRIPT_URL).href;

const BASEMAP_BOUNDS = [[2.5, 45.5], [19.5, 56.5]];
const GERMANY = [[5.87, 47.27], [15.04, 55.06]];
const COLOURS = { sea: '#d9e6ef', home: '#fbfaf6', abroad: '#e6e4de', border: '#6f767e', point: '#1d5fa6' };

const maps = new WeakMap(); // figure -> MapLibre map

function german() {
  return !(document.documentElement.lang || 'de').startsWith('en');
}

function uiStrings(label) {
  const de = german();
  return {
    'Map.Title': label,
    'NavigationControl.ZoomIn': de ? 'Vergrößern' : 'Zoom in',
    'NavigationControl.ZoomOut': de ? 'Verkleinern' : 'Zoom out',
    'NavigationControl.ResetBearing': de ? 'Nach Norden ausrichten' : 'Reset bearing to north',
    'AttributionControl.ToggleAttribution': de ? 'Quellenangaben ein- oder ausblenden' : 'Toggle attribution',
    'ScaleControl.Meters': 'm',
    'ScaleControl.Kilometers': 'km',
  };
}

function readPoints(figure) {
  let raw;
  try {
    raw = JSON.parse(figure.dataset.points || '[]');
  } catch (error) {
    throw new Error(`map ${figure.id || ''}: data-points is not valid JSON (${error.message})`);
  }
  return raw.filter((p) => Number.isFinite(p.lon) && Number.isFinite(p.lat)
    && Math.abs(p.lon) <= 180 && Math.abs(p.lat) <= 90);
}

function style(points) {
  return {
    version: 8,
    sources: {
      basemap: { type: 'geojson', data: BASEMAP_URL, attribution: 'Grenzen: Natural Earth' },
      points: {
        type: 'geojson',
        data: {
          type: 'FeatureCollection',
          features: points.map((p) => ({
            type: 'Feature',
            properties: { id: String(p.id ?? ''), name: String(p.name ?? '') },
            geometry: { type: 'Point', coordinates: [p.lon, p.lat] },
          })),
        },
      },
    },
    layers: [
      { id: 'sea', type: 'background', paint: { 'background-color': COLOURS.sea } },
      {
        id: 'countries', type: 'fill', source: 'basemap',
        paint: { 'fill-color': ['case', ['get', 'home'], COLOURS.home, COLOURS.abroad] },
      },
      {
        id: 'borders', type: 'line', source: 'basemap',
        paint: { 'line-color': COLOURS.border, 'line-width': ['case', ['get', 'home'], 1.5, 0.75] },
      },
      {
        id: 'points', type: 'circle', source: 'points',
        paint: {
          'circle-radius': 7, 'circle-color': COLOURS.point,
          'circle-stroke-color': '#ffffff', 'circle-stroke-width': 2,
        },
      },
    ],
  };
}

function label(point) {
  const element = document.createElement('span');
  element.className = 'map-label';
  element.textContent = point.name ?? String(point.id ?? '');
  element.setAttribute('aria-hidden', 'true'); // the figure's table names every point
  return new Marker({ element, anchor: 'left', offset: [11, 0] }).setLngLat([point.lon, point.lat]);
}

function frame(map, points, bounds) {
  if (!points.length) {
    map.fitBounds(GERMANY, { padding: 20, animate: false });
  } else if (bounds) {
    // one place: the server's locator view (pointmap.py), wide enough to show the nearest border
    map.fitBounds(bounds, { padding: 0, animate: false });
  } else if (points.length === 1) {
    map.jumpTo({ center: [points[0].lon, points[0].lat], zoom: 11 });
  } else {
    const lons = points.map((p) => p.lon);
    const lats = points.map((p) => p.lat);
    map.fitBounds([[Math.min(...lons), Math.min(...lats)], [Math.max(...lons), Math.max(...lats)]],
      // labels sit right of their point, and the zoom buttons at the top right
      { padding: { top: 48, bottom: 48, left: 48, right: 120 }, maxZoom: 13, animate: false });
  }
}

function draw(figure) {
  if (maps.has(figure)) return;
  let container = figure.querySelector('.map-canvas');
  if (!container) {
    container = document.createElement('div');
    container.className = 'map-canvas';
    (figure.querySelector('figcaption') ?? figure.firstElementChild)?.after(container) ?? figure.prepend(container);
  }
  const points = readPoints(figure);
  const labelledBy = figure.getAttribute('aria-labelledby');
  const caption = (figure.querySelector('figcaption') || (labelledBy && document.getElementById(labelledBy)))
    ?.textContent.trim() || (german() ? 'Karte' : 'Map');
  const help = german()
    ? 'Pfeiltasten verschieben die Karte, Plus und Minus zoomen.'
    : 'Arrow keys pan the map, plus and minus zoom.';
  const map = new MapLibreMap({
    container,
    style: style(points),
    bounds: GERMANY,
    maxBounds: BASEMAP_BOUNDS,
    attributionControl: false,
    scrollZoom: false, // the page scrolls; zoom with buttons, keys, double click or pinch
    dragRotate: false,
    pitchWithRotate: false,
    keyboard: true,
    locale: uiStrings(`${caption}. ${help}`),
  });
  map.touchZoomRotate.disableRotation();
  map.addControl(new NavigationControl({ showCompass: false }), 'top-right');
  map.addControl(new ScaleControl({ unit: 'metric' }), 'bottom-left');
  map.addControl(new AttributionControl({ compact: true }), 'bottom-right');
  frame(map, points, figure.dataset.bounds ? JSON.parse(figure.dataset.bounds) : null);
  points.forEach((point) => label(point).addTo(map));
  map.once('load', () => figure.classList.add('map-drawn'));
  maps.set(figure, map);
  if (figure.hasAttribute('data-map-on-demand')) {
    figure.classList.add('map-interactive'); // hides the server-drawn SVG and the button
    map.getCanvas().focus(); // the user asked for it: keys work at once
  }
}

function destroy(figure) {
  const map = maps.get(figure);
  if (map) {
    map.remove();
    maps.delete(figure);
  }
}

// A figure with data-map-on-demand is drawn only once the user asked (hub.js marks it map-requested
// and sends urbanstack:map-open); others at once.
function wanted(figure) {
  return !figure.hasAttribute('data-map-on-demand') || figure.classList.contains('map-requested');
}

function drawAll(root) {
  const scope = root instanceof Element ? root : document.body;
  const figures = [...scope.querySelectorAll('figure.map')];
  if (scope.matches('figure.map')) figures.push(scope);
  for (const figure of figures.filter(wanted)) {
    try {
      draw(figure);
    } catch (error) {
      console.error(error); // the table of positions stays
    }
  }
}

document.addEventListener('htmx:load', (event) => drawAll(event.target));
document.addEventListener('urbanstack:map-open', (event) => drawAll(event.detail.figure));
document.addEventListener('htmx:beforeCleanupElement', (event) => {
  if (event.target instanceof Element && event.target.matches('figure.map')) destroy(event.target);
});
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => drawAll(document.body));
else drawAll(document.body);
