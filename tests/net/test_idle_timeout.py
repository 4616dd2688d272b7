"""``echostat probe --idle-timeout`` through a router whose connection tracking forgets an idle
flow after a few seconds: the timeout is found within its resolution, with the right kind of
failure: ``silent`` where the router drops what it no longer knows, ``reset`` where it answers
it with a TCP reset."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import DEADLINE_S, REPO, EchostatProcess
from tests.net.topology import SERVER_ADDRESS, RoutedPath, routed_path

TRACKED_S = 3
"""The router's conntrack timeout for an established flow with nothing on it."""

FORGETFUL = """
table inet forgetful {{
  chain through {{
    type filter hook forward priority filter
    ct state invalid {verdict}
  }}
}}
"""
"""A router that tracks connections and treats a packet of a flow it forgot as invalid; with
loose pickup off it never adopts such a flow again."""

VERDICTS = {"silent": "drop", "reset": "reject with tcp reset"}


def forgetful(path: RoutedPath, failure: str) -> None:
    """Make the router forget idle flows after `TRACKED_S` and handle their next packet so."""
    path.router.run(
        "sysctl",
        "-q",
        "-w",
        f"net.netfilter.nf_conntrack_tcp_timeout_established={TRACKED_S}",
    )
    path.router.nft(FORGETFUL.format(verdict=VERDICTS[failure]))
    path.router.run("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0")


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[dict[str, RoutedPath]]:
    """Two routed paths, one per kind of failure, each with an echostat behind its router."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "listeners: [{name: main, host: 0.0.0.0, port: 7007}]\n"
        "status: {host: 127.0.0.1, port: 0}\n"
        "limits: {idle_timeout_s: 0}\n"
    )
    with ExitStack() as stack:
        built = {}
        for failure in VERDICTS:
            path = stack.enter_context(routed_path())
            forgetful(path, failure)
            server = EchostatProcess(["--config", str(config)], prefix=path.server.argv())
            stack.callback(server.stop)
            server.start()
            built[failure] = path
        yield built


def test_the_idle_timeout_and_how_it_fails_are_found(paths: dict[str, RoutedPath]) -> None:
    """Both probes, run at once, find the router's 3 s within their resolution and name how the
    forgotten connection failed."""
    probes = {
        failure: subprocess.Popen(
            path.client.argv(
                sys.executable,
                "-m",
                "echostat",
                "probe",
                f"{SERVER_ADDRESS}:7007",
                "--idle-timeout",
                "8",
                "--timeout",
                "1",
                "--json",
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for failure, path in paths.items()
    }
    for failure, probe in probes.items():
        out, errors = probe.communicate(timeout=DEADLINE_S * 3)
        assert probe.returncode == 0, errors
        idle = json.loads(out)["idle"]
        assert idle["failure"] == failure, idle
        assert idle["failed_s"] - idle["survived_s"] <= idle["resolution_s"], idle
        assert idle["survived_s"] - 0.5 <= TRACKED_S <= idle["failed_s"] + 0.5, idle
