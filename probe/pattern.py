"""What the clients send: slices of one seeded random pattern, so every echo can be checked."""

from __future__ import annotations

import functools
import random

SPAN = 1 << 20
"""Payload offsets wrap at this many bytes; one read or message is never longer."""

DEFAULT_SEED = 20240613
"""The seed of the benchmark's runs and of the watcher's rounds, which need not differ from
each other."""


@functools.lru_cache(maxsize=2)
def pattern_of(seed: int) -> bytes:
    """What a run with `seed` sends: ``pattern_of(seed)[offset:offset + n]`` with ``offset < SPAN``.

    The second half repeats the first, so byte ``i`` of a stream starting at ``s`` is
    ``pattern[(s + i) % SPAN]`` whichever slice carried it. Runs with different seeds send
    different bytes, so a server that crosses two runs' connections fails both.
    """
    return random.Random(seed).randbytes(SPAN) * 2


STRIDE = 40_009
"""How far a connection's payload offset moves per round trip (prime, so offsets cycle)."""


def start_offset(connection: int, spacing: int = 7919) -> int:
    """Where connection number `connection` starts in the pattern: a different place for each."""
    return (connection * spacing) % SPAN


def first_difference(data: bytes, offset: int, pattern: bytes) -> int:
    """The index in `data` of its first byte that is not ``pattern[offset + index]``.

    Only called once a check has failed, so a plain loop is fine; -1 if nothing differs.
    """
    expected = pattern[offset : offset + len(data)]
    for index, (got, want) in enumerate(zip(data, expected, strict=False)):
        if got != want:
            return index
    return len(expected) if len(data) > len(expected) else -1
