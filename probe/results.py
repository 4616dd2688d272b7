"""What a probe run found: the figures of each check, typed, and the run's outcome.

The fields are in the order the ``--json`` document gives them (`probe.report` writes it);
times are in milliseconds rounded to microseconds, as printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from echostat.probe.engine import Failure
from echostat.probe.figures import Timing
from echostat.probe.idle import IdleFigures
from echostat.probe.path_view import PathView


@dataclass(frozen=True)
class TLSFigures:
    """The negotiated TLS protocol and cipher, and how long the TLS handshake took."""

    protocol: str
    cipher: str
    handshake_ms: float


@dataclass(frozen=True)
class RoundTripFigures:
    """The ping-like check: one connection, round trips one at a time."""

    connect_ms: float
    tls: TLSFigures | None
    sent: int
    verified: int
    """Round trips whose every byte came back exactly."""
    failed: int
    bytes_sent: int
    bytes_verified: int
    rtt_ms: Timing


@dataclass(frozen=True)
class ConnectionCounts:
    opened: int
    failed: int


@dataclass(frozen=True)
class LoadFigures:
    """A load run: many connections at once for a while; the figures of either mode."""

    seconds: float
    connections: ConnectionCounts
    connect_ms: Timing
    tls: TLSFigures | None
    bytes_verified: int
    mb_per_s: float
    """Verified megabytes (10^6 bytes) per second."""


@dataclass(frozen=True)
class StreamLoadFigures(LoadFigures):
    """A stream load run: a window of bytes in flight per connection, no round trips."""

    bytes_sent: int


@dataclass(frozen=True)
class PingPongLoadFigures(LoadFigures):
    """A pingpong load run, with its round trips."""

    sent: int
    verified: int
    failed: int
    bytes_sent: int
    round_trips_per_s: float
    """Verified round trips per second of the run."""
    rtt_ms: Timing


@dataclass(frozen=True)
class HalfCloseFigures:
    """Send, shut down the write side, expect the bytes back and then EOF."""

    connect_ms: float
    bytes_sent: int
    bytes_verified: int
    echo_ms: float | None
    """From the shutdown to the last byte back; None if it never came."""
    eof_ms: float | None
    """From the shutdown to the server's EOF; None if it never came."""


@dataclass(frozen=True)
class ConnectFigures:
    """Connects only, like tcping: attempts, successes, failures and their times."""

    sent: int
    verified: int
    failed: int
    connect_ms: Timing


Figures = (
    RoundTripFigures | StreamLoadFigures | PingPongLoadFigures | HalfCloseFigures | ConnectFigures
)


@dataclass(frozen=True)
class Result:
    """What a TCP check found: its figures (None when it could not connect at all) and the
    failures (none when every byte was right)."""

    figures: Figures | None
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    path: PathView | None = None
    """What ``--path`` found, before the check ran."""
    idle: IdleFigures | None = None
    """What ``--idle-timeout`` found (a check of its own: `figures` is then None)."""

    @property
    def problem(self) -> str | None:
        """The first failure, and how many more, for the one line on stderr; None if none."""
        if not self.failures:
            return None
        more = len(self.failures) - 1
        also = f" (and {more} more failure{'s' * (more > 1)})" if more else ""
        return f"{self.failures[0].message}{also}"


@dataclass(frozen=True)
class UDPFigures:
    """A ``udp://`` run: what was sent, what came back and how."""

    sent: int
    received: int
    lost: int
    loss_percent: float
    duplicated: int
    reordered: int
    corrupted: int
    """Replies that match no datagram sent."""
    icmp_errors: int
    rtt_ms: Timing
    jitter_ms: float
    """RFC 3550's interarrival jitter of the replies' round-trip times."""


@dataclass(frozen=True)
class UDPResult:
    """What a ``udp://`` run found; `problem` says why it failed (None when it passed)."""

    figures: UDPFigures
    problem: str | None
    interrupted: bool
    path: PathView | None = None
