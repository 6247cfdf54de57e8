"""The GPU itself: lost from the bus, hardware faults reported as Xid events, GSP firmware,
MIG, persistence mode, and CUDA lost across a suspend/resume.

Xid numbers and their classes come from NVIDIA's Xid catalogue (``gpuops/knowledge/xid.yaml``,
https://docs.nvidia.com/deploy/xid-errors/). A hardware fault is said to be hardware: no software
repair is planned for it.
"""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import Ctx, _driver_works, _stated, finding_quote
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding

# Xid 79: "GPU has fallen off the bus" (NVIDIA Xid catalogue).
_FALLEN = re.compile(r"fallen off the bus|GPU is lost", re.I)


def check_fallen_off_bus(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    ev = [finding_quote("kernel log", ln) for _, x, ln in f.xids if x == 79]
    ev += [finding_quote(h.origin, h.line) for h in ctx.resolved_codes("gpu_fallen_off_bus")]
    for origin, ln in ctx.lines():
        if _FALLEN.search(ln):
            ev.append(finding_quote(origin, ln))
    if not ev:
        return []
    return [
        Finding(
            code="gpu_fallen_off_bus",
            severity="error",
            title="The GPU has fallen off the PCIe bus: hardware, power or PCIe, not software",
            evidence=list(dict.fromkeys(ev))[:4],
            explanation="The driver lost contact with the GPU (Xid 79 in NVIDIA's catalogue). The "
            "usual causes are power delivery, overheating, a loose riser or seating, or a failing "
            "board; reinstalling software does not help. A reboot brings the GPU back until it "
            "happens again.",
            plan=plans.hardware_fault(f, ctx, "the GPU fell off the PCIe bus (Xid 79)"),
            sources=["https://docs.nvidia.com/deploy/xid-errors/"],
        )
    ]


def check_hardware_xid(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    hw = [h for h in ctx.resolved if h.klass == "hardware" and h.code == "gpu_hardware_fault"]
    if not hw:
        return []
    ev = list(dict.fromkeys(finding_quote(h.origin, h.line) for h in hw))[:4]
    what = "; ".join(dict.fromkeys(h.meaning for h in hw if h.meaning))
    actions = list(dict.fromkeys(h.action for h in hw if h.action))
    return [
        Finding(
            code="gpu_hardware_fault",
            severity="error",
            title="The GPU reports a hardware fault: not a software problem",
            evidence=ev,
            explanation=(what + ". " if what else "") + " ".join(actions[:2]),
            plan=plans.hardware_fault(f, ctx, what or "a hardware Xid"),
            sources=sorted({h.source for h in hw if h.source}),
        )
    ]


def check_gsp_firmware(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    ev = [finding_quote("kernel log", ln) for _, x, ln in f.xids if x in (119, 120)]
    ev += [finding_quote(h.origin, h.line) for h in ctx.resolved_codes("gsp_firmware_error")]
    ev += [finding_quote("kernel log", ln) for ln in f.gsp_errors if re.search(r"GSP|gsp", ln)]
    if not ev:
        return []
    if f.driver_version or f.loaded_module_version:
        ev.append(_stated(f, "driver_version", f"driver: {f.driver_version or f.loaded_module_version}"))
    if f.module_flavour:
        ev.append(f"kernel module: {f.module_flavour}")
    return [
        Finding(
            code="gsp_firmware_error",
            severity="error",
            title="The GPU System Processor (GSP) firmware failed to start or stopped answering",
            evidence=list(dict.fromkeys(ev))[:5],
            explanation="Since driver 510 the GPU's own processor (GSP) runs part of the driver; "
            "Xid 119/120 and RmInitAdapter failures mean it timed out or failed to boot. NVIDIA's "
            "catalogue advises a newer driver; with the proprietary module the GSP can be turned off.",
            plan=plans.gsp_firmware(f, ctx),
            sources=["https://docs.nvidia.com/deploy/xid-errors/"],
        )
    ]


# CUDA's "unknown error" (cudaErrorUnknown = 999, CUDA_ERROR_UNKNOWN) right after a resume: the
# nvidia_uvm module lost its state (NVIDIA driver README, "Configuring Power Management Support").
_UNKNOWN = re.compile(r"CUDA_ERROR_UNKNOWN|cudaErrorUnknown|CUDA unknown error|error 999|unknown error", re.I)


def check_resume(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if not f.suspend_resume:
        return []
    ev = []
    for origin, ln in ctx.lines():
        if _UNKNOWN.search(ln):
            ev.append(finding_quote(origin, ln))
            break
    if not ev:
        return []
    ev.append(_stated(f, "suspend_resume", "the machine was suspended and resumed before the failure"))
    if _driver_works(f):
        ev.append("nvidia-smi still works: the driver is loaded, CUDA's unified memory module is not usable")
    return [
        Finding(
            code="cuda_unavailable_after_resume",
            severity="error",
            title="CUDA fails with 'unknown error' after a suspend/resume",
            evidence=list(dict.fromkeys(ev))[:4],
            explanation="Without NVIDIA's power-management services the nvidia_uvm module does not "
            "survive a suspend: nvidia-smi works, but every CUDA program fails to initialise until "
            "nvidia_uvm is reloaded or the machine reboots.",
            plan=plans.reload_uvm_after_resume(f, ctx),
            sources=["https://download.nvidia.com/XFree86/Linux-x86_64/550.54.14/README/powermanagement.html"],
        )
    ]


def check_mig(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    on = [g for g in f.gpus or [] if g.mig_mode == "enabled"]
    stated_on = f.mig_stated is True and not on
    # what programs that enumerate MIG devices print (slurmd's gres autodetection, nvidia-smi mig)
    said = [finding_quote(o, ln) for o, ln in ctx.lines()
            if re.search(r"MIG mode is enabled,? but no MIG devices|No GPU instances found|"
                         r"MIG.{0,40}no (?:GPU|compute) instances", ln, re.I)]
    if not on and not stated_on and not said:
        return []
    no_instances = f.mig_no_instances is True or any(g.mig_instances == 0 for g in on)
    sees_none = [finding_quote(h.origin, h.line) for h in ctx.resolved
                 if h.code in ("mig_enabled_no_instances",) or re.search(r"no CUDA-capable device|NO_DEVICE|"
                                                                         r"cudaErrorNoDevice", h.line, re.I)]
    if not (no_instances or sees_none or said):
        return []
    ev = [f"GPU {g.index} ({g.name or '?'}): MIG mode enabled" for g in on] + said[:2]
    if stated_on:
        ev.append(_stated(f, "mig_enabled", "MIG mode enabled"))
    if f.mig_no_instances:
        ev.append("nvidia-smi mig -lgi: No GPU instances found")
    ev += sees_none[:2]
    return [
        Finding(
            code="mig_enabled_no_instances",
            severity="error",
            title="MIG mode is on, but no MIG instance exists: CUDA programs see no GPU",
            evidence=ev,
            explanation="With Multi-Instance GPU enabled, CUDA only runs on GPU/compute instances; "
            "a MIG-enabled GPU without instances offers no device (NVIDIA MIG user guide).",
            plan=plans.mig(f, ctx, [g.index for g in on if g.index is not None]),
            sources=["https://docs.nvidia.com/datacenter/tesla/mig-user-guide/"],
        )
    ]


def check_persistence(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    gpus = f.gpus or []
    off = [g for g in gpus if g.persistence_mode == "disabled"]
    if len(gpus) < 2 or not off or len(off) != len(gpus):
        return []
    if f.persistenced and re.search(r"\bactive \(running\)", f.persistenced):
        return []
    if f.wsl:
        return []
    return [
        Finding(
            code="persistence_mode_off",
            severity="warning",
            title=f"Persistence mode is off on all {len(gpus)} GPUs",
            evidence=[f"GPU {g.index} ({g.name or '?'}): persistence mode disabled" for g in off][:4],
            explanation="Without persistence (nvidia-persistenced) the driver tears the GPUs down "
            "whenever no program uses them, so every CUDA start pays seconds of initialisation and "
            "settings such as application clocks are lost. NVIDIA recommends the daemon on servers.",
            plan=plans.persistence(f, ctx),
            sources=["https://docs.nvidia.com/deploy/driver-persistence/"],
        )
    ]


__all__ = [
    "check_fallen_off_bus",
    "check_gsp_firmware",
    "check_hardware_xid",
    "check_mig",
    "check_persistence",
    "check_resume",
]
