"""The `echostat probe` examples in README.md and docs/probe.md are what it prints: each is run
again (in this process, against a real echostat) and its lines and JSON keys compared, numbers
aside."""

from __future__ import annotations

import json
import re
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from echostat.cli import main
from tests.helpers import LOCAL_PORTS, REPO, EchostatProcess

DOCUMENTS = ("README.md", "docs/probe.md")

SLOW = ("-i", "--interval", "--rate", "--duration", "--half-close", "--connect-only")
"""Flags that set a run's pace or length; without them a run is paced at 1 s a round trip."""


@dataclass(frozen=True)
class Example:
    """A ``$ echostat probe ...`` command, and what it printed and its exit status in each
    document that shows it."""

    args: list[str]
    shown: list[tuple[str, list[str], int]]
    """Document, lines printed, exit status."""


TARGETS = (
    "127.0.0.1:7007",
    "udp://127.0.0.1:17007",
    "udp://127.0.0.1:7007",
    "udp://127.0.0.1:7009",
)
"""The documents' targets that stand for echostat (or a closed port); examples against the
suite's own faulty servers or its namespaced router are checked by the tests that build them."""


def examples() -> list[Example]:
    """Every probe example of the documents against one of `TARGETS` whose output is shown in
    full (none elided), each command once."""
    found: dict[str, Example] = {}
    for document in DOCUMENTS:
        text = (REPO / document).read_text(encoding="utf-8")
        for block in re.findall(r"```console\n(.*?)```", text, re.S):
            lines = block.splitlines()
            command = lines[0].replace("$ .venv/bin/echostat ", "$ echostat ")
            if not command.startswith("$ echostat probe ") or "..." in lines:
                continue
            if shlex.split(command)[3] not in TARGETS:
                continue
            printed = [line for line in lines[1:] if not line.startswith("$ ")]
            status = int(printed.pop()) if "$ echo $?" in lines else 0
            example = found.setdefault(command, Example(shlex.split(command)[3:], []))
            example.shown.append((document, printed, status))
    return list(found.values())


def template(line: str) -> str:
    """`line` with its numbers (times, counts, ports, seeds) left out."""
    return re.sub(r"\d+(\.\d+)?", "N", line)


def shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down; lists by their first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None if value is None else "value"


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, str]]:
    """The documents' addresses mapped to a real echostat's (TCP and UDP) and to a closed port."""
    udp = ("listeners.2.name=udp", "listeners.2.protocol=udp", "listeners.2.port=0")
    process = EchostatProcess([*LOCAL_PORTS, *(arg for key in udp for arg in ("--set", key))])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    try:
        process.start()
        echo_udp = f"udp://127.0.0.1:{process.ports['udp']}"
        mapped = (f"127.0.0.1:{process.echo_port}", echo_udp, echo_udp, f"udp://127.0.0.1:{closed}")
        yield dict(zip(TARGETS, mapped, strict=True))
    finally:
        process.stop()


@pytest.mark.parametrize("example", examples(), ids=lambda example: " ".join(example.args))
def test_documented_example_is_what_the_probe_prints(
    capsys: pytest.CaptureFixture[str], ports: dict[str, str], example: Example
) -> None:
    target, *args = example.args
    # Shorter than documented, the same lines: 0.1 s between round trips, 0.5 s of load.
    if not any(flag in args for flag in SLOW):
        args += ["--interval", "0.1"]
    args = [
        ("0.5" if previous == "--duration" else arg)
        for previous, arg in zip(["", *args], args, strict=False)
    ]
    status = main(["probe", ports[target], *args])
    captured = capsys.readouterr()
    printed = (captured.out + captured.err).splitlines()
    for document, shown, shown_status in example.shown:
        assert status == shown_status, (document, printed)
        if "--json" in args:
            assert shape(json.loads(captured.out)) == shape(json.loads("\n".join(shown))), document
        else:
            assert [template(line) for line in printed] == [template(line) for line in shown], (
                document
            )
