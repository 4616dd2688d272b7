"""README's configuration table lists every config key with its default, and its reload
section what a SIGHUP does to each."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import yaml

from echostat.server.config import Config
from tests.helpers import REPO

# Rows whose default is a sentence rather than one value.
DESCRIBED_DEFAULTS = {"listeners", "limits.max_connections"}


def _dataclass_in(hint: Any) -> type | None:
    """The config dataclass a field holds, alone, optional or as a tuple of them."""
    if dataclasses.is_dataclass(hint):
        return typing.cast(type, hint)
    for argument in typing.get_args(hint):
        if argument is not types.NoneType and argument is not Ellipsis:
            found = _dataclass_in(argument)
            if found is not None:
                return found
    return None


def _schema_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every key path of the schema (`listeners[].tls.cert`), sections and leaves alike."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        path = prefix + field.name
        yield path, field
        nested = _dataclass_in(hints[field.name])
        if nested is not None:
            many = typing.get_origin(hints[field.name]) is tuple
            yield from _schema_keys(nested, path + ("[]." if many else "."))


def _table_rows() -> dict[str, str]:
    """Key and default column of each row of the table after README's "All keys:"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Configuration\n") :]
    table = table[table.index("\n|") : table.index("\n\n", table.index("\n|"))]
    return dict(re.findall(r"^\| `([^`]+)` \| (.*?) \|", table, re.MULTILINE))


def test_readme_config_table_lists_every_key_with_its_default() -> None:
    """Each key with a default is a row showing that default; each row is a key; a key
    without a default (a required one) is a row or lies under one."""
    schema = dict(_schema_keys(Config))
    rows = _table_rows()
    assert set(rows) - set(schema) == set()
    for path, field in schema.items():
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if required:
            assert path in rows or path.rpartition(".")[0] in rows, path
            continue
        if dataclasses.is_dataclass(field.default):
            continue  # a section: its keys are the rows
        assert path in rows, path
        if path in DESCRIBED_DEFAULTS:
            continue
        expected = list(field.default) if isinstance(field.default, tuple) else field.default
        shown = rows[path].strip("`")
        if not isinstance(expected, str):
            shown = yaml.safe_load(shown)
        assert (path, shown) == (path, expected)


def test_readme_reload_section_says_what_a_reload_does_to_every_section() -> None:
    """Each top-level key of the schema is named under "Reload without a restart": applied
    in place, or refused as needing a restart."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n### Reload without a restart") :]
    section = section[: section.index("\n## ")]
    named = {re.split(r"[.\[]", token)[0] for token in re.findall(r"`([a-z_]+[^`]*)`", section)}
    keys = {field.name for field in dataclasses.fields(Config) if field.init}
    assert sorted(keys - named) == []
