"""The private behaviour of Python and the event loops that the accept path relies on for speed.

Each item here reads (never writes) something the standard library or uvloop does not
promise, because the public way costs a measurable share of a short connection's CPU time.
tests/e2e/test_borrowed.py fails, naming what is missing, when an installed Python or
uvloop no longer behaves this way; the fix is then to fall back to the public way here.

- `accept_call(sock)`: `socket.socket._accept`, the system call without the
  `socket.socket` that `accept()` builds from enum-typed family and type.
- `AcceptedSocket`: `_socket.socket`'s own `family` and `type` descriptors, which read
  plain ints where `socket.socket`'s properties build enum members.
- `adopt(setup, ...)`: that `loop.connect_accepted_socket(...)`, on asyncio and on uvloop,
  is a coroutine that suspends only on futures with `add_done_callback`, so it can be
  stepped from their callbacks the way a Task steps it, without a Task per connection.
"""

from __future__ import annotations

import _socket
import asyncio
import functools
import socket
from collections.abc import Callable, Coroutine
from typing import Any


def accept_call(sock: socket.socket) -> Callable[[], tuple[int, Any]]:
    """The call that accepts one client of `sock`: (its descriptor, its address).

    Raises what `sock.accept()` raises; the caller owns the descriptor.
    """
    return sock._accept  # type: ignore[attr-defined,no-any-return]


class AcceptedSocket(socket.socket):
    """A `socket.socket` whose `family` and `type` read as plain ints.

    `socket.socket` turns both into enum members on every read, and the event loop reads
    them three times while adopting a connection: that costs more than the rest of the
    adoption together. The values compare equal either way.
    """

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


def adopt(
    setup: Coroutine[Any, Any, object],
    on_failure: Callable[[BaseException], None],
    _resumed_by: asyncio.Future[Any] | None = None,
) -> None:
    """Run `setup` (a `connect_accepted_socket` call) to its end; `on_failure(exc)` if it raises.

    Its result is dropped: the protocol's `connection_made` already received the transport.
    For a plain TCP socket the transport is built at once and the coroutine then only waits
    for `connection_made`, one loop iteration later; a Task for that wait (object, registry
    entry, scheduled first step, done callback) costs more than the rest of the setup.
    `_resumed_by` is the future whose completion resumed it, passed by its done callback.
    """
    try:
        # Resuming makes the coroutine's `await` read the future's result (or raise its
        # exception) itself, exactly as after a Task's wakeup.
        waiting = setup.send(None)
    except StopIteration:
        return
    except Exception as exc:
        on_failure(exc)
        return
    waiting.add_done_callback(functools.partial(adopt, setup, on_failure))
