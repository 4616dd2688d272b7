"""What the kernel counts for one socket's memory: Linux's ``SO_MEMINFO``, decoded.

``getsockopt(SOL_SOCKET, SO_MEMINFO)`` returns the ``SK_MEMINFO_*`` array of 32-bit counters
(``include/uapi/linux/sock_diag.h``, Linux 4.12+), the same figures ``ss -m`` prints. echostat
reads one: ``SK_MEMINFO_DROPS``, the socket's ``sk_drops``, datagrams the kernel discarded
for this socket, almost always because its receive buffer was full. It is the counter that
``SO_RXQ_OVFL`` would attach to every datagram as ancillary data; read this way it costs one
system call when somebody asks, and nothing on the receive path. `decode_drops` does no I/O
and gives None for a buffer too short to hold the counter (an older kernel).
"""

from __future__ import annotations

import struct
import sys

SO_MEMINFO: int | None = 55 if sys.platform == "linux" else None
"""The socket option number on Linux (``asm-generic/socket.h``; Python's socket module has no
name for it), or None elsewhere, where the number means something else or nothing."""

_DROPS = struct.Struct("=I")
_DROPS_OFFSET = 8 * _DROPS.size
"""``SK_MEMINFO_DROPS`` is the ninth counter, after RMEM_ALLOC, RCVBUF, WMEM_ALLOC, SNDBUF,
FWD_ALLOC, WMEM_QUEUED, OPTMEM and BACKLOG."""

BUFFER_BYTES = _DROPS_OFFSET + _DROPS.size
"""How much to ask the kernel for: up to the drop counter."""


def decode_drops(data: bytes) -> int | None:
    """The drop counter in `data`, the bytes of an SO_MEMINFO getsockopt, or None if the
    kernel returned too few counters to include it."""
    if len(data) < BUFFER_BYTES:
        return None
    return int(_DROPS.unpack_from(data, _DROPS_OFFSET)[0])
