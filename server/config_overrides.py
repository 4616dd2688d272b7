"""Single keys set from outside the file: ``ECHOSTAT_*`` environment variables, then ``--set``.

Each sets one key of the file's raw mapping before it is validated, its value parsed as a
YAML scalar; list items are addressed by index. Each records in `origins` where its key's
value came from, so that an error about it names the variable or flag, not the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from echostat.server.config import Config, ConfigError
from echostat.server.config_yaml import parse_yaml, show_value, yaml_problem

ENV_PREFIX = "ECHOSTAT_"
"""Environment variables ``ECHOSTAT_<KEY>`` override single keys; ``__`` separates levels."""


def apply_overrides(
    raw: dict[str, Any], env: Mapping[str, str], overrides: Sequence[str], origins: dict[str, str]
) -> dict[str, Any]:
    """`raw` with the ``ECHOSTAT_*`` variables of `env` applied, then the ``KEY=VALUE``
    `overrides`; `origins` gets, per key path (``listeners[0].port``), where its value came
    from."""
    for name, value in sorted(env.items(), key=_in_index_order):
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            origins[key_path(key)] = f"environment variable {name}"
            raw = _override(raw, key, value, origins)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. status.port=8080")
        origins[key_path(key.strip())] = f"--set {key.strip()}"
        raw = _override(raw, key.strip(), value, origins)
    return raw


def _in_index_order(item: tuple[str, str]) -> list[tuple[int, str]]:
    """Sort key of an environment variable: list indexes as numbers, so that ``__2__`` comes
    before ``__10__`` (as text it would not, and index 10 would not exist yet)."""
    return [(int(part), "") if part.isdecimal() else (-1, part) for part in item[0].split("__")]


def key_path(dotted: str) -> str:
    """``listeners.0.port`` as error messages spell it: ``listeners[0].port``."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", dotted)


_BRACKETED_ADDRESS = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d+)?")
"""``[IPv6]:PORT`` (a watch target) or ``[IPv6]`` (a host, refused later with a hint)."""
SECRET_KEY = "status.token"
"""Taken as written when YAML would read it otherwise: a message naming its value would leak it."""


_LEFT_OUT: dict[str, list[dict[str, Any]]] = {"listeners": [{} for _ in Config().listeners]}
"""Lists that hold items by default, as a file would write them (each item its defaults), so
that ``listeners.1.*`` adds a listener beside the default one when the file names none."""


def _override(
    raw: dict[str, Any], dotted: str, text: str, origins: dict[str, str]
) -> dict[str, Any]:
    """Return a copy of `raw` with the key at `dotted` (``listeners.0.port``) set to `text`.

    The value is parsed as a YAML scalar, so ``8080`` is a number and ``null`` is None; list
    items are addressed by index, and the index one past the end appends a new item. Sections
    it makes take the origin of `dotted` in `origins`, so errors inside them name it."""
    origin = origins[key_path(dotted)]
    secret = key_path(dotted) == SECRET_KEY
    try:
        value = parse_yaml(text)
    except yaml.YAMLError as exc:
        if not secret and _BRACKETED_ADDRESS.fullmatch(text) is None:
            raise ConfigError(f"{origin}: invalid value {text!r}: {yaml_problem(exc)}") from None
        value = text  # a token, or ``[IPv6]:PORT``: YAML reads a list then a colon
    if secret and not isinstance(value, str | None):
        value = text  # a token is text, and an error about it would print it
    if isinstance(value, dict) and not text.lstrip().startswith("{"):
        # A mapping is written in braces here; YAML alone reads ``::`` (every interface) as one.
        value = text
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
                if child is None:
                    # A section the file leaves out: what the defaults hold there (the one
                    # listener), else a list when the next part is an index.
                    child = _LEFT_OUT.get(part, []) if parts[depth + 1].isdecimal() else {}
                    origins[key_path(".".join(parts[: depth + 1]))] = origin
                elif not isinstance(child, list | dict):
                    path, shown = ".".join(parts[: depth + 1]), show_value(child)
                    raise ConfigError(f"{origin}: cannot set {dotted!r}: {path!r} is {shown}")
                child = list(child) if isinstance(child, list) else dict(child)
                node[part] = child
                node = child
        elif isinstance(node, list) and part.isdecimal() and int(part) <= len(node):
            index = int(part)
            if index == len(node):
                node.append({})
                origins[key_path(".".join(parts[: depth + 1]))] = origin
            if last:
                node[index] = value
            else:
                node[index] = dict(node[index]) if isinstance(node[index], dict) else {}
                node = node[index]
        else:
            path = ".".join(parts[:depth])
            raise ConfigError(f"{origin}: cannot set {dotted!r}: {path!r} has no item {part!r}")
    return root
