"""``echostat probe --path`` against an echostat report listener, through a namespaced router
that masquerades, clamps the MSS to 1000, remarks DSCP to AF11, clears ECN and takes a hop off
the TTL, and over a direct link beside it: the findings are named exactly, and only where they
are."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import REPO, EchostatProcess, run_probe
from tests.net.topology import DIRECT_SERVER_ADDRESS, SERVER_ADDRESS, RoutedPath, routed_path

MIDDLEBOX = """
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat
    ip daddr 198.18.1.0/24 masquerade
  }
}
table inet middlebox {
  chain through {
    type filter hook forward priority mangle
    tcp flags syn tcp option maxseg size set 1000
    ip dscp set af11
    ip ecn set not-ect
  }
}
"""

CONFIG = """
listeners:
  - {name: main, host: 0.0.0.0, port: 7007}
  - {name: report, host: 0.0.0.0, port: 7008, report: true}
  - {name: udp-report, host: 0.0.0.0, port: 7009, protocol: udp, report: true}
status: {host: 127.0.0.1, port: 0}
"""


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutedPath]:
    """The routed path with its middlebox, an echostat with report listeners behind it."""
    config = tmp_path_factory.mktemp("path") / "config.yaml"
    config.write_text(CONFIG)
    with routed_path() as built:
        built.router.nft(MIDDLEBOX)
        server = EchostatProcess(["--config", str(config)], prefix=built.server.argv())
        try:
            server.start()
            yield built
        finally:
            server.stop()


def probe(path: RoutedPath, target: str, *args: str) -> tuple[int, str, str]:
    """``echostat probe TARGET ARGS`` from the client namespace: exit status, stdout, stderr."""
    done = run_probe(target, *args, prefix=path.client.argv())
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def path_of(path: RoutedPath, target: str, *args: str) -> tuple[int, dict[str, Any]]:
    """The probe's exit status and its JSON document's ``path`` object."""
    status, out, _ = probe(path, target, "--path", "--dscp", "EF", "--json", *args)
    document = json.loads(out)
    return status, document["path"] | {"ok": document["ok"]}


def test_through_the_router_nat_clamped_mss_remarked_dscp_and_a_hop_are_named(
    path: RoutedPath,
) -> None:
    status, found = path_of(path, f"{SERVER_ADDRESS}:7008", "--count", "3", "--interval", "0.05")
    assert status == 0 and found["ok"], found
    assert found["findings"] == ["nat", "mss_clamped", "dscp_remarked"], found
    assert (found["mss_sent"], found["mss_arrived"]) == (1460, 1000)
    assert (found["dscp_sent"], found["dscp_arrived"]) == (46, 10)
    assert (found["hops"], found["ttl_arrived"], found["nat"]) == (1, 63, True)
    assert found["peer_seen"].startswith("198.18.1.1:")


def test_over_the_direct_link_nothing_is_found(path: RoutedPath) -> None:
    status, found = path_of(path, f"{DIRECT_SERVER_ADDRESS}:7008", "--count", "1")
    assert status == 0 and found["ok"], found
    assert (found["findings"], found["hops"], found["dscp_arrived"]) == ([], 0, 46)
    assert found["options_arrived"] == found["options_sent"]


def test_fail_on_nat_fails_through_the_router_only(path: RoutedPath) -> None:
    routed = probe(path, f"{SERVER_ADDRESS}:7008", "--path", "--fail-on", "nat", "--count", "1")
    direct = probe(
        path, f"{DIRECT_SERVER_ADDRESS}:7008", "--path", "--fail-on", "nat", "--count", "1"
    )
    assert (routed[0], direct[0]) == (1, 0), (routed, direct)
    assert "--fail-on: the path shows nat" in routed[2]


def test_the_udp_report_shows_the_remarked_dscp_both_ways(path: RoutedPath) -> None:
    """The request arrives remarked; the answer goes back with the code point it arrived with,
    and the router remarks it again, so both directions are seen."""
    status, routed = path_of(path, f"udp://{SERVER_ADDRESS}:7009", "--count", "2")
    assert status == 0 and routed["ok"], routed
    assert (routed["nat"], routed["dscp_arrived"], routed["return_dscp_arrived"]) == (True, 10, 10)
    status, direct = path_of(path, f"udp://{DIRECT_SERVER_ADDRESS}:7009", "--count", "2")
    assert (direct["findings"], direct["return_dscp_arrived"], direct["hops"]) == ([], 46, 0)


def test_the_udp_report_request_is_ecn_capable_so_a_router_that_clears_ecn_is_named(
    path: RoutedPath,
) -> None:
    """The request leaves ECT(0); the router clears it, the direct link keeps it."""
    status, routed = path_of(path, f"udp://{SERVER_ADDRESS}:7009", "--count", "1")
    assert status == 0, routed
    assert (routed["ecn_sent"], routed["ecn_arrived"]) == (2, 0)
    assert routed["findings"] == ["nat", "dscp_remarked", "ecn_bleached"]
    status, direct = path_of(path, f"udp://{DIRECT_SERVER_ADDRESS}:7009", "--count", "1")
    assert (direct["ecn_sent"], direct["ecn_arrived"], direct["findings"]) == (2, 2, [])


def test_a_listener_without_reports_is_named_and_the_probes_half_still_shown(
    path: RoutedPath,
) -> None:
    status, out, _ = probe(path, f"{DIRECT_SERVER_ADDRESS}:7007", "--path", "--count", "1")
    assert status == 0, out
    assert "no report (the listener does not have report: true)" in out
    assert "1 sent, 1 verified" in out


def documented_runs() -> list[tuple[str, list[str]]]:
    """The ``--path`` examples of README.md and docs/path.md that run through this router:
    each document's command line and the lines it shows after it."""
    runs = []
    for document in ("README.md", "docs/path.md"):
        for block in re.findall(r"```console\n(.*?)```", (REPO / document).read_text(), re.S):
            command, *shown = block.splitlines()
            if "--path" in command and "--idle-timeout" not in command:
                runs.append((command, shown))
    return runs


def template(line: str) -> str:
    """`line` with its numbers (ports, times) and the spaces that align them left out."""
    return " ".join(re.sub(r"\d+(\.\d+)?", "N", line).split())


@pytest.mark.parametrize(("command", "shown"), documented_runs(), ids=lambda value: str(value)[:60])
def test_the_documented_path_examples_are_what_the_probe_prints(
    path: RoutedPath, command: str, shown: list[str]
) -> None:
    """Run again through the same router, each example prints the lines the docs show (numbers
    aside), and exits as they say."""
    args = shlex.split(command)[3:]
    status, out, errors = probe(path, *args)
    printed = (out + errors).splitlines()
    if "$ echo $?" in shown:
        assert status == int(shown[-1]), printed
        shown = shown[: shown.index("$ echo $?")]
    assert [template(line) for line in printed[: len(shown)]] == [template(line) for line in shown]
