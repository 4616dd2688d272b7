"""`echostat probe udp://HOST:PORT`: numbered, timestamped datagrams; loss, order, RTT, jitter.

Each datagram carries a run id, its sequence number and its send time (monotonic
nanoseconds), then filler derived from the sequence number, so every reply can be checked
byte for byte and matched to what was sent. Replies that match nothing sent are counted as
corrupted; a reply seen twice is a duplicate; one that arrives after a later sequence number
is reordered. Jitter is RFC 3550's interarrival estimator (section 6.4.1, J += (|D| - J)/16),
where D compares consecutive replies' round-trip times: sender and receiver share a clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import uvloop

from echostat.probe.address import parse_host_port
from echostat.probe.console import Console
from echostat.probe.runs import plural, timing, timing_lines

HEADER = struct.Struct("!4s8sQQ")
"""Magic, run id, sequence number, send time in monotonic nanoseconds."""

MAGIC = b"EUDP"
MAX_COUNT = 1_000_000
"""Every round-trip time and sequence number is kept, so a run is bounded (about 100 MB)."""

MIN_ENDLESS_INTERVAL_S = 0.01
"""With --count 0 the datagrams go on until Ctrl-C; this bounds how fast their records grow."""

MIN_SIZE = HEADER.size
MAX_SIZE = 65507


@dataclass(frozen=True)
class UDPOptions:
    """What `echostat probe udp://...` was asked to do."""

    host: str
    port: int
    count: int = 5
    """Datagrams to send; 0 = until interrupted."""
    size: int = 64
    interval_s: float = 1.0
    timeout_s: float = 5.0
    """How long a datagram may take to come back before it counts as lost."""
    max_loss_percent: float = 0.0
    source: str | None = None
    """Bind the client end to this address (port chosen by the kernel)."""

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}"


@dataclass
class UDPResult:
    """Everything counted during a run; `summary` turns it into the reported figures."""

    sent: int = 0
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    errors: int = 0
    """ICMP errors reported by the kernel (e.g. port unreachable)."""
    rtts_ns: list[int] = field(default_factory=list)
    jitter_ns: float = 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0


def datagram(run_id: bytes, seq: int, size: int, sent_ns: int) -> bytes:
    """Datagram `seq` of a run: the header, then `size` minus the header of filler bytes."""
    length = size - HEADER.size
    filler = bytes((seq + i) & 0xFF for i in range(256)) * (length // 256 + 1)
    return HEADER.pack(MAGIC, run_id, seq, sent_ns) + filler[:length]


class _Receiver(asyncio.DatagramProtocol):
    """Checks each reply against what was sent and updates `result`; calls `on_reply`."""

    def __init__(
        self,
        run_id: bytes,
        size: int,
        result: UDPResult,
        on_reply: Callable[[int, int, str], None],
    ) -> None:
        self._run_id = run_id
        self._size = size
        self._result = result
        self._on_reply = on_reply
        self._seen: set[int] = set()
        self._highest = -1
        self._last_rtt_ns: int | None = None
        self._expected: int | None = None
        self.all_back = asyncio.Event()

    def expect(self, count: int) -> None:
        """Sending is over after `count` datagrams: `all_back` is set once all are back."""
        self._expected = count
        if self._result.received == count:
            self.all_back.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now_ns = time.monotonic_ns()
        result = self._result
        if len(data) != self._size or not data.startswith(MAGIC):
            result.corrupted += 1
            return
        _, run_id, seq, sent_ns = HEADER.unpack_from(data)
        if (
            run_id != self._run_id
            or seq >= result.sent
            or data != datagram(run_id, seq, self._size, sent_ns)
        ):
            result.corrupted += 1
            return
        rtt_ns = now_ns - sent_ns
        if seq in self._seen:
            result.duplicated += 1
            self._on_reply(seq, rtt_ns, " (DUP!)")
            return
        self._seen.add(seq)
        result.received += 1
        result.rtts_ns.append(rtt_ns)
        if self._last_rtt_ns is not None:
            result.jitter_ns += (abs(rtt_ns - self._last_rtt_ns) - result.jitter_ns) / 16
        self._last_rtt_ns = rtt_ns
        note = ""
        if seq < self._highest:
            result.reordered += 1
            note = " (out of order)"
        self._highest = max(self._highest, seq)
        self._on_reply(seq, rtt_ns, note)
        if result.received == self._expected:
            self.all_back.set()

    def error_received(self, exc: Exception) -> None:
        self._result.errors += 1


async def run_udp_probe(
    options: UDPOptions, console: Console, interrupted: asyncio.Event
) -> UDPResult:
    """Send the datagrams on schedule and collect replies until all are back, the last
    one's timeout has passed or `interrupted` is set; a line per reply on `console`.
    Raises OSError if the target can't be resolved or the source can't be bound."""
    loop = asyncio.get_running_loop()
    result = UDPResult()
    run_id = os.urandom(8)
    how_many = plural(options.count, "datagram") if options.count else "datagrams until Ctrl-C"
    console.line(f"PROBE {options.target}: {how_many} of {options.size} bytes, {_pace(options)}")

    def on_reply(seq: int, rtt_ns: int, note: str) -> None:
        # Numbered from 1 on screen, as ping does; the datagrams carry 0, 1, ...
        console.line(
            f"{options.size} bytes from {options.target}: seq={seq + 1}"
            f" time={rtt_ns / 1e6:.3f} ms{note}"
        )

    transport, receiver = await loop.create_datagram_endpoint(
        lambda: _Receiver(run_id, options.size, result, on_reply),
        remote_addr=(options.host, options.port),
        local_addr=(options.source, 0) if options.source else None,
    )
    try:
        start = time.monotonic()
        seq = 0
        while (options.count == 0 or seq < options.count) and not interrupted.is_set():
            delay = start + seq * options.interval_s - time.monotonic()
            if delay > 0 and await _set_within(interrupted, delay):
                break
            result.sent += 1  # before sending: a fast reply must find it counted
            transport.sendto(datagram(run_id, seq, options.size, time.monotonic_ns()))
            seq += 1
        receiver.expect(result.sent)
        if not interrupted.is_set():
            await _set_within(receiver.all_back, options.timeout_s)
    finally:
        transport.close()
    return result


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


def passed(options: UDPOptions, result: UDPResult) -> bool:
    """True when no reply was corrupted and the loss is within `--max-loss`."""
    return result.corrupted == 0 and result.loss_percent <= options.max_loss_percent


def figures(options: UDPOptions, result: UDPResult) -> dict[str, Any]:
    """Every figure of a run, as the ``--json`` document reports them."""
    return {
        "sent": result.sent,
        "received": result.received,
        "lost": result.lost,
        "loss_percent": round(result.loss_percent, 3),
        "duplicated": result.duplicated,
        "reordered": result.reordered,
        "corrupted": result.corrupted,
        "icmp_errors": result.errors,
        "rtt_ms": timing(result.rtts_ns),
        "jitter_ms": round(result.jitter_ns / 1e6, 3),
    }


def summary_lines(options: UDPOptions, result: UDPResult) -> list[str]:
    """ping's closing lines, with loss, duplicates, reordering and jitter."""
    found = figures(options, result)
    lines = [
        f"--- {options.target} udp probe statistics ---",
        f"{result.sent} sent, {result.received} received, {result.lost} lost"
        f" ({result.loss_percent:.1f}%), {result.duplicated} duplicated,"
        f" {result.reordered} reordered, {result.corrupted} corrupted",
    ]
    if result.received:
        lines += timing_lines("rtt", found["rtt_ms"])
        lines.append(f"jitter {found['jitter_ms']:.3f} ms (RFC 3550 interarrival estimator)")
    return lines


UDP_SCHEME = "udp://"

TCP_ONLY_FLAGS = (
    ("--half-close", "half_close"),
    ("--connect-only", "connect_only"),
    ("--connections", "connections"),
    ("--duration", "duration"),
    ("--mode", "mode"),
    ("--window", "window"),
    ("--tls", "tls"),
    ("--ca", "ca"),
    ("--insecure", "insecure"),
    ("--sni", "sni"),
    ("--proxy-header", "proxy_header"),
    ("--proxy-source", "proxy_source"),
)
"""Flags of `echostat probe` that only mean something on a TCP connection."""


def is_udp_target(target: str) -> bool:
    return target.startswith(UDP_SCHEME)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags only a UDP probe has, in their own group of ``echostat probe --help``."""
    group = parser.add_argument_group(
        "udp (TARGET udp://HOST:PORT: numbered datagrams; loss, order, RTT and jitter)"
    )
    group.add_argument(
        "--rate",
        metavar="N/s",
        help="datagrams per second, instead of --interval (e.g. 100 or 100/s)",
    )
    group.add_argument(
        "--max-loss",
        type=float,
        metavar="PCT",
        help="exit 1 only if more than PCT %% of the datagrams were lost (default 0: any loss)",
    )


def check_tcp_args(args: argparse.Namespace) -> None:
    """For a TCP target, the UDP-only flags are an error (ValueError naming the flag)."""
    for flag, value in (("--rate", args.rate), ("--max-loss", args.max_loss)):
        if value is not None:
            raise ValueError(f"{flag}: only for udp:// targets")


def options_from(args: argparse.Namespace) -> UDPOptions:
    """UDP probe options from ``echostat probe`` flags; ValueError names what is wrong."""
    host, port = parse_host_port(args.target[len(UDP_SCHEME) :])
    for flag, name in TCP_ONLY_FLAGS:
        if getattr(args, name, None) not in (None, False):
            raise ValueError(f"{flag}: not available for udp:// targets")
    interval_s = 1.0 if args.interval is None else args.interval
    if args.rate is not None:
        if args.interval is not None:
            raise ValueError("--rate and --interval: give one or the other")
        interval_s = 1 / _parse_rate(args.rate)
    options = UDPOptions(
        host=host,
        port=port,
        count=5 if args.count is None else args.count,
        size=64 if args.size is None else args.size,
        interval_s=interval_s,
        timeout_s=args.timeout,
        max_loss_percent=0.0 if args.max_loss is None else args.max_loss,
        source=args.source,
    )
    if not MIN_SIZE <= options.size <= MAX_SIZE:
        raise ValueError(f"--size: expected {MIN_SIZE}..{MAX_SIZE} for udp://, got {options.size}")
    if not 0 <= options.count <= MAX_COUNT:
        raise ValueError(f"--count: expected 0 (until Ctrl-C)..{MAX_COUNT}, got {options.count}")
    if not interval_s >= 0:
        raise ValueError(f"--interval: expected 0 or more seconds, got {interval_s:g}")
    if options.count == 0 and interval_s < MIN_ENDLESS_INTERVAL_S:
        raise ValueError(
            f"--count 0 runs until Ctrl-C: --interval must then be at least"
            f" {MIN_ENDLESS_INTERVAL_S:g} s (every round-trip time is kept)"
        )
    if not options.timeout_s > 0:
        raise ValueError(
            f"--timeout: expected a positive number of seconds, got {options.timeout_s:g}"
        )
    if not 0 <= options.max_loss_percent <= 100:
        raise ValueError(f"--max-loss: expected 0..100, got {options.max_loss_percent:g}")
    return options


def _parse_rate(text: str) -> float:
    number = text.removesuffix("/s")
    try:
        rate = float(number)
    except ValueError:
        rate = math.nan
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"--rate: expected a positive number of datagrams per second, got {text}")
    return rate


def run(args: argparse.Namespace) -> int:
    """``echostat probe udp://...``: probe and report; 0 passed, 1 path failed, 2 usage error."""
    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"echostat probe: {exc}", file=sys.stderr)
        return 2
    console = Console(quiet=args.json)
    try:
        result, interrupted = uvloop.run(_interruptible(options, console))
    except OSError as exc:
        print(f"echostat probe: {options.target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    ok = passed(options, result)
    if args.json:
        document = {
            "target": options.target,
            "check": "udp",
            "ok": ok,
            "interrupted": interrupted,
            "options": asdict(options),
            **figures(options, result),
        }
        print(json.dumps(document, indent=2))
    for line in summary_lines(options, result):
        console.line(line)
    if not ok:
        print(f"echostat probe: {options.target}: {_why_failed(options, result)}", file=sys.stderr)
    return 0 if ok else 1


def _why_failed(options: UDPOptions, result: UDPResult) -> str:
    if result.corrupted:
        return f"{result.corrupted} replies matched no datagram sent"
    limit = options.max_loss_percent
    return f"{result.loss_percent:.1f}% of the datagrams lost, more than --max-loss {limit:g}"


async def _interruptible(options: UDPOptions, console: Console) -> tuple[UDPResult, bool]:
    """The probe, with Ctrl-C turned into "stop and report" instead of a traceback."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        return await run_udp_probe(options, console, interrupted), interrupted.is_set()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
