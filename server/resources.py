"""Process resources: the descriptor limit, fitted to the config, raised at start and watched
while accepting; and `ResourceError`, for what the system refuses a valid configuration."""

from __future__ import annotations

import dataclasses
import logging
import resource

from echostat.server.config import DEFAULT_MAX_CONNECTIONS, Config, ConfigError

log = logging.getLogger(__name__)


class ResourceError(Exception):
    """The system refused what a valid configuration asks for (a file to open, descriptors);
    the message is one line that names the key. `ConfigError` is for configurations that are
    wrong in themselves."""


STATUS_RESERVE = 16
"""The highest descriptor numbers under the soft limit, never given to echo connections, so
the status page can still accept (and serve its files) when echo clients took the rest."""

RESERVED_DESCRIPTORS = 32
"""Descriptors kept beyond echo connections: listeners, the event loop, logs and the status
side's reserve (`STATUS_RESERVE`)."""


def reserve_descriptors(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return it.

    Raises `ResourceError` when even the hard limit can't hold `max_connections` plus
    `RESERVED_DESCRIPTORS`, naming both numbers.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("raised the open-file limit from %d to %d", soft, hard)
        soft = hard
    if soft != resource.RLIM_INFINITY and max_connections > _connections_fitting(soft):
        raise ResourceError(_descriptor_shortage(max_connections, soft))
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


def fit_descriptor_limit(config: Config, origin: str | None) -> Config:
    """`config` with `limits.max_connections` derived from the hard descriptor limit (at most
    `DEFAULT_MAX_CONNECTIONS`) when it was left out (`origin` None); otherwise checked against
    that limit, naming `origin` (the file, variable or flag that set it) in the `ConfigError`."""
    explicit = origin is not None
    limit = _hard_descriptor_limit()
    wanted = config.limits.max_connections
    if limit is not None and not explicit:
        wanted = min(DEFAULT_MAX_CONNECTIONS, _connections_fitting(limit))
        if wanted < 1:
            raise ConfigError(
                f"limits.max_connections: the descriptor limit {limit} holds no connection"
                f" (echostat keeps {RESERVED_DESCRIPTORS} for itself); raise it"
                " (ulimit -n, LimitNOFILE=)"
            )
        config = dataclasses.replace(
            config, limits=dataclasses.replace(config.limits, max_connections=wanted)
        )
    elif limit is not None and wanted > _connections_fitting(limit):
        raise ConfigError(f"{origin}: {_descriptor_shortage(wanted, limit)}")
    object.__setattr__(config, "descriptor_limit", limit)
    object.__setattr__(config, "max_connections_derived", not explicit and limit is not None)
    return config


def _descriptor_shortage(max_connections: int, descriptor_limit: int) -> str:
    """Why `max_connections` doesn't fit in `descriptor_limit`, and what to do about it."""
    return (
        f"limits.max_connections: {max_connections} connections need"
        f" {max_connections + RESERVED_DESCRIPTORS} file descriptors but the limit is"
        f" {descriptor_limit}; lower max_connections to at most"
        f" {_connections_fitting(descriptor_limit)}, leave it out to derive it from the limit,"
        " or raise the limit (ulimit -n, LimitNOFILE=)"
    )


def _hard_descriptor_limit() -> int | None:
    """The hard RLIMIT_NOFILE (the soft limit is raised to it at start); None if unlimited."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def _connections_fitting(descriptor_limit: int) -> int:
    """How many echo connections a descriptor limit holds beside `RESERVED_DESCRIPTORS`."""
    return max(descriptor_limit - RESERVED_DESCRIPTORS, 0)
