// What arrived of each connection's SYN (path quality on): the table's hops and MSS columns,
// the rest of the SYN as the row's detail (its tooltip, on hover or focus), and a mark on rows whose SYN lost an
// option or arrived with an MSS below the one the server advertised (a clamp on the way).
// dashboard.js calls synCells and markSyn for each row of its connection table.

import { cell, numbers } from "./page.js";

// Options every current TCP stack puts in its SYN; a SYN without one met a middlebox that
// removed it. Timestamps are not among them: Windows leaves them out by default.
const EXPECTED = [
  ["mss", "MSS"],
  ["wscale", "window scaling"],
  ["sack", "SACK"],
];

const count = (n) => (n === null || n === undefined ? "–" : numbers.format(n));

function clamped(syn) {
  return syn.mss !== null && syn.listener_mss !== null && syn.mss < syn.listener_mss;
}

function missing(syn) {
  if (syn.other_options === null) return []; // cut short: unknown, not missing
  return EXPECTED.filter(([key]) => syn[key] === null || syn[key] === false).map(([, name]) => name);
}

// The table's two SYN columns for one connection: routers passed, and the MSS that arrived.
export function synCells(c) {
  const syn = c.syn;
  if (!syn) return [cell("td", "–", "num syn"), cell("td", "–", "num syn")];
  return [
    cell("td", count(syn.hops), "num syn syn-hops"),
    cell("td", count(syn.mss), clamped(syn) ? "num syn bad syn-mss" : "num syn syn-mss"),
  ];
}

function detail(syn) {
  const flags = [
    `TTL ${count(syn.ttl)} (${count(syn.hops)} hops)`,
    `DSCP ${count(syn.dscp)}`,
    `ECN ${count(syn.ecn)}`,
    ...(syn.df === null ? [] : [syn.df ? "DF" : "no DF"]),
  ];
  const options = [
    `MSS ${count(syn.mss)} (server's ${count(syn.listener_mss)})`,
    `window scale ${count(syn.wscale)}`,
    `SACK ${syn.sack ? "yes" : "no"}`,
    `timestamps ${syn.timestamps ? "yes" : "no"}`,
    `Fast Open ${syn.tfo ? "yes" : "no"}`,
    ...(syn.other_options?.length ? [`other options ${syn.other_options.join(", ")}`] : []),
  ];
  const marks = missing(syn).map((name) => `arrived without ${name}`);
  if (clamped(syn)) marks.push("MSS below the server's: clamped on the way?");
  return [`SYN as it arrived: ${flags.join(", ")}`, options.join(", "), ...marks].join("\n");
}

// The row's detail and its mark: a lost option or a clamped MSS.
export function markSyn(tr, c) {
  const syn = c.syn;
  if (!syn) return;
  tr.title = detail(syn);
  tr.tabIndex = 0; // page.js shows a title on focus too: keyboard and touch reach the detail
  tr.classList.toggle("syn-degraded", clamped(syn) || missing(syn).length > 0);
}
