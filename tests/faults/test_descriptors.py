"""File descriptors: a limit too low for the config, running out of them, and 10,000 clients."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from echostat.server.resources import STATUS_RESERVE
from tests.faults.conftest import StartEchostat
from tests.faults.support import connect, connections, echo
from tests.helpers import DEADLINE_S, LOCAL_PORTS, REPO, EchostatProcess, get_json, stats_when

SMALL_MACHINE_LIMIT = 4096
"""A hard descriptor limit below the 10,000 connections of the default."""
FD_LIMIT = 64
FITTING_MAX_CONNECTIONS = 30
"""With the 32 descriptors echostat reserves, the most connections a 64-descriptor limit holds."""
EXHAUSTING_CLIENTS = 100
STATUS_HOLDERS = 60
"""Idle connections to the status page: more than the descriptors left, so they alone use up
every one (the status reserve included) and even accepting echo clients fails."""
IDLE_CLIENTS = 10_000
BATCH = 100
"""Clients connecting at once: within the listen backlog, so no SYN waits for a retry."""


def test_max_connections_beyond_fd_limit_exits_2(start_echostat: StartEchostat) -> None:
    """max_connections 1000 under a 64-descriptor limit exits 2 naming both numbers."""
    server = start_echostat(FD_LIMIT, ready=False, limits={"max_connections": 1000})

    assert server.wait() == 2
    message = "\n".join(server.log)
    assert "limits.max_connections: 1000 connections need 1032" in message
    assert f"the limit is {FD_LIMIT}" in message
    assert server.tracebacks() == []


async def test_default_max_connections_is_derived_from_a_low_hard_limit(
    start_echostat: StartEchostat,
) -> None:
    """Left out, max_connections is what a 4096-descriptor limit holds; the startup line
    says it was derived and /api/stats shows the number in force."""
    server = start_echostat(SMALL_MACHINE_LIMIT)

    fitting = SMALL_MACHINE_LIMIT - 32
    startup = next(line for line in server.log if "echoing:" in line)
    assert f"max_connections {fitting} (derived from the descriptor limit 4096)" in startup
    assert (await get_json(server.status_port))["limits"]["max_connections"] == fitting


def test_repository_config_starts_and_checks_under_a_low_hard_limit() -> None:
    """The untouched config.yaml starts under a 4096 limit, and --check-config agrees."""
    server = EchostatProcess(["--config", "config.yaml", *LOCAL_PORTS], fd_limit=4096)
    try:
        server.start()
    finally:
        server.stop()
    check = _check_config_under(SMALL_MACHINE_LIMIT)
    assert check.returncode == 0, check.stderr
    assert "max_connections 4064 (derived from the descriptor limit 4096)" in check.stdout


def test_check_config_refuses_what_the_limit_cannot_hold() -> None:
    """An explicit max_connections beyond the limit fails --check-config as it fails a start."""
    check = _check_config_under(SMALL_MACHINE_LIMIT, "--set", "limits.max_connections=10000")
    assert check.returncode == 2
    assert check.stdout == ""
    assert check.stderr == (
        "echostat: --set limits.max_connections: limits.max_connections: 10000 connections need"
        " 10032 file descriptors but the limit is 4096; lower max_connections to at most 4064,"
        " leave it out to derive it from the limit, or raise the limit (ulimit -n, LimitNOFILE=)\n"
    )


def _check_config_under(fd_limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``echostat --check-config`` on the repository's config.yaml under `fd_limit`."""
    limit = ["prlimit", f"--nofile={fd_limit}:{fd_limit}", "--"]
    return subprocess.run(
        [
            *limit,
            sys.executable,
            "-m",
            "echostat",
            "--config",
            "config.yaml",
            "--check-config",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


async def test_descriptor_exhaustion_backs_off_then_recovers(
    start_echostat: StartEchostat,
) -> None:
    """Out of descriptors: little CPU, few log lines, and service resumes once fds free up."""
    server = start_echostat(
        FD_LIMIT,
        limits={"max_connections": FITTING_MAX_CONNECTIONS, "max_connections_per_ip": 0},
    )
    lines_before = len(server.log)
    holders = [await connect(server.status_port) for _ in range(STATUS_HOLDERS)]
    clients = [await connect(server.echo_port) for _ in range(EXHAUSTING_CLIENTS)]
    server.wait_for_line("cannot accept")

    cpu_before = server.cpu_seconds()
    await asyncio.sleep(3.0)  # the measurement window itself, not a wait for anything
    cpu_used = server.cpu_seconds() - cpu_before
    assert cpu_used < 0.5, f"{cpu_used:.2f} s of CPU in 3 s while out of descriptors"
    new_lines = server.log[lines_before:]
    assert len(new_lines) <= 4 and all(" WARNING " in line for line in new_lines), new_lines

    for sock in holders + clients:
        sock.close()
    await stats_when(server.status_port, lambda s: _all_ended(s, EXHAUSTING_CLIENTS))
    fresh = [await connect(server.echo_port) for _ in range(FITTING_MAX_CONNECTIONS)]
    for sock in fresh:
        assert await echo(sock, b"recovered") == b"recovered"
    assert (await connections(server.status_port))["active"] == FITTING_MAX_CONNECTIONS
    assert server.tracebacks() == []
    for sock in fresh:
        sock.close()


async def test_page_answers_while_echo_clients_hold_every_descriptor(
    start_echostat: StartEchostat,
) -> None:
    """With the limit lowered to 64 at run time and 100 echo clients, / and /api/stats each
    answer within a second while the clients stay connected; raised again, echo resumes."""
    server = start_echostat(limits={"max_connections_per_ip": 0})
    raised = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    _set_soft_limit(server.pid, FD_LIMIT)
    clients = [await connect(server.echo_port) for _ in range(EXHAUSTING_CLIENTS)]
    try:
        document = await stats_when(
            server.status_port, lambda s: _all_seen(s, EXHAUSTING_CLIENTS), timeout_s=DEADLINE_S
        )
        kept = document["connections"]["active"]
        refused = document["connections"]["rejected_by_reason"]["descriptor_limit"]
        assert kept + refused == EXHAUSTING_CLIENTS and kept > 0 and refused > 0, document
        assert server.fd_count() >= FD_LIMIT - STATUS_RESERVE

        for path in ("/api/stats", "/"):
            started = time.monotonic()
            response = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{server.status_port}{path}", request_timeout=1.0
            )
            assert response.code == 200
            assert time.monotonic() - started < 1.0

        _set_soft_limit(server.pid, raised)
        fresh = [await connect(server.echo_port) for _ in range(FITTING_MAX_CONNECTIONS)]
        clients += fresh
        for sock in fresh:
            assert await echo(sock, b"recovered") == b"recovered"
        counts = await connections(server.status_port)
        assert counts["active"] == kept + FITTING_MAX_CONNECTIONS
        assert counts["rejected"] == refused
        assert server.tracebacks() == []
    finally:
        for sock in clients:
            sock.close()


def _set_soft_limit(pid: int, soft: int) -> None:
    """Change the soft RLIMIT_NOFILE of process `pid` from outside, as an operator would."""
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True, timeout=DEADLINE_S)


def _all_seen(document: dict[str, Any], clients: int) -> bool:
    """Whether each of `clients` was accepted or refused."""
    counts = document["connections"]
    return bool(counts["accepted"] + counts["rejected"] == clients)


def _all_ended(document: dict[str, Any], clients: int) -> bool:
    """Whether all `clients` were accepted or rejected, and none is open any more."""
    counts = document["connections"]
    return bool(counts["accepted"] + counts["rejected"] == clients and counts["active"] == 0)


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Raise this process's RLIMIT_NOFILE so it can hold `IDLE_CLIENTS` sockets; restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CLIENTS + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        # Raising the hard limit needs root (as in CI); anywhere else this fails loudly.
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_ten_thousand_idle_connections_all_echo(
    start_echostat: StartEchostat, many_descriptors: None
) -> None:
    """10,000 open connections each echo, and /api/stats answers with all of them active."""
    server = start_echostat(limits={"max_connections": IDLE_CLIENTS, "max_connections_per_ip": 0})
    clients: list[socket.socket] = []
    try:
        for _ in range(0, IDLE_CLIENTS, BATCH):
            clients += await asyncio.gather(*(connect(server.echo_port) for _ in range(BATCH)))
        for start in range(0, IDLE_CLIENTS, BATCH):
            batch = clients[start : start + BATCH]
            replies = await asyncio.gather(*(echo(sock, b"%d" % id(sock)) for sock in batch))
            assert replies == [b"%d" % id(sock) for sock in batch]

        counts = await connections(server.status_port)
        assert (counts["active"], counts["rejected"]) == (IDLE_CLIENTS, 0)
    finally:
        for sock in clients:
            sock.close()
