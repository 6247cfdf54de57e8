"""What a driver, a GPU or a framework build fits with: the data behind ``gpuops compat``.

Each ``*_report`` function takes the user's text, raises ``UsageError`` for input it cannot read or
does not know (unknown GPU, unparseable version), and returns a pydantic model; the CLI renders it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from gpuops.errors import UsageError
from gpuops.knowledge.kb import KnowledgeBase, _driver_key, _torch_version
from gpuops.knowledge.models import (
    Arch,
    ArchList,
    ChainerInfo,
    CudaRange,
    CudnnCC,
    DriverFloor,
    SourceRef,
    TFBuild,
    TorchVariantFit,
    Verdict,
)
from gpuops.knowledge.versions import is_version, parse_cuda, series, version_key


class FamilyFit(BaseModel):
    family: str
    floor: str
    ok: bool
    newest_full_feature: str | None = None
    source: SourceRef


class TorchDriverFit(BaseModel):
    torch: str
    fits: list[str]
    too_new: list[str]
    verdicts: dict[str, Verdict]


class TFDriverFit(BaseModel):
    version: str
    cuda: str
    cudnn: str
    verdict: Verdict


class CupyDriverFit(BaseModel):
    package: str
    cuda_min: str
    cuda_max: str
    in_chainer_spec: bool
    verdict: Verdict


class DriverReport(BaseModel):
    driver: str
    newest_cuda: str | None
    newest_cuda_label: str | None
    newest_cuda_source: SourceRef | None
    families: list[FamilyFit]
    torch: list[TorchDriverFit]
    tensorflow: list[TFDriverFit]
    chainer_version: str | None
    chainer_cupy_specifier: str | None
    cupy: list[CupyDriverFit]
    torch_source: SourceRef | None = None
    tensorflow_source: SourceRef | None = None


class TorchSeriesFit(BaseModel):
    torch: str
    with_kernels: list[str]
    without_kernels: list[str]
    unknown: list[str]
    fits: list[TorchVariantFit]


class GpuReport(BaseModel):
    query: str
    name: str | None
    cc: str
    arch: Arch | None
    gpu_source: SourceRef | None
    last_cuda: str | None
    removed_in_cuda: str | None
    cudnn: CudnnCC
    torch: list[TorchSeriesFit]
    recommended_torch: str | None = Field(None, description="newest torch release + variant with kernels")


class TorchBuildReport(BaseModel):
    variant: str
    cuda: str
    channel: str
    cudnn: str
    nccl: str | None
    note: str | None
    archs: ArchList | None
    driver_floor: DriverFloor | None


class TorchReport(BaseModel):
    query: str
    torch: str
    series: str
    variant: str | None
    python: str | None
    cpu_only: bool = False
    variants: list[str]
    planned: bool = False
    builds: list[TorchBuildReport]
    source: SourceRef | None


class TFReport(BaseModel):
    query: str
    linux: TFBuild | None
    windows: TFBuild | None
    driver_floor: DriverFloor | None
    pip_driver_linux: str | None
    cudnn_major: str
    cuda_13: str
    source: SourceRef | None


class ChainerReport(BaseModel):
    query: str
    chainer: ChainerInfo
    in_spec_packages: list[CudaRange]
    out_of_spec_packages: list[CudaRange]


# ------------------------------------------------------------------------------------------------
def driver_report(kb: KnowledgeBase, driver: str, chainer_version: str = "7.8.1") -> DriverReport:
    """What a Linux driver runs: newest CUDA at full features, each family by minor-version
    compatibility, and which torch / TensorFlow / CuPy builds it fits."""
    _driver_key(driver)  # UsageError if not a driver version
    newest = kb.newest_toolkit_for_driver(driver)
    dkey = _driver_key(driver)
    families = []
    for f in kb.minor_compat_families():
        fam_newest = None
        for cuda in reversed(kb.toolkits()):
            if cuda.split(".")[0] == f["family"]:
                floor = kb.min_driver_for_cuda(cuda)
                if floor and dkey >= _driver_key(floor.full_feature_min):
                    fam_newest = cuda
                    break
        families.append(
            FamilyFit(
                family=f["family"] + ".x",
                floor=f["floor"],
                ok=dkey >= _driver_key(f["floor"]),
                newest_full_feature=fam_newest,
                source=f["source"],
            )
        )

    torch_fits = []
    for t in kb.torch_releases():
        verdicts = {b.variant: kb.driver_supports_cuda(driver, b.cuda) for b in kb.torch_builds(t)}
        torch_fits.append(
            TorchDriverFit(
                torch=t,
                fits=[v for v, vd in verdicts.items() if vd.ok],
                too_new=[v for v, vd in verdicts.items() if vd.ok is False],
                verdicts=verdicts,
            )
        )

    tf_fits = [
        TFDriverFit(
            version=b.version, cuda=b.cuda, cudnn=b.cudnn, verdict=kb.driver_supports_cuda(driver, b.cuda)
        )
        for b in kb.tensorflow_builds("linux")
    ]

    info = kb.chainer(chainer_version)
    cupy_fits = []
    in_spec_pkgs = {r.package for r in _chainer_packages(kb, info)[0]} if info else set()
    for pkg in kb.cupy_packages():
        rng = kb.cupy_package_cuda(pkg)
        if rng is None:
            continue
        cupy_fits.append(
            CupyDriverFit(
                package=pkg,
                cuda_min=rng.cuda_min,
                cuda_max=rng.cuda_max,
                in_chainer_spec=pkg in in_spec_pkgs,
                verdict=kb.driver_supports_cuda(driver, rng.cuda_min),
            )
        )

    return DriverReport(
        driver=driver,
        newest_cuda=newest[0] if newest else None,
        newest_cuda_label=newest[1] if newest else None,
        newest_cuda_source=newest[2] if newest else None,
        families=families,
        torch=torch_fits,
        tensorflow=tf_fits,
        chainer_version=info.version if info else None,
        chainer_cupy_specifier=info.cupy_specifier if info else None,
        cupy=cupy_fits,
        torch_source=next((b.source for t in kb.torch_releases()[:1] for b in kb.torch_builds(t)), None),
        tensorflow_source=next((b.source for b in kb.tensorflow_builds("linux")[:1]), None),
    )


def gpu_report(kb: KnowledgeBase, gpu: str) -> GpuReport:
    """A GPU by name or compute capability: its architecture, last CUDA / cuDNN, torch variants with
    kernels for it per torch release."""
    match = kb.gpu_lookup(gpu)
    if match is None:
        raise UsageError(
            f"unknown GPU {gpu!r}",
            hint="give a compute capability instead (e.g. --gpu 8.6 or --gpu sm_86)",
        )
    cc = match.cc
    arch = kb.gpu_arch(cc)
    per_series = []
    by_torch: dict[str, list[TorchVariantFit]] = {}
    for f in kb.torch_variants_for_gpu(cc):
        by_torch.setdefault(f.torch, []).append(f)
    recommended = None
    for t, fits in by_torch.items():
        per_series.append(
            TorchSeriesFit(
                torch=t,
                with_kernels=[f.variant for f in fits if f.runs],
                without_kernels=[f.variant for f in fits if f.runs is False],
                unknown=[f.variant for f in fits if f.runs is None],
                fits=fits,
            )
        )
        if recommended is None:
            ok = [f for f in fits if f.runs]
            if ok:
                best = max(ok, key=lambda f: version_key(f.cuda))
                recommended = f"torch {t} {best.variant}"
    return GpuReport(
        query=gpu,
        name=match.name,
        cc=cc,
        arch=arch,
        gpu_source=match.source,
        last_cuda=arch.last_cuda if arch else None,
        removed_in_cuda=arch.removed_in if arch else None,
        cudnn=kb.cudnn_for_cc(cc),
        torch=per_series,
        recommended_torch=recommended,
    )


def torch_report(kb: KnowledgeBase, torch: str, platform: str = "linux_x86_64") -> TorchReport:
    """A torch release or wheel ('2.13.0', '2.13.0+cu130'): its CUDA builds, cuDNN, archs, driver floors."""
    base, local = _torch_version(torch)
    variants = kb.torch_variants(base)
    builds = kb.torch_builds(base)
    if not variants and not builds:
        raise UsageError(
            f"torch {base} is not in the knowledge base",
            hint=f"known releases: {', '.join(kb.torch_releases())}",
        )
    cpu_only = local is not None and local.lower() == "cpu"
    variant = None
    if local and not cpu_only:
        try:
            variant = "cu" + parse_cuda(local).replace(".", "")
        except UsageError:
            raise UsageError(f"not a torch build tag: +{local} (expected e.g. +cu126 or +cpu)") from None
        if variants and variant not in variants and variant not in {b.variant for b in builds}:
            raise UsageError(
                f"torch {base} has no {variant} build", hint=f"its variants: {', '.join(variants)}"
            )
    out = []
    by_variant = {b.variant: b for b in builds}
    for v in variants or list(by_variant):
        if cpu_only or (variant and v != variant):
            continue
        b = by_variant.get(v)
        cuda = b.cuda if b else parse_cuda(v)
        out.append(
            TorchBuildReport(
                variant=v,
                cuda=cuda,
                channel=b.channel if b else "unknown",
                cudnn=b.cudnn if b else "unknown",
                nccl=b.nccl if b else None,
                note=b.note if b else None,
                archs=kb.torch_arch_list(base, cuda, platform),
                driver_floor=kb.min_driver_for_cuda(cuda),
            )
        )
    return TorchReport(
        query=torch,
        torch=base,
        series=series(base),
        variant=variant,
        python=builds[0].python if builds else None,
        cpu_only=cpu_only,
        variants=variants,
        planned=kb.torch_planned(base),
        builds=out,
        source=builds[0].source if builds else kb.torch_variants_source(base),
    )


def tensorflow_report(kb: KnowledgeBase, version: str) -> TFReport:
    if not is_version(version):
        raise UsageError(f"not a TensorFlow version: {version!r} (expected e.g. 2.17 or 2.17.0)")
    linux = kb.tensorflow_build(version, "linux")
    windows = kb.tensorflow_build(version, "windows")
    if linux is None and windows is None:
        known = ", ".join(sorted({series(b.version) for b in kb.tensorflow_builds()}, key=version_key)[-6:])
        raise UsageError(f"TensorFlow {version} is not in the knowledge base", hint=f"newest known: {known}")
    main = linux or windows
    assert main is not None
    pip = kb.tensorflow_pip_requirements()
    cuda13 = kb.tensorflow_cuda_13_note()
    return TFReport(
        query=version,
        linux=linux,
        windows=windows,
        driver_floor=kb.min_driver_for_cuda(main.cuda),
        pip_driver_linux=pip.get("driver_linux"),
        cudnn_major=main.cudnn.split(".")[0],
        cuda_13=cuda13,
        source=main.source,
    )


def _chainer_packages(kb: KnowledgeBase, info: ChainerInfo) -> tuple[list[CudaRange], list[CudaRange]]:
    """CuPy wheels inside Chainer's CuPy specifier (their CuPy release satisfies it) and outside it."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(info.cupy_specifier)
    inside: list[CudaRange] = []
    outside: list[CudaRange] = []
    rows = kb.cupy_rows()
    in_rows = [r for r in rows if any(spec.contains(v) for v in _row_versions(r))]
    in_names = {p for r in in_rows for p in r["packages"]}
    for pkg in kb.cupy_packages():
        if pkg in in_names:
            rng = kb.cupy_package_cuda(
                pkg, _row_versions(in_rows[-1])[0] if pkg in in_rows[-1]["packages"] else None
            )
            if rng is not None:
                inside.append(rng)
        else:
            rng = kb.cupy_package_cuda(pkg)
            if rng is not None:
                outside.append(rng)
    return inside, outside


def _row_versions(row: dict) -> list[str]:
    """The CuPy versions a documented row names: the label's version ('v7.8.0') and the span start."""
    out = []
    label = str(row["label"]).lstrip("v").split()[0]
    if is_version(label) and not label.endswith("x"):
        out.append(label)
    out.append(row["from"])
    return out


def chainer_report(kb: KnowledgeBase, version: str) -> ChainerReport:
    if not is_version(version):
        raise UsageError(f"not a Chainer version: {version!r} (expected e.g. 7.8.1)")
    info = kb.chainer(version)
    if info is None:
        raise UsageError(f"Chainer {version} is not in the knowledge base", hint="known: 7.8.1")
    inside, outside = _chainer_packages(kb, info)
    return ChainerReport(query=version, chainer=info, in_spec_packages=inside, out_of_spec_packages=outside)
