"""Put an accepted socket under the event loop's transport without a task per connection.

`loop.connect_accepted_socket` is a coroutine: for a plain TCP socket it builds the transport
at once and then only waits for the protocol's `connection_made`, one loop iteration later.
Wrapping it in a Task (object, registry entry, scheduled first step, done callback) costs
more than the rest of a connection's setup, so it is stepped here the way a Task would step
it: on each future it waits for, resume it from that future's done callback.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any


def adopt(
    setup: Coroutine[Any, Any, object],
    on_failure: Callable[[BaseException], None],
    _resumed_by: asyncio.Future[Any] | None = None,
) -> None:
    """Run `setup` (a `connect_accepted_socket` call) to its end; `on_failure(exc)` if it raises.

    Its result is dropped: the protocol's `connection_made` already received the transport.
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
