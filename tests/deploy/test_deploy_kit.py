"""The deploy kit in deploy/ parses, passes the validators present, and matches the code."""

from __future__ import annotations

import configparser
import dataclasses
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from echostat.server.config import Config, ConfigError, ListenerConfig
from echostat.server.config_loading import load_config
from tests.helpers import REPO, require_program

ROOT = REPO
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
KUBERNETES = DEPLOY / "kubernetes"
HAPROXY = DEPLOY / "haproxy"
PROMETHEUS = DEPLOY / "prometheus"
INSTALLED_PROGRAM = "/opt/echostat/bin/echostat"
TOKEN_ENV = "ECHOSTAT_STATUS__TOKEN"
TOKEN = secrets.token_urlsafe(32)
REPO_CONFIG = load_config(ROOT / "config.yaml", env={})
# Listener keys the PROXY protocol work adds to the schema; deploy/haproxy/config.yaml uses them.
PROXY_KEYS = ("proxy_protocol", "proxy_trusted")
SCHEMA_HAS_PROXY_KEYS = set(PROXY_KEYS) <= {f.name for f in dataclasses.fields(ListenerConfig)}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _unit(name: str) -> configparser.ConfigParser:
    """A systemd unit as sections of case-kept keys; a repeated key keeps its last value."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name, encoding="utf-8")
    return parser


def _manifest(kind: str) -> Any:
    (document,) = (
        doc for path in KUBERNETES.glob("*.yaml") for doc in [_yaml(path)] if doc["kind"] == kind
    )
    return document


def _container() -> Any:
    (container,) = _manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _container_ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in _container()["ports"]}


def _configmap_config(tmp_path: Path, token: str = TOKEN) -> Config:
    """The ConfigMap's config.yaml as the pods load it, with `token` as the Secret's value."""
    path = tmp_path / "config.yaml"
    path.write_text(_manifest("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    return load_config(path, env={TOKEN_ENV: token})


def _haproxy_lines(section: str) -> list[list[str]]:
    """The words of each line in the haproxy.cfg section whose header is `section`."""
    lines: dict[str, list[list[str]]] = {}
    current = ""
    for raw in (HAPROXY / "haproxy.cfg").read_text(encoding="utf-8").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if not raw[0].isspace():
            current = " ".join(words)
        lines.setdefault(current, []).append(words)
    return lines[section][1:]


def _haproxy_option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _haproxy_backend_raw() -> Any:
    return _yaml(HAPROXY / "config.yaml")


def test_every_yaml_file_in_the_kit_parses() -> None:
    """Every YAML file under deploy/ is valid YAML with at least one document."""
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(paths) >= 8
    for path in paths:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents and all(doc is not None for doc in documents), path


def test_systemd_sockets_match_config_yaml_listeners_and_status() -> None:
    """Each listener of config.yaml and the status port has a socket unit on its address,
    named by FileDescriptorName, and the service takes every one of them."""
    expected = {listener.name: (listener.host, listener.port) for listener in REPO_CONFIG.listeners}
    expected["status"] = (REPO_CONFIG.status.host, REPO_CONFIG.status.port)
    found = {}
    for path in SYSTEMD.glob("*.socket"):
        socket = _unit(path.name)["Socket"]
        host, _, port = socket["ListenStream"].rpartition(":")
        found[socket["FileDescriptorName"]] = (host, int(port))
        assert socket["Service"] == "echostat.service"
    assert found == expected
    service = _unit("echostat.service")
    sockets = {path.name for path in SYSTEMD.glob("*.socket")}
    assert set(service["Service"]["Sockets"].split()) == sockets
    assert set(service["Unit"]["Requires"].split()) == sockets
    assert set(service["Unit"]["After"].split()) == {"network.target", *sockets}
    # `systemctl enable echostat` enables the sockets Also= names, and only those.
    assert set(service["Install"]["Also"].split()) == sockets


def test_systemd_service_checks_config_then_runs_it() -> None:
    """ExecStartPre validates the very file ExecStart serves, so a bad config never starts."""
    service = _unit("echostat.service")["Service"]
    check, run = service["ExecStartPre"].split(), service["ExecStart"].split()
    assert check == [INSTALLED_PROGRAM, "--check-config", "--config", "/etc/echostat/config.yaml"]
    assert run == [INSTALLED_PROGRAM, "--config", "/etc/echostat/config.yaml"]
    assert service["RestartPreventExitStatus"] == "2"


def test_systemd_reload_sends_sighup_to_the_main_process() -> None:
    """`systemctl reload` is SIGHUP to the supervisor (or single process), never to workers."""
    service = _unit("echostat.service")["Service"]
    assert service["ExecReload"].split() == ["/bin/kill", "-HUP", "$MAINPID"]


def test_systemd_stop_timeout_exceeds_shutdown_delay_plus_grace() -> None:
    """TimeoutStopSec leaves the drain time of both shipped configs plus a margin."""
    service = _unit("echostat.service")["Service"]
    timeout_s = float(service["TimeoutStopSec"])
    backend = _haproxy_backend_raw()
    for delay_s, grace_s in (
        (REPO_CONFIG.shutdown_delay_s, REPO_CONFIG.shutdown_grace_s),
        (backend["shutdown_delay_s"], backend["shutdown_grace_s"]),
    ):
        assert timeout_s >= delay_s + grace_s + 5
    assert service["KillSignal"] == "SIGTERM"


def test_systemd_service_is_hardened() -> None:
    """The service runs unprivileged, with a read-only system and the descriptor limit."""
    service = _unit("echostat.service")["Service"]
    assert service["DynamicUser"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert int(service["LimitNOFILE"]) == 65536 > REPO_CONFIG.limits.max_connections
    assert service["Restart"] == "on-failure"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` has nothing to report (units run this checkout's echostat)."""
    program = Path(sys.executable).parent / "echostat"
    assert program.is_file()
    units = []
    for path in SYSTEMD.iterdir():
        text = path.read_text(encoding="utf-8").replace(INSTALLED_PROGRAM, str(program))
        (tmp_path / path.name).write_text(text, encoding="utf-8")
        units.append(str(tmp_path / path.name))
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and values are only warnings: any output is a mistake in the units.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_configmap_config_loads_with_the_token_from_env(tmp_path: Path) -> None:
    """The ConfigMap's config.yaml is valid once the Secret supplies the status token."""
    config = _configmap_config(tmp_path)
    assert config.status.host == "0.0.0.0"
    assert {listener.host for listener in config.listeners} == {"0.0.0.0"}
    assert {"/healthz", "/readyz", "/metrics"} <= set(config.status.open_paths)


def test_configmap_ports_are_config_yaml_ports(tmp_path: Path) -> None:
    """The pods serve the same ports as the repository's default config.yaml."""
    config = _configmap_config(tmp_path)
    assert [(lst.name, lst.port) for lst in config.listeners] == [
        (lst.name, lst.port) for lst in REPO_CONFIG.listeners
    ]
    assert config.status.port == REPO_CONFIG.status.port


def test_example_secret_token_is_refused(tmp_path: Path) -> None:
    """The placeholder in secret.example.yaml is too short, so an unedited deploy fails fast."""
    token = _manifest("Secret")["stringData"]["status-token"]
    with pytest.raises(ConfigError, match=r"status\.token: too short"):
        _configmap_config(tmp_path, token)


def test_deployment_takes_the_token_from_the_secret() -> None:
    """ECHOSTAT_STATUS__TOKEN comes from the Secret's name and key."""
    secret = _manifest("Secret")
    (variable,) = (env for env in _container()["env"] if env["name"] == TOKEN_ENV)
    reference = variable["valueFrom"]["secretKeyRef"]
    assert reference["name"] == secret["metadata"]["name"]
    assert reference["key"] in secret["stringData"]


def test_deployment_reads_the_configmap_where_it_is_mounted() -> None:
    """The --config path is config.yaml in the directory where the ConfigMap is mounted."""
    container = _container()
    (mount,) = container["volumeMounts"]
    (volume,) = _manifest("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == _manifest("ConfigMap")["metadata"]["name"]
    command = container["command"]
    assert command[command.index("--config") + 1] == f"{mount['mountPath']}/config.yaml"


def test_container_ports_match_the_configmap(tmp_path: Path) -> None:
    """The container's echo, report and status ports are the ports the config binds."""
    config = _configmap_config(tmp_path)
    echo, report = config.listeners
    assert report.report and not echo.report
    assert _container_ports() == {
        "echo": echo.port,
        "report": report.port,
        "status": config.status.port,
    }


def test_service_targets_the_container_ports() -> None:
    """The Service selects the pods and forwards each of its ports to a named container port."""
    service = _manifest("Service")
    pod_labels = _manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = _container_ports()
    forwarded = {port["port"]: ports[port["targetPort"]] for port in service["spec"]["ports"]}
    assert forwarded == {port: port for port in ports.values()}


def test_probes_ask_readyz_and_healthz_on_the_status_port() -> None:
    """Readiness follows /readyz, liveness /healthz, both on the status port."""
    container = _container()
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert (readiness["path"], readiness["port"]) == ("/readyz", "status")
    assert (liveness["path"], liveness["port"]) == ("/healthz", "status")


def test_termination_grace_exceeds_shutdown_delay_plus_grace(tmp_path: Path) -> None:
    """The kubelet waits longer than the pod's own drain before it sends SIGKILL."""
    config = _configmap_config(tmp_path)
    pod = _manifest("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= (
        config.shutdown_delay_s + config.shutdown_grace_s + 5
    )
    assert config.shutdown_delay_s > 0
    assert "lifecycle" not in _container()


def test_deployment_runs_non_root_on_a_read_only_root() -> None:
    """Two replicas, non-root, no privilege escalation, read-only root filesystem."""
    deployment = _manifest("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    container = _container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"]


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    """`kubectl apply -k` applies all manifests and never the placeholder Secret."""
    resources = _yaml(KUBERNETES / "kustomization.yaml")["resources"]
    manifests = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert set(resources) == manifests - {"kustomization.yaml", "secret.example.yaml"}


def test_haproxy_sends_proxy_v2_and_checks_readyz_on_the_status_port() -> None:
    """The backend sends PROXY v2 to the echo port and health-checks /readyz on the status port."""
    backend_config = _haproxy_backend_raw()
    (listener,) = backend_config["listeners"]
    backend = _haproxy_lines("backend echostat")
    assert ["option", "httpchk", "GET", "/readyz"] in backend
    (defaults,) = (words for words in backend if words[0] == "default-server")
    assert "send-proxy-v2" in defaults
    assert int(_haproxy_option(defaults, "port")) == backend_config["status"]["port"]
    servers = [words for words in backend if words[0] == "server"]
    assert len(servers) == 2
    assert {words[2].rpartition(":")[2] for words in servers} == {str(listener["port"])}
    assert listener["port"] == REPO_CONFIG.listeners[0].port
    assert backend_config["status"]["port"] == REPO_CONFIG.status.port


def test_haproxy_backend_delay_exceeds_check_inter_times_fall() -> None:
    """echostat keeps accepting until HAProxy has surely seen /readyz fail."""
    (defaults,) = (w for w in _haproxy_lines("backend echostat") if w[0] == "default-server")
    inter_s = float(_haproxy_option(defaults, "inter").removesuffix("s"))
    fall = int(_haproxy_option(defaults, "fall"))
    assert _haproxy_backend_raw()["shutdown_delay_s"] > inter_s * fall


def test_haproxy_backend_config_turns_on_proxy_protocol() -> None:
    """The config for hosts behind HAProxy expects the header, from trusted networks only."""
    (listener,) = _haproxy_backend_raw()["listeners"]
    assert listener["proxy_protocol"] is True
    assert listener["proxy_trusted"]
    assert set(PROXY_KEYS) <= listener.keys()


@pytest.mark.skipif(not SCHEMA_HAS_PROXY_KEYS, reason="config schema has no PROXY protocol keys")
def test_haproxy_backend_config_loads(tmp_path: Path) -> None:
    """deploy/haproxy/config.yaml is a valid echostat config once the token is given."""
    config = load_config(HAPROXY / "config.yaml", env={TOKEN_ENV: TOKEN})
    assert "/metrics" in config.status.open_paths


def test_haproxy_config_is_valid() -> None:
    """`haproxy -c` accepts haproxy.cfg without warnings (required under CI)."""
    haproxy = require_program("haproxy", "haproxy")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output


def test_prometheus_scrapes_metrics_on_the_status_port_of_the_fleet() -> None:
    """Static targets are the HAProxy servers' hosts on the status port, path /metrics."""
    (job,) = _yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (static,) = job["static_configs"]
    targets = {tuple(target.rsplit(":", 1)) for target in static["targets"]}
    servers = [w for w in _haproxy_lines("backend echostat") if w[0] == "server"]
    hosts = {words[2].rpartition(":")[0] for words in servers}
    status_port = str(_haproxy_backend_raw()["status"]["port"])
    assert targets == {(host, status_port) for host in hosts}
    assert "/metrics" in _haproxy_backend_raw()["status"]["open_paths"]


def test_prometheus_kubernetes_keeps_the_pods_status_port() -> None:
    """Pod discovery keeps the pods of the Deployment and of the mesh's DaemonSet, and only
    their container port named status."""
    (job,) = _yaml(PROMETHEUS / "prometheus-kubernetes.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    keep = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    name_label = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    assert set(keep) == {name_label, "__meta_kubernetes_pod_container_port_name"}
    mesh = _yaml(KUBERNETES / "mesh" / "daemonset.yaml")
    for workload in (_manifest("Deployment"), mesh):
        name = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        # Prometheus anchors a relabel regex at both ends.
        assert re.fullmatch(keep[name_label], name), name
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert "status" in {port["name"] for port in container["ports"]}
    assert not re.fullmatch(keep[name_label], "echostat-other")
    assert keep["__meta_kubernetes_pod_container_port_name"] == "status"


def test_systemd_service_has_a_logs_directory_for_the_access_log() -> None:
    """The hardened unit can write only to its LogsDirectory, and the access log path that
    config.yaml and deploy/README.md suggest for it lies there."""
    directory = _unit("echostat.service")["Service"]["LogsDirectory"]
    path = f"/var/log/{directory}/access.log"
    assert directory == "echostat"
    assert f"path: {path}" in (ROOT / "config.yaml").read_text()
    assert path in (DEPLOY / "README.md").read_text()


def test_deploy_readme_table_has_a_row_per_folder() -> None:
    """The table at the top of deploy/README.md names every folder of deploy/."""
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ((?:`[a-z]+/`(?:, )?)+) \|", text, re.MULTILINE)
    named = {folder for row in rows for folder in re.findall(r"`([a-z]+)/`", row)}
    assert named == {path.name for path in DEPLOY.iterdir() if path.is_dir()}
