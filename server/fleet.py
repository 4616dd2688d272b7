"""The whole instance as the status page sees it when several worker processes echo.

Each worker reports its own snapshot and busiest connections once per tick over a pipe, and
at once whenever the supervisor asks (`refresh`, before answering an API request or a
scrape); `FleetStats` keeps the latest report of each and sums them on demand. Nothing
crosses a process boundary on the echo path. A worker that dies is folded into retired totals: its
connections count as closed, its bytes and accepts stay in the lifetime figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

from echostat.server.messages import Question, Report, decode_report
from echostat.server.pages import PAGE_SLICE_ROWS
from echostat.server.path_quality import TcpSnapshot
from echostat.server.reload import ReloadCounters
from echostat.server.snapshots import (
    ConnectionSnapshot,
    ConnectionsPage,
    ListenerSnapshot,
    RowKey,
    RowsEncoder,
    StatsSnapshot,
)
from echostat.server.udp_stats import RECEIVE_BUFFER, PeerSnapshot, UDPListenerSnapshot

REPORT_INTERVAL_S = 0.5
"""How often workers report; the page and API lag the echo path by at most this."""

CONNECTIONS_PER_REPORT = 200
"""Each worker reports its busiest connections only, so a report stays small."""

MAX_CONNECTIONS_PER_ANSWER = 1000
"""The most rows a worker sends when asked for more (``/api/connections?limit=``'s maximum)."""

PAGE_DEADLINE_S = 2.0
"""How long a page waits for every worker's rows; a page can't use an older report, so a
worker late beyond it ends the page before its rows (the cursor then resumes there)."""

ASK_DEADLINE_S = 0.2
"""How long a request waits for the workers' answers before using older reports."""

Ask = Callable[[Question], None]
"""Puts a question to one worker."""


class FleetStats:
    """A `StatsSource` over every worker's latest report plus the totals of dead workers."""

    def __init__(self) -> None:
        self.accepting = False
        self.ready = False
        self._started = time.monotonic()
        self._reports: dict[int, Report] = {}
        self._retired: list[StatsSnapshot] = []
        self.worker_restarts = 0
        self.config_state = ReloadCounters(loaded_at=time.time())
        self._askers: dict[int, Ask] = {}
        self._question = 0
        self._unanswered: set[int] = set()
        self._all_answered = asyncio.Event()
        self._rounds = _Rounds(self._ask_everyone)
        self._pages: dict[int, _PageAnswers] = {}
        self._page_question = 0
        """Page questions count down from -1, apart from the rounds' numbers."""
        self.kernel_drops: Callable[[], dict[str, int]] | None = None
        """The kernel's drop counts of each UDP listener's sockets, read by whoever holds every
        socket once, to stand for the workers' sum: workers sharing one socket, or a worker
        restarted on its predecessor's, each read the socket's whole count."""

    def add_worker(self, pid: int, ask: Ask) -> None:
        """Worker `pid` runs; `ask` puts a question to it (see `refresh`)."""
        self._askers[pid] = ask

    async def refresh(self, connections: int = 0) -> None:
        """Ask every worker for its figures and `connections` busiest rows now; return once all
        have answered or `ASK_DEADLINE_S` has passed (the late ones keep their last report)."""
        await self._rounds.join(connections)

    def update(self, pid: int, line: bytes) -> None:
        """Record the report line `line` from worker `pid`."""
        report = self._reports[pid] = decode_report(line, time.monotonic())
        if report.answers == self._question:
            self._answered(pid)
        waiting = self._pages.get(report.answers or 0)
        if waiting is not None and report.page is not None:
            waiting.answered(pid, report.page)

    def retire(self, pid: int) -> None:
        """Worker `pid` is gone: its open connections died with it."""
        self._askers.pop(pid, None)
        self._answered(pid)
        for waiting in self._pages.values():
            waiting.answered(pid, ConnectionsPage([], None))  # its connections died with it
        report = self._reports.pop(pid, None)
        if report is None:
            return
        snap = report.snapshot
        self._retired.append(
            dataclasses.replace(
                snap,
                active=0,
                closed=snap.closed + snap.active,
                listeners=tuple(
                    dataclasses.replace(s, active=0, closed=s.closed + s.active)
                    for s in snap.listeners
                ),
                tcp=dataclasses.replace(snap.tcp, open_rtt_ms=()),
                udp_listeners=tuple(dataclasses.replace(u, peers=0) for u in snap.udp_listeners),
            )
        )

    @property
    def active(self) -> int:
        return sum(report.snapshot.active for report in self._reports.values())

    def snapshot(self) -> StatsSnapshot:
        now = time.monotonic()
        live = [report.snapshot for report in self._reports.values()]
        everyone = [*live, *self._retired]
        rejected: Counter[str] = Counter()
        closed_by_server: Counter[str] = Counter()
        for snap in everyone:
            rejected.update(snap.rejected)
            closed_by_server.update(snap.closed_by_server)
        return StatsSnapshot(
            taken_at=time.time(),
            uptime_seconds=now - self._started,
            accepting=self.accepting,
            ready=self.ready,
            active=sum(s.active for s in live),
            accepted=sum(s.accepted for s in everyone),
            closed=sum(s.closed for s in everyone),
            rejected=dict(rejected),
            closed_by_server=dict(closed_by_server),
            bytes_received=sum(s.bytes_received for s in everyone),
            bytes_sent=sum(s.bytes_sent for s in everyone),
            listeners=_merge_listeners(everyone),
            workers=tuple(
                dataclasses.replace(worker, stale_s=round(now - report.received_at, 3))
                for report in self._reports.values()
                for worker in report.snapshot.workers
            ),
            udp_listeners=self._udp_listeners(everyone),
            worker_restarts=self.worker_restarts,
            config_loaded_at=self.config_state.loaded_at,
            reloads=self.config_state.reloads,
            reloads_failed=self.config_state.failed,
            tcp=TcpSnapshot.merge([s.tcp for s in everyone]),
            buffered_bytes=sum(s.buffered_bytes for s in live),
            access_log_errors=sum(s.access_log_errors for s in everyone),
        )

    def _udp_listeners(self, everyone: list[StatsSnapshot]) -> tuple[UDPListenerSnapshot, ...]:
        merged = _merge_udp_listeners(everyone)
        if self.kernel_drops is None:
            return merged
        drops = self.kernel_drops()
        return tuple(
            u if u.name not in drops else _with_receive_buffer(u, drops[u.name]) for u in merged
        )

    def connections(self, limit: int | None = None) -> list[ConnectionSnapshot]:
        """The busiest connections over all workers (each worker reports its busiest)."""
        rows = [row for report in self._reports.values() for row in report.connections]
        rows.sort(key=lambda c: c.bytes_received + c.bytes_sent, reverse=True)
        return rows[:limit]

    async def connections_page(
        self, limit: int, after: RowKey | None, encode: RowsEncoder | None = None
    ) -> ConnectionsPage:
        """The busiest rows of the latest reports (`after` None; call `refresh` first), or
        a page after `after`: each worker is asked for its own, and they are merged. With
        `encode`, as slices encoded one turn of the loop at a time."""
        page = await self._page(limit, after)
        if encode is None:
            return page
        encoded = []
        for start in range(0, len(page.rows), PAGE_SLICE_ROWS):
            if start:
                await asyncio.sleep(0)
            encoded.append(encode(page.rows[start : start + PAGE_SLICE_ROWS]))
        return ConnectionsPage([], page.next_after, encoded)

    async def _page(self, limit: int, after: RowKey | None) -> ConnectionsPage:
        if after is None:
            return ConnectionsPage(self.connections(limit), None)
        self._page_question -= 1
        number = self._page_question
        waiting = self._pages[number] = _PageAnswers(set(self._askers))
        question = Question(number, limit, after)
        try:
            for ask in list(self._askers.values()):
                ask(question)
            if waiting.unanswered:
                await asyncio.wait_for(waiting.done.wait(), PAGE_DEADLINE_S)
        except TimeoutError:
            pass
        finally:
            del self._pages[number]
        return waiting.merged(limit, after)

    def peers(self, limit: int | None = None) -> list[PeerSnapshot]:
        """The UDP peers with most datagrams over all workers (each reports its busiest)."""
        rows = [row for report in self._reports.values() for row in report.peers]
        rows.sort(key=lambda p: p.datagrams_received, reverse=True)
        return rows[:limit]

    async def _ask_everyone(self, connections: int) -> None:
        self._question += 1
        self._unanswered = set(self._askers)
        self._all_answered.clear()
        rows = min(max(connections, CONNECTIONS_PER_REPORT), MAX_CONNECTIONS_PER_ANSWER)
        question = Question(self._question, rows)
        for ask in self._askers.values():
            ask(question)
        if self._unanswered:
            try:
                await asyncio.wait_for(self._all_answered.wait(), ASK_DEADLINE_S)
            except TimeoutError:
                pass

    def _answered(self, pid: int) -> None:
        self._unanswered.discard(pid)
        if not self._unanswered:
            self._all_answered.set()


class _PageAnswers:
    """The pages workers sent for one page question, and who has yet to answer."""

    def __init__(self, unanswered: set[int]) -> None:
        self.unanswered = unanswered
        self.pages: dict[int, ConnectionsPage] = {}
        self.done = asyncio.Event()
        if not unanswered:
            self.done.set()

    def answered(self, pid: int, page: ConnectionsPage) -> None:
        if pid in self.unanswered:
            self.unanswered.discard(pid)
            self.pages[pid] = page
            if not self.unanswered:
                self.done.set()

    def merged(self, limit: int, after: RowKey) -> ConnectionsPage:
        """The first `limit` rows over every worker's page, in `RowKey` order. Rows of the
        workers that answered are complete up to the first that didn't; the page ends there."""
        late = min(self.unanswered, default=None)
        rows = sorted(
            (row for page in self.pages.values() for row in page.rows),
            key=lambda row: RowKey(row.worker, row.id),
        )
        if late is not None:
            rows = [row for row in rows if row.worker < late]
        more = (
            late is not None or len(rows) > limit or any(p.next_after for p in self.pages.values())
        )
        rows = rows[:limit]
        if not more:
            return ConnectionsPage(rows, None)
        return ConnectionsPage(rows, RowKey(rows[-1].worker, rows[-1].id) if rows else after)


class _Rounds:
    """Runs `ask_round` one round at a time; a caller waits for a round that began after it
    called, and everyone who called during a round shares the next one."""

    def __init__(self, ask_round: Callable[[int], Awaitable[None]]) -> None:
        self._ask_round = ask_round
        self._next: asyncio.Future[None] | None = None
        self._rows = 0
        self._runner: asyncio.Task[None] | None = None

    async def join(self, rows: int) -> None:
        self._rows = max(self._rows, rows)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())
        await asyncio.shield(waiting)

    async def _run(self) -> None:
        try:
            while (due := self._next) is not None:
                self._next = None
                rows, self._rows = self._rows, 0
                try:
                    await self._ask_round(rows)
                finally:
                    due.set_result(None)
        finally:
            self._runner = None


def _merge_listeners(snapshots: Iterable[StatsSnapshot]) -> tuple[ListenerSnapshot, ...]:
    """Listeners by name, in first-seen order, with counts summed over `snapshots`."""
    merged: dict[str, ListenerSnapshot] = {}
    for snap in snapshots:
        for item in snap.listeners:
            seen = merged.get(item.name)
            merged[item.name] = (
                item
                if seen is None
                else dataclasses.replace(
                    seen,
                    active=seen.active + item.active,
                    accepted=seen.accepted + item.accepted,
                    closed=seen.closed + item.closed,
                    bytes_received=seen.bytes_received + item.bytes_received,
                    bytes_sent=seen.bytes_sent + item.bytes_sent,
                )
            )
    return tuple(merged.values())


def _merge_udp_listeners(snapshots: Iterable[StatsSnapshot]) -> tuple[UDPListenerSnapshot, ...]:
    """UDP listeners by name with counts summed; a retired worker's peers are gone."""
    merged: dict[str, UDPListenerSnapshot] = {}
    for snap in snapshots:
        for item in snap.udp_listeners:
            seen = merged.get(item.name)
            merged[item.name] = item if seen is None else _add_udp(seen, item)
    return tuple(merged.values())


def _add_udp(a: UDPListenerSnapshot, b: UDPListenerSnapshot) -> UDPListenerSnapshot:
    return dataclasses.replace(
        a,
        datagrams_received=a.datagrams_received + b.datagrams_received,
        datagrams_sent=a.datagrams_sent + b.datagrams_sent,
        bytes_received=a.bytes_received + b.bytes_received,
        bytes_sent=a.bytes_sent + b.bytes_sent,
        dropped=dict(Counter(a.dropped) + Counter(b.dropped)),
        peers=a.peers + b.peers,
        peers_evicted=a.peers_evicted + b.peers_evicted,
    )


def _with_receive_buffer(listener: UDPListenerSnapshot, drops: int) -> UDPListenerSnapshot:
    """`listener` with `drops` as its kernel drops (listed, as always, once there are some)."""
    dropped = {reason: n for reason, n in listener.dropped.items() if reason != RECEIVE_BUFFER}
    if drops:
        dropped[RECEIVE_BUFFER] = drops
    return dataclasses.replace(listener, dropped=dropped)
