"""The verifying engine: asyncio Protocols that echo-test one connection each.

Each client sends slices of its run's seeded pattern (`probe.pattern`) at offsets that differ
per connection and per round trip and checks every byte that comes back, so a server that
alters, drops, repeats, reorders or mixes up bytes between connections is caught; the
failure names the connection, the byte offset in its stream and the expected and received
byte. A `Run` holds what the clients of one run share. The clients work on asyncio's loop
and on uvloop.

A new mode is a `Client` subclass: `begin` starts its traffic, `data_received` checks what
came back (`mismatch` reports a difference), `waiting_since_ns` says since when an echo is
overdue and `overdue` says what is missing, for the deadline watch in `probe.session`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from echostat.probe.pattern import (
    DEFAULT_SEED,
    SPAN,
    STRIDE,
    first_difference,
    pattern_of,
    start_offset,
)
from echostat.probe.server_report import first_reply_hint

Reason = Literal["mismatch", "eof", "reset", "timeout", "connect"]
"""Why a connection failed: a byte differed, it ended, was reset, timed out or never opened."""


class Mismatch(Exception):
    """The server sent back something other than what was sent, in order, once."""


@dataclass(frozen=True)
class Failure:
    """How one connection failed; `offset` counts bytes echoed on it before the fault."""

    connection: int
    reason: Reason
    message: str
    offset: int | None = None
    expected: int | None = None
    received: int | None = None


class Run:
    """What every connection of one run shares: the phase flags, the failures, the latencies.

    With `stop_on_failure` (the benchmark) the first failure ends the run: `failed` gets it
    and `probe.session.bounded` raises it. Otherwise (the probe) a failed connection stops
    and the others go on, so that the report can say how many failed. Every client of the
    run sends slices of the pattern of `seed` (`probe.pattern.pattern_of`).
    """

    def __init__(self, stop_on_failure: bool = True, seed: int = DEFAULT_SEED) -> None:
        self.pattern = pattern_of(seed)
        self.running = True
        self.measuring = False
        self.stop_on_failure = stop_on_failure
        self.failures: list[Failure] = []
        self.failed: asyncio.Future[Failure] = asyncio.get_running_loop().create_future()
        self.latencies_ns: list[int] = []
        """Round-trip times measured while `measuring`, in the order they completed."""

    def record(self, failure: Failure) -> None:
        self.failures.append(failure)
        if self.stop_on_failure and not self.failed.done():
            self.failed.set_result(failure)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Client(asyncio.Protocol):
    """Shared plumbing of the verifying protocols: transport, identity, EOF, loss, failure.

    `preamble` (a PROXY protocol header) is written before anything else and is not echoed
    back by a server that understands it.
    """

    def __init__(self, run: Run, index: int, preamble: bytes = b"") -> None:
        loop = asyncio.get_running_loop()
        self.run = run
        self.index = index
        self.preamble = preamble
        self.pattern = run.pattern
        self.transport: asyncio.Transport | None = None
        self.closed = loop.create_future()
        self.idle = loop.create_future()
        """Done once the run has stopped (or this client failed) and nothing is awaited."""
        self.echoed = loop.create_future()
        """Done once the first message (pingpong, hold) or bytes (stream) came back, or failed."""
        self.failed = False
        self.verified = 0
        """Bytes echoed back and verified since the connection opened."""
        self.served = 0
        """Bytes echoed back and verified, counted from the start of the measured window."""
        self.connect_ns = 0
        """Time the TCP handshake took (set by `probe.session.open_client`)."""
        self.handshake_ns = 0
        """Time the TLS handshake took after it; 0 without TLS."""

    def begin(self) -> None:
        """Start the traffic of a measured run."""

    def stop(self) -> None:
        """The run has stopped: send nothing new, be `idle` once nothing sent is awaited."""
        if self.waiting_since_ns() is None:
            _settle(self.idle)

    def waiting_since_ns(self) -> int | None:
        """`time.perf_counter_ns()` since which an echo has been awaited; None if none is."""
        return None

    def overdue(self) -> str:
        """What has not come back, for a timeout message."""
        return "no echo"

    def expecting(self) -> bool:
        """Whether the connection ending now would be a fault."""
        return self.run.running or self.waiting_since_ns() is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if self.preamble:
            self.transport.write(self.preamble)  # type: ignore[union-attr]

    def eof_received(self) -> None:
        if self.expecting():
            self.fail("eof", f"server closed the connection: {self.overdue()}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.failed and self.expecting():
            if isinstance(exc, ConnectionResetError):
                self.fail("reset", f"reset by the server: {self.overdue()}")
            elif isinstance(exc, BrokenPipeError):  # closed, then reset what was written after
                self.fail("eof", f"server closed the connection: {self.overdue()}")
            elif exc is not None:  # None: the probe closed it itself (Ctrl-C), no fault
                self.fail("eof", f"lost while the run was active ({exc}): {self.overdue()}")
        _settle(self.closed)
        _settle(self.idle)

    def fail(self, reason: Reason, what: str, **where: int) -> None:
        """Record that this connection failed (once) and abort it; the others go on."""
        if self.failed:
            return
        self.failed = True
        where.setdefault("offset", self.verified)
        message = f"connection {self.index}: {what}"
        self.run.record(Failure(self.index, reason, message, **where))
        if self.transport is not None:
            self.transport.abort()
        _settle(self.echoed)
        _settle(self.idle)

    def time_out(self, timeout_s: float) -> None:
        self.fail("timeout", f"{self.overdue()} within {timeout_s:g} s")

    def verify_message(self, data: bytes, start: int, size: int, context: str) -> bool:
        """Check `data` as the next bytes of the one `size`-byte message ``self.pattern[start:]``
        this connection sent and count them; on a difference report it and return False."""
        if self.verified + len(data) > size or not self.pattern.startswith(
            data, start + self.verified
        ):
            self.mismatch(data, start + self.verified, size - self.verified, context)
            return False
        self.verified += len(data)
        return True

    def mismatch(self, data: bytes, pattern_offset: int, expected_bytes: int, context: str) -> None:
        """Report the first byte of `data` that is not ``self.pattern[pattern_offset:]``; bytes
        beyond the first `expected_bytes` were never sent."""
        index = first_difference(data[:expected_bytes], pattern_offset, self.pattern)
        index = expected_bytes if index < 0 else index
        offset, received = self.verified + index, data[index]
        where = {"offset": offset, "received": received}
        if index >= expected_bytes:
            what = f"byte {offset} came back but was never sent (received {received:#04x}, "
            what += f"{context})"
        else:
            where["expected"] = expected = self.pattern[pattern_offset + index]
            what = f"byte {offset} differs from what was sent: expected {expected:#04x}, "
            what += f"received {received:#04x} ({context})"
        # A report (or an echoed PROXY header) may come first, even before anything was sent.
        if self.verified == 0 and (hint := first_reply_hint(self.preamble, data, self.transport)):
            what += f"; {hint}"
        self.fail("mismatch", what, **where)


RoundTripHook = Callable[["PingPong", int], None]
"""Called with the client and the round-trip time in ns after each verified round trip."""


class PingPong(Client):
    """Sends `size` bytes, waits for exactly those bytes back, repeats while the run runs.

    Back to back by default; with `interval_s` round trips start on a schedule of that
    period (first after `phase_s`), never two at once: one that comes back late delays the
    next, and the schedule catches up by at most one period. With `count` the client is idle
    after that many. `on_round_trip(client, rtt_ns)` is called after each verified round trip.
    """

    def __init__(
        self,
        run: Run,
        index: int,
        size: int,
        preamble: bytes = b"",
        interval_s: float = 0.0,
        count: int = 0,
        on_round_trip: RoundTripHook | None = None,
        phase_s: float = 0.0,
    ) -> None:
        super().__init__(run, index, preamble)
        self.size = size
        self.interval_ns = round(interval_s * 1e9)
        self.phase_s = phase_s
        self.due_ns = 0
        """When the round trip in flight or last sent was due (with `interval_s`)."""
        self.count = count
        self.on_round_trip = on_round_trip
        self.offset = start_offset(index)
        self.round_trip = 0
        """Sequence number of the round trip in flight or last done, from 1."""
        self.received = 0
        self.sent_at = 0
        self.in_flight = False
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self.due_ns = time.perf_counter_ns() + round(self.phase_s * 1e9)
        if self.phase_s:
            self._timer = asyncio.get_running_loop().call_later(self.phase_s, self.send)
        else:
            self.send()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().stop()

    def waiting_since_ns(self) -> int | None:
        return self.sent_at if self.in_flight else None

    @property
    def round_trips_sent(self) -> int:
        """Round trips begun; one that failed before its first (reset, spoke first) failed it."""
        return max(self.round_trip, int(self.failed))

    def overdue(self) -> str:
        if not self.in_flight and self.round_trip:
            return "between round trips"
        # Before the first send (a reset at the accept), the first round trip got nothing back.
        return (
            f"round trip {max(1, self.round_trip)}: {self.received} of {self.size} bytes came back"
        )

    def send(self) -> None:
        self._timer = None
        if self.failed:
            return
        self.offset = (self.offset + STRIDE) % SPAN
        self.received = 0
        self.round_trip += 1
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.pattern[self.offset : self.offset + self.size])  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        received = self.received + len(data)
        if received > self.size or not self.pattern.startswith(data, self.offset + self.received):
            context = f"round trip {self.round_trip}, {self.size}-byte message"
            self.mismatch(data, self.offset + self.received, self.size - self.received, context)
            return
        self.received = received
        self.verified += len(data)
        if received < self.size:
            return
        now = time.perf_counter_ns()
        rtt_ns = now - self.sent_at
        self.in_flight = False
        _settle(self.echoed)
        run = self.run
        if run.measuring:
            run.latencies_ns.append(rtt_ns)
            self.served += received
        if self.on_round_trip is not None:
            self.on_round_trip(self, rtt_ns)
        self.next(now)

    def next(self, now: int) -> None:
        """The round trip in flight is over at `now`: send the next one when it is due, or
        be idle."""
        if not self.run.running or self.round_trip == self.count:
            _settle(self.idle)
        elif not self.interval_ns:
            self.send()
        else:
            self.due_ns = max(self.due_ns + self.interval_ns, now - self.interval_ns)
            if self.due_ns > now:
                delay_s = (self.due_ns - now) / 1e9
                self._timer = asyncio.get_running_loop().call_later(delay_s, self.send)
            else:
                self.send()


class Stream(Client):
    """Keeps `window` bytes in flight: every verified byte that returns lets one more go."""

    def __init__(
        self, run: Run, index: int, window: int, chunk: int, preamble: bytes = b""
    ) -> None:
        super().__init__(run, index, preamble)
        self.window = window
        self.chunk = chunk
        self.start = start_offset(index)
        self.sent = 0
        self.progress_ns = 0
        """When bytes last came back (or were first sent after none were in flight)."""

    def begin(self) -> None:
        self.fill()

    def waiting_since_ns(self) -> int | None:
        return self.progress_ns if self.sent > self.verified else None

    def overdue(self) -> str:
        if not self.sent:
            return f"0 of the first {min(self.window, self.chunk)} bytes came back"
        return f"{self.sent - self.verified} bytes in flight did not come back"

    def fill(self) -> None:
        """Write until `window` bytes are in flight."""
        if self.sent == self.verified:
            self.progress_ns = time.perf_counter_ns()
        while self.sent - self.verified < self.window:
            offset = (self.start + self.sent) % SPAN
            size = min(self.chunk, self.window - (self.sent - self.verified))
            self.transport.write(self.pattern[offset : offset + size])  # type: ignore[union-attr]
            self.sent += size

    def data_received(self, data: bytes) -> None:
        size = len(data)
        offset = (self.start + self.verified) % SPAN
        in_flight = self.sent - self.verified
        if size > min(SPAN, in_flight) or not self.pattern.startswith(data, offset):
            self.mismatch(data, offset, min(SPAN, in_flight), "stream")
            return
        self.verified += size
        self.progress_ns = time.perf_counter_ns()
        _settle(self.echoed)
        run = self.run
        if run.measuring:
            self.served += size
        if run.running:
            self.fill()
        elif self.verified == self.sent:
            _settle(self.idle)


class Holder(Client):
    """Sends one small message, verifies its echo, then stays connected and idle."""

    def __init__(self, run: Run, index: int, size: int, preamble: bytes = b"") -> None:
        super().__init__(run, index, preamble)
        self.offset = start_offset(index, spacing=131)
        self.size = size
        self.sent_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.pattern[self.offset : self.offset + self.size])  # type: ignore[union-attr]

    def waiting_since_ns(self) -> int | None:
        return self.sent_at if self.verified < self.size else None

    def overdue(self) -> str:
        return f"{self.verified} of its {self.size}-byte message came back"

    def data_received(self, data: bytes) -> None:
        if self.verify_message(data, self.offset, self.size, "hold message"):
            if self.verified == self.size:
                _settle(self.echoed)


class HalfClose(Client):
    """Sends `size` bytes, shuts down its write side, and expects exactly those bytes back
    followed by the server's EOF; `eof_ns` is how long after the shutdown the EOF came."""

    def __init__(self, run: Run, index: int, size: int, preamble: bytes = b"") -> None:
        super().__init__(run, index, preamble)
        self.offset = start_offset(index)
        self.size = size
        self.shut_at = 0
        self.sent_at = 0
        self.echo_ns: int | None = None
        """From the shutdown to the last byte back."""
        self.transfer_ns: int | None = None
        """From the first byte sent to the last byte back."""
        self.eof_ns: int | None = None

    def begin(self) -> None:
        transport = self.transport
        assert transport is not None
        self.sent_at = time.perf_counter_ns()
        transport.write(self.pattern[self.offset : self.offset + self.size])
        transport.write_eof()
        self.shut_at = time.perf_counter_ns()

    def waiting_since_ns(self) -> int | None:
        return self.shut_at if self.shut_at and self.eof_ns is None else None

    def overdue(self) -> str:
        if not self.shut_at:
            return f"{self.verified} of {self.size} bytes came back"
        if self.verified < self.size:
            return f"{self.verified} of {self.size} bytes came back after the half-close"
        return f"all {self.size} bytes came back but no EOF after them"

    def data_received(self, data: bytes) -> None:
        if self.verify_message(data, self.offset, self.size, "half-close"):
            if self.verified == self.size:
                now = time.perf_counter_ns()
                self.echo_ns = now - self.shut_at
                self.transfer_ns = now - self.sent_at

    def eof_received(self) -> None:
        if self.verified < self.size:
            self.fail("eof", f"server closed the connection: {self.overdue()}")
            return
        self.eof_ns = time.perf_counter_ns() - self.shut_at
        _settle(self.echoed)
        _settle(self.idle)

    def expecting(self) -> bool:
        return self.eof_ns is None
