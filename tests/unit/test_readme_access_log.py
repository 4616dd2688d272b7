"""README's access log table names every reason a line can carry."""

from __future__ import annotations

import re
from typing import get_args

from echostat.server.registry import RejectReason, ServerCloseReason
from tests.helpers import REPO

CLIENT_CLOSE_REASONS = {"client_eof", "client_reset", "client_error"}


def test_readme_access_log_reasons_are_the_codes() -> None:
    """The `reason` row lists the client's and the server's close reasons before "for
    `reject`:" and every reject reason after it, no more and no fewer."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Access log\n") :]
    (row,) = re.findall(r"^\| `reason` \| (.*) \|$", section, re.MULTILINE)
    closing, _, rejecting = row.partition("for `reject`:")
    assert set(re.findall(r"`([a-z_]+)`", closing)) == CLIENT_CLOSE_REASONS | set(
        get_args(ServerCloseReason)
    )
    assert set(re.findall(r"`([a-z_]+)`", rejecting)) == set(get_args(RejectReason))
