"""The Prometheus files of deploy/prometheus/ pass promtool: config, rules and rule tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers import DEADLINE_S, REPO, require_program

PROMETHEUS = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
REQUIRED_ALERTS = {
    "EchostatDown",
    "EchostatNotReady",
    "EchostatRejectingConnections",
    "EchostatDescriptorsNearLimit",
    "EchostatWorkerRestarting",
    "EchostatStatusRefusingConnections",
    "EchostatReloadRefused",
    "EchostatWatchTargetDown",
    "EchostatWatchLossHigh",
    "EchostatWatchLatencyHigh",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``promtool ARGS`` in deploy/prometheus/ and fail the test with its output if it
    does not exit 0."""
    program = require_program("promtool", "prometheus")
    done = subprocess.run(
        [program, *map(str, args)],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_scrape_config_and_its_rule_files_pass_promtool_check_config() -> None:
    """prometheus.yml is valid and loads alerts.yml (the Kubernetes variant needs
    kubernetes_sd_configs, which Debian's Prometheus is built without)."""
    done = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in done.stdout


def test_alert_rules_pass_promtool_check_rules() -> None:
    """alerts.yml has valid expressions and templates, and no duplicate rules."""
    done = promtool("check", "rules", "alerts.yml")
    assert f"{len(alert_rules())} rules found" in done.stdout


def test_alert_rules_unit_tests_pass() -> None:
    """The cases of alerts.test.yml (each alert fires when it should and stays quiet
    otherwise) pass under promtool test rules."""
    done = promtool("test", "rules", "alerts.test.yml")
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_summary_a_runbook_and_a_unit_test() -> None:
    """Each alert carries a summary and a runbook line and is evaluated by alerts.test.yml."""
    rules = alert_rules()
    names = {str(rule["alert"]) for rule in rules}
    assert REQUIRED_ALERTS <= names
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.keys() >= {"summary", "runbook"}, rule["alert"]
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    assert tested == names
