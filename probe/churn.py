"""Connection churn: lanes that each connect, echo one message, close, and connect again.

This is what load balancers' health checks, port scanners and short-lived clients do to a
server. Every connection's echo is verified by the engine's clients; the client closes first,
as real clients do (or, half-closing, shuts down its write side first and reads to EOF).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import Counter
from typing import Any

from echostat.probe.engine import Client, HalfClose, Holder, Run
from echostat.probe.session import SETTLE_S, Endpoint, bounded, open_client, resolve


class Once(Holder):
    """A `Holder` that is done with its connection once its message came back whole, so that
    closing it then is no fault."""

    def expecting(self) -> bool:
        return self.verified < self.size


class Churn:
    """`lanes` concurrent loops of connect, send `size` bytes, verify them, close.

    With `half_close` a connection shuts down its write side after its message and ends at
    the server's EOF after the echo. A mismatch is recorded in `run.failures`; a refused,
    reset or cut-short connection is counted in `failures` by reason and its lane goes on.
    `latencies_ns` holds, for each connection completed while `run.measuring`, the time from
    starting to connect to its verified echo (and EOF); `completed` counts them.
    """

    def __init__(self, endpoint: Endpoint, run: Run, lanes: int, size: int, half_close: bool):
        self.endpoint = endpoint
        self.run = run
        self.lanes = lanes
        self.size = size
        self.half_close = half_close
        self.completed = 0
        self.latencies_ns: list[int] = []
        self.failures: Counter[str] = Counter()
        self._indexes = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every lane; each runs until `stop`."""
        family, address = await resolve(self.endpoint)
        self._tasks = [asyncio.create_task(self._lane(family, address)) for _ in range(self.lanes)]

    async def stop(self) -> None:
        """Let every lane finish the connection it is on; raises TimeoutError if one can't."""
        self.run.running = False
        await bounded("draining", asyncio.gather(*self._tasks), self.run, SETTLE_S)

    def _client(self, index: int) -> Client:
        if self.half_close:
            return HalfClose(self.run, index, self.size, self.endpoint.preamble)
        return Once(self.run, index, self.size, self.endpoint.preamble)

    async def _lane(self, family: int, address: tuple[Any, ...]) -> None:
        run = self.run
        while run.running:
            index = next(self._indexes)
            started = time.perf_counter_ns()
            try:
                factory = functools.partial(self._client, index)
                client = await open_client(self.endpoint, address, family, factory)
            except ConnectionRefusedError:
                self.failures["refused"] += 1
                continue
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.failures["reset" if isinstance(exc, ConnectionResetError) else "connect"] += 1
                continue
            if self.half_close:
                client.begin()
            await client.echoed
            done = time.perf_counter_ns()
            if client.failed:
                reason = next(f.reason for f in reversed(run.failures) if f.connection == index)
                self.failures[reason] += 1
            elif run.measuring:
                self.completed += 1
                self.latencies_ns.append(done - started)
            if client.transport is not None:
                client.transport.close()
            await client.closed
