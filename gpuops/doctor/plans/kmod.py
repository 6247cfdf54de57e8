"""Kernel-module plans: DKMS rebuilds, nouveau, Secure Boot, nvidia_uvm, device nodes, other drivers.

Sources: kernel headers and DKMS, see ``common``; ``nvidia-modprobe`` is NVIDIA's setuid helper that
loads the modules and creates the device files (``-u``: nvidia-uvm, ``-c=N``: /dev/nvidiaN;
https://github.com/NVIDIA/nvidia-modprobe); suspend and
resume: NVIDIA driver README, chapter "Configuring Power Management Support"
(https://download.nvidia.com/XFree86/Linux-x86_64/450.66/README/powermanagement.html): the
``nvidia-suspend``, ``nvidia-resume`` and ``nvidia-hibernate`` services with
``NVreg_PreserveVideoMemoryAllocations=1``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.plans.common import (
    distro,
    headers_package,
    initramfs,
    inside,
    install,
    manual,
    on_host,
    reboot_step,
    unreadable,
    write_step,
)
from gpuops.doctor.plans.driver import driver_packages

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts

DKMS_ROOT = "/var/lib/dkms"
_STALE = re.compile(r"(/var/lib/dkms/\S+?)/source/dkms\.conf does not exist")


def stale_dkms_trees(f: Facts, ctx: Ctx) -> tuple[list[str], list[str]]:
    """(paths to delete, raw texts refused): leftover ``/var/lib/dkms/<module>/<version>`` trees.

    A path is accepted only when, resolved, it is exactly two levels below /var/lib/dkms and its two
    parts are a module name and a version."""
    ok: list[str] = []
    refused: list[str] = []
    for e in f.dkms.errors if f.dkms else []:
        m = _STALE.search(e)
        if not m:
            continue
        raw = m.group(1)
        norm = grammar.path_inside(raw, DKMS_ROOT)
        parts = norm[len(DKMS_ROOT) + 1 :].split("/") if norm else []
        if (
            norm is None
            or norm != raw.rstrip("/")
            or len(parts) != 2
            or grammar.module_name(parts[0]) is None
            or grammar.version(parts[1]) is None
        ):
            refused.append(raw)
        elif norm not in ok:
            ok.append(norm)
    return ok, refused


def rebuild_module(f: Facts, ctx: Ctx, kernel: str | None = None) -> list[RepairStep]:
    code = "kernel_module_not_built_after_upgrade"
    d = distro(f)
    raw = kernel or f.kernel
    k = grammar.kernel_release(raw)
    if (raw is not None and k is None) or (raw is None and "kernel" in f.unreadable):
        return on_host(f, [unreadable("the kernel release", f, "kernel")])
    steps: list[RepairStep] = []
    stale, refused = stale_dkms_trees(f, ctx)
    for s in stale:
        target = inside(ctx, s, DKMS_ROOT)
        if target is None:
            continue
        steps.append(
            RepairStep(
                argv=["rm", "-rf", "--", target],
                why=f"{s} is a leftover DKMS tree without dkms.conf; it makes every dkms run fail",
                verify=["test", "!", "-e", target],
            )
        )
    for _ in refused:
        # the path itself is not repeated: it is probed text that failed its grammar
        steps.append(
            manual(
                "dkms names a tree outside any /var/lib/dkms/MODULE/VERSION tree: nothing is deleted; "
                "look at /var/lib/dkms by hand (dkms status shows the error)",
                "a plan never deletes outside a known package path",
            )
        )
    hdr = headers_package(d, k) if k else None
    if hdr:
        steps.append(install(d, [hdr, "dkms"], "DKMS needs the headers of the kernel it builds for"))
    elif k is None and d.family == "dnf" and (d.id == "fedora" or (d.major or 0) >= 9):
        # Fedora and EL9: kernel-devel-matched pulls the devel package of the running kernel (NVIDIA's
        # driver installation guide, https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/
        # fedora.html and almalinux.html, "Preparation", as quoted in
        # https://gitlab.com/gitlab-com/public-sector/gitlab-simulation/-/merge_requests/64).
        steps.append(
            install(d, ["kernel-devel-matched", "dkms"], "DKMS needs the headers of the running kernel")
        )
    else:
        steps.append(
            manual(
                f"install the kernel headers of {k or 'the running kernel (the release uname -r prints)'}"
                " and dkms"
                + (
                    " (linux-headers for the linux kernel, KERNEL-headers for the others)"
                    if d.family == "pacman"
                    else ""
                ),
                "DKMS needs the headers of the kernel it builds for",
            )
        )
    kflag = ["-k", k] if k else []
    ver = grammar.driver_version(f.installed_module_version or f.driver_version or f.userspace_driver_version)
    if f.dkms is not None and not f.dkms.available and not driver_packages(f):
        steps.append(
            manual(
                "the driver came from NVIDIA's .run installer without DKMS: download the same version "
                f"({ver or 'see nvidia-smi or /proc/driver/nvidia/version'}) from nvidia.com and "
                "reinstall it with --dkms, so that every future kernel gets a module",
                "only the installer that put the driver there can rebuild it",
                argv=[f"./NVIDIA-Linux-x86_64-{ver}.run", "--dkms", "--silent"] if ver else None,
            )
        )
    elif ver:
        steps.append(
            RepairStep(
                argv=["dkms", "install", f"nvidia/{ver}", *kflag],
                why=f"build and install the NVIDIA module for kernel {k or 'the running kernel'}",
                verify=["modinfo", *kflag, "-F", "version", "nvidia"],
                resolves=code if kernel else None,
            )
        )
    else:
        steps.append(
            RepairStep(
                argv=["dkms", "autoinstall", *kflag],
                why=f"build every registered DKMS module (nvidia) for kernel {k or 'the running kernel'}",
                verify=["modinfo", *kflag, "-F", "version", "nvidia"],
                resolves=code if kernel else None,
            )
        )
    if kernel is None:
        steps.append(
            RepairStep(
                argv=["modprobe", "nvidia"], why="load the new module", verify=["nvidia-smi"], resolves=code
            )
        )
    return on_host(f, steps)


def blacklist_nouveau(f: Facts, ctx: Ctx) -> list[RepairStep]:
    d = distro(f)
    conf = write_step(
        ctx,
        "/etc/modprobe.d",
        "blacklist-nouveau.conf",
        "blacklist nouveau\noptions nouveau modeset=0\n",
        "stop nouveau from loading",
    )
    steps: list[RepairStep] = [conf] if conf else []
    steps.append(initramfs(d))
    if d.family in ("dnf", "yum"):
        steps.append(
            RepairStep(
                argv=["grubby", "--update-kernel=ALL", "--args=modprobe.blacklist=nouveau"],
                why="the initramfs blacklist only covers early boot; this also covers the real root",
            )
        )
    steps.append(
        reboot_step("boot without nouveau so the NVIDIA module can bind", resolves="nouveau_conflict")
    )
    return on_host(f, steps)


_MOK_DIRS = ("/var/lib/shim-signed/mok", "/var/lib/dkms", "/etc/pki/akmods/certs", "/usr/share/nvidia")


def _mok_key(f: Facts) -> str | None:
    for k in f.mok_keys or []:
        if not re.search(r"\.(der|pub|crt|cer)$", k):
            continue
        for base in _MOK_DIRS:
            p = grammar.path_inside(k, base)
            if p is not None and p == k and re.fullmatch(r"[A-Za-z0-9/._-]+", p):
                return p
    return None


def secure_boot(f: Facts, ctx: Ctx) -> list[RepairStep]:
    """Either enrol the key the modules were signed with, or turn Secure Boot off (firmware, by hand)."""
    g = "secure_boot"
    code = "secure_boot_blocks_module"
    key = _mok_key(f)
    if key:
        first = [
            manual(
                f"queue the signing key for enrolment: mokutil --import {key} "
                "(you choose a one-time password)",
                "the modules were signed with this key; the firmware must trust it",
                argv=["mokutil", "--import", key],
                group=g,
                alternative=1,
            ),
        ]
    else:
        first = [
            manual(
                "find the key DKMS signs the modules with (Ubuntu: /var/lib/shim-signed/mok/MOK.der, "
                "DKMS 3: /var/lib/dkms/mok.pub) and queue it with mokutil --import",
                "no signing key was found on this machine",
                group=g,
                alternative=1,
            )
        ]
    first += [
        reboot_step(
            "at the blue MokManager screen choose 'Enroll MOK' and enter the password; on cloud VMs use the "
            "serial console",
            group=g,
            alternative=1,
        ),
        RepairStep(
            argv=["modprobe", "nvidia"],
            why="check the module now loads",
            verify=["nvidia-smi"],
            resolves=code,
            group=g,
            alternative=1,
        ),
    ]
    second = manual(
        "or turn Secure Boot off in the firmware (UEFI) settings, or the VM's security settings",
        "unsigned modules load when Secure Boot is off",
        group=g,
        alternative=2,
    )
    return on_host(f, [*first, second])


def load_uvm(f: Facts, ctx: Ctx) -> list[RepairStep]:
    g = "load_uvm"
    code = "nvidia_uvm_not_loaded"
    return on_host(
        f,
        [
            RepairStep(
                argv=["modprobe", "nvidia-uvm"],
                why="load the unified-memory module CUDA needs",
                verify=["test", "-c", "/dev/nvidia-uvm"],
                resolves=code,
                group=g,
                alternative=1,
            ),
            RepairStep(
                argv=["nvidia-modprobe", "-u", "-c=0"],
                why="the setuid helper loads nvidia-uvm and creates /dev/nvidia-uvm",
                verify=["test", "-c", "/dev/nvidia-uvm"],
                resolves=code,
                group=g,
                alternative=2,
            ),
        ],
    )


def make_device_nodes(f: Facts, ctx: Ctx) -> list[RepairStep]:
    n = f.gpu_count if isinstance(f.gpu_count, int) and 0 < f.gpu_count <= 64 else 1
    steps = [
        RepairStep(argv=["nvidia-modprobe", f"-c={i}"], why=f"create /dev/nvidia{i} and /dev/nvidiactl")
        for i in range(n)
    ]
    steps.append(
        RepairStep(
            argv=["nvidia-modprobe", "-u", "-c=0"],
            why="create /dev/nvidia-uvm",
            verify=["test", "-c", "/dev/nvidiactl"],
            resolves="device_nodes_missing",
        )
    )
    return on_host(f, steps)


def reload_uvm_after_resume(f: Facts, ctx: Ctx) -> list[RepairStep]:
    g = "reload_uvm"
    code = "cuda_unavailable_after_resume"
    steps = [
        RepairStep(
            argv=["rmmod", "nvidia_uvm"],
            why="drop the module that lost its state (GPU idle only)",
            group=g,
            alternative=1,
        ),
        RepairStep(
            argv=["modprobe", "nvidia_uvm"],
            why="load it again",
            verify=["nvidia-smi"],
            resolves=code,
            group=g,
            alternative=1,
        ),
        reboot_step("a fresh boot resets the driver state", resolves=code, group=g, alternative=2),
    ]
    for unit in ("nvidia-suspend.service", "nvidia-resume.service", "nvidia-hibernate.service"):
        steps.append(
            RepairStep(
                argv=["systemctl", "enable", unit],
                optional=True,
                why="NVIDIA's services save and restore video memory around a suspend",
            )
        )
    conf = write_step(
        ctx,
        "/etc/modprobe.d",
        "nvidia-power-management.conf",
        "options nvidia NVreg_PreserveVideoMemoryAllocations=1\n",
        "keep video memory allocations across suspend (takes effect when the module loads next)",
        optional=True,
    )
    if conf is not None:
        steps.append(conf)
    return on_host(f, steps)


_PCI_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")


def unbind_other_driver(f: Facts, ctx: Ctx, driver: str) -> list[RepairStep]:
    """vfio-pci or nova_core holds the GPU: stop it claiming the card, rebuild the initramfs, reboot."""
    d = distro(f)
    code = "other_driver_bound"
    steps: list[RepairStep] = []
    if driver == "vfio-pci" or driver == "vfio_pci":
        ids = sorted(
            {
                f"{p.vendor}:{p.device}".lower().replace("0x", "")
                for p in f.pci_nvidia or []
                if getattr(p, "vendor", None) and getattr(p, "device", None)
            }
        )
        ids = [i for i in ids if _PCI_ID.fullmatch(i)]
        steps.append(
            manual(
                "remove the NVIDIA ids from vfio-pci.ids= on the kernel command line "
                "(see /proc/cmdline and the bootloader's configuration) "
                "and from any 'options vfio-pci ids=' "
                "line in /etc/modprobe.d" + (f" (ids of this GPU: {', '.join(ids)})" if ids else ""),
                "vfio-pci claims the card for a VM before the NVIDIA module can",
            )
        )
    elif driver in ("nova_core", "nova-core", "nova"):
        conf = write_step(
            ctx,
            "/etc/modprobe.d",
            "blacklist-nova.conf",
            "blacklist nova_core\n",
            "stop the nova_core driver from claiming the GPU",
        )
        if conf is not None:
            steps.append(conf)
    else:
        steps.append(unreadable("the other driver's name"))
    steps.append(initramfs(d))
    steps.append(reboot_step("boot with the GPU free for the NVIDIA module", resolves=code))
    return on_host(f, steps)


__all__ = [
    "blacklist_nouveau",
    "load_uvm",
    "make_device_nodes",
    "rebuild_module",
    "reload_uvm_after_resume",
    "secure_boot",
    "stale_dkms_trees",
    "unbind_other_driver",
]
