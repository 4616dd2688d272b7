"""The status side's own connection counters, shown beside the echo side's figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, get_args

StatusRejectReason = Literal["max_connections"]
StatusCloseReason = Literal["header_timeout", "idle_timeout"]
STATUS_REJECT_REASONS: tuple[StatusRejectReason, ...] = get_args(StatusRejectReason)
STATUS_CLOSE_REASONS: tuple[StatusCloseReason, ...] = get_args(StatusCloseReason)
"""Every reason the status side counts, so that metrics show each at 0 before it happens."""


@dataclass(slots=True)
class StatusCounters:
    """The status side's own connections (page, API, push streams, scrapers): open now,
    accepted, and those it refused or ended, by reason. Counted by the status server; its cap
    is `status.max_connections` in the config in force."""

    active: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
