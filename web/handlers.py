"""HTTP handlers: the dashboard page, the JSON API, the push channel, metrics and health."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

from prometheus_client.exposition import choose_encoder
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler, StaticFileHandler

from echostat.server import __version__
from echostat.web.access import COOKIE_NAME, LOGIN_PATH, SECURITY_HEADERS
from echostat.web.pages import MAX_PAGE_ROWS, encode_rows, is_number, page_body, parse_cursor
from echostat.web.schema import (
    limits_document,
    peers_document,
    stats_document,
    status_connections_document,
)
from echostat.web.seats import refusal_message
from echostat.web.state import AppState, Settings
from echostat.web.watch import watch_document

_JSON = "application/json; charset=utf-8"

log = logging.getLogger(__name__)

_UNKNOWN_HOST = "unknown Host name; add it to status.allowed_hosts"


class QuietHandler(RequestHandler):
    """What every handler shares, the page's files' too: the headers every response
    carries, refusals in plain text, and an `HTTPError` (the client's mistake) logged at
    debug, since the request log already counts it at most every 10 s, where Tornado would
    warn once per request."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS:
            self.set_header(name, value)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, HTTPError):
            log.debug("%s %s: %s", self.request.method, self.request.uri, value)
        else:
            super().log_exception(typ, value, tb)

    def refuse_text(self, status: int, message: str) -> None:
        """End the request here with `message`; unlike raising HTTPError, this keeps the
        headers set so far."""
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")


class BaseHandler(QuietHandler):
    """Shared state, access control and the headers every response carries."""

    state: AppState
    in_force: Settings

    def initialize(self, state: AppState) -> None:
        self.state = state
        # Taken once: a reload during this request doesn't change what it is answered under.
        self.in_force = state.settings

    def prepare(self) -> None:
        self.let_in()

    def let_in(self) -> bool:
        """Refuse unknown Host names (421) and requests without the token (401 or login),
        ending the request; whether it goes on, for a handler that checks more after."""
        if not self.in_force.policy.host_allowed(self.request.host):
            self._refuse(421, _UNKNOWN_HOST)
            return False
        if not self._token_ok():
            if self.request.method in ("GET", "HEAD") and self.request.path == "/":
                self.redirect(LOGIN_PATH)
                return False
            self.set_header("WWW-Authenticate", 'Bearer realm="echostat"')
            self._refuse(401, "missing or wrong token (Authorization: Bearer <token>)")
            return False
        return True

    def head(self, *args: str, **kwargs: str) -> Awaitable[None] | None:
        """HEAD is GET without the body (Tornado sends none for HEAD): uptime monitors and
        ``curl -I`` check with it, and a 405 would read as the service being down."""
        return self.get(*args, **kwargs)

    def _refuse(self, status: int, message: str) -> None:
        """End the request here, under /api/ with JSON, elsewhere with text."""
        if self._in_api():
            self.set_status(status)
            self.write_json({"error": message})
            return
        self.refuse_text(status, message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Under /api/ an error is JSON, ``{"error": reason}``, for scripts; elsewhere a page.
        A 405 says which methods the path takes (``Allow``), as HTTP requires."""
        if status_code == 405:
            self.set_header("Allow", ", ".join(self._methods()))
        if self._in_api():
            self.write_json({"error": self._reason})
        else:
            super().write_error(status_code, **kwargs)

    def _methods(self) -> list[str]:
        """The methods this handler implements, which Tornado's `RequestHandler` leaves 405."""
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(type(self), method.lower()) is not getattr(RequestHandler, method.lower())
        ]

    def _in_api(self) -> bool:
        return self.request.path.startswith("/api/")

    def _token_ok(self) -> bool:
        """Whether the token in force lets this request in: not needed, or presented."""
        return not self.in_force.policy.needs_token(self.request.path) or self._authenticated()

    def _authenticated(self) -> bool:
        authorization = self.request.headers.get("Authorization")
        if authorization is not None:
            return self.in_force.policy.bearer_ok(authorization)
        cookie = self.get_cookie(COOKIE_NAME)
        return cookie is not None and self.in_force.policy.session_ok(cookie)

    def write_json(self, document: Any) -> None:
        self.write_bytes(_JSON, json.dumps(document).encode())

    def limit_argument(self, most: int = 100_000) -> int:
        """The ``limit`` query argument of a table: 1..`most`, 100 if absent."""
        raw = self.get_query_argument("limit", "100")
        if not is_number(raw) or not 1 <= int(raw) <= most:
            raise HTTPError(400, reason=f"limit must be an integer 1..{most}")
        return int(raw)

    def write_bytes(self, content_type: str, body: bytes) -> None:
        """Finish with `body`, never cached: every API answer describes the present."""
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class StaticHandler(QuietHandler, StaticFileHandler):
    """The page's files; scripts always as JavaScript, whatever the host's MIME table says,
    since browsers refuse a module script served under any other type."""

    state: AppState

    def initialize(self, path: str, state: AppState) -> None:  # type: ignore[override]
        super().initialize(path)
        self.state = state

    def prepare(self) -> None:
        """Unknown Host names get 421 here too, as on every other path."""
        if not self.state.settings.policy.host_allowed(self.request.host):
            self.refuse_text(421, _UNKNOWN_HOST)

    def get_content_type(self) -> str:
        if self.absolute_path is not None and self.absolute_path.endswith(".js"):
            return "text/javascript; charset=utf-8"
        return super().get_content_type()

    def set_extra_headers(self, path: str) -> None:
        # Modules import each other by plain URL, without the version query of `static_url`:
        # browsers revalidate those, so an upgrade never mixes old and new modules.
        if self.get_query_argument("v", None) is None:
            self.set_header("Cache-Control", "no-cache")


class LoginHandler(BaseHandler):
    """``/login``: a form that trades the token for a session cookie, for browsers."""

    def prepare(self) -> None:
        if self.let_in() and self.in_force.policy.token is None:
            self.redirect("/")  # nothing to sign in to

    def get(self) -> None:
        self.render("login.html", version=__version__, failed=False)

    def post(self) -> None:
        self.check_xsrf_cookie()
        if not self.in_force.policy.token_ok(self.get_body_argument("token", "")):
            self.set_status(403)
            self.render("login.html", version=__version__, failed=True)
            return
        self.set_cookie(
            COOKIE_NAME,
            self.in_force.policy.session_value(),
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
        )
        self.redirect("/")


class PageHandler(BaseHandler):
    def get(self) -> None:
        self.render("index.html", version=__version__)


class StatsHandler(BaseHandler):
    """``GET /api/stats``: totals now, rates over the last tick, the limits in force."""

    async def get(self) -> None:
        await self.state.registry.refresh()
        document = stats_document(self.state.registry.snapshot(), self.state.feed.rates)
        self.write_json(
            {
                **document,
                "limits": limits_document(self.in_force.config),
                "status_connections": status_connections_document(
                    self.state.status_counters, self.in_force.config.status
                ),
            }
        )


class ConnectionsHandler(BaseHandler):
    """``GET /api/connections?limit=N``: open connections, most bytes moved first; with
    ``cursor=C``, the page after cursor C in the order of acceptance (see `web.pages`)."""

    async def get(self) -> None:
        limit = self.limit_argument(MAX_PAGE_ROWS)
        cursor = self.get_query_argument("cursor", None)
        after = None if cursor is None else parse_cursor(cursor)
        if cursor is not None and after is None:
            raise HTTPError(400, reason="cursor must be 0 or the next_cursor of a page")
        registry = self.state.registry
        if after is None:
            await registry.refresh(limit)  # a page asks the workers itself
        async with self.state.page_turn:
            page = await registry.connections_page(limit, after, encode_rows)
        self.write_bytes(_JSON, page_body(registry.active, page))

    def compute_etag(self) -> str | None:
        # Pages are never cached (no-store): hashing half a megabyte for an ETag is waste.
        return None


class PeersHandler(BaseHandler):
    """``GET /api/peers?limit=N``: UDP sources seen in the last `udp.peer_idle_s`, most
    datagrams first."""

    def get(self) -> None:
        limit = self.limit_argument()
        total = sum(udp.peers for udp in self.state.registry.snapshot().udp_listeners)
        self.write_json(peers_document(total, self.state.registry.peers(limit)))


class HistoryHandler(BaseHandler):
    """``GET /api/history``: the last five minutes of the feed, one point per tick."""

    def get(self) -> None:
        self.write_bytes(_JSON, self.state.feed.history_message())


class WatchHandler(BaseHandler):
    """``GET /api/watch``: every watched address, its last round and the last hour's chart
    points; ``{"targets": []}`` when this process watches nothing."""

    def get(self) -> None:
        watch = self.state.watch
        self.write_json(watch_document(watch.targets() if watch is not None else []))


class EventsHandler(BaseHandler):
    """``GET /api/events``: Server-Sent Events.

    On connect a ``config`` event (the limits) and a ``history`` event; then one unnamed
    event per tick, the stats document plus ``top_connections``, shared by all subscribers.
    Beyond `status.max_streams` open streams, 503 naming the setting, and counted.
    After a reload, the next tick brings a ``config`` event with the new limits first, or
    ends the stream when the new token or Host names no longer let this request in.
    """

    async def get(self) -> None:
        counters = self.state.status_counters
        max_streams = self.in_force.config.status.max_streams
        if counters.streams >= max_streams:
            counters.rejected["max_streams"] += 1
            self.set_header("Retry-After", "1")
            self._refuse(503, refusal_message("max_streams", max_streams))
            return
        counters.streams += 1
        try:
            await self._stream()
        finally:
            counters.streams -= 1

    def head(self, *args: str, **kwargs: str) -> None:
        """The stream's headers, then the end: a HEAD request takes no events."""
        self._stream_headers()
        self.finish()

    def _stream_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")

    async def _stream(self) -> None:
        self._stream_headers()
        self.write(b"retry: 1000\n\n")
        shown = self.in_force
        self.write(_config_event(shown))
        self.write(_event(b"history", self.state.feed.history_message()))
        tick = 0
        while (message := await self.state.feed.next(tick)) is not None:
            tick, data = message
            if self.state.settings is not shown:
                shown = self.in_force = self.state.settings
                # A new token ends the old sessions, this open stream among them.
                if not (shown.policy.host_allowed(self.request.host) and self._token_ok()):
                    return
                self.write(_config_event(shown))
            self.write(_event(None, data))
            try:
                await self.flush()
            except StreamClosedError:
                return


def _config_event(settings: Settings) -> bytes:
    """The ``config`` event: the limits in force under `settings`."""
    return _event(b"config", json.dumps(limits_document(settings.config)).encode())


def _event(name: bytes | None, data: bytes) -> bytes:
    """One Server-Sent Event; `data` is single-line JSON. Unnamed events reach ``onmessage``."""
    head = b"event: " + name + b"\n" if name else b""
    return head + b"data: " + data + b"\n\n"


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus text (or OpenMetrics, if asked for), collected per scrape."""

    async def get(self) -> None:
        await self.state.registry.refresh()
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.write_bytes(content_type, encode(self.state.metrics))


class NotFoundHandler(BaseHandler):
    """Any other path: 404 whatever the method, with the same headers and access rules as
    everything else."""

    def prepare(self) -> None:
        if self.let_in():
            raise HTTPError(404)


class HealthHandler(BaseHandler):
    """``GET /healthz``: 200 while the echo listeners accept connections, else 503."""

    def get(self) -> None:
        self._answer(self.state.registry.accepting, "not accepting")

    def _answer(self, ok: bool, why_not: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if not ok:
            self.set_status(503)
        self.finish("ok\n" if ok else why_not + "\n")


class ReadyHandler(HealthHandler):
    """``GET /readyz``: 200 while new connections are welcome; 503 from the moment shutdown
    begins, while listeners still accept for `shutdown_delay_s` so load balancers can notice."""

    def get(self) -> None:
        self._answer(self.state.registry.ready, "shutting down")
