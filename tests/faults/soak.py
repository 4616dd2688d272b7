"""Churn soak: clients connect, echo, reset and half-close against echostat for a bounded time.

Afterwards the server's descriptors, resident memory and counters must be back at baseline:
no connection open, every accepted one closed, every byte of a clean client echoed. Prints a
summary table and exits 1 on any mismatch.

    python -m tests.faults.soak [--seconds 60] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.support import connect, echo, loopback_settings, write_config
from tests.helpers import (
    EchostatProcess,
    get_json,
    half_close_echo,
    reset_on_close,
    stats_when,
    wait_until,
)

MIB = 1 << 20
RSS_SLACK_BYTES = 16 * MIB
"""Allowed RSS growth after the churn: the allocator keeps some freed arenas, never leaks."""
MAX_ROUNDS_PER_CLIENT = 1_000_000
"""A count bound on each client's loop, besides the time bound."""


@dataclass
class Tally:
    """What the clients did, to check the server's counters against."""

    connections: int = 0
    clean_bytes: int = 0
    """Sent by clients that read their whole echo back: the server must count exactly these."""
    reset_bytes: int = 0
    """Sent by clients that reset before reading: the server counts some of these."""
    resets: int = 0
    half_closes: int = 0
    scans: int = 0
    errors: list[str] = field(default_factory=list)


async def echo_and_close(port: int, tally: Tally, rng: random.Random) -> None:
    """Echo one message, verify it, close normally."""
    data = rng.randbytes(rng.randrange(1, 64 * 1024))
    with await connect(port) as sock:
        tally.connections += 1
        if await echo(sock, data) != data:
            tally.errors.append("an echo came back different")
        tally.clean_bytes += len(data)


async def reset_with_data_pending(port: int, tally: Tally, rng: random.Random) -> None:
    """Send up to a MiB without reading the echo, then reset (SO_LINGER 0)."""
    data = bytes(rng.randrange(64 * 1024, MIB))
    with await connect(port) as sock:
        tally.connections += 1
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, data), 5.0)
        except TimeoutError:
            pass  # the server applied backpressure; reset with what was sent
        tally.reset_bytes += len(data)
        reset_on_close(sock)
    tally.resets += 1


async def half_close(port: int, tally: Tally, rng: random.Random) -> None:
    """Send, half-close, read everything back until EOF."""
    data = rng.randbytes(rng.randrange(0, 256 * 1024))
    tally.connections += 1
    if await half_close_echo(port, data) != data:
        tally.errors.append("a half-closed echo came back different")
    tally.clean_bytes += len(data)
    tally.half_closes += 1


async def scan(port: int, tally: Tally, rng: random.Random) -> None:
    """Connect and close at once, sending nothing."""
    sock = await connect(port)
    tally.connections += 1
    sock.close()
    tally.scans += 1


ROUNDS = (echo_and_close, reset_with_data_pending, half_close, scan)


async def client(port: int, seed: int, until: float, tally: Tally) -> None:
    """Cycle through the rounds until the loop's clock passes `until`."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    for count in range(MAX_ROUNDS_PER_CLIENT):
        if loop.time() >= until:
            return
        try:
            await ROUNDS[(seed + count) % len(ROUNDS)](port, tally, rng)
        except (OSError, AssertionError) as exc:
            tally.errors.append(f"{ROUNDS[(seed + count) % len(ROUNDS)].__name__}: {exc!r}")


async def churn(port: int, clients: int, seconds: float, tally: Tally) -> None:
    until = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(client(port, seed, until, tally) for seed in range(clients)))


async def settle(server: EchostatProcess, baseline_fds: int) -> tuple[dict[str, Any], int]:
    """Wait until no connection is open and (if in time) fds are at baseline.

    Returns the stats and the fd count, counted before that stats request opens one more.
    """
    await stats_when(server.status_port, lambda s: s["connections"]["active"] == 0)
    try:
        await wait_until(lambda: server.fd_count() <= baseline_fds)
    except AssertionError:
        pass  # reported with the numbers by `mismatches`
    fds = server.fd_count()
    return await get_json(server.status_port), fds


def mismatches(
    document: dict[str, Any], tally: Tally, fds: tuple[int, int], rss: tuple[int, int]
) -> list[str]:
    """Everything that isn't back at baseline or doesn't add up."""
    counts, moved = document["connections"], document["bytes"]
    problems = list(tally.errors[:10])
    if len(tally.errors) > 10:
        problems.append(f"... and {len(tally.errors) - 10} more client errors")
    expected = {
        "active": 0,
        "accepted": tally.connections,
        "closed": tally.connections,
        "rejected": 0,
        "closed_by_server": {},
    }
    for key, value in expected.items():
        if counts[key] != value:
            problems.append(f"connections.{key}: expected {value}, got {counts[key]}")
    if moved["received"] != moved["sent"]:
        problems.append(f"bytes received {moved['received']} != bytes sent {moved['sent']}")
    if not tally.clean_bytes <= moved["received"] <= tally.clean_bytes + tally.reset_bytes:
        problems.append(
            f"bytes received {moved['received']} outside {tally.clean_bytes}.."
            f"{tally.clean_bytes + tally.reset_bytes} (clean .. clean + reset clients' bytes)"
        )
    # One fewer after is the baseline's own status request, still closing when it was counted.
    if fds[1] > fds[0]:
        problems.append(f"open descriptors: {fds[0]} before, {fds[1]} after")
    if rss[1] - rss[0] > RSS_SLACK_BYTES:
        problems.append(f"RSS grew by {(rss[1] - rss[0]) / MIB:.1f} MiB (allowed 16)")
    return problems


def summary(
    seconds: float,
    clients: int,
    document: dict[str, Any],
    tally: Tally,
    fds: tuple[int, int],
    rss: tuple[int, int],
) -> str:
    rows = [
        ("duration", f"{seconds:g} s, {clients} concurrent clients"),
        ("connections served", f"{document['connections']['accepted']}"),
        ("bytes echoed (server)", f"{document['bytes']['sent']}"),
        ("resets survived", f"{tally.resets}"),
        ("half-closes", f"{tally.half_closes}"),
        ("port scans", f"{tally.scans}"),
        ("fds before / after", f"{fds[0]} / {fds[1]}"),
        ("RSS before / after", f"{rss[0] / MIB:.1f} MiB / {rss[1] / MIB:.1f} MiB"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def soak(seconds: float, clients: int, workdir: Path) -> int:
    """Run the soak against a fresh echostat; return the exit status (0 = all at baseline)."""
    settings = loopback_settings(limits={"max_connections_per_ip": 0})
    server = EchostatProcess(
        ["--config", str(write_config(workdir / "config.yaml", settings))]
    ).start()
    try:
        tally = Tally()
        # A short warm-up first, so the baselines include what is allocated once, on first
        # use (the allocator's steady state; a descriptor uvloop opens at the first accept).
        await churn(server.echo_port, clients, min(1.0, seconds / 4), tally)
        await stats_when(server.status_port, lambda s: s["connections"]["active"] == 0)
        fds_before = server.fd_count()
        rss_before = server.rss_bytes()
        await churn(server.echo_port, clients, seconds, tally)
        document, fds_after = await settle(server, fds_before)
        fds, rss = (fds_before, fds_after), (rss_before, server.rss_bytes())
        problems = mismatches(document, tally, fds, rss)
        problems += [f"traceback in the log: {line}" for line in server.tracebacks()[:3]]
    finally:
        server.stop()
    print(summary(seconds, clients, document, tally, fds, rss))
    for problem in problems:
        print(f"MISMATCH: {problem}")
    print("result: " + ("ok" if not problems else f"{len(problems)} mismatches"))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="churn time (default 60)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="echostat-soak-") as workdir:
        return asyncio.run(soak(args.seconds, args.clients, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
