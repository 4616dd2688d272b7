"""Several worker processes on one host: the supervisor binds, spawns, watches and drains.

The supervisor binds every listener once per worker with SO_REUSEPORT (so the kernel spreads
connections over the workers), or once for all workers when the sockets came from systemd;
starts each worker as a fresh ``python -m echostat.server.worker`` process that inherits its
sockets; owns the status port and serves the status side from `FleetStats`, fed by each
worker's report pipe; restarts a worker that dies; and on SIGTERM/SIGINT runs the same drain as
a single process. A worker's listening sockets stay open in the supervisor while it restarts,
so clients that arrive meanwhile wait in the backlog instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping

from tornado.iostream import PipeIOStream, StreamClosedError

from echostat.server import __version__
from echostat.server.access_log import AccessLog
from echostat.server.config import Config, ListenerConfig
from echostat.server.config_loading import describe_source, load_config, reread_config_text
from echostat.server.fleet import FleetStats
from echostat.server.messages import (
    REPORT_MAX_BYTES,
    WORKER_MODULE,
    Question,
    WorkerSpec,
    encode_config_message,
    encode_question,
)
from echostat.server.reload import Reloader
from echostat.server.resources import describe_max_connections, reserve_descriptors
from echostat.server.runtime import apply_log_level
from echostat.server.signals import catch_reload_signal, catch_stop_signals, restore_stop_signals
from echostat.server.sockets import (
    bind,
    bind_udp,
    check_inherited_status,
    served_host,
    url_host,
)
from echostat.server.status_side import StatusSideFactory
from echostat.server.udp import read_kernel_drops
from echostat.server.wording import count_of

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 1.0
"""A worker that dies sooner than this after starting, or before it served, is restarted after
a pause: this long the first time, twice the last pause each time again, up to
`RESTART_PAUSE_MAX_S`."""

RESTART_PAUSE_MAX_S = 30.0
"""The longest pause before restarting a worker that keeps dying as it starts (a certificate
gone), so that it costs two log lines every half a minute, not every second."""

EXIT_MARGIN_S = 5.0
"""Time beyond the workers' own drain before the supervisor kills stragglers."""


class Supervisor:
    """Runs `config.worker_count` workers; `run` returns once all have exited after a signal.

    `config` is what `config_text` (the file's content, read once by the caller) validated
    to; a reload reads the file again. The status side (`status_side`, built over the fleet's
    figures) runs in this process.
    """

    def __init__(
        self,
        config: Config,
        config_text: str,
        config_path: str | None,
        overrides: list[str],
        status_side: StatusSideFactory,
        inherited: Mapping[str, list[socket.socket]] | None = None,
    ) -> None:
        self.config = config
        self.fleet = FleetStats()
        self.status = status_side(self.fleet, config)
        self._config_path = None if config_path is None else os.path.abspath(config_path)
        self._overrides = overrides
        self._config_text = config_text
        """The config file's text in force (the text `config` was validated from), sent to
        every worker that starts."""
        self._loaded_text = ""
        # Workers start accepting at once and leave the readiness delay to the supervisor.
        self._worker_overrides = [*overrides, "workers=1", "shutdown_delay_s=0"]
        self._inherited = dict(inherited or {})
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._held: list[socket.socket] = []
        """Listening sockets of every worker; held open, never accepted on, by the supervisor."""
        self._udp_sockets: dict[str, list[socket.socket]] = {}
        """Each UDP listener's sockets, once each, whose kernel drop counters the fleet reports."""
        self.fleet.kernel_drops = self._kernel_drops
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        stop_requested = catch_stop_signals(on_second=self._kill_all)
        loop = asyncio.get_running_loop()
        # Each worker reopens its own access log; a reload may have enabled it since start.
        loop.add_signal_handler(signal.SIGUSR1, self._signal_all, signal.SIGUSR1)
        try:
            reloader = Reloader(self.config, self._load, self._apply, self.fleet.config_state)
            catch_reload_signal(reloader.reload)
            await self._run(stop_requested)
        finally:
            restore_stop_signals()
            loop.remove_signal_handler(signal.SIGUSR1)

    async def _run(self, stop_requested: asyncio.Event) -> None:
        reserve_descriptors(self.config.limits.max_connections)
        slots = self._bind_all()
        status_sockets = self._inherited.pop("status", [])
        check_inherited_status(status_sockets, self.config.status)
        status_sockets = status_sockets or self._bind_status()
        self.status.start(status_sockets)
        keepers = [asyncio.ensure_future(self._keep_running(n, fds)) for n, fds in slots.items()]
        self.fleet.accepting = self.fleet.ready = True
        log.info(
            "echostat %s supervisor (pid %d) running %d workers; status page on http://%s:%d/;"
            " %s per worker%s",
            __version__,
            os.getpid(),
            len(slots),
            url_host(served_host(self.config.status.host, status_sockets)),
            self.status.port,
            describe_max_connections(self.config),
            describe_source(self._config_path is None),
        )
        await stop_requested.wait()
        await self._drain(keepers)
        await self.status.stop()

    def _load(self) -> Config:
        """Read and validate the config file once, for the supervisor and all its workers."""
        text = reread_config_text(self._config_path)
        config = load_config(self._config_path, os.environ, self._overrides, text=text)
        self._loaded_text = text
        return config

    def _apply(self, config: Config) -> None:
        """Put the config `_load` validated in force here and pass its text to each worker;
        raises `ResourceError`, changing nothing, when a new access log can't be opened."""
        if config.access_log.enabled and config.access_log != self.config.access_log:
            # Each worker opens its own: one that can't refuses here, not in every worker.
            AccessLog(config.access_log).close()
        self.config = config
        self._config_text = self._loaded_text
        self.status.reconfigure(config)
        apply_log_level(config)
        for process in self._processes.values():
            assert process.stdin is not None
            process.stdin.write(encode_config_message(self._config_text))

    def _bind_all(self) -> dict[int, dict[str, list[int]]]:
        """Listening descriptors for each worker slot, by listener name."""
        count = self.config.worker_count
        slots: dict[int, dict[str, list[int]]] = {n: {} for n in range(count)}
        for index, listener in enumerate(self.config.listeners):
            key = f"listeners[{index}]"
            shared = self._inherited.pop(listener.name, None)
            bind_one = _binder(key, listener)
            if shared is None and not hasattr(socket, "SO_REUSEPORT"):
                shared = bind_one(listener.port, False)
            if shared is not None:
                per_slot = [shared] * count
                self._held += shared
            else:
                if listener.port:
                    # SO_REUSEPORT would let this fleet share a port another one (of the same
                    # user) serves: a plain bind first refuses a port in use, as one process does.
                    for sock in bind_one(listener.port, False):
                        sock.close()
                first = bind_one(listener.port, True)
                port = first[0].getsockname()[1]
                per_slot = [first]
                per_slot += [bind_one(port, True) for _ in range(count - 1)]
                self._held += [sock for sockets in per_slot for sock in sockets]
            for n, sockets in enumerate(per_slot):
                slots[n][listener.name] = [sock.fileno() for sock in sockets]
            if listener.protocol == "udp":
                every = [sock for sockets in per_slot for sock in sockets]
                self._udp_sockets[listener.name] = shared if shared is not None else every
        return slots

    def _kernel_drops(self) -> dict[str, int]:
        drops = {name: read_kernel_drops(sockets) for name, sockets in self._udp_sockets.items()}
        return {name: count for name, count in drops.items() if count is not None}

    def _bind_status(self) -> list[socket.socket]:
        return bind("status", self.config.status.host, self.config.status.port)

    async def _keep_running(self, slot: int, listeners: dict[str, list[int]]) -> None:
        """Run the worker of `slot`, restarting it whenever it dies, until shutdown."""
        pause = 0.0
        while True:
            started = time.monotonic()
            process, reports, asks = await self._spawn(slot, listeners)
            if self._stopping.is_set():  # the drain began while it started: it missed SIGTERM
                process.send_signal(signal.SIGTERM)
            served = await self._read_reports(process.pid, reports)
            code = await process.wait()
            self.fleet.retire(process.pid)
            asks.close()
            del self._processes[slot]
            if self._stopping.is_set():
                log.info("worker %d (pid %d) exited with status %d", slot, process.pid, code)
                return
            self.fleet.worker_restarts += 1
            if served and time.monotonic() - started >= RESTART_PAUSE_S:
                pause = 0.0
            else:
                pause = min(2 * pause, RESTART_PAUSE_MAX_S) if pause else RESTART_PAUSE_S
            log.warning(
                "worker %d (pid %d) died (%s); restarting it%s",
                slot,
                process.pid,
                _describe_exit(code),
                f" in {pause:g} s" if pause else "",
            )
            if pause:
                with contextlib.suppress(TimeoutError):  # a stop ends the pause
                    await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():  # the drain began during the pause: nothing to restart
                return

    async def _spawn(
        self, slot: int, listeners: dict[str, list[int]]
    ) -> tuple[asyncio.subprocess.Process, PipeIOStream, PipeIOStream]:
        read_fd, write_fd = os.pipe()
        ask_read_fd, ask_fd = os.pipe()
        spec = WorkerSpec(
            slot, self._config_path, self._worker_overrides, listeners, write_fd, ask_read_fd
        )
        fds = [write_fd, ask_read_fd, *(fd for group in listeners.values() for fd in group)]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                spec.to_json(),
                pass_fds=fds,
                stdin=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C goes to the supervisor only
            )
        except BaseException:
            os.close(ask_fd)
            raise
        finally:
            os.close(write_fd)
            os.close(ask_read_fd)
        assert process.stdin is not None
        process.stdin.write(encode_config_message(self._config_text))
        self._processes[slot] = process
        asks = PipeIOStream(ask_fd)
        self.fleet.add_worker(process.pid, functools.partial(_ask, asks))
        return process, PipeIOStream(read_fd), asks

    async def _read_reports(self, pid: int, reports: PipeIOStream) -> bool:
        """Feed `pid`'s report lines to the fleet until its pipe closes (it exited); whether
        it sent any (it served)."""
        served = False
        try:
            while True:
                self.fleet.update(pid, await reports.read_until(b"\n", max_bytes=REPORT_MAX_BYTES))
                served = True
        except StreamClosedError:
            reports.close()
        return served

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> None:
        config = self.config
        self.fleet.ready = False
        asked_at = time.monotonic()
        await self.fleet.refresh()  # the latest reports may lack the newest connections
        open_now = self.fleet.active
        waiting = (
            f"then wait up to {config.shutdown_grace_s:g} s for"
            f" {count_of(open_now, 'open connection')} to close"
            if open_now
            else "then stop (no open connections)"
        )
        workers, delay_s = count_of(len(self._processes), "worker"), config.shutdown_delay_s
        accepting = f"accepting for {delay_s:g} s more" if delay_s else "no longer accepting"
        log.info("shutting down: /readyz is 503; %s %s, %s", workers, accepting, waiting)
        await asyncio.sleep(max(0.0, config.shutdown_delay_s - (time.monotonic() - asked_at)))
        self._stopping.set()
        self.fleet.accepting = False
        for process in self._processes.values():
            process.send_signal(signal.SIGTERM)
        _, pending = await asyncio.wait(keepers, timeout=config.shutdown_grace_s + EXIT_MARGIN_S)
        if pending:
            log.warning(
                "%s did not exit in time; sending SIGKILL", count_of(len(pending), "worker")
            )
            self._kill_all()
            await asyncio.wait(pending)
        log.info("stopped; all workers exited")

    def _kill_all(self) -> None:
        for process in self._processes.values():
            process.kill()

    def _signal_all(self, signum: int) -> None:
        for process in self._processes.values():
            process.send_signal(signum)


def _ask(asks: PipeIOStream, question: Question) -> None:
    """Put `question` to a worker, unless it hasn't even read the last one (it is stuck)."""
    if asks.closed() or asks.writing():
        return
    asks.write(encode_question(question)).add_done_callback(_ignore_outcome)


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    """A worker that exited can't be asked; its exit is handled where its reports end."""
    future.exception()


def _binder(key: str, listener: ListenerConfig) -> Callable[[int, bool], list[socket.socket]]:
    """How to bind `listener` on a port, with or without SO_REUSEPORT."""
    if listener.protocol == "udp":
        return lambda port, reuse_port: bind_udp(key, listener.host, port, reuse_port)
    return lambda port, reuse_port: bind(key, listener.host, port, listener.backlog, reuse_port)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
