"""The pure parts of ``echostat probe --path`` and ``--idle-timeout``: DSCP names, the report
line, the comparison and its findings, the hop count, the idle search's periods."""

from __future__ import annotations

import dataclasses
import json

import pytest

from echostat.probe.idle import between, default_resolution_s, doubling
from echostat.probe.marks import Sent, dscp_label, parse_dscp
from echostat.probe.path_view import compare, hops_from, table
from echostat.probe.server_report import UDP_REQUEST_BYTES, parse_report, udp_request

SENT = Sent(
    "198.18.0.2",
    40000,
    dscp=46,
    ecn=0,
    ttl=64,
    mss=1460,
    options=("mss", "wscale", "sack", "timestamps"),
)


def report(**changes: object) -> bytes:
    """A TCP report line as an echostat report listener sends it."""
    syn = {
        "ttl": 63,
        "dscp": 10,
        "ecn": 0,
        "df": True,
        "mss": 1000,
        "wscale": 7,
        "sack": True,
        "timestamps": True,
        "tfo": False,
        "other_options": [],
        "hops": 1,
    }
    fields: dict[str, object] = {
        "version": "0.1.0",
        "peer": "198.18.1.1:40000",
        "local": "198.18.1.2:7008",
        "syn": syn,
        "proxy_source": None,
    }
    fields.update(changes)
    return b"ECHOSTAT-REPORT " + json.dumps(fields).encode() + b"\r\n"


@pytest.mark.parametrize(
    ("text", "value"), [("EF", 46), ("af11", 10), ("AF43", 38), ("CS0", 0), ("CS7", 56), ("63", 63)]
)
def test_dscp_names_and_numbers(text: str, value: int) -> None:
    """--dscp takes the per-hop behaviours' names, in any case, and 0..63."""
    assert parse_dscp(text) == value


@pytest.mark.parametrize("text", ["64", "-1", "AF44", "EF1", ""])
def test_a_wrong_dscp_is_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match="--dscp"):
        parse_dscp(text)


def test_a_code_point_is_printed_with_its_name() -> None:
    assert (dscp_label(46), dscp_label(10), dscp_label(0), dscp_label(None)) == (
        "46 (EF)",
        "10 (AF11)",
        "0",
        "-",
    )


def test_through_a_nat_that_clamps_and_remarks_the_findings_name_each() -> None:
    """The router's address seen, MSS 1000 of 1460, AF11 for EF, one hop: three findings."""
    view = compare(SENT, parse_report(report()))
    assert view.findings == ["nat", "mss_clamped", "dscp_remarked"]
    assert (view.hops, view.peer_seen, view.port_rewritten) == (1, "198.18.1.1:40000", False)
    assert view.document()["options_arrived"] == ["mss", "wscale", "sack", "timestamps"]
    assert "return_dscp_arrived" not in view.document()


def test_a_direct_path_has_no_finding() -> None:
    syn = {
        "ttl": 64,
        "dscp": 46,
        "ecn": 0,
        "mss": 1460,
        "wscale": 7,
        "sack": True,
        "timestamps": True,
    }
    view = compare(SENT, parse_report(report(peer="198.18.0.2:40000", syn=syn)))
    assert (view.findings, view.hops, view.nat) == ([], 0, False)


def test_stripped_options_a_rewritten_port_and_bleached_ecn_are_named() -> None:
    sent = dataclasses.replace(SENT, dscp=0, ecn=2)
    syn = {
        "ttl": 64,
        "dscp": 0,
        "ecn": 0,
        "mss": 1460,
        "wscale": None,
        "sack": True,
        "timestamps": False,
    }
    view = compare(sent, parse_report(report(peer="[::ffff:198.18.0.2]:5", syn=syn)))
    assert view.findings == ["port_rewritten", "ecn_bleached", "options_stripped"]
    assert view.options_arrived == ["mss", "sack"]


def test_congestion_experienced_is_not_bleached_ecn() -> None:
    """ECT(0) that arrives marked CE by a congested router kept its ECN: no finding."""
    sent = dataclasses.replace(SENT, dscp=10, ecn=2)
    arrived = {"peer": "198.18.0.2:40000", "syn": None, "ttl": 64, "dscp": 10}
    view = compare(sent, parse_report(report(**arrived, ecn=3)))
    assert (view.ecn_arrived, view.findings) == (3, [])


def test_without_a_report_only_the_probes_half_is_known() -> None:
    view = compare(SENT, None)
    assert (view.nat, view.mss_arrived, view.findings, view.mss_sent) == (None, None, [], 1460)
    assert table(SENT, view)[1].split()[:3] == ["address", "198.18.0.2:40000", "-"]


def test_hops_count_from_the_ttl_sent_or_the_nearest_common_initial_ttl() -> None:
    assert [hops_from(64, 63), hops_from(64, 64), hops_from(10, 9)] == [1, 0, 1]
    assert [hops_from(64, 120), hops_from(64, 250)] == [8, 5]


@pytest.mark.parametrize(
    "line",
    [b"hello", b"ECHOSTAT-REPORT {", b"ECHOSTAT-REPORT []", b'ECHOSTAT-REPORT {"peer": 5}'],
)
def test_what_is_not_a_report_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_report(line)


def test_the_udp_request_is_as_long_as_the_answer_may_be() -> None:
    request = udp_request()
    assert request.startswith(b"ECHOSTAT-REPORT?") and len(request) == UDP_REQUEST_BYTES == 512


def test_the_idle_search_doubles_then_bisects() -> None:
    assert doubling(8) == [1, 2, 4, 8.0]
    assert doubling(10) == [1, 2, 4, 8, 10.0]
    assert between(2, 4) == [2.5, 3.0, 3.5]
    assert (default_resolution_s(4), default_resolution_s(600)) == (1.0, 60.0)
