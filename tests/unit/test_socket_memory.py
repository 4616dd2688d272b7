"""SO_MEMINFO decoding on captured bytes: the drop counter at its offset, None when cut short."""

from __future__ import annotations

import struct

from echostat.server.socket_memory import BUFFER_BYTES, decode_drops

CAPTURED = struct.pack("=9I", 7488, 8192, 0, 212992, 704, 0, 0, 0, 91)
"""A UDP socket with a 4 KiB receive buffer after 100 datagrams of 64 bytes, none read:
RMEM_ALLOC 7488, RCVBUF 8192, ..., DROPS 91 (Linux 6.18)."""


def test_captured_counters_give_the_drops() -> None:
    assert decode_drops(CAPTURED) == 91


def test_a_longer_array_from_a_newer_kernel_still_gives_the_drops() -> None:
    assert decode_drops(CAPTURED + struct.pack("=I", 5)) == 91


def test_an_array_without_the_drop_counter_gives_none() -> None:
    assert decode_drops(CAPTURED[: BUFFER_BYTES - 1]) is None
    assert decode_drops(b"") is None
