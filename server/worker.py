"""A worker process: echoes on sockets inherited from the supervisor and reports its stats.

Started by `server.supervisor` as ``python -m echostat.server.worker SPEC`` with SPEC a JSON object:
the config path and overrides, the inherited listening descriptors by listener name, the
descriptor of the pipe that carries one report line per tick back to the supervisor, and
that of the pipe on which the supervisor asks for a report at once (``N ROWS`` lines).
Its standard input carries config messages the other way: the config text the supervisor
validated, first to start with, then one per reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from tornado.ioloop import PeriodicCallback
from tornado.iostream import PipeIOStream, StreamClosedError

from echostat.server.config import Config, ConfigError
from echostat.server.config_loading import load_config
from echostat.server.fleet import (
    CONNECTIONS_PER_REPORT,
    MAX_CONNECTIONS_PER_ANSWER,
    REPORT_INTERVAL_S,
)
from echostat.server.messages import (
    CONFIG_MESSAGE_MAX_BYTES,
    QUESTION_MAX_BYTES,
    WORKER_MODULE,
    WorkerSpec,
    decode_config_message,
    decode_question,
    encode_report,
)
from echostat.server.registry import Registry
from echostat.server.resources import ResourceError
from echostat.server.runtime import EXIT_BAD_CONFIG, configure_logging, run
from echostat.server.service import Service
from echostat.server.signals import catch_reload_signal, catch_stop_signals
from echostat.server.snapshots import ConnectionsPage
from echostat.server.sockets import inherited_sockets

log = logging.getLogger(WORKER_MODULE)  # run as ``python -m``, where __name__ is __main__


def read_first_config_message(fd: int) -> str:
    """The first config message on `fd`, read a byte at a time so that nothing after it is
    consumed before the event loop takes the pipe over."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("the supervisor closed the config pipe before sending a config")
        line += byte
    return decode_config_message(bytes(line))


async def follow_reloads(spec: WorkerSpec, service: Service) -> None:
    """Reload from each config message on standard input until the supervisor closes it."""
    pipe = PipeIOStream(sys.stdin.fileno())
    latest = ""

    def load() -> Config:
        return load_config(spec.config_path, os.environ, spec.overrides, text=latest)

    reloader = service.reloader(load)
    try:
        while True:
            line = await pipe.read_until(b"\n", max_bytes=CONFIG_MESSAGE_MAX_BYTES)
            latest = decode_config_message(line)
            reloader.reload()
    except StreamClosedError:
        pass
    finally:
        pipe.close()


class Reporter:
    """Sends the registry's snapshot to the supervisor every tick and whenever it asks;
    notices if it is gone."""

    def __init__(self, registry: Registry, report_fd: int, ask_fd: int) -> None:
        self._registry = registry
        self._pipe = PipeIOStream(report_fd)
        self._asks = PipeIOStream(ask_fd)
        self.supervisor_gone = asyncio.Event()
        self._timer = PeriodicCallback(self.publish, REPORT_INTERVAL_S * 1000)
        self._answering: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.publish()
        self._timer.start()
        self._answering = asyncio.ensure_future(self._answer())

    def publish(self) -> None:
        """Queue one report unless the previous one is still in the pipe."""
        if self._pipe.writing() or self._pipe.closed():
            return
        self._pipe.write(self._report(CONNECTIONS_PER_REPORT)).add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        if isinstance(future.exception(), StreamClosedError):
            self.supervisor_gone.set()

    async def _answer(self) -> None:
        """Answer each question at once, however full the pipe, with the rows it asks for."""
        try:
            while True:
                line = await self._asks.read_until(b"\n", QUESTION_MAX_BYTES)
                question = decode_question(line)
                if self._pipe.closed():
                    return
                rows = min(question.rows, MAX_CONNECTIONS_PER_ANSWER)
                if question.after is None:
                    report = self._report(rows, question.number)
                else:
                    page = await self._registry.connections_page(rows, question.after)
                    report = self._report(CONNECTIONS_PER_REPORT, question.number, page)
                self._pipe.write(report).add_done_callback(self._written)
        except StreamClosedError:
            self.supervisor_gone.set()

    async def close(self) -> None:
        """Send a last report, wait until it is in the pipe, stop."""
        self._timer.stop()
        if self._answering is not None:
            self._answering.cancel()
        self._asks.close()
        if not self._pipe.closed():
            try:
                await self._pipe.write(self._report(0))
            except StreamClosedError:
                pass
            self._pipe.close()

    def _report(
        self, rows: int, answers: int | None = None, page: ConnectionsPage | None = None
    ) -> bytes:
        """A report line: the snapshot, the `rows` busiest connections and the busiest UDP
        peers, answering question `answers` (None: a periodic or last report) with `page`."""
        registry = self._registry
        connections = registry.connections(rows)
        peers = registry.peers(CONNECTIONS_PER_REPORT)
        return encode_report(registry.snapshot(), connections, peers, answers, page)


async def run_worker(config: Config, spec: WorkerSpec) -> None:
    """Serve until SIGTERM (or until the supervisor disappears), then drain like a single
    process would."""
    stop_requested = catch_stop_signals(announce=False)
    # A SIGHUP sent to every process of a service (systemctl kill) must not end workers.
    catch_reload_signal(lambda: log.info("SIGHUP ignored: the supervisor passes reloads on"))
    inherited = {name: inherited_sockets(fds) for name, fds in spec.listeners.items()}
    service = Service(config, inherited)
    await service.start()
    reporter = Reporter(service.registry, spec.report_fd, spec.ask_fd)
    reporter.start()
    reloads = asyncio.ensure_future(follow_reloads(spec, service))
    signal_task = asyncio.ensure_future(stop_requested.wait())
    gone_task = asyncio.ensure_future(reporter.supervisor_gone.wait())
    await asyncio.wait([signal_task, gone_task], return_when=asyncio.FIRST_COMPLETED)
    if gone_task.done():
        log.warning("supervisor is gone; shutting down")
    signal_task.cancel()
    gone_task.cancel()
    reloads.cancel()
    await service.stop()
    await reporter.close()


def main(argv: list[str] | None = None) -> int:
    """Serve as the supervisor's worker; 2 when its config can't be used (a certificate the
    supervisor read at start has since gone away), which it says in one line."""
    spec = WorkerSpec.from_json((argv or sys.argv)[1])
    prefix = f"worker {spec.slot}: "
    text = read_first_config_message(sys.stdin.fileno())
    try:
        config = load_config(spec.config_path, os.environ, spec.overrides, text=text)
        configure_logging(config, prefix)
        run(config, run_worker(config, spec))
    except (ConfigError, ResourceError) as exc:
        configure_logging(Config(), prefix)  # not set up yet if the config is what failed
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
