"""What arrived of each connection's SYN, on real loopback connections: rows, metrics, log."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from echostat.server.config import AccessLogConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.e2e.test_path_quality import row_of, scrape
from tests.helpers import close_all, echo_once, get_json, status_fetch, wait_until

LOOPBACK_SYN_MSS = 65495
"""What Linux advertises over 127.0.0.1 (MTU 65536): 65535 less the IPv4 and TCP headers."""


async def test_loopback_syn_is_shown_per_connection(service: Service) -> None:
    """A row's ``syn``: TTL 64 and no hop on loopback, the loopback MSS, the usual options."""
    _, writer = await echo_once(service.echo_port("main"), b"hello")
    syn = (await row_of(service, writer))["syn"]
    assert syn == {
        "ttl": 64,
        "hops": 0,
        "dscp": 0,
        "ecn": syn["ecn"],  # 0, or ECN-capable where the client's kernel negotiates it
        "df": True,
        "mss": LOOPBACK_SYN_MSS,
        "wscale": syn["wscale"],
        "sack": True,
        "timestamps": True,
        "tfo": False,
        "other_options": [],
        "listener_mss": syn["listener_mss"],
    }
    assert 0 <= syn["wscale"] <= 14
    # The server's own MSS, less the timestamps option: never above what arrived here.
    assert 60000 < syn["listener_mss"] <= LOOPBACK_SYN_MSS
    await close_all([writer])


async def test_a_client_mark_and_mss_arrive_as_set(service: Service) -> None:
    """A client's DSCP (EF), TTL and MSS show up in the row exactly as the client set them."""
    client = socket.socket()
    client.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 46 << 2)
    client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 60)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", service.echo_port("main")))
    port = client.getsockname()[1]
    await wait_until(lambda: service.registry.active == 1, "the server to accept")
    table = await get_json(service.status_port, "/api/connections")
    (row,) = [r for r in table["connections"] if r["peer"] == f"127.0.0.1:{port}"]
    assert (row["syn"]["dscp"], row["syn"]["ttl"], row["syn"]["hops"]) == (46, 60, 4)
    assert row["syn"]["mss"] == 1000
    client.close()


async def test_syn_metrics_count_each_connection_once(service: Service) -> None:
    """Three SYNs: the MSS histogram counts three at the loopback MSS, each option three times."""
    clients = [await echo_once(service.echo_port("main"), b"x") for _ in range(3)]
    await close_all([writer for _, writer in clients])
    await wait_until(lambda: service.registry.closed == 3, "the server to see three closes")
    samples = await scrape(service)
    assert samples["echostat_syn_mss_bytes_count"] == 3
    assert samples["echostat_syn_mss_bytes_sum"] == 3 * LOOPBACK_SYN_MSS
    assert samples[f"echostat_syn_mss_bytes_bucket{LOOPBACK_SYN_MSS}"] == 3
    assert samples["echostat_syn_mss_bytes_bucket8960"] == 0
    text = (await status_fetch(service, "/metrics")).body.decode()
    (options,) = [
        f for f in text_string_to_metric_families(text) if f.name == "echostat_syn_options"
    ]
    counts = {sample.labels["option"]: sample.value for sample in options.samples}
    assert counts == {"mss": 3, "wscale": 3, "sack": 3, "timestamps": 3, "tfo": 0}


@pytest.fixture
def config(tmp_path: Path) -> object:
    return loopback_config(
        access_log=AccessLogConfig(enabled=True, format="json", path=str(tmp_path / "access.log"))
    )


async def test_close_line_carries_the_syn(service: Service, tmp_path: Path) -> None:
    """The access log's close line has the SYN's TTL, hops, MSS and options."""
    _, writer = await echo_once(service.echo_port("main"), b"x")
    await close_all([writer])
    await wait_until(lambda: service.registry.closed == 1, "the server to see the close")
    (line,) = (tmp_path / "access.log").read_text().splitlines()
    record = json.loads(line)
    assert (record["syn_ttl"], record["syn_hops"], record["syn_mss"]) == (64, 0, LOOPBACK_SYN_MSS)
    assert record["syn_options"] == "mss,wscale,sack,timestamps"
    assert record["syn_df"] is True


@pytest.mark.parametrize("config", [loopback_config(path_quality=False)], ids=["off"])
async def test_path_quality_off_saves_no_syn(service: Service) -> None:
    """path_quality: false: no SYN is kept, rows say null and the SYN metrics are absent."""
    _, writer = await echo_once(service.echo_port("main"), b"x")
    assert (await row_of(service, writer))["syn"] is None
    assert not [k for k in await scrape(service) if k.startswith("echostat_syn_")]
    await close_all([writer])
