"""CUDA library plans: toolkit libraries, cuDNN, the loader path, conda environments that shadow them.

cuDNN packages: ``libcudnn<major>-cuda-<cuda major>`` on apt and ``libcudnn<major>-cuda-<cuda major>``
on dnf from NVIDIA's repository (https://docs.nvidia.com/deeplearning/cudnn/installation/latest/linux.html);
CUDA toolkits ``cuda-toolkit-<major>-<minor>`` (NVIDIA CUDA installation guide, "Package Manager
Installation", https://docs.nvidia.com/cuda/archive/12.2.1/cuda-installation-guide-linux/).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import distro, install, manual, safe_path, unreadable

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts


def cuda_libs(f: Facts, ctx: Ctx, cuda: str) -> list[RepairStep]:
    m = re.match(r"(\d{1,2})(?:\.(\d{1,2}))?", grammar.version(cuda) or "")
    if not m:
        return [unreadable("the CUDA version")]
    mm = f"{m.group(1)}.{m.group(2) or '0'}"
    d = distro(f)
    g = "cuda_libs"
    first = (
        install(
            d,
            [f"cuda-toolkit-{mm.replace('.', '-')}"],
            f"install the CUDA {mm} libraries next to the current toolkit (from NVIDIA's CUDA repository; "
            f"then put /usr/local/cuda-{mm}/lib64 on the loader path)",
            group=g,
            alternative=1,
        )
        if d.family in ("apt", "dnf", "yum", "zypper")
        else manual(
            f"install the CUDA {mm} toolkit libraries", "the build needs them", group=g, alternative=1
        )
    )
    return [
        first,
        manual(
            "or install a framework release built for the CUDA already installed "
            "(gpuops compat --tensorflow VERSION)",
            "no second toolkit needed",
            group=g,
            alternative=2,
        ),
    ]


def cudnn(f: Facts, ctx: Ctx) -> list[RepairStep]:
    torch = f.framework("torch")
    steps = []
    if torch is not None or f.ld_library_path:
        steps.append(
            manual(
                "unset LD_LIBRARY_PATH, or drop the directory with the other cuDNN from it",
                "torch wheels bring the cuDNN they were built with; an older one found first on "
                "the loader path replaces it",
            )
        )
    tf = f.framework("tensorflow")
    if torch is None or tf:
        fw = tf or torch
        want = grammar.version(fw.cudnn) if fw and fw.cudnn else None
        cuda = grammar.version(fw.cuda) if fw and fw.cuda else None
        d = distro(f)
        if want and cuda and d.family in ("apt", "dnf", "yum"):
            steps.append(
                install(
                    d,
                    [f"libcudnn{want.split('.')[0]}-cuda-{cuda.split('.')[0]}"],
                    "the cuDNN major version the framework was built with, for its CUDA major",
                )
            )
        else:
            steps.append(
                manual(
                    "install the cuDNN major version the framework was built with, for its CUDA major "
                    "(https://docs.nvidia.com/deeplearning/cudnn/installation/latest/linux.html)",
                    "the build cannot load the cuDNN found here",
                )
            )
    return steps


def ld_path(f: Facts, ctx: Ctx, bad: list[str]) -> list[RepairStep]:
    keep = [d for d in f.ld_library_path or [] if d not in bad]
    if any(safe_path(d) is None for d in keep):
        return [unreadable("LD_LIBRARY_PATH"), manual("unset LD_LIBRARY_PATH", "then no directory shadows")]
    return [
        manual(
            f"export LD_LIBRARY_PATH={':'.join(keep)}" if keep else "unset LD_LIBRARY_PATH",
            "drop the directories with another cuDNN (and the line or `module load` that adds them)",
        )
    ]


def conda_shadow(f: Facts, ctx: Ctx, pkgs: list[str]) -> list[RepairStep]:
    names = [p for p in pkgs if grammar.package_name(p)]
    if not names:
        return [unreadable("the conda package names")]
    return [
        RepairStep(
            argv=["conda", "remove", "-y", "--force", *names],
            needs_root=False,
            why="these conda packages put other CUDA/cuDNN libraries first on the loader path; "
            "pip wheels of the frameworks bring their own",
            resolves="conda_cuda_shadowing",
        ),
    ]
