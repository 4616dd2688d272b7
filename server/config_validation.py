"""Configuration validation, pure: YAML text, environment and overrides in, a `Config` out.

`validate_config` reads nothing but its arguments: it parses the text, applies ``ECHOSTAT_*``
variables and ``key=value`` overrides (`server.config_overrides`), and checks every key
against the schema (`server.config`), raising `ConfigError` with one line naming the source,
the key path and what is wrong, e.g.
``config.yaml: listeners[0].port: expected an integer 0..65535, got 70000``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from echostat.server.config import Config, ConfigError, ListenerConfig, WatchConfig
from echostat.server.config_overrides import SECRET_KEY, apply_overrides
from echostat.server.config_yaml import format_number, parse_yaml, show_value, yaml_problem
from echostat.server.sockets import url_host
from echostat.server.wording import count_of


@dataclass(frozen=True)
class ValidatedConfig:
    """A valid `Config`, and where its `limits.max_connections` came from: None when it was
    left out (it is then derived from the descriptor limit when the config is loaded)."""

    config: Config
    max_connections_origin: str | None
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Key path -> the variable or flag its value came from, for keys not from the file."""

    def blame(self, exc: ConfigError, source: str) -> ConfigError:
        """`exc`, a later check's error about file `source`, naming the variable or flag its
        key came from instead of the file."""
        return _blame_origin(exc, source, self.origins)


def validate_config(
    text: str, source: str, env: Mapping[str, str] | None = None, overrides: Sequence[str] = ()
) -> ValidatedConfig:
    """`text`, the content of the file `source`, with ``ECHOSTAT_*`` variables from `env`,
    then ``key=value`` `overrides`, as a validated config.

    Raises `ConfigError` for YAML errors, unknown keys, wrong types, values out of range and
    keys that contradict each other.
    """
    raw = _parse_config(Path(source), text)
    origins: dict[str, str] = {}
    """Key path (``listeners[0].port``) -> where its value came from, if not the file."""
    raw = apply_overrides(raw, env or {}, overrides, origins)
    limits = raw.get("limits")
    explicit = isinstance(limits, dict) and limits.get("max_connections") is not None
    if isinstance(limits, dict) and not explicit:
        raw = {**raw, "limits": {k: v for k, v in limits.items() if k != "max_connections"}}
    try:
        config: Config = _build(Config, raw, source, "")
        _check_consistency(config, source)
    except ConfigError as exc:
        raise _blame_origin(exc, source, origins) from None
    origin = origins.get("limits.max_connections", source) if explicit else None
    return ValidatedConfig(config, origin, origins)


def _blame_origin(exc: ConfigError, source: str, origins: Mapping[str, str]) -> ConfigError:
    """Name the variable or flag, not the file, when the bad value came from one of them: the
    value at the key the error names, or a section containing it (``--set listeners.0={}``)."""
    message = str(exc)
    head = f"{source}: "
    if not message.startswith(head):
        return exc
    key, sep, rest = message[len(head) :].partition(": ")
    for path, origin in sorted(origins.items(), key=lambda item: -len(item[0])):
        if sep and (key == path or key.startswith((f"{path}.", f"{path}["))):
            return ConfigError(f"{origin}: {key}: {rest}")
    return exc


def _parse_config(path: Path, text: str) -> dict[str, Any]:
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        hint = _any_address_hint(exc, text)
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}{hint}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


_LONE_DOUBLE_COLON = re.compile(r"(?:^|[\s{\[,])::(?:$|[\s,}\]#])")
"""``::`` standing alone as a value: YAML reads it as a mapping, never as the address."""


def _any_address_hint(exc: yaml.YAMLError, text: str) -> str:
    """How to fix the error `exc` in `text` when its line has ``::`` unquoted, else ``""``."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return ""
    lines = text.splitlines()
    line = lines[exc.problem_mark.line] if exc.problem_mark.line < len(lines) else ""
    return '; write the address :: in quotes: host: "::"' if _LONE_DOUBLE_COLON.search(line) else ""


def _build(cls: Any, raw: Any, source: str, path: str) -> Any:
    """Validate the mapping `raw` against dataclass `cls`, recursively."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: {path or 'top level'}: expected a mapping, got {show_value(raw)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(key) for key in raw if key not in fields)
    if unknown:
        allowed = ", ".join(fields)
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{source}: {where}: unknown key (allowed here: {allowed})")
    values = {}
    for name, value in raw.items():  # before what is missing: a wrong value names its own key
        key_path = f"{path}.{name}" if path else name
        values[name] = _convert(hints[name], fields[name], value, source, key_path)
    for name, fld in fields.items():
        required = fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING
        if required and name not in raw:
            where = f"{path}.{name}" if path else name
            raise ConfigError(f"{source}: {where}: missing (this key is required)")
    return cls(**values)


def _convert(hint: Any, fld: dataclasses.Field[Any], value: Any, source: str, path: str) -> Any:
    """Check one value against its type hint and range; return it in its final type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        if len(alternatives) == 1:  # `X | None`: X's own error names the key inside a section
            return _convert(alternatives[0], fld, value, source, path)
        wanted = []
        for inner in alternatives:
            try:
                return _convert(inner, fld, value, source, path)
            except ConfigError as exc:
                wanted.append(str(exc).partition(": expected ")[2].rpartition(", got ")[0])
        raise ConfigError(
            f"{source}: {path}: expected {' or '.join(wanted)}, got {show_value(value)}"
        )
    if origin is tuple and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list) or not (value or fld.metadata.get("may_be_empty")):
            kind = "a list" if fld.metadata.get("may_be_empty") else "a non-empty list"
            raise ConfigError(f"{source}: {path}: expected {kind}, got {show_value(value)}")
        return tuple(_build(args[0], item, source, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {path}: expected a list, got {show_value(value)}")
        return tuple(
            _convert(args[0], fld, item, source, f"{path}[{i}]") for i, item in enumerate(value)
        )
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path)
    if origin is Literal:
        if value not in args:
            choices = " | ".join(str(a) for a in args)
            raise ConfigError(
                f"{source}: {path}: expected one of {choices}, got {show_value(value)}"
            )
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            secret = path == SECRET_KEY and value != ""  # a number YAML read: show none of it
            shown = "no text (a secret, not shown); quote it" if secret else show_value(value)
            raise ConfigError(f"{source}: {path}: expected a non-empty string, got {shown}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {path}: expected true or false, got {show_value(value)}")
        return value
    return _convert_number(hint, fld, value, source, path)


def _convert_number(
    hint: Any, fld: dataclasses.Field[Any], value: Any, source: str, path: str
) -> int | float:
    kind = "an integer" if hint is int else "a number"
    low, high = fld.metadata.get("range", (-math.inf, math.inf))
    span = f" {format_number(low)}..{format_number(high)}" if "range" in fld.metadata else ""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    wrong_kind = hint is int and not isinstance(value, int)
    if not numeric or wrong_kind or (isinstance(value, float) and math.isnan(value)):
        hint = _number_hint(value)
        raise ConfigError(f"{source}: {path}: expected {kind}{span}, got {show_value(value)}{hint}")
    # Compared exactly: an integer of hundreds of digits has no float to convert to.
    if not low <= value <= high:
        shown = show_value(value) if isinstance(value, int) else format_number(value)
        raise ConfigError(f"{source}: {path}: expected {kind}{span}, got {shown}")
    return hint(value)  # type: ignore[no-any-return]


def _number_hint(value: Any) -> str:
    """How to write `value`, text YAML 1.1 reads though it is a number (``1e3``), else ``""``."""
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        return ""
    return (
        f" (YAML reads it as text; write {format_number(number)})" if math.isfinite(number) else ""
    )


MIN_TOKEN_CHARS = 16


def _check_consistency(config: Config, source: str) -> None:
    """Rules that span several keys."""
    status = config.status
    if status.token is not None and len(status.token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{source}: status.token: too short ({count_of(len(status.token), 'character')},"
            f" need at least {MIN_TOKEN_CHARS}); generate one with: python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(32))'"
        )
    if status.token is None and not status.on_loopback:
        raise ConfigError(
            f"{source}: status.token: required because status.host {status.host} is not a"
            " loopback address; set a token (python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(32))') or bind status.host to 127.0.0.1"
        )
    for index, name in enumerate(status.allowed_hosts):  # as web.access compares a Host name
        if {"*", "/", "[", "]"} & set(name) or name.count(":") == 1:
            raise ConfigError(
                f"{source}: status.allowed_hosts[{index}]: expected a name or address alone,"
                f" which every port matches (example.com, ::1), got {name!r}"
            )
    for index, open_path in enumerate(status.open_paths):
        if not open_path.startswith("/"):
            raise ConfigError(
                f"{source}: status.open_paths[{index}]: expected a path starting with /,"
                f" got {open_path!r}"
            )
    for index, listener in enumerate(config.listeners):
        _check_proxy_protocol(listener, f"{source}: listeners[{index}]")
        _check_udp_listener(listener, f"{source}: listeners[{index}]")
    names = [listener.name for listener in config.listeners]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(
                f"{source}: listeners[{index}].name: duplicate listener name {name!r}"
            )
    _check_addresses(config, source)
    _check_watch(config.watch, f"{source}: watch")


def _check_addresses(config: Config, source: str) -> None:
    """No two sockets on one address (port 0: any free one); a bind would fail as if taken."""
    status, listeners = config.status, enumerate(config.listeners)
    sockets = [(f"listeners[{i}]", s.protocol, s.host, s.port) for i, s in listeners]
    held: dict[tuple[str, str, int], str] = {}
    for key, protocol, host, port in [*sockets, ("status", "tcp", status.host, status.port)]:
        other = held.setdefault((protocol, host, port), key)
        if port and other != key:
            raise ConfigError(
                f"{source}: {key}.port: {url_host(host)}:{port}/{protocol} is {other}'s address"
                " too; give each its own port (or 0 for any free one)"
            )


_WATCH_TARGET = re.compile(
    r"(?P<udp>udp://)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+)):(?P<port>\d{1,5})"
)
"""``HOST:PORT``, ``[IPv6]:PORT`` or either after ``udp://``: what a watch target may be."""

UDP_PROBE_MIN_SIZE = 28
"""A UDP probe datagram carries a 28-byte header (magic, run id, sequence, send time)."""


def _check_watch(watch: WatchConfig, where: str) -> None:
    """Each target parses as an address with a port 1..65535, names are unique, and a UDP
    target's datagrams have room for the probe's header."""
    seen: set[str] = set()
    for index, target in enumerate(watch.targets):
        here = f"{where}.targets[{index}]"
        if target.name in seen:
            raise ConfigError(f"{here}.name: duplicate watch target name {target.name!r}")
        seen.add(target.name)
        match = _WATCH_TARGET.fullmatch(target.target)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ConfigError(
                f"{here}.target: expected HOST:PORT or udp://HOST:PORT with a port 1..65535"
                f" (IPv6 in brackets), got {target.target!r}"
            )
        if match["v6"] is not None:
            try:
                ipaddress.IPv6Address(match["v6"])
            except ValueError:
                raise ConfigError(
                    f"{here}.target: {match['v6']!r} in brackets is not an IPv6 address"
                ) from None
        else:
            try:
                match["host"].encode("idna")  # as the resolver does first, every round
            except UnicodeError:
                raise ConfigError(
                    f"{here}.target: {match['host']!r} is not a host name: each label between"
                    " its dots has 1 to 63 characters"
                ) from None
        if match["udp"] and target.size < UDP_PROBE_MIN_SIZE:
            raise ConfigError(
                f"{here}.size: expected at least {UDP_PROBE_MIN_SIZE} for a udp:// target"
                f" (the probe's header), got {target.size}"
            )


def _check_proxy_protocol(listener: ListenerConfig, where: str) -> None:
    """PROXY headers are believed only from networks listed explicitly, never guessed."""
    for index, cidr in enumerate(listener.proxy_trusted):
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"{where}.proxy_trusted[{index}]: {exc}") from None
    if listener.proxy_protocol and not listener.proxy_trusted:
        raise ConfigError(
            f"{where}.proxy_trusted: required with proxy_protocol: true; list the networks of"
            " your load balancers, e.g. [10.0.0.0/8]"
        )
    if listener.proxy_protocol and listener.tls is not None:
        raise ConfigError(
            f"{where}.proxy_protocol: cannot be combined with tls on one listener; terminate"
            " TLS on the load balancer or use a plain TCP listener"
        )


def _check_udp_listener(listener: ListenerConfig, where: str) -> None:
    """TLS and PROXY headers are stream features; a UDP listener can have neither."""
    if listener.protocol != "udp":
        return
    for key, used in (
        ("tls", listener.tls is not None),
        ("proxy_protocol", listener.proxy_protocol),
    ):
        if used:
            raise ConfigError(
                f"{where}.{key}: not available with protocol: udp; remove it, or use a"
                " separate tcp listener"
            )
