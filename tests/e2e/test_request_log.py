"""The status side's request log: refused requests are an operator's concern, not a flood."""

from __future__ import annotations

import signal
import socket

from tornado.httpclient import AsyncHTTPClient

from tests.e2e.conftest import StartEchostat
from tests.helpers import DEADLINE_S, LOCAL_PORTS, recv_to_eof

REFUSED = [
    ("/api/stats", {"Host": "attacker.example"}, 421),
    ("/no-such-page", {}, 404),
    ("/api/connections?limit=abc", {}, 400),
]


async def test_refused_requests_log_one_warning_not_one_each(
    start_echostat: StartEchostat,
) -> None:
    """Sixty requests answered 4xx (a foreign Host name, a wrong path, a bad query) log one
    warning: whoever reaches the status port can't fill the log with lines."""
    echostat = start_echostat(*LOCAL_PORTS)
    client = AsyncHTTPClient()
    for _ in range(20):
        for path, headers, code in REFUSED:
            url = f"http://127.0.0.1:{echostat.status_port}{path}"
            response = await client.fetch(url, headers=headers, raise_error=False)
            assert response.code == code
    echostat.signal(signal.SIGHUP)  # its line comes after every request's
    echostat.wait_for_line("configuration reloaded")
    requests = [line for line in echostat.log if "tornado.access" in line]
    assert len(requests) == 1, requests
    assert "WARNING tornado.access: 421 GET /api/stats (127.0.0.1)" in requests[0]


async def test_debug_logs_every_request(start_echostat: StartEchostat) -> None:
    """With ``log_level: debug`` each request has its line, answered or refused."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "log_level=debug")
    client = AsyncHTTPClient()
    for path, headers, code in [("/healthz", {}, 200), *REFUSED]:
        url = f"http://127.0.0.1:{echostat.status_port}{path}"
        assert (await client.fetch(url, headers=headers, raise_error=False)).code == code
    echostat.signal(signal.SIGHUP)
    echostat.wait_for_line("configuration reloaded")
    requests = [line for line in echostat.log if "tornado.access" in line]
    assert [line.split("tornado.access: ")[1].split(" (")[0] for line in requests] == [
        "200 GET /healthz",
        "421 GET /api/stats",
        "404 GET /no-such-page",
        "400 GET /api/connections?limit=abc",
    ]


MISTAKES = [
    b"GET /static/../config.yaml HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /static/vendor HTTP/1.1\r\nHost: localhost\r\n",
    b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n",
    b"NONSENSE\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n",
]
"""Requests Tornado answers with a line of its own (tornado.general) besides the request log:
a path outside the page's files, a folder, a form without its XSRF field, a request line that
isn't one, a Content-Length that isn't a number."""


async def test_malformed_and_refused_requests_do_not_flood_tornados_own_log(
    start_echostat: StartEchostat,
) -> None:
    """Fifty requests a scanner might send log a line or two, not a line each: Tornado's
    own lines about them are left to the rate-limited request log, or rate-limited too."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "status.token=correct-horse-battery-staple")
    for _ in range(10):
        for request in MISTAKES:
            with socket.create_connection(("127.0.0.1", echostat.status_port), DEADLINE_S) as sock:
                sock.sendall(request + b"Connection: close\r\n\r\n")
                answer = recv_to_eof(sock)
                assert answer.startswith(b"HTTP/1.1 4"), (request, answer)
    echostat.signal(signal.SIGHUP)  # its line comes after every request's
    echostat.wait_for_line("configuration reloaded")
    tornado_lines = [line for line in echostat.log if " tornado." in line]
    assert len(tornado_lines) <= 3, tornado_lines
