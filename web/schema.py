"""The JSON documents of the API, built from `server.snapshots` snapshots.

These shapes are public interface (docs/api.md describes them): scripts read them, so
fields are only ever added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from echostat.server import __version__
from echostat.server.config import Config, StatusConfig
from echostat.server.path_quality import TcpSnapshot
from echostat.server.report import syn_document
from echostat.server.snapshots import ConnectionSnapshot, StatsSnapshot
from echostat.server.tcp_info import TcpInfo
from echostat.server.udp_stats import PeerSnapshot, UDPListenerSnapshot
from echostat.web.counters import StatusCounters
from echostat.web.history import Rates

_TCP_INFO_FIELDS = tuple(field.name for field in dataclasses.fields(TcpInfo))
_NO_TCP_INFO = dict.fromkeys(_TCP_INFO_FIELDS)

# Fields copied as they are into the documents; the shapes are public (docs/api.md).
_STATS_RATES = tuple(
    field.name for field in dataclasses.fields(Rates) if field.name != "retransmits_per_s"
)
"""The ``rates`` object: every rate but retransmits, which the ``tcp`` object holds."""
_LISTENER_FIELDS = ("name", "host", "port", "tls", "active", "accepted")
_WORKER_FIELDS = ("pid", "active", "accepted", "closed", "bytes_received", "bytes_sent", "stale_s")
_UDP_LISTENER_FIELDS = (
    "name",
    "host",
    "port",
    "datagrams_received",
    "datagrams_sent",
    "bytes_received",
    "bytes_sent",
)
_CONNECTION_FIELDS = ("id", "peer", "via", "worker", "listener", "connected_at")


def stats_document(snap: StatsSnapshot, rates: Rates) -> dict[str, Any]:
    """The stats part of ``GET /api/stats`` and of every pushed update."""
    return {
        "version": __version__,
        "taken_at": snap.taken_at,
        "uptime_seconds": round(snap.uptime_seconds, 3),
        "accepting": snap.accepting,
        "ready": snap.ready,
        "connections": {
            "active": snap.active,
            "accepted": snap.accepted,
            "closed": snap.closed,
            "rejected": snap.rejected_total,
            "rejected_by_reason": dict(sorted(snap.rejected.items())),
            "closed_by_server": dict(sorted(snap.closed_by_server.items())),
        },
        "bytes": {
            "received": snap.bytes_received,
            "sent": snap.bytes_sent,
            "buffered": snap.buffered_bytes,
        },
        "rates": {name: rates.published(name) for name in _STATS_RATES},
        "listeners": [_attributes(listener, _LISTENER_FIELDS) for listener in snap.listeners],
        "workers": [_attributes(worker, _WORKER_FIELDS) for worker in snap.workers],
        "worker_restarts": snap.worker_restarts,
        "config": {
            "loaded_at": snap.config_loaded_at,
            "age_s": round(max(0.0, snap.taken_at - snap.config_loaded_at), 3),
            "reloads": snap.reloads,
            "reloads_failed": snap.reloads_failed,
        },
        "udp_listeners": [_udp_listener_document(udp) for udp in snap.udp_listeners],
        "tcp": _tcp_document(snap.tcp, rates),
        "access_log": {"errors": snap.access_log_errors},
    }


def _attributes(snapshot: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes `names` of `snapshot`, keyed by name in that order. (Not
    `dataclasses.asdict`, which deep-copies every value: this runs for each row of every tick.)"""
    return {name: getattr(snapshot, name) for name in names}


def _tcp_info_document(info: TcpInfo | None) -> dict[str, Any]:
    """One connection's ``tcp`` object; all null without TCP_INFO."""
    return _NO_TCP_INFO if info is None else _attributes(info, _TCP_INFO_FIELDS)


def _tcp_document(tcp: TcpSnapshot, rates: Rates) -> dict[str, Any]:
    """Path quality: RTT percentiles over open connections, retransmitted segments."""
    known = tcp.measured
    return {
        "available": known,
        "connections_measured": len(tcp.open_rtt_ms),
        "rtt_ms": {
            name: tcp.rtt_percentile_ms(fraction)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "retransmits": tcp.retransmits if known else None,
        "retransmits_per_s": rates.published("retransmits_per_s") if known else None,
        "rtt_observations": tcp.rtt_count if known else None,
        "rtt_observed_sum_s": round(tcp.rtt_sum_s, 6) if known else None,
    }


def _udp_listener_document(udp: UDPListenerSnapshot) -> dict[str, Any]:
    return {
        **_attributes(udp, _UDP_LISTENER_FIELDS),
        "dropped": udp.dropped_total,
        "dropped_by_reason": dict(sorted(udp.dropped.items())),
        "peers": udp.peers,
        "peers_evicted": udp.peers_evicted,
    }


def limits_document(config: Config) -> dict[str, Any]:
    """The limits in force, keyed as in ``config.yaml``; ``udp`` too when UDP listeners exist."""
    document = dataclasses.asdict(config.limits)
    if any(listener.protocol == "udp" for listener in config.listeners):
        document["udp"] = dataclasses.asdict(config.udp)
    return document


def status_connections_document(counters: StatusCounters, limits: StatusConfig) -> dict[str, Any]:
    """The status side's own connections, shaped like the echo side's ``connections``, and
    their cap under `limits`."""
    return {
        "active": counters.active,
        "max_connections": limits.max_connections,
        "accepted": counters.accepted,
        "rejected": sum(counters.rejected.values()),
        "rejected_by_reason": dict(sorted(counters.rejected.items())),
        "closed_by_server": dict(sorted(counters.closed_by_server.items())),
    }


def connections_document(total: int, rows: Sequence[ConnectionSnapshot]) -> dict[str, Any]:
    """The body of ``GET /api/connections``: `total` open, the first `rows` of them listed."""
    return {"total": total, "connections": [_connection_document(row) for row in rows]}


def _connection_document(conn: ConnectionSnapshot) -> dict[str, Any]:
    return {
        **_attributes(conn, _CONNECTION_FIELDS),
        "age_s": round(conn.age_s, 3),
        "idle_s": round(conn.idle_s, 3),
        "bytes_received": conn.bytes_received,
        "bytes_sent": conn.bytes_sent,
        "tcp": _tcp_info_document(conn.tcp),
        "syn": _syn_row_document(conn),
    }


def _syn_row_document(conn: ConnectionSnapshot) -> dict[str, Any] | None:
    """A connection's ``syn`` object, with the MSS the server itself advertised on it."""
    document = syn_document(conn.syn)
    if document is not None:
        document["listener_mss"] = conn.listener_mss
    return document


def peers_document(total: int, rows: Sequence[PeerSnapshot]) -> dict[str, Any]:
    """The body of ``GET /api/peers``: `total` UDP peers seen lately, the first `rows` listed."""
    return {"total": total, "peers": [dataclasses.asdict(row) for row in rows]}
