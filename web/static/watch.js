// The "Watched paths" part of the status page: shown only when this echostat watches targets.
// One row per watched address with its state, and a SmokePing-style chart of the last hour:
// the median round trip as a line, the spread (fastest to slowest) as a grey band, and loss as
// the colour of a strip under each point (a history younger than two minutes is drawn over two
// minutes). dashboard.js calls renderWatch with every stats message; the full hour is fetched
// once from /api/watch, then each message adds its newest point. Every value is set as text; the chart's words are in <title>s and in a caption that
// the arrow keys move through, so it reads without a mouse.

import { byId, cell, clock, decimals, explained, replaceRows, row, setText } from "./page.js";
import { cssVar } from "./series.js";

const WINDOW_S = 3600;
const MIN_SPAN_S = 120; // a young history is drawn over two minutes, not lost in an hour
const BIN_S = 10; // the server's history bins (HISTORY_BIN_S)
const WIDTH = 360;
const HEIGHT = 48;
const STRIP = 5; // px of loss colour under the band
const SVG = "http://www.w3.org/2000/svg";

const histories = new Map(); // "name target address" -> points, oldest first
const rows = new Map(); // "name target address" -> {tr, drawing}: its row and what its chart shows
let fetched = null; // the /api/watch request, made once
// The server's time at its latest message: the hour kept is the server's, as every figure on
// the page is, not the browser's (a clock hours off would keep nothing, or everything).
let serverNow = 0;
let chosen = null; // {key, at}: the point picked by the arrow keys; null follows the latest

// With `target`: a reload that points a name elsewhere starts its chart afresh, as the server does.
function key(t) {
  return `${t.name} ${t.target} ${t.address ?? ""}`;
}

// Points by their bin's start: a newer copy of a bin replaces the older, and the hour fetched
// after the first pushed point still lands before it.
function merge(t, points) {
  const since = serverNow - WINDOW_S;
  const kept = histories.get(key(t)) ?? [];
  const last = kept[kept.length - 1];
  // What each message brings: the newest bin again, or the next one; no need to sort the hour.
  if (points.length === 1 && last && points[0].at >= last.at) {
    if (points[0].at === last.at) kept[kept.length - 1] = points[0];
    else kept.push(points[0]);
    while (kept.length && kept[0].at < since) kept.shift();
    return;
  }
  const byStart = new Map(kept.map((p) => [p.at, p]));
  for (const p of points) byStart.set(p.at, p);
  const merged = [...byStart.values()].filter((p) => p.at >= since).sort((a, b) => a.at - b.at);
  histories.set(key(t), merged);
}

// Below a millisecond to the microsecond, in the reader's locale as every other number.
const thousandths = new Intl.NumberFormat(undefined, { minimumFractionDigits: 3, maximumFractionDigits: 3 });

function ms(value) {
  return `${(value < 1 ? thousandths : decimals).format(value)} ms`;
}

function lossOf(p) {
  return p.sent ? (p.lost + p.failed) / p.sent : 1;
}

function lossColour(p) {
  const loss = lossOf(p);
  if (loss === 0) return cssVar("--ok");
  return loss < 0.05 ? cssVar("--warn") : cssVar("--bad");
}

// One point in plain words, for its tooltip and the caption.
export function describePoint(p) {
  const when = clock.format(new Date(p.at * 1000));
  if (!p.sent) return `${when}: nothing could be sent (the target did not answer).`;
  const bad = p.lost + p.failed;
  const lost = bad
    ? `${bad} of ${p.sent} round trips lost or wrong (${decimals.format(100 * lossOf(p))} %)`
    : `all ${p.sent} round trips came back exactly`;
  const times =
    p.median_ms === null
      ? "no times (none came back in a round the loop was on time)"
      : `typically ${ms(p.median_ms)}, between ${ms(p.min_ms)} and ${ms(p.max_ms)}`;
  const late = p.late_rounds ? `; ${p.late_rounds} round(s) left out: this server was busy` : "";
  return `${when}: ${lost}; ${times}${late}.`;
}

function svgEl(tag, attributes) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
  return el;
}

function chart(t, points, now) {
  const svg = svgEl("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "smoke", tabindex: 0, role: "img" });
  const medians = points.filter((p) => p.median_ms !== null).map((p) => p.median_ms);
  const highest = Math.max(...points.filter((p) => p.max_ms !== null).map((p) => p.max_ms), 0.001);
  // An outlier must not flatten the rest: the scale stops at four times the highest median.
  const top = Math.min(highest, 4 * Math.max(...medians, 0.001)) * 1.1;
  const first = points.length ? points[0].at : now;
  const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - first + BIN_S));
  const x = (at) => WIDTH * (1 - (now - at) / span);
  const y = (value) => (HEIGHT - STRIP - 1) * (1 - Math.min(value, top) / top);
  const step = (WIDTH * BIN_S) / span;
  let path = "";
  points.forEach((p, i) => {
    const left = x(p.at);
    const hit = svgEl("g", { "data-index": i });
    const title = svgEl("title", {});
    title.textContent = describePoint(p);
    hit.append(title);
    if (p.min_ms !== null) {
      hit.append(svgEl("rect", { x: left, y: y(p.max_ms), width: step, height: Math.max(1, y(p.min_ms) - y(p.max_ms)), class: "spread" }));
      // A step per bin: level across its width, so that one bin alone is a visible line.
      path += `${path ? "L" : "M"}${left.toFixed(1)},${y(p.median_ms).toFixed(1)}H${(left + step).toFixed(1)}`;
    }
    hit.append(svgEl("rect", { x: left, y: HEIGHT - STRIP, width: step, height: STRIP, fill: lossColour(p) }));
    svg.append(hit);
  });
  if (path) svg.append(svgEl("path", { d: path, class: "median", stroke: cssVar("--accent") }));
  const last = points[points.length - 1];
  svg.setAttribute("aria-label", `${t.name}, last hour: ${last ? describePoint(last) : "no rounds yet"} Left and right arrows step through the hour.`);
  // Each message redraws the chart: the point picked by the keyboard stays picked.
  const picked = chosen?.key === key(t) ? points.findIndex((p) => p.at === chosen.at) : -1;
  let selected = picked < 0 ? points.length - 1 : picked;
  const caption = () => setText("watch-detail", `${t.name} ${t.address ?? ""} — ${describePoint(points[selected])}`);
  svg.addEventListener("focus", () => points.length && caption());
  svg.addEventListener("keydown", (event) => {
    if (!points.length || !["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) return;
    event.preventDefault();
    if (event.key === "ArrowLeft") selected = Math.max(0, selected - 1);
    if (event.key === "ArrowRight") selected = Math.min(points.length - 1, selected + 1);
    if (event.key === "Home") selected = 0;
    if (event.key === "End") selected = points.length - 1;
    chosen = selected === points.length - 1 ? null : { key: key(t), at: points[selected].at };
    caption();
  });
  return svg;
}

function state(t) {
  const r = t.last_round;
  if (!r) return ["waiting", "", "no round yet"];
  if (t.up) {
    const note = r.late ? "up; the last round's times were left out because this server was busy" : "up: the last round came back exactly";
    return [r.lost || r.failed ? "degraded" : "up", r.lost || r.failed ? "warn" : "good", note];
  }
  return ["down", "bad", r.error ?? "nothing came back"];
}

// The words of a target's row: [text, class, explanation] for each cell before its chart.
function words(t) {
  const [word, tone, why] = state(t);
  const r = t.last_round;
  const loss = t.loss_ratio_5m;
  return [
    [t.name, "", null],
    // A name is resolved at its first round: before that it is not known, not unresolved.
    [t.address ?? (r ? "unresolved" : "–"), "mono", `${t.target} (${t.protocol})`],
    [word, tone, why],
    [
      r?.rtt_ms ? ms(r.rtt_ms.p50) : "–",
      "num",
      r?.rtt_ms ? `median of the last round; fastest ${ms(r.rtt_ms.min)}, slowest ${ms(r.rtt_ms.max)}` : "no times in the last round",
    ],
    [loss === null ? "–" : `${decimals.format(100 * loss)} %`, loss ? "num bad" : "num", "round trips that never came back, last 5 minutes"],
  ];
}

// A row is kept from one message to the next, its cells updated in place, and its chart drawn
// again only when its points change or a bin ends (within a bin the hour moves by less than a
// pixel): an hour of 64 targets is some 23,000 points, too many to draw every second.
function rowOf(t, now) {
  const points = histories.get(key(t)) ?? [];
  const binEnd = Math.ceil(now / BIN_S) * BIN_S;
  const cells = words(t);
  let kept = rows.get(key(t));
  if (!kept) {
    kept = { tr: row([...cells.map(() => cell("td", "")), cell("td", "")]), drawing: null };
    kept.tr.dataset.key = key(t);
    rows.set(key(t), kept);
  }
  cells.forEach(([text, className, why], i) => {
    const td = kept.tr.cells[i];
    if (td.textContent !== text) td.textContent = text;
    td.className = className;
    if (why !== null && td.title !== why) explained(td, why);
  });
  const drawing = `${binEnd} ${points.length} ${points[0]?.at} ${JSON.stringify(points[points.length - 1])}`;
  if (kept.drawing !== drawing) {
    const plot = kept.tr.cells[kept.tr.cells.length - 1];
    const hadFocus = plot.contains(document.activeElement);
    const svg = chart(t, points, binEnd);
    plot.replaceChildren(svg);
    if (hadFocus) svg.focus({ preventScroll: true });
    kept.drawing = drawing;
  }
  return kept.tr;
}

function renderRows(targets, now) {
  const tbody = byId("watch-targets");
  replaceRows(tbody, () => targets.map((t) => rowOf(t, now)));
}

async function fetchHistory() {
  try {
    const response = await fetch("/api/watch", { cache: "no-store" });
    if (!response.ok) return;
    for (const t of (await response.json()).targets) merge(t, t.history);
  } catch {
    // The pushed points still fill the chart from now on.
  }
}

export function renderWatch(stats) {
  const targets = stats.watch?.targets ?? [];
  byId("watch").hidden = targets.length === 0;
  if (targets.length === 0) return;
  serverNow = stats.taken_at;
  fetched ??= fetchHistory();
  // Charts of addresses no longer watched go (pods come and go: an open page must not keep
  // an hour of each one that left).
  const watched = new Set(targets.map(key));
  for (const k of histories.keys()) {
    if (watched.has(k)) continue;
    histories.delete(k);
    rows.delete(k);
  }
  for (const t of targets) merge(t, t.history);
  const up = targets.filter((t) => t.up).length;
  const waiting = targets.filter((t) => !t.last_round).length;
  setText("watch-summary", `${up} of ${targets.length} up${waiting ? `, ${waiting} waiting` : ""}`);
  renderRows(targets, stats.taken_at);
}
