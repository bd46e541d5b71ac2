// Builds the hubs' front end into ../static/dist with cache-busting file names.
//
//   node build.mjs            (python -m urbanstack.webassets build runs it,
//                              after `npm ci`, and skips it when nothing changed)
//
// Outputs (logical name -> hashed file, listed in dist/manifest.json):
//   hub.js        htmx + auto-refresh + request errors   (every page)
//   charts.js     uPlot charts from the figure's own table (pages with charts)
//   map.js        MapLibre map with a local style          (pages with a map only)
//   map-worker.js MapLibre's worker, loaded by map.js from the own origin
//   basemap.json  Natural Earth country borders around Germany as GeoJSON
//   hub.css       own stylesheet + uPlot's + MapLibre's CSS
//
// Every text file also gets pre-compressed siblings, <file>.gz (gzip -9) and <file>.br
// (brotli, quality 11), which the server sends by Accept-Encoding (runtime/web/compression.py),
// so no request pays for compression.
//
// ASSETS_INPUT_HASH (set by the Python entry) is recorded in the manifest so the
// next run can tell that the sources did not change.

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants as zlibConstants, gzipSync } from 'node:zlib';

import * as esbuild from 'esbuild';
import { feature } from 'topojson-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../static/dist');
const MODULES = path.join(HERE, 'node_modules');

// Germany and its neighbours; the map never shows anything outside this box.
const BASEMAP_BOUNDS = [2.5, 45.5, 19.5, 56.5]; // west, south, east, north
const COORDINATE_DECIMALS = 4; // ~10 m, finer than the 1:10m source
const HOME = 'Germany';

function hashed(name, content) {
  const digest = createHash('sha256').update(content).digest('hex').slice(0, 10);
  const ext = path.extname(name);
  return `${path.basename(name, ext)}.${digest}${ext}`;
}

function ringBounds(ring) {
  let [w, s, e, n] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of ring) {
    w = Math.min(w, x); e = Math.max(e, x); s = Math.min(s, y); n = Math.max(n, y);
  }
  return [w, s, e, n];
}

function overlaps([w, s, e, n], [W, S, E, N]) {
  return w <= E && e >= W && s <= N && n >= S;
}

function rounded(ring) {
  const f = 10 ** COORDINATE_DECIMALS;
  const out = [];
  for (const [x, y] of ring) {
    const point = [Math.round(x * f) / f, Math.round(y * f) / f];
    const last = out[out.length - 1];
    if (!last || last[0] !== point[0] || last[1] !== point[1]) out.push(point);
  }
  return out;
}

function polygonsNear(geometry) {
  const polygons = geometry?.type === 'Polygon' ? [geometry.coordinates]
    : geometry?.type === 'MultiPolygon' ? geometry.coordinates : [];
  return polygons.filter((p) => overlaps(ringBounds(p[0]), BASEMAP_BOUNDS)).map((p) => p.map(rounded));
}

async function countries(scale) {
  const topology = JSON.parse(await readFile(path.join(MODULES, `world-atlas/countries-${scale}.json`), 'utf8'));
  return feature(topology, topology.objects.countries).features;
}

// Natural Earth (public domain) via world-atlas' TopoJSON, converted to GeoJSON here so
// the browser needs neither topojson-client nor any tile server. Germany comes from the
// 1:10m data, its neighbours (context only) from 1:50m to keep the file small.
async function basemap() {
  const features = [];
  for (const [scale, home] of [['50m', false], ['10m', true]]) {
    for (const country of await countries(scale)) {
      if ((country.properties.name === HOME) !== home) continue;
      const kept = polygonsNear(country.geometry);
      if (!kept.length) continue;
      features.push({
        type: 'Feature',
        properties: { name: country.properties.name, home },
        geometry: { type: 'MultiPolygon', coordinates: kept },
      });
    }
  }
  if (!features.some((f) => f.properties.home)) throw new Error(`basemap: ${HOME} is missing from world-atlas`);
  return JSON.stringify({ type: 'FeatureCollection', features });
}

async function bundle(entry, options = {}) {
  const result = await esbuild.build({
    entryPoints: [path.join(HERE, 'src', entry)],
    bundle: true,
    minify: true,
    write: false,
    format: 'iife',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    legalComments: 'eof',
    logLevel: 'warning',
    outdir: OUT,
    // MapLibre's CSS embeds its control icons as data: SVGs; nothing is fetched.
    loader: { '.svg': 'dataurl' },
    ...options,
  });
  const [file] = result.outputFiles;
  return file.contents;
}

async function main() {
  await rm(OUT, { recursive: true, force: true });
  await mkdir(OUT, { recursive: true });
  const files = {};
  const emit = async (logical, content) => {
    const name = hashed(logical, content);
    await writeFile(path.join(OUT, name), content);
    await writeFile(path.join(OUT, `${name}.gz`), gzipSync(content, { level: 9 }));
    await writeFile(path.join(OUT, `${name}.br`), brotliCompressSync(content, {
      params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: content.length },
    }));
    files[logical] = name;
    return name;
  };

  const basemapName = await emit('basemap.json', await basemap());
  // MapLibre 6 runs its worker as a module worker; served from the own origin it needs
  // only `worker-src 'self'` (no blob:).
  const workerName = await emit('map-worker.js',
    await readFile(path.join(MODULES, 'maplibre-gl/dist/maplibre-gl-worker.mjs')));

  await emit('hub.js', await bundle('hub.js'));
  await emit('charts.js', await bundle('charts.js'));
  await emit('map.js', await bundle('map.js', {
    define: {
      __BASEMAP_FILE__: JSON.stringify(basemapName),
      __MAP_WORKER_FILE__: JSON.stringify(workerName),
    },
  }));
  await emit('hub.css', await bundle('hub.css'));
  // The signup form's proof of work (ALTCHA): widget, its PBKDF2 worker and its stylesheet.
  const altchaWorker = await emit('altcha-worker.js',
    await readFile(path.join(MODULES, 'altcha/dist/workers/pbkdf2.js')));
  await emit('altcha.js', await bundle('altcha.js', {
    define: { __ALTCHA_WORKER_FILE__: JSON.stringify(altchaWorker) },
  }));
  await emit('altcha.css', await readFile(path.join(MODULES, 'altcha/dist/external/altcha.css')));

  const manifest = {
    inputs_sha256: process.env.ASSETS_INPUT_HASH || null,
    files,
  };
  await writeFile(path.join(OUT, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  const written = (await readdir(OUT)).length;
  console.log(`front end: ${written} files in ${path.relative(process.cwd(), OUT) || OUT}`);
}

main().catch((error) => {
  console.error(`front end build failed: ${error.message}`);
  process.exit(1);
});
