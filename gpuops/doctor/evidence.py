"""Failure evidence: every text in a capture that shows something failed, with where it came from.

Doctor is never silent on failure evidence: each piece collected here must be explained by a
finding, or it becomes an ``unexplained_gpu_error`` (``gpuops.doctor.checks``). What counts:

* a GPU tool that exited non-zero, timed out, crashed, or printed an error (nvidia-smi,
  nvidia-container-cli, modprobe, dkms, nvidia-ctk, mokutil --test-key);
* an NVML error;
* an error line of the kernel log about NVRM / nvidia / Xid / module signing / DKMS / vfio;
* an error text attached with ``--log`` or quoted in a report, and a ``--deep`` failure.

Tool failures count only where a GPU is expected: on a machine whose PCI bus has no NVIDIA device,
``modinfo nvidia`` failing is the expected answer, not evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuops.doctor.capture import Capture
    from gpuops.doctor.facts import Facts


@dataclass(frozen=True)
class Evidence:
    origin: str  # what printed it: "nvidia-smi", "kernel log", "NVML", a log's origin
    text: str  # the failing text (whole for short outputs and logs, the error lines otherwise)
    area: str  # driver | kernel module | container | log: which findings may explain a tool's failure

    def lines(self) -> list[str]:
        """The lines of ``text`` that read as errors (all non-empty lines when none does)."""
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        errs = [ln for ln in lines if ERRORISH.search(ln) and not _benign(ln)]
        return errs or lines or [f"{self.origin} failed without output"]


# Words that make a line read as an error report.
ERRORISH = re.compile(
    r"\b(error|errors|failed|failure|fatal|unable|cannot|can't|couldn't|could not|not found|mismatch|"
    r"rejected|refused|denied|timed? ?out|timeout|unknown error|invalid|insufficient|"
    r"no devices were found|fallen off|not supported|unsupported|not loaded|no such|"
    r"bad return status|unsatisfied|requirement error|not available|panic|Xid|already bound|"
    r"probe routine failed|None of the NVIDIA devices|No NVIDIA devices probed)\b",
    re.I,
)

# Words that tie a line to the GPU stack.
GPU_TOPIC = re.compile(
    r"nvidia|nvml|cuda|cudnn|cublas|cufft|curand|cusolver|cusparse|nvrtc|nvjitlink|nccl|gpu|nouveau|"
    r"xid|dkms|libcu|tensorrt|triton|torch|tensorflow|jax|xla|cupy|chainer|numba|onnx|device|driver|"
    r"kernel module|\bcdi\b|hook|oci runtime|mig\b|tcc|wsl|dxg",
    re.I,
)

# Kernel-log lines that are about the NVIDIA stack.
_KLOG_TOPIC = re.compile(r"NVRM|nvidia|Xid|nouveau|module verification|signature|Key was rejected|"
                         r"Lockdown|dkms|vfio|nova_core|GSP", re.I)

# Lines that look alarming but are printed by healthy machines.
_BENIGN = (
    # The kernel taints itself when it loads an out-of-tree or unsigned module in permissive mode;
    # the module still loads (kernel admin guide, "Kernel module signing facility":
    # https://www.kernel.org/doc/html/latest/admin-guide/module-signing.html).
    re.compile(r"taints? kernel|tainting kernel", re.I),
    # Informational lines of a module that loaded.
    re.compile(r"NVRM: loading NVIDIA UNIX|Loading NVIDIA (Kernel Mode Setting|UNIX)|Loaded the UVM driver|"
               r"\[drm\] Initialized nvidia-drm|nvidia-modeset: Loading", re.I),
    # The USB-C/UCSI controller on Turing boards without a USB-C port logs i2c time-outs; harmless
    # (Ubuntu bug 1832015, https://bugs.launchpad.net/ubuntu/+source/linux/+bug/1832015).
    re.compile(r"nvidia-gpu \S+: i2c timeout error", re.I),
    re.compile(r"Persistence mode is deprecated", re.I),
    # PyTorch's environment report (torch.utils.collect_env) says "Could not collect" for every
    # fact it could not read: a statement about the report, not a failure.
    re.compile(r"^[\w .()/+-]{1,60}: Could not collect$", re.I),
)


# A continuation line of a multi-line kernel message: optional syslog/journal prefix, optional
# timestamp, "NVRM:", then text that does not start a message of its own.
_NVRM_CONT = re.compile(
    r"\n[ \t]*(?:\w{3}\s+\d+\s+[\d:]+\s+\S+\s+)?(?:kernel:\s*)?(?:\[\s*[\d.]+\]\s*)?NVRM:"
    r"(?![ \t]*(?:Xid|GPU at|loading|API mismatch|The NVIDIA|RmInitAdapter|nvCheckOkFailedNoLog|"
    r"GPU \S+ is|No NVIDIA|None of the|\S+: ))[ \t]*"
)


def join_nvrm(text: str) -> str:
    """``text`` with the kernel's NVRM continuation lines folded into the message they continue:
    "NVRM: The NVIDIA GPU ... installed in this system is not supported by open\nNVRM: nvidia.ko
    because ..." reads as one line."""
    if "NVRM" not in text:
        return text
    return _NVRM_CONT.sub(" ", text.replace("#012", "\n"))


def _benign(line: str) -> bool:
    return any(rx.search(line) for rx in _BENIGN)


# Command keys of GPU tools, and the area of findings that can explain their failure.
GPU_TOOLS: dict[str, str] = {
    "nvidia-smi": "driver",
    "nvidia-smi-q": "driver",
    "nvidia-smi-mig": "driver",
    "modprobe-nvidia": "kernel module",
    "dkms-status": "kernel module",
    "dkms-install": "kernel module",
    "mokutil-test-key": "kernel module",
    "nvidia-container-cli": "container",
    "nvidia-ctk": "container",
}


def _tool_failed(rec_text: str, rc: int | None, error: str | None) -> bool:
    if error in ("timeout", "crashed", "too_much_output", "permission", "failed_to_start"):
        return True
    if error == "not_found":
        return False
    if rc not in (None, 0):
        return True
    return any(ERRORISH.search(ln) and not _benign(ln) for ln in rec_text.splitlines())


def _cut(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[:limit]


def collect(cap: Capture, f: Facts) -> list[Evidence]:
    out: list[Evidence] = []
    no_gpu = f.gpu_present is False and not f.gpus
    if not no_gpu:
        for key, area in GPU_TOOLS.items():
            rec = cap.cmd(key)
            if rec is None:
                continue
            text = rec.text
            if not _tool_failed(text, rec.rc, rec.error):
                continue
            if not text.strip() and not rec.error:
                text = f"{key} exited with code {rec.rc} and printed nothing"
            if rec.error and not text.strip():
                text = {"timeout": f"{key} did not finish within its time-out",
                        "crashed": f"{key} was killed by signal {-(rec.rc or 0) or '?'}",
                        "too_much_output": f"{key} printed more than doctor reads; it was stopped",
                        "permission": f"{key}: permission denied",
                        "failed_to_start": f"{key} could not be started"}.get(rec.error, rec.error)
            out.append(Evidence(origin=key, text=_cut(text), area=area))
        missing_lib = bool(
            f.nvml_error and re.search(r"Shared Library Not Found|libnvidia-ml", f.nvml_error, re.I)
        )
        if f.nvml_error and (not missing_lib or f.gpu_present or f.smi_status not in (None, "missing")):
            out.append(Evidence(origin="NVML", text=f.nvml_error, area="driver"))
    kl = cap.cmd("kernel-log")
    if kl is not None and kl.text:
        norm = join_nvrm(kl.text.replace("#012", "\n"))
        errs = [ln.strip() for ln in norm.splitlines()
                if _KLOG_TOPIC.search(ln) and ERRORISH.search(ln) and not _benign(ln)]
        if errs:
            out.append(Evidence(origin="kernel log", text="\n".join(dict.fromkeys(errs)), area="log"))
    for origin, text in f.error_texts:
        errs = [ln for ln in text.splitlines() if ERRORISH.search(ln) and not _benign(ln)]
        # an error that does not touch the GPU stack (apt failing to fetch a mirror, a Python
        # ImportError of an unrelated package) is not GPU failure evidence
        if any(GPU_TOPIC.search(ln) for ln in errs):
            out.append(Evidence(origin=origin, text=_cut(text, 20000), area="log"))
    return out


__all__ = ["ERRORISH", "GPU_TOOLS", "Evidence", "collect"]
