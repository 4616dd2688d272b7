"""The status side lets in only whom the operator allows, and says so in its headers."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlencode

import pytest

from echostat.server.config import Config, StatusConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import DEADLINE_S, close_all, status_fetch

TOKEN = "correct-horse-battery-staple"


@pytest.fixture
def config() -> Config:
    return loopback_config(
        status=StatusConfig(host="127.0.0.1", port=0, token=TOKEN, open_paths=("/healthz",))
    )


async def test_unknown_host_header_gets_421(service: Service) -> None:
    """A rebinding attack's foreign Host name is refused before anything else."""
    response = await status_fetch(service, "/healthz", headers={"Host": "attacker.example:7070"})
    assert response.code == 421


@pytest.mark.parametrize("path", ["/static/dashboard.js", "/favicon.ico"])
async def test_unknown_host_header_gets_421_for_the_pages_files_too(
    service: Service, path: str
) -> None:
    """The page's files answer only to allowed Host names too, as README says of every
    request, naming the key that lets a name in."""
    response = await status_fetch(service, path, headers={"Host": "attacker.example:7070"})
    assert response.code == 421
    assert "status.allowed_hosts" in response.body.decode()


@pytest.mark.parametrize("host", ["localhost:7070", "127.0.0.1", "[::1]:7070"])
async def test_loopback_host_names_are_allowed(service: Service, host: str) -> None:
    """Loopback names, with or without a port, pass the Host check."""
    response = await status_fetch(service, "/healthz", headers={"Host": host})
    assert response.code == 200


@pytest.mark.parametrize("path", ["/api/stats", "/api/connections", "/api/events"])
async def test_api_without_token_gets_401(service: Service, path: str) -> None:
    """Without the token the API answers 401 and names the scheme to use."""
    response = await status_fetch(service, path)
    assert response.code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_wrong_bearer_token_gets_401(service: Service) -> None:
    response = await status_fetch(service, "/api/stats", headers={"Authorization": "Bearer nope"})
    assert response.code == 401


async def test_bearer_token_opens_the_api(service: Service) -> None:
    response = await status_fetch(
        service, "/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"


async def test_open_paths_need_no_token(service: Service) -> None:
    """Paths in status.open_paths (here /healthz) answer without credentials."""
    response = await status_fetch(service, "/healthz")
    assert response.code == 200


async def test_page_without_session_redirects_to_login(service: Service) -> None:
    response = await status_fetch(service, "/")
    assert response.code == 302
    assert response.headers["Location"] == "/login"


async def test_login_form_sets_a_session_cookie_that_opens_the_page(service: Service) -> None:
    """A browser trades the token for an HttpOnly cookie once; the cookie is not the token."""
    form = await status_fetch(service, "/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.body.decode())
    assert xsrf is not None
    cookies = form.headers.get_list("Set-Cookie")
    cookie_header = "; ".join(c.split(";", 1)[0] for c in cookies)
    body = urlencode({"_xsrf": xsrf.group(1), "token": TOKEN})
    login = await status_fetch(
        service, "/login", method="POST", body=body, headers={"Cookie": cookie_header}
    )
    assert login.code == 302
    session = next(c for c in login.headers.get_list("Set-Cookie") if "echostat_session" in c)
    assert "HttpOnly" in session and "SameSite=Strict" in session
    assert TOKEN not in session
    page = await status_fetch(service, "/", headers={"Cookie": session.split(";", 1)[0]})
    assert page.code == 200
    assert 'id="active-connections"' in page.body.decode()


async def test_the_sign_in_page_names_an_icon_it_may_load(service: Service) -> None:
    """The sign-in page names its icon, which a browser without a session may load, so the
    browser does not ask for /favicon.ico, a 404 that each visit would log as a warning."""
    form = await status_fetch(service, "/login")
    icon = re.search(r'<link rel="icon" href="([^"]+)"', form.body.decode())
    assert icon is not None
    response = await status_fetch(service, icon.group(1))
    assert response.code == 200
    assert response.headers["Content-Type"] == "image/svg+xml"


async def test_login_with_wrong_token_is_refused(service: Service) -> None:
    form = await status_fetch(service, "/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.body.decode())
    assert xsrf is not None
    cookie_header = "; ".join(c.split(";", 1)[0] for c in form.headers.get_list("Set-Cookie"))
    body = urlencode({"_xsrf": xsrf.group(1), "token": "wrong-token-wrong-token"})
    login = await status_fetch(
        service, "/login", method="POST", body=body, headers={"Cookie": cookie_header}
    )
    assert login.code == 403
    assert "echostat_session" not in " ".join(login.headers.get_list("Set-Cookie"))


async def test_login_post_without_xsrf_field_is_refused(service: Service) -> None:
    """The login form is protected against cross-site posts."""
    body = urlencode({"token": TOKEN})
    response = await status_fetch(service, "/login", method="POST", body=body)
    assert response.code == 403


@pytest.mark.parametrize(
    "path",
    [
        *("/", "/api/stats", "/healthz", "/login", "/nonexistent"),
        *("/static/dashboard.js", "/static/no-such-file.js"),
    ],
)
async def test_every_response_carries_security_headers(service: Service, path: str) -> None:
    """CSP limited to our origin, no MIME sniffing, no referrer, even on errors."""
    response = await status_fetch(service, path)
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_read_only_endpoints_reject_other_methods_with_405(
    service: Service, method: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await status_fetch(
        service,
        "/api/stats",
        method=method,
        headers=headers,
        body=b"" if method != "DELETE" else None,
    )
    assert response.code == 405


async def test_a_token_beyond_ascii_opens_the_api_as_its_utf8_bytes() -> None:
    """A token with letters beyond ASCII, which the config accepts and the sign-in form
    takes, opens the API when a script sends it as curl does, in UTF-8."""
    token = "pässwörd-pässwörd-1"
    service = Service(loopback_config(status=StatusConfig(host="127.0.0.1", port=0, token=token)))
    await service.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.status_port)
        writer.write(
            b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), DEADLINE_S)
        await close_all([writer])
        assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        await service.stop()
