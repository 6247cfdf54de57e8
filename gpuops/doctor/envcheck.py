"""Can this host run each pinned environment (``environments/*.yaml``)?

For each environment: is the driver new enough for its CUDA, does its build carry kernels for the
GPU's architecture, is a container runtime with GPU support present. Answers are ``True``,
``False`` or ``None`` (cannot tell from what was collected), each with its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gpuops.doctor.facts import Facts
from gpuops.doctor.findings import EnvVerdict


@dataclass(frozen=True)
class EnvSummary:
    """What doctor needs of a pinned environment (``gpuops.envs.EnvSpec`` has the rest)."""

    name: str
    framework: str
    framework_version: str
    cuda: str | None


_KEYS = tuple(f.name for f in fields(EnvSummary))


def _validated_rows(env_dir: Path) -> list[dict[str, Any]]:
    from gpuops.envs import load_environments

    return [{k: getattr(e, k) for k in _KEYS} for e in load_environments(env_dir)]


def load_envs(env_dir: Path | None) -> tuple[list[EnvSummary], str | None]:
    """The environments in ``env_dir``, or ([], why not).

    Specs are validated in full (``gpuops.envs``: PyYAML and pydantic) the first time a set of files
    is seen; what doctor needs of them is then kept in the user's cache under the files' digest, so
    that later runs import neither. An invalid spec is never cached: it is reported every run."""
    if env_dir is None:
        return [], None
    d = Path(env_dir)
    if not d.is_dir():
        return [], f"no environments ({env_dir} not found)"
    try:
        from gpuops.cache import cached_json

        parts = {p.name: p.read_bytes() for p in sorted(d.glob("*.yaml"))}
        # The schema the files were validated against is part of the key: a gpuops whose EnvSpec
        # changed validates them afresh.
        parts["\0schema"] = (Path(__file__).parents[1] / "envs" / "__init__.py").read_bytes()
        rows = cached_json(
            "environments",
            parts,
            lambda: _validated_rows(d),
            valid=lambda rows: isinstance(rows, list)
            and all(isinstance(r, dict) and set(r) == set(_KEYS) for r in rows),
        )
        return [EnvSummary(**r) for r in rows], None
    except ImportError as e:  # the envs package is missing or broken: report, do not fail doctor
        return [], f"environments not available ({type(e).__name__})"
    except Exception as e:
        return [], f"environments could not be read: {e}"


def _ccs(facts: Facts, kb: Any | None) -> list[str]:
    """Each distinct compute capability of the GPUs (looked up by name where the probe gave none)."""
    from gpuops.doctor.facts import gpu_ccs

    return list(dict.fromkeys(cc for _, cc in gpu_ccs(facts, kb)))


def _verdict(e: EnvSummary, cuda: str | None, ok: bool | None, reasons: list[str]) -> EnvVerdict:
    return EnvVerdict(
        name=e.name,
        framework=e.framework,
        framework_version=e.framework_version,
        cuda=cuda,
        runnable=ok,
        reasons=reasons,
    )


def env_verdicts(envs: list[EnvSummary], facts: Facts, kb: Any | None) -> list[EnvVerdict]:
    out = []
    docker_ok = facts.docker is not None and facts.docker.reachable
    gpu_runtime = (
        docker_ok
        and ("nvidia" in facts.docker.runtimes or bool(facts.cdi_specs) or facts.nvidia_ctk is not None)
        if facts.docker
        else False
    )
    ccs = _ccs(facts, kb)
    for e in envs:
        reasons: list[str] = []
        ok: bool | None = True
        cuda = e.cuda
        if facts.docker is None:
            ok, reasons = None, ["Docker not probed"]
        elif not docker_ok:
            ok = False
            reasons.append(
                "no reachable Docker daemon" + (f" ({facts.docker.error})" if facts.docker.error else "")
            )
        if cuda is None:
            if ok:
                reasons.append("CPU build: runs without a GPU")
            out.append(_verdict(e, None, ok, reasons))
            continue
        if facts.gpu_present is False or (facts.gpu_count == 0):
            ok = False
            reasons.append("no NVIDIA GPU")
        elif not facts.driver_version:
            ok = False if ok is not None else None
            reasons.append("no working NVIDIA driver")
        elif kb is not None:
            try:
                v = kb.driver_supports_cuda(facts.driver_version, cuda)
                if v.ok is False:
                    ok = False
                    reasons.append(f"driver too old for CUDA {cuda}: {v.reason}")
                elif v.ok is None and ok:
                    ok = None
                    reasons.append(f"driver support for CUDA {cuda} unknown")
                else:
                    reasons.append(f"driver {facts.driver_version} runs CUDA {cuda}")
            except Exception:
                pass
        if ccs and kb is not None and e.framework == "pytorch":
            try:
                al = kb.torch_arch_list(e.framework_version, cuda)
            except Exception:
                al = None
            if al is not None:
                for cc in ccs:
                    if kb.build_runs_on(cc, al.sms, al.ptx):
                        reasons.append(
                            f"sm_{cc.replace('.', '')} covered by the cu{cuda.replace('.', '')} build"
                        )
                    else:
                        ok = False
                        reasons.append(
                            f"sm_{cc.replace('.', '')} not in the build's architectures ({', '.join(al.sms)})"
                        )
        if docker_ok and not gpu_runtime and facts.gpu_present:
            ok = False
            reasons.append("Docker has no NVIDIA runtime (container toolkit missing)")
        out.append(_verdict(e, cuda, ok, reasons))
    return out
