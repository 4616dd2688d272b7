"""Frozen snapshots of the registry's figures, and their wire form between processes.

A snapshot is what the status side reads: totals at one instant (`StatsSnapshot`) and rows
of open connections (`ConnectionSnapshot`). `to_dict` gives plain data for JSON; `from_dict`
is its inverse, so a worker's figures cross a pipe and come back as the same dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from echostat.server.path_quality import TcpSnapshot
from echostat.server.syn import SynHeaders
from echostat.server.tcp_info import TcpInfo
from echostat.server.udp_stats import UDPListenerSnapshot


@dataclass(frozen=True)
class StatsSnapshot:
    """Totals at one instant; `bytes_*` include connections that already closed."""

    taken_at: float
    uptime_seconds: float
    accepting: bool
    ready: bool
    active: int
    accepted: int
    closed: int
    rejected: dict[str, int]
    closed_by_server: dict[str, int]
    bytes_received: int
    bytes_sent: int
    listeners: tuple[ListenerSnapshot, ...]
    workers: tuple[WorkerSnapshot, ...]
    udp_listeners: tuple[UDPListenerSnapshot, ...] = ()
    worker_restarts: int = 0
    """Workers the supervisor restarted after they died; always 0 for a single process."""
    config_loaded_at: float = 0.0
    reloads: int = 0
    reloads_failed: int = 0
    tcp: TcpSnapshot = field(default_factory=TcpSnapshot)
    buffered_bytes: int = 0
    """Echo buffers held now for clients that read slower than they send."""
    access_log_errors: int = 0
    """Access log lines (or a final flush) that could not be written, e.g. on a full disk."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for sending between processes as JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatsSnapshot:
        """The inverse of `to_dict`."""
        return cls(
            **{
                **data,
                "listeners": tuple(ListenerSnapshot(**item) for item in data["listeners"]),
                "workers": tuple(WorkerSnapshot(**item) for item in data["workers"]),
                "tcp": TcpSnapshot.from_dict(data["tcp"]),
                "udp_listeners": tuple(
                    UDPListenerSnapshot(**item) for item in data.get("udp_listeners", ())
                ),
            }
        )


@dataclass(frozen=True)
class ConnectionSnapshot:
    """One open connection as a page or API row shows it; `bytes_sent` is what left."""

    id: int
    peer: str
    via: str | None
    worker: int
    listener: str
    connected_at: float
    age_s: float
    idle_s: float
    bytes_received: int
    bytes_sent: int
    tcp: TcpInfo | None = None
    syn: SynHeaders | None = None
    """Its SYN as it arrived (path quality on, Linux only)."""
    listener_mss: int | None = None
    """The MSS the server advertised on it (TCP_INFO's advmss), known with `syn`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for sending between processes as JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConnectionSnapshot:
        """The inverse of `to_dict`."""
        syn = data.get("syn")
        if syn is not None:
            others = syn["other_options"]
            syn = SynHeaders(**{**syn, "other_options": None if others is None else tuple(others)})
        return cls(**{**data, "tcp": data["tcp"] and TcpInfo(**data["tcp"]), "syn": syn})


@dataclass(frozen=True)
class ListenerSnapshot:
    """One echo listener's figures; its bytes include those of connections that closed."""

    name: str
    host: str
    port: int
    tls: bool
    active: int
    accepted: int
    closed: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker process's share of the totals."""

    pid: int
    active: int
    accepted: int
    closed: int
    bytes_received: int
    bytes_sent: int
    stale_s: float = 0.0
    """How old these figures are: 0 in a single process, else the age of the worker's report."""
