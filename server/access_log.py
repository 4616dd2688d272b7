"""The access log: one line per closed echo connection and per rejected one, text or JSON.

In the spirit of HAProxy's TCP log: when it ended, who the client was, how long it lasted,
bytes each way, who closed it and why, the path's final RTT and retransmits, and what arrived
of its SYN. Every line has the same fields (`FIELDS`), in this order, whatever the event; JSON
lines have exactly these keys. A file is opened in append mode and reopened by `reopen` (on
SIGUSR1) so that log rotation can move it away; ``-`` writes to stderr. A line that can't be
written (a full disk) is counted and warned about at most every `WARNING_INTERVAL_S`; it never
reaches the connection that was being logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from echostat.server.config import AccessLogConfig
from echostat.server.registry import Connection
from echostat.server.resources import ResourceError
from echostat.server.syn import SynHeaders

log = logging.getLogger(__name__)

FIELDS = (
    "time",
    "event",
    "peer",
    "via",
    "listener",
    "duration_s",
    "bytes_received",
    "bytes_sent",
    "closed_by",
    "reason",
    "tls",
    "rtt_ms",
    "retransmits",
    "syn_ttl",
    "syn_hops",
    "syn_dscp",
    "syn_ecn",
    "syn_df",
    "syn_mss",
    "syn_wscale",
    "syn_options",
)
"""The keys of every JSON line, and the order of the text line's fields."""

WARNING_INTERVAL_S = 10.0
"""At most one warning about failing writes this often."""


class AccessLog:
    """Writes access log lines as `config` says; `close` once at the end.

    No method raises for a failed write or flush: `on_error` is called once per failure
    (the registry counts them), and a warning names the path and the error.
    """

    def __init__(
        self,
        config: AccessLogConfig,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_error = on_error
        self._warned_at = -WARNING_INTERVAL_S
        self._unreported = 0
        self._stream: TextIO = sys.stderr
        self._format = self._json if config.format == "json" else self._text
        if config.path != "-":
            self._stream = self._open()

    def closed(self, conn: Connection) -> None:
        """Log `conn`, which the registry has just counted as closed."""
        now = self._clock()
        tcp = conn.tcp
        self._write(
            now,
            event="close",
            peer=conn.peer,
            via=conn.via,
            listener=conn.listener.name,
            duration_s=round(max(0.0, now - conn.connected_at), 3),
            bytes_received=conn.bytes_received,
            bytes_sent=conn.bytes_sent - conn.unsent_bytes(),
            closed_by=conn.closed_by,
            reason=conn.end_reason,
            tls=conn.tls_protocol,
            rtt_ms=tcp and tcp.rtt_ms,
            retransmits=tcp and tcp.retransmits,
            **_syn_fields(conn.syn),
        )

    def rejected(self, reason: str, peer: str, listener: str, via: str | None = None) -> None:
        """Log a connection closed at accept time for `reason`; `via`: the balancer, when
        `peer` is the client its PROXY header named."""
        self._write(
            self._clock(),
            event="reject",
            peer=peer,
            via=via,
            listener=listener,
            duration_s=0.0,
            bytes_received=0,
            bytes_sent=0,
            closed_by="server",
            reason=reason,
            tls=None,
            rtt_ms=None,
            retransmits=None,
            **_syn_fields(None),
        )

    def reopen(self) -> None:
        """Open `config.path` anew (log rotation moved it away); keep the old file if the
        new one can't be opened."""
        if self.config.path == "-":
            return
        try:
            stream = self._open()
        except ResourceError as exc:
            log.error("cannot reopen the access log, still writing to the old file: %s", exc)
            return
        self.close()
        self._stream = stream
        log.info("access log reopened: %s", self.config.path)

    def close(self) -> None:
        """Flush and close the file; a failing last flush is counted, never raised."""
        if self._stream is sys.stderr:
            return
        try:
            self._stream.close()
        except OSError as exc:
            self._failed(exc)

    def _open(self) -> TextIO:
        """`config.path` for appending, one line per write; `ResourceError` if impossible."""
        path = self.config.path
        try:
            return open(path, "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise ResourceError(f"access_log.path: cannot open {path}: {exc.strerror}") from None

    def _write(self, now: float, **record: Any) -> None:
        record = {"time": _timestamp(now), **record}
        try:
            self._stream.write(self._format(record) + "\n")
            if self._stream is sys.stderr:
                self._stream.flush()
        except OSError as exc:  # ENOSPC, EIO, EFBIG: the disk's trouble, not the client's
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """Count a failed write; warn with the path and the error at most every
        `WARNING_INTERVAL_S`, saying how many failed since the last warning."""
        if self._on_error is not None:
            self._on_error()
        self._unreported += 1
        now = time.monotonic()
        if now - self._warned_at < WARNING_INTERVAL_S:
            return
        self._warned_at = now
        log.warning(
            "access log %s: cannot write (%d lines lost since the last warning): %s",
            self.config.path,
            self._unreported,
            exc.strerror or exc,
        )
        self._unreported = 0

    @staticmethod
    def _json(record: dict[str, Any]) -> str:
        return json.dumps(record, separators=(",", ":"))

    @staticmethod
    def _text(record: dict[str, Any]) -> str:
        head = f"{record['time']} {record['event']} {record['peer']}"
        pairs = (f"{key}={_text_value(record[key])}" for key in FIELDS[3:])
        return " ".join((head, *pairs))


def _syn_fields(syn: SynHeaders | None) -> dict[str, Any]:
    """The ``syn_`` fields of a line: the SYN as it arrived; options as ``mss,sack,...``
    (other kinds by number); all None when no SYN was saved."""
    if syn is None:
        return dict.fromkeys(FIELDS[FIELDS.index("syn_ttl") :])
    options = None
    if syn.other_options is not None:
        options = ",".join([*syn.options, *map(str, syn.other_options)])
    return {
        "syn_ttl": syn.ttl,
        "syn_hops": syn.hops,
        "syn_dscp": syn.dscp,
        "syn_ecn": syn.ecn,
        "syn_df": syn.df,
        "syn_mss": syn.mss,
        "syn_wscale": syn.wscale,
        "syn_options": options,
    }


def _text_value(value: object) -> str:
    return "-" if value is None else str(value)


def _timestamp(now: float) -> str:
    """`now` in UTC, ISO 8601 with milliseconds: ``2026-12-02T00:27:36.123Z``."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
