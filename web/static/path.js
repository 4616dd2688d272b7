// Path quality: what the server's kernel knows of each TCP connection (TCP_INFO). The panel
// and the table's RTT and retransmit columns are hidden when the server doesn't measure it
// (path_quality off, or not Linux). dashboard.js calls renderPath with every stats message,
// loadPathHistory on connect and pathCells for each row of its connection table.

import { byId, cell, decimals, numbers, setText } from "./page.js";
import { ChartSeries, cssVar, line } from "./series.js";

const retransmits = new ChartSeries([{ key: "retransmits_per_s", value: (stats) => stats.tcp.retransmits_per_s }]);

function formatRtt(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  return `${decimals.format(ms)} ms`;
}

export function loadPathHistory(history) {
  retransmits.load(history);
}

// The table's two path columns for one connection; its row is marked when it retransmitted.
export function pathCells(c) {
  const count = c.tcp.retransmits;
  return [
    cell("td", formatRtt(c.tcp.rtt_ms), "num tcp"),
    cell("td", count === null ? "–" : numbers.format(count), count ? "num tcp bad" : "num tcp"),
  ];
}

export function renderPath(stats) {
  const tcp = stats.tcp;
  document.body.dataset.tcp = tcp.available ? "on" : "off";
  byId("path-quality").hidden = !tcp.available;
  if (!tcp.available) return;
  retransmits.show(
    "chart-retransmits",
    [line("retransmitted segments per second", cssVar("--bad"), { fill: cssVar("--bad-bg") })],
    56,
    (v) => decimals.format(v),
  );
  for (const key of ["p50", "p90", "p99", "max"]) setText(`rtt-${key}`, formatRtt(tcp.rtt_ms[key]));
  setText("rtt-measured", numbers.format(tcp.connections_measured));
  setText("retransmits-total", numbers.format(tcp.retransmits));
  setText("retransmits-rate", `${decimals.format(tcp.retransmits_per_s)}/s`);
  byId("retransmits-rate").classList.toggle("bad", tcp.retransmits_per_s > 0);
  retransmits.append(stats);
}
