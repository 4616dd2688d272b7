"""Admission of new connections: limits, PROXY sources parsed once per listener config."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from echostat.server.admission import Admission, ListenerRules
from echostat.server.config import LimitsConfig, ListenerConfig
from echostat.server.registry import Registry

PROXIED = ListenerConfig(name="lb", proxy_protocol=True, proxy_trusted=("10.0.0.0/8", "::1/128"))


def test_listener_rules_hold_the_trusted_networks_parsed() -> None:
    """`proxy_trusted` is parsed once, when the rules are made."""
    rules = ListenerRules.of(PROXIED)
    assert rules.trusted_networks == (ip_network("10.0.0.0/8"), ip_network("::1/128"))


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.1.2.3", None),
        ("::ffff:10.1.2.3", None),
        ("::1", None),
        ("192.0.2.1", "proxy_untrusted"),
    ],
)
def test_proxy_sources_are_checked_against_the_parsed_networks(ip: str, reason: str | None) -> None:
    """A PROXY listener admits only peers in its trusted networks."""
    admission = Admission(Registry(), LimitsConfig())
    assert admission.refusal(ip, 3, ListenerRules.of(PROXIED)) == reason


def test_connections_awaiting_their_header_count_against_max_connections() -> None:
    """Between `header_started` and `header_settled` a connection takes a place."""
    admission = Admission(Registry(), LimitsConfig(max_connections=1))
    rules = ListenerRules.of(PROXIED)
    admission.header_started()
    assert admission.refusal("10.0.0.1", 3, rules) == "max_connections"
    admission.header_settled()
    assert admission.refusal("10.0.0.1", 3, rules) is None
