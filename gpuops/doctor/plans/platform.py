"""WSL2 plans. Under WSL2 the Windows driver provides the GPU: libcuda comes from /usr/lib/wsl/lib and
no Linux display driver is to be installed inside WSL (NVIDIA CUDA on WSL user guide,
https://docs.nvidia.com/cuda/wsl-user-guide/index.html). /usr/lib/wsl/lib is never touched.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import distro, manual, remove, root_path
from gpuops.doctor.plans.driver import driver_packages

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts

WSL_LIB = "/usr/lib/wsl/lib"
# Library directories a shadowing libcuda may sit in (and the only ones a plan deletes from).
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/compat",
)
_LIBCUDA = re.compile(r"libcuda\.so(\.\d+)*")


def wsl_remove_linux_driver(f: Facts, ctx: Ctx) -> list[RepairStep]:
    d = distro(f)
    pkgs = [p for p in driver_packages(f) if not p.startswith("nvidia-kernel-source")]
    if pkgs:
        return [
            remove(
                d,
                pkgs,
                "a Linux driver inside WSL2 shadows the Windows driver's libraries",
                resolves="wsl_linux_driver_installed",
            )
        ]
    return [
        manual(
            "remove the Linux NVIDIA driver installed inside WSL (the .run installer: "
            "nvidia-uninstall; packages: your package manager)",
            "WSL2 uses the Windows driver; a Linux one inside WSL shadows it",
            argv=["nvidia-uninstall"],
        )
    ]


def shadowing_libcuda(f: Facts) -> list[str]:
    """Copies of libcuda.so* outside /usr/lib/wsl/lib, in known library directories, from ldconfig."""
    out = []
    for name, paths in (f.cuda_libs or {}).items():
        if not name.startswith("libcuda.so"):
            continue
        for p in paths:
            norm = os.path.normpath(p)
            if norm != p or grammar.path_inside(norm, WSL_LIB):
                continue
            if _LIBCUDA.fullmatch(os.path.basename(norm)) and os.path.dirname(norm) in LIB_DIRS:
                out.append(norm)
    return sorted(set(out))


def wsl_libcuda(f: Facts, ctx: Ctx) -> list[RepairStep]:
    copies = shadowing_libcuda(f)
    steps: list[RepairStep] = []
    if copies:
        steps.append(
            RepairStep(
                argv=["rm", "-f", "--", *(root_path(ctx, c) for c in copies)],
                why="these libcuda copies come before WSL's own in the loader's search",
            )
        )
        steps.append(
            RepairStep(argv=["ldconfig"], why="refresh the loader cache", resolves="wsl_libcuda_shadowed")
        )
    else:
        steps.append(
            manual(
                "find the libcuda.so that is not in /usr/lib/wsl/lib (ldconfig -p | grep libcuda) "
                "and remove the package or installer that put it there",
                "WSL's libcuda must be the one the loader finds",
            )
        )
    return steps


def tcc_mode(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return [
        manual(
            "on Windows, as administrator: nvidia-smi -g 0 -dm 0 (switch the GPU to WDDM), "
            "then reboot Windows",
            "WSL2 can only use GPUs in WDDM mode, not TCC",
        ),
    ]
