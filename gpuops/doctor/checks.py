"""The checks: an explicit, ordered list of pure functions from facts to findings.

Each check reads ``Ctx`` (facts, knowledge base, error-text hits) and returns findings; it never
touches the host. Adding a check is one function plus one line in ``CHECKS``. Repair steps come
from ``gpuops.doctor.plans``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpuops.doctor import plans
from gpuops.doctor.facts import Facts, Framework
from gpuops.doctor.findings import Finding
from gpuops.doctor.history import PackageChange
from gpuops.doctor.signatures import Signature, scan

T = TypeVar("T")


@dataclass
class Ctx:
    facts: Facts
    kb: Any | None  # gpuops.knowledge.KnowledgeBase, None when it cannot be loaded
    hits: list[tuple[Signature, str, re.Match[str]]] = field(default_factory=list)
    kb_hits: list[tuple[Any, str]] = field(default_factory=list)  # (ErrorSignature, origin)
    root: str = ""  # prefix for paths written by repair steps

    def hit(self, *ids: str) -> tuple[Signature, str, re.Match[str]] | None:
        for h in self.hits:
            if h[0].id in ids:
                return h
        return None

    def kb_hit(self, *ids: str) -> tuple[Any, str] | None:
        for h in self.kb_hits:
            if h[0].id in ids:
                return h
        return None


def make_ctx(facts: Facts, kb: Any | None, root: str = "") -> Ctx:
    ctx = Ctx(facts=facts, kb=kb, root=root)
    texts = facts.error_texts
    ctx.hits = scan(texts)
    if kb is not None:
        try:
            for origin, text in texts:
                for sig in kb.match_errors(text):
                    ctx.kb_hits.append((sig, origin))
        except Exception:  # a broken knowledge base must not stop the diagnosis
            ctx.kb_hits = []
    return ctx


def vkey(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:4])


def _quote(origin: str, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > 220:
        text = text[:217] + "..."
    return f"{origin}: {text}"


def _line_around(m: re.Match[str]) -> str:
    s = m.string
    start = s.rfind("\n", 0, m.start()) + 1
    end = s.find("\n", m.end())
    return s[start : end if end != -1 else len(s)]


def _hit_quote(h: tuple[Signature, str, re.Match[str]]) -> str:
    """The log line a built-in signature matched, quoted with its origin."""
    return _quote(h[1], _line_around(h[2]))


def _ask_kb(ctx: Ctx, ask: Callable[[Any], T]) -> T | None:
    """One knowledge-base lookup; None when there is no knowledge base or the lookup fails."""
    if ctx.kb is None:
        return None
    try:
        return ask(ctx.kb)
    except Exception:  # a broken or incomplete knowledge base must not stop the diagnosis
        return None


def _kb_line(hit: tuple[Any, str], texts: list[tuple[str, str]]) -> str:
    """The log line a knowledge-base signature matched, quoted with its origin."""
    sig, origin = hit
    for o, text in texts:
        if o != origin:
            continue
        for line in text.splitlines():
            if any(n.lower() in line.lower() for n in sig.needles):
                return _quote(origin, line)
    return f"{origin}: {sig.text}"


def _stated(f: Facts, key: str, text: str) -> str:
    return f"{text} (stated in the report, not observed)" if key in f.stated_keys else text


def _gpu_names(f: Facts) -> str:
    names = sorted({g.name or "?" for g in f.gpus or []})
    return ", ".join(names) if names else "?"


def _recent(f: Facts, *kinds: str, n: int = 3) -> list[PackageChange]:
    return [c for c in f.history if c.kind in kinds][-n:]


def _gpu_cc(ctx: Ctx) -> list[tuple[str, str]]:
    """(name, cc) of each distinct GPU, looking the cc up by name when the probe did not give it."""
    out = []
    for g in ctx.facts.gpus or []:
        cc = g.cc
        if cc is None and g.name:
            cc = _ask_kb(ctx, lambda kb, name=g.name: kb.gpu_cc(name))
        if cc and (g.name or "?", cc) not in out:
            out.append((g.name or "?", cc))
    return out


def _gpu_cc_lines(f: Facts, ccs: list[tuple[str, str]]) -> list[str]:
    return [_stated(f, "gpus", f"GPU: {name} (compute capability {cc})") for name, cc in ccs]


def _driver_works(f: Facts) -> bool:
    return f.smi_status == "ok" or bool(f.gpus and any(g.source == "nvml" for g in f.gpus))


def _gpu_expected(f: Facts) -> bool:
    return bool(f.gpu_present) or bool(f.gpus) or _driver_works(f)


# ------------------------------------------------------------------------------------------
# driver presence and loading


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
    ev.append("nvidia-smi: not installed")
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


def check_driver_unreachable(ctx: Ctx) -> list[Finding]:
    """nvidia-smi/NVML cannot reach the driver: find the reason, report one cause."""
    f = ctx.facts
    smi_down = f.smi_status == "no_driver" or bool(ctx.kb_hit("nvidia_smi_no_driver"))
    nvml_down = bool(f.nvml_error and re.search(r"Driver Not Loaded|DriverNotLoaded", f.nvml_error))
    dkms_broken = bool(f.dkms and f.dkms.errors)
    module_missing = f.module_for_running_kernel is False
    if not (smi_down or nvml_down or dkms_broken or module_missing):
        return []
    if f.smi_status == "mismatch" or ctx.hit("nvrm_api_mismatch") or f.nouveau_loaded:
        return []  # explained by the mismatch / nouveau checks
    if f.loaded_module_version and not smi_down and not nvml_down:
        if module_missing or dkms_broken:
            return [_module_finding(ctx, "warning")]
        return []

    ev: list[str] = []
    if smi_down:
        ev.append(
            f"nvidia-smi: {f.smi_message or 'NVIDIA-SMI has failed because it could not communicate with the driver'}"  # noqa: E501
        )
    elif nvml_down:
        ev.append(f"NVML: {f.nvml_error}")
    signed = ctx.hit("module_not_signed")
    if signed or (f.kernel_log and f.kernel_log.unsigned_rejected):
        return []  # check_secure_boot reports it
    if f.secure_boot and not module_missing and not dkms_broken:
        return []  # check_secure_boot reports it (likely)
    if not (smi_down or nvml_down) and f.driver_version and _driver_works(f):
        return [_module_finding(ctx, "warning")]
    return [_module_finding(ctx, "error", ev)]


def _module_finding(ctx: Ctx, severity: str, pre: list[str] | None = None) -> Finding:
    f = ctx.facts
    ev = list(pre or [])
    confirmed = False
    if f.kernel:
        ev.append(_stated(f, "kernel", f"running kernel: {f.kernel}"))
    if f.module_for_running_kernel is False:
        confirmed = True
        if f.kernels_with_nvidia is not None:
            others = {k: v for k, v in f.kernels_with_nvidia.items() if k != f.kernel}
            if others:
                for k, paths in sorted(others.items()):
                    ev.append(f"NVIDIA module present only for kernel {k}: {paths[0]}")
            else:
                ev.append(f"no nvidia.ko under /lib/modules/{f.kernel or '<running>'}")
        if (
            f.installed_module_version is None
            and f.smi_message
            and "Module nvidia not found" in (f.smi_message or "")
        ):
            ev.append("modprobe: FATAL: Module nvidia not found.")
    if f.dkms is not None:
        if not f.dkms.available:
            ev.append("dkms: not installed (a driver installed without DKMS is not rebuilt for new kernels)")
            confirmed = confirmed or f.module_for_running_kernel is False
        for e in f.dkms.errors[:3]:
            ev.append(f"dkms status: {e}")
            confirmed = True
        nv = [e for e in f.dkms.entries if e.module.startswith("nvidia")]
        if f.kernel and nv and not any(e.kernel == f.kernel and e.state == "installed" for e in nv):
            ev.append(
                f"dkms status: no installed nvidia module for {f.kernel} "
                f"(has: {', '.join(sorted({f'{e.version}/{e.kernel}:{e.state}' for e in nv}))})"
            )
            confirmed = True
    if f.kernels_with_headers is not None and f.kernel and f.kernel not in f.kernels_with_headers:
        ev.append(f"kernel headers for {f.kernel}: not installed (DKMS cannot build without them)")
    hist = []
    kern = _recent(ctx.facts, "kernel", n=2)
    drv = _recent(ctx.facts, "driver", n=2)
    for c in kern + drv:
        hist.append(c.describe())
    if kern and f.kernel:
        dk = next((p for p in (f.os_packages or {}) if re.match(r"nvidia-dkms-\d+", p)), None)
        if dk and f.module_for_running_kernel is False:
            hist.append(f"{dk} has no module for {f.kernel}")
    if not confirmed:
        ev.append(
            "the usual cause when nvidia-smi cannot reach an installed driver; "
            "confirm with `dkms status` and `modinfo nvidia`"
        )
    title = (
        "No NVIDIA kernel module for the running kernel"
        if severity == "error"
        else "DKMS will not rebuild the NVIDIA module for new kernels"
    )
    return Finding(
        code="kernel_module_not_built_after_upgrade",
        severity=severity,  # type: ignore[arg-type]
        title=title,
        evidence=ev,
        history=hist,
        confidence="confirmed" if confirmed else "likely",
        explanation="The NVIDIA kernel module is built per kernel. After a kernel upgrade DKMS must rebuild it "  # noqa: E501
        "(it needs the kernel headers); a driver installed with the .run file without --dkms, or a "
        "broken DKMS tree, leaves the new kernel without a module.",
        plan=plans.rebuild_module(f, ctx),
    )


def check_pending_kernel(ctx: Ctx) -> list[Finding]:
    """An installed kernel newer than the running one has no NVIDIA module: the next boot breaks."""
    f = ctx.facts
    if not f.kernel or not f.kernels_with_nvidia or f.kernel not in f.kernels_with_nvidia:
        return []
    newer = [
        k for k in f.kernels_installed or [] if vkey(k) > vkey(f.kernel) and k not in f.kernels_with_nvidia
    ]
    if not newer:
        return []
    return [
        Finding(
            code="kernel_module_not_built_after_upgrade",
            severity="warning",
            title=f"Kernel {newer[-1]} is installed but has no NVIDIA module: the next boot loses the GPU",
            evidence=[
                f"running kernel {f.kernel} has the NVIDIA module",
                f"no nvidia.ko under /lib/modules/{newer[-1]}",
            ],
            history=[c.describe() for c in _recent(f, "kernel", n=2)],
            explanation="Build the module for the new kernel before rebooting into it.",
            plan=plans.rebuild_module(f, ctx, kernel=newer[-1]),
        )
    ]


def check_nouveau(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if not f.nouveau_loaded:
        return []
    ev = []
    if f.modules_loaded is not None and "nouveau" in f.modules_loaded:
        ev.append(_stated(f, "modules_loaded", "nouveau kernel module is loaded"))
    for d in f.pci_nvidia or []:
        if d.driver == "nouveau":
            ev.append(f"PCI {d.slot}: bound to nouveau")
    if f.kernel_log and f.kernel_log.nouveau_bound:
        ev.extend(_quote("kernel log", ln) for ln in [ln for ln in f.kernel_log.lines if "nouveau" in ln][:2])
    if (f.cmdline is not None and "rd.driver.blacklist=nouveau" in f.cmdline
            and "modprobe.blacklist=nouveau" not in f.cmdline):
            ev.append(
                "kernel command line has rd.driver.blacklist=nouveau (initramfs only) but not "
                "modprobe.blacklist=nouveau"
            )
    if f.nouveau_blacklisted is False:
        ev.append("no `blacklist nouveau` in modprobe.d")
    nvidia_loaded = bool(f.modules_loaded and "nvidia" in f.modules_loaded) or bool(f.loaded_module_version)
    if nvidia_loaded and _driver_works(f):
        severity = "warning"
        title = "nouveau is loaded next to the NVIDIA driver"
        explanation = "Blacklist nouveau so that it cannot take a GPU at boot."
    else:
        severity = "error"
        title = "nouveau holds the GPU, so the NVIDIA module cannot bind"
        explanation = (
            "The open-source nouveau driver bound the GPU first; the NVIDIA module cannot load "
            "while it does. Blacklist nouveau (modprobe.d and the initramfs) and reboot."
        )
    return [
        Finding(
            code="nouveau_conflict",
            severity=severity,  # type: ignore[arg-type]
            title=title,
            evidence=ev,
            explanation=explanation,
            plan=plans.blacklist_nouveau(f, ctx),
        )
    ]


def check_secure_boot(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    ev = []
    h = ctx.hit("module_not_signed")
    if h:
        ev.append(_hit_quote(h))
    if f.kernel_log and f.kernel_log.unsigned_rejected:
        ev.extend(
            [
                _quote("kernel log", ln)
                for ln in f.kernel_log.lines
                if re.search(r"unsigned|Key was rejected|Required key", ln)
            ][:2]
        )
    confirmed = bool(ev)
    if not ev:
        down = f.smi_status == "no_driver" or bool(f.nvml_error and "Driver Not Loaded" in f.nvml_error)
        if not (f.secure_boot and down) or f.module_for_running_kernel is False or (f.dkms and f.dkms.errors):
            return []
        if f.nouveau_loaded or f.smi_status == "mismatch":
            return []
        ev.append(f"nvidia-smi: {f.smi_message}")
    if f.secure_boot:
        ev.append(_stated(f, "secure_boot", "Secure Boot: enabled"))
    return [
        Finding(
            code="secure_boot_blocks_module",
            severity="error",
            confidence="confirmed" if confirmed else "likely",
            title="Secure Boot refuses the NVIDIA kernel module",
            evidence=ev,
            explanation="With Secure Boot on, the kernel loads only modules signed by a trusted key. DKMS signs the "  # noqa: E501
            "module with a Machine Owner Key (MOK) that must be enrolled at the next boot in MokManager; "
            "if that screen was missed (no console), the module stays rejected.",
            plan=plans.secure_boot(f, ctx),
        )
    ]


def check_fabric_manager(ctx: Ctx) -> list[Finding]:
    h = ctx.hit("cuda_system_not_ready")
    if not h:
        return []
    f = ctx.facts
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


# ------------------------------------------------------------------------------------------
# driver vs CUDA


def _driver_cuda_verdict(ctx: Ctx, cuda: str) -> tuple[bool | None, str, str | None]:
    f, kb = ctx.facts, ctx.kb
    if kb is not None and f.driver_version:
        try:
            v = kb.driver_supports_cuda(f.driver_version, cuda)
            return v.ok, v.reason, getattr(v.source, "url", None)
        except Exception:
            pass
    newest = f.cuda_driver_version
    if newest and re.match(r"\d+\.\d+$", cuda) and vkey(cuda)[:1] > vkey(newest)[:1]:
        return False, f"the driver supports CUDA up to {f.cuda_driver_version}", None
    return None, "", None


def check_driver_too_old(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    out: list[Finding] = []
    logs_ev = []
    h = ctx.hit("torch_driver_too_old")
    if h:
        logs_ev.append(_hit_quote(h))
    kh = ctx.kb_hit("cuda_insufficient_driver")
    if kh:
        logs_ev.append(_kb_line(kh, f.error_texts))
    needs = []
    for fw in f.frameworks or []:
        if fw.cuda and not fw.cpu_only and re.match(r"\d+\.\d+$", fw.cuda):
            ok, reason, src = _driver_cuda_verdict(ctx, fw.cuda)
            if ok is False:
                needs.append((fw, reason, src))
    if not needs and not logs_ev:
        return []
    ev = list(logs_ev)
    if f.driver_version:
        ev.append(_stated(f, "driver_version", f"driver: {f.driver_version}"))
    if f.cuda_driver_version:
        ev.append(
            _stated(f, "cuda_driver_version", f"newest CUDA this driver supports: {f.cuda_driver_version}")
        )
    sources = []
    for fw, reason, src in needs:
        ev.append(f"{fw.dist} {fw.version or ''} is built for CUDA {fw.cuda}: {reason}".replace("  ", " "))
        if src:
            sources.append(src)
    for tk in f.toolkits:
        if tk.path == "(stated)" and tk.version:
            ev.append(_stated(f, "cuda_toolkit", f"CUDA toolkit: {tk.version}"))
    out.append(
        Finding(
            code="driver_too_old_for_cuda",
            severity="error",
            title="The NVIDIA driver is too old for the CUDA runtime in use",
            evidence=ev,
            sources=sources,
            explanation="Each CUDA runtime needs a minimum driver (from CUDA 11 on, any driver of the major "
            "family's floor, via minor-version compatibility). Install a framework build for an older "
            "CUDA, or upgrade the driver.",
            plan=plans.driver_too_old(f, ctx, [n[0] for n in needs]),
        )
    )
    return out


def check_toolkit_vs_driver(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if (
        not f.nvcc_version
        or not f.driver_version
        or ctx.hit("torch_driver_too_old")
        or ctx.kb_hit("cuda_insufficient_driver")
    ):
        return []
    ok, reason, src = _driver_cuda_verdict(ctx, f.nvcc_version)
    if ok is not False:
        return []
    return [
        Finding(
            code="driver_too_old_for_cuda",
            severity="warning",
            title=f"CUDA toolkit {f.nvcc_version} is newer than this driver supports",
            evidence=[f"nvcc: release {f.nvcc_version}", f"driver: {f.driver_version}", reason],
            sources=[src] if src else [],
            explanation="Programs compiled with this toolkit will fail with 'CUDA driver version is "
            "insufficient'. Prebuilt framework wheels bring their own runtime and are not affected.",
            plan=plans.upgrade_driver(f, ctx, f.nvcc_version),
        )
    ]


# ------------------------------------------------------------------------------------------
# frameworks


def check_cpu_only(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    out = []
    h = ctx.hit("tf_no_known_devices")
    for fw in f.frameworks or []:
        if fw.name not in ("torch", "tensorflow", "jax") or fw.cpu_only is not True:
            continue
        if not _gpu_expected(f):
            continue
        ev = [
            f"{fw.dist} {fw.version or '?'}: CPU-only build"
            + (
                " (the PyPI package `tensorflow` had no GPU support before 2.1)"
                if fw.name == "tensorflow" and fw.dist.lower() == "tensorflow"
                else ""
            )
        ]
        if fw.source == "conda-meta":
            ev[0] += " (conda build string says cpu)"
        if fw.source == "stated":
            ev[0] += " (stated in the report)"
        cpu_feature = [m for m in f.conda_meta if m.startswith(("cpuonly", "cpu-only"))]
        if cpu_feature:
            ev.append(f"conda-meta: {cpu_feature[0]} pins CPU-only builds")
        gp = f"GPU: {_gpu_names(f)}" if f.gpus else "an NVIDIA GPU is present"
        ev.append(_stated(f, "gpus" if f.gpus else "gpu_present", gp))
        if h and fw.name == "tensorflow":
            ev.append(_hit_quote(h))
        out.append(
            Finding(
                code="framework_cpu_only_build",
                severity="error",
                title=f"{fw.dist} is a CPU-only build on a machine with an NVIDIA GPU",
                evidence=ev,
                explanation="This build has no CUDA code, so it never uses the GPU however the driver "
                "and CUDA are set up.",
                plan=plans.cpu_only(f, ctx, fw),
            )
        )
    return out


def check_cuda_variant(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    out: list[Finding] = []
    h = ctx.hit("cpp_extension_cuda_mismatch")
    if h:
        detected, torch_cuda = h[2].group(1), h[2].group(2)
        ev = [_hit_quote(h)]
        if f.nvcc_version:
            ev.append(f"nvcc: release {f.nvcc_version}")
        out.append(
            Finding(
                code="framework_cuda_variant_mismatch",
                severity="error",
                title=f"torch is built for CUDA {torch_cuda} but the CUDA toolkit in use is {detected}",
                evidence=ev,
                explanation="Building CUDA extensions (torch.utils.cpp_extension) needs a toolkit of "
                "the same major version as torch.version.cuda.",
                plan=plans.torch_for_toolkit(f, ctx, detected),
            )
        )
    h = ctx.hit("cuda_lib_missing")
    if h:
        lib, ver = h[2].group(1), h[2].group(2)
        ev = [_hit_quote(h)]
        ev += [f"CUDA toolkit: {t.version} ({t.path})" for t in f.toolkits if t.version]
        if f.nvcc_version:
            ev.append(f"nvcc: release {f.nvcc_version}")
        out.append(
            Finding(
                code="framework_cuda_variant_mismatch",
                severity="error",
                title=f"The framework needs {lib} (CUDA {ver}), which is not installed",
                evidence=ev,
                explanation=f"The framework build was linked against CUDA {ver} libraries; the CUDA "
                "installed here is another version, so the loader cannot find them.",
                plan=plans.cuda_libs(f, ctx, ver),
            )
        )
    if out:
        return out
    # TensorFlow (< 2.14 pip wheels) uses the system CUDA: compare with the KB's tested build.
    tf = f.framework("tensorflow")
    if tf and tf.version and not tf.cpu_only and ctx.kb is not None and f.toolkits:
        b = _ask_kb(ctx, lambda kb: kb.tensorflow_build(tf.version))
        have = [t.version for t in f.toolkits if t.version]
        if (
            b is not None
            and b.cuda
            and have
            and not any(vkey(h_)[: len(vkey(b.cuda))] == vkey(b.cuda) for h_ in have)
        ):
            wheels = any(k.startswith("nvidia-cuda-runtime") for k in [])
            if not wheels:
                out.append(
                    Finding(
                        code="framework_cuda_variant_mismatch",
                        severity="error",
                        title=f"{tf.dist} {tf.version} is built for CUDA {b.cuda}; this host has CUDA "
                        f"{', '.join(have)}",
                        evidence=[
                            f"{tf.dist} {tf.version}: tested with CUDA {b.cuda}, cuDNN {b.cudnn}",
                            *[_stated(f, "cuda_toolkit", f"CUDA toolkit: {v}") for v in have],
                        ],
                        sources=[b.source.url] if getattr(b, "source", None) else [],
                        explanation="TensorFlow wheels before 2.14 load the system CUDA libraries of the "
                        "exact version they were built with.",
                        plan=plans.cuda_libs(f, ctx, b.cuda),
                    )
                )
    torch = f.framework("torch")
    if torch and torch.cuda and f.nvcc_version and vkey(torch.cuda)[:1] != vkey(f.nvcc_version)[:1]:
        out.append(
            Finding(
                code="framework_cuda_variant_mismatch",
                severity="warning",
                title=f"torch is built for CUDA {torch.cuda}, the toolkit on PATH is {f.nvcc_version}",
                evidence=[f"torch {torch.version}: CUDA {torch.cuda}", f"nvcc: release {f.nvcc_version}"],
                explanation="Running torch is fine (the wheel brings its runtime), but building CUDA "
                "extensions against it will fail.",
                plan=plans.torch_for_toolkit(f, ctx, f.nvcc_version),
            )
        )
    return out


def check_cudnn(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    ev = []
    title = None
    h = ctx.hit("torch_cudnn_incompatible")
    if h:
        ev.append(_hit_quote(h))
        want = ".".join(x.strip() for x in h[2].group(1).split(","))
        got = ".".join(x.strip() for x in h[2].group(2).split(","))
        title = f"torch was built with cuDNN {want} but loads cuDNN {got}"
    h2 = ctx.hit("cudnn_lib_missing")
    kh = ctx.kb_hit("tf_libcudnn_so_8")
    if h2:
        ev.append(_hit_quote(h2))
        title = (
            title or f"cuDNN {h2[2].group(2)} ({h2[2].group(1)}) is not installed where the framework looks"
        )
    elif kh:
        ev.append(_kb_line(kh, f.error_texts))
        title = title or "cuDNN 8 (libcudnn.so.8) is not installed where TensorFlow looks"
    tf = f.framework("tensorflow")
    if not ev and tf and tf.version and not tf.cpu_only and ctx.kb is not None and f.cuda_libs is not None:
        b = _ask_kb(ctx, lambda kb: kb.tensorflow_build(tf.version))
        if b is not None and b.cudnn:
            major = b.cudnn.split(".")[0]
            have = [s for s in f.cuda_libs if s == f"libcudnn.so.{major}"]
            wheel = any(fw for fw in [] if fw)
            if not have and not wheel and vkey(tf.version) < (2, 14):
                ev.append(
                    f"{tf.dist} {tf.version} needs cuDNN {b.cudnn}; ldconfig has no libcudnn.so.{major}"
                )
                title = f"cuDNN {b.cudnn} for {tf.dist} {tf.version} is not installed"
    if not ev:
        return []
    if f.cudnn_versions:
        ev.append(_stated(f, "cudnn", f"cuDNN found: {', '.join(f.cudnn_versions)}"))
    for k, v in (f.os_packages or {}).items():
        if "cudnn" in k:
            ev.append(_stated(f, "os_packages", f"package {k} {v}".replace(" ?", "")))
    return [
        Finding(
            code="cudnn_missing_or_wrong_version",
            severity="error",
            title=title or "cuDNN problem",
            evidence=ev,
            explanation="The framework build needs cuDNN of a specific major (and, for torch, at least "
            "the minor) version, built for the same CUDA major.",
            plan=plans.cudnn(f, ctx),
        )
    ]


def check_ld_library_path(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    h = ctx.hit("torch_cudnn_ld_path")
    conflict = ctx.hit("torch_cudnn_incompatible")
    suspicious = [
        d
        for d in f.ld_library_path or []
        if any("libcudnn" in p for p in f.ld_path_libs.get(d, [])) or re.search(r"cudnn", d, re.I)
    ]
    ev = []
    if h:
        ev.append(_quote(h[1], "Looks like your LD_LIBRARY_PATH contains incompatible version of cudnn"))
    if suspicious:
        ev.append(f"LD_LIBRARY_PATH={':'.join(f.ld_library_path or [])}")
        ev.append(f"cuDNN directory on LD_LIBRARY_PATH: {suspicious[0]}")
    if h or (suspicious and conflict):
        severity = "error"
        if conflict and not h:
            ev.insert(0, _hit_quote(conflict))
    elif suspicious and any(fw.cudnn for fw in f.frameworks or []):
        severity = "warning"  # a framework with its own cuDNN, and another cuDNN on the search path
    else:
        return []
    return [
        Finding(
            code="ld_library_path",
            severity=severity,  # type: ignore[arg-type]
            title="LD_LIBRARY_PATH makes the loader pick an incompatible cuDNN"
            if severity == "error"
            else "LD_LIBRARY_PATH puts another cuDNN before the framework's own",
            evidence=ev,
            explanation="Directories on LD_LIBRARY_PATH are searched before a wheel's own library "
            "directory when the wheel uses DT_RUNPATH, so a system or cluster-module cuDNN wins "
            "over the one the framework was built with.",
            plan=plans.ld_path(f, ctx, suspicious),
        )
    ]


def check_gpu_arch(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    out: list[Finding] = []
    h = ctx.hit("torch_arch_not_compatible")
    kh = ctx.kb_hit("no_kernel_image")
    nv = ctx.hit("nvrtc_invalid_arch")
    ccs = _gpu_cc(ctx)
    if h or kh:
        ev = []
        if h:
            ev.append(_hit_quote(h))
            m = re.search(r"supports CUDA capabilities ([sm_\d ]+)", h[2].string)
            if m:
                ev.append(f"the build's architectures: {m.group(1).strip()}")
        if kh:
            ev.append(_kb_line(kh, f.error_texts))
        ev += _gpu_cc_lines(f, ccs)
        torch = f.framework("torch")
        if torch:
            ev.append(f"torch {torch.version or '?'} (CUDA {torch.cuda or '?'})")
        title = "The installed build has no kernels for this GPU's architecture"
        explanation = (
            "A CUDA binary runs on a GPU only if it carries a cubin of the same major "
            "compute capability (minor ≤ the GPU's) or PTX of a lower capability."
        )
    elif nv:
        ev = [_hit_quote(nv)]
        ev += _gpu_cc_lines(f, ccs)
        for tk in f.toolkits:
            ev.append(_stated(f, "cuda_toolkit", f"CUDA toolkit (NVRTC): {tk.version}"))
        title = "The CUDA toolkit's NVRTC does not know this GPU's architecture"
        explanation = (
            "CuPy compiles kernels at run time with NVRTC from the CUDA toolkit; a "
            "toolkit older than the GPU architecture rejects its -arch value."
        )
    if h or kh or nv:
        out.append(
            Finding(
                code="gpu_arch_unsupported_by_build",
                severity="error",
                title=title,
                evidence=ev,
                explanation=explanation,
                plan=plans.arch(f, ctx, ccs),
            )
        )
        return out
    if ctx.kb is None or not ccs:
        return out
    # torch build vs GPU, from the knowledge base
    torch = f.framework("torch")
    if torch and torch.cuda and torch.version and not torch.cpu_only:
        al = _ask_kb(ctx, lambda kb: kb.torch_arch_list(torch.version.split("+")[0], torch.cuda))
        if al is not None:
            for name, cc in ccs:
                if not ctx.kb.build_runs_on(cc, al.sms, al.ptx):
                    out.append(
                        Finding(
                            code="gpu_arch_unsupported_by_build",
                            severity="error",
                            title=f"torch {torch.version} has no kernels for {name} (sm_{cc.replace('.', '')})",  # noqa: E501
                            evidence=[
                                f"GPU: {name}, compute capability {cc}",
                                f"torch {torch.version} CUDA {torch.cuda}: sm {', '.join(al.sms)}"
                                + (f"; PTX {', '.join(al.ptx)}" if al.ptx else ""),
                            ],
                            sources=[al.source.url] if al.source and al.source.url else [],
                            explanation="This wheel variant was not compiled for the GPU's architecture.",
                            plan=plans.arch(f, ctx, [(name, cc)]),
                        )
                    )
    # CuPy/Chainer compile with the toolkit's NVRTC: the toolkit must know the architecture.
    if any(fw.name in ("cupy", "chainer") for fw in f.frameworks or []):
        for tk in f.toolkits:
            for name, cc in ccs:
                arch = _ask_kb(ctx, lambda kb, cc=cc: kb.gpu_arch(cc))
                first = (arch.first_cuda or {}).get(cc) if arch else None
                if first and tk.version and vkey(tk.version) < vkey(first.split()[0]):
                    out.append(
                        Finding(
                            code="gpu_arch_unsupported_by_build",
                            severity="error",
                            title=f"CUDA {tk.version} predates {name} (sm_{cc.replace('.', '')}, needs CUDA ≥ {first})",  # noqa: E501
                            evidence=[
                                _stated(f, "cuda_toolkit", f"CUDA toolkit: {tk.version}"),
                                _stated(f, "gpus", f"GPU: {name}, compute capability {cc}"),
                            ],
                            explanation="CuPy compiles its kernels with this toolkit's NVRTC, which cannot target an "  # noqa: E501
                            "architecture newer than itself.",
                            plan=plans.arch(f, ctx, [(name, cc)]),
                        )
                    )
    return out


def check_cupy(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    out = []
    pk = f.cupy_packages
    h = ctx.hit("cupy_multiple_packages")
    if len(pk) > 1 or h:
        ev = [f"installed: {', '.join(n + (' ' + v if v else '') for n, v in pk)}"] if pk else []
        if h:
            ev.append(_hit_quote(h))
        out.append(
            Finding(
                code="cupy_package_mismatch",
                severity="error",
                title="Several CuPy packages are installed",
                evidence=ev,
                explanation="All cupy-* wheels write the same `cupy/` package; with more than one "
                "installed the files are a mix of both.",
                plan=plans.cupy_reinstall(f, ctx),
            )
        )
    chainer = f.framework("chainer")
    h2 = ctx.hit("chainer_cupy_util_missing")
    if chainer and pk:
        spec = None
        if chainer.version:
            spec = _ask_kb(ctx, lambda kb: kb.chainer_cupy_specifier(chainer.version))
        bad = []
        for n, v in pk:
            if not v:
                continue
            if spec:
                from packaging.specifiers import InvalidSpecifier, SpecifierSet
                from packaging.version import InvalidVersion, Version

                try:
                    if Version(v) not in SpecifierSet(spec):
                        bad.append((n, v, spec))
                except (InvalidSpecifier, InvalidVersion):
                    pass
            elif (
                chainer.version
                and vkey(v)[:1]
                and vkey(chainer.version)[:1]
                and vkey(v)[0] != vkey(chainer.version)[0]
            ):
                bad.append((n, v, f"CuPy v{vkey(chainer.version)[0]} (same major as Chainer)"))
        if bad or h2:
            ev = [_stated(f, "package:chainer", f"chainer {chainer.version}")]
            ev += [f"{n} {v}: outside {s}" for n, v, s in bad]
            if h2:
                ev.append(_hit_quote(h2))
            out.append(
                Finding(
                    code="cupy_package_mismatch",
                    severity="error",
                    title="The installed CuPy is outside what this Chainer supports",
                    evidence=ev,
                    sources=["https://github.com/chainer/chainer/issues/8601"],
                    explanation="Chainer v7 needs CuPy v7 (>=7.7.0,<8.0.0 for 7.8.1); CuPy v8 removed "
                    "modules Chainer imports, so Chainer reports CUDA as not set up.",
                    plan=plans.cupy_for_chainer(f, ctx, spec),
                )
            )
    # a cupy-cudaXXX for a CUDA the driver cannot run
    for n, v in pk:
        r = _ask_kb(ctx, lambda kb, n=n, v=v: kb.cupy_package_cuda(n, v))
        cuda = r.low if r is not None and hasattr(r, "low") else None
        if cuda and f.driver_version:
            ok, reason, _ = _driver_cuda_verdict(ctx, cuda)
            if ok is False:
                out.append(
                    Finding(
                        code="cupy_package_mismatch",
                        severity="error",
                        title=f"{n} needs CUDA {cuda}, which driver {f.driver_version} cannot run",
                        evidence=[f"{n} {v or ''}".strip(), reason],
                        plan=plans.cupy_reinstall(f, ctx),
                    )
                )
    return out


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
    if f.nvidia_ctk is None and (f.docker is not None or kh):
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


CHECKS: list[Callable[[Ctx], list[Finding]]] = [
    check_no_gpu,
    check_driver_not_installed,
    check_smi_hung,
    check_library_mismatch,
    check_nouveau,
    check_secure_boot,
    check_driver_unreachable,
    check_pending_kernel,
    check_fabric_manager,
    check_driver_too_old,
    check_toolkit_vs_driver,
    check_cpu_only,
    check_cuda_variant,
    check_cudnn,
    check_ld_library_path,
    check_gpu_arch,
    check_cupy,
    check_container_toolkit,
]


def run_checks(ctx: Ctx) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(ctx))
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


__all__ = ["CHECKS", "Ctx", "Framework", "make_ctx", "run_checks"]
