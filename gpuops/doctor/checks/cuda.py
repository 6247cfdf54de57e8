"""Driver against CUDA: framework and toolkit runtimes the driver is too old for; the loader's search path."""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import (
    Ctx,
    _driver_cuda_verdict,
    _hit_quote,
    _kb_line,
    _quote,
    _stated,
)
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding


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


# A CUDA library a wheel bundles (torch's and JAX's nvidia-* wheels) that fails to resolve its
# versioned symbols, or to load, while LD_LIBRARY_PATH lists another CUDA: the loader took the
# other copy (ld.so(8): LD_LIBRARY_PATH comes before the wheel's RUNPATH).
_SYMBOL = re.compile(r"undefined symbol: \S+, version (lib\w+\.so\.\d+)|undefined symbol: __nvJitLink|"
                     r"Unable to load (cuSPARSE|cuBLAS|cuDNN|cuFFT|cuSOLVER|CUPTI|NCCL)", re.I)
_LD_SEARCH = re.compile(r"=>\s*(/\S+/lib(?:nvJitLink|cudart|cublas|cublasLt|cusparse|cudnn)\S*)|"
                        r"trying file=(/\S+/lib(?:nvJitLink|cudart|cublas|cusparse|cudnn)\S*)")


def check_ld_library_path_cuda(ctx: Ctx) -> list[Finding]:
    f = ctx.facts
    cuda_dirs = [d for d in f.ld_library_path or [] if re.search(r"cuda|hpc_sdk|math_libs|nvidia", d, re.I)]
    lines = [(o, ln) for o, ln in ctx.lines() if _SYMBOL.search(ln)]
    found = [(o, ln) for o, ln in ctx.lines() if _LD_SEARCH.search(ln)]
    # the loader's own trace names the directories it searched "(LD_LIBRARY_PATH)"
    for _, ln in ctx.lines():
        m = re.search(r"search path=(\S+)\s+\(LD_LIBRARY_PATH\)", ln)
        if m:
            cuda_dirs += [d for d in m.group(1).split(":") if d and re.search(r"cuda|hpc_sdk|math_libs", d)]
    if not lines or not cuda_dirs:
        return []
    ev = [_quote(o, ln) for o, ln in lines[:2]]
    ev.append(f"LD_LIBRARY_PATH has another CUDA: {', '.join(dict.fromkeys(cuda_dirs[:3]))}")
    ev += [_quote(o, ln) for o, ln in found[:1]]
    return [
        Finding(
            code="ld_library_path",
            severity="error",
            title="LD_LIBRARY_PATH makes a framework's CUDA libraries load another CUDA's copies",
            evidence=ev,
            explanation="pip's nvidia-* wheels bring CUDA libraries that must be loaded together; a "
            "CUDA toolkit or HPC SDK directory on LD_LIBRARY_PATH is searched first, so one library "
            "(often libnvJitLink) comes from another release and its versioned symbols are missing.",
            plan=plans.ld_path(f, ctx, list(dict.fromkeys(cuda_dirs))),
            covers=["framework_cpu_only_build", "framework_cuda_variant_mismatch"],
        )
    ]


def check_conda_shadowing(ctx: Ctx) -> list[Finding]:
    """A conda environment's cudatoolkit/cuDNN loaded instead of the system's or the wheel's.

    conda puts its own CUDA runtime and cuDNN in ``$CONDA_PREFIX/lib``; when that directory is on
    LD_LIBRARY_PATH, every process, also a pip-installed framework outside conda, loads conda's
    libraries first (ld.so(8): LD_LIBRARY_PATH is searched before the cache)."""
    f = ctx.facts
    if not f.conda_cuda_packages:
        return []
    clash = [h for h in ctx.resolved if h.code in ("cudnn_missing_or_wrong_version",
                                                   "framework_cuda_variant_mismatch", "conda_cuda_shadowing")]
    if not (f.conda_lib_on_ld_path or any(h.code == "conda_cuda_shadowing" for h in clash)):
        return []
    if not clash:
        return []
    ev = [f"conda packages: {', '.join(f.conda_cuda_packages[:4])}"]
    if f.conda_lib_on_ld_path:
        ev.append(f"LD_LIBRARY_PATH includes $CONDA_PREFIX/lib ({f.env.get('CONDA_PREFIX', '?')}/lib)")
    ev += [_quote(h.origin, h.line) for h in clash[:2]]
    return [
        Finding(
            code="conda_cuda_shadowing",
            severity="error",
            title="A conda environment's CUDA libraries shadow the ones the framework was built with",
            evidence=ev,
            explanation="conda's cudatoolkit and cudnn packages put their libraries in "
            "$CONDA_PREFIX/lib. With that directory on LD_LIBRARY_PATH they are loaded before the "
            "system's or a wheel's own copies, and a framework built for another version fails.",
            plan=plans.conda_shadow(f, ctx, f.conda_cuda_packages),
        )
    ]
