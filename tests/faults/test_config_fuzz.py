"""Config loading facing arbitrary input: a valid `Config` or a `ConfigError`, nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from echostat.server.config import (
    Config,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    StatusConfig,
    TLSConfig,
)
from echostat.server.config_loading import load_config

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
"""Deterministic, so a run in CI finds what a run here found; no timing, the machine is noisy."""

KEYS = sorted(
    {
        f.name
        for cls in (Config, ListenerConfig, StatusConfig, LimitsConfig, TLSConfig)
        for f in dataclasses.fields(cls)
    }
)
"""Every key the schema knows, so generated documents get past the unknown-key check."""

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
keys = st.sampled_from(KEYS) | st.text(max_size=8) | st.integers()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
dotted_keys = st.lists(
    st.sampled_from(KEYS) | st.sampled_from(["0", "1", "²"]) | st.text(max_size=4),
    min_size=1,
    max_size=4,
).map(".".join)


def load_or_reject(path: Path, text: str, **options: Any) -> None:
    """Write `text` to `path` and load it; only `ConfigError` may escape."""
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, **options)
    except ConfigError:
        pass


@FUZZ
@given(text=st.text())
@example(text="? [a]\n: 1\n")
@example(text="[" * 1000 + "]" * 1000)
@example(text="a: " + "{b: " * 1000 + "1" + "}" * 1000)
@example(text="limits: {max_connections: " + "9" * 5000 + "}")
@example(text="shutdown_grace_s: 1" + "0" * 400)
def test_arbitrary_yaml_text_raises_only_config_error(tmp_path: Path, text: str) -> None:
    """Any text at all, including YAML that nests deeply or has odd keys, loads or is refused."""
    load_or_reject(tmp_path / "config.yaml", text)


@FUZZ
@given(document=st.dictionaries(keys, documents, max_size=6))
def test_arbitrary_structures_raise_only_config_error(tmp_path: Path, document: Any) -> None:
    """Any nesting of YAML values under schema-like keys loads or is refused."""
    load_or_reject(tmp_path / "config.yaml", yaml.safe_dump(document))


@FUZZ
@given(
    document=st.dictionaries(keys, documents, max_size=4),
    overrides=st.lists(st.tuples(dotted_keys, st.text(max_size=10)), max_size=3),
)
@example(document={"status": "abc"}, overrides=[("status.port", "1")])
@example(document={"listeners": 5}, overrides=[("listeners.0.port", "1")])
@example(document={"listeners": [{}]}, overrides=[("listeners.²", "1")])
def test_arbitrary_overrides_raise_only_config_error(
    tmp_path: Path, document: Any, overrides: list[tuple[str, str]]
) -> None:
    """``--set`` and ``ECHOSTAT_*`` overrides of any key into any document load or are refused."""
    flags = [f"{key}={value}" for key, value in overrides]
    env = {"ECHOSTAT_" + key.upper().replace(".", "__"): value for key, value in overrides}
    path = tmp_path / "config.yaml"
    load_or_reject(path, yaml.safe_dump(document), overrides=flags)
    load_or_reject(path, yaml.safe_dump(document), env=env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listeners: [{port: true}]", "listeners[0].port: expected an integer 0..65535, got true"),
        ("limits:\n  idle_timeout_s: 1\n  idle_timeout_s: 2\n", "duplicate key 'idle_timeout_s'"),
        ("limits: {idle_timeout_s: .nan}", "limits.idle_timeout_s: expected a number"),
        ("limits: {max_conections: 5}", "limits.max_conections: unknown key"),
    ],
    ids=["bool-port", "duplicate-key", "nan", "unknown-key"],
)
def test_yaml_that_parses_but_is_wrong_names_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    """What YAML accepts silently (true as a port, duplicates, NaN, typos) is refused by key."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="^" + str(path)) as error:
        load_config(path)
    assert message in str(error.value)
