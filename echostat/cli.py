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
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``echostat`` parser and its subcommands' parsers by name."""
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
    probe = probe_cli.add_parser(subcommands)
    reload = reload_command.add_parser(subcommands)
    return command, {"probe": probe, "reload": reload}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    command, subcommands = _parsers()
    args, unknown = command.parse_known_args(argv)
    if unknown:
        # A flag after `probe` that it does not know is its error, with its usage (argparse
        # would give the server's).
        command = subcommands.get(args.command, command)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "probe":
        return probe_cli.run(args)
    if args.command == "reload":
        return reload_command.run(args)
    # Imported only to serve: `echostat probe` needs none of the server or the page, and
    # starts in a fraction of the time without loading them.
    from echostat.serve import serve_from

    return serve_from(args)
