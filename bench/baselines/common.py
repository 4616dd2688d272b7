"""What every baseline shares: the command line and running a coroutine on the chosen loop."""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import Coroutine
from typing import Any

import uvloop


def parse_args(
    description: str, loop_choice: bool = True, tls_choice: bool = False
) -> argparse.Namespace:
    """``--port`` (0 picks a free one); for asyncio-based servers ``--uvloop``; for those that
    can speak TLS, ``--tls-port`` and ``--tls-config``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    if loop_choice:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    if tls_choice:
        parser.add_argument("--tls-port", type=int, help="also serve TLS on this port")
        parser.add_argument(
            "--tls-config",
            help="an echostat config file: TLS uses the SSLContext echostat builds for its"
            " first TLS listener, so both sides of a comparison have the same settings",
        )
    return parser.parse_args()


def echostat_tls_context(config_path: str) -> ssl.SSLContext:
    """The SSLContext echostat itself builds for the first TLS listener of `config_path`."""
    # echostat's own loader: same settings exactly
    from echostat.server.config_loading import load_config

    listeners = load_config(config_path).listeners
    context = next((each.tls.context for each in listeners if each.tls is not None), None)
    if context is None:
        raise SystemExit(f"{config_path}: no listener with tls")
    return context


def announce(port: int) -> None:
    """Tell whoever started us that the listener is bound and on which port."""
    print(f"listening on port {port}", flush=True)


def run(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """Run `main` on uvloop or the standard asyncio loop until interrupted."""
    try:
        (uvloop.run if use_uvloop else asyncio.run)(main)
    except KeyboardInterrupt:
        pass
