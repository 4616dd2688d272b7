"""Process resources: the descriptor limit, raised at start and watched while accepting."""

from __future__ import annotations

import logging
import resource

from echostat.server.config import Config, ConfigError, connections_fitting, descriptor_shortage

log = logging.getLogger(__name__)

STATUS_RESERVE = 16
"""The highest descriptor numbers under the soft limit, never given to echo connections, so
the status page can still accept (and serve its files) when echo clients took the rest."""


def reserve_descriptors(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return it.

    Raises `ConfigError` when even the hard limit can't hold `max_connections` plus
    `RESERVED_DESCRIPTORS`, naming both numbers.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("raised the open-file limit from %d to %d", soft, hard)
        soft = hard
    if soft != resource.RLIM_INFINITY and max_connections > connections_fitting(soft):
        raise ConfigError(descriptor_shortage(max_connections, soft))
    return soft


def echo_may_keep(fd: int) -> bool:
    """Whether an echo connection may keep descriptor `fd` and leave `STATUS_RESERVE` free.

    Descriptors are allocated lowest first, so a high `fd` means every lower one is taken.
    The soft limit is read each time: an operator may lower it at run time (prlimit).
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft == resource.RLIM_INFINITY or fd < soft - STATUS_RESERVE


def describe_max_connections(config: Config) -> str:
    """For the startup line: the connection limit in force and where it came from."""
    limit = config.limits.max_connections
    if config.max_connections_derived:
        return (
            f"max_connections {limit} (derived from the descriptor limit {config.descriptor_limit})"
        )
    return f"max_connections {limit} (as configured)"
