"""Network namespaces of the tests' own: hosts joined by veth pairs, and a router between them
whose real netfilter rules (nftables) play the middlebox under test.

Addresses come from the benchmarking range 198.18.0.0/15, so nothing here can reach a real
network. Each namespace is named after this process and deleted on exit, also on failure.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest

from tests.helpers import require_program

CLIENT_ADDRESS = "198.18.0.2"
"""The client's address on its link to the router."""
ROUTER_CLIENT_SIDE = "198.18.0.1"
ROUTER_SERVER_SIDE = "198.18.1.1"
SERVER_ADDRESS = "198.18.1.2"
"""The server's address behind the router: traffic to it crosses the router's rules."""
DIRECT_CLIENT_ADDRESS = "198.18.2.2"
DIRECT_SERVER_ADDRESS = "198.18.2.1"
"""The server's address on a direct link from the client: no router, no rules in between."""

_serial = itertools.count()


@dataclass(frozen=True)
class Namespace:
    """One network namespace; commands given to it run inside it."""

    name: str

    def argv(self, *command: str) -> list[str]:
        """`command` as run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str, stdin: str | None = None) -> str:
        """Run `command` here and return its output; raise, with what it printed, if it fails."""
        done = subprocess.run(
            self.argv(*command), input=stdin, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def nft(self, ruleset: str) -> None:
        """Load an nftables rule set (the text `nft -f` reads) into this namespace."""
        self.run("nft", "-f", "-", stdin=ruleset)


def require_namespaces() -> None:
    """Skip the test unless it can build namespaces (root, iproute2, nftables); under CI=true,
    where CI runs as root with both installed, fail instead."""
    require_program("ip", "iproute2")
    require_program("nft", "nftables")
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and not root: network namespaces need root")
        pytest.skip("network namespaces need root")


@contextmanager
def namespace(role: str) -> Iterator[Namespace]:
    """A new namespace with loopback up, deleted when the block ends."""
    name = f"es-{role}-{os.getpid()}-{next(_serial)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        created = Namespace(name)
        created.run("ip", "link", "set", "lo", "up")
        yield created
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def link(left: Namespace, left_address: str, right: Namespace, right_address: str) -> None:
    """Join two namespaces with a veth pair, each end named after the other's address and given
    its own address in a /24."""
    left_name = f"v{right_address.replace('.', '')[-6:]}"
    right_name = f"v{left_address.replace('.', '')[-6:]}"
    pair = ["type", "veth", "peer", "name", right_name, "netns", right.name]
    subprocess.run(["ip", "link", "add", left_name, "netns", left.name, *pair], check=True)
    for ns, device, address in (
        (left, left_name, left_address),
        (right, right_name, right_address),
    ):
        ns.run("ip", "address", "add", f"{address}/24", "dev", device)
        ns.run("ip", "link", "set", device, "up")


@dataclass(frozen=True)
class RoutedPath:
    """A client and a server two ways apart: through a router (`SERVER_ADDRESS`) and on a direct
    link (`DIRECT_SERVER_ADDRESS`). The router forwards, so each packet loses one from its TTL,
    and applies whatever rules a test loads with `router.nft`."""

    client: Namespace
    router: Namespace
    server: Namespace


@contextmanager
def routed_path() -> Iterator[RoutedPath]:
    """Build the client, router and server namespaces and their links; remove them after."""
    require_namespaces()
    with ExitStack() as stack:
        client = stack.enter_context(namespace("client"))
        router = stack.enter_context(namespace("router"))
        server = stack.enter_context(namespace("server"))
        link(client, CLIENT_ADDRESS, router, ROUTER_CLIENT_SIDE)
        link(router, ROUTER_SERVER_SIDE, server, SERVER_ADDRESS)
        link(client, DIRECT_CLIENT_ADDRESS, server, DIRECT_SERVER_ADDRESS)
        router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        client.run("ip", "route", "add", "198.18.1.0/24", "via", ROUTER_CLIENT_SIDE)
        server.run("ip", "route", "add", "198.18.0.0/24", "via", ROUTER_SERVER_SIDE)
        yield RoutedPath(client, router, server)
