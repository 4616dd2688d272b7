"""Both views of one connection side by side: what the probe sent and what the server saw
arrive, and the middleboxes that the differences name (``echostat probe --path``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from echostat.probe.address import host_port
from echostat.probe.marks import Sent, dscp_label
from echostat.probe.server_report import ServerView

Finding = Literal[
    "nat", "port_rewritten", "mss_clamped", "dscp_remarked", "ecn_bleached", "options_stripped"
]
"""What a difference between the two views means, in the order they are reported."""

COMMON_INITIAL_TTLS = (64, 128, 255)
"""The TTLs operating systems start with: Linux and macOS 64, Windows 128, network gear 255."""


@dataclass(frozen=True)
class PathView:
    """The ``path`` object of ``--json``: both views and the findings (None: not known)."""

    nat: bool | None
    port_rewritten: bool | None
    peer_seen: str | None
    mss_sent: int | None
    mss_arrived: int | None
    dscp_sent: int
    dscp_arrived: int | None
    ecn_sent: int
    ecn_arrived: int | None
    ttl_arrived: int | None
    hops: int | None
    options_sent: list[str] | None
    options_arrived: list[str] | None
    findings: list[Finding]
    return_dscp_arrived: int | None = None
    """UDP only: the code point the server's answer arrived back with."""
    udp: bool = False

    def document(self) -> dict[str, Any]:
        """The fields as ``--json`` prints them: ``return_dscp_arrived`` for UDP alone."""
        fields = {name: getattr(self, name) for name in _TCP_FIELDS}
        if self.udp:
            fields["return_dscp_arrived"] = self.return_dscp_arrived
        return fields


_TCP_FIELDS = (
    "nat",
    "port_rewritten",
    "peer_seen",
    "mss_sent",
    "mss_arrived",
    "dscp_sent",
    "dscp_arrived",
    "ecn_sent",
    "ecn_arrived",
    "ttl_arrived",
    "hops",
    "options_sent",
    "options_arrived",
    "findings",
)


def hops_from(ttl_sent: int, ttl_arrived: int) -> int:
    """Routers between the two ends: from the TTL the probe set when it is known to have been
    the start (it arrived lower), else from the nearest common initial TTL above the arrival."""
    if ttl_arrived <= ttl_sent:
        return ttl_sent - ttl_arrived
    start = next((ttl for ttl in COMMON_INITIAL_TTLS if ttl >= ttl_arrived), 255)
    return start - ttl_arrived


def compare(sent: Sent, seen: ServerView | None, return_dscp: int | None = None) -> PathView:
    """Both views of one connection (`seen` None: the listener sent no report)."""
    udp = sent.options is None
    half = PathView(
        nat=None,
        port_rewritten=None,
        peer_seen=None,
        mss_sent=sent.mss,
        mss_arrived=None,
        dscp_sent=sent.dscp,
        dscp_arrived=None,
        ecn_sent=sent.ecn,
        ecn_arrived=None,
        ttl_arrived=None,
        hops=None,
        options_sent=None if udp else list(sent.options or ()),
        options_arrived=None,
        findings=[],
        udp=udp,
    )
    if seen is None:
        return half
    nat = seen.peer_host != sent.local_host
    port_rewritten = seen.peer_port != sent.local_port
    arrived_options = None if seen.options is None else list(seen.options)
    clamped = sent.mss is not None and seen.mss is not None and seen.mss < sent.mss
    checks: tuple[tuple[Finding, bool], ...] = (
        ("nat", nat),
        ("port_rewritten", port_rewritten),
        ("mss_clamped", clamped),
        ("dscp_remarked", seen.dscp is not None and seen.dscp != sent.dscp),
        # Sent ECN-capable, arrived not: cleared. CE (3) is a congested router's mark, kept ECN.
        ("ecn_bleached", sent.ecn != 0 and seen.ecn == 0),
        (
            "options_stripped",
            arrived_options is not None and bool(set(sent.options or ()) - set(arrived_options)),
        ),
    )
    return dataclasses.replace(
        half,
        nat=nat,
        port_rewritten=port_rewritten,
        peer_seen=host_port(seen.peer_host, seen.peer_port),
        mss_arrived=seen.mss,
        dscp_arrived=seen.dscp,
        ecn_arrived=seen.ecn,
        ttl_arrived=seen.ttl,
        hops=None if seen.ttl is None else hops_from(sent.ttl, seen.ttl),
        options_arrived=arrived_options,
        findings=[finding for finding, present in checks if present],
        return_dscp_arrived=return_dscp,
    )


def table(sent: Sent, view: PathView) -> list[str]:
    """The side-by-side table printed before the usual output: field, sent, arrived, finding."""
    options_sent = " ".join(view.options_sent or ()) or "-"
    rows = [
        (
            "address",
            host_port(sent.local_host, sent.local_port),
            view.peer_seen or "-",
            _of(view, "nat", "port_rewritten"),
        ),
        ("ttl", str(sent.ttl), _text(view.ttl_arrived), _hops(view.hops)),
        (
            "dscp",
            dscp_label(view.dscp_sent),
            dscp_label(view.dscp_arrived),
            _of(view, "dscp_remarked"),
        ),
        ("ecn", str(view.ecn_sent), _text(view.ecn_arrived), _of(view, "ecn_bleached")),
    ]
    if not view.udp:
        rows += [
            ("mss", _text(view.mss_sent), _text(view.mss_arrived), _of(view, "mss_clamped")),
            (
                "options",
                options_sent,
                " ".join(view.options_arrived or ()) or "-",
                _of(view, "options_stripped"),
            ),
        ]
    else:
        rows.append(
            ("dscp back", dscp_label(view.dscp_arrived), dscp_label(view.return_dscp_arrived), "")
        )
    widths = [max(len(row[i]) for row in [*rows, _HEADINGS]) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in [_HEADINGS, *rows]
    ]


_HEADINGS = ("field", "sent", "arrived", "finding")


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _hops(hops: int | None) -> str:
    if hops is None:
        return ""
    return f"{hops} hop{'s' * (hops != 1)}"


def _of(view: PathView, *findings: Finding) -> str:
    return " ".join(finding for finding in findings if finding in view.findings)
