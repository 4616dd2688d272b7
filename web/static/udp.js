// The UDP part of the status page: shown only when the server has UDP listeners, below the
// TCP view. dashboard.js calls renderUdp with every stats message and loadUdpHistory with the
// history sent on connect.

import {
  byId,
  cell,
  decimals,
  formatAddress,
  formatBytes,
  formatDuration,
  numbers,
  reasonPairs,
  row,
  setText,
  showRowsNote,
} from "./page.js";
import { ChartSeries, cssVar, inOutLines, line, rate } from "./series.js";

const datagrams = new ChartSeries([
  rate("datagrams_received_per_s"),
  rate("datagrams_sent_per_s"),
  rate("datagrams_dropped_per_s"),
]);

export function loadUdpHistory(history) {
  datagrams.load(history);
}

function renderUdpListeners(listeners) {
  byId("udp-listeners").replaceChildren(
    ...listeners.map((l) =>
      row([
        cell("td", l.name),
        cell("td", `${formatAddress(l.host, l.port)}/udp`, "mono"),
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
  byId("udp-dropped-by-reason").replaceChildren(...reasonPairs(reasons));
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

export function renderUdp(stats) {
  const listeners = stats.udp_listeners ?? [];
  byId("udp").hidden = listeners.length === 0;
  if (listeners.length === 0) return;
  datagrams.show(
    "chart-datagrams",
    [...inOutLines(), line("dropped per second", cssVar("--bad"), { width: 1.5 })],
    56,
    (v) => numbers.format(v),
  );
  setText("udp-rate-received", decimals.format(stats.rates.datagrams_received_per_s));
  setText("udp-rate-sent", decimals.format(stats.rates.datagrams_sent_per_s));
  setText("udp-rate-dropped", decimals.format(stats.rates.datagrams_dropped_per_s));
  setText("udp-peers", numbers.format(listeners.reduce((sum, l) => sum + l.peers, 0)));
  renderUdpListeners(listeners);
  renderPeers(stats.top_peers, stats.taken_at);
  datagrams.append(stats);
}
