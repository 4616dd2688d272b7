"""Real retransmits: echostat behind a loopback that drops packets, in a network namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import DEADLINE_S, REPO, require_program

SHAPING = ["tbf", "rate", "400mbit", "burst", "64kb", "limit", "96kb"]
"""A token bucket on loopback whose small queue drops bursts: TCP must retransmit."""


@pytest.fixture
def lossy_namespace() -> Iterator[str]:
    """A network namespace of our own whose loopback drops packets under load; deleted after.
    Needs root (as in CI); skipped otherwise, except under CI=true where it fails."""
    ip = require_program("ip", "iproute2")
    tc = require_program("tc", "iproute2")
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and not root: network namespaces need root")
        pytest.skip("network namespaces need root")
    name = f"echostat-lossy-{os.getpid()}"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        # Ethernet-sized packets: loopback's 64 KiB ones would never fit the token bucket.
        lo_up = [ip, "netns", "exec", name, ip, "link", "set", "lo", "mtu", "1500", "up"]
        subprocess.run(lo_up, check=True)
        shape = [ip, "netns", "exec", name, tc, "qdisc", "add", "dev", "lo", "root", *SHAPING]
        subprocess.run(shape, check=True)
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name], check=True)


def test_retransmits_on_a_lossy_path_reach_rows_stats_and_metrics(lossy_namespace: str) -> None:
    """Bulk echoes through a dropping loopback: rows, /api/stats and the counter show the same
    retransmitted segments, more than none."""
    done = subprocess.run(
        ["ip", "netns", "exec", lossy_namespace, sys.executable, "-m", "tests.e2e.lossy_path"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sum(report["row_retransmits"]) > 0, report
    assert report["tcp"]["retransmits"] >= sum(report["row_retransmits"])
    assert report["metric_retransmits"] == report["tcp"]["retransmits"]
