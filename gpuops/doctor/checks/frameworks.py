"""Framework builds: CPU-only wheels, CUDA and cuDNN variants, GPU architectures, CuPy/Chainer."""

from __future__ import annotations

import re

from gpuops.doctor.checks.base import (
    Ctx,
    _ask_kb,
    _driver_cuda_verdict,
    _gpu_cc,
    _gpu_cc_lines,
    _gpu_expected,
    _gpu_names,
    _hit_quote,
    _kb_line,
    _quote,
    _stated,
    vkey,
)
from gpuops.doctor.checks.lazy import plans
from gpuops.doctor.findings import Finding


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
            # TF >= 2.14 loads the CUDA libraries of pip's nvidia-* wheels (tensorflow[and-cuda]),
            # not the system toolkit (TensorFlow pip install guide).
            wheels = any(k.startswith(("nvidia-cuda-runtime", "nvidia-cublas")) for k in f.cuda_wheels)
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
            wheel = any(k.startswith("nvidia-cudnn") for k in f.cuda_wheels)
            if not have and not wheel and vkey(tf.version) < (2, 14):
                ev.append(
                    f"{tf.dist} {tf.version} needs cuDNN {b.cudnn}; ldconfig has no libcudnn.so.{major}"
                )
                title = f"cuDNN {b.cudnn} for {tf.dist} {tf.version} is not installed"
    # TensorFlow says only "Cannot dlopen some GPU libraries"; a cuDNN of another major than its
    # tested build's (tensorflow.org/install/source#gpu) is one library it cannot open.
    covers: list[str] = []
    dlopen = ctx.hit("tf_cannot_dlopen_gpu_libraries", "tf_could_not_load_dynamic_library")
    if not ev and tf and tf.version and f.cudnn_versions and dlopen and ctx.kb is not None:
        b = _ask_kb(ctx, lambda kb: kb.tensorflow_build(tf.version))
        majors = {v.split(".")[0] for v in f.cudnn_versions}
        wheel = any(k.startswith("nvidia-cudnn") for k in f.cuda_wheels)
        if b is not None and b.cudnn and b.cudnn.split(".")[0] not in majors and not wheel:
            ev.append(_hit_quote(dlopen))
            ev.append(f"{tf.dist} {tf.version} is built and tested with cuDNN {b.cudnn}")
            title = (f"{tf.dist} {tf.version} needs cuDNN {b.cudnn.split('.')[0]}; "
                     f"cuDNN {', '.join(sorted(majors))} is installed")
            covers.append("framework_cuda_variant_mismatch")
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
            covers=covers,
            evidence=ev,
            explanation="The framework build needs cuDNN of a specific major (and, for torch, at least "
            "the minor) version, built for the same CUDA major.",
            plan=plans.cudnn(f, ctx),
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


def check_jax(ctx: Ctx) -> list[Finding]:
    """JAX's CUDA plugin checks the CUDA and cuDNN it finds against those it was built with and falls
    back to the CPU ("CUDA backend failed to initialize: Found CUDA version X, but JAX was built
    against version Y"; JAX installation guide, https://docs.jax.dev/en/latest/installation.html)."""
    f = ctx.facts
    lines = [(o, ln) for o, ln in ctx.lines()
             if re.search(r"(Found|found) (CUDA|cuDNN|cuSPARSE|cuBLAS|cuFFT|cuSOLVER) version \d+"
                          r".*but JAX was built", ln)]
    if not lines:
        return []
    jax = f.framework("jax")
    m = re.search(r"built against version (\d+)", lines[0][1])
    built = m.group(1) if m else None
    cuda = f"{int(built) // 1000}" if built and len(built) >= 4 else None
    ev = [_quote(o, ln) for o, ln in lines[:2]]
    if jax:
        ev.append(f"{jax.dist} {jax.version or '?'}" + (f" (CUDA {jax.cuda} plugin)" if jax.cuda else ""))
    return [
        Finding(
            code="framework_cuda_variant_mismatch",
            severity="error",
            title="JAX's CUDA plugin was built for other CUDA libraries than the ones it loads",
            evidence=ev,
            explanation="JAX refuses CUDA or cuDNN libraries older than the ones it was built with and "
            "runs on the CPU instead. Install JAX with its CUDA wheels (`jax[cuda12]`), so that it "
            "brings matching libraries, and keep other CUDA copies off LD_LIBRARY_PATH.",
            plan=plans.jax_cuda(f, ctx, cuda or (jax.cuda if jax else None)),
            sources=["https://docs.jax.dev/en/latest/installation.html"],
        )
    ]
