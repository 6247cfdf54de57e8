"""The checks: an explicit, ordered registry of pure functions from facts to findings.

Each check lives with the others of its area (``driver``, ``kmod``, ``cuda``, ``frameworks``,
``containers``, ``hardware``, ``platform``) and returns findings; it never touches the host. Their
repair plans come from the module of the same area in ``gpuops.doctor.plans``.

Adding a check is one function in its area's module plus one line in ``CHECKS``. When one
diagnosis makes another redundant, say so once in ``SUPERSEDES``.

After the checks, ``run_checks`` makes sure doctor is never silent on failure evidence:

1. every error-signature hit (``gpuops/knowledge/signatures_*.yaml``) that no finding covers
   becomes a finding of the signature's own code, built from the catalogue entry;
2. every piece of evidence (``gpuops.doctor.evidence``) that no finding explains becomes an
   ``unexplained_gpu_error`` quoting it;
3. a machine where a GPU is expected but the driver could not be reached, with no error found,
   gets ``gpu_stack_unverified``: its verdict is "could not verify", never "no problems".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gpuops.doctor.checks import containers, cuda, driver, frameworks, hardware, kmod, platform
from gpuops.doctor.checks.base import Ctx, _driver_works, _gpu_expected, finding_quote, make_ctx
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.evidence import GPU_TOPIC, Evidence
from gpuops.doctor.findings import CODES, Finding
from gpuops.doctor.groups import group

Check = Callable[[Ctx], list[Finding]]

CHECKS: list[Check] = [
    driver.check_no_gpu,
    driver.check_driver_not_installed,
    driver.check_smi_hung,
    driver.check_probe_failures,
    driver.check_library_mismatch,
    kmod.check_nouveau,
    kmod.check_other_driver_bound,
    kmod.check_secure_boot,
    kmod.check_module_flavour,
    hardware.check_fallen_off_bus,
    hardware.check_hardware_xid,
    hardware.check_gsp_firmware,
    kmod.check_dkms_build,
    kmod.check_driver_unreachable,
    kmod.check_pending_kernel,
    kmod.check_uvm_and_device_nodes,
    hardware.check_resume,
    hardware.check_mig,
    hardware.check_persistence,
    driver.check_fabric_manager,
    platform.check_wsl,
    cuda.check_driver_too_old,
    cuda.check_toolkit_vs_driver,
    frameworks.check_cpu_only,
    frameworks.check_jax,
    frameworks.check_cuda_variant,
    frameworks.check_cudnn,
    cuda.check_conda_shadowing,
    cuda.check_ld_library_path,
    cuda.check_ld_library_path_cuda,
    frameworks.check_gpu_arch,
    frameworks.check_cupy,
    containers.check_container_toolkit,
    containers.check_device_plugin_runtime,
    containers.check_daemon_reload,
    containers.check_cdi_stale,
]

# code -> the codes it makes redundant when it is reported as an error. Declared here once, so that
# no check has to know about another.
SUPERSEDES: dict[str, tuple[str, ...]] = {
    "gpu_fallen_off_bus": ("driver_not_loaded", "kernel_module_not_built_after_upgrade", "nvidia_smi_hung",
                           "gpu_hardware_fault", "nvidia_uvm_not_loaded", "device_nodes_missing"),
    "gpu_hardware_fault": ("driver_not_loaded", "nvidia_smi_hung"),
    "gsp_firmware_error": ("driver_not_loaded", "kernel_module_not_built_after_upgrade"),
    "other_driver_bound": ("driver_not_loaded", "kernel_module_not_built_after_upgrade",
                           "driver_not_installed"),
    "kernel_module_flavour_mismatch": ("driver_not_loaded", "kernel_module_not_built_after_upgrade"),
    "wsl_linux_driver_installed": ("driver_library_mismatch_needs_reboot", "driver_not_loaded",
                                   "kernel_module_not_built_after_upgrade", "nouveau_conflict",
                                   "device_nodes_missing", "nvidia_uvm_not_loaded"),
    "container_lost_gpu_after_daemon_reload": ("driver_library_mismatch_needs_reboot", "driver_not_loaded",
                                               "device_nodes_missing"),
    "mig_enabled_no_instances": ("driver_not_loaded",),
    "gpu_in_tcc_mode": ("driver_not_loaded",),
    "wsl_libcuda_shadowed": ("driver_not_loaded",),
    "cuda_unavailable_after_resume": ("nvidia_uvm_not_loaded", "device_nodes_missing"),
    "fabric_manager_version_mismatch": ("fabric_manager_not_running",),
}

# A finding of these codes also covers every signature of the named groups: with no NVIDIA GPU on
# the bus, "no CUDA-capable device" is the expected answer.
BROAD: dict[str, str] = {"no_nvidia_gpu": "cuda_init"}


def _supersede(findings: list[Finding]) -> list[Finding]:
    errors = {f.code for f in findings if f.severity == "error"}
    gone = {c for e in errors for c in SUPERSEDES.get(e, ())} - set()
    # a code never removes itself, and two codes that supersede each other both stay
    keep = []
    for f in findings:
        if f.code in gone and not any(f.code == e for e in errors if e in SUPERSEDES.get(f.code, ())):
            continue
        keep.append(f)
    return keep




def _covered(hit: Any, codes: set[str], group: Callable[[str], frozenset[str]]) -> bool:
    names = {hit.code, *hit.also}
    if names & codes:
        return True
    return any(names & group(g) for c, g in BROAD.items() if c in codes)


def _explained_codes(findings: list[Finding]) -> set[str]:
    """The codes the findings stand for: their own, and those their errors supersede."""
    codes = {f.code for f in findings}
    for f in findings:
        if f.severity == "error":
            codes.update(SUPERSEDES.get(f.code, ()))
            codes.update(f.covers)
    return codes


def _catalogue_findings(ctx: Ctx, findings: list[Finding], hits: list[Any]) -> list[Finding]:
    codes = _explained_codes(findings)
    by_code: dict[str, list[Any]] = {}
    for h in hits:
        if h.code == "unexplained_gpu_error" or _covered(h, codes, group):
            continue
        by_code.setdefault(h.code, []).append(h)
    out = []
    for code, hs in by_code.items():
        first = hs[0]
        app = first.klass == "application"
        if first.klass == "hardware":
            plan = plans.hardware_fault(ctx.facts, ctx, first.meaning)
        else:
            plan = plans.gather(ctx.facts, ctx, first.action or first.meaning)
        out.append(
            Finding(
                code=code,
                severity="warning" if app else "error",
                title=CODES.get(code, code)[:1].upper() + CODES.get(code, code)[1:],
                evidence=list(dict.fromkeys(finding_quote(h.origin, h.line) for h in hs))[:4],
                explanation=" ".join(x for x in (first.meaning, first.action) if x),
                confidence="likely",
                plan=plan,
                sources=sorted({h.source for h in hs if h.source}),
            )
        )
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


# Which finding codes explain the failure of a GPU tool of each area, when no signature matched its
# text: a diagnosis of the same area accounts for the tool's failing.
def _area_codes(area: str) -> set[str]:
    if area == "driver":
        return set(group("cuda_init")) | {"nvidia_smi_hung", "probe_failed", "no_nvidia_gpu"}
    if area == "kernel module":
        return set(group("driver_down"))
    if area == "container":
        return set(group("container_gpu"))
    return set()


def _unexplained(ctx: Ctx, findings: list[Finding], hits: list[Any]) -> list[Finding]:
    """Evidence no finding accounts for. A piece of evidence is explained when a signature matched
    it and that signature is covered by a finding, when a finding quotes one of its error lines, or
    (for a GPU tool's failure that no signature knows) when a finding of the tool's area was made."""
    quoted = " ".join(_norm(e) for f in findings for e in f.evidence)
    codes = _explained_codes(findings)
    by_origin: dict[str, list[Any]] = {}
    for h in hits:
        by_origin.setdefault(h.origin, []).append(h)
    # once the GPU itself failed (fell off the bus, a hardware Xid), every later CUDA or NVML error
    # is its consequence
    hardware_down = bool(codes & {"gpu_fallen_off_bus", "gpu_hardware_fault"})
    lost: list[tuple[Evidence, str]] = []
    for ev in ctx.facts.evidence:
        if hardware_down and GPU_TOPIC.search(ev.text):
            continue
        if any(_covered(h, codes, group) for h in by_origin.get(ev.origin, [])):
            continue
        if ev.area != "log" and codes & _area_codes(ev.area):
            continue
        lines = ev.lines()
        if any(_core(ln) and _core(ln) in quoted for ln in lines):
            continue
        lost.append((ev, lines[0]))
    if not lost:
        return []
    return [
        Finding(
            code="unexplained_gpu_error",
            severity="error",
            title="A GPU error that doctor cannot explain",
            evidence=[finding_quote(ev.origin, line) for ev, line in lost[:5]],
            explanation="doctor read these error texts but none of its checks or error signatures "
            "explains them, so it could not determine the cause. Gather what the plan lists and "
            "attach it (`gpuops doctor --log FILE`), or report it with the capture.",
            plan=plans.gather(ctx.facts, ctx, ", ".join(sorted({ev.origin for ev, _ in lost}))),
        )
    ]


# syslog / dmesg prefixes: "Aug 26 14:08:07 host kernel: ", "[   12.345678] "
_PREFIX = re.compile(r"^(?:\w{3}\s+\d+\s+[\d:]+\s+\S+\s+kernel:\s*)?(?:\[\s*[\d.]+\]\s*)?")


def _core(line: str) -> str:
    """The part of a line that a finding's quote of it would contain (prefix dropped, 40 chars)."""
    core = _norm(_PREFIX.sub("", line.strip()))
    return core[:40] if len(core) >= 12 else ""


def _unverified(ctx: Ctx, findings: list[Finding]) -> list[Finding]:
    f = ctx.facts
    if any(x.severity == "error" for x in findings) or not _gpu_expected(f) or _driver_works(f):
        return []
    what = []
    if f.smi_status is None:
        what.append("nvidia-smi was not run or not shown")
    elif f.smi_status == "missing":
        what.append("nvidia-smi is not installed")
    if f.nvml_error:
        what.append(f"NVML: {f.nvml_error}")
    elif f.smi_status is None:
        what.append("NVML was not queried")
    return [
        Finding(
            code="gpu_stack_unverified",
            severity="warning",
            title="A GPU is expected here, but doctor could not check its driver stack",
            evidence=what or ["neither nvidia-smi nor NVML answered"],
            explanation="Nothing found is wrong, but nothing showed the driver working either: "
            "this is not a clean bill of health.",
            plan=plans.gather(f, ctx, "nvidia-smi output and a live capture"),
        )
    ]


def run_checks(ctx: Ctx) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(ctx))
    findings = _supersede(findings)
    hits = ctx.resolved
    findings += _catalogue_findings(ctx, findings, hits)
    findings += _unexplained(ctx, findings, hits)
    findings += _unverified(ctx, findings)
    # one finding per (code, severity, title); each evidence line once
    seen = set()
    out = []
    for fd in findings:
        key = (fd.code, fd.severity, fd.title)
        if key not in seen:
            seen.add(key)
            fd.evidence = list(dict.fromkeys(fd.evidence))
            out.append(fd)
    order = {"error": 0, "warning": 1, "info": 2}
    out.sort(key=lambda x: order[x.severity])
    return out


__all__ = ["CHECKS", "SUPERSEDES", "Ctx", "make_ctx", "run_checks"]
