"""What the clients send: slices of one seeded random pattern, so every echo can be checked."""

from __future__ import annotations

import random

SPAN = 1 << 20
"""Payload offsets wrap at this many bytes; one read or message is never longer."""

PATTERN = random.Random(20240613).randbytes(SPAN) * 2
"""What every connection sends: ``PATTERN[offset:offset + n]`` with ``offset < SPAN``.

The second half repeats the first, so byte ``i`` of a stream starting at ``s`` is
``PATTERN[(s + i) % SPAN]`` whichever slice carried it.
"""

STRIDE = 40_009
"""How far a connection's payload offset moves per round trip (prime, so offsets cycle)."""


def start_offset(connection: int, spacing: int = 7919) -> int:
    """Where connection number `connection` starts in the pattern: a different place for each."""
    return (connection * spacing) % SPAN


def first_difference(data: bytes, offset: int) -> int:
    """The index in `data` of its first byte that is not ``PATTERN[offset + index]``.

    Only called once a check has failed, so a plain loop is fine; -1 if nothing differs.
    """
    expected = PATTERN[offset : offset + len(data)]
    for index, (got, want) in enumerate(zip(data, expected, strict=False)):
        if got != want:
            return index
    return len(expected) if len(data) > len(expected) else -1
