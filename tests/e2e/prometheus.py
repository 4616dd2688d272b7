"""A real Prometheus (Debian's /usr/bin/prometheus) for the tests: started on a free loopback
port with its own storage, queried through its HTTP API, killed by PID at the end."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from tests.helpers import DEADLINE_S, require_program

_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
_READY = "Server is ready to receive web requests."


class PrometheusServer:
    """``prometheus --config.file CONFIG`` on 127.0.0.1, port 0; `port` is read from its log."""

    def __init__(self, config: Path, workdir: Path) -> None:
        program = require_program("prometheus", "prometheus")
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    program,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    "--web.listen-address=127.0.0.1:0",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.port = 0

    def start(self) -> PrometheusServer:
        """Return once the log names the bound port and says the API answers (two lines, in
        either order); fail with the log if it never does."""
        deadline = time.monotonic() + DEADLINE_S
        while _READY not in (log := self.log_path.read_text()) or not _LISTENING.search(log):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start: {self.log_path.read_text()}")
            time.sleep(0.05)  # how often the log is read, not a timing assumption
        found = _LISTENING.search(log)
        assert found, log
        self.port = int(found[1])
        return self

    async def api(self, path: str, **params: str | float) -> Any:
        """``GET /api/v1/PATH?PARAMS``'s ``data``; fails on any status other than success."""
        query = urllib.parse.urlencode(params)
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}",
            raise_error=False,
            request_timeout=DEADLINE_S,
        )
        body = json.loads(response.body)
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def value(self, expr: str) -> float | None:
        """The value of the single-series instant query `expr`, or None without data."""
        result = (await self.api("query", query=expr))["result"]
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        """Kill the process if it still runs; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE_S)
