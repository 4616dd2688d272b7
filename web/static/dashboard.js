"use strict";
// Live status: one EventSource on /api/events; every value is set as text, never as HTML.

const RETRY_MS = 1000;

function setText(id, value) {
  document.getElementById(id).textContent = String(value);
}

function showState(state) {
  const el = document.getElementById("link-state");
  el.dataset.state = state;
  el.textContent = state;
}

function render(stats) {
  setText("active-connections", stats.connections.active);
  setText("accepted", stats.connections.accepted);
  setText("closed", stats.connections.closed);
  setText("rejected", stats.connections.rejected);
  setText("bytes-received", stats.bytes.received.toLocaleString());
  setText("bytes-sent", stats.bytes.sent.toLocaleString());
  setText("uptime", `${Math.floor(stats.uptime_seconds)} s`);
  const rows = stats.listeners.map((l) => {
    const tr = document.createElement("tr");
    for (const cell of [l.name, `${l.host}:${l.port}`, l.active, l.accepted]) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.appendChild(td);
    }
    return tr;
  });
  document.getElementById("listeners").replaceChildren(...rows);
}

function connect() {
  const events = new EventSource("/api/events");
  events.onopen = () => showState("live");
  events.onmessage = (event) => render(JSON.parse(event.data));
  events.onerror = () => {
    showState("disconnected");
    if (events.readyState === EventSource.CLOSED) {
      setTimeout(connect, RETRY_MS);
    }
  };
}

connect();
