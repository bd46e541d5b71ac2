// Draws every server-rendered <figure class="chart"> with uPlot, from the figure's compact
// JSON (<script type="application/json" class="chart-data">) or, without it, from the numbers
// in its own table (td[data-value]); no second request. Each unit gets its own y axis
// (the first on the left, the second on the right, labelled with the unit). The canvas is decoration for
// sighted users: the summary and the table carry the content, so .chart-canvas stays
// aria-hidden. Series differ by colour AND line dash / point shape (lines) or fill
// pattern (bars), shown in a legend. See docs/web.md "Front end".
import uPlot from 'uplot';

// Each colour has at least 3:1 contrast against white (tests/unit/test_web_assets.py checks).
const PALETTE = ['#1d5fa6', '#c2410c', '#2e7d32', '#7b2d8e', '#8a5a00', '#00747a'];
const DASHES = [[], [10, 5], [2, 4], [14, 4, 3, 4], [6, 3], [1, 3, 8, 3]];
const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross', 'hollow'];
const PATTERNS = ['solid', 'stripes', 'dots', 'crosshatch', 'backslash', 'grid'];
const FONT = '13px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
const AXIS_COLOUR = '#3d4650';
const GRID_COLOUR = '#e3e7eb';
const MIN_POINT_GAP_PX = 12;

const GERMAN_NAMES = {
  MMMM: ['Januar', 'Februar', 'März', 'April', 'Mai', 'Juni', 'Juli', 'August', 'September', 'Oktober', 'November', 'Dezember'],
  MMM: ['Jan', 'Feb', 'Mär', 'Apr', 'Mai', 'Jun', 'Jul', 'Aug', 'Sep', 'Okt', 'Nov', 'Dez'],
  WWWW: ['Sonntag', 'Montag', 'Dienstag', 'Mittwoch', 'Donnerstag', 'Freitag', 'Samstag'],
  WWW: ['So', 'Mo', 'Di', 'Mi', 'Do', 'Fr', 'Sa'],
};

// uPlot's time-axis table: [tick step (s), label, label when the year / month / day /
// hour / minute / second changes, ..., mode] with German day.month order.
const TIME_AXIS = [
  [3600 * 24 * 365, '{YYYY}', null, null, null, null, null, null, 1],
  [3600 * 24 * 28, '{MMM}', '\n{YYYY}', null, null, null, null, null, 1],
  [3600 * 24, '{D}.{M}.', '\n{YYYY}', null, null, null, null, null, 1],
  [3600, '{HH}:{mm}', '\n{D}.{M}.{YYYY}', null, '\n{D}.{M}.', null, null, null, 1],
  [60, '{HH}:{mm}', '\n{D}.{M}.{YYYY}', null, '\n{D}.{M}.', null, null, null, 1],
  [1, ':{ss}', '\n{D}.{M}.{YYYY} {HH}:{mm}', null, '\n{D}.{M}. {HH}:{mm}', null, '\n{HH}:{mm}', null, 1],
];

const charts = new WeakMap(); // figure -> { plot, observer }

function language() {
  return (document.documentElement.lang || 'de').startsWith('en') ? 'en-GB' : 'de-DE';
}

// {x: [Unix seconds], labels?: [text], series: [{name, unit, values}]} as the server writes it.
function readJson(figure, script) {
  const data = JSON.parse(script.textContent);
  const x = data.x || [];
  const labels = x.map((t, i) => ({ value: new Date(t * 1000).toISOString(), text: data.labels?.[i] ?? '' }));
  const series = data.series || [];
  return {
    names: series.map((s) => s.name),
    units: series.map((s) => s.unit || ''),
    labels,
    columns: series.map((s) => s.values.map((v) => (Number.isFinite(v) ? v : null))),
  };
}

function readTable(figure) {
  const script = figure.querySelector('script.chart-data');
  if (script) return readJson(figure, script);
  const table = figure.querySelector('.chart-table table');
  if (!table) throw new Error('figure.chart needs a <table> inside .chart-table');
  const head = [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim());
  const rows = [...table.querySelectorAll('tbody tr')];
  const labels = [];
  const columns = head.slice(1).map(() => []);
  for (const row of rows) {
    const cells = [...row.cells];
    labels.push({ value: cells[0]?.dataset.value ?? '', text: cells[0]?.textContent.trim() ?? '' });
    columns.forEach((column, i) => {
      const raw = cells[i + 1]?.dataset.value;
      const number = raw === undefined || raw === '' ? null : Number(raw);
      column.push(Number.isFinite(number) ? number : null);
    });
  }
  const unit = figure.dataset.unit || '';
  return { names: head.slice(1), units: head.slice(1).map(() => unit), labels, columns };
}

function size(target) {
  const width = Math.max(160, Math.floor(target.clientWidth));
  return { width, height: Math.round(Math.min(320, Math.max(200, width * 0.5))) };
}

function pointShape(shape) {
  return (u, seriesIndex, i0, i1) => {
    const fill = new Path2D();
    const stroke = new Path2D();
    const r = 4 * uPlot.pxRatio;
    const xs = u.data[0];
    const ys = u.data[seriesIndex];
    for (let i = i0; i <= i1; i++) {
      if (ys[i] == null) continue;
      const x = u.valToPos(xs[i], 'x', true);
      const y = u.valToPos(ys[i], u.series[seriesIndex].scale, true);
      drawShape(shape, fill, stroke, x, y, r);
    }
    return { fill, stroke };
  };
}

function drawShape(shape, fill, stroke, x, y, r) {
  switch (shape) {
    case 'square':
      fill.rect(x - r * 0.85, y - r * 0.85, r * 1.7, r * 1.7);
      break;
    case 'triangle':
      fill.moveTo(x, y - r * 1.1);
      fill.lineTo(x + r, y + r * 0.8);
      fill.lineTo(x - r, y + r * 0.8);
      fill.closePath();
      break;
    case 'diamond':
      fill.moveTo(x, y - r * 1.2);
      fill.lineTo(x + r, y);
      fill.lineTo(x, y + r * 1.2);
      fill.lineTo(x - r, y);
      fill.closePath();
      break;
    case 'cross':
      stroke.moveTo(x - r, y - r);
      stroke.lineTo(x + r, y + r);
      stroke.moveTo(x + r, y - r);
      stroke.lineTo(x - r, y + r);
      break;
    case 'hollow':
      stroke.moveTo(x + r, y);
      stroke.arc(x, y, r, 0, Math.PI * 2);
      break;
    default:
      fill.moveTo(x + r, y);
      fill.arc(x, y, r, 0, Math.PI * 2);
  }
  if (shape !== 'cross' && shape !== 'hollow') stroke.addPath(fill);
}

function patternTile(kind, colour) {
  const size = 8;
  const tile = document.createElement('canvas');
  tile.width = tile.height = size;
  const ctx = tile.getContext('2d');
  ctx.fillStyle = kind === 'solid' ? colour : '#ffffff';
  ctx.fillRect(0, 0, size, size);
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 2;
  const line = (x1, y1, x2, y2) => { ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke(); };
  if (kind === 'stripes' || kind === 'crosshatch') { line(0, size, size, 0); line(-2, 2, 2, -2); line(size - 2, size + 2, size + 2, size - 2); }
  if (kind === 'backslash' || kind === 'crosshatch') { line(0, 0, size, size); line(-2, size - 2, 2, size + 2); line(size - 2, -2, size + 2, 2); }
  if (kind === 'dots') { ctx.beginPath(); ctx.arc(4, 4, 2, 0, Math.PI * 2); ctx.fill(); }
  if (kind === 'grid') { line(0, 4, size, 4); line(4, 0, 4, size); }
  return tile;
}

function groupedBars(index, count) {
  return (u, seriesIndex, i0, i1) => {
    const fill = new Path2D();
    const xs = u.data[0];
    const ys = u.data[seriesIndex];
    const slot = Math.abs(u.valToPos(1, 'x', true) - u.valToPos(0, 'x', true));
    const group = slot * (count > 1 ? 0.8 : 0.6);
    const bar = group / count;
    const gap = Math.min(2 * uPlot.pxRatio, bar * 0.1);
    const scale = u.series[seriesIndex].scale;
    const zero = u.valToPos(0, scale, true);
    for (let i = i0; i <= i1; i++) {
      if (ys[i] == null) continue;
      const left = u.valToPos(xs[i], 'x', true) - group / 2 + index * bar;
      const top = u.valToPos(ys[i], scale, true);
      fill.rect(left + gap / 2, Math.min(top, zero), bar - gap, Math.abs(zero - top));
    }
    return { fill, stroke: fill };
  };
}

function legendSwatch(kind, index, colour) {
  const canvas = document.createElement('canvas');
  const ratio = window.devicePixelRatio || 1;
  canvas.width = 36 * ratio;
  canvas.height = 16 * ratio;
  canvas.className = 'chart-legend-swatch';
  const ctx = canvas.getContext('2d');
  ctx.scale(ratio, ratio);
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  if (kind === 'bar') {
    ctx.fillStyle = ctx.createPattern(patternTile(PATTERNS[index % PATTERNS.length], colour), 'repeat');
    ctx.fillRect(6, 2, 24, 12);
    ctx.lineWidth = 1.5;
    ctx.strokeRect(6, 2, 24, 12);
  } else {
    ctx.lineWidth = 2;
    ctx.setLineDash(DASHES[index % DASHES.length]);
    ctx.beginPath();
    ctx.moveTo(1, 8);
    ctx.lineTo(35, 8);
    ctx.stroke();
    ctx.setLineDash([]);
    const fill = new Path2D();
    const stroke = new Path2D();
    drawShape(SHAPES[index % SHAPES.length], fill, stroke, 18, 8, 4);
    ctx.fillStyle = colour;
    ctx.fill(fill);
    ctx.lineWidth = 1.5;
    ctx.stroke(stroke);
  }
  return canvas;
}

function buildLegend(kind, names, sides) {
  const legend = document.createElement('ul');
  legend.className = 'chart-legend';
  const de = language() === 'de-DE';
  const sideText = { left: de ? 'Achse links' : 'left axis', right: de ? 'Achse rechts' : 'right axis' };
  const values = names.map((name, i) => {
    const item = document.createElement('li');
    item.append(legendSwatch(kind, i, PALETTE[i % PALETTE.length]));
    const label = document.createElement('span');
    label.textContent = sides ? `${name} (${sideText[sides[i]]})` : name;
    const value = document.createElement('span');
    value.className = 'chart-legend-value';
    item.append(label, value);
    legend.append(item);
    return value;
  });
  return { legend, values };
}

// One scale per distinct unit, in order of first appearance: y0 (left axis), y1 (right), y2 (left), …
function unitScales(units) {
  const distinct = [...new Set(units)];
  return { distinct, scaleOf: (i) => `y${distinct.indexOf(units[i])}` };
}

function options(figure, kind, table, target, legendValues) {
  const numbers = new Intl.NumberFormat(language(), { maximumFractionDigits: 2 });
  const { distinct, scaleOf } = unitScales(table.units);
  const categories = table.labels.map((label) => label.text);
  const series = table.names.map((name, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const scale = scaleOf(i);
    if (kind === 'bar') {
      return {
        scale,
        label: name,
        stroke: colour,
        width: 1.5,
        fill: (u) => u.ctx.createPattern(patternTile(PATTERNS[i % PATTERNS.length], colour), 'repeat'),
        paths: groupedBars(i, table.names.length),
        points: { show: false },
      };
    }
    return {
      scale,
      label: name,
      stroke: colour,
      width: 2,
      dash: DASHES[i % DASHES.length],
      spanGaps: false,
      points: {
        show: (u, _s, i0, i1) => u.bbox.width / uPlot.pxRatio / Math.max(1, i1 - i0) >= MIN_POINT_GAP_PX,
        paths: pointShape(SHAPES[i % SHAPES.length]),
        fill: colour,
        stroke: colour,
        width: 1.5,
      },
    };
  });
  const x = kind === 'bar'
    ? {
      stroke: AXIS_COLOUR, font: FONT, grid: { show: false }, ticks: { stroke: GRID_COLOUR },
      splits: () => categories.map((_, i) => i),
      values: (_u, splits) => splits.map((i) => categories[i] ?? ''),
    }
    : { stroke: AXIS_COLOUR, font: FONT, grid: { stroke: GRID_COLOUR }, ticks: { stroke: GRID_COLOUR }, values: TIME_AXIS, space: 60 };
  return {
    ...size(target),
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 8 } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Europe/Berlin'),
    fmtDate: (template) => uPlot.fmtDate(template, language() === 'de-DE' ? GERMAN_NAMES : undefined),
    scales: {
      x: kind === 'bar' ? { time: false, range: () => [-0.5, categories.length - 0.5] } : { time: true },
      ...Object.fromEntries(distinct.map((_, k) => [`y${k}`, kind === 'bar'
        ? { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } : {}])),
    },
    axes: [x, ...distinct.map((unit, k) => ({
      scale: `y${k}`,
      side: k % 2 === 0 ? 3 : 1, // left, right, left, …
      stroke: AXIS_COLOUR, font: FONT, labelFont: FONT, ticks: { stroke: GRID_COLOUR },
      grid: { show: k === 0, stroke: GRID_COLOUR }, // one grid: two would cross each other
      label: unit, labelSize: unit ? 22 : 0, size: 56,
      values: (_u, splits) => splits.map((v) => numbers.format(v)),
    }))],
    series: [{}, ...series],
    hooks: {
      setCursor: [(u) => {
        const index = u.cursor.idx;
        legendValues.forEach((span, i) => {
          const value = index == null ? null : u.data[i + 1][index];
          const unit = table.units[i];
          span.textContent = value == null ? '' : `${numbers.format(value)}${unit ? ` ${unit}` : ''}`;
        });
      }],
    },
  };
}

function draw(figure) {
  if (charts.has(figure)) return;
  const target = figure.querySelector('.chart-canvas');
  if (!target) return;
  const kind = figure.dataset.chart === 'bar' ? 'bar' : 'line';
  const table = readTable(figure);
  if (!table.labels.length || !table.names.length) return;
  const x = kind === 'bar'
    ? table.labels.map((_, i) => i)
    : table.labels.map((label) => Date.parse(label.value) / 1000);
  if (kind === 'line' && x.some((t) => !Number.isFinite(t))) {
    throw new Error(`chart ${figure.id || ''}: the first column needs ISO timestamps in data-value`);
  }
  target.replaceChildren();
  target.setAttribute('aria-hidden', 'true');
  figure.classList.add('chart-drawn'); // shows .chart-canvas, so it has a width to measure
  const units = [...new Set(table.units)];
  const sides = units.length > 1 ? table.units.map((u) => (units.indexOf(u) % 2 === 0 ? 'left' : 'right')) : null;
  const { legend, values } = buildLegend(kind, table.names, sides);
  const settings = options(figure, kind, table, target, values);
  figure.dataset.axes = String(units.length); // y axes drawn: one per unit
  figure.dataset.axisUnits = units.join('|');
  const plot = new uPlot(settings, [x, ...table.columns], target);
  target.append(legend);
  let lastWidth = settings.width;
  const observer = new ResizeObserver(() => {
    const next = size(target);
    if (next.width === lastWidth) return;
    lastWidth = next.width;
    plot.setSize(next);
  });
  observer.observe(target);
  charts.set(figure, { plot, observer });
}

function destroy(figure) {
  const chart = charts.get(figure);
  if (!chart) return;
  chart.observer.disconnect();
  chart.plot.destroy();
  charts.delete(figure);
}

function drawAll(root) {
  const scope = root instanceof Element ? root : document.body;
  const figures = [...scope.querySelectorAll('figure.chart')];
  if (scope.matches('figure.chart')) figures.push(scope);
  for (const figure of figures) {
    try {
      draw(figure);
    } catch (error) {
      // the table and summary stay; a broken chart must not break the page
      console.error(error);
    }
  }
}

document.addEventListener('htmx:load', (event) => drawAll(event.target));
document.addEventListener('htmx:afterSwap', (event) => drawAll(event.detail.target || event.target));
document.addEventListener('htmx:beforeCleanupElement', (event) => {
  if (event.target instanceof Element && event.target.matches('figure.chart')) destroy(event.target);
});
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => drawAll(document.body));
else drawAll(document.body);
