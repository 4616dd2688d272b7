"""What the fault suite and the soak share beyond tests/helpers.py: socket-level clients
that can stall, flood or reset, and config documents for echostat subprocesses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import get_json


async def connections(port: int) -> dict[str, Any]:
    """The ``connections`` section of ``/api/stats``: active, accepted, closed, by reason."""
    document = await get_json(port)
    return document["connections"]  # type: ignore[no-any-return]


async def connect(port: int, host: str = "127.0.0.1", source: str | None = None) -> socket.socket:
    """A non-blocking TCP socket connected to `host:port`, from address `source` if given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if source is not None:
        sock.bind((source, 0))
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly `size` bytes from non-blocking `sock`; fail on an early EOF."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, min(size - len(data), 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def recv_to_eof(sock: socket.socket) -> bytes:
    """Read from non-blocking `sock` until the peer's EOF; a reset raises."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        data += chunk
    return bytes(data)


async def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` and return as many bytes read back, reading while writing as echo needs."""
    loop = asyncio.get_running_loop()
    received = asyncio.ensure_future(recv_exactly(sock, len(data)))
    await loop.sock_sendall(sock, data)
    return await received


async def read_until_closed(sock: socket.socket) -> int:
    """Read and discard until the peer's EOF or reset; return how many bytes were discarded."""
    loop = asyncio.get_running_loop()
    discarded = 0
    try:
        while chunk := await loop.sock_recv(sock, 1 << 20):
            discarded += len(chunk)
    except ConnectionResetError:
        pass
    return discarded


async def send_until_blocked(sock: socket.socket, limit_bytes: int) -> int:
    """Send up to `limit_bytes` without reading; stop early once the peer stops taking them.

    Returns how many bytes the kernel accepted. "Stopped taking" means not writable for a
    second, which happens once the server, its echo unread, stops reading from us.
    """
    loop = asyncio.get_running_loop()
    chunk = bytes(1 << 20)
    sent = 0
    while sent < limit_bytes:
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, chunk), 1.0)
        except TimeoutError:
            break
        sent += len(chunk)
    return sent


def loopback_settings(**sections: Mapping[str, Any]) -> dict[str, Any]:
    """A config.yaml document on free loopback ports; `sections` are merged into it."""
    document: dict[str, Any] = {
        "listeners": [{"name": "main", "host": "127.0.0.1", "port": 0}],
        "status": {"host": "127.0.0.1", "port": 0},
        "shutdown_grace_s": 1,
    }
    for name, values in sections.items():
        document[name] = values
    return document


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """Write `document` as YAML to `path` and return the path."""
    path.write_text(yaml.safe_dump(dict(document)), encoding="utf-8")
    return path
