"""The process-wide budget for echo bytes waiting to go back, and the read buffers it lends.

While the budget has room, connections read into the event loop's own buffer, the cheapest
read there is, and a read whose echo goes straight back to the kernel is gone at once. A
connection whose transport keeps bytes queued (its client reads slower than it sends) is
charged for that read and reads on into buffers the budget lends: one shared buffer, taken
over when its echo queues, then buffers of the connection's own, each charged until the
queue drains. Once less than one loop read fits, every connection reads into lent buffers,
whose size the budget sets. Lent buffers are anonymous memory maps, so when one is released
its pages go back to the operating system at once (see README, "Limits and security").
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

READ_BYTES = 65536
"""How much one read into a lent buffer takes while the budget has room."""

LOOP_READ_BYTES = 262144
"""The most one read into the event loop's own buffer takes (uvloop's and asyncio's alike)."""

HELD_READS_SHARE = 8
"""At most 1/8 of the budget may be held as reads into the loop's buffer: those live in the
C allocator's heap, which may keep their pages after they are freed."""

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
        self.held_reads = 0
        """Of `charged`, the reads into the loop's buffer that transports hold."""
        self.lending = self._short_of_room()
        """Every connection reads into lent buffers: set once a loop read may no longer fit
        (in the budget, or in its share for held reads), cleared once both are half free
        again, so that it can't flap on every read."""
        self.on_lending: Callable[[bool], object] | None = None
        """Called with the new `lending` whenever it changes."""
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

    def charge(self, nbytes: int, held_read: bool = False) -> None:
        """Count `nbytes` more as held (fewer, if negative); `held_read`: they are (or were)
        a read into the loop's buffer that a transport holds."""
        if held_read:
            self.held_reads += nbytes
        self._charge(nbytes)

    def _charge(self, nbytes: int, replace_view: bool = False) -> None:
        self.charged += nbytes
        self.spent = self.charged >= self.limit_bytes
        size = self._read_size()
        if replace_view or len(self.view) != size:
            self.view = _anonymous(size)
        if self.lending:
            lending = (
                self.charged > self.limit_bytes // 2
                or self.held_reads > self.limit_bytes // HELD_READS_SHARE // 2
            )
        else:
            lending = self._short_of_room()
        if lending != self.lending:
            self.lending = lending
            if self.on_lending is not None:
                self.on_lending(lending)

    def _short_of_room(self) -> bool:
        """Whether one more loop read may not fit in the budget or in the held reads' share."""
        reads_room = self.limit_bytes // HELD_READS_SHARE - self.held_reads
        return min(self.limit_bytes - self.charged, reads_room) < LOOP_READ_BYTES

    def _read_size(self) -> int:
        """A full read while one more fits in the budget, else a page."""
        room = self.limit_bytes - self.charged
        return READ_BYTES if room >= READ_BYTES else SQUEEZED_READ_BYTES


def _anonymous(size: int) -> memoryview:
    """`size` bytes of fresh anonymous memory; unmapped when the last view of it is dropped."""
    return memoryview(mmap.mmap(-1, size))
