"""TLS listeners facing what isn't a modern TLS client, and TLS files that can't be used."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from echostat.server.echo import EchoProtocol
from echostat.service import Service
from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import connect, read_until_closed
from tests.helpers import (
    DEADLINE_S,
    EchostatProcess,
    fetch_json,
    payload,
    reset_on_close,
    stats_when,
    wait_until,
)

HANDSHAKE_TIMEOUT_S = 1.0
SHORT_CONNECTIONS = 50


def tls_listener(
    cert: Path, key: Path, handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The `listeners` section of one TLS listener named ``tls`` on a free loopback port."""
    tls = {"cert": str(cert), "key": str(key), "handshake_timeout_s": handshake_timeout_s}
    return [{"name": "tls", "host": "127.0.0.1", "port": 0, "tls": tls}]


@pytest.fixture
def tls_service(
    io_loop: IOLoop, start_service: StartService, tls_files: dict[str, Path]
) -> Service:
    """A started service whose only listener speaks TLS."""
    listeners = tls_listener(tls_files["cert"], tls_files["key"])
    service: Service = io_loop.run_sync(lambda: start_service(listeners=listeners))
    return service


async def send_plaintext(sock: socket.socket) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_until_closed(sock)


async def scan_port(sock: socket.socket) -> None:
    """Connect and close at once, as a port scanner does."""


async def offer_old_tls(sock: socket.socket) -> None:
    """Offer only TLS 1.0 and 1.1, which the listener's 1.2 minimum refuses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    # The refusal is a protocol-version alert, or a reset when the close overtakes it.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1")


async def stall_handshake(sock: socket.socket) -> None:
    """Send nothing; the server must wait for handshake_timeout_s, then give up."""
    started = time.monotonic()
    await read_until_closed(sock)
    # The server's timer starts at its accept, which can run before this coroutine resumes
    # from connect on a busy machine; half the timeout still tells waiting from closing at once.
    assert time.monotonic() - started >= HANDSHAKE_TIMEOUT_S / 2


@pytest.mark.parametrize("misbehave", [send_plaintext, scan_port, offer_old_tls, stall_handshake])
async def test_bad_tls_client_is_closed_and_counted_quietly(
    tls_service: Service,
    misbehave: Callable[[socket.socket], Awaitable[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Plaintext, a scan, old TLS or a stalled handshake: closed, counted, no traceback."""
    caplog.set_level(logging.DEBUG)
    sock = await connect(tls_service.echo_port("tls"))
    with sock:
        await asyncio.wait_for(misbehave(sock), DEADLINE_S)

    document = await stats_when(tls_service.status_port, lambda s: s["connections"]["active"] == 0)
    assert document["connections"]["closed_by_server"] == {"setup_failed": 1}
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert noisy == []


async def test_a_handshake_stalled_past_idle_timeout_is_closed_not_echoed_later(
    start_service: StartService, tls_files: dict[str, Path]
) -> None:
    """A client that says nothing for longer than idle_timeout_s, well within the handshake
    timeout, is closed then as an idle connection: finishing its handshake afterwards gets
    no echo, so no connection the registry has counted closed (and no longer limits) echoes."""
    service = await start_service(
        listeners=tls_listener(tls_files["cert"], tls_files["key"], handshake_timeout_s=60),
        limits={"idle_timeout_s": 1},
    )
    with await connect(service.echo_port("tls")) as sock:
        document = await stats_when(
            service.status_port, lambda s: s["connections"]["closed_by_server"] != {}
        )
        assert document["connections"]["closed_by_server"] == {"idle_timeout": 1}
        context = ssl.create_default_context(cafile=str(tls_files["cert"]))
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1"),
                DEADLINE_S,
            )
        except (ssl.SSLError, ConnectionError):
            pass
        else:
            writer.transport.abort()
            raise AssertionError("a connection counted closed finished its handshake")
    assert service.registry.active == 0


async def test_tls_client_gets_exact_echo(tls_service: Service, tls_files: dict[str, Path]) -> None:
    """A TLS 1.2+ client that trusts the certificate gets every byte back."""
    context = ssl.create_default_context(cafile=str(tls_files["cert"]))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_service.echo_port("tls"), ssl=context
    )
    data = payload(300_000)
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), DEADLINE_S) == data
    writer.close()
    await writer.wait_closed()
    document = await stats_when(tls_service.status_port, lambda s: s["connections"]["active"] == 0)
    assert document["connections"]["closed_by_server"] == {}
    assert document["bytes"] == {"received": len(data), "sent": len(data), "buffered": 0}


async def test_short_tls_connections_are_freed_when_they_close(
    tls_service: Service, tls_files: dict[str, Path]
) -> None:
    """50 TLS connections that echo 64 bytes and close, path quality on: with the cyclic
    garbage collector off, not one of their connection objects is left alive, so each was
    freed (with its TLS buffers) when it closed, not by a later collection."""
    context = ssl.create_default_context(cafile=str(tls_files["cert"]))
    port = tls_service.echo_port("tls")
    message = payload(64)
    gc.collect()
    gc.disable()
    try:
        for _ in range(SHORT_CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(message)
            assert await asyncio.wait_for(reader.readexactly(len(message)), DEADLINE_S) == message
            writer.close()
            await writer.wait_closed()
        await wait_until(
            lambda: tls_service.registry.closed == SHORT_CONNECTIONS, "every connection closed"
        )
        live = sum(isinstance(each, EchoProtocol) for each in gc.get_objects())
    finally:
        gc.enable()
    assert live == 0


@pytest.mark.parametrize("ending", ["eof", "reset"])
async def test_a_short_tls_connection_logs_its_final_path_figures(
    start_service: StartService, tls_files: dict[str, Path], tmp_path: Path, ending: str
) -> None:
    """A TLS connection that echoes and closes (orderly or with a reset) long before the next
    TCP_INFO read is due still gets its RTT and retransmits in the access log, as a plain
    connection does, although its socket is closed before its close is counted."""
    log = tmp_path / "access.log"
    service = await start_service(
        listeners=tls_listener(tls_files["cert"], tls_files["key"]),
        access_log={"enabled": True, "format": "json", "path": str(log)},
    )
    sock = await connect(service.echo_port("tls"))
    context = ssl.create_default_context(cafile=str(tls_files["cert"]))
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=context, server_hostname="127.0.0.1"
    )
    message = payload(64)
    writer.write(message)
    assert await asyncio.wait_for(reader.readexactly(len(message)), DEADLINE_S) == message
    if ending == "reset":
        reset_on_close(sock)
        writer.transport.abort()
    else:
        writer.close()
        await writer.wait_closed()
    await wait_until(lambda: log.exists() and log.read_text().endswith("\n"), "the close line")
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["tls"] is not None
    assert record["rtt_ms"] > 0 and record["retransmits"] == 0, record


def test_missing_certificate_exits_2_naming_the_key(
    start_echostat: StartEchostat, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    """A cert path that doesn't exist exits 2 naming listeners[0].tls.cert."""
    missing = tmp_path / "missing.pem"
    server = start_echostat(ready=False, listeners=tls_listener(missing, tls_files["key"]))

    assert server.wait() == 2
    assert f"listeners[0].tls.cert: file not found: {missing}" in "\n".join(server.log)


def test_mismatched_key_exits_2_naming_the_key(
    start_echostat: StartEchostat, tls_files: dict[str, Path]
) -> None:
    """A key that doesn't belong to the certificate exits 2 naming the TLS key."""
    other_key = tls_files["other_key"]
    server = start_echostat(ready=False, listeners=tls_listener(tls_files["cert"], other_key))

    assert server.wait() == 2
    message = "\n".join(server.log)
    assert "listeners[0].tls" in message and f"with key {other_key}" in message, message


def test_a_worker_that_keeps_failing_to_start_waits_longer_each_time(
    start_echostat: StartEchostat, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    """Each restart of a worker that dies as it starts waits twice as long as the last (up to
    30 s), instead of two log lines every second for ever; SIGTERM ends the wait. The worker
    exits 2 with one line naming the key, not a traceback, under its module's logger name
    (it runs as ``python -m``, whose module is ``__main__``)."""
    server, cert = kill_a_worker_without_its_certificate(start_echostat, tls_files, tmp_path)
    line = server.wait_for_line(f"tls.cert: file not found: {cert}")
    assert " ERROR echostat.server.worker: worker " in line, line
    pauses = [
        float(server.wait_for_line("died (exit status 2); restarting it in ").split()[-2])
        for _ in range(2)
    ]
    assert pauses[1] == 2 * pauses[0] <= 30, pauses
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not [line for line in server.log if "did not exit" in line], server.log
    assert server.tracebacks() == [], server.log


def kill_a_worker_without_its_certificate(
    start_echostat: StartEchostat, tls_files: dict[str, Path], tmp_path: Path
) -> tuple[EchostatProcess, Path]:
    """Two TLS workers; their certificate moved away; one of them killed (restarted at once,
    at once or after a pause). Returns echostat and the certificate's path."""
    cert = tmp_path / "cert.pem"
    cert.write_bytes(tls_files["cert"].read_bytes())
    server = start_echostat(listeners=tls_listener(cert, tls_files["key"]), workers=2)
    cert.unlink()
    worker = fetch_json(server.status_port)["workers"][0]["pid"]
    os.kill(worker, signal.SIGKILL)
    server.wait_for_line(f"(pid {worker}) died (killed by SIGKILL)")
    return server, cert
