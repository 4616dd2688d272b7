"""YAML text to Python values, strictly: what PyYAML's safe loader reads, less duplicate keys.

Every fault is a `yaml.YAMLError`, which `yaml_problem` puts on one line, and `show_value`
names a value in YAML's words for an error; nothing here knows the config's keys
(`server.config_validation` does).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml


def parse_yaml(text: str) -> Any:
    """`text` as YAML, safely; everything wrong with it is raised as a `yaml.YAMLError`.

    PyYAML itself raises RecursionError for deep nesting and ValueError for integers of more
    than 4300 digits (Python's limit on int-from-string conversion).
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as exc:
        raise yaml.YAMLError(str(exc)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


_MERGE_TAG = "tag:yaml.org,2002:merge"
"""The tag of ``<<`` (``<<: *anchor``): its keys are defaults the mapping's own keys override."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # SafeLoader merges it below, the mapping's own keys winning
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it below, with its position
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def format_number(number: float) -> str:
    """A number as YAML would write it: ``5`` for 5.0, else as it is."""
    return str(int(number)) if float(number).is_integer() else str(number)


_SHOWN_DIGITS = 20
"""Integers longer than this are shown by their first digits and length, on one short line."""


def show_value(value: Any) -> str:
    """A value as the user wrote it, in YAML terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, int) and len(digits := str(abs(value))) > _SHOWN_DIGITS:
        sign = "-" if value < 0 else ""
        return f"{sign}{digits[:_SHOWN_DIGITS]}... ({len(digits)} digits)"
    return repr(value)
