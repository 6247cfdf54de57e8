"""Build ``Facts`` and a check context in a line, so that every check has unit tests without a
capture file. Values left out stay unknown (``None``), exactly as in a capture that lacks them."""

from __future__ import annotations

from typing import Any

from gpuops.doctor.capture import LogRecord, PciDevice
from gpuops.doctor.checks import Ctx, make_ctx, run_checks
from gpuops.doctor.evidence import Evidence
from gpuops.doctor.facts import Facts, Gpu
from gpuops.doctor.findings import Finding


def gpu(index: int = 0, name: str = "NVIDIA GeForce RTX 3090", cc: str | None = "8.6", **kw: Any) -> Gpu:
    return Gpu(index=index, name=name, cc=cc, **kw)


def pci(slot: str = "0000:01:00.0", driver: str | None = "nvidia", device: str = "2204") -> PciDevice:
    return PciDevice(slot=slot, vendor="0x10de", device=device, pci_class="0x030000", driver=driver)


def facts(*, logs: dict[str, str] | None = None, tools: dict[str, str] | None = None, **kw: Any) -> Facts:
    """``Facts(**kw)``; ``logs`` are error texts by origin, ``tools`` failing GPU tools' output by
    command key (nvidia-smi, dkms-status, ...)."""
    f = Facts(**kw)
    for origin, text in (logs or {}).items():
        f.logs.append(LogRecord(origin=origin, text=text))
        f.evidence.append(Evidence(origin=origin, text=text, area="log"))
    for key, text in (tools or {}).items():
        from gpuops.doctor.evidence import GPU_TOOLS

        area = "log" if key == "kernel log" else GPU_TOOLS.get(key, "driver")
        f.evidence.append(Evidence(origin=key, text=text, area=area))
    return f


def ctx(f: Facts, kb: Any | None = None) -> Ctx:
    return make_ctx(f, kb)


def diagnose_facts(f: Facts, kb: Any | None = None) -> list[Finding]:
    return run_checks(make_ctx(f, kb))


def codes(findings: list[Finding], severity: str | None = "error") -> set[str]:
    return {x.code for x in findings if severity is None or x.severity == severity}
