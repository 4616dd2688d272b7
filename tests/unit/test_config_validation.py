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


HUGE = "1" + "0" * 400
"""An integer no float can hold: comparing it as a float raises OverflowError."""

NUMERIC_KEYS = [
    "workers",
    "shutdown_delay_s",
    "shutdown_grace_s",
    "tcp_info_interval_s",
    "status.port",
    "status.max_connections",
    "status.header_timeout_s",
    "status.idle_timeout_s",
    "limits.max_connections",
    "limits.max_connections_per_ip",
    "limits.idle_timeout_s",
    "limits.max_lifetime_s",
    "limits.max_buffer_bytes",
    "limits.max_buffered_bytes",
    "udp.max_datagrams_per_s_per_ip",
    "udp.max_datagrams_per_s",
    "udp.max_bytes_per_s",
    "udp.max_peers",
    "udp.peer_idle_s",
    "listeners.0.port",
    "listeners.0.backlog",
    "listeners.0.proxy_header_timeout_s",
    "listeners.0.tls.handshake_timeout_s",
]
LISTENER_TEXT = "listeners:\n  - name: main\n    tls: {cert: c.pem, key: k.pem}\n"


def _key_path(dotted: str) -> str:
    return dotted.replace(".0.", "[0].")


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_an_integer_of_hundreds_of_digits_is_refused_by_its_key_and_origin(key: str) -> None:
    """From the file, a variable or --set: one short line naming the key and the origin."""
    env_name = "ECHOSTAT_" + key.upper().replace(".", "__")
    for env, overrides, origin in (
        ({env_name: HUGE}, [], f"environment variable {env_name}"),
        ({}, [f"{key}={HUGE}"], f"--set {key}"),
    ):
        with pytest.raises(ConfigError) as error:
            validate_config(LISTENER_TEXT, "config.yaml", env, overrides)
        message = str(error.value)
        assert message.startswith(f"{origin}: {_key_path(key)}: expected "), message
        assert message.endswith("got 10000000000000000000... (401 digits)"), message


def test_an_integer_of_hundreds_of_digits_in_the_file_names_the_file() -> None:
    text = f"listeners:\n  - tls: {{cert: c, key: k, handshake_timeout_s: {HUGE}}}\n"
    with pytest.raises(ConfigError, match=r"^config\.yaml: listeners\[0\]\.tls\.handshake_t"):
        validate_config(text, "config.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["listeners.0.tls.handshake_timeout_s=x"],
            "--set listeners.0.tls.handshake_timeout_s: listeners[0].tls.handshake_timeout_s:"
            " expected a number 0.1..300, got 'x'",
        ),
        (
            ["listeners.0={port: 99999}"],
            "--set listeners.0: listeners[0].port: expected an integer 0..65535, got 99999",
        ),
        (
            ["status.token=short"],
            "--set status.token: status.token: too short (5 characters, need at least 16)",
        ),
    ],
    ids=["inside-an-optional-section", "inside-a-set-section", "checked-across-keys"],
)
def test_errors_inside_sections_name_the_key_and_the_flag(
    overrides: list[str], message: str
) -> None:
    """Not the section ("listeners[0].tls: ... got a mapping"), and not the file."""
    with pytest.raises(ConfigError) as error:
        validate_config("listeners: [{name: main}]\n", "config.yaml", {}, overrides)
    assert str(error.value).startswith(message), str(error.value)


FILE_LEAVING_OUT = "listeners: [{name: main, tls: null}]\nwatch: {targets: []}\n"


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            {},
            ["limit.idle_timeout_s=5"],
            "--set limit.idle_timeout_s: limit: unknown key (allowed here: listeners,",
        ),
        (
            {"ECHOSTAT_LIMIT__IDLE_TIMEOUT_S": "5"},
            [],
            "environment variable ECHOSTAT_LIMIT__IDLE_TIMEOUT_S: limit: unknown key",
        ),
        (
            {},
            ["status.port.tcp=8080"],
            "--set status.port.tcp: status.port: expected an integer 0..65535, got a mapping",
        ),
        (
            {},
            ["listeners.0.tls.cert=c.pem"],
            "--set listeners.0.tls.cert: listeners[0].tls.key: missing (this key is required)",
        ),
        (
            {"ECHOSTAT_WATCH__TARGETS__0__TARGET": "127.0.0.1:7"},
            [],
            "environment variable ECHOSTAT_WATCH__TARGETS__0__TARGET: watch.targets[0].name:"
            " missing (this key is required)",
        ),
        (
            {},
            ["watch.targets.0.target=127.0.0.1:7"],
            "--set watch.targets.0.target: watch.targets[0].name: missing (this key is required)",
        ),
    ],
    ids=[
        "misspelt-section",
        "misspelt-section-by-env",
        "under-a-number",
        "new-tls",
        "new-target",
        "new-item-of-a-list",
    ],
)
def test_a_section_a_variable_or_flag_made_is_blamed_on_it_not_the_file(
    env: dict[str, str], overrides: list[str], message: str
) -> None:
    """What a file leaves out and an override put there (a misspelt section, a mapping under a
    number, a section missing a required key) is named as the variable's or the flag's."""
    with pytest.raises(ConfigError) as error:
        validate_config(FILE_LEAVING_OUT, "config.yaml", env, overrides)
    assert str(error.value).startswith(message), str(error.value)


def test_a_one_character_token_is_refused_in_the_singular() -> None:
    """The message counts the token's length in words, as every other line counts."""
    with pytest.raises(ConfigError, match=r"status\.token: too short \(1 character, need"):
        validate_config("status: {token: x}\n", "config.yaml")


def test_watch_targets_that_are_no_list_are_refused_as_a_list_which_may_be_empty() -> None:
    """``watch.targets: []`` is valid, so the message asks for a list, not a non-empty one."""
    with pytest.raises(ConfigError) as error:
        validate_config("watch: {targets: 127.0.0.1:7}\n", "config.yaml")
    assert str(error.value) == "config.yaml: watch.targets: expected a list, got '127.0.0.1:7'"


@pytest.mark.parametrize(
    "name", ["example.com:8080", "[::1]", "https://example.com", "*.example.com"]
)
def test_an_allowed_host_that_no_host_header_can_match_is_refused(name: str) -> None:
    """A Host header's name is compared without its port or brackets, and no pattern: an entry
    with one would never match, and is refused naming it instead of silently doing nothing."""
    with pytest.raises(ConfigError) as error:
        validate_config("", "config.yaml", {}, [f"status.allowed_hosts=[{name!r}]"])
    assert str(error.value) == (
        "--set status.allowed_hosts: status.allowed_hosts[0]: expected a name or address"
        f" alone, which every port matches (example.com, ::1), got {name!r}"
    )
    allowed = ["example.com", "::1", "10.0.0.5"]
    assert validate_config("", "c.yaml", {}, [f"status.allowed_hosts={allowed}"]).config


@pytest.mark.parametrize(
    "written", ["1234567890123456789012", "0x1234567890abcdef12", "12345.67890123456"]
)
def test_a_token_yaml_reads_as_a_number_is_refused_without_printing_it(written: str) -> None:
    """In the file a token of digits is a number to YAML: the message says to quote it and
    shows none of it, as a log line or a reload refusal would keep it."""
    with pytest.raises(ConfigError) as error:
        validate_config(f"status:\n  token: {written}\n", "config.yaml")
    assert str(error.value) == (
        "config.yaml: status.token: expected a non-empty string, got no text (a secret, not"
        " shown); quote it"
    )
    digits = "".join(char for char in written if char.isdigit())
    assert digits[:6] not in str(error.value)
