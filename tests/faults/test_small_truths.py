"""What the README promises in passing: ``::`` serves both families, API errors are JSON,
TLS 1.2 offers only forward-secret AEAD suites."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.faults.conftest import StartService
from tests.faults.test_tls import tls_listener
from tests.helpers import DEADLINE_S, require_program, round_trip, status_fetch, udp_socket

TOKEN = "dual-stack-token-0123456789"


async def echo_over(family: socket.AddressFamily, host: str, port: int) -> bytes:
    """One echo of ``hello`` over `family` to `host:port`."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    with sock:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, b"hello")
        return await asyncio.wait_for(loop.sock_recv(sock, 5), DEADLINE_S)


async def test_double_colon_serves_ipv4_and_ipv6(start_service: StartService) -> None:
    """TCP and UDP listeners and the status page on ``::`` answer over 127.0.0.1 and ::1."""
    service = await start_service(
        listeners=[
            {"name": "main", "host": "::", "port": 0},
            {"name": "udp", "host": "::", "port": 0, "protocol": "udp"},
        ],
        status={"host": "::", "port": 0, "token": TOKEN},
    )
    port = service.echo_port("main")
    assert await echo_over(socket.AF_INET, "127.0.0.1", port) == b"hello"
    assert await echo_over(socket.AF_INET6, "::1", port) == b"hello"
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with udp_socket(family) as client:
            assert await round_trip(client, (host, service.echo_port("udp")), b"dgram") == b"dgram"
    for host in ("127.0.0.1", "[::1]"):
        response = await AsyncHTTPClient().fetch(
            f"http://{host}:{service.status_port}/api/stats",
            headers={"Authorization": f"Bearer {TOKEN}"},
            request_timeout=DEADLINE_S,
        )
        assert json.loads(response.body)["connections"]["accepted"] == 2


@pytest.mark.parametrize(
    ("path", "code", "error"),
    [
        ("/api/connections?limit=abc", 400, "limit must be an integer 1..1000"),
        ("/api/no-such-thing", 404, "Not Found"),
    ],
)
async def test_api_errors_are_json(
    start_service: StartService, path: str, code: int, error: str
) -> None:
    """Errors under /api/ answer with their status code and ``{"error": ...}`` as JSON."""
    service = await start_service()
    response = await status_fetch(service, path)
    assert response.code == code
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body) == {"error": error}


async def test_api_refusals_are_json(start_service: StartService) -> None:
    """401 without the token and 405 for a wrong method are JSON under /api/ too."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "token": TOKEN})
    unauthorized = await status_fetch(service, "/api/stats")
    assert unauthorized.code == 401
    assert "token" in json.loads(unauthorized.body)["error"]
    wrong_method = await status_fetch(
        service, "/api/stats", method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (wrong_method.code, json.loads(wrong_method.body)) == (
        405,
        {"error": "Method Not Allowed"},
    )


def s_client(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` against 127.0.0.1:`port` with `options`, no input."""
    openssl = require_program("openssl", "openssl")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", *options],
        input="",
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("options", "accepted"),
    [
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"), False),
        (("-tls1_2", "-cipher", "AES128-GCM-SHA256"), False),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), True),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), True),
        (("-tls1_3",), True),
    ],
    ids=["cbc", "no-forward-secrecy", "ecdhe-gcm", "ecdhe-chacha20", "tls1.3"],
)
async def test_tls_suites_are_forward_secret_aead(
    start_service: StartService,
    tls_files: dict[str, Path],
    options: tuple[str, ...],
    accepted: bool,
) -> None:
    """TLS 1.2 refuses CBC and static-RSA-key suites, accepts ECDHE with GCM or ChaCha20;
    TLS 1.3 is unchanged."""
    service = await start_service(listeners=tls_listener(tls_files["cert"], tls_files["key"]))
    port = service.echo_port("tls")
    result = await asyncio.get_running_loop().run_in_executor(None, s_client, port, *options)
    negotiated = "Cipher is (NONE)" not in result.stdout and result.returncode == 0
    assert negotiated == accepted, result.stdout + result.stderr
