"""Containers: the NVIDIA container toolkit and runtime as Docker sees them."""

from __future__ import annotations

import re

from gpuops.doctor import plans
from gpuops.doctor.checks.base import (
    Ctx,
    _driver_works,
    _gpu_expected,
    _gpu_names,
    _kb_line,
    _quote,
    _stated,
)
from gpuops.doctor.findings import Finding


def check_container_toolkit(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    kh = ctx.kb_hit("docker_no_gpu_driver")
    ev = []
    if kh:
        ev.append(_kb_line(kh, f.error_texts))
    if f.docker_snap:
        ev.append(
            _stated(
                f,
                "docker_installed_as",
                "Docker is the snap package (it does not use the host's NVIDIA "
                "container toolkit configuration)",
            )
        )
    if f.docker is not None and f.docker.reachable:
        if "nvidia" in f.docker.runtimes:
            if not kh and not f.docker_snap:
                return []
            ev.append(f"docker info: Runtimes: {' '.join(f.docker.runtimes)}")
        else:
            ev.append(f"docker info: Runtimes: {' '.join(f.docker.runtimes) or '(none listed)'} (no nvidia)")
        if f.cdi_specs:
            if not kh and not f.docker_snap:
                return []
            ev.append(f"CDI specs: {', '.join(f.cdi_specs)}")
    if f.nvidia_ctk_missing and (f.docker is not None or kh):
        ev.append("nvidia-ctk: not installed")
    if kh or f.docker_snap:
        severity = "error" if kh else "warning"
    elif f.docker is not None and f.docker.reachable and _gpu_expected(f) and f.nvidia_ctk is None:
        severity = "warning"
    else:
        return []
    if _driver_works(f) and f.gpus:
        ev.append(_stated(f, "gpus", f"host GPUs work: {len(f.gpus)} x {_gpu_names(f)}"))
    return [
        Finding(
            code="container_toolkit_missing",
            severity=severity,  # type: ignore[arg-type]
            title="`docker run --gpus` cannot work: NVIDIA container toolkit missing or not registered",
            evidence=ev,
            explanation="Docker hands GPUs to containers through the NVIDIA Container Toolkit; without it "
            "(or with the snap Docker, which does not see it) the daemon has no GPU device "
            "driver.",
            plan=plans.container_toolkit(f, ctx),
        )
    ]


# NVIDIA Container Toolkit troubleshooting, "Containers losing access to GPUs with error: Failed to
# initialize NVML: Unknown Error": with the systemd cgroup driver, `systemctl daemon-reload` makes
# systemd rewrite the device cgroup of running containers and drop the GPU devices
# (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/troubleshooting.html).
_NVML_UNKNOWN = re.compile(r"Failed to initialize NVML: Unknown Error", re.I)
TOOLKIT_TROUBLESHOOTING = (
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/troubleshooting.html"
)


def check_daemon_reload(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    lines = [_quote(o, ln) for o, ln in ctx.lines() if _NVML_UNKNOWN.search(ln)]
    if f.nvml_error and _NVML_UNKNOWN.search(f"Failed to initialize NVML: {f.nvml_error}") and f.in_container:
        lines.append(f"NVML: {f.nvml_error}")
    if not lines:
        return []
    in_container = f.in_container or any(
        re.search(r"docker|container|kubectl|pod", o, re.I) for o, t in ctx.texts if _NVML_UNKNOWN.search(t)
    )
    if not in_container:
        return []
    ev = list(dict.fromkeys(lines))[:3]
    if f.docker_cgroup_driver:
        ev.append(f"docker info: Cgroup Driver: {f.docker_cgroup_driver}")
    if f.docker_cgroup_driver == "cgroupfs":
        return []
    return [
        Finding(
            code="container_lost_gpu_after_daemon_reload",
            severity="error",
            confidence="confirmed" if f.docker_cgroup_driver == "systemd" else "likely",
            title="The container lost its GPU: 'Failed to initialize NVML: Unknown Error' inside it",
            evidence=ev,
            explanation="A container that saw its GPU and later gets 'Unknown Error' from NVML lost "
            "the GPU device nodes from its cgroup: with Docker's systemd cgroup driver, any "
            "`systemctl daemon-reload` (package upgrades run one) rewrites them. Restarting the "
            "container brings the GPU back until the next reload.",
            plan=plans.container_daemon_reload(f, ctx),
            sources=[TOOLKIT_TROUBLESHOOTING],
        )
    ]


def check_cdi_stale(ctx: Ctx) -> list[Finding]:
    """A CDI spec lists the driver's files by version; after a driver upgrade it names files that
    are gone (NVIDIA Container Toolkit, "Support for Container Device Interface")."""
    f = ctx.facts
    ev: list[str] = []
    lines = [_quote(o, ln) for o, ln in ctx.lines()
             if re.search(r"unresolvable CDI devices|failed to inject CDI devices|"
                          r"CDI device injection failed", ln, re.I)]
    drv = f.driver_version or f.loaded_module_version
    stale = sorted(v for v in f.cdi_driver_versions if drv and v != drv)
    if stale:
        ev.append(f"CDI spec names driver {', '.join(stale)}; the driver is {drv}")
    if not stale and not (lines and (f.cdi_specs or f.cdi_driver_versions)):
        return []
    ev += lines[:2]
    if f.cdi_specs:
        ev.append(f"CDI specs: {', '.join(f.cdi_specs[:3])}")
    return [
        Finding(
            code="cdi_spec_stale",
            severity="error",
            title="The CDI spec for the GPUs is stale: it was generated for another driver",
            evidence=ev,
            explanation="Runtimes that use CDI inject exactly the files the spec lists; a spec made "
            "before a driver upgrade names libraries that no longer exist, so containers fail to "
            "start or get no GPU. Regenerate it after every driver change.",
            plan=plans.cdi_regenerate(f, ctx),
            sources=["https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/cdi-support.html"],
        )
    ]
