"""What a watch round's error says: the reason the path failed, in the probe's own words."""

from __future__ import annotations

import asyncio
import socket

from echostat.probe.watch_round import exchange
from echostat.probe.watch_state import TargetState
from echostat.server.config import ListenerConfig
from echostat.service import Service
from echostat.web.watch import watch_document
from tests.conftest import loopback_config
from tests.faulty_servers import SwapsAndRepeatsPairs, faulty_server, swaps_first_messages


async def test_a_udp_port_where_nothing_listens_is_named_port_unreachable() -> None:
    """Datagrams to a loopback port with no socket come back as ICMP port unreachable: the
    round's error says so, as `echostat probe` does, not only that they did not come back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    found = await exchange("udp", "127.0.0.1", port, 3, 64, 1.0)
    assert (found.sent, found.verified, found.lost) == (3, 0, 3)
    assert found.error is not None and "port unreachable" in found.error


async def test_a_udp_round_counts_replies_out_of_order_and_repeated() -> None:
    """A server that answers each pair of datagrams with the second twice, then the first:
    the round verifies all four and says that two came twice and two out of order, in
    /api/watch's last_round as `echostat probe` does."""
    server = SwapsAndRepeatsPairs()
    try:
        found = await exchange("udp", "127.0.0.1", server.port, 4, 64, 1.0)
    finally:
        server.close()
    assert (found.sent, found.verified, found.lost, found.failed) == (4, 4, 0, 0)
    assert (found.reordered, found.duplicated) == (2, 2)
    state = TargetState("pairs", f"udp://127.0.0.1:{server.port}", "127.0.0.1", "udp")
    state.record(0.0, found, 0.0, False)
    (target,) = watch_document([state])["targets"]
    assert (target["last_round"]["reordered"], target["last_round"]["duplicated"]) == (2, 2)


async def test_two_rounds_whose_replies_a_balancer_crossed_both_fail() -> None:
    """Two watchers' TCP rounds through a middlebox that swaps their first replies: each
    round sends its own bytes, as each `echostat probe` run does, so both fail instead of
    taking the other's identical bytes for their own."""
    with faulty_server(swaps_first_messages(64)) as port:
        rounds = await asyncio.gather(
            *(exchange("tcp", "127.0.0.1", port, 1, 64, 5.0) for _ in range(2))
        )
    assert [(found.verified, found.failed) for found in rounds] == [(0, 1), (0, 1)]
    assert all("differs" in (found.error or "") for found in rounds)


async def test_a_server_that_speaks_first_fails_the_first_round_trip() -> None:
    """A report listener on this loop speaks before the round has sent anything: the round
    counts one round trip sent and failed, as `echostat probe` does, not a round in which
    nothing could be sent."""
    report = ListenerConfig(name="report", host="127.0.0.1", port=0, report=True)
    service = Service(loopback_config(listeners=(report,)))
    await service.start()
    try:
        found = await exchange("tcp", "127.0.0.1", service.echo_port("report"), 5, 64, 1.0)
    finally:
        await service.stop()
    assert (found.sent, found.verified, found.lost, found.failed) == (1, 0, 0, 1)
    assert "differs" in (found.error or "")
