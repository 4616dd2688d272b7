"""The configuration schema: frozen dataclasses whose fields are the only keys accepted.

Each section of the YAML file is one dataclass; field metadata gives a number's range. Nothing
here reads a file: `server.config_validation` turns YAML text into these dataclasses, and
`server.config_loading` reads the file and prepares what they name for running (the fields
with ``init=False``: TLS contexts, the descriptor limit seen).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(Exception):
    """A configuration a person must fix; the message is one line that names the key."""


def _range(low: float, high: float) -> dict[str, Any]:
    """Field metadata: the closed interval a number must lie in."""
    return {"range": (low, high)}


@dataclass(frozen=True)
class TLSConfig:
    """Certificate and key of a TLS listener; `context` is built from them at load time."""

    cert: str
    key: str
    handshake_timeout_s: float = field(default=10.0, metadata=_range(0.1, 300))
    context: ssl.SSLContext | None = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True)
class ListenerConfig:
    """One echo listener: a named TCP (optionally TLS) or UDP address."""

    name: str = "main"
    host: str = "127.0.0.1"
    port: int = field(default=7007, metadata=_range(0, 65535))
    protocol: Literal["tcp", "udp"] = "tcp"
    backlog: int = field(default=1024, metadata=_range(1, 65535))
    tls: TLSConfig | None = None
    proxy_protocol: bool = False
    proxy_trusted: tuple[str, ...] = ()
    proxy_header_timeout_s: float = field(default=5.0, metadata=_range(0.1, 300))
    report: bool = False
    """Tell each client what arrived of its connection (README, "Path reports"): TCP speaks
    first with one report line; UDP answers report requests. Off: pure RFC 862."""


@dataclass(frozen=True)
class StatusConfig:
    """Where the status page, JSON API and metrics are served, and who may see them."""

    host: str = "127.0.0.1"
    port: int = field(default=7070, metadata=_range(0, 65535))
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    open_paths: tuple[str, ...] = ("/healthz", "/readyz")
    max_connections: int = field(default=256, metadata=_range(1, 100_000))
    header_timeout_s: float = field(default=10.0, metadata=_range(0.1, 3600))
    idle_timeout_s: float = field(default=60.0, metadata=_range(0.1, 86400))

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses, the only binds safe without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


DEFAULT_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on connections and on what each may cost; 0 means "no limit" where allowed."""

    max_connections: int = field(default=DEFAULT_MAX_CONNECTIONS, metadata=_range(1, 1_000_000))
    """Left out of the config, it is derived from the descriptor limit (`fit_descriptor_limit`)."""
    max_connections_per_ip: int = field(default=100, metadata=_range(0, 1_000_000))
    idle_timeout_s: float = field(default=300.0, metadata=_range(0, 7 * 86400))
    max_lifetime_s: float = field(default=0.0, metadata=_range(0, 365 * 86400))
    max_buffer_bytes: int = field(default=262144, metadata=_range(1024, 64 * 1024 * 1024))
    max_buffered_bytes: int = field(default=64 * 1024 * 1024, metadata=_range(1 << 20, 1 << 40))


@dataclass(frozen=True)
class AccessLogConfig:
    """One line per closed or rejected echo connection, to stderr (``-``) or a file."""

    enabled: bool = False
    format: Literal["text", "json"] = "text"
    path: str = "-"


@dataclass(frozen=True)
class UDPConfig:
    """Reflection safety of the UDP listeners; rates are per listener in each worker, 0 = off.

    A UDP source address can be forged, so an echo would send its answers at a victim; these
    bounds keep echostat from being a useful reflector (see README, "UDP echo").
    """

    allow_privileged_source_ports: bool = False
    max_datagrams_per_s_per_ip: int = field(default=1000, metadata=_range(0, 10_000_000))
    max_datagrams_per_s: int = field(default=100_000, metadata=_range(0, 100_000_000))
    max_bytes_per_s: int = field(default=100_000_000, metadata=_range(0, 100_000_000_000))
    max_peers: int = field(default=10_000, metadata=_range(1, 10_000_000))
    peer_idle_s: float = field(default=30.0, metadata=_range(1, 86400))


@dataclass(frozen=True)
class WatchTargetConfig:
    """One path to watch: a TCP echo ``HOST:PORT`` or a ``udp://HOST:PORT``, probed every
    `interval_s` with `count` round trips of `size` bytes; a name stands for every address it
    resolves to, re-resolved every round."""

    name: str
    target: str
    interval_s: float = field(default=10.0, metadata=_range(0.1, 86400))
    count: int = field(default=5, metadata=_range(1, 1000))
    size: int = field(default=64, metadata=_range(1, 65507))
    timeout_s: float = field(default=2.0, metadata=_range(0.01, 60))


@dataclass(frozen=True)
class WatchConfig:
    """The peers this echostat probes continuously, and at most how many addresses at once."""

    targets: tuple[WatchTargetConfig, ...] = field(default=(), metadata={"may_be_empty": True})
    max_targets: int = field(default=64, metadata=_range(1, 4096))


@dataclass(frozen=True)
class Config:
    """The whole service: echo listeners, status endpoint, limits and lifecycle."""

    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    workers: int | Literal["auto"] = field(default=1, metadata=_range(1, 256))
    status: StatusConfig = StatusConfig()
    limits: LimitsConfig = LimitsConfig()
    udp: UDPConfig = UDPConfig()
    shutdown_delay_s: float = field(default=0.0, metadata=_range(0, 600))
    shutdown_grace_s: float = field(default=10.0, metadata=_range(0, 3600))
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    path_quality: bool = True
    tcp_info_interval_s: float = field(default=30.0, metadata=_range(1, 3600))
    access_log: AccessLogConfig = AccessLogConfig()
    watch: WatchConfig = WatchConfig()
    descriptor_limit: int | None = field(default=None, init=False, compare=False, repr=False)
    """The hard RLIMIT_NOFILE seen when loading (None: unlimited), set by `fit_descriptor_limit`."""
    max_connections_derived: bool = field(default=False, init=False, compare=False, repr=False)
    """Whether `limits.max_connections` was derived from `descriptor_limit`, not given."""

    @property
    def worker_count(self) -> int:
        """`workers`, with ``auto`` resolved to the number of CPUs this process may use."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0))
        return self.workers
