"""Config validation is pure: text in, a validated config out, no file or limit consulted."""

from __future__ import annotations

import pytest

from echostat.server.config import DEFAULT_MAX_CONNECTIONS, ConfigError
from echostat.server.config_loading import load_config
from echostat.server.config_validation import validate_config

TLS_TEXT = "listeners:\n  - name: tls\n    tls: {cert: missing.pem, key: missing.key}\n"


def test_validation_reads_no_file_named_in_the_config() -> None:
    """Certificate files are checked when the config is loaded for running, not validated."""
    validated = validate_config(TLS_TEXT, "/nowhere/config.yaml")
    tls = validated.config.listeners[0].tls
    assert tls is not None and tls.cert == "missing.pem" and tls.context is None
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.tls\.cert: file not found"):
        load_config("/nowhere/config.yaml", text=TLS_TEXT)


def test_max_connections_left_out_has_no_origin_and_keeps_the_default() -> None:
    validated = validate_config("", "config.yaml")
    assert validated.max_connections_origin is None
    assert validated.config.limits.max_connections == DEFAULT_MAX_CONNECTIONS
    assert validated.config.descriptor_limit is None


def test_max_connections_origin_names_the_file_variable_or_flag() -> None:
    """Where the value came from, for the message when the descriptor limit can't hold it."""
    text = "limits: {max_connections: 5}\n"
    assert validate_config(text, "a.yaml").max_connections_origin == "a.yaml"
    env = {"ECHOSTAT_LIMITS__MAX_CONNECTIONS": "6"}
    by_env = validate_config(text, "a.yaml", env)
    assert by_env.max_connections_origin == "environment variable ECHOSTAT_LIMITS__MAX_CONNECTIONS"
    by_flag = validate_config("", "a.yaml", env, ["limits.max_connections=7"])
    assert by_flag.max_connections_origin == "--set limits.max_connections"
    assert by_flag.config.limits.max_connections == 7
