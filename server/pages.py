"""Pages of a registry's connection rows, built a slice at a time between turns of the loop.

A page is the busiest `limit` connections, or the `limit` after a `RowKey` in the order a
walk takes (worker pid, then id). TCP_INFO is read and rows are built (and encoded, given an
encoder) `PAGE_SLICE_ROWS` at a time, yielding to the loop between slices, so a page of a
thousand rows never holds the echo for long.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from typing import TYPE_CHECKING

from echostat.server.snapshots import ConnectionSnapshot, ConnectionsPage, RowKey, RowsEncoder

if TYPE_CHECKING:
    from echostat.server.registry import Connection, Registry

PAGE_SLICE_ROWS = 50
"""Rows a page builds between two turns of the event loop (a millisecond or two of work)."""


def moved(conn: Connection) -> int:
    """Bytes a connection moved, both ways: what ranks the busiest."""
    return conn.bytes_received + conn.bytes_sent


async def build_page(
    registry: Registry, limit: int, after: RowKey | None, encode: RowsEncoder | None
) -> ConnectionsPage:
    """At most `limit` open connections of `registry`: the busiest first when `after` is
    None, else those after `after`, with the key to continue from if more follow."""
    more = False
    if after is None:
        chosen = heapq.nlargest(limit, registry.active_connections(), key=moved)
    else:
        chosen, more = _after(registry, after, limit)
    rows: list[ConnectionSnapshot] = []
    encoded: list[str] = []
    for start in range(0, len(chosen), PAGE_SLICE_ROWS):
        if start:
            await asyncio.sleep(0)
        built = registry.rows(chosen[start : start + PAGE_SLICE_ROWS])
        if encode is None:
            rows += built
        else:
            encoded.append(encode(built))
    last = RowKey(registry.pid, chosen[-1].id) if more else None
    return ConnectionsPage(rows, last, encoded)


def _after(registry: Registry, after: RowKey, limit: int) -> tuple[list[Connection], bool]:
    """The first `limit` open connections after `after`, and whether more follow."""
    if after.worker > registry.pid:
        return [], False
    # Ids grow with each accept and a closed connection never returns, so open connections
    # are listed in id order.
    active = list(registry.active_connections())
    ids = [conn.id for conn in active]
    first = bisect.bisect_right(ids, after.id) if after.worker == registry.pid else 0
    return active[first : first + limit], len(ids) - first > limit
