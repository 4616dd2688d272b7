"""Runs a set of verifying clients through their phases: connect, start, measure, stop, close.

`echostat probe` and bench/loadgen.py both drive their clients through a `Session`, each
adding its own figures (a progress line, CPU use) between the phases.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from echostat.probe.address import host_port
from echostat.probe.engine import Client, Mismatch, Run
from echostat.probe.marks import Marks
from echostat.probe.server_report import read_report

SETTLE_S = 10.0
"""Deadline for connecting, for the first echo of a connection and for draining at the end."""

_ClientT = TypeVar("_ClientT", bound=Client)


@dataclass(frozen=True)
class Endpoint:
    """Where the clients connect and how: TLS, a source address, a PROXY header first."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    """The name TLS sends (SNI) and checks the certificate against; `host` if None."""
    source_host: str | None = None
    """Bind the client end to this address (port chosen by the kernel)."""
    preamble: bytes = b""
    """Written first on every connection (a PROXY protocol header); not expected back."""
    marks: Marks = field(default_factory=Marks)
    """DSCP, TTL and MSS set on every socket before it connects (``--dscp --ttl --mss``)."""
    report_first: bool = False
    """The server speaks first (an echostat listener with ``report: true``): its report line
    is read, and checked to be one, before the echo starts."""

    @property
    def label(self) -> str:
        """``HOST:PORT``, with brackets around an IPv6 address."""
        return host_port(self.host, self.port)


async def bounded(what: str, awaitable: Awaitable[Any], run: Run, timeout_s: float) -> None:
    """Await `awaitable`, but give up after `timeout_s` or as soon as a run that stops on
    failure has failed (raising `Mismatch` with its message, or `TimeoutError`)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait(
        {task, run.failed}, timeout=timeout_s, return_when="FIRST_COMPLETED"
    )
    if run.failed.done() or task not in done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported below
    if run.failed.done():
        raise Mismatch(run.failed.result().message)
    if task not in done:
        raise TimeoutError(f"{what}: not done within {timeout_s:g} s")
    task.result()


async def open_client(
    endpoint: Endpoint, address: tuple[Any, ...], family: int, factory: Callable[[], _ClientT]
) -> _ClientT:
    """Connect to `address` and start `factory()`'s protocol on it, timing the TCP and the TLS
    handshake apart; the socket is closed if either fails.

    A connection the server resets as soon as it accepted it (before TLS, if any) is the
    client's to report: it gets it through `connection_lost`, with no transport."""
    loop = asyncio.get_running_loop()
    sock = new_socket(endpoint, family)
    connected: int | None = None
    try:
        started = time.perf_counter_ns()
        try:
            await loop.sock_connect(sock, address)
            connected = time.perf_counter_ns()
            if endpoint.report_first:
                await send_preamble(endpoint, sock)
                await read_required_report(endpoint, sock, SETTLE_S)
                factory = _without_preamble(factory)
            # Linux reports a reset as ECONNREFUSED before the handshake, ECONNRESET after it.
            hostname = (endpoint.server_hostname or endpoint.host) if endpoint.tls else None
            _, client = await loop.create_connection(
                factory, sock=sock, ssl=endpoint.tls, server_hostname=hostname
            )
        except ConnectionResetError as exc:
            if endpoint.tls and connected is not None:
                raise  # in the TLS handshake: a failed connect, reported as such
            sock.close()
            connected = time.perf_counter_ns()
            client = factory()
            client.connection_lost(exc)
    except BaseException:
        sock.close()
        raise
    client.connect_ns = connected - started
    client.handshake_ns = time.perf_counter_ns() - connected if endpoint.tls else 0
    return client


def new_socket(
    endpoint: Endpoint, family: int, user_timeout_s: float | None = None
) -> socket.socket:
    """A non-blocking TCP socket, not yet connected, with Nagle off, the endpoint's marks
    (``--dscp --ttl --mss``), its source address and, if given, `TCP_USER_TIMEOUT`; the
    caller closes it."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if user_timeout_s is not None:
            ms = round(user_timeout_s * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms)
        endpoint.marks.apply(sock)
        if endpoint.source_host is not None:
            sock.bind((endpoint.source_host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_preamble(endpoint: Endpoint, sock: socket.socket) -> None:
    """Write the endpoint's PROXY header, if any, on the connected `sock`."""
    if endpoint.preamble:
        await asyncio.get_running_loop().sock_sendall(sock, endpoint.preamble)


async def read_required_report(endpoint: Endpoint, sock: socket.socket, timeout_s: float) -> None:
    """Read the server's report line off `sock`; TimeoutError if none comes in time."""
    if await read_report(sock, timeout_s) is None:
        raise TimeoutError(f"no report from {endpoint.label} within {timeout_s:g} s")


def _without_preamble(factory: Callable[[], _ClientT]) -> Callable[[], _ClientT]:
    """`factory`, making clients that do not send the PROXY header (it went out already)."""

    def without_preamble() -> _ClientT:
        client = factory()
        client.preamble = b""
        return client

    return without_preamble


async def resolve(endpoint: Endpoint) -> tuple[int, tuple[Any, ...]]:
    """The family and socket address of the endpoint's first TCP address."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_STREAM
    )
    family, _, _, _, address = infos[0]
    return family, address


class Session:
    """The clients of one run against one endpoint, and the phases they go through.

    `connect` opens them, `start` sets them going (and the deadline watch, if
    `timeout_s` is set), `stop` asks them to finish and waits for what is in flight, `close`
    closes every connection; `close` is safe to call twice.
    """

    def __init__(self, endpoint: Endpoint, run: Run, timeout_s: float | None = None) -> None:
        self.endpoint = endpoint
        self.run = run
        self.timeout_s = timeout_s
        """Per awaited echo: a client waiting longer fails with reason ``timeout``."""
        self.clients: list[Client] = []
        self._watch: asyncio.Task[None] | None = None

    async def connect(
        self,
        count: int,
        factory: Callable[[int], Client],
        parallel: int = 100,
        rate: float = 0,
    ) -> None:
        """Open `count` connections, at most `parallel` handshakes at a time and, if `rate` is
        set, no more than `rate` per second (a proxy opens one onward for each, just as fast).
        Raises OSError (or ssl.SSLError) if one cannot be opened, TimeoutError if too slow."""
        loop = asyncio.get_running_loop()
        family, address = await resolve(self.endpoint)
        gate = asyncio.Semaphore(parallel)
        started = loop.time()
        per_connection_s = self.timeout_s or SETTLE_S

        async def one(index: int) -> None:
            if rate:
                await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
            async with gate:
                opening = open_client(self.endpoint, address, family, lambda: factory(index))
                client = await asyncio.wait_for(opening, per_connection_s)
                self.clients.append(client)

        budget_s = SETTLE_S + count / 500 + (count / rate if rate else 0)
        await bounded(
            "connecting", asyncio.gather(*(one(i) for i in range(count))), self.run, budget_s
        )

    def start(self) -> None:
        """Start every client's traffic, and the watch on overdue echoes."""
        for client in self.clients:
            # A connection the server reset right after accepting it is closed by now; its
            # `connection_lost` says so (writing to it would raise).
            if not client.failed and client.transport and not client.transport.is_closing():
                client.begin()
        if self.timeout_s is not None:
            self._watch = asyncio.create_task(self._watch_deadlines(self.timeout_s))

    async def first_echoes(self, timeout_s: float | None = None) -> None:
        """Wait until every client has had its first echo (or failed)."""
        # Behind a proxy, a connection to it is open before the proxy's own connection onward is.
        echoed = asyncio.gather(*(client.echoed for client in self.clients))
        budget_s = timeout_s or SETTLE_S + len(self.clients) / 1000
        await bounded("first echoes", echoed, self.run, budget_s)

    async def stop(self) -> None:
        """Stop the traffic and wait until what is in flight has come back (or failed)."""
        self.run.running = False
        for client in self.clients:
            client.stop()
        idle = asyncio.gather(*(client.idle for client in self.clients))
        await bounded("draining", idle, self.run, (self.timeout_s or 0) + SETTLE_S)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()

    def served(self) -> Sequence[int]:
        """Bytes verified per client in the measured window."""
        return [client.served for client in self.clients]

    async def _watch_deadlines(self, timeout_s: float) -> None:
        """Fail each client whose awaited echo is older than `timeout_s`, checked ten times
        per timeout (at least every 0.1 s)."""
        timeout_ns = round(timeout_s * 1e9)
        while True:
            await asyncio.sleep(min(0.1, timeout_s / 10))
            now = time.perf_counter_ns()
            for client in self.clients:
                since = client.waiting_since_ns()
                if since is not None and not client.failed and now - since > timeout_ns:
                    client.time_out(timeout_s)
