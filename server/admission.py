"""Admission of new echo connections: connection limits, descriptor headroom, PROXY sources.

Every check runs when a connection is accepted, before anything is scheduled for it, so a
burst can't overshoot a limit. A refused connection is counted, logged (rate-limited) and
written to the access log here, whoever refused it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from echostat.server.accept import RateLimitedLog
from echostat.server.access_log import AccessLog
from echostat.server.config import LimitsConfig, ListenerConfig
from echostat.server.proxy_protocol import Network, is_trusted
from echostat.server.registry import Registry, RejectReason
from echostat.server.resources import echo_may_keep

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerRules:
    """One listener's settings for its new connections, with `proxy_trusted` parsed once."""

    config: ListenerConfig
    trusted_networks: tuple[Network, ...]

    @classmethod
    def of(cls, config: ListenerConfig) -> ListenerRules:
        """The rules of `config`, whose `proxy_trusted` was checked when it was validated."""
        return cls(config, tuple(ipaddress.ip_network(cidr) for cidr in config.proxy_trusted))


class Admission:
    """Decides whether a new connection may stay, and records those it may not.

    A connection still sending its PROXY header counts against `max_connections` from
    `header_started` until `header_settled`; its per-IP limit waits for the real client's
    address (`over_ip_limit`).
    """

    def __init__(self, registry: Registry, limits: LimitsConfig) -> None:
        self.registry = registry
        self.limits = limits
        """`reconfigure`d for clients from now on."""
        self.access_log: AccessLog | None = None
        """Where refusals are written too, if anywhere."""
        self._awaiting_header = 0
        self._rejections = RateLimitedLog(log, interval_s=10.0)

    def refusal(self, ip: str, fd: int, rules: ListenerRules) -> RejectReason | None:
        """The reason to refuse a connection from `ip`, accepted as descriptor `fd` on the
        listener `rules` describe; None if it may stay.

        Behind a balancer (`proxy_protocol`), `ip` is the balancer's: it must be trusted, and
        the per-IP limit waits for the real client's address (`over_ip_limit`).
        """
        if self.registry.active + self._awaiting_header >= self.limits.max_connections:
            return "max_connections"
        if rules.config.proxy_protocol:
            if not is_trusted(ip, rules.trusted_networks):
                return "proxy_untrusted"
        elif self.over_ip_limit(ip):
            return "max_connections_per_ip"
        return None if echo_may_keep(fd) else "descriptor_limit"

    def over_ip_limit(self, ip: str) -> bool:
        """Whether one more connection from `ip` would exceed `max_connections_per_ip`."""
        per_ip = self.limits.max_connections_per_ip
        return bool(per_ip) and self.registry.active_from(ip) >= per_ip

    def header_started(self) -> None:
        """A connection began sending its PROXY header: count it until `header_settled`."""
        self._awaiting_header += 1

    def header_settled(self) -> None:
        """A connection's PROXY header was read, or the connection refused."""
        self._awaiting_header -= 1

    def reject(
        self,
        reason: RejectReason,
        peer: str,
        listener: str,
        detail: str | None = None,
        via: str | None = None,
    ) -> None:
        """Count, log and access-log a refused connection, the warning saying what was wrong
        if `detail` does; `via`: the balancer, when `peer` is the client its PROXY header
        named. The caller closes the connection."""
        self.registry.reject(reason)
        said = f" ({detail})" if detail else ""
        self._rejections.warning("rejected %s on %s: %s%s", peer, listener, reason, said)
        if self.access_log is not None:
            self.access_log.rejected(reason, peer, listener, via)
