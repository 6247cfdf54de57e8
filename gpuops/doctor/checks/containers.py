"""Containers: the NVIDIA container toolkit and runtime as Docker sees them."""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import (
    Ctx,
    _driver_works,
    _gpu_expected,
    _gpu_names,
    _kb_line,
    _quote,
    _stated,
)
from gpuops.doctor.checks.lazy import plans
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
    # an error a container runtime printed about the GPU (nvidia-container-cli, the OCI hook)
    container_errors = [h for h in ctx.resolved if h.klass == "container"]
    if f.docker_snap and container_errors:
        ev += [_quote(h.origin, h.line) for h in container_errors[:2]]
    if kh or f.docker_snap:
        severity = "error" if kh or container_errors else "warning"
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
    # ("unresolvable CDI devices" alone is not a stale spec: an old runtime or an unsearched spec
    # directory print it too)
    lines: list[str] = []
    # The runtime injects each file the spec lists and fails on one that is gone:
    # "crun: cannot stat `/lib64/libEGL_nvidia.so.550.54.14`: No such file or directory"
    gone: list[str] = []
    for o, ln in ctx.lines():
        m = re.search(r"(?:cannot stat|stat'?ing(?: file)?|stat)\W+[`'\"]?(/\S*(?:nvidia|libcuda)\S*?)"
                      r"[`'\"]?:\s*(?:No such file|no such file)", ln, re.I)
        if m and re.search(r"crun|runc|OCI|CDI|container", ln + o, re.I):
            lines.append(_quote(o, ln))
            gone.append(m.group(1))
    drv = f.driver_version or f.userspace_driver_version or f.loaded_module_version
    stale = sorted(v for v in f.cdi_driver_versions if drv and v != drv)
    for path in gone:
        m = re.search(r"\.so\.(\d{3}\.\d+(?:\.\d+)?)$", path)
        if m and drv and m.group(1) != drv and m.group(1) not in stale:
            stale.append(m.group(1))
    if stale:
        ev.append(f"the container runtime was told to inject files of driver {', '.join(stale)}; "
                  f"the driver is {drv}")
    if not stale and not gone:
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


# NVIDIA's k8s-device-plugin README: the plugin finds NVML only when nvidia-container-runtime is the
# node's *default* runtime ("you need to enable the nvidia runtime as your default runtime"); with
# the toolkit installed but another default, it logs "could not load NVML library".
DEVICE_PLUGIN = "https://github.com/NVIDIA/k8s-device-plugin#prerequisites"


def check_device_plugin_runtime(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    lines = [_quote(o, ln) for o, ln in ctx.lines()
             if re.search(r"device-plugin|kubectl|kubelet|\bpod\b", o + " " + ln, re.I) is not None
             and re.search(r"could not load NVML library|Failed to initialize NVML|failed to start nvml",
                           ln, re.I)]
    if not lines:
        return []
    ev = list(dict.fromkeys(lines))[:2]
    if f.docker is not None and f.docker.default_runtime:
        if f.docker.default_runtime == "nvidia":
            return []
        ev.append(f"docker info: Default Runtime: {f.docker.default_runtime}")
    toolkit = [p for p in f.os_packages or {} if p.startswith(("nvidia-docker2", "nvidia-container-toolkit"))]
    if toolkit:
        ev.append(_stated(f, "os_packages", f"installed: {', '.join(toolkit)}"))
    return [
        Finding(
            code="container_toolkit_missing",
            severity="error",
            confidence="likely" if not f.docker or not f.docker.default_runtime else "confirmed",
            title="The NVIDIA device plugin cannot load NVML: the nvidia runtime is not the default runtime",
            evidence=ev,
            explanation="Kubernetes starts the device plugin with the node's default container runtime; "
            "unless that is nvidia-container-runtime, the plugin's container has no driver libraries and "
            "advertises no GPUs.",
            plan=plans.register_runtime(f, ctx),
            sources=[DEVICE_PLUGIN],
        )
    ]
