"""The manifests of deploy/kubernetes/ against the Kubernetes API's own schemas, offline.

kubernetes-validate bundles the OpenAPI schemas of each Kubernetes release, so this needs no
cluster and no network; strict mode also refuses fields the API does not know.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from echostat.server.config_loading import load_config
from echostat.server.config_validation import validate_config
from tests.helpers import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
"""Every API object; kustomization.yaml is kustomize's input, not an object of the API."""


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def validate(document: Any) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    """Each manifest holds at least one object, and each object has the fields, types and
    nesting its kind's schema requires."""
    objects = documents(path)
    assert objects, f"{path.name} holds no Kubernetes object"
    for document in objects:
        validate(document)


def test_the_kit_has_the_manifests_it_documents() -> None:
    """The deployment, service and config map are there to be checked at all."""
    assert {"deployment.yaml", "service.yaml", "configmap.yaml"} <= {p.name for p in MANIFESTS}


def test_the_schema_check_refuses_a_wrong_type_and_an_unknown_field() -> None:
    """The same check fails on a port given as text and on a misspelt field."""
    (deployment,) = documents(KUBERNETES / "deployment.yaml")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "7007"
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


def test_every_manifest_of_the_kustomization_is_checked() -> None:
    """Nothing kustomize applies escapes the schema check."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) <= {path.name for path in MANIFESTS}


MESH = KUBERNETES / "mesh"
MESH_MANIFESTS = sorted(path for path in MESH.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MESH_MANIFESTS, ids=lambda path: f"mesh/{path.name}")
def test_mesh_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    """The self-watching mesh example is checked like the main manifests."""
    for document in documents(path):
        validate(document)


def test_the_mesh_example_watches_its_headless_service() -> None:
    """The DaemonSet's config validates as echostat's, its watch targets name the headless
    Service (whose DNS answer is every pod), and kustomize applies every manifest."""
    (service,) = documents(MESH / "service.yaml")
    (configmap,) = documents(MESH / "configmap.yaml")
    (daemonset,) = documents(MESH / "daemonset.yaml")
    assert service["spec"]["clusterIP"] == "None"
    token = {"ECHOSTAT_STATUS__TOKEN": "a-token-of-sixteen-or-more"}
    config = validate_config(configmap["data"]["config.yaml"], "configmap.yaml", token).config
    name = service["metadata"]["name"]
    assert {t.target.removeprefix("udp://") for t in config.watch.targets} == {f"{name}:7007"}
    (volume,) = daemonset["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    kustomization = yaml.safe_load((MESH / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {path.name for path in MESH_MANIFESTS}


def _udp_pieces() -> dict[str, Any]:
    """deploy/README.md's UDP additions, by the manifest each one's first comment names."""
    text = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## UDP listeners\n") :]
    section = section[: section.index("\n## ", 1)]
    pieces = {}
    for block in re.findall(r"```yaml\n(.*?)\n```", section, re.DOTALL):
        comment, _, body = block.partition("\n")
        pieces[comment.removeprefix("# ").split(",")[0]] = yaml.safe_load(body)
    return pieces


def test_the_documented_udp_additions_keep_the_manifests_valid(tmp_path: Path) -> None:
    """The UDP listener, container port and Service port deploy/README.md shows, added to
    the shipped manifests, pass the schemas, and the config loads with the UDP listener."""
    pieces = _udp_pieces()
    assert set(pieces) == {"configmap.yaml", "deployment.yaml", "service.yaml"}
    (deployment,) = documents(KUBERNETES / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"] += pieces["deployment.yaml"]
    (service,) = documents(KUBERNETES / "service.yaml")
    service["spec"]["ports"] += pieces["service.yaml"]
    for document in (deployment, service):
        validate(document)
    (configmap,) = documents(KUBERNETES / "configmap.yaml")
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    config["listeners"] += pieces["configmap.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_config(path, env={"ECHOSTAT_STATUS__TOKEN": "t" * 32})
    served = {(listener.port, listener.protocol) for listener in loaded.listeners}
    served.add((loaded.status.port, "tcp"))
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert served == {(port["containerPort"], port["protocol"].lower()) for port in ports}
