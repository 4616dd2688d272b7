"""Listening sockets and their accept loops, owned for a server that composes them.

Tornado's `TCPServer` keeps its sockets and accept handlers in private attributes that only
its own accept loop fills. A server that runs `watch_accepts` instead keeps them here and
overrides `add_sockets` and `stop` to use this.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from echostat.server.accept import watch_accepts


class Listeners:
    """Accepting sockets: `add` starts accepting on one, `stop` stops and closes them all.

    The sockets belong to this object once added: `stop` closes them, and is safe to call
    more than once.
    """

    def __init__(self) -> None:
        self._watched: list[tuple[socket.socket, Callable[[], None]]] = []
        """Each accepting socket with the call that stops watching it."""

    def add(
        self, sock: socket.socket, on_accept: Callable[[socket.socket, Any], None], name: str
    ) -> None:
        """Call `on_accept(connection, address)` for each client of `sock`; `name` is the
        listener's, for the warning logged while accepts back off."""
        self._watched.append((sock, watch_accepts(sock, on_accept, name)))

    def sockets(self) -> list[socket.socket]:
        """The accepting sockets."""
        return [sock for sock, _ in self._watched]

    def stop(self) -> None:
        """Stop accepting and close every socket added so far."""
        watched, self._watched = self._watched, []
        for sock, unwatch in watched:
            unwatch()
            sock.close()
