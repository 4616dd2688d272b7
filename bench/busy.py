"""Other work on the machine while a cell runs: the load average, and the CPU time that
processes outside this benchmark used, so that a cell measured on a busy machine is rerun and,
if it stays busy, marked in the report."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSY_CORES = 0.25
"""A cell is busy when other processes used more than this many cores on average meanwhile."""

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineLoad:
    """What else ran while one cell ran."""

    load_average: float
    """The 1-minute load average at the end of the cell."""
    other_cores: float
    """Cores that processes outside this benchmark (its servers and load generators) kept
    busy, on average over the cell."""

    @property
    def busy(self) -> bool:
        return self.other_cores > BUSY_CORES


@dataclass(frozen=True)
class _Reading:
    at_s: float
    machine_s: float
    """CPU time all processes of the machine have used (every core, since boot)."""
    ours_s: float
    """CPU time this process and its descendants have used, reaped or alive."""


def watched(run: Callable[[], T]) -> tuple[T, MachineLoad | None]:
    """`run()`'s result, and what else ran meanwhile (None where /proc can't tell: not Linux)."""
    before = _reading()
    result = run()
    after = _reading()
    if before is None or after is None or after.at_s <= before.at_s:
        return result, None
    others_s = (after.machine_s - before.machine_s) - (after.ours_s - before.ours_s)
    load = float(Path("/proc/loadavg").read_text().split()[0])
    return result, MachineLoad(load, round(max(0.0, others_s) / (after.at_s - before.at_s), 3))


def _reading() -> _Reading | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    busy_ticks = sum(int(v) for i, v in enumerate(fields[1:9]) if i not in (3, 4))
    return _Reading(time.monotonic(), busy_ticks / _TICKS_PER_S, _our_cpu_s())


def _our_cpu_s() -> float:
    """CPU seconds of this process, its reaped children, and every live descendant."""
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name (in parentheses) may hold spaces: split after its closing one.
        rest = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(rest[1])
        # utime stime cutime cstime: its own time and that of the children it reaped.
        times[pid] = sum(int(v) for v in rest[11:15]) / _TICKS_PER_S
    me = os.getpid()
    for pid, spent in times.items():
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor > 1 and ancestor != me:
            ancestor = parents.get(ancestor)
        if ancestor == me:
            used += spent
    return used
