"""Listening sockets: bound from the config, or inherited (systemd socket activation, or a
supervisor handing its sockets to worker processes)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import typing
from collections.abc import Iterable, Mapping

from tornado.netutil import bind_sockets

from echostat.server.config import Config, ConfigError, StatusConfig, is_loopback

SD_LISTEN_FDS_START = 3
"""systemd passes sockets as descriptors 3, 4, ... (sd_listen_fds(3))."""


STATUS_BACKLOG = 128
"""Listen queue of the status port: browsers and scrapers, never a flood."""


def bind(
    key: str, host: str, port: int, backlog: int = STATUS_BACKLOG, reuse_port: bool = False
) -> list[socket.socket]:
    """`bind_sockets`, with failures turned into a `ConfigError` that names the config key.

    ``::`` binds every interface in both families, as Tornado does for no address: one
    IPv6-only and one IPv4 socket, so IPv4 clients keep their own addresses (not mapped
    ``::ffff:`` ones) in the per-IP limit, the PROXY trust check and the page.
    """
    try:
        address = None if host == "::" else host
        return bind_sockets(port, address, backlog=backlog, reuse_port=reuse_port)
    except OSError as exc:
        _raise_bind_error(key, host, port, exc)


def bind_udp(key: str, host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking UDP sockets on every address `host` resolves to (IPv4 and IPv6; ``::``
    means both families, as in `bind`), all on one port, with failures turned into a
    `ConfigError` that names the config key."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            None if host == "::" else host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setblocking(False)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets[0] is not sock:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except (socket.gaierror, OSError) as exc:
        for sock in sockets:
            sock.close()
        _raise_bind_error(key, host, port, exc)
    return sockets


def resolve(key: str, host: str, port: int, kind: socket.SocketKind) -> None:
    """Look `host` up as binding it would, without binding (``--check-config``); a
    `ConfigError` naming `key`'s host if it can't be resolved."""
    if host.startswith("[") and host.endswith("]"):  # as in a URL; no resolver reads it so
        raise ConfigError(f"{key}.host: {host!r}: write the address without brackets, {host[1:-1]}")
    try:
        socket.getaddrinfo(None if host == "::" else host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _raise_bind_error(key, host, port, exc)


def _raise_bind_error(key: str, host: str, port: int, exc: OSError) -> typing.NoReturn:
    if isinstance(exc, socket.gaierror):
        raise ConfigError(f"{key}.host: cannot resolve {host!r}: {exc.strerror}") from None
    hint = {
        errno.EADDRINUSE: " (another process uses it; pick another port, or 0 for any)",
        errno.EACCES: " (ports below 1024 need privileges; pick a higher port)",
        errno.EADDRNOTAVAIL: " (this host has no such address)",
    }.get(exc.errno or 0, "")
    raise ConfigError(
        f"{key}.port: cannot listen on {url_host(host)}:{port}: {exc.strerror}{hint}"
    ) from None


def inherited_sockets(fds: Iterable[int]) -> list[socket.socket]:
    """Wrap inherited listening descriptors as non-blocking socket objects."""
    sockets = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def systemd_sockets(env: Mapping[str, str]) -> dict[str, list[socket.socket]]:
    """Sockets passed by systemd socket activation, by FileDescriptorName.

    Empty unless ``LISTEN_PID`` is this process. The variables are removed afterwards so
    that processes we start don't take the sockets for theirs.
    """
    if env.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(env.get("LISTEN_FDS", "0"))
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)
    found: dict[str, list[socket.socket]] = {}
    for index, sock in enumerate(
        inherited_sockets(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    ):
        name = names[index] if index < len(names) and names[index] else "main"
        found.setdefault(name, []).append(sock)
    return found


def check_systemd_sockets(sockets: Mapping[str, list[socket.socket]], config: Config) -> None:
    """Refuse inherited sockets that nothing would serve right: a name that is no listener's
    (its clients would wait in a backlog no one accepts from) or the wrong kind of socket."""
    kinds = {f"listeners[{n}]": (lst.name, lst.protocol) for n, lst in enumerate(config.listeners)}
    if sockets and (taken := next((k for k, (n, _) in kinds.items() if n == "status"), None)):
        raise ConfigError(
            f'{taken}.name: "status" names the status page\'s inherited socket; give the'
            " listener (and its socket unit's FileDescriptorName=) another name"
        )
    kinds["status"] = ("status", "tcp")
    for key, (name, protocol) in kinds.items():
        for sock in sockets.get(name, []):
            if (sock.type == socket.SOCK_DGRAM) != (protocol == "udp"):
                has, wants = ("Stream", "Datagram") if protocol == "udp" else ("Datagram", "Stream")
                raise ConfigError(
                    f'{key}: the inherited socket "{name}" is a {has.lower()} socket, but the'
                    f" {'status page' if key == 'status' else 'listener'} is {protocol.upper()};"
                    f" give its socket unit Listen{wants}= instead of Listen{has}="
                )
    names = [name for name, _ in kinds.values()]
    for name in sockets:
        if name not in names:
            raise ConfigError(
                f'the inherited socket "{name}" (FileDescriptorName=) names no listener;'
                f" name it after one of: {', '.join(names)}"
            )


def check_inherited_status(sockets: list[socket.socket], status: StatusConfig) -> None:
    """Refuse an inherited status socket that is reachable off loopback without a token.

    The token rule is decided from ``status.host``; an activation unit listening elsewhere
    must not silently bypass it.
    """
    for sock in sockets:
        host = sock.getsockname()[0]
        if status.token is None and not is_loopback(host):
            raise ConfigError(
                f"status: the inherited status socket listens on {host}, not on loopback,"
                " but status.token is not set; set a token or bind the socket unit to 127.0.0.1"
            )


def served_host(host: str, sockets: list[socket.socket]) -> str:
    """The address to show for `host`'s listening `sockets`: `host` as configured (a name, or
    the address bound), unless it is an address the sockets, inherited, don't listen on."""
    try:
        configured = ipaddress.ip_address(host)
    except ValueError:
        return host
    actual: list[str] = [sock.getsockname()[0] for sock in sockets]
    if not actual or configured in map(ipaddress.ip_address, actual):
        return host
    return actual[0]


def url_host(host: str) -> str:
    """`host` as it goes in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host
