// Every hub page loads this (deferred): htmx, auto-refresh with pause, and a visible
// message when an htmx request fails. All behaviour comes from data attributes; the
// pages send `Content-Security-Policy: default-src 'self'`, so nothing here evaluates
// strings or injects inline styles.
import htmx from 'htmx.org';

Object.assign(htmx.config, {
  includeIndicatorStyles: false, // would inject an inline <style>; hub.css styles .htmx-indicator
  allowEval: false,
  allowScriptTags: false,
  selfRequestsOnly: true,
});
window.htmx = htmx;

const MIN_REFRESH_SECONDS = 5;
const paused = new Set(); // ids of refresh regions the user paused; survives swaps
const timers = new WeakMap();

function regionOf(button) {
  const id = button.getAttribute('aria-controls');
  return (id && document.getElementById(id)) || button.closest('[data-refresh-seconds]');
}

function regionKey(region) {
  return region.id || region.getAttribute('data-refresh-seconds');
}

function startRefresh(region) {
  if (timers.has(region)) return;
  const seconds = Math.max(MIN_REFRESH_SECONDS, Number(region.dataset.refreshSeconds) || 60);
  const timer = window.setInterval(() => {
    if (!region.isConnected) {
      window.clearInterval(timer);
      return;
    }
    if (paused.has(regionKey(region)) || document.hidden) return;
    // the region's own hx-trigger="refresh" (or "refresh from:body") decides what loads
    htmx.trigger(region, 'refresh');
  }, seconds * 1000);
  timers.set(region, timer);
}

function setUpToggle(button) {
  if (button.dataset.refreshReady) return;
  button.dataset.refreshReady = '1';
  const region = regionOf(button);
  if (!region) return;
  const key = regionKey(region);
  button.setAttribute('aria-pressed', String(paused.has(key)));
  button.hidden = false; // rendered hidden: without JavaScript it would do nothing
  button.addEventListener('click', () => {
    const nowPaused = !paused.has(key);
    if (nowPaused) paused.add(key);
    else paused.delete(key);
    button.setAttribute('aria-pressed', String(nowPaused));
  });
}

// Maps: the page shows a server-drawn SVG; "Open interactive map" loads map.js (MapLibre, ~450 KB
// compressed) from the figure's data-map-script once, then asks it to draw that figure. Opened
// maps stay open across htmx swaps of their region (keyed by the figure's id).
const openedMaps = new Set();
let mapScript = null;

function openMap(figure) {
  openedMaps.add(figure.id);
  figure.classList.add('map-requested');
  const request = () => document.dispatchEvent(new CustomEvent('urbanstack:map-open', { detail: { figure } }));
  if (mapScript) {
    if (mapScript.dataset.loaded) request();
    else mapScript.addEventListener('load', request, { once: true });
    return;
  }
  mapScript = document.createElement('script');
  mapScript.src = figure.dataset.mapScript;
  mapScript.addEventListener('load', () => { mapScript.dataset.loaded = '1'; }, { once: true });
  mapScript.addEventListener('error', () => {
    mapScript.remove();
    mapScript = null;
    figure.classList.remove('map-requested');
    const german = (document.documentElement.lang || 'de').startsWith('de');
    figure.querySelector('.map-open')?.after(Object.assign(document.createElement('p'), {
      className: 'notice notice-error request-error',
      textContent: german ? 'Die interaktive Karte konnte nicht geladen werden.' : 'The interactive map could not be loaded.',
    }));
  }, { once: true });
  document.head.append(mapScript); // map.js draws every requested figure when it starts
}

function setUpMap(figure) {
  const button = figure.querySelector('button.map-open');
  if (!button || button.dataset.mapReady || !figure.dataset.mapScript) return;
  button.dataset.mapReady = '1';
  button.hidden = false; // rendered hidden: without JavaScript it would do nothing
  button.addEventListener('click', () => openMap(figure));
  if (figure.id && openedMaps.has(figure.id)) openMap(figure);
}

function enhance(root) {
  const scope = root instanceof Element ? root : document.body;
  const regions = [...scope.querySelectorAll('[data-refresh-seconds]')];
  if (scope.matches('[data-refresh-seconds]')) regions.push(scope);
  regions.forEach(startRefresh);
  scope.querySelectorAll('button.refresh-toggle').forEach(setUpToggle);
  if (scope.matches('button.refresh-toggle')) setUpToggle(scope);
  scope.querySelectorAll('figure.map[data-map-on-demand]').forEach(setUpMap);
  if (scope.matches('figure.map[data-map-on-demand]')) setUpMap(scope);
}

function stopRefresh(element) {
  const timer = timers.get(element);
  if (timer !== undefined) {
    window.clearInterval(timer);
    timers.delete(element);
  }
}

// A failed htmx request shows a message next to the element that asked (role=alert),
// instead of silently leaving stale content on screen.
function showRequestError(event) {
  const source = event.detail.elt;
  if (!(source instanceof Element)) return;
  const xhr = event.detail.xhr;
  const german = (document.documentElement.lang || 'de').startsWith('de');
  const reason = xhr && xhr.status ? `HTTP ${xhr.status}` : (german ? 'keine Verbindung' : 'no connection');
  const text = german
    ? `Aktualisierung fehlgeschlagen (${reason}). Die angezeigten Daten sind möglicherweise veraltet.`
    : `Update failed (${reason}). The data shown may be out of date.`;
  let box = source.previousElementSibling;
  if (!box || !box.classList.contains('request-error')) {
    box = document.createElement('p');
    box.className = 'notice notice-error request-error';
    box.setAttribute('role', 'alert');
    source.before(box);
  }
  box.textContent = text;
}

function clearRequestError(event) {
  const source = event.detail.elt;
  const box = source instanceof Element ? source.previousElementSibling : null;
  if (box && box.classList.contains('request-error') && !event.detail.isError) box.remove();
}

document.addEventListener('htmx:load', (event) => enhance(event.target));
document.addEventListener('htmx:beforeCleanupElement', (event) => stopRefresh(event.target));
document.addEventListener('htmx:responseError', showRequestError);
document.addEventListener('htmx:sendError', showRequestError);
document.addEventListener('htmx:beforeSwap', clearRequestError);
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => enhance(document.body));
else enhance(document.body);
