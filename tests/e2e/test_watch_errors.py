"""What a watch round's error says: the reason the path failed, in the probe's own words."""

from __future__ import annotations

import socket

from echostat.probe.watch_round import exchange


async def test_a_udp_port_where_nothing_listens_is_named_port_unreachable() -> None:
    """Datagrams to a loopback port with no socket come back as ICMP port unreachable: the
    round's error says so, as `echostat probe` does, not only that they did not come back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    found = await exchange("udp", "127.0.0.1", port, 3, 64, 1.0)
    assert (found.sent, found.verified, found.lost) == (3, 0, 3)
    assert found.error is not None and "port unreachable" in found.error
