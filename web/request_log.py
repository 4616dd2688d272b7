"""The status side's request log: a line per request at debug, refusals rate-limited.

Tornado logs every request it answers with 4xx or 5xx as a warning or an error, so anyone who
reaches the status port (a scanner, a prober with the wrong Host name or token) could write
the log a line per request. Below debug, those lines are warnings at most every 10 s, with a
count of the ones left out.
"""

from __future__ import annotations

import logging

from tornado.log import access_log
from tornado.web import RequestHandler

from echostat.server.accept import RateLimitedLog

REFUSALS_EVERY_S = 10.0

_LINE = "%d %s %s (%s) %.2fms"
"""Tornado's own request line: status, method, URI, client address, time taken."""


class RequestLog:
    """The status application's ``log_function``: every request at its usual level while
    `tornado.access` shows INFO (``log_level: debug``), else the unsuccessful ones only, as
    warnings at most every `REFUSALS_EVERY_S`."""

    def __init__(self) -> None:
        self._refusals = RateLimitedLog(access_log, interval_s=REFUSALS_EVERY_S)

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
