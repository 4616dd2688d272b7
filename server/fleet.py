"""The whole instance as the status page sees it when several worker processes echo.

Each worker reports its own snapshot and busiest connections once per tick over a pipe;
`FleetStats` keeps the latest report of each and sums them on demand. Nothing crosses a
process boundary on the echo path. A worker that dies is folded into retired totals: its
connections count as closed, its bytes and accepts stay in the lifetime figures.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterable

from server.stats import (
    ConnectionSnapshot,
    ListenerSnapshot,
    ReloadCounters,
    StatsSnapshot,
    TcpSnapshot,
)
from server.tcp_info import TcpInfo
from server.udp_stats import PeerSnapshot, UDPListenerSnapshot

REPORT_INTERVAL_S = 0.5
"""How often workers report; the page and API lag the echo path by at most this."""

CONNECTIONS_PER_REPORT = 200
"""Each worker reports its busiest connections only, so a report stays small."""


def encode_report(
    snapshot: StatsSnapshot,
    connections: list[ConnectionSnapshot],
    peers: list[PeerSnapshot] | None = None,
) -> bytes:
    """One line a worker sends: its snapshot, its busiest connections and UDP peers."""
    report = {
        "snapshot": snapshot.to_dict(),
        "connections": [dataclasses.asdict(conn) for conn in connections],
        "peers": [dataclasses.asdict(peer) for peer in peers or ()],
    }
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


def decode_report(line: bytes) -> tuple[StatsSnapshot, list[ConnectionSnapshot]]:
    report = json.loads(line)
    connections = [
        ConnectionSnapshot(**{**row, "tcp": row["tcp"] and TcpInfo(**row["tcp"])})
        for row in report["connections"]
    ]
    return StatsSnapshot.from_dict(report["snapshot"]), connections


def decode_peers(line: bytes) -> list[PeerSnapshot]:
    """The UDP peers of a report line."""
    return [PeerSnapshot(**row) for row in json.loads(line).get("peers", ())]


class FleetStats:
    """A `StatsSource` over every worker's latest report plus the totals of dead workers."""

    def __init__(self) -> None:
        self.accepting = False
        self.ready = False
        self._started = time.monotonic()
        self._reports: dict[int, tuple[StatsSnapshot, list[ConnectionSnapshot]]] = {}
        self._retired: list[StatsSnapshot] = []
        self._peers: dict[int, list[PeerSnapshot]] = {}
        self.worker_restarts = 0
        self.config_state = ReloadCounters(loaded_at=time.time())

    def update(self, pid: int, line: bytes) -> None:
        """Record the report line `line` from worker `pid`."""
        self._reports[pid] = decode_report(line)
        self._peers[pid] = decode_peers(line)

    def retire(self, pid: int) -> None:
        """Worker `pid` is gone: its open connections died with it."""
        report = self._reports.pop(pid, None)
        self._peers.pop(pid, None)
        if report is None:
            return
        snap = report[0]
        self._retired.append(
            dataclasses.replace(
                snap,
                active=0,
                closed=snap.closed + snap.active,
                listeners=tuple(dataclasses.replace(s, active=0) for s in snap.listeners),
                tcp=dataclasses.replace(snap.tcp, open_rtt_ms=()),
                udp_listeners=tuple(dataclasses.replace(u, peers=0) for u in snap.udp_listeners),
            )
        )

    @property
    def active(self) -> int:
        return sum(snap.active for snap, _ in self._reports.values())

    def snapshot(self) -> StatsSnapshot:
        live = [snap for snap, _ in self._reports.values()]
        rejected: Counter[str] = Counter()
        closed_by_server: Counter[str] = Counter()
        for snap in [*live, *self._retired]:
            rejected.update(snap.rejected)
            closed_by_server.update(snap.closed_by_server)
        everyone = [*live, *self._retired]
        return StatsSnapshot(
            taken_at=time.time(),
            uptime_seconds=time.monotonic() - self._started,
            accepting=self.accepting,
            ready=self.ready,
            active=sum(s.active for s in live),
            accepted=sum(s.accepted for s in everyone),
            closed=sum(s.closed for s in everyone),
            rejected=dict(rejected),
            closed_by_server=dict(closed_by_server),
            bytes_received=sum(s.bytes_received for s in everyone),
            bytes_sent=sum(s.bytes_sent for s in everyone),
            listeners=_merge_listeners(everyone),
            workers=tuple(worker for snap in live for worker in snap.workers),
            udp_listeners=_merge_udp_listeners(everyone),
            worker_restarts=self.worker_restarts,
            config_loaded_at=self.config_state.loaded_at,
            reloads=self.config_state.reloads,
            reloads_failed=self.config_state.failed,
            tcp=TcpSnapshot.merge([s.tcp for s in live], [s.tcp for s in self._retired]),
        )

    def connections(self, limit: int | None = None) -> list[ConnectionSnapshot]:
        """The busiest connections over all workers (each worker reports its busiest)."""
        rows = [row for _, conns in self._reports.values() for row in conns]
        rows.sort(key=lambda c: c.bytes_received + c.bytes_sent, reverse=True)
        return rows[:limit]

    def peers(self, limit: int | None = None) -> list[PeerSnapshot]:
        """The UDP peers with most datagrams over all workers (each reports its busiest)."""
        rows = [row for peers in self._peers.values() for row in peers]
        rows.sort(key=lambda p: p.datagrams_received, reverse=True)
        return rows[:limit]


def _merge_listeners(snapshots: Iterable[StatsSnapshot]) -> tuple[ListenerSnapshot, ...]:
    """Listeners by name, in first-seen order, with counts summed over `snapshots`."""
    merged: dict[str, ListenerSnapshot] = {}
    for snap in snapshots:
        for item in snap.listeners:
            seen = merged.get(item.name)
            merged[item.name] = (
                item
                if seen is None
                else dataclasses.replace(
                    seen, active=seen.active + item.active, accepted=seen.accepted + item.accepted
                )
            )
    return tuple(merged.values())


def _merge_udp_listeners(snapshots: Iterable[StatsSnapshot]) -> tuple[UDPListenerSnapshot, ...]:
    """UDP listeners by name with counts summed; a retired worker's peers are gone."""
    merged: dict[str, UDPListenerSnapshot] = {}
    for snap in snapshots:
        for item in snap.udp_listeners:
            seen = merged.get(item.name)
            merged[item.name] = item if seen is None else _add_udp(seen, item)
    return tuple(merged.values())


def _add_udp(a: UDPListenerSnapshot, b: UDPListenerSnapshot) -> UDPListenerSnapshot:
    return dataclasses.replace(
        a,
        datagrams_received=a.datagrams_received + b.datagrams_received,
        datagrams_sent=a.datagrams_sent + b.datagrams_sent,
        bytes_received=a.bytes_received + b.bytes_received,
        bytes_sent=a.bytes_sent + b.bytes_sent,
        dropped=dict(Counter(a.dropped) + Counter(b.dropped)),
        peers=a.peers + b.peers,
        peers_evicted=a.peers_evicted + b.peers_evicted,
    )
