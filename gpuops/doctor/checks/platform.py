"""WSL2: the GPU belongs to the Windows driver. Inside WSL, CUDA uses the libcuda stub that Windows
maps into /usr/lib/wsl/lib; a Linux NVIDIA driver installed inside WSL, another libcuda.so earlier on
the loader path, or a GPU in TCC mode breaks it (NVIDIA's "CUDA on WSL User Guide",
https://docs.nvidia.com/cuda/wsl-user-guide/index.html).
"""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import Ctx, _quote, _stated
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding

SOURCE = "https://docs.nvidia.com/cuda/wsl-user-guide/index.html"


def check_wsl(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    if not f.wsl:
        return []
    out: list[Finding] = []
    wsl_ev = _stated(f, "wsl", f"WSL2 (kernel {f.kernel or '?'})")
    # libnvidia-compute-NNN is the Linux driver's libcuda: inside WSL it shadows Windows' copy
    linux_drv = sorted(p for p in (f.os_packages or {})
                       if re.match(r"(nvidia-driver-\d+|nvidia-dkms-\d+|xserver-xorg-video-nvidia|"
                                   r"nvidia-\d+|libnvidia-compute-\d+)", p))
    if linux_drv or f.loaded_module_version:
        ev = [wsl_ev]
        if linux_drv:
            ev.append(f"Linux driver packages installed inside WSL: {', '.join(linux_drv[:4])}")
        if f.loaded_module_version:
            ev.append(f"an NVIDIA kernel module {f.loaded_module_version} is loaded inside WSL")
        out.append(
            Finding(
                code="wsl_linux_driver_installed",
                severity="error",
                title="A Linux NVIDIA driver is installed inside WSL2",
                evidence=ev,
                explanation="Under WSL2 the Windows driver is the GPU driver; NVIDIA's guide says not "
                "to install any Linux display driver inside WSL, since its libraries shadow the ones "
                "Windows provides in /usr/lib/wsl/lib.",
                plan=plans.wsl_remove_linux_driver(f, ctx),
                sources=[SOURCE],
            )
        )
    shadow = [p for p in f.libcuda_paths if not p.startswith("/usr/lib/wsl/")]
    if f.libcuda_not_symlink or (shadow and f.wsl_libcuda):
        ev = [wsl_ev]
        if f.libcuda_not_symlink:
            ev.append("ldconfig: /usr/lib/wsl/lib/libcuda.so.1 is not a symbolic link")
        if shadow:
            ev.append(f"libcuda.so.1 outside /usr/lib/wsl/lib: {', '.join(shadow[:3])}")
        for origin, ln in ctx.lines():
            if "is not a symbolic link" in ln and "libcuda" in ln:
                ev.append(_quote(origin, ln))
                break
        out.append(
            Finding(
                code="wsl_libcuda_shadowed",
                severity="error" if shadow else "warning",
                title="WSL's libcuda is shadowed by another libcuda.so" if shadow
                else "ldconfig warns that WSL's libcuda.so.1 is not a symbolic link",
                evidence=list(dict.fromkeys(ev)),
                explanation="CUDA under WSL must load /usr/lib/wsl/lib/libcuda.so.1. A copy from a "
                "Linux driver or toolkit package earlier in the loader's cache is loaded instead and "
                "finds no GPU. The 'not a symbolic link' warning alone is harmless (Windows maps the "
                "files as copies); it matters when another libcuda wins.",
                plan=plans.wsl_libcuda(f, ctx),
                sources=[SOURCE],
            )
        )
    # GPUs that Windows has but WSL cannot open: nvidia-smi inside WSL finds no device handle.
    # NVIDIA's WSL guide: GPUs in TCC mode are not available to WSL.
    no_handle = [_quote(o, ln) for o, ln in ctx.lines() if o == "nvidia-smi"
                 and re.search(r"Unable to determine the device handle|No devices were found", ln)]
    if f.tcc_mode or (no_handle and not out):
        ev = [wsl_ev, "nvidia-smi: driver model TCC"] if f.tcc_mode else [wsl_ev, *no_handle[:3]]
        out.append(
            Finding(
                code="gpu_in_tcc_mode",
                severity="error",
                title="The GPU is in TCC mode, which WSL2 cannot use" if f.tcc_mode
                else "WSL2 cannot open the GPUs Windows has: TCC mode is the likely cause",
                confidence="confirmed" if f.tcc_mode else "likely",
                evidence=ev,
                explanation="WSL2 reaches the GPU through the Windows display driver model (WDDM); a "
                "GPU switched to TCC is invisible to it.",
                plan=plans.tcc_mode(f, ctx),
                sources=[SOURCE],
            )
        )
    return out


__all__ = ["check_wsl"]
