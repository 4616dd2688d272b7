"""The ``echostat`` command: ``echostat [FLAGS]`` serves, ``echostat probe TARGET ...`` checks.

The only module that knows both the server's command line (`echostat.serve_flags`,
`echostat.serve`) and the probe's, the way `echostat.service` is the only one that knows both
the echo side and the web side.
"""

from __future__ import annotations

import argparse

from echostat import reload_command, serve_flags
from echostat.probe import cli as probe_cli


def build_parser() -> argparse.ArgumentParser:
    """The server's flags at the top level, and the subcommands."""
    command = argparse.ArgumentParser(
        prog="echostat",
        description=(
            "A TCP echo service with a live status page. With no subcommand, run the server; "
            "`echostat probe --help` for the client."
        ),
        epilog=serve_flags.EPILOG,
    )
    serve_flags.add_arguments(command)
    subcommands = command.add_subparsers(dest="command", title="subcommands", metavar="COMMAND")
    probe_cli.add_parser(subcommands)
    reload_command.add_parser(subcommands)
    return command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        return probe_cli.run(args)
    if args.command == "reload":
        return reload_command.run(args)
    # Imported only to serve: `echostat probe` needs none of the server or the page, and
    # starts in a fraction of the time without loading them.
    from echostat.serve import serve_from

    return serve_from(args)
