"""The saved-SYN decoder on headers captured from a real kernel, whole and cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from echostat.server.syn import SynHeaders, decode

DATA = Path(__file__).parent / "data"
IPV4 = (DATA / "syn_ipv4_loopback.bin").read_bytes()
IPV6 = (DATA / "syn_ipv6_loopback.bin").read_bytes()
MARKED = (DATA / "syn_ipv4_marked.bin").read_bytes()
"""See data/README.md for how each was captured and what it holds."""


def test_ipv4_loopback_syn_decodes_to_the_kernel_values() -> None:
    """A plain Linux SYN to 127.0.0.1: TTL 64, DF, the loopback MSS and the usual options."""
    assert decode(IPV4) == SynHeaders(
        ttl=64,
        dscp=0,
        ecn=0,
        df=True,
        mss=65495,
        wscale=10,
        sack=True,
        timestamps=True,
        tfo=False,
        other_options=(),
    )


def test_ipv6_syn_gives_hop_limit_and_traffic_class_and_no_df() -> None:
    """IPv6: hop limit and the traffic class's DSCP and ECN; DF does not exist there."""
    syn = decode(IPV6)
    assert syn is not None
    assert (syn.ttl, syn.dscp, syn.ecn, syn.df, syn.mss, syn.wscale) == (
        100,
        10,
        0,
        None,
        65476,
        10,
    )
    assert syn.hops == 28


def test_marked_syn_shows_dscp_ttl_mss_and_fast_open() -> None:
    """The client's own marks arrive as set: EF, TTL 63 (one hop), MSS 1000, a TFO request."""
    syn = decode(MARKED)
    assert syn is not None
    assert (syn.dscp, syn.ecn, syn.ttl, syn.hops, syn.mss, syn.tfo) == (46, 0, 63, 1, 1000, True)
    assert syn.options == ("mss", "wscale", "sack", "timestamps", "tfo")


@pytest.mark.parametrize(
    ("ttl", "hops"), [(64, 0), (57, 7), (65, 63), (128, 0), (120, 8), (250, 5)]
)
def test_hops_count_down_from_the_nearest_common_initial_ttl(ttl: int, hops: int) -> None:
    syn = decode(IPV4[:8] + bytes([ttl]) + IPV4[9:])
    assert syn is not None and syn.hops == hops


def test_options_beyond_a_short_buffer_are_none() -> None:
    """Cut inside the TCP options: the IP fields stay, every option is None, not False."""
    syn = decode(IPV4[:50])
    assert syn == SynHeaders(64, 0, 0, True, None, None, None, None, None, None)
    assert syn.options == ()


def test_a_field_cut_in_half_is_none() -> None:
    """Cut inside the IPv4 flags: DF and everything after it are None."""
    assert decode(IPV4[:7]) == SynHeaders(None, 0, 0, None, None, None, None, None, None, None)
    ipv6 = decode(IPV6[:1])
    assert ipv6 is not None and (ipv6.dscp, ipv6.ttl) == (None, None)


@pytest.mark.parametrize("data", [b"", b"\x00" * 60, b"\x50" + IPV4[1:]])
def test_no_ip_header_gives_none(data: bytes) -> None:
    """Nothing saved (TCP_SAVE_SYN was off), or not IPv4 or IPv6."""
    assert decode(data) is None


def test_unknown_and_malformed_options() -> None:
    """Other kinds are listed; an option whose length runs past the header ends the walk."""
    header = bytearray(IPV4)
    header[40:44] = bytes([30, 4, 0, 0])  # kind 30 (MPTCP) where the MSS was
    syn = decode(bytes(header))
    assert syn is not None and syn.mss is None and syn.other_options == (30,)
    header[40:44] = bytes([2, 40, 0, 0])  # an MSS option claiming 40 bytes
    syn = decode(bytes(header))
    assert syn is not None and (syn.mss, syn.sack, syn.other_options) == (None, False, ())
