"use strict";
// Live status page. One EventSource on /api/events brings a `config` and a `history` event on
// connect, then one stats message a second. Every value is set as text, never as HTML.

const RETRY_MS = 1000;
const STALE_MS = 5000; // no message for this long: the server is gone even if TCP says not
const WINDOW_S = 300;
const CHART_HEIGHT = 210;

const numbers = new Intl.NumberFormat(undefined);
const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// ---- formatting --------------------------------------------------------------------------

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x) => String(x).padStart(2, "0");
  if (d > 0) return `${d}d ${pad(h)}h`;
  if (h > 0) return `${h}h ${pad(m)}m`;
  if (m > 0) return `${m}m ${pad(s % 60)}s`;
  return `${s}s`;
}

function formatLimit(key, value) {
  if (typeof value !== "number") return String(value);
  if (key.endsWith("_bytes")) return `${formatBytes(value)} (${numbers.format(value)})`;
  if (key.endsWith("_s")) return `${decimals.format(value)} s`;
  return numbers.format(value);
}

// ---- DOM helpers: text only --------------------------------------------------------------

function byId(id) {
  return document.getElementById(id);
}

function setText(id, value) {
  byId(id).textContent = String(value);
}

function cell(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = String(text);
  if (className) el.className = className;
  return el;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function pairs(entries) {
  return entries.flatMap(([term, detail]) => [cell("dt", term), cell("dd", detail)]);
}

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

// A server at its status.max_connections answers 503 with the reason and closes; anything
// else that breaks the push channel (no answer, a reset) means the server is gone.
async function explainLoss() {
  try {
    const response = await fetch("/api/stats", { cache: "no-store" });
    if (response.status !== 503) return;
    const reason = byId("banner-reason");
    reason.textContent = `The server refused a connection: ${(await response.json()).error}.`;
    reason.hidden = false;
  } catch {
    // Unreachable or reset: "disconnected" already says all there is to say.
  }
}

// ---- charts ------------------------------------------------------------------------------

const series = { t: [], active: [], cps: [], received: [], sent: [] };
let charts = [];

function cssVar(name) {
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

function makeChart(id, seriesOptions, axisWidth, format, data) {
  const el = byId(id);
  const chart = new uPlot(
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
      series: [{}, ...seriesOptions],
    },
    data(),
    el,
  );
  new ResizeObserver(() => chart.setSize({ width: el.clientWidth, height: CHART_HEIGHT })).observe(el);
  return { chart, data };
}

function line(label, color, extra) {
  return { label, stroke: color, width: 2, points: { show: false }, ...extra };
}

function initCharts() {
  const accent = cssVar("--accent");
  charts = [
    makeChart(
      "chart-connections",
      [
        line("active", accent, { fill: cssVar("--accent-fill") }),
        line("new per second", cssVar("--new"), { width: 1.5 }),
      ],
      48,
      (v) => numbers.format(v),
      () => [series.t, series.active, series.cps],
    ),
    makeChart(
      "chart-throughput",
      [
        line("received per second", cssVar("--in"), { fill: cssVar("--in-fill") }),
        line("sent per second", cssVar("--out"), { dash: [6, 4] }),
      ],
      80,
      (v) => `${formatBytes(v)}/s`,
      () => [series.t, series.received, series.sent],
    ),
  ];
}

function redrawCharts() {
  for (const { chart, data } of charts) chart.setData(data());
}

function loadHistory(history) {
  series.t = history.taken_at.slice();
  series.active = history.active.slice();
  series.cps = history.connections_per_s.slice();
  series.received = history.bytes_received_per_s.slice();
  series.sent = history.bytes_sent_per_s.slice();
  loadUdpHistory(history);
  loadPathHistory(history);
  redrawCharts();
}

function appendPoint(stats) {
  const t = series.t;
  if (t.length && stats.taken_at <= t[t.length - 1]) return;
  t.push(stats.taken_at);
  series.active.push(stats.connections.active);
  series.cps.push(stats.rates.connections_per_s);
  series.received.push(stats.rates.bytes_received_per_s);
  series.sent.push(stats.rates.bytes_sent_per_s);
  for (const key of Object.keys(series)) {
    if (series[key].length > WINDOW_S) series[key].splice(0, series[key].length - WINDOW_S);
  }
  redrawCharts();
}

// ---- rendering ---------------------------------------------------------------------------

function renderFigures(stats) {
  const c = stats.connections;
  setText("active-connections", numbers.format(c.active));
  setText("accepted", numbers.format(c.accepted));
  setText("closed", numbers.format(c.closed));
  setText("rejected", numbers.format(c.rejected));
  byId("rejected-by-reason").replaceChildren(
    ...pairs(Object.entries(c.rejected_by_reason).map(([reason, n]) => [reason, numbers.format(n)])),
  );
  const byServer = Object.entries(c.closed_by_server);
  setText("closed-by-server-total", numbers.format(byServer.reduce((sum, [, n]) => sum + n, 0)));
  byId("closed-by-server").replaceChildren(
    ...pairs(byServer.map(([reason, n]) => [reason, numbers.format(n)])),
  );
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
        cell("td", `${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}${l.tls ? " (TLS)" : ""}`, "mono"),
        cell("td", numbers.format(l.active), "num"),
        cell("td", numbers.format(l.accepted), "num wide"),
        // Every accepted connection is either still active or closed.
        cell("td", numbers.format(l.accepted - l.active), "num wide"),
      ]),
    ),
  );
}

function renderConnections(table) {
  byId("connections").replaceChildren(
    ...table.connections.map((c) => {
      const tr = row([
        cell("td", c.peer, "mono"),
        // The balancer the connection came through, when its PROXY header named the client.
        cell("td", c.via ?? "direct", c.via ? "mono wide" : "wide"),
        cell("td", c.listener, "wide"),
        cell("td", formatDuration(c.age_s), "num wide"),
        cell("td", formatBytes(c.bytes_received), "num"),
        cell("td", formatBytes(c.bytes_sent), "num"),
        cell("td", c.idle_s < 2 ? "now" : formatDuration(c.idle_s), c.idle_s < 2 ? "num busy" : "num"),
        ...pathCells(c),
      ]);
      tr.classList.toggle("retransmitting", Boolean(c.tcp.retransmits));
      return tr;
    }),
  );
  showRowsNote("connections-note", table.total, table.connections.length, "No open connections.", "open");
}

// Under a table of the first rows: what to say when it is empty, or how many it leaves out.
function showRowsNote(id, total, shown, emptyText, noun) {
  const hidden = total - shown;
  const note = byId(id);
  note.hidden = total > 0 && hidden <= 0;
  note.textContent =
    total === 0 ? emptyText : `and ${numbers.format(hidden)} more (${numbers.format(total)} ${noun})`;
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
  renderUdp(stats);
  renderPath(stats);
  appendPoint(stats);
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

setText("host", location.host);
initCharts();
connect();
