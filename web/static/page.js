// The page's text: formatting of counts, bytes, durations and addresses, and DOM helpers that
// set every value as text, never as HTML.

export const numbers = new Intl.NumberFormat(undefined);
export const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
export const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export function formatBytes(n) {
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

export function formatLimit(key, value) {
  if (typeof value !== "number") return String(value);
  if (key.endsWith("_bytes")) return `${formatBytes(value)} (${numbers.format(value)})`;
  if (key.endsWith("_s")) return `${decimals.format(value)} s`;
  return numbers.format(value);
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
