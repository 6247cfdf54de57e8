"""What doctor reports: findings (code, severity, evidence, explanation, repair plan) and the report.

Plain dataclasses (no pydantic): built by gpuops' own checks, never read from untrusted input, and
on ``gpuops doctor``'s start-up path."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

# The shared vocabulary (doctor-cases/README.md) plus doctor's own codes: code -> one-line meaning.
# The first 13 are the shared ones and keep their names and meanings.
CODES: dict[str, str] = {
    "kernel_module_not_built_after_upgrade": "no NVIDIA kernel module for the running kernel",
    "driver_library_mismatch_needs_reboot": "loaded kernel module and user-space driver differ",
    "driver_too_old_for_cuda": "driver older than the CUDA a framework build or container needs",
    "framework_cpu_only_build": "a CPU-only framework build on a GPU machine",
    "framework_cuda_variant_mismatch": "framework built for other CUDA libraries than those present",
    "cudnn_missing_or_wrong_version": "cuDNN absent or of a version the build cannot load",
    "gpu_arch_unsupported_by_build": "no kernels (nor usable PTX) for this GPU in the build",
    "nouveau_conflict": "nouveau holds the GPU",
    "secure_boot_blocks_module": "Secure Boot refuses the unsigned NVIDIA module",
    "container_toolkit_missing": "docker run --gpus cannot work (toolkit or runtime absent, unregistered)",
    "ld_library_path": "the loader search path picks wrong CUDA/cuDNN libraries",
    "cupy_package_mismatch": "several CuPy packages, or a CuPy for another CUDA or Chainer",
    "no_nvidia_gpu": "no NVIDIA GPU on this machine",
    # doctor's own codes
    "driver_not_installed": "an NVIDIA GPU is present but no NVIDIA driver is installed",
    "driver_not_loaded": "the NVIDIA driver is installed but not loaded, cause not determined",
    "nvidia_smi_hung": "nvidia-smi did not answer in time",
    "probe_failed": "a diagnostic tool timed out, crashed or printed without end",
    "fabric_manager_not_running": "CUDA reports 'system not yet initialized' (NVSwitch Fabric Manager)",
    "fabric_manager_version_mismatch": "Fabric Manager is of another version than the driver",
    "nvidia_uvm_not_loaded": "nvidia_uvm is not loaded or /dev/nvidia-uvm is missing: CUDA cannot start",
    "device_nodes_missing": "/dev/nvidia* device nodes are missing",
    "cuda_unavailable_after_resume": "CUDA fails after a suspend/resume (nvidia_uvm lost its state)",
    "mig_enabled_no_instances": "MIG mode is on but no GPU/compute instance exists: CUDA sees no device",
    "persistence_mode_off": "persistence mode is off on a multi-GPU server",
    "gpu_hardware_fault": "the GPU reports a hardware fault (ECC, thermal, power, NVLink): not software",
    "gpu_fallen_off_bus": "the GPU has fallen off the PCIe bus: hardware or power, not software",
    "gsp_firmware_error": "the GPU System Processor firmware failed to start or timed out",
    "kernel_module_flavour_mismatch": "open kernel module on a GPU older than Turing, or proprietary on one that needs open",  # noqa: E501
    "other_driver_bound": "another kernel driver (vfio-pci, nova_core) holds the GPU",
    "container_lost_gpu_after_daemon_reload": "containers lose the GPU after `systemctl daemon-reload`",
    "cdi_spec_stale": "the CDI spec names driver files that are gone (driver upgraded since it was made)",
    "wsl_linux_driver_installed": "a Linux NVIDIA driver installed inside WSL2 shadows the Windows one",
    "wsl_libcuda_shadowed": "WSL's libcuda is shadowed by another libcuda.so",
    "gpu_in_tcc_mode": "the GPU is in TCC mode, which WSL2 cannot use",
    "conda_cuda_shadowing": "a conda environment's cudatoolkit/cuDNN shadows the system's",
    "gpu_application_fault": "the program faulted on the GPU (illegal address, launch failure)",
    "cuda_out_of_memory": "the program ran out of GPU memory: the stack is fine",
    "unexplained_gpu_error": "a GPU error text that no check explains",
    "gpu_stack_unverified": "a GPU is expected but the driver stack could not be checked",
}

# Which part of the stack each code is about (the error-signature catalogue uses the same classes).
Klass = Literal["hardware", "driver", "kernel module", "container", "library", "framework", "application"]


@dataclass(frozen=True)
class WriteFile:
    """A file a repair step writes: the executor writes ``content`` to ``path`` itself (no shell)."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(kw_only=True)
class RepairStep:
    """One step of a repair plan.

    ``argv`` is an argument vector, never a shell string: the executor runs it without a shell.
    A step that writes a file carries ``write`` instead. A manual step (``manual``) is done by a
    person: ``text`` says what to do, ``argv`` (when set) is the command they run. Steps of one
    finding that are alternatives share ``group``; ``alternative`` numbers them (1 = tried first),
    and the steps of one alternative keep their order.
    """

    why: str
    argv: list[str] = field(default_factory=list)
    write: WriteFile | None = None
    text: str | None = None  # what a person does, for manual steps without a command
    needs_root: bool = True
    needs_reboot: bool = False
    optional: bool = False  # prevention, offered not required
    manual: bool = False  # a person must do it (firmware, shell profile): the executor stops there
    verify: list[str] | None = None  # an argument vector that must succeed after the step
    resolves: str | None = None  # the finding code this step should make disappear
    group: str | None = None  # steps that are alternatives of one another share a group
    alternative: int | None = None  # 1, 2, ... within the group

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or isinstance(self.verify, str):
            raise TypeError("RepairStep.argv and .verify are argument vectors, not shell strings")
        self.argv = list(self.argv)
        if self.verify is not None:
            self.verify = list(self.verify)

    @property
    def command(self) -> str:
        """What the step does, for display: the command line, the file write, or the manual text."""
        if self.write is not None:
            return f"write {self.write.path}: {self.write.content!r}"
        if self.argv:
            return shlex.join(self.argv)
        return self.text or ""

    @property
    def verify_command(self) -> str | None:
        return shlex.join(self.verify) if self.verify else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["command"] = self.command
        return d


@dataclass(kw_only=True)
class Finding:

    code: str
    severity: Severity
    title: str
    evidence: list[str] = field(default_factory=list)
    explanation: str = ""
    confidence: Literal["confirmed", "likely"] = "confirmed"
    plan: list[RepairStep] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # package changes that explain it
    sources: list[str] = field(default_factory=list)
    # codes of signatures this diagnosis accounts for besides its own (a JAX "falling back to cpu"
    # warning printed because its CUDA plugin failed to load is not a CPU-only build)
    covers: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class EnvVerdict:

    name: str
    framework: str
    framework_version: str
    cuda: str | None
    runnable: bool | None  # None: cannot tell from what was collected
    reasons: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Report:

    capture_kind: str
    source: str | None = None
    summary: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    environments: list[EnvVerdict] = field(default_factory=list)
    environments_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for ``--json``)."""
        return dataclasses.asdict(self)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    @property
    def verdict(self) -> Literal["problems", "could_not_verify", "warnings", "healthy"]:
        """``healthy`` only when nothing is wrong and nothing was left unchecked."""
        if self.errors:
            return "problems"
        if "gpu_stack_unverified" in self.codes():
            return "could_not_verify"
        if self.codes("warning"):
            return "warnings"
        return "healthy"

    @property
    def verdict_line(self) -> str:
        n = len(self.errors)
        return {
            "problems": f"{n} problem{'s' if n != 1 else ''} found.",
            "could_not_verify": "Could not verify the GPU stack: a GPU is expected, but its driver "
            "could not be checked.",
            "warnings": "No errors found; see the warnings above.",
            "healthy": "No problems found.",
        }[self.verdict]

    def codes(self, severity: Severity | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    def plan(self) -> list[RepairStep]:
        """The ordered repair plan of all error findings (then warnings), without repeats.

        A step is a repeat when the same command (with the same group and alternative) came
        before; the steps of a group stay together, in their order."""
        seen: set[tuple[str | None, int | None, str]] = set()
        out: list[RepairStep] = []
        for sev in ("error", "warning"):
            for f in self.findings:
                if f.severity != sev:
                    continue
                for s in f.plan:
                    key = (s.group, s.alternative, s.command)
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(s)
        return out
