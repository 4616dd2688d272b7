"""The status side's request log: a line per request at debug, refusals rate-limited.

Tornado logs every request it answers with 4xx or 5xx as a warning or an error, so anyone who
reaches the status port (a scanner, a prober with the wrong Host name or token) could write
the log a line per request. Below debug, those lines are warnings at most every 10 s, with a
count of the ones left out. Tornado's own line for each connection whose request it could
not read (malformed, too large) is rate-limited the same way.
"""

from __future__ import annotations

import logging

from tornado.log import access_log, gen_log
from tornado.web import RequestHandler

from echostat.server.accept import RateLimitedLog

REFUSALS_EVERY_S = 10.0

_LINE = "%d %s %s (%s) %.2fms"
"""Tornado's own request line: status, method, URI, client address, time taken."""


_CLIENT_FAULTS = ("Malformed HTTP message", "Unsatisfiable read", "Timeout reading body")
"""How Tornado's own lines (INFO, one per connection) about a request it could not read begin."""


class _ClientFaults(logging.Filter):
    """Lets through Tornado's lines about unreadable requests at most every
    `REFUSALS_EVERY_S` with a count of the rest, unless the log shows debug lines."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = RateLimitedLog(gen_log, interval_s=REFUSALS_EVERY_S)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_CLIENT_FAULTS) or gen_log.isEnabledFor(logging.DEBUG):
            return True
        return self._lines.admit(record)


_CLIENT_FAULT_LINES = _ClientFaults()
"""One for the process: Tornado's logger is the process's, whatever application it serves."""


class RequestLog:
    """The status application's ``log_function``: every request at its usual level while
    `tornado.access` shows INFO (``log_level: debug``), else the unsuccessful ones only, as
    warnings at most every `REFUSALS_EVERY_S`."""

    def __init__(self) -> None:
        self._refusals = RateLimitedLog(access_log, interval_s=REFUSALS_EVERY_S)
        if _CLIENT_FAULT_LINES not in gen_log.filters:
            gen_log.addFilter(_CLIENT_FAULT_LINES)

    def __call__(self, handler: RequestHandler) -> None:
        status = handler.get_status()
        request = handler.request
        took_ms = 1000.0 * request.request_time()
        line = (status, request.method, request.uri, request.remote_ip, took_ms)
        if access_log.isEnabledFor(logging.INFO):
            level = (
                logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
            )
            access_log.log(level, _LINE, *line)
        elif status >= 400:
            self._refusals.warning(_LINE, *line)
