"""The UDP probe's engine: numbered, timestamped datagrams; loss, order, RTT, jitter.

Each datagram carries a run id, its sequence number and its send time (monotonic
nanoseconds), then filler derived from the sequence number, so every reply can be checked
byte for byte and matched to what was sent. Replies that match nothing sent are counted as
corrupted; a reply seen twice is a duplicate; one that arrives after a later sequence number
is reordered. Jitter is RFC 3550's interarrival estimator (section 6.4.1, J += (|D| - J)/16),
where D compares consecutive replies' round-trip times: sender and receiver share a clock.
`echostat probe udp://HOST:PORT` (`probe.cli`) runs it.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from echostat.probe.console import Console, count_of, timing_lines
from echostat.probe.figures import Timing, milliseconds, percentiles_of
from echostat.probe.marks import NO_MARKS, Marks
from echostat.probe.options import UDPOptions
from echostat.probe.results import UDPFigures, UDPResult

HEADER = struct.Struct("!4s8sQQ")
"""Magic, run id, sequence number, send time in monotonic nanoseconds."""

MAGIC = b"EUDP"
MIN_SIZE = HEADER.size
MAX_SIZE = 65507


@dataclass
class Counts:
    """Everything counted during a run, as the replies come in."""

    sent: int = 0
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    icmp_errors: int = 0
    """ICMP errors reported by the kernel (e.g. port unreachable)."""
    icmp_error: str | None = None
    """What the first of them said, as the probe prints it (``port unreachable``)."""
    rtts_ns: list[int] = field(default_factory=list)
    jitter_ns: float = 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def figures(self, percentiles: tuple[float, ...]) -> UDPFigures:
        """The reported figures, rounded as printed."""
        return UDPFigures(
            sent=self.sent,
            received=self.received,
            lost=self.lost,
            loss_percent=round(self.loss_percent, 3),
            duplicated=self.duplicated,
            reordered=self.reordered,
            corrupted=self.corrupted,
            icmp_errors=self.icmp_errors,
            rtt_ms=Timing.of(self.rtts_ns).rounded(),
            jitter_ms=milliseconds(self.jitter_ns),
            rtt_percentiles=percentiles_of(self.rtts_ns, percentiles),
        )


def datagram(run_id: bytes, seq: int, size: int, sent_ns: int) -> bytes:
    """Datagram `seq` of a run: the header, then `size` minus the header of filler bytes."""
    length = size - HEADER.size
    filler = bytes((seq + i) & 0xFF for i in range(256)) * (length // 256 + 1)
    return HEADER.pack(MAGIC, run_id, seq, sent_ns) + filler[:length]


class _Receiver(asyncio.DatagramProtocol):
    """Checks each reply against what was sent and updates `counts`; calls `on_reply`."""

    def __init__(
        self,
        run_id: bytes,
        size: int,
        counts: Counts,
        on_reply: Callable[[int, int, str], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._run_id = run_id
        self._size = size
        self._counts = counts
        self._on_reply = on_reply
        self._on_error = on_error
        self._seen: set[int] = set()
        self._highest = -1
        self._last_rtt_ns: int | None = None
        self._expected: int | None = None
        self.all_back = asyncio.Event()

    def expect(self, count: int) -> None:
        """Sending is over after `count` datagrams: `all_back` is set once each is back or
        reported undeliverable by the kernel (an ICMP error)."""
        self._expected = count
        self._check_all_back()

    def unanswered(self, seqs: Iterable[int]) -> int:
        """How many of the datagrams `seqs` no reply has answered yet."""
        return sum(seq not in self._seen for seq in seqs)

    def _check_all_back(self) -> None:
        counts = self._counts
        if counts.received + counts.icmp_errors >= (self._expected or -1) >= counts.received:
            self.all_back.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now_ns = time.monotonic_ns()
        counts = self._counts
        if len(data) != self._size or not data.startswith(MAGIC):
            counts.corrupted += 1
            return
        _, run_id, seq, sent_ns = HEADER.unpack_from(data)
        if (
            run_id != self._run_id
            or seq >= counts.sent
            or data != datagram(run_id, seq, self._size, sent_ns)
        ):
            counts.corrupted += 1
            return
        rtt_ns = now_ns - sent_ns
        if seq in self._seen:
            counts.duplicated += 1
            self._on_reply(seq, rtt_ns, " (DUP!)")
            return
        self._seen.add(seq)
        counts.received += 1
        counts.rtts_ns.append(rtt_ns)
        if self._last_rtt_ns is not None:
            counts.jitter_ns += (abs(rtt_ns - self._last_rtt_ns) - counts.jitter_ns) / 16
        self._last_rtt_ns = rtt_ns
        note = ""
        if seq < self._highest:
            counts.reordered += 1
            note = " (out of order)"
        self._highest = max(self._highest, seq)
        self._on_reply(seq, rtt_ns, note)
        self._check_all_back()

    def error_received(self, exc: Exception) -> None:
        self._counts.icmp_errors += 1
        if isinstance(exc, ConnectionRefusedError):
            what = "port unreachable"
        else:
            what = str(getattr(exc, "strerror", None) or exc).lower()
        self._counts.icmp_error = self._counts.icmp_error or what
        self._on_error(what)
        self._check_all_back()


async def run_udp_probe(
    options: UDPOptions, console: Console, interrupted: asyncio.Event, marks: Marks = NO_MARKS
) -> UDPResult:
    """Send the datagrams on schedule and collect replies until all are back, the last
    one's timeout has passed or `interrupted` is set; a line per reply on `console`, then
    ping's closing lines. A target that can't be resolved or a source that can't be bound
    is the result's `problem`, with no figures. The datagrams carry `marks` (DSCP, TTL)."""
    try:
        counts = await _exchange(options, console, interrupted, marks)
    except OSError as exc:
        return UDPResult(None, f"{options.target}: {exc.strerror or exc}", interrupted.is_set())
    found = counts.figures(options.percentiles)
    console.line(f"--- {options.target} udp probe statistics ---")
    console.line(
        f"{counts.sent} sent, {counts.received} received, {counts.lost} lost"
        f" ({counts.loss_percent:.1f}%), {counts.duplicated} duplicated,"
        f" {counts.reordered} reordered, {counts.corrupted} corrupted"
        + (f", +{counts.icmp_errors} ICMP errors" if counts.icmp_errors else "")
    )
    if counts.received:
        for line in timing_lines("rtt", found.rtt_ms, found.rtt_percentiles):
            console.line(line)
        console.line(f"jitter {found.jitter_ms:.3f} ms (RFC 3550 interarrival estimator)")
    return UDPResult(found, _problem(options, counts), interrupted.is_set())


def _problem(options: UDPOptions, counts: Counts) -> str | None:
    """Why the run failed: a corrupted reply, or more loss than `--max-loss`; None if it passed."""
    if counts.corrupted:
        return f"{options.target}: {counts.corrupted} replies matched no datagram sent"
    limit = options.max_loss_percent
    if counts.loss_percent > limit:
        unreachable = f" ({counts.icmp_errors} ICMP errors)" if counts.icmp_errors else ""
        return (
            f"{options.target}: {counts.loss_percent:.1f}% of the datagrams lost{unreachable},"
            f" more than --max-loss {limit:g}"
        )
    return None


async def _exchange(
    options: UDPOptions, console: Console, interrupted: asyncio.Event, marks: Marks
) -> Counts:
    loop = asyncio.get_running_loop()
    counts = Counts()
    run_id = options.seed.to_bytes(8, "big")
    how_many = count_of(options.count, "datagram", f" of {options.size} bytes")
    console.line(f"PROBE {options.target}: {how_many}, {_pace(options)}")

    def on_reply(seq: int, rtt_ns: int, note: str) -> None:
        # Numbered from 1 on screen, as ping does; the datagrams carry 0, 1, ...
        console.detail(
            f"{options.size} bytes from {options.target}: seq={seq + 1}"
            f" time={rtt_ns / 1e6:.3f} ms{note}"
        )

    def on_error(what: str) -> None:
        # As ping's "From ... Destination Port Unreachable": the kernel does not say which
        # datagram the ICMP error answered; the last one sent is the likely one.
        console.detail(f"from {options.target}: seq={counts.sent} {what}")

    transport, receiver = await loop.create_datagram_endpoint(
        lambda: _Receiver(run_id, options.size, counts, on_reply, on_error),
        remote_addr=(options.host, options.port),
        local_addr=(options.source, 0) if options.source else None,
    )
    marks.apply(transport.get_extra_info("socket"))
    try:
        start = time.monotonic()
        seq = 0
        timeout_ns = round(options.timeout_s * 1e9)
        recent: collections.deque[tuple[int, int]] = collections.deque()
        """(sequence number, send time) of the datagrams sent within the last `--timeout`."""
        while (options.count == 0 or seq < options.count) and not interrupted.is_set():
            delay = start + seq * options.interval_s - time.monotonic()
            if delay > 0 and await _set_within(interrupted, delay):
                break
            counts.sent += 1  # before sending: a fast reply must find it counted
            sent_ns = time.monotonic_ns()
            recent.append((seq, sent_ns))
            while recent[0][1] <= sent_ns - timeout_ns:
                recent.popleft()
            transport.sendto(datagram(run_id, seq, options.size, sent_ns))
            seq += 1
        receiver.expect(counts.sent)
        if not interrupted.is_set():
            await _set_within(receiver.all_back, options.timeout_s)
        elif counts.received:  # Ctrl-C: what is still within its timeout is in flight, not
            # lost: left out; with no reply at all it counts lost, as ping's run then fails
            since_ns = time.monotonic_ns() - timeout_ns
            in_flight = receiver.unanswered(number for number, at in recent if at > since_ns)
            counts.sent -= max(0, min(in_flight, counts.lost - counts.icmp_errors))
    finally:
        transport.close()
    return counts


def _pace(options: UDPOptions) -> str:
    interval_s = options.interval_s
    if interval_s >= 0.1:
        return f"every {interval_s:g} s"
    return f"{1 / interval_s:g} a second" if interval_s else "back to back"


async def _set_within(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `event`; True if it is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True


async def exchange_quietly(options: UDPOptions) -> Counts:
    """One run that prints nothing, for a caller that keeps its own figures (the watcher):
    the counts with every reply's RTT. Raises OSError as `run_udp_probe` does."""
    return await _exchange(options, Console(quiet=True), asyncio.Event(), NO_MARKS)
