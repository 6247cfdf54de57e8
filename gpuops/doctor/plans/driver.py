"""Driver plans: install, upgrade, mismatch after an upgrade, Fabric Manager, module flavour, GSP.

Driver package names:

* Ubuntu: ``nvidia-driver-<branch>`` and its open-module flavour ``nvidia-driver-<branch>-open``
  (https://packages.ubuntu.com/noble/nvidia-driver-535-open), or ``ubuntu-drivers install``.
* Other apt, dnf, yum and zypper systems, from NVIDIA's CUDA repository: ``nvidia-open`` (open kernel
  modules, "sudo apt install -y nvidia-open" in
  https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/driver-assistant.html) and
  ``cuda-drivers`` (the proprietary flavour; NVIDIA CUDA installation guide, chapters "Driver
  Installation" and "Switching between Driver Module Flavors",
  https://docs.nvidia.com/cuda/archive/12.2.1/cuda-installation-guide-linux/).
* Arch: ``nvidia-open-dkms`` / ``nvidia-dkms`` with ``nvidia-utils``
  (https://archlinuxarm.org/packages/aarch64/nvidia-open-dkms; https://wiki.archlinux.org/title/NVIDIA).
* Fabric Manager must match the driver version exactly: ``nvidia-fabricmanager-<branch>`` on apt
  (https://github.com/canonical/apt-packaging-fabric-manager, files ``nvidia-fabricmanager-460_460.32.03-1``)
  and dnf/yum, ``cuda-drivers-fabricmanager-<branch>`` on zypper
  (https://github.com/nvidia/yum-packaging-fabric-manager).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import (
    Distro,
    distro,
    initramfs,
    install,
    manual,
    on_host,
    reboot_step,
    reinstall,
    unreadable,
    write_step,
)

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts, Framework

_DRIVER_PKG = re.compile(
    r"(nvidia-(driver|dkms|utils|kernel-common|kernel-source|compute-utils|headless)-\d+(-open|-server)*"
    r"|libnvidia-(compute|common|gl|decode|encode|extra|cfg1|fbc1)-\d+(-server)?)$"
)


def driver_packages(f: Facts) -> list[str]:
    """Installed Debian/Ubuntu driver packages of a numbered branch (their names passed the grammar)."""
    return sorted(p for p in (f.os_packages or {}) if _DRIVER_PKG.match(p) and grammar.package_name(p))


def is_ubuntu(f: Facts, d: Distro) -> bool:
    return d.id == "ubuntu" or "ubuntu" in [x.lower() for x in f.os_id_like or []]


def flavour(f: Facts) -> str:
    """The kernel module flavour in use or to use: "open" or "proprietary"."""
    fl = (f.driver_flavour or "").lower()
    if fl in ("open", "proprietary"):
        return fl
    ccs = [g.cc for g in f.gpus or [] if g.cc]
    if ccs and all(
        tuple(int(x) for x in cc.split(".")) >= (7, 5) for cc in ccs if re.fullmatch(r"\d+\.\d+", cc)
    ):
        return "open"  # Turing and newer: NVIDIA recommends the open modules
    return "proprietary"


def driver_install_packages(f: Facts, d: Distro, branch: str | None, want: str) -> list[str] | None:
    """Package names of the driver (``branch`` None: the distribution's current one)."""
    if d.family == "apt" and is_ubuntu(f, d):
        if branch is None:
            return None  # ubuntu-drivers picks
        return [f"nvidia-driver-{branch}" + ("-open" if want == "open" else "")]
    if d.family in ("apt", "dnf", "yum", "zypper"):
        return ["nvidia-open" if want == "open" else "cuda-drivers"]
    if d.family == "pacman":
        return ["nvidia-open-dkms" if want == "open" else "nvidia-dkms", "nvidia-utils"]
    return None


def _driver_install(f: Facts, ctx: Ctx, branch: str | None, why: str, want: str | None = None) -> RepairStep:
    d = distro(f)
    want = want or flavour(f)
    pkgs = driver_install_packages(f, d, branch, want)
    if pkgs is None and d.family == "apt" and is_ubuntu(f, d):
        return RepairStep(argv=["ubuntu-drivers", "install"], why=why)
    if pkgs is None:
        return manual(
            f"install the NVIDIA driver{f' (branch {branch} or newer)' if branch else ''} the way "
            f"{d.name} documents it (https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/)",
            why,
        )
    extra = " (from NVIDIA's CUDA repository)" if pkgs[0] in ("nvidia-open", "cuda-drivers") else ""
    return install(d, pkgs, why + extra)


def install_driver(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return on_host(
        f,
        [
            _driver_install(f, ctx, None, "install the distribution's NVIDIA driver (with DKMS)"),
            reboot_step("load the new driver", resolves="driver_not_installed"),
        ],
    )


def _floor_for_cuda(ctx: Ctx, cuda: str | None) -> str | None:
    if ctx.kb is None or not cuda:
        return None
    try:
        d = ctx.kb.min_driver_for_cuda(cuda)
        floor = (d.minor_compat_min or d.full_feature_min) if d else None
    except Exception:
        return None
    return grammar.driver_version(floor)


def upgrade_driver(f: Facts, ctx: Ctx, cuda: str | None, **kw: Any) -> list[RepairStep]:
    cuda = grammar.version(cuda) if cuda else None
    floor = _floor_for_cuda(ctx, cuda)
    branch = floor.split(".")[0] if floor else None
    why = f"a driver >= {floor} runs CUDA {cuda} (or any newer branch)" if floor else "a newer driver"
    return on_host(
        f,
        [
            _with(_driver_install(f, ctx, branch, why), **kw),
            _with(reboot_step("load the new driver", resolves="driver_too_old_for_cuda"), **kw),
        ],
    )


def _with(step: RepairStep, **kw: Any) -> RepairStep:
    for k, v in kw.items():
        setattr(step, k, v)
    return step


def driver_too_old(f: Facts, ctx: Ctx, fws: list[Framework]) -> list[RepairStep]:
    """Either a framework build for a CUDA this driver runs, or a newer driver: alternatives."""
    from gpuops.doctor.plans.frameworks import best_torch_variant, torch_reinstall

    group = "driver_too_old_for_cuda"
    steps: list[RepairStep] = []
    torch = next((fw for fw in fws if fw.name == "torch"), None) or f.framework("torch")
    n = 1
    if torch and torch.cuda:
        v = best_torch_variant(f, ctx, torch.version)
        if v is not None:
            st = torch_reinstall(
                f, torch, v, "a torch build for a CUDA this driver runs (no root, no reboot)"
            )
            st.group, st.alternative, st.resolves = group, n, "driver_too_old_for_cuda"
            steps.append(st)
            n += 1
    need = max(
        (c for c in (grammar.version(fw.cuda) for fw in fws if fw.cuda) if c),
        default=None,
        key=lambda c: tuple(int(x) for x in re.findall(r"\d+", c)),
    )
    steps.extend(upgrade_driver(f, ctx, need, group=group, alternative=n))
    return steps


def prevention(f: Facts, ctx: Ctx) -> list[RepairStep]:
    """Keep apt and unattended-upgrades from replacing the driver under a loaded module (optional)."""
    d = distro(f)
    if d.family != "apt" or f.in_container:
        return []
    steps = []
    pkgs = driver_packages(f)
    if pkgs:
        steps.append(
            RepairStep(
                argv=["apt-mark", "hold", *pkgs],
                optional=True,
                why="keep apt from upgrading the driver under a loaded module",
            )
        )
    conf = write_step(
        ctx,
        "/etc/apt/apt.conf.d",
        "51gpuops-nvidia",
        'Unattended-Upgrade::Package-Blacklist {\n    "nvidia-";\n    "libnvidia-";\n};\n',
        "keep unattended-upgrades away from driver packages (upgrade them when you can reboot)",
        optional=True,
    )
    if conf is not None:
        steps.append(conf)
    return steps


def mismatch(f: Facts, ctx: Ctx) -> list[RepairStep]:
    """Loaded module and user-space libraries differ.

    Either reload the module (GPU idle, no display) or reboot. A mismatch that survived a reboot is a
    half-applied upgrade: the packages are at two versions, so reinstall them at one."""
    code = "driver_library_mismatch_needs_reboot"
    if f.rebooted_since_upgrade:
        return on_host(f, [*_reinstall_at_one_version(f, ctx), *prevention(f, ctx)])
    g = "driver_library_mismatch"
    steps = [
        RepairStep(
            argv=["rmmod", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"],
            why="unload the old module (only works when no process uses the GPU and no display runs on it)",
            group=g,
            alternative=1,
        ),
        RepairStep(argv=["modprobe", "nvidia"], why="load the installed version", group=g, alternative=1),
        RepairStep(
            argv=["modprobe", "nvidia_uvm"],
            why="and the unified memory module CUDA needs",
            verify=["nvidia-smi"],
            resolves=code,
            group=g,
            alternative=1,
        ),
        reboot_step(
            "load the kernel module that matches the installed driver", resolves=code, group=g, alternative=2
        ),
    ]
    return [*on_host(f, steps), *prevention(f, ctx)]


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:6])


def _reinstall_at_one_version(f: Facts, ctx: Ctx) -> list[RepairStep]:
    d = distro(f)
    code = "driver_library_mismatch_needs_reboot"
    why = (
        "the mismatch survived a reboot: the driver packages are at two versions (a half-applied "
        "upgrade); reinstall them all at one version"
    )
    pkgs = driver_packages(f)
    versions = {(f.os_packages or {}).get(p) for p in pkgs} - {None, "?"}
    if d.family == "apt" and pkgs and versions:
        ver = max(versions, key=lambda v: _vkey(v or ""))
        step = reinstall(d, [f"{p}={ver}" for p in pkgs], why)
    else:
        step = manual(
            "reinstall every NVIDIA driver package at one version (your package manager lists them: "
            "dpkg -l 'nvidia*' 'libnvidia*' on apt, rpm -qa 'nvidia*' on rpm systems, pacman -Q on Arch)",
            why + "; which packages are installed was not collected, so gpuops does not name them",
        )
    return [step, reboot_step("boot the module of the one installed version", resolves=code)]


def fabric_manager(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return _fabric(
        f, ctx, "fabric_manager_not_running", ["systemctl", "enable", "--now", "nvidia-fabricmanager"]
    )


def fabric_manager_version(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return _fabric(
        f, ctx, "fabric_manager_version_mismatch", ["systemctl", "restart", "nvidia-fabricmanager"]
    )


def _fabric(f: Facts, ctx: Ctx, code: str, start: list[str]) -> list[RepairStep]:
    ver = grammar.driver_version(f.driver_version)
    if ver is None:
        return [unreadable("the driver version", f, "driver_version")]
    d = distro(f)
    branch = ver.split(".")[0]
    why = f"Fabric Manager must be of exactly the driver's version ({ver})"
    if d.family == "apt":
        step = install(d, [f"nvidia-fabricmanager-{branch}={ver}-1"], why + " (NVIDIA's repository)")
    elif d.family in ("dnf", "yum"):
        step = install(d, [f"nvidia-fabricmanager-{branch}-{ver}"], why)
    elif d.family == "zypper":
        step = install(d, [f"cuda-drivers-fabricmanager-{branch}={ver}"], why)
    else:
        step = manual(f"install NVIDIA Fabric Manager {ver} (the driver's exact version)", why)
    return on_host(
        f,
        [
            step,
            RepairStep(
                argv=start,
                why="start it now and at boot",
                verify=["systemctl", "is-active", "nvidia-fabricmanager"],
                resolves=code,
            ),
        ],
    )


def module_flavour(f: Facts, ctx: Ctx, want: str) -> list[RepairStep]:
    """Switch to the ``want`` ("open" | "proprietary") kernel modules of the same branch."""
    if want not in ("open", "proprietary"):
        return [
            manual(
                f"choose the open or the proprietary kernel module (asked for {want!r})", "unknown flavour"
            )
        ]
    ver = grammar.driver_version(f.driver_version or f.installed_module_version)
    branch = ver.split(".")[0] if ver else None
    why = (
        "the open kernel modules need a Turing or newer GPU"
        if want == "proprietary"
        else "this GPU needs the open kernel modules"
    ) + (f"; same branch {branch}" if branch else "")
    return on_host(
        f,
        [
            _driver_install(f, ctx, branch, why, want=want),
            reboot_step("load the other module flavour", resolves="kernel_module_flavour_mismatch"),
        ],
    )


def gsp_firmware(f: Facts, ctx: Ctx) -> list[RepairStep]:
    """GSP firmware failed: a newer driver, or (proprietary module only) run without GSP firmware.

    "The driver can be forced to disable use of GSP firmware by setting the kernel module parameter
    NVreg_EnableGpuFirmware=0" (NVIDIA driver README, chapter "GSP Firmware",
    https://download.nvidia.com/XFree86/Linux-x86_64/580.65.06/README/gsp.html); the open kernel
    modules keep using it (https://github.com/NVIDIA/open-gpu-kernel-modules/issues/820), so that
    alternative is offered with the proprietary module only."""
    g = "gsp_firmware"
    code = "gsp_firmware_error"
    steps = upgrade_driver(f, ctx, None, group=g, alternative=1)
    for s in steps:
        s.resolves = code if s.needs_reboot else None
    if flavour(f) == "proprietary":
        conf = write_step(
            ctx,
            "/etc/modprobe.d",
            "nvidia-gsp.conf",
            "options nvidia NVreg_EnableGpuFirmware=0\n",
            "run the proprietary module without the GSP firmware",
            group=g,
            alternative=2,
        )
        if conf is not None:
            ini = initramfs(distro(f))
            ini.group, ini.alternative = g, 2
            steps += on_host(
                f,
                [
                    conf,
                    ini,
                    reboot_step("load the module without GSP", resolves=code, group=g, alternative=2),
                ],
            )
    return steps
