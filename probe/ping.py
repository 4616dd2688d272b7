"""The ping-like check, and its client: round trips that go on after a lost one, as ping's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from echostat.probe.console import Console, count_of, timing_lines
from echostat.probe.engine import Failure, PingPong, RoundTripHook, Run
from echostat.probe.figures import Timing, milliseconds, percentiles_of
from echostat.probe.options import Options
from echostat.probe.results import Result, RoundTripFigures
from echostat.probe.session import Endpoint
from echostat.probe.steps import (
    abandon,
    connect,
    connected_line,
    first_of,
    session_for,
    tls_figures,
)


class PingLike(PingPong):
    """A `PingPong` whose round trip that times out counts as lost instead of failing the
    connection: `on_lost(client)` is called, the first one is recorded as the connection's
    failure (the run fails), and the next round trip goes on the same stream, when due.

    The lost round trip's bytes may still come: TCP keeps them in order, ahead of the next
    round trip's, and they are verified like any others (a late byte is not a wrong one).
    """

    def __init__(
        self,
        run: Run,
        index: int,
        size: int,
        preamble: bytes,
        interval_s: float,
        count: int,
        on_round_trip: RoundTripHook,
        on_lost: Callable[[PingLike], None],
    ) -> None:
        super().__init__(run, index, size, preamble, interval_s, count, on_round_trip)
        self.on_lost = on_lost
        self.lost = 0
        """Round trips that did not come back within the timeout."""
        self.late: list[tuple[int, int]] = []
        """Pattern offset and length of the bytes of lost round trips still to come back."""

    def time_out(self, timeout_s: float) -> None:
        if not self.lost:
            what = f"{self.overdue()} within {timeout_s:g} s"
            self.run.record(Failure(self.index, "timeout", f"connection {self.index}: {what}"))
        self.lost += 1
        self.in_flight = False
        self.late.append((self.offset + self.received, self.size - self.received))
        self.on_lost(self)
        self.next(time.perf_counter_ns())

    def data_received(self, data: bytes) -> None:
        if self.late and not (data := self._take_late(data)):
            return
        super().data_received(data)

    def _take_late(self, data: bytes) -> bytes:
        """Verify the start of `data` as late bytes of lost round trips; the rest of it."""
        while data and self.late:
            offset, remaining = self.late[0]
            part = data[:remaining]
            if not self.pattern.startswith(part, offset):
                self.mismatch(part, offset, remaining, "late bytes of a lost round trip")
                return b""
            self.verified += len(part)
            data = data[len(part) :]
            if len(part) == remaining:
                del self.late[0]
            else:
                self.late[0] = (offset + len(part), remaining - len(part))
        return data


async def round_trips(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """One connection, `count` round trips of `size` bytes at `interval_s`, one line each; a
    lost round trip is counted and the next one made, as ping does."""
    session = session_for(endpoint, options.timeout_s, options.seed)
    run = session.run
    how_many = count_of(options.count, "round trip", f" of {options.size} bytes")
    console.line(f"PROBE {endpoint.label}: {how_many}, every {options.interval_s:g} s")

    def show(client: PingPong, rtt_ns: int) -> None:
        console.detail(
            f"{options.size} bytes from {endpoint.label}: seq={client.round_trip} "
            f"time={rtt_ns / 1e6:.3f} ms"
        )

    def lost(client: PingLike) -> None:
        console.detail(
            f"no echo from {endpoint.label}: seq={client.round_trip} "
            f"({client.received} of {options.size} bytes within {options.timeout_s:g} s)"
        )

    def factory(index: int) -> PingLike:
        return PingLike(
            run,
            index,
            options.size,
            endpoint.preamble,
            options.interval_s,
            options.count,
            show,
            lost,
        )

    if failed := await connect(session, 1, factory, options.timeout_s):
        return failed
    (client,) = session.clients
    assert isinstance(client, PingLike)
    tls = tls_figures(client)
    console.line(connected_line(endpoint, client, tls))
    started = time.perf_counter()
    session.start()
    await first_of(client.idle, interrupted.wait())
    if interrupted.is_set():
        abandon(session)
    await session.stop()
    elapsed = time.perf_counter() - started
    session.close()
    verified = len(run.latencies_ns)
    sent = client.round_trips_sent
    figures = RoundTripFigures(
        connect_ms=milliseconds(client.connect_ns),
        tls=tls,
        sent=sent,
        verified=verified,
        failed=sent - verified,
        bytes_sent=client.round_trip * options.size,
        bytes_verified=client.verified,
        rtt_ms=Timing.of(run.latencies_ns).rounded(),
        loss_percent=round(100 * (sent - verified) / sent, 3) if sent else 0.0,
        seconds=round(elapsed, 3),
        rtt_percentiles=percentiles_of(run.latencies_ns, options.percentiles),
    )
    console.line(f"--- {endpoint.label} probe statistics ---")
    console.line(
        f"{figures.sent} sent, {verified} verified, {figures.failed} failed, "
        f"connect {figures.connect_ms:.3f} ms, {figures.loss_percent:g}% loss, "
        f"time {elapsed * 1000:.0f} ms"
    )
    if verified:
        for line in timing_lines("rtt", figures.rtt_ms, figures.rtt_percentiles):
            console.line(line)
    return Result(figures, run.failures, interrupted.is_set())
