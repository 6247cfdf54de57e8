"""An environment checked against the knowledge base: does this combination exist and fit together?

``check_env(spec)`` returns an ``EnvCheck`` whose ``problems`` are either

- ``broken``: the knowledge base says the combination is wrong (no such wheel, a CUDA/cuDNN the
  framework was not built for, a CuPy outside Chainer's specifier, a GPU with no kernels in the
  build). Always refused.
- ``untested``: the knowledge base has no row for it. Refused unless ``allow_untested``; then a warning.

Each problem names its knowledge-base source, so the refusal says where the rule comes from.
``require_valid(spec, allow_untested)`` raises ``IncompatibleEnvError`` (exit 2) on refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from gpuops.envs import EnvSpec
from gpuops.errors import UsageError


@dataclass
class Problem:
    kind: Literal["broken", "untested"]
    message: str
    source: str | None = None  # "key (url)"

    def render(self) -> str:
        return self.message + (f" (source: {self.source})" if self.source else "")


@dataclass
class EnvCheck:
    env: str
    problems: list[Problem] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # driver floor, kb version, cuDNN, ...

    @property
    def broken(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "broken"]

    @property
    def untested(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "untested"]


class IncompatibleEnvError(UsageError):
    """The environment's combination is refused (known broken, or untested without --allow-untested)."""


def _src(ref: Any) -> str | None:
    """A ``SourceRef`` (or a list of them, or a key) as one short string."""
    if ref is None:
        return None
    if isinstance(ref, list | tuple):
        parts = [s for s in (_src(r) for r in ref) if s]
        return "; ".join(parts) or None
    key = getattr(ref, "key", None)
    url = getattr(ref, "url", None)
    if key is None:
        return str(ref)
    if isinstance(url, list | tuple):
        url = url[0] if url else None
    return f"{key} ({url})" if url else str(key)


def _ksrc(kb: Any, key: str) -> str | None:
    """The KB's source for ``key``, or None when this KB does not know the key."""
    try:
        return _src(kb.source(key))
    except (KeyError, AttributeError):
        return None


def _mm(v: str | None) -> str | None:
    return None if v is None else ".".join(str(v).split(".")[:2])


def _same_prefix(short: str, full: str) -> bool:
    """"9.3" matches "9.3.0"; "9.10.2.21" matches "9.10.2.21"; "8.0" does not match "8.9"."""
    a, b = short.split("."), full.split(".")
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _in_range(v: str, lo: str | None, hi: str | None) -> bool:
    try:
        ver = Version(v)
        if lo and ver < Version(lo):
            return False
        if hi:
            hi_v = hi.replace(".x", ".999")
            return ver <= Version(hi_v)
        return True
    except InvalidVersion:
        return False


def _python_range_ok(python: str, text: str | None) -> bool | None:
    """``"3.10-3.13"`` style ranges from the TF table; None when the text does not parse."""
    if not text or "-" not in text:
        return None
    lo, hi = (t.strip() for t in text.split(",")[-1].split("-", 1))
    try:
        return Version(lo) <= Version(python) <= Version(hi)
    except InvalidVersion:
        return None


def _check_gpu_archs(spec: EnvSpec, kb: Any, chk: EnvCheck) -> None:
    if not spec.gpu_archs or spec.cuda is None:
        return
    if spec.framework == "pytorch":
        archs = kb.torch_arch_list(spec.framework_version, spec.cuda)
        if archs is None:
            chk.problems.append(Problem(
                "untested", f"no GPU architecture list known for torch {spec.framework_version}+"
                f"{spec.cuda_variant}, so GPU targets {spec.gpu_archs} cannot be checked"))
            return
        chk.facts["arch_list"] = " ".join(archs.sms) + (f" +PTX {' '.join(archs.ptx)}" if archs.ptx else "")
        for cc in spec.gpu_archs:
            if not kb.build_runs_on(cc, list(archs.sms), list(archs.ptx)):
                arch = kb.gpu_arch(cc)
                name = f" ({arch.name})" if arch is not None else ""
                chk.problems.append(Problem(
                    "broken",
                    f"torch {spec.framework_version}+{spec.cuda_variant} has no kernels for "
                    f"compute capability "
                    f"{cc}{name}: its build carries sm {', '.join(archs.sms)}"
                    + (f" and PTX {', '.join(archs.ptx)}" if archs.ptx else "")
                    + " (\"no kernel image is available for execution on the device\")",
                    _src(getattr(archs, "source", None))))
        return
    # TensorFlow / Chainer: the CUDA toolkit itself bounds the architectures (CUDA 13 drops < 7.5).
    major = int(spec.cuda.split(".")[0])
    for cc in spec.gpu_archs:
        if major >= 13 and Version(cc) < Version("7.5"):
            chk.problems.append(Problem(
                "broken", f"CUDA {spec.cuda} has no support for compute capability {cc} "
                "(Maxwell/Pascal/Volta were removed in CUDA 13.0)", _ksrc(kb, "nvidia_cuda_rn_13_2_2")))


def _check_pytorch(spec: EnvSpec, kb: Any, chk: EnvCheck) -> None:
    v = spec.framework_version
    if spec.cuda is None:
        return
    variants = kb.torch_variants(v)
    if not variants:
        chk.problems.append(Problem("untested", f"the knowledge base has no wheel variants for torch {v}"))
        return
    if spec.cuda_variant not in variants:
        chk.problems.append(Problem(
            "broken", f"torch {v} is not published for {spec.cuda_variant} (variants: {', '.join(variants)})",
            _src(kb.torch_variants_source(v)) if hasattr(kb, "torch_variants_source")
            else _ksrc(kb, "pytorch_release_md")))
        return
    cudnn = kb.torch_cudnn(v, spec.cuda)
    if cudnn is None:
        chk.problems.append(Problem("untested", f"the cuDNN of torch {v}+{spec.cuda_variant} is not known"))
    else:
        chk.facts["framework_cudnn"] = cudnn
        if spec.cudnn and not _same_prefix(spec.cudnn, cudnn):
            chk.problems.append(Problem(
                "broken", f"torch {v}+{spec.cuda_variant} is built with cuDNN {cudnn}, not {spec.cudnn}",
                _ksrc(kb, "pytorch_release_md")))


def _check_tensorflow(spec: EnvSpec, kb: Any, chk: EnvCheck) -> None:
    v = spec.framework_version
    build = kb.tensorflow_build(v)
    if build is None:
        chk.problems.append(Problem(
            "untested", f"TensorFlow {v} has no tested build configuration in the KB"))
        return
    src = _src(getattr(build, "source", None))
    if spec.cuda is not None and _mm(spec.cuda) != _mm(build.cuda):
        chk.problems.append(Problem(
            "broken", f"TensorFlow {v} is built and tested with CUDA {build.cuda} / cuDNN {build.cudnn}, "
            f"not CUDA {spec.cuda}", src))
    if spec.cuda is not None and spec.cudnn and not _same_prefix(spec.cudnn, str(build.cudnn)):
        chk.problems.append(Problem(
            "broken", f"TensorFlow {v} is built and tested with cuDNN {build.cudnn}, not {spec.cudnn}", src))
    ok = _python_range_ok(spec.python, getattr(build, "python", None))
    if ok is False:
        chk.problems.append(Problem(
            "broken", f"TensorFlow {v} is published for Python {build.python}, not {spec.python}", src))


def _check_chainer(spec: EnvSpec, kb: Any, chk: EnvCheck) -> None:
    v = spec.framework_version
    specifier = kb.chainer_cupy_specifier(v)
    if not spec.cupy:
        if spec.cuda is not None:
            chk.problems.append(Problem(
                "broken", "a Chainer GPU environment needs `cupy:` (e.g. cupy-cuda110==7.8.0)"))
        return
    pkg, _, cupy_version = spec.cupy.partition("==")
    pkg = pkg.strip()
    cupy_version = cupy_version.strip()
    if not cupy_version:
        chk.problems.append(Problem("broken", f"`cupy: {spec.cupy}` must pin an exact version (pkg==X.Y.Z)"))
        return
    if specifier is None:
        chk.problems.append(Problem("untested", f"Chainer {v}'s CuPy requirement is not in the KB"))
    else:
        try:
            fits = Version(cupy_version) in SpecifierSet(specifier)
        except (InvalidSpecifier, InvalidVersion):
            fits = None
        if fits is False:
            chk.problems.append(Problem(
                "broken", f"Chainer {v} requires CuPy {specifier}; {pkg} {cupy_version} is outside it",
                _ksrc(kb, "chainer_repo_v7_8_1")))
    rng = kb.cupy_package_cuda(pkg, cupy_version)
    if rng is None:
        chk.problems.append(Problem(
            "untested", f"the KB does not know which CUDA {pkg} {cupy_version} targets"))
    elif spec.cuda is not None:
        lo, hi = getattr(rng, "cuda_min", None), getattr(rng, "cuda_max", None)
        fits = rng.contains(spec.cuda) if hasattr(rng, "contains") else _in_range(spec.cuda, lo, hi)
        if not fits:
            chk.problems.append(Problem(
                "broken", f"{pkg} {cupy_version} is built for CUDA {lo}..{hi}, not {spec.cuda}",
                _src(getattr(rng, "source", None))))
    if spec.cuda is not None and spec.cudnn:
        ok = kb.cudnn_supports_cuda(spec.cudnn, spec.cuda)
        if ok is False:
            chk.problems.append(Problem("broken", f"cuDNN {spec.cudnn} has no build for CUDA {spec.cuda}"))
        elif ok is None:
            chk.problems.append(Problem(
                "untested", f"the KB has no cuDNN {spec.cudnn} row for CUDA {spec.cuda}"))


_CHECKS = {"pytorch": _check_pytorch, "tensorflow": _check_tensorflow, "chainer": _check_chainer}


def check_env(spec: EnvSpec, kb: Any | None = None) -> EnvCheck:
    """Every problem the knowledge base finds in ``spec`` (does not raise)."""
    if kb is None:
        from gpuops.knowledge import load_kb

        kb = load_kb()
    chk = EnvCheck(env=spec.name)
    chk.facts["kb_version"] = str(getattr(kb, "kb_version", "unknown"))
    if spec.cuda is not None:
        floor = kb.min_driver_for_cuda(spec.cuda)
        if floor is not None:
            chk.facts["driver_min"] = str(floor.minor_compat_min or floor.full_feature_min)
            chk.facts["driver_full_feature_min"] = str(floor.full_feature_min)
    _CHECKS[spec.framework](spec, kb, chk)
    _check_gpu_archs(spec, kb, chk)
    return chk


def require_valid(spec: EnvSpec, allow_untested: bool = False, kb: Any | None = None) -> EnvCheck:
    """``check_env``, raising ``IncompatibleEnvError`` when the combination is refused."""
    chk = check_env(spec, kb)
    refused = chk.broken + ([] if allow_untested else chk.untested)
    if refused:
        lines = "; ".join(p.render() for p in refused)
        hint = ("this combination is untested; --allow-untested builds it anyway"
                if not chk.broken else "fix the environment file (versions must match the knowledge base)")
        raise IncompatibleEnvError(f"environment {spec.name!r} refused: {lines}", hint=hint)
    return chk
