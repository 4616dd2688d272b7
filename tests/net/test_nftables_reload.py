"""The shipped nftables rules load again over themselves, as after adapting the rate."""

from __future__ import annotations

from tests.helpers import REPO
from tests.net.topology import namespace, require_namespaces

RULES = REPO / "deploy" / "nftables" / "echostat-udp.nft"


def test_loading_the_nftables_rules_twice_replaces_them() -> None:
    """A second `nft -f` of the file, with its rate changed, succeeds and leaves the table
    with one rule per family at the new rate, not the first load's beside it."""
    require_namespaces()
    with namespace("nft") as host:
        host.nft(RULES.read_text())
        host.nft(RULES.read_text().replace("2000/second", "3000/second"))
        listing = host.run("nft", "list", "table", "inet", "echostat_udp")
    assert listing.count("drop comment") == 2, listing
    assert listing.count("3000/second") == 2 and "2000/second" not in listing, listing
