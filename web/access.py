"""Who may see the status side: a Host allow-list against DNS rebinding, and a bearer token.

Browsers authenticate once through ``/login``, which sets a cookie holding a keyed digest of
the token (never the token itself); scripts send ``Authorization: Bearer <token>``. Every
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from echostat.server.config import StatusConfig

COOKIE_NAME = "echostat_session"
LOGIN_PATH = "/login"

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
"""What every response carries, so that a browser runs nothing of ours from elsewhere, in a
frame, or of another type than it says, and sends no page address on."""


@dataclass(frozen=True)
class AccessPolicy:
    """The rules of `StatusConfig`, ready to check requests against."""

    token: str | None
    allowed_hosts: frozenset[str] | None
    open_paths: frozenset[str]

    @classmethod
    def from_config(cls, status: StatusConfig) -> AccessPolicy:
        """Loopback binds only answer to loopback names (plus `allowed_hosts`); other binds
        answer to `allowed_hosts` and the loopback names when it is set, else to any name (the
        token guards them). A loopback name is never a rebinding attacker's, and HAProxy's
        HTTP/1.0 checks, which send no Host, arrive as 127.0.0.1. Nor is the one address
        bound, so the URL the startup line prints is answered."""
        hosts = {host.lower() for host in status.allowed_hosts}
        if status.on_loopback or hosts:
            hosts |= _LOOPBACK_NAMES | _bound_address(status.host)
        return cls(status.token, frozenset(hosts) or None, frozenset(status.open_paths))

    def host_allowed(self, host_header: str) -> bool:
        if self.allowed_hosts is None:
            return True
        return _host_name(host_header) in self.allowed_hosts

    def needs_token(self, path: str) -> bool:
        """The sign-in form itself is always open, or browsers could never get in."""
        return self.token is not None and path not in self.open_paths and path != LOGIN_PATH

    def bearer_ok(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries the token. Header values arrive
        decoded as Latin-1 (HTTP's octets), so their bytes are compared with the token's
        UTF-8: a token beyond ASCII works for scripts as for the sign-in form."""
        scheme, _, credential = authorization.partition(" ")
        try:
            sent = credential.strip().encode("latin-1")
        except UnicodeEncodeError:  # not as a header arrives: not the token's bytes either
            return False
        return scheme.lower() == "bearer" and self._bytes_ok(sent)

    def token_ok(self, candidate: str) -> bool:
        return self._bytes_ok(candidate.encode())

    def _bytes_ok(self, candidate: bytes) -> bool:
        assert self.token is not None
        return hmac.compare_digest(candidate, self.token.encode())

    def session_value(self) -> str:
        """The cookie value that proves a browser logged in with the current token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"echostat session", hashlib.sha256).hexdigest()

    def session_ok(self, cookie: str) -> bool:
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())


def _bound_address(host: str) -> frozenset[str]:
    """`host` when it is one address, not a wildcard or a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return frozenset()
    return frozenset() if address.is_unspecified else frozenset({address.compressed})


def _host_name(host_header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower-cased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
