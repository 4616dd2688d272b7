"""Two echostat instances behind a real HAProxy with PROXY protocol v2 and /readyz checks."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StartEchostat
from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    EchostatProcess,
    close_all,
    echo_once,
    get_json,
    payload,
    require_program,
    stats_when,
    within_deadline,
)

BEHIND_HAPROXY = (
    *LOCAL_PORTS,
    "--set",
    "listeners.0.proxy_protocol=true",
    "--set",
    "listeners.0.proxy_trusted=[127.0.0.0/8]",
    "--set",
    "limits.max_connections_per_ip=0",
    "--set",
    "shutdown_delay_s=3",
    "--set",
    "shutdown_grace_s=3",
)
"""Instances that believe HAProxy's header and stay reachable for 3 s after SIGTERM, longer
than HAProxy needs to see /readyz fail twice at 300 ms intervals."""

HAPROXY_CONFIG = """
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend echo
    bind fd@{frontend_fd}
    default_backend echostat
backend echostat
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server send-proxy-v2 check inter 300ms fall 2 rise 1
{servers}
"""


@pytest.fixture
def fleet(start_echostat: StartEchostat) -> tuple[EchostatProcess, EchostatProcess]:
    return start_echostat(*BEHIND_HAPROXY), start_echostat(*BEHIND_HAPROXY)


@pytest.fixture
def haproxy(fleet: tuple[EchostatProcess, EchostatProcess], tmp_path: Path) -> Iterator[int]:
    """HAProxy in the foreground in front of `fleet`; yields its frontend port.

    The frontend socket is bound here (port 0) and handed over as ``fd@N``.
    """
    program = require_program("haproxy", "haproxy")
    frontend = socket.socket()
    frontend.bind(("127.0.0.1", 0))
    frontend.listen(1024)
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{echostat.echo_port} check port {echostat.status_port}"
        for name, echostat in zip("ab", fleet, strict=True)
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(frontend_fd=frontend.fileno(), servers=servers))
    process = subprocess.Popen(
        [program, "-db", "-f", str(config)],
        pass_fds=(frontend.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield frontend.getsockname()[1]
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
        frontend.close()


async def total_active(fleet: tuple[EchostatProcess, EchostatProcess]) -> int:
    documents = [await get_json(e.status_port) for e in fleet]
    return sum(d["connections"]["active"] for d in documents)


async def test_clients_through_haproxy_echo_and_both_pages_count_them(
    fleet: tuple[EchostatProcess, EchostatProcess], haproxy: int
) -> None:
    """100 clients through HAProxy: exact echoes; the two instances together count all 100,
    each under its own 127.0.0.1 address and port from the PROXY header, HAProxy as via."""
    data = [payload(2048, seed=n) for n in range(100)]
    clients = await within_deadline(asyncio.gather(*(echo_once(haproxy, d) for d in data)))
    client_ports = {writer.get_extra_info("sockname")[1] for _, writer in clients}
    for echostat in fleet:
        await stats_when(
            echostat.status_port, lambda s: s["bytes"]["sent"] == s["bytes"]["received"]
        )
    rows = []
    for echostat in fleet:
        table = await get_json(echostat.status_port, "/api/connections?limit=1000")
        rows += table["connections"]
    assert len(rows) == 100
    assert all(row["peer"].startswith("127.0.0.1:") for row in rows)
    assert {int(row["peer"].rsplit(":", 1)[1]) for row in rows} == client_ports
    assert all(row["via"] and row["via"] != row["peer"] for row in rows)
    assert all(row["via"].startswith("127.0.0.1:") for row in rows)
    stats = [await get_json(e.status_port) for e in fleet]
    assert all(s["connections"]["active"] > 0 for s in stats), "both instances serve"
    assert sum(s["bytes"]["received"] for s in stats) == sum(map(len, data))
    await close_all([writer for _, writer in clients])


async def test_sigterm_drains_one_instance_while_new_connections_keep_succeeding(
    fleet: tuple[EchostatProcess, EchostatProcess], haproxy: int
) -> None:
    """New clients connect all through one instance's shutdown: zero failures. /readyz turns
    503 at once, HAProxy stops sending it clients, and only then do its listeners close."""
    draining, staying = fleet
    failures: list[str] = []
    served = 0
    stop_at = time.monotonic() + 60.0

    async def keep_connecting() -> None:
        nonlocal served
        seed = 0
        while (time.monotonic() < stop_at and draining.process.poll() is None) or served < 20:
            data = payload(1024, seed=seed)
            seed += 1
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", haproxy), DEADLINE_S
                )
                writer.write(data)
                echoed = await asyncio.wait_for(reader.readexactly(len(data)), DEADLINE_S)
                writer.close()
                await writer.wait_closed()
                if echoed != data:
                    failures.append(f"client {seed}: wrong echo")
                served += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failures.append(f"client {seed}: {exc!r}")

    await stats_when(staying.status_port, lambda s: s["ready"])
    workers = [asyncio.ensure_future(keep_connecting()) for _ in range(4)]
    await stats_when(draining.status_port, lambda s: s["connections"]["accepted"] >= 5)
    draining.signal(signal.SIGTERM)
    accepted_before = (await get_json(staying.status_port))["connections"]["accepted"]
    await within_deadline(asyncio.gather(*workers), timeout_s=90)
    assert await asyncio.to_thread(draining.wait) == 0
    assert failures == []
    accepted_after = (await get_json(staying.status_port))["connections"]["accepted"]
    assert accepted_after > accepted_before, "the other instance took the new clients"
    assert served > 20
