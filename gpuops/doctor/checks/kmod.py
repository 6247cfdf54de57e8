"""The kernel module: built for the running kernel (DKMS), signed for Secure Boot, not displaced
by nouveau or another driver."""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import (
    Ctx,
    _driver_works,
    _gpu_cc,
    _gpu_cc_lines,
    _hit_quote,
    _quote,
    _recent,
    _stated,
    vkey,
)
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding
from gpuops.doctor.groups import group


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


def check_other_driver_bound(ctx: Ctx) -> list[Finding]:
    """vfio-pci (GPU passthrough), nova_core (the new in-kernel driver) or pci-stub holds the GPU."""
    f = ctx.facts
    drv = f.other_driver
    held = [d for d in f.pci_nvidia or [] if d.driver in ("vfio-pci", "nova_core", "nova-core", "pci-stub")]
    ev = [f"PCI {d.slot}: kernel driver in use: {d.driver}" for d in held]
    drv = drv or (held[0].driver if held else None)
    # nvidia.ko says which driver it found on the device: "NVRM: GPU 0000:01:00.0 is already bound to
    # NovaCore." (and "vfio-pci 0000:01:00.0: ..." lines when vfio claimed it)
    for origin, ln in ctx.lines():
        m = re.search(r"NVRM: GPU (\S+) is already bound to ([\w-]+)", ln)
        if m:
            ev.append(_quote(origin, ln))
            name = m.group(2).lower()
            drv = drv or ("nova_core" if "nova" in name else name)
    if f.vfio_ids_in_cmdline:
        ev.append("kernel command line: vfio-pci.ids= lists an NVIDIA device (10de:)")
        drv = drv or "vfio-pci"
    if f.grub_cmdline and re.search(r"vfio-pci\.ids=[^\s\"]*10de:", f.grub_cmdline):
        ev.append(_quote("/etc/default/grub", f.grub_cmdline.splitlines()[0]))
        drv = drv or "vfio-pci"
    if not drv or not ev:
        return []
    return [
        Finding(
            code="other_driver_bound",
            severity="error",
            title=f"{drv} holds the NVIDIA GPU, so the NVIDIA driver cannot bind to it",
            evidence=ev,
            explanation="Only one kernel driver can own a PCI device. vfio-pci takes a GPU for "
            "passthrough to virtual machines (vfio-pci.ids=), nova_core is the new in-kernel driver; "
            "while either holds the GPU, nvidia.ko finds no device to drive.",
            plan=plans.unbind_other_driver(f, ctx, drv),
            sources=["https://docs.kernel.org/driver-api/vfio.html"],
        )
    ]


def check_module_flavour(ctx: Ctx) -> list[Finding]:
    """The open kernel module supports Turing and newer; Blackwell needs it (NVIDIA driver README,
    "NVIDIA Open GPU Kernel Modules")."""
    from gpuops.doctor.facts_more import OPEN_MODULE_MIN_CC, OPEN_MODULE_REQUIRED_CC

    f = ctx.facts
    ev: list[str] = []
    want = None
    for origin, ln in ctx.lines():
        if re.search(r"not supported by open nvidia\.ko|open kernel modules? (?:is|are) not supported",
                     ln, re.I):
            ev.append(_quote(origin, ln))
            want = "proprietary"
        elif re.search(r"requires use of the NVIDIA open kernel modules", ln, re.I):
            ev.append(_quote(origin, ln))
            want = "open"
    ccs = _gpu_cc(ctx)
    if want is None and f.module_flavour and ccs:
        keys = [(n, tuple(int(x) for x in cc.split("."))) for n, cc in ccs if re.match(r"\d+\.\d+$", cc)]
        if f.module_flavour == "open" and any(k < OPEN_MODULE_MIN_CC for _, k in keys):
            want = "proprietary"
        elif f.module_flavour == "proprietary" and any(k >= OPEN_MODULE_REQUIRED_CC for _, k in keys):
            want = "open"
        if want:
            ev.append(_stated(f, "module_flavour", f"kernel module flavour: {f.module_flavour}"))
    if want is None:
        return []
    ev += _gpu_cc_lines(f, ccs)
    title = ("The open NVIDIA kernel module does not support this GPU (older than Turing)"
             if want == "proprietary" else "This GPU needs the open NVIDIA kernel module")
    return [
        Finding(
            code="kernel_module_flavour_mismatch",
            severity="error",
            title=title,
            evidence=ev,
            explanation="NVIDIA ships two kernel modules of each driver: the open one supports "
            "Turing (compute capability 7.5) and newer GPUs and is required for Blackwell; the "
            "proprietary one supports older GPUs up to Ada/Hopper. The wrong one loads no GPU.",
            plan=plans.module_flavour(f, ctx, want),
            sources=["https://github.com/NVIDIA/open-gpu-kernel-modules"],
        )
    ]


# CUDA opens /dev/nvidiactl, /dev/nvidiaN and /dev/nvidia-uvm; nvidia_uvm provides the last. The
# nodes are made by nvidia-modprobe or udev when the modules load (NVIDIA driver README, "Installing
# the NVIDIA Driver": "Device node creation").
def check_uvm_and_device_nodes(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if f.in_container and not f.dev_nodes:
        return []  # the container checks speak for a container's missing devices
    cuda_fails = [h for h in ctx.resolved if h.code in group("cuda_init") or "cuda_init" in h.also]
    out: list[Finding] = []
    nodes = f.dev_nodes
    nvidia_loaded = bool(f.modules_seen and "nvidia" in f.modules_seen) or bool(f.loaded_module_version)
    uvm_missing = f.uvm_loaded is False or (nodes is not None and nvidia_loaded
                                            and "/dev/nvidia-uvm" not in nodes)
    # modprobe failing on the uvm module: "could not insert 'nvidia_331_uvm': ...",
    # "modprobe: FATAL: Module nvidia-uvm not found", "Failed to create /dev/nvidia-uvm"
    uvm_lines = [_quote(o, ln) for o, ln in ctx.lines()
                 if re.search(r"(could not insert|FATAL: Module|Failed to (?:create|load)|can't open)\s*'?"
                              r"[\w/-]*nvidia[\w-]*uvm", ln, re.I)]
    if uvm_lines:
        uvm_missing = True
    if uvm_missing and (cuda_fails or f.uvm_loaded is False or uvm_lines):
        ev = list(uvm_lines[:2])
        if f.uvm_loaded is False:
            ev.append(_stated(f, "modules_loaded", "nvidia is loaded, nvidia_uvm is not"))
        if nodes is not None and "/dev/nvidia-uvm" not in nodes:
            ev.append(f"/dev/nvidia*: {' '.join(nodes) or '(none)'} (no /dev/nvidia-uvm)")
        ev += [_quote(h.origin, h.line) for h in cuda_fails[:2]]
        if not f.suspend_resume:
            out.append(
                Finding(
                    code="nvidia_uvm_not_loaded",
                    severity="error" if cuda_fails or f.uvm_loaded is False else "warning",
                    title="nvidia_uvm is not loaded: CUDA programs cannot start",
                    evidence=ev,
                    explanation="nvidia-smi needs only nvidia.ko, but CUDA also needs the unified "
                    "memory module nvidia_uvm and its device /dev/nvidia-uvm. It is loaded on demand "
                    "by nvidia-modprobe, which fails when run without privileges or inside a container.",
                    plan=plans.load_uvm(f, ctx),
                )
            )
    if nodes is not None and nvidia_loaded and not any(re.match(r"/dev/nvidia\d+$", n) for n in nodes):
        out.append(
            Finding(
                code="device_nodes_missing",
                severity="error",
                title="The NVIDIA module is loaded but /dev/nvidia0 (or /dev/nvidiactl) is missing",
                evidence=[f"/dev/nvidia*: {' '.join(nodes) or '(none)'}"],
                explanation="Programs reach the GPU through /dev/nvidiactl and /dev/nvidiaN; without "
                "them the driver is loaded but unusable.",
                plan=plans.make_device_nodes(f, ctx),
            )
        )
    return out


# What a failed DKMS build of the NVIDIA module says, and what it means (DKMS(8): "Bad return
# status for module build" means the module's own make failed; the cause is in make.log).
_DKMS_CAUSES: tuple[tuple[str, str], ...] = (
    (r"autoconf\.h: No such file|Missing .* kernel headers|[Kk]ernel headers for kernel .* cannot be found|"
     r"Your kernel headers for kernel .* cannot be found|/build/include/.*No such file",
     "the kernel headers of the running kernel are not installed"),
    (r"unrecognized command[- ]line option|The kernel was built by|You are using:|compiler differs|"
     r"gcc(-\d+)?: (?:error|not found)|cc: not found",
     "the C compiler differs from the one the kernel was built with"),
    (r"implicit declaration of function|incompatible pointer type|has no member named|"
     r"too (?:few|many) arguments to function|undefined!|error: unknown type name",
     "this driver's source does not build against this kernel's API (the kernel is newer than the "
     "driver supports)"),
)


def check_dkms_build(ctx: Ctx) -> list[Finding]:
    """DKMS tried and failed to build the NVIDIA module for a kernel."""
    f = ctx.facts
    if not f.dkms_build_errors:
        return []
    ev = [_quote("dkms", ln) for ln in f.dkms_build_errors[:4]]
    text = "\n".join(f.dkms_build_errors)
    cause = next((why for rx, why in _DKMS_CAUSES if re.search(rx, text)), None)
    if f.kernel:
        ev.append(_stated(f, "kernel", f"running kernel: {f.kernel}"))
    if f.kernels_with_headers is not None and f.kernel and f.kernel not in f.kernels_with_headers:
        ev.append(f"kernel headers for {f.kernel}: not installed (DKMS cannot build without them)")
        cause = cause or "the kernel headers of the running kernel are not installed"
    api = cause is not None and "kernel's API" in cause
    return [
        Finding(
            code="kernel_module_not_built_after_upgrade",
            severity="error",
            title="No NVIDIA kernel module for the running kernel",
            evidence=ev,
            history=[c.describe() for c in _recent(f, "kernel", "driver", n=3)],
            explanation="DKMS rebuilds the NVIDIA module for every new kernel, and this build failed"
            + (f": {cause}." if cause else "; the cause is in DKMS's make.log.")
            + " Until it succeeds the running kernel has no NVIDIA module.",
            plan=plans.upgrade_driver(f, ctx, None) if api else plans.rebuild_module(f, ctx),
            sources=["https://github.com/dell/dkms"],
        )
    ]
