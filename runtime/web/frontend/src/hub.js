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

function enhance(root) {
  const scope = root instanceof Element ? root : document.body;
  const regions = [...scope.querySelectorAll('[data-refresh-seconds]')];
  if (scope.matches('[data-refresh-seconds]')) regions.push(scope);
  regions.forEach(startRefresh);
  scope.querySelectorAll('button.refresh-toggle').forEach(setUpToggle);
  if (scope.matches('button.refresh-toggle')) setUpToggle(scope);
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
