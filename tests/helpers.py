"""Clients and waits shared by the tests: echo round trips, JSON fetches, echostat subprocesses."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from echostat.cli import main as echostat_main
from echostat.service import Service

REPO = Path(__file__).resolve().parent.parent
"""The source tree: its config.yaml is the documented default deployment."""

DEADLINE_S = 30.0
"""How long any condition may take before a test fails; generous for a noisy 2-core machine."""

LOCAL_PORTS = (
    *("--set", "listeners.0.port=0", "--set", "listeners.1.port=0"),
    *("--set", "status.port=0"),
)
"""CLI flags that move every listener of the repo's config.yaml to a free port."""

T = TypeVar("T")

_WORKERS = re.compile(r"running (\d+) workers")
_STATUS_PAGE = re.compile(r"status page on http://[^ ]+:(\d+)/")
_LISTENER = re.compile(r"(\S+) on \S+:(\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def require_program(name: str, package: str) -> str:
    """The path of program `name`; if it is missing, skip the test, or fail it under CI=true,
    where .ci/run installs Debian's `package` and nothing may silently not run."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if found is None:
        why = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and a required program is missing: {why}")
        pytest.skip(why)
    return found


def payload(size: int, seed: int = 0) -> bytes:
    """`size` reproducible pseudo-random bytes, different for each `seed`."""
    return random.Random(f"{size}/{seed}").randbytes(size)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    timeout_s: float = DEADLINE_S,
) -> None:
    """Return once `condition()` (plain or awaitable) is true; fail naming `what` if it isn't
    within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # how often the condition is checked, not a timing assumption


async def within_deadline(awaitable: Awaitable[T], timeout_s: float = DEADLINE_S) -> T:
    """`awaitable`'s result, failing the test if it takes longer than `timeout_s`."""
    return await asyncio.wait_for(awaitable, timeout_s)


async def half_close_echo(port: int, data: bytes) -> bytes:
    """Send `data`, shut down the write side, and return everything read until EOF.

    Reading runs alongside writing, as an echo client must: the server stops reading
    from a client that doesn't read its echo.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = asyncio.ensure_future(reader.read())
    writer.write(data)
    writer.write_eof()
    await writer.drain()
    echoed = await received
    writer.close()
    await writer.wait_closed()
    return echoed


async def get_json(port: int, path: str = "/api/stats", timeout_s: float = DEADLINE_S) -> Any:
    """GET ``http://127.0.0.1:port/path`` and decode its JSON body."""
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", request_timeout=timeout_s
    )
    return json.loads(response.body)


async def stats_when(
    port: int, condition: Callable[[dict[str, Any]], bool], timeout_s: float = DEADLINE_S
) -> dict[str, Any]:
    """The first ``/api/stats`` document for which `condition` holds, polled until `timeout_s`."""
    latest: dict[str, Any] = {}

    async def holds() -> bool:
        latest.update(await get_json(port))
        return condition(latest)

    await wait_until(holds, "the stats to match", timeout_s)
    return latest


async def status_fetch(service: Service, path: str, **kwargs: Any) -> HTTPResponse:
    """``GET path`` (or as `kwargs` say) on `service`'s status port; any status is returned."""
    url = f"http://127.0.0.1:{service.status_port}{path}"
    return await AsyncHTTPClient().fetch(url, raise_error=False, follow_redirects=False, **kwargs)


async def echo_once(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the echo `port`, check one echo of `data`, return the open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    assert await reader.readexactly(len(data)) == data
    return reader, writer


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers))


def udp_socket(
    family: socket.AddressFamily = socket.AF_INET, bind: tuple[str, int] | None = None
) -> socket.socket:
    """A non-blocking UDP client socket, bound to `bind` if given."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if bind is not None:
        sock.bind(bind)
    return sock


async def round_trip(sock: socket.socket, address: tuple[str, int], data: bytes) -> bytes:
    """Send one datagram of `data` from `sock` to `address`; return the datagram that comes back.

    `sock` is connected to `address` first, so that the kernel delivers datagrams from there
    only: a port just freed by another test may still be the target of a server's echoes.
    """
    sock.connect(address)
    sock.send(data)
    return await within_deadline(asyncio.get_running_loop().sock_recv(sock, 70000))


def reset_on_close(sock: socket.socket) -> None:
    """Make `sock.close()` send a TCP reset instead of an orderly EOF (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly `size` bytes from blocking `sock`; fail on an early EOF."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise AssertionError(f"EOF after {len(chunks)} of {size} bytes")
        chunks += chunk
    return bytes(chunks)


def recv_to_eof(sock: socket.socket) -> bytes:
    """Read from blocking `sock` until the peer's EOF; a reset raises."""
    chunks = bytearray()
    while chunk := sock.recv(65536):
        chunks += chunk
    return bytes(chunks)


def run_cli(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m echostat ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "echostat", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


_SOCKET_ACTIVATION = """
import os, sys
split = sys.argv.index("--")
fds = [os.dup(int(fd)) for fd in sys.argv[1:split]]
for index, fd in enumerate(fds):
    os.dup2(fd, 3 + index)
    os.set_inheritable(3 + index, True)  # dup2 onto itself keeps os.dup's close-on-exec
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[split + 1], sys.argv[split + 1 :])
"""
"""Puts the given descriptors at 3, 4, ... and execs the command as systemd would: same PID."""


class EchostatProcess:
    """``python -m echostat ARGS`` running in the background, its log lines collected.

    `fd_limit` sets its soft and hard RLIMIT_NOFILE (util-linux's prlimit then execs, so the
    PID is echostat's; no preexec_fn, unsafe in a threaded test run). `start` returns once
    the startup lines name the bound ports (a supervisor's, then a worker's, with workers);
    `stop` ends the process by PID if a test left it running, and is safe to call twice.
    `activation` passes listening sockets by name the way systemd socket activation does.
    `prefix` runs it through a command that execs it, such as ``ip netns exec NAME``.
    `cwd` is the working directory (the source tree, whose config.yaml is then read).
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        fd_limit: int | None = None,
        activation: Mapping[str, socket.socket] | None = None,
        prefix: Sequence[str] = (),
        cwd: Path = REPO,
    ) -> None:
        limit = ["prlimit", f"--nofile={fd_limit}:{fd_limit}", "--"] if fd_limit else []
        command = [sys.executable, "-m", "echostat", *args]
        fds: tuple[int, ...] = ()
        if activation:
            env = {**(env or {}), "LISTEN_FDS": str(len(activation))}
            env["LISTEN_FDNAMES"] = ":".join(activation)
            fds = tuple(sock.fileno() for sock in activation.values())
            command = [sys.executable, "-c", _SOCKET_ACTIVATION, *map(str, fds), "--", *command]
        self.process = subprocess.Popen(
            [*prefix, *limit, *command],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.ports: dict[str, int] = {}
        self.echo_port = 0
        self.status_port = 0

    def start(self) -> EchostatProcess:
        """Wait for the startup lines (with workers: until every worker serves) and read the
        real ports from them."""
        line = self.wait_for_line("status page on http://")
        status = _STATUS_PAGE.search(line)
        assert status, self.log
        self.status_port = int(status[1])
        workers = _WORKERS.search(line)
        echoing = line
        for _ in range(int(workers[1]) if workers else 0):
            echoing = self.wait_for_line("echoing:")
        listeners = echoing.split("echoing:", 1)[1].split(";", 1)[0]
        self.ports = {name: int(port) for name, port in _LISTENER.findall(listeners)}
        self.echo_port = self.ports.get("main", 0)
        return self

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

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

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
        assert self.process.stderr is not None
        self.process.stderr.close()
        return status

    def stop(self) -> None:
        """Kill the process if it still runs; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)


BAD_CONFIGS = [
    pytest.param(
        "status:\n  host: 127.0.0.1\n  prot: 7070\n",
        (),
        "config.yaml: status.prot: unknown key"
        " (allowed here: host, port, token, allowed_hosts, open_paths, max_connections,"
        " header_timeout_s, idle_timeout_s, max_streams, max_connections_per_ip,"
        " max_buffered_bytes)",
        id="unknown-key",
    ),
    pytest.param(
        'status:\n  port: "x"\n',
        (),
        "config.yaml: status.port: expected an integer 0..65535, got 'x'",
        id="string-for-number",
    ),
    pytest.param(
        "status:\n  port: true\n",
        (),
        "config.yaml: status.port: expected an integer 0..65535, got true",
        id="bool-for-number",
    ),
    pytest.param(
        "listeners:\n  - port: 70000\n",
        (),
        "config.yaml: listeners[0].port: expected an integer 0..65535, got 70000",
        id="port-out-of-range",
    ),
    pytest.param(
        None,
        (),
        "config.yaml: file not found (pass --config PATH)",
        id="missing-file",
    ),
    pytest.param(
        "status: [1, 2\n",
        (),
        "config.yaml: invalid YAML: expected ',' or ']', but got '<stream end>'"
        " at line 2, column 1",
        id="yaml-syntax-error",
    ),
    pytest.param(
        "status:\n  port: 1\nstatus:\n  port: 2\n",
        (),
        "config.yaml: invalid YAML: duplicate key 'status' at line 3, column 1",
        id="duplicate-key",
    ),
    pytest.param(
        "listeners: []\n",
        (),
        "config.yaml: listeners: expected a non-empty list, got an empty list",
        id="empty-listeners",
    ),
    pytest.param(
        "",
        ("--set", "listeners.0.port"),
        "--set 'listeners.0.port': expected KEY=VALUE, e.g. status.port=8080",
        id="set-without-value",
    ),
]
"""Config files (None: absent) and CLI flags that are wrong, with the one-line error each gives."""


def run_probe(*args: str, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python -m echostat probe ARGS`` to completion and capture its output; `prefix`
    runs it through a command that execs it, such as ``ip netns exec NAME``."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "echostat", "probe", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def probe_json(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the probe with ``--json``; its exit and its parsed JSON document."""
    done = run_probe(*args, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout)


def fetch_json(port: int, path: str = "/api/stats") -> Any:
    """GET ``http://127.0.0.1:port/path`` from synchronous code and decode its JSON body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE_S) as answer:
        return json.load(answer)


def wait_for(condition: Callable[[], T | None], what: str, timeout_s: float = DEADLINE_S) -> T:
    """The first true value of `condition()` from synchronous code, checked every 50 ms;
    fail naming `what` if there is none within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)  # how often the condition is checked, not a timing assumption
    return value


def start_probe(*args: str) -> subprocess.Popen[str]:
    """``python -m echostat probe ARGS`` in the background, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "echostat", "probe", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class RunningProbe:
    """``echostat probe TARGET --count 0 ARGS`` in the background (round trips every 0.1 s
    until Ctrl-C); `interrupt` sends SIGINT and returns its exit status, stdout and stderr."""

    def __init__(self, target: str, *args: str) -> None:
        self.process = start_probe(target, "--count", "0", "--interval", "0.1", *args)

    def read_line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def interrupt(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGINT)
        out, errors = self.process.communicate(timeout=DEADLINE_S)
        return self.process.returncode, out, errors


@dataclass(frozen=True)
class ProbeRun:
    """What ``echostat probe`` did: its exit status and what it printed."""

    status: int
    out: str
    err: str

    def report(self) -> Any:
        """The ``--json`` document it printed."""
        return json.loads(self.out)


def probe_here(capsys: pytest.CaptureFixture[str], *args: str) -> ProbeRun:
    """Run ``echostat probe ARGS`` in this process (no interpreter to start, so a run costs
    what the probe itself takes); no traceback may reach stderr."""
    try:
        status = echostat_main(["probe", *args])
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return ProbeRun(status, captured.out, captured.err)
