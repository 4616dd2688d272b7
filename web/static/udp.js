"use strict";
// The UDP part of the status page: shown only when the server has UDP listeners, below the
// TCP view. Uses the helpers of dashboard.js (loaded first); dashboard.js calls renderUdp
// with every stats message and loadUdpHistory with the history sent on connect.

const udpSeries = { t: [], received: [], sent: [], dropped: [] };
let udpChart = null;

function udpAddress(l) {
  return `${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}/udp`;
}

function ensureUdpChart() {
  if (udpChart) return;
  udpChart = makeChart(
    "chart-datagrams",
    [
      line("received per second", cssVar("--in"), { fill: cssVar("--in-fill") }),
      line("sent per second", cssVar("--out"), { dash: [6, 4] }),
      line("dropped per second", cssVar("--bad"), { width: 1.5 }),
    ],
    56,
    (v) => numbers.format(v),
    () => [udpSeries.t, udpSeries.received, udpSeries.sent, udpSeries.dropped],
  );
}

function loadUdpHistory(history) {
  udpSeries.t = history.taken_at.slice();
  udpSeries.received = history.datagrams_received_per_s.slice();
  udpSeries.sent = history.datagrams_sent_per_s.slice();
  udpSeries.dropped = history.datagrams_dropped_per_s.slice();
  if (udpChart) udpChart.chart.setData(udpChart.data());
}

function appendUdpPoint(stats) {
  const t = udpSeries.t;
  if (t.length && stats.taken_at <= t[t.length - 1]) return;
  t.push(stats.taken_at);
  udpSeries.received.push(stats.rates.datagrams_received_per_s);
  udpSeries.sent.push(stats.rates.datagrams_sent_per_s);
  udpSeries.dropped.push(stats.rates.datagrams_dropped_per_s);
  for (const key of Object.keys(udpSeries)) {
    if (udpSeries[key].length > WINDOW_S) udpSeries[key].splice(0, udpSeries[key].length - WINDOW_S);
  }
  udpChart.chart.setData(udpChart.data());
}

function renderUdpListeners(listeners) {
  byId("udp-listeners").replaceChildren(
    ...listeners.map((l) =>
      row([
        cell("td", l.name),
        cell("td", udpAddress(l), "mono"),
        cell("td", numbers.format(l.datagrams_received), "num"),
        cell("td", numbers.format(l.datagrams_sent), "num"),
        cell("td", numbers.format(l.dropped), l.dropped ? "num bad" : "num"),
        cell("td", numbers.format(l.peers), "num"),
      ]),
    ),
  );
  const reasons = {};
  for (const l of listeners) {
    for (const [reason, n] of Object.entries(l.dropped_by_reason)) reasons[reason] = (reasons[reason] ?? 0) + n;
  }
  byId("udp-dropped-by-reason").replaceChildren(
    ...pairs(Object.entries(reasons).map(([reason, n]) => [reason, numbers.format(n)])),
  );
}

function ago(unixSeconds, now) {
  const seconds = Math.max(0, now - unixSeconds);
  return seconds < 2 ? "now" : `${formatDuration(seconds)} ago`;
}

function renderPeers(table, now) {
  byId("peers").replaceChildren(
    ...table.peers.map((p) =>
      row([
        cell("td", p.peer, "mono"),
        cell("td", p.listener, "wide"),
        cell("td", ago(p.first_seen, now), "num wide"),
        cell("td", ago(p.last_seen, now), now - p.last_seen < 2 ? "num busy" : "num"),
        cell("td", numbers.format(p.datagrams_received), "num"),
        cell("td", formatBytes(p.bytes_received), "num"),
        cell("td", formatBytes(p.bytes_sent), "num"),
      ]),
    ),
  );
  showRowsNote("peers-note", table.total, table.peers.length, "No UDP peers lately.", "peers");
}

function renderUdp(stats) {
  const listeners = stats.udp_listeners ?? [];
  byId("udp").hidden = listeners.length === 0;
  if (listeners.length === 0) return;
  ensureUdpChart();
  setText("udp-rate-received", decimals.format(stats.rates.datagrams_received_per_s));
  setText("udp-rate-sent", decimals.format(stats.rates.datagrams_sent_per_s));
  setText("udp-rate-dropped", decimals.format(stats.rates.datagrams_dropped_per_s));
  setText("udp-peers", numbers.format(listeners.reduce((sum, l) => sum + l.peers, 0)));
  renderUdpListeners(listeners);
  renderPeers(stats.top_peers, stats.taken_at);
  appendUdpPoint(stats);
}
