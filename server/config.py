"""Configuration: YAML file, environment and flags in, validated frozen dataclasses out.

Loading is pure: `load_config` reads the file, applies overrides and either returns a
`Config` or raises `ConfigError` with one line naming the file, the key path and what is
wrong, e.g. ``config.yaml: listeners[0].port: expected an integer 0..65535, got 70000``.
The dataclasses below are the schema: their fields are the only keys accepted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "ECHOSTAT_"
"""Environment variables ``ECHOSTAT_<KEY>`` override single keys; ``__`` separates levels."""


class ConfigError(Exception):
    """A configuration a person must fix; the message is one line that names the key."""


def _range(low: float, high: float) -> dict[str, Any]:
    """Field metadata: the closed interval a number must lie in."""
    return {"range": (low, high)}


@dataclass(frozen=True)
class ListenerConfig:
    """One echo listener: a named TCP address."""

    name: str = "main"
    host: str = "127.0.0.1"
    port: int = field(default=7007, metadata=_range(0, 65535))


@dataclass(frozen=True)
class StatusConfig:
    """Where the status page, JSON API and metrics are served."""

    host: str = "127.0.0.1"
    port: int = field(default=7070, metadata=_range(0, 65535))


@dataclass(frozen=True)
class LimitsConfig:
    """Per-connection resource bounds."""

    max_buffer_bytes: int = field(default=262144, metadata=_range(1024, 64 * 1024 * 1024))


@dataclass(frozen=True)
class Config:
    """The whole service: echo listeners, status endpoint, limits and lifecycle."""

    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    status: StatusConfig = StatusConfig()
    limits: LimitsConfig = LimitsConfig()
    shutdown_grace_s: float = field(default=10.0, metadata=_range(0, 3600))
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """Read `path`, apply ``ECHOSTAT_*`` variables from `env`, then ``key=value`` `overrides`.

    Raises `ConfigError` for a missing or unreadable file, YAML errors, unknown keys, wrong
    types and values out of range.
    """
    source = str(path)
    raw = _read_yaml(Path(path))
    for name, value in sorted((env or {}).items()):
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            raw = _override(raw, key, value, f"environment variable {name}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. status.port=8080")
        raw = _override(raw, key.strip(), value, f"--set {key.strip()}")
    config = _build(Config, raw, source, "")
    _check_consistency(config, source)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _override(raw: dict[str, Any], dotted: str, text: str, origin: str) -> dict[str, Any]:
    """Return a copy of `raw` with the key at `dotted` (``listeners.0.port``) set to `text`.

    The value is parsed as a YAML scalar, so ``8080`` is a number and ``null`` is None; list
    items are addressed by index, and the index one past the end appends a new item.
    """
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid value {text!r}: {_yaml_problem(exc)}") from None
    parts = dotted.split(".")
    root: dict[str, Any] = dict(raw)
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict):
            if last:
                node[part] = value
            else:
                child = node.get(part)
                child = list(child) if isinstance(child, list) else dict(child or {})
                node[part] = child
                node = child
        elif isinstance(node, list) and part.isdigit() and int(part) <= len(node):
            index = int(part)
            if index == len(node):
                node.append({})
            if last:
                node[index] = value
            else:
                node[index] = dict(node[index]) if isinstance(node[index], dict) else {}
                node = node[index]
        else:
            path = ".".join(parts[:depth])
            raise ConfigError(f"{origin}: cannot set {dotted!r}: {path!r} has no item {part!r}")
    return root


def _build(cls: type[Any], raw: Any, source: str, path: str) -> Any:
    """Validate the mapping `raw` against dataclass `cls`, recursively."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {path or 'top level'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in raw if key not in fields)
    if unknown:
        allowed = ", ".join(fields)
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{source}: {where}: unknown key (allowed here: {allowed})")
    values = {}
    for name, value in raw.items():
        key_path = f"{path}.{name}" if path else name
        values[name] = _convert(hints[name], fields[name], value, source, key_path)
    return cls(**values)


def _convert(hint: Any, fld: dataclasses.Field[Any], value: Any, source: str, path: str) -> Any:
    """Check one value against its type hint and range; return it in its final type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _convert(inner, fld, value, source, path)
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{source}: {path}: expected a non-empty list, got {_show(value)}")
        return tuple(_build(args[0], item, source, f"{path}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path)
    if origin is Literal:
        if value not in args:
            choices = " | ".join(str(a) for a in args)
            raise ConfigError(f"{source}: {path}: expected one of {choices}, got {_show(value)}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {path}: expected a non-empty string, got {_show(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {path}: expected true or false, got {_show(value)}")
        return value
    return _convert_number(hint, fld, value, source, path)


def _convert_number(
    hint: Any, fld: dataclasses.Field[Any], value: Any, source: str, path: str
) -> int | float:
    kind = "an integer" if hint is int else "a number"
    low, high = fld.metadata.get("range", (-math.inf, math.inf))
    span = f" {_fmt(low)}..{_fmt(high)}" if "range" in fld.metadata else ""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (hint is int and not isinstance(value, int)) or math.isnan(value):
        raise ConfigError(f"{source}: {path}: expected {kind}{span}, got {_show(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{source}: {path}: expected {kind}{span}, got {_fmt(value)}")
    return hint(value)  # type: ignore[no-any-return]


def _check_consistency(config: Config, source: str) -> None:
    """Rules that span several keys."""
    names = [listener.name for listener in config.listeners]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"{source}: listeners[{index}].name: duplicate listener name {name!r}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _show(value: Any) -> str:
    """A value as the user wrote it, in YAML terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)
