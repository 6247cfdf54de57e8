"""Repair plans: for each finding, ordered steps that fit this machine.

Each plan function is ``(facts, ctx, ...) -> list[RepairStep]``. Steps are argument vectors (or file
writes the executor makes itself), never shell strings; every probed value in a step passed its
grammar (``gpuops.doctor.grammar``) or the step is replaced by a manual one that says why. Commands and
package names follow the distribution read from /etc/os-release. ``ctx.root`` prefixes every path a
step writes or deletes, so that the executor's tests can run real steps inside a throwaway directory.
Steps that are alternatives of one another share a ``group`` (the plan says "either A or B").

Modules by area: ``common`` (package managers, pip, reboot, manual and file steps), ``driver``,
``kmod``, ``cuda``, ``frameworks``, ``containers``, ``hardware``, ``platform`` (WSL).
"""

from __future__ import annotations

from gpuops.doctor.plans.common import (
    Distro,
    distro,
    gather,
    has_placeholder,
    manual,
    pip_step,
    reboot_step,
)
from gpuops.doctor.plans.containers import (
    cdi_regenerate,
    container_daemon_reload,
    container_toolkit,
    docker_snap,
    register_runtime,
)
from gpuops.doctor.plans.cuda import conda_shadow, cuda_libs, cudnn, ld_path
from gpuops.doctor.plans.driver import (
    driver_too_old,
    fabric_manager,
    fabric_manager_version,
    gsp_firmware,
    install_driver,
    mismatch,
    module_flavour,
    prevention,
    upgrade_driver,
)
from gpuops.doctor.plans.frameworks import (
    TORCH_INDEX,
    arch,
    cpu_only,
    cupy_for_chainer,
    cupy_for_cuda,
    cupy_reinstall,
    jax_cuda,
    tf_and_cuda,
    torch_for_toolkit,
)
from gpuops.doctor.plans.hardware import hardware_fault, mig, persistence
from gpuops.doctor.plans.kmod import (
    blacklist_nouveau,
    load_uvm,
    make_device_nodes,
    rebuild_module,
    reload_uvm_after_resume,
    secure_boot,
    unbind_other_driver,
)
from gpuops.doctor.plans.platform import tcc_mode, wsl_libcuda, wsl_remove_linux_driver

__all__ = [
    "TORCH_INDEX",
    "Distro",
    "arch",
    "blacklist_nouveau",
    "cdi_regenerate",
    "conda_shadow",
    "container_daemon_reload",
    "container_toolkit",
    "cpu_only",
    "cuda_libs",
    "cudnn",
    "cupy_for_chainer",
    "cupy_for_cuda",
    "cupy_reinstall",
    "distro",
    "docker_snap",
    "driver_too_old",
    "fabric_manager",
    "fabric_manager_version",
    "gather",
    "gsp_firmware",
    "hardware_fault",
    "has_placeholder",
    "install_driver",
    "jax_cuda",
    "ld_path",
    "load_uvm",
    "make_device_nodes",
    "manual",
    "mig",
    "mismatch",
    "module_flavour",
    "persistence",
    "pip_step",
    "prevention",
    "reboot_step",
    "rebuild_module",
    "register_runtime",
    "reload_uvm_after_resume",
    "secure_boot",
    "tcc_mode",
    "tf_and_cuda",
    "torch_for_toolkit",
    "unbind_other_driver",
    "upgrade_driver",
    "wsl_libcuda",
    "wsl_remove_linux_driver",
]
