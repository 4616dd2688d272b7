"""Reads what an echostat listener with ``report: true`` says of a connection before it echoes:
one line ``ECHOSTAT-REPORT <json>\\r\\n`` on TCP, one such datagram in answer to a UDP request.

`read_report` takes the line off a connected socket; `parse_report` turns it into a
`ServerView`; both raise `ValueError` for anything that is not a report.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

from echostat.probe.marks import unmapped
from echostat.probe.proxy_header import ECHOED, echoed

PREFIX = b"ECHOSTAT-REPORT "
UDP_REQUEST = b"ECHOSTAT-REPORT?"
UDP_REQUEST_BYTES = 512
"""A UDP report request is at least this long: the answer is never longer than the request."""
MAX_LINE_BYTES = 4096
REPORT_FIRST = "the server sent an echostat report first: add --path to read it"
"""Why an echo check fails on its first byte against a listener with ``report: true``."""
REPORT_IN_TLS = (
    "the server sent an echostat report first, inside TLS: --path reads reports only in the "
    "clear, so this listener can't be probed"
)
"""The same on a TLS listener, where --path, which --tls refuses, would not help."""


@dataclass(frozen=True)
class ServerView:
    """What the server saw of the connection (or of the request datagram)."""

    peer_host: str
    peer_port: int
    local: str | None
    version: str | None
    ttl: int | None
    dscp: int | None
    ecn: int | None
    mss: int | None
    options: tuple[str, ...] | None
    """The TCP options its SYN arrived with; None for UDP or when the server had no SYN."""
    proxy_source: str | None


def starts_like_report(data: bytes) -> bool:
    """Whether `data`, the first bytes a connection received, are the start of a report line."""
    return bool(data) and data.startswith(PREFIX[: len(data)])


def first_reply_hint(
    preamble: bytes, data: bytes, transport: asyncio.BaseTransport | None
) -> str | None:
    """What kind of server sent `data`, the first bytes back, when they are not the echo: one
    that echoed the PROXY header `preamble`, or a report listener; None for any other."""
    if echoed(preamble, data):
        return ECHOED
    if starts_like_report(data):
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        return REPORT_IN_TLS if tls else REPORT_FIRST
    return None


def udp_request() -> bytes:
    """The datagram that asks a UDP report listener for its view."""
    return UDP_REQUEST + b" " * (UDP_REQUEST_BYTES - len(UDP_REQUEST))


async def read_report(
    sock: socket.socket, timeout_s: float, preamble: bytes = b""
) -> ServerView | None:
    """The report line the server sends first on `sock`, or None if none comes within
    `timeout_s` (a listener without reports waits for the client to speak). Reads exactly up
    to the line's end, leaving what follows for the echo. `preamble` is the PROXY header the
    client sent first, which a server that does not speak the protocol echoes."""
    loop = asyncio.get_running_loop()
    line = b""
    deadline = loop.time() + timeout_s
    while not line.endswith(b"\r\n"):
        left = deadline - loop.time()
        if left <= 0:
            return None
        try:
            # MSG_PEEK first: take only the bytes up to the end of the line.
            peeked = await asyncio.wait_for(_peek(sock), left)
        except TimeoutError:
            return None
        if not peeked:
            raise ValueError("the server closed the connection before saying anything")
        end = peeked.find(b"\n")
        line += sock.recv(len(peeked) if end < 0 else end + 1)
        if not PREFIX.startswith(line[: len(PREFIX)]):
            if echoed(preamble, line):
                raise ValueError(ECHOED)
            raise ValueError("the server sent something other than a report first")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"the report line is longer than {MAX_LINE_BYTES} bytes")
    return parse_report(line)


async def _peek(sock: socket.socket) -> bytes:
    """The bytes waiting on `sock`, left in place (waits until there are some, or EOF)."""
    await readable(sock)
    return sock.recv(MAX_LINE_BYTES, socket.MSG_PEEK)


async def readable(sock: socket.socket) -> None:
    """Wait until `sock` (non-blocking) has something to read, or an error or EOF."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def parse_report(line: bytes) -> ServerView:
    """A report line (or datagram) as a `ServerView`; ValueError if it is not one."""
    if not line.startswith(PREFIX):
        raise ValueError("not an echostat report")
    try:
        fields = json.loads(line[len(PREFIX) :].strip())
        host, _, port = str(fields["peer"]).rpartition(":")
        if not host:
            raise ValueError(f"peer {fields['peer']!r} is not HOST:PORT")
        syn = fields.get("syn") or {}
        return ServerView(
            peer_host=unmapped(host.removeprefix("[").removesuffix("]")),
            peer_port=int(port),
            local=fields.get("local"),
            version=fields.get("version"),
            ttl=_int(syn.get("ttl", fields.get("ttl"))),
            dscp=_int(syn.get("dscp", fields.get("dscp"))),
            ecn=_int(syn.get("ecn", fields.get("ecn"))),
            mss=_int(syn.get("mss")),
            options=_options(syn) if syn else None,
            proxy_source=fields.get("proxy_source"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"an echostat report that can't be read: {exc}") from None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _options(syn: dict[str, Any]) -> tuple[str, ...]:
    """The named options a decoded SYN carried, in the order the probe reports them."""
    present = {"mss": syn.get("mss") is not None, "wscale": syn.get("wscale") is not None}
    present["sack"] = bool(syn.get("sack"))
    present["timestamps"] = bool(syn.get("timestamps"))
    return tuple(name for name, there in present.items() if there)
