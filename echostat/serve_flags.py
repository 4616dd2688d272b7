"""The server's flags, parsed at the top level of the ``echostat`` command.

Kept apart from `echostat.serve` so that parsing them imports none of the server: the
command builds this parser for ``echostat probe`` too.
"""

from __future__ import annotations

import argparse

from echostat.server import __version__
from echostat.server.config_overrides import ENV_PREFIX

EPILOG = (
    f"Any key can also be set by an environment variable: {ENV_PREFIX}STATUS__PORT=8080 "
    f"sets status.port, {ENV_PREFIX}LISTENERS__0__PORT=0 the first listener's port. "
    "Precedence: --set over environment over the file."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags to `parser` (also the top level of the ``echostat`` command)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=(
            "YAML config file (default: ./config.yaml if there is one, else the built-in"
            " defaults: echo on 127.0.0.1:7007, the page on http://127.0.0.1:7070/)"
        ),
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help=(
            "validate the config (file, environment, --set), make every check a start makes"
            " short of binding (hosts resolve, TLS files load, the access log opens), and"
            " exit: 0 if valid, 2 if not"
        ),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one key, e.g. --set status.port=8080 --set listeners.0.port=0",
    )
    parser.add_argument("--version", action="version", version=f"echostat {__version__}")
