"""Path reports: what the server saw of a connection, told to the client in band.

On a listener with ``report: true``, `ReportingEchoProtocol` speaks first with one line,
``ECHOSTAT-REPORT <json>\\r\\n``, then echoes as any listener does; the line is not counted as
echoed bytes. `syn_document` is the ``syn`` object that line, ``/api/connections`` and the
page share. Listeners without the option never use this module: they stay RFC 862.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from echostat.server import __version__
from echostat.server.echo import EchoProtocol
from echostat.server.registry import peer_name
from echostat.server.syn import SynHeaders

REPORT_PREFIX = b"ECHOSTAT-REPORT "
"""How a report starts, on TCP and UDP alike; a JSON object and CRLF follow."""


def syn_document(syn: SynHeaders | None) -> dict[str, Any] | None:
    """The ``syn`` object: the decoded fields plus ``hops``; None with no SYN saved."""
    if syn is None:
        return None
    return {
        "ttl": syn.ttl,
        "hops": syn.hops,
        "dscp": syn.dscp,
        "ecn": syn.ecn,
        "df": syn.df,
        "mss": syn.mss,
        "wscale": syn.wscale,
        "sack": syn.sack,
        "timestamps": syn.timestamps,
        "tfo": syn.tfo,
        "other_options": None if syn.other_options is None else list(syn.other_options),
    }


def report_line(fields: dict[str, Any]) -> bytes:
    """``ECHOSTAT-REPORT <compact json>\\r\\n`` for `fields`, with echostat's version first."""
    document = {"version": __version__, **fields}
    return REPORT_PREFIX + json.dumps(document, separators=(",", ":")).encode() + b"\r\n"


def address_name(address: Any) -> str | None:
    """A socket address tuple as ``IP:PORT`` (``[IP]:PORT`` for IPv6); None if unknown."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    return peer_name(str(address[0]), int(address[1]))


class ReportingEchoProtocol(EchoProtocol):
    """An echo that first writes one report line about the connection, as seen here.

    ``peer`` is the TCP peer (a balancer, when a trusted PROXY header named the client, which
    is then ``proxy_source``); ``local`` the address the client reached.
    """

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        line = report_line(
            {
                "peer": self.via or self.peer,
                "local": address_name(transport.get_extra_info("sockname")),
                "syn": syn_document(self.syn),
                "proxy_source": self.peer if self.via else None,
            }
        )
        # Written past the counters: the report is not echo. The socket's buffer is empty at
        # this point, so the line goes out at once and never counts as queued echo.
        transport.write(line)  # type: ignore[attr-defined]
