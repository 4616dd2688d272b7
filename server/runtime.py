"""Process-wide setup shared by the single process, the supervisor and its workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import uvloop

from server.config import Config


def configure_logging(config: Config, prefix: str = "") -> None:
    """One line per record to stderr; `prefix` tells processes apart (``worker 1: ``)."""
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s",
    )
    if config.log_level != "debug":
        # One line per HTTP request would drown the lifecycle lines; errors still show.
        logging.getLogger("tornado.access").setLevel(logging.WARNING)


def run(config: Config, main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on the event loop the config asks for."""
    if config.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)
