"use strict";
// Path quality: what the server's kernel knows of each TCP connection (TCP_INFO). The panel
// and the table's RTT and retransmit columns are hidden when the server doesn't measure it
// (path_quality off, or not Linux). Uses the helpers of dashboard.js (loaded first);
// dashboard.js calls renderPath with every stats message and loadPathHistory on connect.

const pathSeries = { t: [], retransmits: [] };
let pathChart = null;

function formatRtt(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  return `${decimals.format(ms)} ms`;
}

function ensurePathChart() {
  if (pathChart) return;
  pathChart = makeChart(
    "chart-retransmits",
    [line("retransmitted segments per second", cssVar("--bad"), { fill: cssVar("--bad-bg") })],
    56,
    (v) => decimals.format(v),
    () => [pathSeries.t, pathSeries.retransmits],
  );
}

function loadPathHistory(history) {
  pathSeries.t = history.taken_at.slice();
  pathSeries.retransmits = history.retransmits_per_s.slice();
  if (pathChart) pathChart.chart.setData(pathChart.data());
}

function appendPathPoint(stats) {
  const t = pathSeries.t;
  if (t.length && stats.taken_at <= t[t.length - 1]) return;
  t.push(stats.taken_at);
  pathSeries.retransmits.push(stats.tcp.retransmits_per_s);
  for (const key of Object.keys(pathSeries)) {
    if (pathSeries[key].length > WINDOW_S) pathSeries[key].splice(0, pathSeries[key].length - WINDOW_S);
  }
  pathChart.chart.setData(pathChart.data());
}

// The table's two path columns for one connection; its row is marked when it retransmitted.
function pathCells(c) {
  const retransmits = c.tcp.retransmits;
  return [
    cell("td", formatRtt(c.tcp.rtt_ms), "num tcp"),
    cell("td", retransmits === null ? "–" : numbers.format(retransmits), retransmits ? "num tcp bad" : "num tcp"),
  ];
}

function renderPath(stats) {
  const tcp = stats.tcp;
  document.body.dataset.tcp = tcp.available ? "on" : "off";
  byId("path-quality").hidden = !tcp.available;
  if (!tcp.available) return;
  ensurePathChart();
  for (const key of ["p50", "p90", "p99", "max"]) setText(`rtt-${key}`, formatRtt(tcp.rtt_ms[key]));
  setText("rtt-measured", numbers.format(tcp.connections_measured));
  setText("retransmits-total", numbers.format(tcp.retransmits));
  setText("retransmits-rate", `${decimals.format(tcp.retransmits_per_s)}/s`);
  byId("retransmits-rate").classList.toggle("bad", tcp.retransmits_per_s > 0);
  appendPathPoint(stats);
}
