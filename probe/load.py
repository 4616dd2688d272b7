"""The load check: many connections at once for a while, pingpong or stream, with a live
line on a terminal and a table at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from echostat.probe.console import Console, count_of
from echostat.probe.engine import Client, PingPong, Stream
from echostat.probe.figures import Timing, percentiles_of
from echostat.probe.options import Options
from echostat.probe.results import (
    ConnectionCounts,
    IntervalSample,
    PingPongLoadFigures,
    Result,
    StreamLoadFigures,
    TLSFigures,
)
from echostat.probe.session import Endpoint, Session
from echostat.probe.steps import abandon, connect, first_of, session_for, tls_figures

STREAM_CHUNK_BYTES = 64 * 1024
"""Largest single write of the stream mode."""

MAX_INTERVALS = 600
"""Samples kept of a load run: one a second of the longest run (`options.MAX_DURATION_S`)."""


async def load(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """`connections` at once for `duration_s`, pingpong or stream, with a live line and a table;
    pingpong at `rate_per_s` round trips a second in all, if set."""
    session = session_for(endpoint, options.timeout_s, options.seed)
    run = session.run
    factory: Callable[[int], Client]
    if options.mode == "pingpong":
        unit = f"{options.size}-byte round trips"
        # Each connection takes its share of the rate: one round trip every `interval_s`.
        interval_s = options.connections / options.rate_per_s if options.rate_per_s else 0.0
        if options.rate_per_s:
            unit += f" at {options.rate_per_s:g}/s"

        def factory(index: int) -> Client:
            # Spread over the period, so that the connections do not all send at once.
            phase_s = interval_s * index / options.connections
            preamble = endpoint.preamble
            return PingPong(run, index, options.size, preamble, interval_s, phase_s=phase_s)
    else:
        unit = f"a {options.window}-byte window each"
        chunk = min(options.window, STREAM_CHUNK_BYTES)

        def factory(index: int) -> Client:
            return Stream(run, index, options.window, chunk, endpoint.preamble)

    connections = count_of(options.connections, "connection")
    console.line(
        f"PROBE {endpoint.label}: {options.mode}, {connections}, {unit}, {options.duration_s:g} s"
    )
    if failed := await connect(session, options.connections, factory, options.timeout_s):
        return failed
    tls = tls_figures(session.clients[0])
    sampler = Sampler(console, session, options)
    session.start()
    sampling = asyncio.create_task(sampler.run())
    all_idle = asyncio.gather(*(client.idle for client in session.clients))
    await first_of(asyncio.sleep(options.duration_s), all_idle, interrupted.wait())
    if interrupted.is_set():
        abandon(session)
    await session.stop()
    sampling.cancel()
    sampler.sample()
    elapsed = time.perf_counter() - sampler.started
    session.close()
    figures = _load_figures(options, session, elapsed, tls, sampler.samples)
    console.clear_progress()
    for line in _load_table(options, figures, interrupted.is_set()):
        console.line(line)
    return Result(figures, run.failures, interrupted.is_set())


def _load_figures(
    options: Options,
    session: Session,
    elapsed: float,
    tls: TLSFigures | None,
    intervals: list[IntervalSample],
) -> StreamLoadFigures | PingPongLoadFigures:
    clients = session.clients
    verified = sum(client.verified for client in clients)
    shared: dict[str, Any] = {
        "seconds": round(elapsed, 3),
        "connections": ConnectionCounts(opened=len(clients), failed=len(session.run.failures)),
        "connect_ms": Timing.of([client.connect_ns for client in clients]).rounded(),
        "tls": tls,
        "bytes_verified": verified,
        "mb_per_s": round(verified / elapsed / 1e6, 3),
    }
    if options.mode == "stream":
        sent_bytes = sum(client.sent for client in clients if isinstance(client, Stream))
        return StreamLoadFigures(**shared, bytes_sent=sent_bytes, intervals=intervals)
    latencies = session.run.latencies_ns
    sent = sum(client.round_trip for client in clients if isinstance(client, PingPong))
    return PingPongLoadFigures(
        **shared,
        sent=sent,
        verified=len(latencies),
        failed=sent - len(latencies),
        bytes_sent=sent * options.size,
        round_trips_per_s=round(len(latencies) / elapsed, 1),
        rtt_ms=Timing.of(latencies).rounded(),
        rate_asked_per_s=options.rate_per_s,
        rtt_percentiles=percentiles_of(latencies, options.percentiles),
        intervals=intervals,
    )


def _load_table(
    options: Options, figures: StreamLoadFigures | PingPongLoadFigures, interrupted: bool
) -> list[str]:
    """The final table of a load run: one row per figure, units in the first column."""
    connections = figures.connections
    connect = figures.connect_ms
    rows = [
        ("connections", f"{connections.opened} opened, {connections.failed} failed"),
        (
            "connect ms",
            f"min {connect.min_ms:.3f}  avg {connect.avg_ms:.3f}  "
            f"p99 {connect.p99_ms:.3f}  max {connect.max_ms:.3f}",
        ),
    ]
    if isinstance(figures, PingPongLoadFigures):
        rtt = figures.rtt_ms
        rate = f"{figures.round_trips_per_s:.0f}"
        if figures.rate_asked_per_s:
            rate += f" (asked {figures.rate_asked_per_s:g})"
        rows += [
            ("round trips", f"{figures.sent} sent, {figures.verified} verified"),
            ("round trips/s", rate),
        ]
        if figures.verified:  # no times to show: zeros would read as measured ones
            rows += [
                (
                    "rtt ms",
                    f"min {rtt.min_ms:.3f}  avg {rtt.avg_ms:.3f}  max {rtt.max_ms:.3f}  "
                    f"mdev {rtt.mdev_ms:.3f}",
                ),
                (
                    "rtt ms",
                    "  ".join(f"p{p.percentile:g} {p.ms:.3f}" for p in figures.rtt_percentiles),
                ),
            ]
    rows += [
        ("bytes", f"{figures.bytes_sent} sent, {figures.bytes_verified} verified"),
        ("MB/s", f"{figures.mb_per_s:.3f} verified, in {figures.seconds:.2f} s"),
    ]
    title = f"--- {options.target} load statistics ---"
    if interrupted:
        title = (
            f"--- {options.target} load statistics, interrupted after {figures.seconds:.2f} s ---"
        )
    return [title] + [f"{name:<14} {value}" for name, value in rows]


class Sampler:
    """Takes a sample of a load run once a second (the JSON's `intervals`, at most
    `MAX_INTERVALS`) and, on a terminal, shows it on the progress line."""

    def __init__(self, console: Console, session: Session, options: Options):
        self.console = console
        self.session = session
        self.percentiles = options.percentiles
        self.pingpong = options.mode == "pingpong"
        self.started = time.perf_counter()
        self.samples: list[IntervalSample] = []
        self._seen_round_trips = 0
        self._seen_bytes = 0
        self._seen_failures = 0

    async def run(self) -> None:
        """Sample once a second until cancelled."""
        while True:
            await asyncio.sleep(1.0)  # the sampling cadence, not a synchronisation
            sample = self.sample()
            if sample is not None:
                self._show(sample)

    def sample(self) -> IntervalSample | None:
        """The interval since the last sample, kept (None once `MAX_INTERVALS` are kept)."""
        if len(self.samples) >= MAX_INTERVALS:
            return None
        run = self.session.run
        latencies = run.latencies_ns[self._seen_round_trips :]
        self._seen_round_trips += len(latencies)
        verified = sum(client.verified for client in self.session.clients)
        sample = IntervalSample(
            elapsed_s=round(time.perf_counter() - self.started, 3),
            round_trips=len(latencies),
            bytes_verified=verified - self._seen_bytes,
            failures=len(run.failures) - self._seen_failures,
            rtt_percentiles=percentiles_of(latencies, self.percentiles) if latencies else [],
        )
        self._seen_bytes = verified
        self._seen_failures = len(run.failures)
        self.samples.append(sample)
        return sample

    def _show(self, sample: IntervalSample) -> None:
        if not self.console.live:
            return
        if self.pingpong:
            latencies = self.session.run.latencies_ns
            p99 = Timing.of(latencies[len(latencies) - sample.round_trips :]).p99_ms
            rate = f"{sample.round_trips} round trips/s  p99 {p99:.3f} ms"
        else:
            rate = f"{sample.bytes_verified / 1e6:.2f} MB/s"
        failed = len(self.session.run.failures)
        self.console.progress(f"{sample.elapsed_s:5.1f} s  {rate}  {failed} failed")
