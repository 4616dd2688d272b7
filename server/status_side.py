"""What the data plane asks of a status side, so that it can run one without knowing the page.

`echostat.web.status.StatusSide` is the one the command attaches; the composition root
(`echostat.service`) passes its constructor to `Service` and `Supervisor` as a
`StatusSideFactory`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

from echostat.server.config import Config
from echostat.server.registry import StatsSource


class StatusSide(Protocol):
    """A status side over a stats source: started on bound sockets, reconfigured, stopped once."""

    @property
    def port(self) -> int:
        """The bound port, once started."""
        ...

    def start(self, sockets: list[socket.socket]) -> None:
        """Serve on `sockets` (bound and listening) from now on."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Serve later requests and connections under `config` (a reload)."""
        ...

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        ...


StatusSideFactory = Callable[[StatsSource, Config], StatusSide]
"""Builds the status side for a stats source (a process's `Registry` or a `FleetStats`)."""
