"""Parses the addresses a user types: ``HOST:PORT``, ``[IPv6]:PORT``, ``IP:PORT``."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_host_port(text: str, scheme: str = "") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port); ValueError says what is wrong (also a
    host name no resolver could look up), naming the target as typed with its `scheme`
    (``udp://``) before `text`."""
    typed = repr(scheme + text)
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise ValueError(f"{typed}: expected {scheme}[IPv6]:PORT, e.g. {scheme}[::1]:7007")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{typed}: {host!r} in brackets is not an IPv6 address") from None
        port = rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{typed}: expected {scheme}HOST:PORT, e.g. {scheme}127.0.0.1:7007")
        if ":" in host:
            raise ValueError(f"{typed}: an IPv6 address goes in brackets, e.g. {scheme}[::1]:7007")
    if not is_decimal(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{typed}: port must be 1..65535, got {port!r}")
    try:
        host.encode("idna")  # as the resolver does first, which raises UnicodeError
    except UnicodeError:
        raise ValueError(
            f"{typed}: {host!r} is not a host name: each label between its dots has 1 to 63"
            " characters"
        ) from None
    return host, int(port)


def parse_ip_port(text: str) -> tuple[IPAddress, int]:
    """``IP:PORT`` or ``[IPv6]:PORT`` with a literal address (no name), port 0..65535."""
    host, colon, port = text.rpartition(":")
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ValueError(f"{text!r}: expected IP:PORT, e.g. 203.0.113.7:40000") from None
    if not colon or not is_decimal(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be 0..65535, got {port!r}")
    return address, int(port)


def is_decimal(text: str) -> bool:
    """Whether `text` is digits 0-9 that int() reads (str.isdigit also takes "²", which it
    does not)."""
    return text.isascii() and text.isdigit()


def host_port(host: str, port: int) -> str:
    """An address as typed back: ``HOST:PORT``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
