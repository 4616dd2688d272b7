"""Process-wide setup shared by the single process, the supervisor and its workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import uvloop

from echostat.server.config import Config

EXIT_BAD_CONFIG = 2
"""The exit status of a process whose config can't be used: the command's, and a worker's."""


def configure_logging(config: Config, prefix: str = "") -> None:
    """One line per record to stderr; `prefix` tells processes apart (``worker 1: ``)."""
    logging.basicConfig(format=f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s")
    apply_log_level(config)


def apply_log_level(config: Config) -> None:
    """Set `config.log_level` on the root logger; also on reload."""
    logging.getLogger().setLevel(config.log_level.upper())
    # One line per HTTP request would drown the lifecycle lines; errors still show.
    access = logging.NOTSET if config.log_level == "debug" else logging.WARNING
    logging.getLogger("tornado.access").setLevel(access)


def run(config: Config, main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on the event loop the config asks for."""
    if config.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)
