"""The server's command line: parse flags, load config, configure logging, run the service."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from server import __version__
from server.config import ENV_PREFIX, ConfigError, load_config
from server.resources import describe_max_connections
from server.runtime import configure_logging, run
from server.service import serve
from server.sockets import systemd_sockets
from server.supervisor import Supervisor

EXIT_BAD_CONFIG = 2


EPILOG = (
    f"Any key can also be set by an environment variable: {ENV_PREFIX}STATUS__PORT=8080 "
    f"sets status.port, {ENV_PREFIX}LISTENERS__0__PORT=0 the first listener's port. "
    "Precedence: --set over environment over the file."
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m server``: the server's flags alone."""
    server = argparse.ArgumentParser(
        prog="echostat", description="A TCP echo service with a live status page.", epilog=EPILOG
    )
    add_arguments(server)
    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags to `parser` (also the top level of the ``echostat`` command)."""
    parser.add_argument(
        "--config",
        default="config.yaml",
        metavar="PATH",
        help="YAML config file (default: ./config.yaml)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config (file, environment, --set) and exit: 0 if valid, 2 if not",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m server``; returns the process exit status."""
    return serve_from(build_parser().parse_args(argv))


def serve_from(args: argparse.Namespace) -> int:
    """Run the server as parsed flags `args` say; returns the process exit status."""
    try:
        config = load_config(args.config, os.environ, args.overrides)
    except ConfigError as exc:
        print(f"echostat: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.check_config:
        limit = describe_max_connections(config)
        print(f"echostat: {args.config}: configuration is valid; {limit}")
        return 0
    configure_logging(config)
    inherited = systemd_sockets(os.environ)
    if config.worker_count > 1:
        main = Supervisor(config, args.config, args.overrides, inherited).run()
    else:
        reread = functools.partial(load_config, args.config, os.environ, args.overrides)
        main = serve(config, inherited=inherited, load=reread)
    try:
        run(config, main)
    except ConfigError as exc:
        logging.getLogger("server").error("%s", exc)
        return EXIT_BAD_CONFIG
    return 0
