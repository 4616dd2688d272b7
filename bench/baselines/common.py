"""What every baseline shares: the command line and running a coroutine on the chosen loop."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

import uvloop


def parse_args(description: str, loop_choice: bool = True) -> argparse.Namespace:
    """``--port`` (0 picks a free one) and, for asyncio-based servers, ``--uvloop``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    if loop_choice:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return parser.parse_args()


def announce(port: int) -> None:
    """Tell whoever started us that the listener is bound and on which port."""
    print(f"listening on port {port}", flush=True)


def run(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """Run `main` on uvloop or the standard asyncio loop until interrupted."""
    try:
        (uvloop.run if use_uvloop else asyncio.run)(main)
    except KeyboardInterrupt:
        pass
