"""Serving from the command line: the server's flags, then load config, configure logging, run."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from echostat.server import __version__
from echostat.server.config import ConfigError
from echostat.server.config_loading import load_config
from echostat.server.config_validation import ENV_PREFIX
from echostat.server.resources import ResourceError, describe_max_connections
from echostat.server.runtime import configure_logging, run
from echostat.server.sockets import systemd_sockets
from echostat.server.supervisor import Supervisor
from echostat.service import serve
from echostat.web.status import StatusSide

log = logging.getLogger(__name__)

EXIT_BAD_CONFIG = 2


EPILOG = (
    f"Any key can also be set by an environment variable: {ENV_PREFIX}STATUS__PORT=8080 "
    f"sets status.port, {ENV_PREFIX}LISTENERS__0__PORT=0 the first listener's port. "
    "Precedence: --set over environment over the file."
)


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
        main = Supervisor(config, args.config, args.overrides, StatusSide, inherited).run()
    else:
        reread = functools.partial(load_config, args.config, os.environ, args.overrides)
        main = serve(config, inherited=inherited, load=reread)
    try:
        run(config, main)
    except (ConfigError, ResourceError) as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    return 0
