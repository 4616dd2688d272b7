"""The Grafana dashboard of deploy/grafana/: variables, panels, provisioning and its docs."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.helpers import REPO

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD_FILE = "echostat-fleet.json"
SELECTOR = '{job=~"$job", instance=~"$instance"}'
METRIC = re.compile(r"\b((?:echostat|process)_[a-z_]+|up)\b(\{[^}]*\})?")


def dashboard() -> Any:
    return json.loads((GRAFANA / DASHBOARD_FILE).read_text(encoding="utf-8"))


def panels() -> list[Any]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_dashboard_has_datasource_job_and_instance_variables() -> None:
    """Job and instance are multi-select query variables over echostat_info, "All" included."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] and variable["includeAll"]
        assert variable["query"]["query"].startswith("label_values(echostat_info")
        assert variable["query"]["query"].endswith(f", {name})")


def test_every_query_selects_by_job_and_instance() -> None:
    """Each metric in each panel query is narrowed by the two variables, on the variable
    data source."""
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            selectors = METRIC.findall(target["expr"])
            assert selectors, target["expr"]
            assert all(found == SELECTOR for _, found in selectors), target["expr"]


def test_panels_cover_the_fleet_view() -> None:
    """Fleet totals, rejections by reason, bytes, per-instance breakdown, path quality, the
    status side, descriptors and UDP."""
    exprs = " ".join(t["expr"] for panel in panels() for t in panel["targets"])
    for needed in (
        "sum(echostat_connections_active",
        "sum(rate(echostat_connections_accepted_total",
        "sum by (reason) (rate(echostat_connections_rejected_total",
        "sum(rate(echostat_bytes_received_total",
        "sum(rate(echostat_bytes_sent_total",
        "sum by (instance) (",
        "histogram_quantile(0.99, sum by (le) (rate(echostat_tcp_rtt_seconds_bucket",
        "rate(echostat_tcp_retransmitted_segments_total",
        "rate(echostat_udp_datagrams_dropped_total",
        "rate(echostat_status_connections_rejected_total",
        "process_open_fds{" + SELECTOR[1:-1] + "} / process_max_fds",
    ):
        assert needed in exprs, needed


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Grafana lays panels out by gridPos on a 24-column grid; none may cover another."""
    every = dashboard()["panels"]
    assert len({panel["id"] for panel in every}) == len(every)
    cells: set[tuple[int, int]] = set()
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine


def test_provisioning_loads_the_dashboard_from_a_directory() -> None:
    """The provider reads a directory of dashboards; the data source is Prometheus."""
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "echostat.yml").read_text()
    )["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus"
    readme = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
    assert f"{provider['options']['path']}/{DASHBOARD_FILE}" in readme


def test_deploy_readme_lists_each_panel_with_its_query() -> None:
    """deploy/README.md names every panel beside each of its queries, word for word."""
    readme = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
    for panel in panels():
        for target in panel["targets"]:
            assert f"| {panel['title']} | `{target['expr']}` |" in readme, panel["title"]
