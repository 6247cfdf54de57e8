"""Container plans: the NVIDIA Container Toolkit, the docker runtime, CDI specs, snap Docker.

Commands from NVIDIA's Container Toolkit guide
(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html):
``nvidia-container-toolkit`` from its repository on apt, dnf, yum and zypper systems;
``nvidia-ctk runtime configure --runtime=docker`` then ``systemctl restart docker``;
``nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml``. Containers that lose the GPU after
``systemctl daemon-reload`` happen "on systems where systemd cgroup drivers are used" (the same
guide); NVIDIA's notice https://github.com/NVIDIA/nvidia-docker/issues/1730 explains it and lists
workarounds, among them the cgroupfs driver (``"exec-opts": ["native.cgroupdriver=cgroupfs"]`` in
daemon.json); "the container needs to be deleted once the issue occurs" and regains the GPU when
restarted. The other alternative offered here is to hand the GPU to containers through CDI.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import distro, install, manual, write_step

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts


def _restart_docker(code: str | None) -> RepairStep:
    return RepairStep(
        argv=["systemctl", "restart", "docker"],
        why="let the daemon read its configuration",
        verify=["docker", "info"],
        resolves=code,
    )


def register_runtime(f: Facts, ctx: Ctx, default: bool = False) -> list[RepairStep]:
    argv = ["nvidia-ctk", "runtime", "configure", "--runtime=docker"]
    if default:
        argv.append("--set-as-default")
    return [
        RepairStep(argv=argv, why="register the nvidia runtime in /etc/docker/daemon.json"),
        _restart_docker("container_toolkit_missing"),
    ]


def docker_snap(f: Facts, ctx: Ctx) -> list[RepairStep]:
    d = distro(f)
    # docker.io is the Debian/Ubuntu archive's Docker Engine (Docker's install guide lists it among the
    # distribution packages: https://docs.docker.com/engine/install/ubuntu/); elsewhere the package
    # differs by distribution, so a person picks it.
    repl = (
        install(
            d,
            ["docker.io"],
            "Docker from the distribution's packages (or docker-ce from Docker's repository)",
        )
        if d.family == "apt"
        else manual(
            "install Docker from your distribution's packages or Docker's repository "
            "(https://docs.docker.com/engine/install/)",
            "a Docker that is not a snap",
        )
    )
    return [
        RepairStep(
            argv=["snap", "remove", "docker"], why="the snap Docker does not use the NVIDIA Container Toolkit"
        ),
        repl,
    ]


def container_toolkit(f: Facts, ctx: Ctx) -> list[RepairStep]:
    d = distro(f)
    steps: list[RepairStep] = []
    if f.docker_snap:
        steps += docker_snap(f, ctx)
    if d.family in ("apt", "dnf", "yum", "zypper"):
        steps.append(
            install(
                d,
                ["nvidia-container-toolkit"],
                "the NVIDIA Container Toolkit (from NVIDIA's libnvidia-container repository)",
            )
        )
    else:
        steps.append(
            manual(
                "install nvidia-container-toolkit as NVIDIA's guide says for this distribution "
                "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/"
                "install-guide.html)",
                "the toolkit provides the nvidia runtime",
            )
        )
    return steps + register_runtime(f, ctx)


def cdi_regenerate(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return [
        RepairStep(
            argv=["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"],
            why="regenerate the CDI spec for the driver installed now",
            verify=["nvidia-ctk", "cdi", "list"],
            resolves="cdi_spec_stale",
        ),
    ]


def container_daemon_reload(f: Facts, ctx: Ctx) -> list[RepairStep]:
    """Either the cgroupfs driver in daemon.json, or CDI; then restart the container."""
    g = "container_daemon_reload"
    code = "container_lost_gpu_after_daemon_reload"
    steps: list[RepairStep] = []
    data: dict[str, object] | None = None
    # daemon.json is rewritten only from its own content as read: when it was not read (None), or is
    # not a JSON object, a rewrite could drop settings, so the change is left to a person
    try:
        loaded = json.loads(f.daemon_json) if f.daemon_json is not None else None
        data = loaded if isinstance(loaded, dict) else None
    except ValueError:
        data = None
    if data is not None:
        opts = (
            [o for o in data.get("exec-opts", []) or [] if isinstance(o, str)]
            if isinstance(data.get("exec-opts", []), list)
            else []
        )
        opts = [o for o in opts if not o.startswith("native.cgroupdriver=")] + [
            "native.cgroupdriver=cgroupfs"
        ]
        data["exec-opts"] = opts
        w = write_step(
            ctx,
            "/etc/docker",
            "daemon.json",
            json.dumps(data, indent=2, sort_keys=True) + "\n",
            "use the cgroupfs driver: a daemon-reload then does not revoke the containers' device access",
            group=g,
            alternative=1,
        )
        if w is not None:
            steps += [w, _with(_restart_docker(None), g, 1)]
    else:
        steps.append(
            manual(
                'add "exec-opts": ["native.cgroupdriver=cgroupfs"] to /etc/docker/daemon.json '
                "(it was not read here, or is not a JSON object) and restart docker",
                "use the cgroupfs driver",
                group=g,
                alternative=1,
            )
        )
    steps += [
        RepairStep(
            argv=["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"],
            why="or give containers the GPU through CDI (docker run --device nvidia.com/gpu=all)",
            group=g,
            alternative=2,
        ),
        manual(
            "restart the containers that lost the GPU (docker restart NAME)",
            "running containers keep the old device access until they restart",
            resolves=code,
        ),
    ]
    return steps


def _with(step: RepairStep, group: str, alt: int) -> RepairStep:
    step.group, step.alternative = group, alt
    return step
