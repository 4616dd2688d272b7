"""The access log: exactly one line per closed or rejected connection, in text and JSON,
and a new file after log rotation (SIGUSR1)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from echostat.server.access_log import FIELDS
from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import connect, echo, read_until_closed
from tests.helpers import half_close_echo, payload, reset_on_close, stats_when, wait_until

FORMATS = ["text", "json"]


def parse(line: str, kind: str) -> dict[str, Any]:
    """One access log line as a dict, from either format; text values stay strings."""
    if kind == "json":
        record: dict[str, Any] = json.loads(line)
        assert list(record) == list(FIELDS)
        return record
    time, event, peer, *pairs = line.split(" ")
    fields = dict(pair.split("=", 1) for pair in pairs)
    assert list(fields) == list(FIELDS[3:])
    return {"time": time, "event": event, "peer": peer, **fields}


def records(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [parse(line, kind) for line in path.read_text().splitlines()]


async def lines_when(path: Path, kind: str, count: int) -> list[dict[str, Any]]:
    """The log's records once it has `count` lines."""
    await wait_until(lambda: len(records(path, kind)) >= count, f"{count} access log lines")
    return records(path, kind)


def log_section(path: Path, kind: str) -> dict[str, Any]:
    return {"enabled": True, "format": kind, "path": str(path)}


@pytest.mark.parametrize("kind", FORMATS)
async def test_eof_and_reset_clients_get_one_line_each_with_their_bytes(
    start_service: StartService, tmp_path: Path, kind: str
) -> None:
    """A half-closing client and a resetting one: one close line each, bytes as sent."""
    log = tmp_path / "access.log"
    service = await start_service(access_log=log_section(log, kind))
    port = service.echo_port("main")
    data = payload(100_000)
    assert await half_close_echo(port, data) == data
    with await connect(port) as sock:
        assert await echo(sock, b"x" * 777) == b"x" * 777
        reset_on_close(sock)
    await wait_until(lambda: service.registry.closed == 2, "both closes")
    eof, reset = await lines_when(log, kind, 2)
    assert len(records(log, kind)) == 2
    assert (eof["event"], eof["closed_by"], eof["reason"]) == ("close", "client", "client_eof")
    assert str(eof["bytes_received"]) == str(eof["bytes_sent"]) == "100000"
    assert (reset["closed_by"], reset["reason"]) == ("client", "client_reset")
    assert str(reset["bytes_received"]) == "777"
    assert eof["listener"] == "main" and eof["peer"].startswith("127.0.0.1:")
    assert float(eof["rtt_ms"]) > 0
    assert int(eof["retransmits"]) == 0  # loopback drops nothing
    assert eof["tls"] in (None, "-") and eof["via"] in (None, "-")


@pytest.mark.parametrize("kind", FORMATS)
async def test_idle_timeout_is_logged_as_closed_by_server(
    start_service: StartService, tmp_path: Path, kind: str
) -> None:
    """A client closed for idleness gets one line: closed by the server, idle_timeout."""
    log = tmp_path / "access.log"
    service = await start_service(access_log=log_section(log, kind), limits={"idle_timeout_s": 1})
    with await connect(service.echo_port("main")) as sock:
        assert await echo(sock, b"hi") == b"hi"
        assert await asyncio.wait_for(read_until_closed(sock), 30) == 0
    (line,) = await lines_when(log, kind, 1)
    assert (line["closed_by"], line["reason"]) == ("server", "idle_timeout")
    assert str(line["bytes_received"]) == "2"
    assert float(line["duration_s"]) >= 1.0


@pytest.mark.parametrize("kind", FORMATS)
async def test_rejected_connection_gets_a_line_with_its_reason(
    start_service: StartService, tmp_path: Path, kind: str
) -> None:
    """Over the per-IP limit: the second client is logged as rejected, the first as closed."""
    log = tmp_path / "access.log"
    service = await start_service(
        access_log=log_section(log, kind), limits={"max_connections_per_ip": 1}
    )
    port = service.echo_port("main")
    with await connect(port) as first:
        assert await echo(first, b"a") == b"a"
        with await connect(port) as second:
            second_port = second.getsockname()[1]
            assert await asyncio.wait_for(read_until_closed(second), 30) == 0
        (rejected,) = await lines_when(log, kind, 1)
    assert rejected["event"] == "reject"
    assert (rejected["closed_by"], rejected["reason"]) == ("server", "max_connections_per_ip")
    assert str(rejected["bytes_received"]) == "0"
    assert rejected["peer"] == f"127.0.0.1:{second_port}"
    closed = (await lines_when(log, kind, 2))[1]
    assert (closed["event"], str(closed["bytes_received"])) == ("close", "1")


async def test_a_client_its_balancer_named_is_rejected_with_the_balancer_as_via(
    start_service: StartService, tmp_path: Path
) -> None:
    """Over the per-IP limit behind a balancer: the reject line names the client from the
    PROXY header as peer and the balancer as via, as a close line does."""
    log = tmp_path / "access.log"
    balancer = {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]}
    service = await start_service(
        listeners=[{"name": "lb", "host": "127.0.0.1", "port": 0, **balancer}],
        access_log=log_section(log, "json"),
        limits={"max_connections_per_ip": 1},
    )
    port = service.echo_port("lb")
    header = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 7007\r\n"
    send = asyncio.get_running_loop().sock_sendall
    with await connect(port) as first:
        await send(first, header)
        assert await echo(first, b"a") == b"a"
        with await connect(port) as second:
            balancer_port = second.getsockname()[1]
            await send(second, header)
            assert await asyncio.wait_for(read_until_closed(second), 30) == 0
        (rejected,) = await lines_when(log, "json", 1)
    assert (rejected["event"], rejected["reason"]) == ("reject", "max_connections_per_ip")
    assert rejected["peer"] == "198.51.100.7:40000"
    assert rejected["via"] == f"127.0.0.1:{balancer_port}"


async def test_sigusr1_reopens_the_log_after_it_was_moved(
    start_echostat: StartEchostat, tmp_path: Path
) -> None:
    """Rotation: move the file away, send SIGUSR1; the next line goes to a new file."""
    log = tmp_path / "access.log"
    server = start_echostat(access_log=log_section(log, "json"))
    assert await half_close_echo(server.echo_port, b"before") == b"before"
    await lines_when(log, "json", 1)
    rotated = tmp_path / "access.log.1"
    os.rename(log, rotated)
    server.signal(signal.SIGUSR1)
    await asyncio.to_thread(server.wait_for_line, "access log reopened")
    assert await half_close_echo(server.echo_port, b"after!") == b"after!"
    (after,) = await lines_when(log, "json", 1)
    assert after["bytes_received"] == 6
    assert [r["bytes_received"] for r in records(rotated, "json")] == [len(b"before")]


async def test_unwritable_log_path_is_a_config_error(
    start_echostat: StartEchostat, tmp_path: Path
) -> None:
    """A path in a missing directory stops the start with exit 2 and names the key."""
    missing = tmp_path / "no-such-dir" / "access.log"
    server = start_echostat(ready=False, access_log=log_section(missing, "text"))
    assert await asyncio.to_thread(server.wait) == 2
    assert any(f"access_log.path: cannot open {missing}" in line for line in server.log)


async def test_full_disk_is_counted_and_neither_echo_nor_stop_notices(
    start_echostat: StartEchostat,
) -> None:
    """An access log on /dev/full: every echo and refusal still works, the failed lines are
    counted in /api/stats and /metrics with one warning naming the path, and a stop with a
    client still connected ends as soon as it leaves, with exit 0 and no traceback."""
    server = start_echostat(
        access_log=log_section(Path("/dev/full"), "text"),
        limits={"max_connections_per_ip": 1},
        shutdown_grace_s=60,
    )
    for index in range(5):
        data = f"echo {index}".encode()
        assert await half_close_echo(server.echo_port, data) == data
    with await connect(server.echo_port) as first:
        assert await echo(first, b"a") == b"a"
        with await connect(server.echo_port) as refused:
            assert await asyncio.wait_for(read_until_closed(refused), 30) == 0
    stats = await stats_when(server.status_port, lambda s: s["access_log"]["errors"] >= 7)
    assert stats["connections"]["rejected_by_reason"] == {"max_connections_per_ip": 1}
    metrics = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.status_port}/metrics")
    errors = re.search(rb"^echostat_access_log_errors_total (\S+)$", metrics.body, re.MULTILINE)
    assert errors and float(errors[1]) >= 7
    with await connect(server.echo_port) as last:
        assert await echo(last, b"z") == b"z"
        server.signal(signal.SIGTERM)
        await asyncio.to_thread(server.wait_for_line, "shutting down")
    assert await asyncio.to_thread(server.wait, 30) == 0  # well inside the 60 s grace period
    warnings = [line for line in server.log if "access log /dev/full: cannot write" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], server.log
    assert not server.tracebacks() and not [line for line in server.log if "ERROR" in line]
