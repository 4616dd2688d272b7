// Chart series: the last five minutes of a few figures, drawn with uPlot (the classic script
// loaded before the modules; `uPlot` is its one global). A series is filled from the history
// sent on connect, then grows by one point per stats message.

import { byId } from "./page.js";

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

// Round steps in binary units, so byte axes read 512 KiB/s, 1 MiB/s, 2 MiB/s rather than 1.9.
const yIncrements = [0, 1, 2, 3, 4, 5].flatMap((power) =>
  [1, 2, 5, 10, 20, 50, 100, 200, 500].map((step) => step * 1024 ** power),
);

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
// the history document and how to read its value from a stats message.
export class ChartSeries {
  constructor(columns) {
    this.columns = columns;
    this.data = [[], ...columns.map(() => [])];
    this.chart = null;
  }

  // Draw from now on into the element `id`. A panel that starts hidden calls this when it is
  // first shown: uPlot takes its width from the element, which has none while hidden.
  show(id, lines, axisWidth, format) {
    if (this.chart) return;
    const el = byId(id);
    this.chart = new uPlot(
      {
        width: el.clientWidth,
        height: CHART_HEIGHT,
        cursor: { drag: { x: false, y: false } },
        legend: { live: false },
        scales: {
          x: { time: true, range: (u, min, max) => [max - WINDOW_S, max] },
          y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
        },
        axes: [
          { ...axis(32, timeLabel), space: 70, incrs: [15, 30, 60, 120, 300] },
          { ...axis(axisWidth, format), incrs: yIncrements },
        ],
        series: [{}, ...lines],
      },
      this.data,
      el,
    );
    new ResizeObserver(() => this.chart.setSize({ width: el.clientWidth, height: CHART_HEIGHT })).observe(el);
  }

  load(history) {
    this.data = [history.taken_at.slice(), ...this.columns.map(({ key }) => history[key].slice())];
    this.redraw();
  }

  append(stats) {
    const t = this.data[0];
    if (t.length && stats.taken_at <= t[t.length - 1]) return;
    t.push(stats.taken_at);
    this.columns.forEach(({ value }, i) => this.data[i + 1].push(value(stats)));
    for (const column of this.data) {
      if (column.length > WINDOW_S) column.splice(0, column.length - WINDOW_S);
    }
    this.redraw();
  }

  redraw() {
    if (this.chart) this.chart.setData(this.data);
  }
}
