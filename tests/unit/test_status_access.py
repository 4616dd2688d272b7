"""The status side's Host allow-list: loopback names always, allowed_hosts besides them."""

from __future__ import annotations

import pytest

from echostat.server.config import StatusConfig
from echostat.web.access import AccessPolicy

TOKEN = "correct-horse-battery-staple"
PUBLIC = StatusConfig(host="0.0.0.0", token=TOKEN, allowed_hosts=("status.example.com",))
"""A status side off loopback with a Host allow-list, as behind HAProxy with a name."""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:7070", "[::1]:7070"])
def test_loopback_names_pass_beside_allowed_hosts_off_loopback(host: str) -> None:
    """Off loopback, setting allowed_hosts keeps the loopback names, as the docs promise:
    HAProxy's HTTP/1.0 check sends no Host (Tornado then takes 127.0.0.1), and a check or a
    scrape on the host itself names localhost."""
    assert AccessPolicy.from_config(PUBLIC).host_allowed(host)


@pytest.mark.parametrize("host", ["status.example.com", "STATUS.example.com:7070"])
def test_allowed_hosts_pass_off_loopback(host: str) -> None:
    """A name in allowed_hosts passes, whatever its case and port."""
    assert AccessPolicy.from_config(PUBLIC).host_allowed(host)


def test_other_names_get_refused_once_allowed_hosts_is_set() -> None:
    """A rebinding attacker's name is refused off loopback too, once allowed_hosts is set."""
    assert not AccessPolicy.from_config(PUBLIC).host_allowed("attacker.example:7070")


@pytest.mark.parametrize(
    ("bound", "host"),
    [("127.0.0.2", "127.0.0.2:7070"), ("192.0.2.11", "192.0.2.11:7070"), ("::1", "[::1]")],
)
def test_the_address_the_status_side_binds_passes_as_a_host(bound: str, host: str) -> None:
    """The URL the startup line prints (http://STATUS_HOST:PORT/) is answered: a loopback
    bind other than 127.0.0.1, or an address with allowed_hosts set (a scrape by address)."""
    status = StatusConfig(host=bound, token=TOKEN, allowed_hosts=("status.example.com",))
    assert AccessPolicy.from_config(status).host_allowed(host)
    assert AccessPolicy.from_config(StatusConfig(host="127.0.0.2")).host_allowed("127.0.0.2")
