"""Reload on SIGHUP the way nginx and HAProxy do: read and validate the whole new config
first, refuse it if a key that needs a restart changed, else apply it in place at once.

Nothing is half-applied: loading builds every TLS context and checks every key before the
running service is touched, and applying only swaps references, which cannot fail.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echostat.server.config import Config, ConfigError
from echostat.server.resources import ResourceError

log = logging.getLogger(__name__)

RESTART_KEYS = re.compile(
    r"^(listeners|listeners\[\d+\]\.(name|protocol|host|port|backlog|report)|workers"
    r"|status\.(host|port)|event_loop|udp\..+)$"
)
"""Keys bound to sockets or processes, the UDP budgets each UDP socket is set up with, and
path reports (a UDP report listener reads its sockets another way): changing them needs a
restart."""

KEPT = "the running configuration stays in force"


@dataclass(slots=True)
class ReloadCounters:
    """When the configuration in force was loaded (wall clock), and how reloads went."""

    loaded_at: float
    reloads: int = 0
    failed: int = 0

    def applied(self) -> None:
        self.reloads += 1
        self.loaded_at = time.time()


def changed_keys(old: Any, new: Any, path: str = "") -> list[str]:
    """The key paths (``limits.max_connections``, ``listeners[0].port``) whose values differ
    between two configs; a list of sections that changed length is one key, the list's."""
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        changed: list[str] = []
        for fld in dataclasses.fields(old):
            if fld.compare:
                key = f"{path}.{fld.name}" if path else fld.name
                changed += changed_keys(getattr(old, fld.name), getattr(new, fld.name), key)
        return changed
    if _sections(old) and _sections(new) and len(old) == len(new):
        return [
            k
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for k in changed_keys(a, b, f"{path}[{i}]")
        ]
    return [] if old == new else [path]


def _sections(value: Any) -> bool:
    return isinstance(value, tuple) and all(dataclasses.is_dataclass(item) for item in value)


class Reloader:
    """Turns a reload request into: `load` a new config, check it against `current`, `apply`
    it; counts the outcome in `counters` and logs one line either way."""

    def __init__(
        self,
        current: Config,
        load: Callable[[], Config],
        apply: Callable[[Config], None],
        counters: ReloadCounters,
    ) -> None:
        """`apply` may raise `ResourceError` (or `ConfigError`) only before it changes
        anything (a file it cannot open); the reload is then refused like an invalid config."""
        self.current = current
        self._load = load
        self._apply = apply
        self._counters = counters

    def reload(self) -> bool:
        """Reload once; True if the new config is now in force."""
        try:
            new = self._load()
        except ConfigError as exc:
            return self._refuse(f"{exc}")
        changed = changed_keys(self.current, new)
        restart = [key for key in changed if RESTART_KEYS.match(key)]
        if restart:
            return self._refuse(f"{', '.join(restart)}: changing this needs a restart")
        try:
            self._apply(new)
        except (ConfigError, ResourceError) as exc:  # raised by apply's first step
            return self._refuse(f"{exc}")
        self.current = new
        self._counters.applied()
        tls = [listener.name for listener in new.listeners if listener.tls is not None]
        log.info(
            "configuration reloaded: %s%s",
            f"changed {', '.join(changed)}" if changed else "no key changed",
            f"; TLS certificate and key re-read for {', '.join(tls)}" if tls else "",
        )
        return True

    def _refuse(self, reason: str) -> bool:
        self._counters.failed += 1
        log.error("reload refused: %s; %s", reason, KEPT)
        return False
