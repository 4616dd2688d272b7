"""What one `echostat probe` invocation asks for, after the command line is checked."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from echostat.probe.address import host_port

Check = Literal["round_trips", "load", "half_close", "connect_only", "idle_timeout"]
"""``round_trips`` is the ping-like default, ``load`` any load flag, the others their flag."""

Mode = Literal["pingpong", "stream"]
"""A load run's traffic: round trips back to back, or a window of bytes in flight."""

ProxyVersion = Literal["v1", "v2"]

MAX_SEED = (1 << 32) - 1
"""Seeds are 0..MAX_SEED: enough that two runs rarely share one, small enough for any JSON."""


def draw_seed() -> int:
    """A seed of its own for a run."""
    return secrets.randbelow(MAX_SEED + 1)


DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
"""The round-trip percentiles reported without ``--percentiles``."""


@dataclass(frozen=True)
class Options:
    """Every setting of a TCP probe run, as the JSON report's ``options`` shows them."""

    target: str
    host: str
    port: int
    check: Check
    count: int
    interval_s: float
    size: int
    connections: int
    duration_s: float
    mode: Mode
    window: int
    timeout_s: float
    source: str | None
    tls: bool
    ca: str | None
    insecure: bool
    sni: str | None
    proxy_header: ProxyVersion | None
    proxy_source: str | None
    json: bool
    seed: int = field(default_factory=draw_seed)
    """The payload pattern's seed: drawn for each run unless ``--seed`` gives it."""
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    """The round-trip percentiles to report (``--percentiles``)."""
    rate_per_s: float | None = None
    """A pingpong load run's round trips per second, all connections together (``--rate``);
    None: back to back."""


@dataclass(frozen=True)
class UDPOptions:
    """Every setting of a ``udp://`` probe run, as the JSON report's ``options`` shows them."""

    host: str
    port: int
    count: int
    """Datagrams to send; 0 = until interrupted."""
    size: int
    interval_s: float
    timeout_s: float
    """How long a datagram may take to come back before it counts as lost."""
    max_loss_percent: float
    source: str | None
    """Bind the client end to this address (port chosen by the kernel)."""
    seed: int = field(default_factory=draw_seed)
    """The run id the datagrams carry: drawn for each run unless ``--seed`` gives it."""
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    """The round-trip percentiles to report (``--percentiles``)."""

    @property
    def target(self) -> str:
        return f"udp://{host_port(self.host, self.port)}"


# One set of defaults for both front ends' flags (argparse leaves them None, so that a flag
# given where it means nothing can be refused), and the help texts that name them.
DEFAULT_COUNT = 5
DEFAULT_INTERVAL_S = 1.0
DEFAULT_SIZE = 64
DEFAULT_CONNECTIONS = 1
DEFAULT_DURATION_S = 10.0
DEFAULT_MODE: Mode = "pingpong"
DEFAULT_WINDOW = 256 * 1024
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_LOSS_PERCENT = 0.0

MAX_COUNT = 1_000_000
"""Every round-trip time (and, for UDP, every sequence number) is kept, so a run is bounded."""
MAX_DURATION_S = 600
"""A load run keeps every round-trip time for exact percentiles (about 40 bytes each)."""
MIN_ENDLESS_INTERVAL_S = 0.01
"""With --count 0 the round trips go on until Ctrl-C; this bounds how fast their times pile up."""
