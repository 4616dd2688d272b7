// Chart series: the last five minutes of a few figures, drawn with uPlot (the classic script
// loaded before the modules; `uPlot` is its one global). A series is filled from the history
// sent on connect, then grows by one point per stats message. Each chart's legend shows the
// values under the pointer (or, by keyboard, under the arrow keys once focused), the latest
// otherwise, and the chart's label says the same in words for screen readers.

import { byId, clock } from "./page.js";

const WINDOW_S = 300;
const CHART_HEIGHT = 210;

export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function axis(size, format) {
  const grid = { stroke: cssVar("--grid"), width: 1 };
  return {
    stroke: cssVar("--muted"),
    grid,
    ticks: grid,
    font: "12px system-ui, sans-serif",
    size,
    values: (u, values) => values.map(format),
  };
}

function timeLabel(t) {
  const d = new Date(t * 1000);
  const hhmm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  return d.getSeconds() === 0 ? hhmm : `${hhmm}:${String(d.getSeconds()).padStart(2, "0")}`;
}

// Round steps for counts: 1, 2, 5, 10, 20, 50... (fractions too, for rates below one).
export const countSteps = [-2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9].flatMap((power) =>
  [1, 2, 5].map((step) => step * 10 ** power),
);

// Powers of two, so byte axes read 512 KiB/s, 1.0 MiB/s, 1.5 MiB/s rather than 1000 KiB/s.
export const byteSteps = Array.from({ length: 51 }, (_, power) => 2 ** power);

const NO_VALUE = "–";

export function line(label, color, extra) {
  return { label, stroke: color, width: 2, points: { show: false }, ...extra };
}

// The received and sent lines, drawn alike for bytes and for datagrams.
export function inOutLines() {
  return [
    line("received per second", cssVar("--in"), { fill: cssVar("--in-fill") }),
    line("sent per second", cssVar("--out"), { dash: [6, 4] }),
  ];
}

// A column read from the stats message's `rates`, named as in the history document.
export function rate(key) {
  return { key, value: (stats) => stats.rates[key] };
}

// The points of one chart: time, then one column per `columns` entry, each naming its key in
// the history document and how to read its value from a stats message; or, for a figure
// neither carries, how to `derive` it at point i from the columns before it (by key).
export class ChartSeries {
  constructor(columns) {
    this.columns = columns;
    this.data = [[], ...columns.map(() => [])];
    this.chart = null;
    this.lines = [];
    this.format = String;
    this.name = "";
    this.element = null;
    this.focusIdx = null; // the point picked by keyboard; null follows the latest
  }

  // Draw from now on into the element `id`. A panel that starts hidden calls this when it is
  // first shown: uPlot takes its width from the element, which has none while hidden.
  // `steps` are the y axis's round steps (`countSteps` unless given); the chart's name for
  // its text alternative is its card's heading (without the hint).
  show(id, lines, axisWidth, format, { steps = countSteps } = {}) {
    if (this.chart) return;
    const el = byId(id);
    this.element = el;
    this.lines = lines;
    this.format = format;
    this.name = el.closest("article")?.querySelector("h2")?.firstChild.textContent.trim() ?? id;
    const latest = (u, s) => u.data[s][u.data[s].length - 1];
    const value = (show) => (u, v, s, idx) => {
      const shown = idx === null ? latest(u, s) : v;
      return shown === null || shown === undefined ? NO_VALUE : show(shown);
    };
    this.chart = new uPlot(
      {
        width: el.clientWidth,
        height: CHART_HEIGHT,
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true, range: (u, min, max) => [max - WINDOW_S, max] },
          y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
        },
        axes: [
          { ...axis(32, timeLabel), space: 70, incrs: [15, 30, 60, 120, 300] },
          { ...axis(axisWidth, format), incrs: steps },
        ],
        series: [
          { label: "time", value: value((t) => clock.format(new Date(t * 1000))) },
          ...lines.map((l) => ({ ...l, value: value(format) })),
        ],
      },
      this.data,
      el,
    );
    new ResizeObserver(() => this.chart.setSize({ width: el.clientWidth, height: CHART_HEIGHT })).observe(el);
    this.listenToKeys(el);
    this.describe(null);
  }

  load(history) {
    const fromHistory = this.columns.map(({ key, derive }) => (derive ? [] : history[key].slice()));
    this.data = [history.taken_at.slice(), ...fromHistory];
    this.columns.forEach((column, c) => {
      if (column.derive) this.data[c + 1] = this.data[0].map((_, i) => this.derived(column, i));
    });
    this.redraw();
  }

  append(stats) {
    const t = this.data[0];
    if (t.length && stats.taken_at <= t[t.length - 1]) return;
    t.push(stats.taken_at);
    const i = t.length - 1;
    this.columns.forEach((column, c) => {
      this.data[c + 1].push(column.derive ? this.derived(column, i) : column.value(stats));
    });
    for (const column of this.data) {
      if (column.length > WINDOW_S) column.splice(0, column.length - WINDOW_S);
    }
    this.redraw();
  }

  derived(column, i) {
    const byKey = { taken_at: this.data[0] };
    this.columns.forEach(({ key }, c) => (byKey[key] = this.data[c + 1]));
    return column.derive(byKey, i);
  }

  redraw() {
    if (!this.chart) return;
    this.chart.setData(this.data);
    // Without a pointer on it, the legend shows the latest values: the `value`s above.
    if (this.chart.cursor.idx === null) this.chart.setLegend({ idx: null });
    if (this.element === document.activeElement) this.pointAt(this.focusIdx ?? this.data[0].length - 1);
    else this.describe(null);
  }

  // Focused, the chart takes arrow keys (Home and End too) to move along its points.
  listenToKeys(el) {
    el.tabIndex = 0;
    el.setAttribute("role", "img");
    el.addEventListener("focus", () => this.pointAt(this.data[0].length - 1));
    el.addEventListener("blur", () => {
      this.focusIdx = null;
      this.chart.setCursor({ left: -10, top: -10 });
      this.describe(null);
    });
    el.addEventListener("keydown", (event) => {
      const last = this.data[0].length - 1;
      const now = this.chart.cursor.idx ?? last;
      const to = { ArrowLeft: now - 1, ArrowRight: now + 1, Home: 0, End: last }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      const idx = Math.max(0, Math.min(last, to));
      this.focusIdx = idx === last ? null : idx;
      this.pointAt(idx);
    });
  }

  pointAt(idx) {
    if (idx < 0) return;
    const y = this.data[1][idx] ?? 0;
    this.chart.setCursor({ left: this.chart.valToPos(this.data[0][idx], "x"), top: this.chart.valToPos(y, "y") });
    this.describe(idx);
  }

  // The text alternative: the chart's name and its values at point `idx`, the latest if null.
  describe(idx) {
    const t = this.data[0];
    const at = idx ?? t.length - 1;
    const values = this.lines.map(({ label }, c) => {
      const v = this.data[c + 1][at];
      return `${label} ${v === null || v === undefined ? NO_VALUE : this.format(v)}`;
    });
    const when = at >= 0 ? ` at ${clock.format(new Date(t[at] * 1000))}` : ", no data yet";
    this.element.setAttribute("aria-label", `${this.name}${when}: ${values.join(", ")}`);
  }
}
