"""deploy/container/: the Dockerfile read by BuildKit's own parser, checked against the tree.

No container runtime is needed: the Dockerfile is parsed by the parser `docker build` uses
(the `dockerfile` package wraps it), and what it copies, runs and exposes is compared with
the repository, the wheel's own layout (pyproject.toml's package folders) and the Kubernetes
manifests.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import dockerfile
import yaml

from bench.source_tree import package_dirs
from echostat.server import __version__
from echostat.server.config_loading import load_config
from tests.helpers import REPO

CONTAINER = REPO / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
VENV = "/opt/echostat"


def _stages() -> list[list[Any]]:
    """The Dockerfile's instructions, one list per stage (each starts with its FROM)."""
    stages: list[list[Any]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([])
        stages[-1].append(command)
    return stages


def _instructions(stage: list[Any], name: str) -> list[Any]:
    return [command for command in stage if command.cmd == name]


def _copied_sources(stage: list[Any]) -> list[str]:
    """What COPY takes from the build context (not from another stage) in `stage`."""
    return [
        source
        for command in _instructions(stage, "COPY")
        if not any(flag.startswith("--from=") for flag in command.flags)
        for source in command.value[:-1]
    ]


def _deployment_container() -> Any:
    deployment = yaml.safe_load((REPO / "deploy/kubernetes/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_the_builder_makes_a_wheel_and_installs_it_without_test_tools() -> None:
    """Two stages; the builder builds echostat's wheel and installs that wheel (not the
    tree, not the `test` extra) into the environment the runtime stage copies."""
    build, runtime = _stages()
    assert build[0].value[-2:] == ("AS", "build")
    (script,) = [" ".join(command.value) for command in _instructions(build, "RUN")[-1:]]
    assert f"{VENV}/bin/pip wheel" in script
    assert f"{VENV}/bin/pip install --no-cache-dir /tmp/wheels/echostat-*.whl" in script
    assert "[test]" not in script
    copied = [c for c in _instructions(runtime, "COPY") if "--from=build" in c.flags]
    assert [c.value for c in copied] == [(VENV, VENV)]


def test_the_runtime_stage_needs_no_shell_and_runs_as_non_root() -> None:
    """The runtime image is distroless: no RUN and no shell-form command in its stage, an
    exec-form entrypoint into the copied environment, and a numeric non-root user."""
    _, runtime = _stages()
    assert runtime[0].value[0].startswith("gcr.io/distroless/python3-")
    assert not _instructions(runtime, "RUN") and not _instructions(runtime, "SHELL")
    (entrypoint,) = _instructions(runtime, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == (f"{VENV}/bin/echostat",)
    assert not [c for c in _instructions(runtime, "CMD") if not c.json]
    (user,) = _instructions(runtime, "USER")
    uid, _, gid = user.value[0].partition(":")
    assert int(uid) != 0 and int(gid) != 0


def test_builder_and_runtime_share_one_python() -> None:
    """The environment made in the builder points at the interpreter it was made with, so
    both stages are Debian 12 with its /usr/bin/python3, and `echostat` is on PATH (for
    ``kubectl exec POD -- echostat reload``)."""
    build, runtime = _stages()
    assert build[0].value[0] == "debian:12-slim"
    assert runtime[0].value[0].split(":")[0].endswith("-debian12")
    (env,) = _instructions(runtime, "ENV")
    settings = dict(zip(env.value[::2], env.value[1::2], strict=True))
    assert settings["PATH"].split(":")[0] == f"{VENV}/bin"
    assert settings["PYTHONDONTWRITEBYTECODE"] == "1"


def test_every_copied_file_exists_and_the_ignore_file_keeps_it() -> None:
    """Each COPY source is in the repository and not excluded by Dockerfile.dockerignore;
    the builder copies every folder the wheel maps and the README pyproject.toml names."""
    ignored = [
        line
        for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    build, runtime = _stages()
    sources = _copied_sources(build) + _copied_sources(runtime)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source.rstrip("/"), pattern) for pattern in ignored)
    folders = {f"{folder}/" for folder in package_dirs(REPO).values()}
    assert {"pyproject.toml", "README.md", *folders} == set(_copied_sources(build))


def test_the_image_config_loads_and_its_ports_are_exposed() -> None:
    """The config baked into the image is valid; EXPOSE names its echo and status ports, and
    the Kubernetes container's ports are among them, on the image tag of this version."""
    config = load_config(CONTAINER / "config.yaml", env={})
    _, runtime = _stages()
    (expose,) = _instructions(runtime, "EXPOSE")
    ports = {f"{listener.port}/{listener.protocol}" for listener in config.listeners}
    assert set(expose.value) == ports | {f"{config.status.port}/tcp"}
    container = _deployment_container()
    assert {f"{p['containerPort']}/{p['protocol'].lower()}" for p in container["ports"]} <= set(
        expose.value
    )
    assert container["image"] == f"echostat:{__version__}"
    assert container["command"][0] == "echostat"
