"""Framework plans: torch, TensorFlow, JAX and CuPy builds that fit this driver, GPU and toolkit.

Everything goes through pip of the inspected interpreter (``[python, -m, pip, ...]``, no root).
Wheel names: torch CUDA variants from https://download.pytorch.org/whl/<variant>; CuPy's wheels are
``cupy-cuda11x`` / ``cupy-cuda12x`` / ``cupy-cuda13x`` for CUDA 11.2+ / 12 / 13 and
``cupy-cuda<major><minor>`` before 11.2 (https://docs.cupy.dev/en/stable/install.html); JAX:
``jax[cuda12]`` / ``jax[cuda13]`` (https://docs.jax.dev/en/latest/installation.html); TensorFlow:
``tensorflow[and-cuda]`` (https://www.tensorflow.org/install/pip).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import manual, pip_step, plain, unreadable

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts, Framework

TORCH_INDEX = "https://download.pytorch.org/whl"
_VARIANT = re.compile(r"cu\d{2,3}|cpu|rocm\d+(\.\d+)*")


def _ccs(f: Facts, ctx: Ctx) -> list[tuple[str, str]]:
    from gpuops.doctor.facts import gpu_ccs

    return gpu_ccs(f, ctx.kb)


def best_torch_variant(f: Facts, ctx: Ctx, torch_version: str | None) -> str | None:
    """The newest CUDA variant of ``torch_version`` that this driver runs, covering the GPUs' archs."""
    kb = ctx.kb
    ver = grammar.version((torch_version or "").split("+")[0])
    if kb is None or not ver:
        return None
    try:
        variants = kb.torch_variants(ver)
    except Exception:
        return None
    ccs = [cc for _, cc in _ccs(f, ctx)]
    best = None
    for v in variants:
        m = re.match(r"cu(\d+)(\d)$", v)
        if not m:
            continue
        cuda = f"{m.group(1)}.{m.group(2)}"
        if f.driver_version:
            try:
                if kb.driver_supports_cuda(f.driver_version, cuda).ok is False:
                    continue
            except Exception:
                pass
        if ccs:
            try:
                al = kb.torch_arch_list(ver, cuda)
            except Exception:
                al = None
            if al is not None and not all(kb.build_runs_on(cc, al.sms, al.ptx) for cc in ccs):
                continue
        best = v  # variants are listed oldest CUDA first
    return best if best and _VARIANT.fullmatch(best) else None


def torch_reinstall(f: Facts, fw: Framework | None, variant: str, why: str, **kw: Any) -> RepairStep:
    ver = grammar.version((fw.version or "").split("+")[0]) if fw and fw.version else None
    pin = f"torch=={ver}" if ver else "torch"
    return pip_step(
        f, ["install", "--force-reinstall", pin, "--index-url", f"{TORCH_INDEX}/{variant}"], why, **kw
    )


def _variant_for(cuda: str | None) -> str | None:
    m = re.match(r"(\d{1,2})\.(\d)(?:\.\d+)?$", grammar.version(cuda) or "") if cuda else None
    return f"cu{m.group(1)}{m.group(2)}" if m else None


def cpu_only(f: Facts, ctx: Ctx, fw: Framework) -> list[RepairStep]:
    if fw.name == "torch":
        if fw.source == "conda-meta" or fw.dist.startswith("pytorch"):
            feature = next(
                (m.split("-1.0")[0] for m in f.conda_meta if m.startswith(("cpuonly", "cpu-only"))), "cpuonly"
            )
            feature = grammar.package_name(feature) or "cpuonly"
            ver = grammar.version(fw.version) if fw.version else None
            dist = grammar.package_name(fw.dist) or "pytorch"
            return [
                RepairStep(
                    argv=["conda", "remove", "-y", feature],
                    needs_root=False,
                    why="the cpuonly feature package keeps the solver on CPU builds",
                ),
                RepairStep(
                    argv=[
                        "conda",
                        "install",
                        "-y",
                        f"{dist}={ver}" if ver else dist,
                        "pytorch-cuda",
                        "-c",
                        "pytorch",
                        "-c",
                        "nvidia",
                    ],
                    needs_root=False,
                    why="install the CUDA build (check the build string: not *cpu*)",
                ),
            ]
        v = best_torch_variant(f, ctx, fw.version)
        if v is None:
            return [
                manual(
                    "reinstall torch from the CUDA index that https://pytorch.org/get-started/locally/ gives "
                    "for this driver",
                    "no CUDA variant of this torch version could be matched to the driver here",
                )
            ]
        return [torch_reinstall(f, fw, v, "install the CUDA build of the same torch version")]
    if fw.name == "tensorflow":
        ver = grammar.version(fw.version) if fw.version else None
        if ver and ver.startswith(("0.", "1.", "2.0")):
            spec = f"tensorflow-gpu=={ver}"
        elif ver:
            spec = f"tensorflow[and-cuda]=={ver}"
        else:
            spec = "tensorflow[and-cuda]"
        return [
            pip_step(f, ["uninstall", "-y", "tensorflow-cpu", "tensorflow"], "remove the CPU-only package"),
            pip_step(f, ["install", spec], "the GPU build of the same version"),
        ]
    return jax_cuda(f, ctx, None)


def torch_for_toolkit(f: Facts, ctx: Ctx, cuda: str) -> list[RepairStep]:
    variant = _variant_for(cuda)
    torch = f.framework("torch")
    steps: list[RepairStep] = []
    g = "torch_for_toolkit"
    if variant:
        steps.append(
            torch_reinstall(
                f,
                torch,
                variant,
                f"a torch build for CUDA {grammar.version(cuda)}, the toolkit that compiles extensions here "
                "(check the index lists this variant)",
                group=g,
                alternative=1,
            )
        )
    tc = grammar.cuda_version(torch.cuda) if torch and torch.cuda else None
    steps.append(
        manual(
            f"or point CUDA_HOME and PATH at a CUDA {tc} toolkit (export CUDA_HOME=/usr/local/cuda-{tc})"
            if tc
            else "or point CUDA_HOME and PATH at a toolkit of torch's own CUDA version (python -c "
            "'import torch; print(torch.version.cuda)')",
            "extensions must be compiled with the CUDA torch was built with",
            group=g if variant else None,
            alternative=2 if variant else None,
        )
    )
    return steps


def arch(f: Facts, ctx: Ctx, ccs: list[tuple[str, str]]) -> list[RepairStep]:
    torch = f.framework("torch")
    if torch and torch.version and any(fw.name == "torch" for fw in f.frameworks or []):
        v = best_torch_variant(f, ctx, torch.version)
        if v is not None:
            return [
                torch_reinstall(
                    f,
                    torch,
                    v,
                    "a wheel variant whose architecture list covers this GPU (gpuops compat --gpu)",
                )
            ]
    names = (
        ", ".join(
            f"{plain(n) or 'this GPU'} (compute capability {c})" for n, c in ccs if grammar.cuda_version(c)
        )
        or "this GPU"
    )
    return [
        manual(
            f"install a build for {names}: rebuild on a CUDA toolkit that knows it, or a newer wheel "
            "(gpuops compat --gpu NAME lists the first CUDA that supports the architecture)",
            "the installed build has no kernels for this GPU",
        )
    ]


def _cupy_wheel(cuda: str | None) -> str | None:
    c = grammar.cuda_version(cuda) or (grammar.version(cuda) if cuda else None)
    m = re.match(r"(\d+)\.(\d+)", c or "")
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    if major >= 12 or (major == 11 and minor >= 2):
        return f"cupy-cuda{major}x"
    return f"cupy-cuda{major}{minor}"


def _cuda_guess(f: Facts) -> str | None:
    return (
        f.nvcc_version or next((tk.version for tk in f.toolkits if tk.version), None) or f.cuda_driver_version
    )


def cupy_for_cuda(f: Facts, ctx: Ctx, cuda: str | None) -> list[RepairStep]:
    """The CuPy wheel of this CUDA; every other CuPy package removed first (they share cupy/)."""
    wheel = _cupy_wheel(cuda)
    if wheel is None and cuda is not None:
        return [unreadable("the CUDA version CuPy should use")]
    if wheel is None:
        names = sorted({n for n, _ in f.cupy_packages if grammar.package_name(n)})
        steps = [
            pip_step(f, ["uninstall", "-y", *names], "CuPy packages share one cupy/ tree: remove every one")
        ]
        return (steps if names else []) + [
            manual(
                "install the one CuPy package for your CUDA major: cupy-cuda12x for CUDA 12, "
                "cupy-cuda11x for "
                "11.2 to 11.8, cupy-cuda13x for 13 (nvidia-smi shows the driver's CUDA)",
                "which CUDA this environment uses was not found",
                resolves="cupy_package_mismatch",
            )
        ]
    others = [n for n, _ in f.cupy_packages if grammar.package_name(n) and n != wheel]
    steps = []
    if others or any(n == wheel for n, _ in f.cupy_packages):
        steps.append(
            pip_step(
                f,
                ["uninstall", "-y", *sorted({*others, wheel} if others else {wheel})],
                "CuPy packages share one cupy/ tree: remove every one of them",
            )
        )
    steps.append(
        pip_step(
            f,
            ["install", wheel],
            f"the CuPy wheel built for CUDA {grammar.version(cuda) or wheel}",
            resolves="cupy_package_mismatch",
        )
    )
    return steps


def cupy_reinstall(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return cupy_for_cuda(f, ctx, _cuda_guess(f))


def cupy_for_chainer(f: Facts, ctx: Ctx, spec: str | None) -> list[RepairStep]:
    names = sorted({n for n, _ in f.cupy_packages if grammar.package_name(n)}) or ["cupy"]
    wheel = _cupy_wheel(_cuda_guess(f))
    spec = spec if spec and re.fullmatch(r"[<>=!~,.0-9 ]{1,40}", spec) else ">=7,<8"
    steps = [pip_step(f, ["uninstall", "-y", *names], "remove the CuPy Chainer cannot use")]
    if wheel and not wheel.endswith("x"):
        steps.append(
            pip_step(
                f,
                ["install", f"{wheel}{spec.replace(' ', '')}"],
                "the CuPy release Chainer supports, for this CUDA",
            )
        )
    else:
        steps.append(
            manual(
                f"Chainer needs CuPy {spec}, whose wheels exist for CUDA 8.0 to 11.0 only: use a CUDA of "
                "that range (cupy-cudaNN, e.g. cupy-cuda101) or move off Chainer",
                "no CuPy wheel of that release exists for the CUDA found here",
            )
        )
    return steps


def jax_cuda(f: Facts, ctx: Ctx, cuda: str | None) -> list[RepairStep]:
    m = re.match(r"(\d+)", grammar.version(cuda) or "") if cuda else None
    major = int(m.group(1)) if m else 12
    if major not in (12, 13):
        return [
            manual(
                f"JAX publishes CUDA wheels for CUDA 12 and 13, not {grammar.version(cuda) or 'this one'}: "
                "move to one of them",
                "no jax[cudaNN] extra for this CUDA",
            )
        ]
    return [pip_step(f, ["install", "--upgrade", f"jax[cuda{major}]"], f"JAX with its CUDA {major} plugin")]


def tf_and_cuda(f: Facts, ctx: Ctx, version: str | None) -> list[RepairStep]:
    ver = grammar.version(version) if version else None
    if version and ver is None:
        return [unreadable("the TensorFlow version")]
    spec = f"tensorflow[and-cuda]=={ver}" if ver else "tensorflow[and-cuda]"
    return [
        pip_step(f, ["install", spec], "TensorFlow with the CUDA libraries it was built with (pip wheels)")
    ]
