"""What the fault suite and the soak share: echo clients, waits, and echostat as a subprocess.

A subprocess is how the suite sees what only the operating system can tell: the server's
descriptor count, resident memory and CPU time under /proc, and its log as an operator sees it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from tornado.httpclient import AsyncHTTPClient

REPO = Path(__file__).resolve().parents[2]

DEADLINE_S = 30.0
"""How long any awaited condition may take: generous, for a shared and noisy 2-core machine."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STARTUP = re.compile(r"echoing: (?P<listeners>.*); status page on http://[^ ]+:(?P<status>\d+)/")
_LISTENER = re.compile(r"(\S+) on \S+:(\d+)")


def payload(size: int, seed: int = 0) -> bytes:
    """`size` reproducible pseudo-random bytes, different for each `seed`."""
    return random.Random(f"{size}/{seed}").randbytes(size)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = DEADLINE_S
) -> None:
    """Return once `condition()` (sync or async) is true; fail if it isn't within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


async def get_json(port: int, path: str = "/api/stats", timeout_s: float = DEADLINE_S) -> Any:
    """GET ``http://127.0.0.1:port/path`` and decode its JSON body."""
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", request_timeout=timeout_s
    )
    return json.loads(response.body)


async def connections(port: int) -> dict[str, Any]:
    """The ``connections`` section of ``/api/stats``: active, accepted, closed, by reason."""
    document = await get_json(port)
    return document["connections"]  # type: ignore[no-any-return]


async def stats_when(
    port: int, condition: Callable[[dict[str, Any]], bool], timeout_s: float = DEADLINE_S
) -> dict[str, Any]:
    """The first ``/api/stats`` document for which `condition` holds, polled until `timeout_s`."""
    latest: dict[str, Any] = {}

    async def holds() -> bool:
        latest.update(await get_json(port))
        return condition(latest)

    await eventually(holds, timeout_s)
    return latest


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


async def half_close_echo(port: int, data: bytes) -> bytes:
    """Connect, send `data`, shut down the write side, return everything read until EOF."""
    loop = asyncio.get_running_loop()
    with await connect(port) as sock:
        received = asyncio.ensure_future(recv_to_eof(sock))
        await loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)
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


def reset_on_close(sock: socket.socket) -> None:
    """Make `sock.close()` send a TCP reset instead of an orderly EOF (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


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


class Echostat:
    """``python -m server --config PATH`` in the background, its log collected line by line.

    `fd_limit` sets its soft and hard RLIMIT_NOFILE (with util-linux's prlimit, which then
    execs, so the PID is echostat's; no preexec_fn, unsafe in a threaded test run). `start` waits
    for the startup line and reads the bound ports from it; `stop` kills the process by PID
    if it still runs and is safe to call twice.
    """

    def __init__(self, config: Path, fd_limit: int | None = None) -> None:
        limit = ["prlimit", f"--nofile={fd_limit}:{fd_limit}", "--"] if fd_limit else []
        self.process = subprocess.Popen(
            [*limit, sys.executable, "-m", "server", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self.status_port = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def start(self) -> Echostat:
        """Return once the service logs that it is serving; fail if it exits first."""
        match = _STARTUP.search(self.wait_for_line("echoing:"))
        assert match is not None, self.log
        self.ports = {name: int(port) for name, port in _LISTENER.findall(match["listeners"])}
        self.status_port = int(match["status"])
        return self

    @property
    def echo_port(self) -> int:
        return self.ports["main"]

    def wait_for_line(self, text: str, timeout_s: float = DEADLINE_S) -> str:
        """The next log line containing `text`; fail if none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"echostat exited before logging {text!r}: {self.log}")
            if text in line:
                return line
        raise AssertionError(f"echostat logged no {text!r} within {timeout_s} s: {self.log}")

    def tracebacks(self) -> list[str]:
        """Log lines that start or belong to a Python traceback."""
        return [line for line in self.log if "Traceback" in line or line.startswith("  File ")]

    def fd_count(self) -> int:
        """Open file descriptors of the process, from /proc."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_bytes(self) -> int:
        """Resident memory of the process (VmRSS), from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert kib is not None, status
        return int(kib[1]) * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used, from /proc/PID/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14 and 15 of stat(5), counted after the name, which may contain spaces.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        """The exit status, once the process has exited and its log is complete."""
        status = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=timeout_s)
        return status

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)
