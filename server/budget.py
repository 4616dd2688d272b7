"""The process-wide budget for echo bytes waiting to go back, and the read buffers it lends.

Every connection reads into one shared buffer, so a client whose echo goes straight back to
the kernel costs no allocation at all. A connection whose transport keeps bytes queued (its
client reads slower than it sends) takes that buffer over, and later reads go into buffers
of its own; each such buffer is charged to the budget until the queue drains. Buffers are
anonymous memory maps, so when one is released its pages go back to the operating system at
once instead of staying in the allocator's heap (see README, "Limits and security").
"""

from __future__ import annotations

import mmap

READ_BYTES = 65536
"""How much one read takes while the budget has room."""

SQUEEZED_READ_BYTES = mmap.PAGESIZE
"""How much one read takes once the budget is spent: all a newly slow client can add to it."""


class BufferBudget:
    """Charges held buffers against `limit_bytes`; `spent` says when connections must wait.

    `view` is the shared read buffer; `take_view` and `new_buffer` hand out buffers that a
    connection then owns, charging them; `charge` adds (or, negative, gives back) the rest.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.charged = 0
        self.spent = False
        self.view = _anonymous(READ_BYTES)

    def take_view(self) -> memoryview:
        """The shared read buffer, now the caller's (and charged); a fresh one replaces it."""
        taken = self.view
        self._charge(len(taken), replace_view=True)
        return taken

    def new_buffer(self) -> memoryview:
        """A buffer of the caller's own, charged: as large as a read while the budget has room."""
        buffer = _anonymous(self._read_size())
        self._charge(len(buffer))
        return buffer

    def resize(self, limit_bytes: int) -> None:
        """Charge against `limit_bytes` from now on (a reload); what is held stays held, and
        connections paused on a spent budget read again as their queues drain."""
        self.limit_bytes = limit_bytes
        self._charge(0)

    def charge(self, nbytes: int) -> None:
        """Count `nbytes` more as held (fewer, if negative)."""
        self._charge(nbytes)

    def _charge(self, nbytes: int, replace_view: bool = False) -> None:
        self.charged += nbytes
        self.spent = self.charged >= self.limit_bytes
        size = self._read_size()
        if replace_view or len(self.view) != size:
            self.view = _anonymous(size)

    def _read_size(self) -> int:
        """A full read while one more fits in the budget, else a page."""
        room = self.limit_bytes - self.charged
        return READ_BYTES if room >= READ_BYTES else SQUEEZED_READ_BYTES


def _anonymous(size: int) -> memoryview:
    """`size` bytes of fresh anonymous memory; unmapped when the last view of it is dropped."""
    return memoryview(mmap.mmap(-1, size))
