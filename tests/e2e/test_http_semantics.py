"""The status side speaks HTTP as monitors and scripts expect: HEAD, and 405 with Allow."""

from __future__ import annotations

import pytest
from tornado.httpclient import HTTPResponse

from echostat.server.config import Config, StatusConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import status_fetch

TOKEN = "correct-horse-battery-staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def config() -> Config:
    return loopback_config(
        status=StatusConfig(
            host="127.0.0.1", port=0, token=TOKEN, open_paths=("/healthz", "/readyz", "/metrics")
        )
    )


@pytest.mark.parametrize(
    "path",
    [
        *("/healthz", "/readyz", "/metrics", "/api/stats", "/api/connections", "/api/peers"),
        *("/api/history", "/api/watch", "/login", "/", "/api/nothing"),
    ],
)
async def test_head_answers_as_get_does_without_a_body(service: Service, path: str) -> None:
    """HEAD, which uptime monitors and ``curl -I`` send, gets GET's status and headers with
    no body, instead of a 405 that reads as the service being down."""
    get = await status_fetch(service, path, headers=BEARER)
    head = await status_fetch(service, path, method="HEAD", headers=BEARER)
    assert head.code == get.code, path
    for name in ("Content-Type", "Cache-Control", "Location"):
        assert head.headers.get(name) == get.headers.get(name), (path, name)
    assert head.body == b"", path


async def test_head_of_the_push_channel_is_its_headers_not_a_stream(service: Service) -> None:
    """HEAD /api/events answers the stream's headers and ends, holding no stream open."""
    head = await status_fetch(service, "/api/events", method="HEAD", headers=BEARER)
    assert head.code == 200
    assert head.headers["Content-Type"] == "text/event-stream"
    assert head.body == b""
    assert service.status.counters.streams == 0


async def test_head_without_the_token_is_refused_as_get_is(service: Service) -> None:
    """HEAD passes the same token check as GET: 401 off the open paths, 200 on them."""
    refused = await status_fetch(service, "/api/stats", method="HEAD")
    assert refused.code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await status_fetch(service, "/healthz", method="HEAD")).code == 200


async def test_head_of_the_page_without_a_session_redirects_to_login_as_get_does(
    service: Service,
) -> None:
    """HEAD / without a session gets GET's redirect to the sign-in form, not a 401."""
    response = await status_fetch(service, "/", method="HEAD")
    assert response.code == 302
    assert response.headers["Location"] == "/login"


async def send(service: Service, method: str, path: str) -> HTTPResponse:
    """`method` `path` with the token, and an empty body where the method takes one."""
    body = b"" if method in ("POST", "PUT") else None
    return await status_fetch(
        service, path, method=method, headers=BEARER, body=body, allow_nonstandard_methods=True
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/api/stats", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("OPTIONS", "/api/events", "GET, HEAD"),
        ("PUT", "/login", "GET, HEAD, POST"),
    ],
)
async def test_a_wrong_method_gets_405_naming_the_methods_allowed(
    service: Service, method: str, path: str, allowed: str
) -> None:
    """A 405 carries Allow, as HTTP requires of it, so a client learns what to send."""
    response = await send(service, method, path)
    assert response.code == 405
    assert response.headers.get("Allow") == allowed


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_a_path_that_does_not_exist_is_404_whatever_the_method(
    service: Service, method: str
) -> None:
    """A mistyped path is 404 for every method, not a 405 claiming it takes GET."""
    response = await send(service, method, "/api/statz")
    assert response.code == 404
    assert "Allow" not in response.headers
