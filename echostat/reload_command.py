"""``echostat reload``: ask a running echostat to reload its config, without a shell.

A container image without a shell can't run ``kill -HUP 1``; this subcommand runs with the
image's own Python (``kubectl exec POD -- echostat reload``) and sends the same SIGHUP. It
checks first that the process is echostat, so that on a host its default of PID 1, the init
system, is refused rather than signalled.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

from echostat.server.messages import WORKER_MODULE

EXIT_SENT = 0
EXIT_NOT_SENT = 1
EXIT_USAGE = 2

DEFAULT_PID = 1
"""In a container echostat is process 1."""

SUBCOMMANDS = frozenset({"probe", "reload"})
"""The ``echostat`` subcommands, which are clients, not the server."""


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add ``reload`` to the ``echostat`` command's subcommands (an argparse subparsers action)."""
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "reload",
        help="make a running echostat reload its config (sends it SIGHUP)",
        description=(
            "Send SIGHUP to a running echostat, which validates its config file again and"
            " applies it, or refuses it with one line in its own log. For containers without"
            " a shell: kubectl exec POD -- echostat reload. The process must be echostat"
            " (read from /proc/PID/cmdline)."
        ),
    )
    parser.add_argument(
        "--pid",
        type=_process_id,
        default=DEFAULT_PID,
        help=f"the server's process id (default: {DEFAULT_PID}, echostat in a container)",
    )
    return parser


def _process_id(text: str) -> int:
    """A process id as ``--pid`` takes it: 0 and negative numbers name process groups (-1:
    every process) to kill(2), never one server, so they are a usage error."""
    try:
        pid = int(text)
    except ValueError:
        pid = 0
    if pid < 1:
        raise argparse.ArgumentTypeError(f"expected a process id (1 or more), got {text!r}")
    return pid


def run(args: argparse.Namespace) -> int:
    """Send SIGHUP to ``args.pid`` if it is echostat; returns the exit status."""
    pid: int = args.pid
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return _fail(f"no process {pid}", EXIT_NOT_SENT)
    except OSError as exc:
        return _fail(f"cannot read /proc/{pid}/cmdline: {exc.strerror}", EXIT_NOT_SENT)
    argv = [part.decode(errors="replace") for part in command if part]
    if WORKER_MODULE in argv:
        supervisor = _parent_pid(pid)
        return _fail(
            f"process {pid} is a worker of echostat {supervisor}; pass --pid {supervisor}",
            EXIT_USAGE,
        )
    if not is_echostat(argv):
        name = command[0].decode(errors="replace") if command and command[0] else "unknown"
        return _fail(f"process {pid} is not echostat (it runs {name}); pass --pid", EXIT_USAGE)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return _fail(f"process {pid} exited", EXIT_NOT_SENT)
    except PermissionError:
        return _fail(f"not allowed to signal process {pid}", EXIT_NOT_SENT)
    print(
        f"echostat reload: sent SIGHUP to process {pid}; its log says whether the config was"
        " applied or refused (config.reloads and config.reloads_failed in /api/stats count both)"
    )
    return EXIT_SENT


def is_echostat(argv: list[str]) -> bool:
    """Whether a process's `argv` runs the echostat server: the ``echostat`` script, or
    ``python -m echostat``, without a subcommand (a probe would die of SIGHUP)."""
    if SUBCOMMANDS & set(argv):
        return False
    if any(Path(part).name == "echostat" for part in argv[:2]):
        return True
    return any(pair == ("-m", "echostat") for pair in itertools.pairwise(argv))


def _parent_pid(pid: int) -> str:
    """The parent of process `pid` (``PPid`` in /proc/PID/status), or ``?`` if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "?"
    return next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "?")


def _fail(message: str, status: int) -> int:
    print(f"echostat reload: {message}", file=sys.stderr)
    return status
