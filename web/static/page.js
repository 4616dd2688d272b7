// The page's text: formatting of counts, bytes, durations and addresses, and DOM helpers that
// set every value as text, never as HTML.

export const numbers = new Intl.NumberFormat(undefined);
export const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
// 24-hour everywhere, as on the charts' axes: "16:41:55", never "04:41:55 PM".
export const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

// Sizes in the reader's locale too: "95,4 MiB" in German, where "95.4" would read as 954.
const oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const wholeSize = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0, useGrouping: false });

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = unit === 0 || value >= 100 ? wholeSize : oneDecimal;
  return `${shown.format(value)} ${units[unit]}`;
}

export function formatDuration(seconds) {
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

// A limit with the unit of what it bounds, read from its key as config.yaml names it:
// `max_<things>_per_s` is a rate of things (bytes shown as sizes), `_per_ip` for each client
// address, `<name>_s` a duration, `<name>_bytes` a size; other numbers are counts. A rate,
// duration or per-address limit of 0 is off.
export function formatLimit(key, value) {
  if (typeof value !== "number") return String(value);
  const name = key.slice(key.lastIndexOf(".") + 1);
  const perIp = name.endsWith("_per_ip");
  const base = perIp ? name.slice(0, -"_per_ip".length) : name;
  const rate = /^max_(\w+)_per_s$/.exec(base);
  if (value === 0 && (perIp || rate || base.endsWith("_s"))) return "off";
  const each = perIp ? " per IP" : "";
  if (rate?.[1] === "bytes") return `${formatBytes(value)}/s${each} (${numbers.format(value)} bytes/s)`;
  if (rate) return `${numbers.format(value)} ${rate[1].replaceAll("_", " ")}/s${each}`;
  if (base.endsWith("_bytes")) return `${formatBytes(value)} (${numbers.format(value)} bytes)`;
  if (base.endsWith("_s")) return `${decimals.format(value)} s`;
  return `${numbers.format(value)}${each}`;
}

// host:port, with an IPv6 host in brackets.
export function formatAddress(host, port) {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

export function byId(id) {
  return document.getElementById(id);
}

export function setText(id, value) {
  byId(id).textContent = String(value);
}

export function cell(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = String(text);
  if (className) el.className = className;
  return el;
}

export function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

// Replace a table body's rows with those `makeRows` returns (each with a `data-key`). A row
// whose key is already shown stays the same element, updated cell by cell where it differs,
// so a pointer's tooltip on it stays open (the browser closes it when the element under the
// pointer is replaced) and focus stays where it was: the page renders every second. Where a
// row must move, the row, or the element in it, that had focus (asked before the rows are
// made) has it again.
export function replaceRows(tbody, makeRows) {
  const focused = document.activeElement;
  const old = tbody.contains(focused) ? focused.closest("tr") : null;
  const inner = old && old !== focused ? [...old.querySelectorAll("[tabindex]")].indexOf(focused) : -1;
  const shown = new Map([...tbody.rows].map((tr) => [tr.dataset.key, tr]));
  const rows = makeRows().map((tr) => {
    const was = shown.get(tr.dataset.key);
    shown.delete(tr.dataset.key);
    return was && becomes(was, tr) ? was : tr;
  });
  rows.forEach((tr, i) => {
    if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] ?? null);
  });
  while (tbody.rows.length > rows.length) tbody.lastElementChild.remove();
  const copy = old && rows.find((tr) => tr.dataset.key === old.dataset.key);
  if (!copy || copy.contains(document.activeElement)) return;
  const target = inner < 0 ? copy : copy.querySelectorAll("[tabindex]")[inner];
  target?.focus({ preventScroll: true });
}

// Make row `was` read as `tr`, a new row of the same key: true if done, false if their cells
// differ in number or kind (then `tr` takes its place).
function becomes(was, tr) {
  if (was === tr) return true;
  const cells = [...tr.cells];
  if (was.cells.length !== cells.length || cells.some((td, i) => was.cells[i].tagName !== td.tagName)) return false;
  takeAttributes(was, tr);
  cells.forEach((td, i) => {
    const target = was.cells[i];
    if (target.outerHTML === td.outerHTML) return;
    takeAttributes(target, td);
    target.replaceChildren(...td.childNodes);
  });
  return true;
}

function takeAttributes(el, from) {
  for (const name of el.getAttributeNames()) if (!from.hasAttribute(name)) el.removeAttribute(name);
  for (const name of from.getAttributeNames()) {
    const value = from.getAttribute(name);
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }
}

// An element with an explanation in its title, which a keyboard or a finger reaches as well
// (see enableTips).
export function explained(el, title) {
  el.title = title;
  el.tabIndex = 0;
  return el;
}

export function pairs(entries) {
  return entries.flatMap(([term, detail]) => [cell("dt", term), cell("dd", detail)]);
}

// A <dl>'s terms and details from counts by reason, e.g. {idle_timeout: 3}.
export function reasonPairs(counts) {
  return pairs(Object.entries(counts).map(([reason, n]) => [reason, numbers.format(n)]));
}

// Under a table of the first rows: what to say when it is empty, or how many it leaves out.
export function showRowsNote(id, total, shown, emptyText, noun) {
  const hidden = total - shown;
  const note = byId(id);
  note.hidden = total > 0 && hidden <= 0;
  note.textContent =
    total === 0 ? emptyText : `and ${numbers.format(hidden)} more (${numbers.format(total)} ${noun})`;
}

// The explanations in `title` attributes, for a keyboard or a finger as well as a mouse: each
// titled element takes focus (Tab, or a tap) and, while it has it, shows its title in a
// tooltip below it. Elements added later join by having a title and a tabindex.
export function enableTips() {
  for (const el of document.querySelectorAll("[title]")) {
    if (!el.hasAttribute("tabindex")) el.tabIndex = 0;
  }
  const tip = cell("div", "", "tip");
  tip.id = "tip";
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  document.body.append(tip);
  const hide = () => {
    tip.hidden = true;
  };
  document.addEventListener("focusin", (event) => {
    const el = event.target.closest?.("[title]");
    if (!el || !el.title) return hide();
    tip.textContent = el.title;
    tip.hidden = false;
    // Placed on the page, not the viewport, so it stays by its element as the page scrolls.
    const box = el.getBoundingClientRect();
    const view = document.documentElement;
    const left = Math.max(8, Math.min(box.left, view.clientWidth - tip.offsetWidth - 8));
    const below = box.bottom + 6 + tip.offsetHeight <= view.clientHeight;
    const top = below ? box.bottom + 6 : Math.max(8, box.top - 6 - tip.offsetHeight);
    tip.style.left = `${left + window.scrollX}px`;
    tip.style.top = `${top + window.scrollY}px`;
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", (event) => event.key === "Escape" && hide());
}
