// The ALTCHA proof-of-work widget for the signup form, self-hosted and CSP-safe: the
// "external" build injects no styles (altcha.css is linked by the page) and starts no
// blob: workers; its PBKDF2 worker is a file of this bundle on the own origin.
import 'altcha/external';
import 'altcha/i18n/de';

const script = document.currentScript;
const base = script ? script.src : location.href;
const workerUrl = new URL(__ALTCHA_WORKER_FILE__, base).href;
const algorithms = globalThis.$altcha && globalThis.$altcha.algorithms;
if (algorithms) {
  for (const name of ['PBKDF2/SHA-256', 'PBKDF2/SHA-384', 'PBKDF2/SHA-512']) {
    algorithms.set(name, () => new Worker(workerUrl));
  }
}
