"""The environment fingerprint: a flat ``dict[str, str]`` that tags every tracked run.

Two runs are comparable when their fingerprints agree on the parts that matter (GPU, driver,
framework build). Values are strings; a fact that could not be collected is ``"unknown"``.

It is built from the same facts that ``gpuops doctor`` uses, from a *quick* capture (no
``nvidia-smi`` text, no history, no Docker): NVML when the driver is there, otherwise the files
under ``/proc``. It never imports torch (the version comes from the package metadata and from
``torch/version.py`` read as text), and it takes well under 0.3 s.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuops.doctor.capture import Capture

UNKNOWN = "unknown"

KEYS = (
    "env.gpu",
    "env.gpu_cc",
    "env.gpu_count",
    "env.driver",
    "env.cuda_driver",
    "env.torch",
    "env.torch_cuda",
    "env.cudnn",
    "env.python",
    "env.os",
    "env.kernel",
    "env.cpu",
    "env.in_container",
    "env.image_digest",
)


def _s(value: object) -> str:
    if value is None or value == "":
        return UNKNOWN
    return str(value)


def environment_fingerprint(capture: Capture | None = None) -> dict[str, str]:
    """Fingerprint of this host (a quick live capture), or of ``capture`` when given."""
    from gpuops.doctor.facts import facts_from_capture
    from gpuops.doctor.probes import collect

    if capture is None:
        capture = collect(quick=True)
    f = facts_from_capture(capture)

    gpus = f.gpus or []
    names = sorted({g.name for g in gpus if g.name})
    ccs = sorted({g.cc for g in gpus if g.cc})
    torch = f.framework("torch")
    cudnn = None
    if torch is not None and torch.cudnn:
        cudnn = torch.cudnn
    elif f.cudnn_versions:
        cudnn = f.cudnn_versions[0]

    digest = capture.env.get("GPUOPS_IMAGE_DIGEST") if capture.env else None
    if capture is not None and digest is None and capture.live:
        digest = os.environ.get("GPUOPS_IMAGE_DIGEST")

    fp = {
        "env.gpu": ", ".join(names) if names else ("none" if f.gpu_count == 0 else UNKNOWN),
        "env.gpu_cc": ", ".join(ccs) if ccs else ("none" if f.gpu_count == 0 else UNKNOWN),
        "env.gpu_count": _s(f.gpu_count),
        "env.driver": _s(f.driver_version),
        "env.cuda_driver": _s(f.cuda_driver_version),
        "env.torch": _s(torch.version if torch else ("not installed" if f.frameworks is not None else None)),
        "env.torch_cuda": _s(
            torch.cuda if torch and torch.cuda else ("cpu" if torch and torch.cpu_only else None)
        ),
        "env.cudnn": _s(cudnn),
        "env.python": _s(f.python_version),
        "env.os": _s(f.os_name),
        "env.kernel": _s(f.kernel),
        "env.cpu": _s(f.cpu_model),
        "env.in_container": _s(None if f.in_container is None else str(f.in_container).lower()),
        "env.image_digest": _s(digest),
    }
    return fp
