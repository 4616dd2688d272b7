"""echostat: a TCP echo service with a live status page, built on Tornado."""

__version__ = "0.1.0"
