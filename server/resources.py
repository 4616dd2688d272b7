"""Process resources: make sure the descriptor limit can hold the configured connections."""

from __future__ import annotations

import logging
import resource

from server.config import ConfigError

log = logging.getLogger(__name__)

RESERVED_DESCRIPTORS = 32
"""Descriptors kept beyond echo connections: listeners, the status page, the runtime, logs."""


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
    needed = max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise ConfigError(
            f"limits.max_connections: {max_connections} connections need {needed} file"
            f" descriptors but the limit is {soft}; lower max_connections to at most"
            f" {max(soft - RESERVED_DESCRIPTORS, 0)} or raise the limit (ulimit -n, LimitNOFILE=)"
        )
    return soft
