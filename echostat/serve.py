"""Serving from the command line: load the config the flags name, configure logging, run."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from echostat.server.config import Config, ConfigError
from echostat.server.config_loading import (
    BUILT_IN_DEFAULTS,
    check_config,
    choose_config_path,
    load_config,
    read_config_text,
    reread_config_text,
)
from echostat.server.resources import ResourceError, describe_max_connections
from echostat.server.runtime import EXIT_BAD_CONFIG, configure_logging, run
from echostat.server.sockets import check_systemd_sockets, systemd_sockets
from echostat.server.supervisor import Supervisor
from echostat.service import serve
from echostat.watching import WatchingStatusSide

log = logging.getLogger(__name__)


def serve_from(args: argparse.Namespace) -> int:
    """Run the server as parsed flags `args` say; returns the process exit status."""
    path = choose_config_path(args.config)
    try:
        text = read_config_text(path)
        # A start checks what --check-config checks, so a host that doesn't resolve or an
        # access log that can't be opened is the same line, naming the value's origin.
        config = check_config(path, os.environ, args.overrides, text=text)
    except ConfigError as exc:
        print(f"echostat: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.check_config:
        limit = describe_max_connections(config)
        print(f"echostat: {path or BUILT_IN_DEFAULTS}: configuration is valid; {limit}")
        return 0
    configure_logging(config)
    inherited = systemd_sockets(os.environ)
    try:
        check_systemd_sockets(inherited, config)
        if config.worker_count > 1:
            fleet = Supervisor(config, text, path, args.overrides, WatchingStatusSide, inherited)
            main = fleet.run()
        else:
            # Without a file a reload validates the defaults, the environment and --set again.
            def reread() -> Config:
                text = reread_config_text(path)
                return load_config(path, os.environ, args.overrides, text=text)

            main = serve(config, inherited=inherited, load=reread, built_in_defaults=path is None)
        run(config, main)
    except (ConfigError, ResourceError) as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    return 0
