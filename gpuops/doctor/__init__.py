"""``gpuops doctor``: what broke in the NVIDIA driver / CUDA / cuDNN / framework stack, why, what
changed, and how to fix it.

    capture (collect.py, or a file)  ->  facts (facts.py)  ->  checks (checks.py)  ->  Report

Public API::

    collect(...) -> Capture                 # probe this host (never raises for a missing tool)
    load_capture(path) / save_capture(capture, path)
    diagnose(capture, env_dir=None) -> Report
    environment_fingerprint(capture=None) -> dict[str, str]   (gpuops.doctor.fingerprint)

The library never prints; ``gpuops.cli.commands.doctor`` renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuops.doctor.capture import Capture, load_capture, save_capture
from gpuops.doctor.findings import Finding, RepairStep, Report

__all__ = [
    "Capture",
    "Finding",
    "RepairStep",
    "Report",
    "collect",
    "diagnose",
    "load_capture",
    "load_kb_safe",
    "save_capture",
]


def collect(**kwargs: Any) -> Capture:
    from gpuops.doctor.probes import collect as _collect

    return _collect(**kwargs)


def load_kb_safe() -> Any | None:
    """The knowledge base, or None when it cannot be loaded (doctor still runs its other checks)."""
    try:
        from gpuops.knowledge import load_kb

        return load_kb()
    except Exception:
        return None


class LazyKB:
    """Loads the knowledge base on first use: a host with no GPU and no CUDA framework never needs
    it, and loading it costs more than the whole diagnosis. A KB that fails to load behaves as
    absent: every query raises, and the checks treat that as "unknown"."""

    def __init__(self) -> None:
        self._kb: Any | None = None
        self._tried = False

    def __getattr__(self, name: str) -> Any:
        if not self._tried:
            self._tried = True
            self._kb = load_kb_safe()
        if self._kb is None:
            raise AttributeError(f"knowledge base unavailable ({name})")
        return getattr(self._kb, name)


def _summary(f: Any) -> dict[str, str]:
    def s(v: object, fact: str | None = None) -> str:
        if (v is None or v == "") and fact and fact in f.unreadable:
            return "unreadable (the tool's answer is not a valid value; not used)"
        return "could not collect" if v is None or v == "" else str(v)

    gpus = ", ".join(
        f"{g.name or '?'}" + (f" (sm_{g.cc.replace('.', '')})" if g.cc else "") for g in f.gpus or []
    )
    fws = ", ".join(
        f"{fw.dist} {fw.version or '?'}"
        + (f" [CUDA {fw.cuda}]" if fw.cuda else (" [CPU]" if fw.cpu_only else ""))
        for fw in f.frameworks or []
    )
    return {
        "os": s(f.os_name),
        "kernel": s(f.kernel, "kernel"),
        "gpus": gpus or ("none" if f.gpu_present is False else s(None)),
        "driver": s(f.driver_version, "driver_version"),
        "kernel module loaded": s(f.loaded_module_version, "loaded_module_version"),
        "CUDA (driver supports)": s(f.cuda_driver_version),
        "CUDA toolkit": s(", ".join(f"{t.version} ({t.path})" for t in f.toolkits) or f.nvcc_version),
        "cuDNN": s(", ".join(f.cudnn_versions)),
        "frameworks": fws or ("none" if f.frameworks == [] else s(None)),
        "docker": s(
            None
            if f.docker is None
            else (
                "reachable, runtimes: " + " ".join(f.docker.runtimes)
                if f.docker.reachable
                else f"not reachable ({f.docker.error})"
            )
        ),
        "secure boot": s(None if f.secure_boot is None else ("enabled" if f.secure_boot else "disabled")),
        "in container": s(None if f.in_container is None else ("yes" if f.in_container else "no")),
    }


def diagnose(
    capture: Capture, *, env_dir: str | Path | None = None, kb: Any | None = None, root: str = ""
) -> Report:
    """Facts, checks, environments: the report for ``capture``. Never raises on odd captures."""
    from gpuops.doctor.checks import make_ctx, run_checks
    from gpuops.doctor.envcheck import env_verdicts, load_envs
    from gpuops.doctor.facts import facts_from_capture

    kb = kb if kb is not None else LazyKB()
    facts = facts_from_capture(capture)
    ctx = make_ctx(facts, kb, root=root)
    findings = run_checks(ctx)
    envs, note = load_envs(Path(env_dir) if env_dir else None)
    report = Report(
        capture_kind=capture.kind,
        source=capture.source,
        summary=_summary(facts),
        findings=findings,
        timeline=[c.describe() for c in facts.history[-20:]],
        environments=env_verdicts(envs, facts, kb),
        environments_note=note,
    )
    return report
