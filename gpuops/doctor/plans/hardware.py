"""GPU configuration and hardware plans: MIG, persistence mode, hardware faults (manual only).

MIG: ``nvidia-smi -i N -mig 0`` disables it; ``nvidia-smi mig -cgi PROFILES -C`` creates GPU and compute
instances (NVIDIA MIG user guide, https://docs.nvidia.com/datacenter/tesla/mig-user-guide/).
Persistence: the ``nvidia-persistenced`` daemon, or the legacy ``nvidia-smi -pm 1``
(https://docs.nvidia.com/deploy/driver-persistence/index.html).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import manual, no_placeholders, on_host

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts


def mig(f: Facts, ctx: Ctx, gpu_indexes: list[int]) -> list[RepairStep]:
    """Either disable MIG on these GPUs, or create instances on them (which profiles is a choice)."""
    g = "mig"
    code = "mig_enabled_no_instances"
    idx = sorted({i for i in gpu_indexes if isinstance(i, int) and 0 <= i < 1024})
    if not idx:
        return [manual("no GPU index to act on; see nvidia-smi -L", "MIG mode is per GPU")]
    steps: list[RepairStep] = [
        RepairStep(
            argv=["nvidia-smi", "-i", str(i), "-mig", "0"],
            why=f"turn MIG off on GPU {i}",
            group=g,
            alternative=1,
        )
        for i in idx
    ]
    steps.append(
        RepairStep(
            argv=["nvidia-smi", "--gpu-reset", "-i", ",".join(map(str, idx))],
            why="a GPU reset applies the mode change (GPU idle only; else reboot)",
            verify=["nvidia-smi", "-L"],
            resolves=code,
            group=g,
            alternative=1,
        )
    )
    steps.append(
        manual(
            "or keep MIG and create instances: nvidia-smi mig -lgip lists the profiles, then "
            f"nvidia-smi mig -i {','.join(map(str, idx))} -cgi PROFILE[,PROFILE...] -C",
            "which slices to create is your choice: gpuops does not guess it",
            group=g,
            alternative=2,
        )
    )
    return on_host(f, steps)


def persistence(f: Facts, ctx: Ctx) -> list[RepairStep]:
    g = "persistence"
    code = "persistence_mode_off"
    return on_host(
        f,
        [
            RepairStep(
                argv=["systemctl", "enable", "--now", "nvidia-persistenced"],
                why="the persistence daemon keeps the driver initialised between jobs",
                verify=["systemctl", "is-active", "nvidia-persistenced"],
                resolves=code,
                group=g,
                alternative=1,
            ),
            RepairStep(
                argv=["nvidia-smi", "-pm", "1"],
                why="the legacy switch (lost at reboot; NVIDIA recommends the daemon)",
                resolves=code,
                group=g,
                alternative=2,
            ),
        ],
    )


def hardware_fault(f: Facts, ctx: Ctx, what: str) -> list[RepairStep]:
    """Hardware, not software: no software repair, only what to collect and whom to ask."""
    what = no_placeholders(" ".join((what or "a hardware fault").split()))[:200]
    return [
        manual(
            "as root, run nvidia-bug-report.sh and keep nvidia-bug-report.log.gz",
            f"{what}: this is hardware, not software; the report is what the vendor asks for",
            argv=["nvidia-bug-report.sh"],
        ),
        manual(
            "check cooling (fans, airflow, dust), the power supply and its PCIe power cables, "
            "and reseat the card",
            "thermal, power and seating faults show up as these errors",
        ),
        manual(
            "if it comes back: contact the GPU or system vendor for an RMA, with the bug report",
            "no driver or package change repairs a hardware fault",
        ),
    ]
