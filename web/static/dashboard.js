// Live status page. One EventSource on /api/events brings a `config` and a `history` event on
// connect, then one stats message a second. Every value is set as text, never as HTML.

import {
  byId,
  cell,
  clock,
  enableTips,
  decimals,
  formatAddress,
  formatBytes,
  formatDuration,
  formatLimit,
  numbers,
  pairs,
  reasonPairs,
  replaceRows,
  row,
  setText,
  showRowsNote,
} from "./page.js";
import { ChartSeries, byteSteps, cssVar, inOutLines, line, rate } from "./series.js";

const RETRY_MS = 1000;
const STALE_MS = 5000; // no message for this long: the server is gone even if TCP says not

// The path-quality and UDP panels load after the core, each on its own: one refused fetch fails
// a whole module graph, and a status side at status.max_connections refuses some of a page
// load's parallel requests; the figures and the push channel must work all the same.
async function loadPanel(url) {
  try {
    return await import(url);
  } catch (error) {
    console.warn(`${url}: not loaded, its panel stays empty:`, error);
    return null;
  }
}

const [path, udp, syn, watch] = await Promise.all([
  loadPanel("./path.js"),
  loadPanel("./udp.js"),
  loadPanel("./syn.js"),
  loadPanel("./watch.js"),
]);

// ---- link state --------------------------------------------------------------------------

let lostAt = null;

function showState(state) {
  const el = byId("link-state");
  el.dataset.state = state;
  el.textContent = state;
  document.body.dataset.link = state;
  byId("banner").hidden = state !== "disconnected";
}

function markLost() {
  if (lostAt === null) {
    lostAt = new Date();
    setText("banner-detail", `since ${clock.format(lostAt)}.`);
  }
  showState("disconnected");
}

function markLive() {
  lostAt = null;
  byId("banner-reason").hidden = true;
  showState("live");
}

// A server at one of its caps (status.max_connections, status.max_connections_per_ip,
// status.max_streams) answers 503 with the reason, and one whose token changed (a reload
// ends the old sessions) 401; anything else that breaks the push channel (no answer, a
// reset) means the server is gone. An EventSource hides the answer it got, so ask again:
// the API first, then the stream itself, dropped as soon as its headers are in.
const REFUSALS = { 503: "", 401: "; sign in again: reload this page", 421: "" };

async function refusalOf(url) {
  const abort = new AbortController();
  const response = await fetch(url, { cache: "no-store", signal: abort.signal });
  const next = REFUSALS[response.status];
  const error = next === undefined ? null : `${(await response.json()).error}${next}`;
  abort.abort();
  return error;
}

async function explainLoss() {
  try {
    const error = (await refusalOf("/api/stats")) ?? (await refusalOf("/api/events"));
    if (error === null) return;
    const reason = byId("banner-reason");
    reason.textContent = `The server refused a connection: ${error}.`;
    reason.hidden = false;
  } catch {
    // Unreachable or reset: "disconnected" already says all there is to say.
  }
}

// ---- charts ------------------------------------------------------------------------------

// Connections closed per second, which neither the history nor a message carries as a rate:
// every accepted connection is active or closed, so those that closed are those accepted
// less what the active count grew by.
const closedPerSecond = {
  key: "closed_per_s",
  derive: ({ taken_at: t, active, connections_per_s: opened }, i) => {
    if (i === 0 || t[i] <= t[i - 1]) return null;
    const closed = opened[i] - (active[i] - active[i - 1]) / (t[i] - t[i - 1]);
    return Math.max(0, Math.round(closed * 1000) / 1000);
  },
};

const connections = new ChartSeries([
  { key: "active", value: (stats) => stats.connections.active },
  rate("connections_per_s"),
  closedPerSecond,
]);
const throughput = new ChartSeries([rate("bytes_received_per_s"), rate("bytes_sent_per_s")]);

function showCharts() {
  const accent = cssVar("--accent");
  connections.show(
    "chart-connections",
    [
      line("active", accent, { fill: cssVar("--accent-fill") }),
      line("new per second", cssVar("--new"), { width: 1.5 }),
      line("closed per second", cssVar("--closed"), { width: 1.5, dash: [4, 3] }),
    ],
    48,
    (v) => decimals.format(v),
  );
  throughput.show("chart-throughput", inOutLines(), 80, (v) => `${formatBytes(v)}/s`, { steps: byteSteps });
}

function loadHistory(history) {
  connections.load(history);
  throughput.load(history);
  udp?.loadUdpHistory(history);
  path?.loadPathHistory(history);
}

// ---- rendering ---------------------------------------------------------------------------

function renderFigures(stats) {
  const c = stats.connections;
  setText("active-connections", numbers.format(c.active));
  setText("accepted", numbers.format(c.accepted));
  setText("closed", numbers.format(c.closed));
  setText("rejected", numbers.format(c.rejected));
  byId("rejected-by-reason").replaceChildren(...reasonPairs(c.rejected_by_reason));
  const byServer = Object.values(c.closed_by_server);
  setText("closed-by-server-total", numbers.format(byServer.reduce((sum, n) => sum + n, 0)));
  byId("closed-by-server").replaceChildren(...reasonPairs(c.closed_by_server));
  setText("bytes-received", formatBytes(stats.bytes.received));
  setText("bytes-sent", formatBytes(stats.bytes.sent));
  setText("total-received", numbers.format(stats.bytes.received));
  setText("total-sent", numbers.format(stats.bytes.sent));
  setText("rate-connections", decimals.format(stats.rates.connections_per_s));
  setText("rate-received", `${formatBytes(stats.rates.bytes_received_per_s)}/s`);
  setText("rate-sent", `${formatBytes(stats.rates.bytes_sent_per_s)}/s`);
  setText("uptime", formatDuration(stats.uptime_seconds));
  setText("config-age", formatDuration(stats.config.age_s));
  byId("config-line").title =
    `loaded ${clock.format(new Date(stats.config.loaded_at * 1000))}; ` +
    `reloads: ${stats.config.reloads}, refused: ${stats.config.reloads_failed}`;
  byId("draining").hidden = stats.accepting;
  setText("version", stats.version);
  setText("updated", clock.format(new Date(stats.taken_at * 1000)));
  document.title = `${numbers.format(c.active)} connections · echostat ${location.host}`;
}

function renderListeners(listeners) {
  byId("listener-active").replaceChildren(
    ...listeners.map((l) => {
      const li = cell("li", "");
      li.append(cell("span", l.name, "name"), cell("span", numbers.format(l.active), "count"));
      return li;
    }),
  );
  byId("listeners").replaceChildren(
    ...listeners.map((l) =>
      row([
        cell("td", l.name),
        cell("td", `${formatAddress(l.host, l.port)}${l.tls ? " (TLS)" : ""}`, "mono"),
        cell("td", numbers.format(l.active), "num"),
        cell("td", numbers.format(l.accepted), "num wide"),
        // Every accepted connection is either still active or closed.
        cell("td", numbers.format(l.accepted - l.active), "num wide"),
      ]),
    ),
  );
}

function renderConnections(table) {
  replaceRows(byId("connections"), () =>
    table.connections.map((c) => {
      const tr = row([
        cell("td", c.peer, "mono"),
        // The balancer the connection came through, when its PROXY header named the client.
        cell("td", c.via ?? "direct", c.via ? "mono wide" : "wide"),
        cell("td", c.listener, "wide"),
        cell("td", formatDuration(c.age_s), "num wide"),
        cell("td", formatBytes(c.bytes_received), "num"),
        cell("td", formatBytes(c.bytes_sent), "num"),
        cell("td", c.idle_s < 2 ? "now" : formatDuration(c.idle_s), c.idle_s < 2 ? "num busy" : "num"),
        ...(path?.pathCells(c) ?? []),
        ...(syn?.synCells(c) ?? []),
      ]);
      tr.dataset.key = `${c.worker} ${c.id}`;
      tr.classList.toggle("retransmitting", Boolean(c.tcp.retransmits));
      syn?.markSyn(tr, c);
      return tr;
    }),
  );
  showRowsNote("connections-note", table.total, table.connections.length, "No open connections.", "open");
}

function renderWorkers(workers) {
  byId("workers-part").hidden = workers.length < 2;
  byId("workers").replaceChildren(
    ...workers.map((w) =>
      row([
        cell("td", String(w.pid), "mono"),
        cell("td", numbers.format(w.active), "num"),
        cell("td", numbers.format(w.accepted), "num wide"),
        cell("td", formatBytes(w.bytes_received), "num"),
        cell("td", formatBytes(w.bytes_sent), "num"),
      ]),
    ),
  );
}

function renderLimits(limits) {
  const flat = (prefix, object) =>
    Object.entries(object).flatMap(([key, value]) =>
      value !== null && typeof value === "object" ? flat(`${prefix}${key}.`, value) : [[`${prefix}${key}`, value]],
    );
  const entries = flat("", limits).map(([key, value]) => [key, formatLimit(key, value)]);
  byId("limits").replaceChildren(...pairs(entries));
}

function render(stats) {
  renderFigures(stats);
  renderListeners(stats.listeners);
  renderWorkers(stats.workers);
  renderConnections(stats.top_connections);
  udp?.renderUdp(stats);
  path?.renderPath(stats);
  watch?.renderWatch(stats);
  connections.append(stats);
  throughput.append(stats);
}

// ---- push channel ------------------------------------------------------------------------

let source = null;
let staleTimer = null;

function expectMessage() {
  clearTimeout(staleTimer);
  staleTimer = setTimeout(() => {
    markLost();
    reconnect();
  }, STALE_MS);
}

function reconnect() {
  if (source) source.close();
  source = null;
  setTimeout(connect, RETRY_MS);
}

function connect() {
  source = new EventSource("/api/events");
  expectMessage();
  source.addEventListener("config", (event) => renderLimits(JSON.parse(event.data)));
  source.addEventListener("history", (event) => loadHistory(JSON.parse(event.data)));
  source.onmessage = (event) => {
    expectMessage();
    markLive();
    render(JSON.parse(event.data));
  };
  source.onerror = () => {
    markLost();
    explainLoss();
    if (source && source.readyState === EventSource.CLOSED) reconnect();
  };
}

// For the browser's console (and the page's tests): the push channel and how to reopen it.
Object.defineProperty(window, "source", { get: () => source });
window.connect = connect;

setText("host", location.host);
enableTips();
showCharts();
connect();
