"""Runtime failures are `ResourceError`, never `ConfigError`: the configuration was valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from echostat.server.access_log import AccessLog
from echostat.server.config import AccessLogConfig, ConfigError
from echostat.server.resources import ResourceError


def test_an_access_log_that_cannot_be_opened_is_a_resource_error(tmp_path: Path) -> None:
    """The one-line message names the key and the path; it is not a `ConfigError`."""
    missing = tmp_path / "no-such-dir" / "access.log"
    with pytest.raises(ResourceError) as error:
        AccessLog(AccessLogConfig(enabled=True, path=str(missing)))
    assert not isinstance(error.value, ConfigError)
    assert str(error.value).startswith(f"access_log.path: cannot open {missing}: ")
