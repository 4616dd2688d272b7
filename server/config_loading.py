"""Loading the configuration for running: read the file, validate it, prepare what it names.

`load_config` is the one entry point: the file's text goes through the pure
`server.config_validation`; then what depends on this machine is settled at start-up, not when
the first client arrives: `limits.max_connections` is fitted to the descriptor limit and every
TLS listener's certificate and key are loaded into an `SSLContext`. `check_config` goes on to
what a start checks short of binding, for ``--check-config``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from echostat.server.access_log import AccessLog
from echostat.server.config import Config, ConfigError
from echostat.server.config_validation import validate_config
from echostat.server.resources import ResourceError, fit_descriptor_limit
from echostat.server.sockets import resolve

DEFAULT_CONFIG_PATH = "config.yaml"
"""The file `echostat` reads when no ``--config`` is named, if the working directory has one."""

BUILT_IN_DEFAULTS = "built-in defaults"
"""How messages name the config source when there is no file: every key at its default."""


def load_config(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    text: str | None = None,
) -> Config:
    """Read `path`, apply ``ECHOSTAT_*`` variables from `env`, then ``key=value`` `overrides`.

    `path` None means no file: the built-in defaults (relative TLS paths are then taken from
    the working directory). `text`, if given, stands for the file's content (a supervisor
    passes its workers the text it validated). Raises `ConfigError` for a missing or
    unreadable file, YAML errors, unknown keys, wrong types and values out of range, TLS files
    that can't be used and a `limits.max_connections` the descriptor limit can't hold.
    """
    return _load(path, env, overrides, text, preflight=False)


def check_config(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    text: str | None = None,
) -> Config:
    """`load_config`, then every check a start makes short of binding: each listener's and
    the status side's host resolves, and the access log opens for appending. Raises
    `ConfigError`, naming the key and where its value came from, for what a start would
    refuse."""
    return _load(path, env, overrides, text, preflight=True)


def _load(
    path: str | Path | None,
    env: Mapping[str, str] | None,
    overrides: Sequence[str],
    text: str | None,
    preflight: bool,
) -> Config:
    source = BUILT_IN_DEFAULTS if path is None else str(path)
    validated = validate_config(
        read_config_text(path) if text is None else text, source, env, overrides
    )
    try:
        _load_tls(validated.config, Path(path).parent if path is not None else Path(), source)
        if preflight:
            _check_before_binding(validated.config, source)
    except ConfigError as exc:
        raise validated.blame(exc, source) from None
    return fit_descriptor_limit(validated.config, validated.max_connections_origin)


def choose_config_path(named: str | None) -> str | None:
    """The config file to read: the one named with ``--config``, else ``./config.yaml`` if
    there is one; None (the built-in defaults) when neither. A named file that is missing is
    still an error, raised when it is read."""
    if named is not None:
        return named
    return DEFAULT_CONFIG_PATH if Path(DEFAULT_CONFIG_PATH).exists() else None


def describe_source(built_in_defaults: bool) -> str:
    """What the startup line adds about where the config came from: a word only when no file
    was read, since a newcomer's first `echostat` may run with none."""
    return "; no config file: running on the built-in defaults" if built_in_defaults else ""


def _check_before_binding(config: Config, source: str) -> None:
    """What `Service.start` would refuse before its first bind, as a `ConfigError` about
    `source`: a host that doesn't resolve, an access log that can't be opened."""
    try:
        for index, listener in enumerate(config.listeners):
            kind = socket.SOCK_DGRAM if listener.protocol == "udp" else socket.SOCK_STREAM
            resolve(f"listeners[{index}]", listener.host, listener.port, kind)
        resolve("status", config.status.host, config.status.port, socket.SOCK_STREAM)
        if config.access_log.enabled:
            AccessLog(config.access_log).close()
    except (ConfigError, ResourceError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few kilobytes; one beyond this is a mistake (``--config /dev/zero``)."""


def read_config_text(path: str | Path | None) -> str:
    """The content of the config file at `path`, or of none (``""``, every key at its default)
    when `path` is None; `ConfigError` if it can't be read or is larger than
    `MAX_CONFIG_BYTES` (read no further than that, so an endless file returns)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than 1 MiB; not a config file?")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def reread_config_text(path: str | Path | None) -> str:
    """`read_config_text` for a reload, which refuses an empty file: the state a file being
    written again passes through (truncated, not yet written), or a pipe read once at start
    (``--config <(...)``), not a wish for every key at its default."""
    if path is not None and not Path(path).exists():  # no --config to pass to a running process
        raise ConfigError(f"{path}: file not found (moved or deleted since echostat started)")
    text = read_config_text(path)
    if path is not None and not text.strip():
        raise ConfigError(f"{path}: empty (being written?); for the built-in defaults, write {{}}")
    return text


TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""TLS 1.2 suites: forward secrecy (ECDHE) and AEAD ciphers only, as Mozilla's "intermediate"
recommendation (less its DHE suites, which need parameters we don't ship); no CBC, so no
LUCKY13."""


def _load_tls(config: Config, base: Path, source: str) -> None:
    """Build each TLS listener's context now, so bad files fail at start, not at first client.

    Relative paths are taken from the config file's directory.
    """
    for index, listener in enumerate(config.listeners):
        tls = listener.tls
        if tls is None:
            continue
        where = f"{source}: listeners[{index}].tls"
        cert, key = base / tls.cert, base / tls.key
        for name, file in (("cert", cert), ("key", key)):
            if not file.is_file():
                raise ConfigError(f"{where}.{name}: file not found: {file}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are set apart and stay as they are
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise ConfigError(
                f"{where}: cannot use cert {cert} with key {key}: {reason}"
                " (both must be PEM files and the key must belong to the certificate)"
            ) from None
        object.__setattr__(tls, "context", context)
