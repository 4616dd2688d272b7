"""The namespaced path the middlebox tests build: the router forwards and takes one from the TTL,
the direct link does not cross it, and a rule loaded into the router acts on what crosses it."""

from __future__ import annotations

import subprocess
import sys

from tests.net.topology import DIRECT_SERVER_ADDRESS, SERVER_ADDRESS, Namespace, routed_path

RECEIVE_TTLS = """
import socket, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL: Python has no name for it
sock.bind(("0.0.0.0", 9))
sock.settimeout(10)
print("ready", flush=True)
for _ in range(2):
    data, ancillary, _flags, _peer = sock.recvmsg(64, 64)
    print(data.decode(), struct.unpack("i", ancillary[0][2])[0], flush=True)
"""

SEND = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.sendto(sys.argv[1].encode(), (sys.argv[1], 9))
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=2).close()
except OSError as error:
    print(type(error).__name__)
else:
    print("connected")
"""


def python(ns: Namespace, script: str, *args: str) -> str:
    """Run a Python script inside `ns` and return what it printed."""
    return ns.run(sys.executable, "-c", script, *args).strip()


def test_the_router_takes_one_hop_and_the_direct_link_none() -> None:
    """A datagram through the router arrives with one less TTL than one over the direct link."""
    with routed_path() as path:
        receiver = subprocess.Popen(
            path.server.argv(sys.executable, "-c", RECEIVE_TTLS), stdout=subprocess.PIPE, text=True
        )
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        python(path.client, SEND, SERVER_ADDRESS)
        python(path.client, SEND, DIRECT_SERVER_ADDRESS)
        output, _ = receiver.communicate(timeout=10)
        ttls = dict(line.split() for line in output.splitlines())
        assert int(ttls[DIRECT_SERVER_ADDRESS]) - int(ttls[SERVER_ADDRESS]) == 1


def test_a_rule_in_the_router_acts_on_what_crosses_it() -> None:
    """A drop rule in the router's forward chain turns the server's refusal of a routed connect
    into a time-out; the direct link, which does not cross the router, is still refused."""
    with routed_path() as path:
        assert python(path.client, CONNECT, SERVER_ADDRESS) == "ConnectionRefusedError"
        path.router.nft(
            "table inet t {\n chain f {\n type filter hook forward priority 0;\n"
            " tcp dport 9 drop\n }\n}\n"
        )
        assert python(path.client, CONNECT, SERVER_ADDRESS) == "TimeoutError"
        assert python(path.client, CONNECT, DIRECT_SERVER_ADDRESS) == "ConnectionRefusedError"
