"""Driver presence: no GPU, no driver, a hung nvidia-smi, a user-space/kernel version mismatch,
NVSwitch Fabric Manager."""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import (
    Ctx,
    _driver_works,
    _hit_quote,
    _kb_line,
    _line_around,
    _quote,
    _recent,
    _stated,
    vkey,
)
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding


def check_no_gpu(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if f.gpu_present is not False or _driver_works(f):
        return []
    ev = []
    if f.pci_nvidia is not None:
        ev.append("PCI bus: no device with NVIDIA's vendor id 0x10de")
    if f.smi_status == "missing":
        ev.append("nvidia-smi: not installed")
    if f.nvml_error:
        ev.append(f"NVML: {f.nvml_error}")
    if f.loaded_module_version is None:
        ev.append("/proc/driver/nvidia/version: absent (no NVIDIA kernel module loaded)")
    return [
        Finding(
            code="no_nvidia_gpu",
            severity="info",
            title="No NVIDIA GPU on this machine",
            evidence=ev,
            explanation="GPU checks are skipped; CPU-only work and CPU images still run.",
        )
    ]


def check_driver_not_installed(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    pci_gpus = [d for d in f.pci_nvidia or [] if (d.pci_class or "").startswith("0x03")]
    if not pci_gpus or f.smi_status not in ("missing", None) or f.loaded_module_version:
        return []
    if f.nouveau_loaded:
        return []  # nouveau_conflict explains it
    ev = [
        f"PCI {d.slot}: NVIDIA device {d.device or '?'} bound to {d.driver or 'no driver'}" for d in pci_gpus
    ]
    ev.append("nvidia-smi: not installed" if f.smi_status == "missing" else "nvidia-smi: not shown")
    return [
        Finding(
            code="driver_not_installed",
            severity="error",
            title="NVIDIA GPU present, NVIDIA driver not installed",
            evidence=ev,
            explanation="Without the NVIDIA driver no CUDA program can use the GPU.",
            plan=plans.install_driver(f, ctx),
        )
    ]


def check_smi_hung(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if f.smi_status != "timeout":
        return []
    return [
        Finding(
            code="nvidia_smi_hung",
            severity="error",
            title="nvidia-smi hangs",
            evidence=[f.smi_message or "nvidia-smi timed out"],
            explanation="A hung nvidia-smi usually means the driver is wedged (a GPU fell off the bus, "
            "an Xid error) or a process holds the device in an uninterruptible state. "
            "Check `dmesg | grep -i xid`; a reboot usually clears it.",
            plan=[plans.reboot_step("clear the wedged driver state")],
        )
    ]


def check_library_mismatch(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    ev: list[str] = []
    if f.smi_status == "mismatch":
        ev.append(f"nvidia-smi: {f.smi_message}")
    h = ctx.hit("nvrm_api_mismatch")
    if h:
        ev.append(
            _quote(f"kernel log ({h[1]})" if h[1] != "kernel log" else "kernel log", _line_around(h[2]))
        )
    if f.kernel_log and f.kernel_log.api_mismatch and not h:
        c, k = f.kernel_log.api_mismatch
        ev.append(
            f"kernel log: NVRM: API mismatch: the client has the version {c}, "
            f"but this kernel module has the version {k}"
        )
    kh = ctx.kb_hit("nvml_version_mismatch")
    if kh and not ev:
        ev.append(_kb_line(kh, f.error_texts))
    loaded, user = f.loaded_module_version, f.userspace_driver_version
    if (
        loaded
        and user
        and vkey(loaded) != vkey(user)[: len(vkey(loaded))]
        and vkey(user) != vkey(loaded)[: len(vkey(user))]
    ):
        ev.append(_stated(f, "loaded_module_version", f"loaded kernel module: {loaded}"))
        ev.append(_stated(f, "userspace_driver_version", f"user-space driver (NVML library): {user}"))
    if not ev:
        return []
    changes = _recent(f, "driver")
    hist = [c.describe() for c in changes]
    if changes and loaded:
        hist.append(
            f"the running kernel module is still {loaded}; the new user-space libraries were installed "
            f"without a reboot"
        )
    return [
        Finding(
            code="driver_library_mismatch_needs_reboot",
            severity="error",
            title="Driver/library version mismatch: the loaded kernel module is older than the installed driver",  # noqa: E501
            evidence=ev,
            history=hist,
            explanation="The driver package was upgraded (often by unattended-upgrades) while the old kernel module "  # noqa: E501
            "stayed loaded. User-space libraries and module must be the same version: reload the module "
            "when the GPU is idle, or reboot.",
            plan=plans.mismatch(f, ctx),
        )
    ]


def check_fabric_manager(ctx: Ctx) -> list[Finding]:
    """NVSwitch systems: Fabric Manager must run, at exactly the driver's version (NVIDIA Fabric
    Manager user guide, https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/)."""
    f = ctx.facts
    h = ctx.hit("cuda_system_not_ready")
    mismatch_lines = [
        _quote(origin, ln)
        for origin, text in ctx.texts
        for ln in text.splitlines()
        if re.search(r"fabric manager.*(version|interface).*(don't|do not|does not) match|"
                     r"fabric ?manager.*version mismatch", ln, re.I)
    ]
    drv = f.driver_version or f.loaded_module_version
    fm = f.fabricmanager_version
    differs = bool(drv and fm and drv != fm)
    if mismatch_lines or (differs and (h or (f.fabricmanager and "failed" in f.fabricmanager))):
        ev = mismatch_lines[:2]
        if drv:
            ev.append(_stated(f, "driver_version", f"driver: {drv}"))
        if fm:
            ev.append(f"fabric manager package: {fm}")
        if f.fabricmanager:
            ev.append(f"nvidia-fabricmanager service: {f.fabricmanager}")
        if h:
            ev.append(_hit_quote(h))
        return [
            Finding(
                code="fabric_manager_version_mismatch",
                severity="error",
                title="Fabric Manager is of another version than the driver, so it refuses to start",
                evidence=ev,
                explanation="Fabric Manager talks to the driver through an interface of exactly one "
                "driver version; after a driver upgrade without the matching nvidia-fabricmanager "
                "package it exits, and CUDA reports 'system not yet initialized' (error 802).",
                plan=plans.fabric_manager_version(f, ctx),
                sources=["https://docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide/"],
            )
        ]
    if not h:
        return []
    ev = [_hit_quote(h)]
    if f.driver_version:
        ev.append(_stated(f, "driver_version", f"driver: {f.driver_version}"))
    if f.fabricmanager:
        ev.append(f"nvidia-fabricmanager service: {f.fabricmanager}")
    return [
        Finding(
            code="fabric_manager_not_running",
            severity="error",
            confidence="likely",
            title="CUDA error 802 'system not yet initialized': NVSwitch Fabric Manager not running",
            evidence=ev,
            explanation="On NVSwitch systems (HGX/DGX) CUDA refuses to start until the NVIDIA Fabric Manager "
            "service, of exactly the driver's version, is running.",
            plan=plans.fabric_manager(f, ctx),
        )
    ]


def check_probe_failures(ctx: Ctx) -> list[Finding]:
    """A tool that timed out, crashed or printed without end is named: what doctor could not see."""
    f = ctx.facts
    cap_cmds = f.commands_failed
    out = []
    for key, (error, rc) in cap_cmds.items():
        if key == "nvidia-smi" and error == "timeout":
            continue  # check_smi_hung
        what = {"timeout": "did not answer within its time-out",
                "crashed": f"crashed (killed by signal {-rc if rc else '?'})",
                "too_much_output": "printed more output than doctor reads and was stopped"}[error]
        gpu_tool = key in ("nvidia-smi", "nvidia-container-cli")
        out.append(
            Finding(
                code="nvidia_smi_hung" if key == "nvidia-smi" else "probe_failed",
                severity="error" if gpu_tool else "warning",
                title=f"`{key}` {what}",
                evidence=[f"{key}: {what}"],
                explanation="doctor could not read this tool's answer, so the facts it gives are "
                "unknown. A GPU tool that crashes or hangs usually means a wedged driver (look for "
                "Xid lines in the kernel log); other tools may hang on a busy or broken system.",
                plan=plans.gather(f, ctx, f"the output of {key} run by hand"),
            )
        )
    return out
