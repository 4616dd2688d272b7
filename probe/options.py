"""What one `echostat probe` invocation asks for, after the command line is checked."""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = ("round_trips", "load", "half_close", "connect_only")
"""``round_trips`` is the ping-like default, ``load`` any load flag, the others their flag."""


@dataclass(frozen=True)
class Options:
    """Every setting of a probe run, as the JSON report's ``options`` shows them."""

    target: str
    host: str
    port: int
    check: str
    count: int = 5
    interval_s: float = 1.0
    size: int = 64
    connections: int = 1
    duration_s: float = 10.0
    mode: str = "pingpong"
    window: int = 256 * 1024
    timeout_s: float = 5.0
    source: str | None = None
    tls: bool = False
    ca: str | None = None
    insecure: bool = False
    sni: str | None = None
    proxy_header: str | None = None
    proxy_source: str | None = None
    json: bool = False
