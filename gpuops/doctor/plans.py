"""Repair plans: ordered steps (command, why, needs root, needs reboot) for each finding.

Commands are concrete where the facts allow (the running kernel, the driver branch, the wheel
index) and written for the host's package manager. ``ctx.root`` prefixes every file a step
writes, so that the executor's tests can run real steps inside a throwaway directory.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from gpuops.doctor.findings import RepairStep

if TYPE_CHECKING:
    from gpuops.doctor.checks import Ctx
    from gpuops.doctor.facts import Facts, Framework

TORCH_INDEX = "https://download.pytorch.org/whl"


def _mgr(f: Facts) -> str:
    if f.package_manager:
        return f.package_manager
    osn = (f.os_name or "").lower()
    if any(x in osn for x in ("fedora", "red hat", "rhel", "centos", "rocky", "alma")):
        return "rpm"
    if any(x in osn for x in ("arch", "cachyos", "manjaro", "endeavour")):
        return "pacman"
    return "dpkg"


def _pip(f: Facts) -> str:
    return "python -m pip"


def reboot_step(why: str, resolves: str | None = None) -> RepairStep:
    return RepairStep(
        command="systemctl reboot",
        why=why,
        needs_root=True,
        needs_reboot=True,
        verify="nvidia-smi",
        resolves=resolves,
    )


def _pip_step(f: Facts, args: str, why: str) -> RepairStep:
    """A pip command in the framework's own environment (no root)."""
    return RepairStep(command=f"{_pip(f)} {args}", needs_root=False, why=why)


def _manual_step(command: str, why: str) -> RepairStep:
    """A step a person runs in their own shell (or an alternative to read): no root, the executor stops."""
    return RepairStep(command=command, needs_root=False, manual=True, why=why)


def _driver_packages(f: Facts) -> list[str]:
    return sorted(
        p
        for p in (f.os_packages or {})
        if re.match(
            r"(nvidia-(driver|dkms|utils|kernel-common|compute-utils)"
            r"-\d+|libnvidia-(compute|common|gl)-\d+)",
            p,
        )
    )


def prevention(f: Facts, ctx: Ctx) -> list[RepairStep]:
    if _mgr(f) != "dpkg":
        return []
    pkgs = _driver_packages(f)
    steps = []
    if pkgs:
        steps.append(
            RepairStep(
                command="apt-mark hold " + " ".join(pkgs),
                optional=True,
                why="keep apt from upgrading the driver under a loaded module",
            )
        )
    conf = f"{ctx.root}/etc/apt/apt.conf.d/51gpuops-nvidia"
    steps.append(
        RepairStep(
            command=(
                "printf '%s\\n' 'Unattended-Upgrade::Package-Blacklist {' '    \"nvidia-\";' '    \"libnvidia-\";' "  # noqa: E501
                f"'}};' > {shlex.quote(conf)}"
            ).replace("}};", "};"),
            optional=True,
            verify=f"grep -q libnvidia- {shlex.quote(conf)}",
            why="keep unattended-upgrades away from driver packages (upgrade them when you can reboot)",
        )
    )
    return steps


def mismatch(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return [
        RepairStep(
            command="rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia && modprobe nvidia_uvm",  # noqa: E501
            why="reload the kernel module at the installed version without a reboot (only works when no "
            "process uses the GPU and no display runs on it)",
            verify="nvidia-smi",
            resolves="driver_library_mismatch_needs_reboot",
        ),
        reboot_step(
            "load the kernel module that matches the installed driver",
            resolves="driver_library_mismatch_needs_reboot",
        ),
        *prevention(f, ctx),
    ]


def rebuild_module(f: Facts, ctx: Ctx, kernel: str | None = None) -> list[RepairStep]:
    k = kernel or f.kernel or "$(uname -r)"
    mgr = _mgr(f)
    steps: list[RepairStep] = []
    stale = []
    for e in f.dkms.errors if f.dkms else []:
        m = re.search(r"(/var/lib/dkms/[^/\s]+/[^/\s]+)/source/dkms\.conf does not exist", e)
        if m:
            stale.append(m.group(1))
    for s in stale:
        steps.append(
            RepairStep(
                command=f"rm -rf {shlex.quote(ctx.root + s)}",
                why=f"{s} is a leftover DKMS tree without dkms.conf; it makes every dkms run fail",
                verify=f"test ! -e {shlex.quote(ctx.root + s)}",
            )
        )
    if mgr == "dpkg":
        steps.append(
            RepairStep(
                command=f"apt-get install -y linux-headers-{k} dkms",
                why="DKMS needs the headers of the kernel it builds for",
            )
        )
    elif mgr == "rpm":
        steps.append(
            RepairStep(
                command=f"dnf install -y kernel-devel-{k} dkms",
                why="DKMS needs the headers of the kernel it builds for",
            )
        )
    else:
        steps.append(
            RepairStep(
                command="pacman -S --needed linux-headers dkms",
                why="DKMS needs the headers of every kernel it builds for (e.g. linux-cachyos-headers "
                "for linux-cachyos)",
            )
        )
    ver = f.installed_module_version or f.driver_version or f.userspace_driver_version
    if f.dkms is not None and not f.dkms.available and not _driver_packages(f):
        steps.append(
            RepairStep(
                command=f"sh NVIDIA-Linux-x86_64-{ver or '<driver-version>'}.run --dkms --silent",
                why="the driver came from the .run installer without DKMS: reinstall the same "
                "version with --dkms so that every future kernel gets a module",
            )
        )
    elif ver:
        steps.append(
            RepairStep(
                command=f"dkms install nvidia/{ver} -k {k}",
                why=f"build and install the NVIDIA module for kernel {k}",
                verify=f"modinfo -k {k} -F version nvidia",
                resolves="kernel_module_not_built_after_upgrade",
            )
        )
    else:
        steps.append(
            RepairStep(
                command=f"dkms autoinstall -k {k}",
                why=f"build every registered DKMS module (nvidia) for kernel {k}",
                verify=f"modinfo -k {k} -F version nvidia",
                resolves="kernel_module_not_built_after_upgrade",
            )
        )
    if kernel is None:
        steps.append(
            RepairStep(
                command="modprobe nvidia",
                why="load the new module",
                verify="nvidia-smi",
                resolves="kernel_module_not_built_after_upgrade",
            )
        )
    return steps


def install_driver(f: Facts, ctx: Ctx) -> list[RepairStep]:
    mgr = _mgr(f)
    cmd = {
        "dpkg": "apt-get install -y nvidia-driver",
        "rpm": "dnf install -y akmod-nvidia",
        "pacman": "pacman -S --needed nvidia-dkms",
    }[mgr]
    if "ubuntu" in (f.os_name or "").lower():
        cmd = "ubuntu-drivers install"
    return [
        RepairStep(command=cmd, why="install the distribution's NVIDIA driver (with DKMS)"),
        reboot_step("load the new driver"),
    ]


def blacklist_nouveau(f: Facts, ctx: Ctx) -> list[RepairStep]:
    path = f"{ctx.root}/etc/modprobe.d/blacklist-nouveau.conf"
    mgr = _mgr(f)
    initramfs = {"dpkg": "update-initramfs -u", "rpm": "dracut --force", "pacman": "mkinitcpio -P"}[mgr]
    steps = [
        RepairStep(
            command=f"mkdir -p {shlex.quote(ctx.root + '/etc/modprobe.d')} && "
            f"printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' > {shlex.quote(path)}",
            why="stop nouveau from loading",
            verify=f"grep -q '^blacklist nouveau' {shlex.quote(path)}",
        ),
        RepairStep(command=initramfs, why="the initramfs carries its own modprobe configuration; rebuild it"),
    ]
    if mgr == "rpm":
        steps.append(
            RepairStep(
                command='grubby --update-kernel=ALL --args="modprobe.blacklist=nouveau"',
                why="rd.driver.blacklist only covers the initramfs; this also covers the real root",
            )
        )
    steps.append(
        reboot_step("boot without nouveau so the NVIDIA module can bind", resolves="nouveau_conflict")
    )
    return steps


def secure_boot(f: Facts, ctx: Ctx) -> list[RepairStep]:
    return [
        RepairStep(
            command="mokutil --import /var/lib/shim-signed/mok/MOK.der",
            why="queue the key DKMS signs modules with for enrolment (you choose a one-time password)",
        ),
        RepairStep(
            command="systemctl reboot",
            needs_reboot=True,
            why="at the blue MokManager screen choose 'Enroll MOK' and enter the password; on cloud VMs "
            "use the serial console, or turn Secure Boot off in the VM's security settings",
        ),
        RepairStep(
            command="mokutil --sb-state && modprobe nvidia",
            why="check the module now loads",
            verify="nvidia-smi",
            resolves="secure_boot_blocks_module",
        ),
    ]


def fabric_manager(f: Facts, ctx: Ctx) -> list[RepairStep]:
    ver = f.driver_version or "<driver-version>"
    branch = ver.split(".")[0]
    return [
        RepairStep(
            command=f"apt-get install -y nvidia-fabricmanager-{branch}={ver}-1",
            why="Fabric Manager must match the driver version exactly",
        ),
        RepairStep(
            command="systemctl enable --now nvidia-fabricmanager",
            why="start it now and at boot",
            verify="systemctl is-active nvidia-fabricmanager",
        ),
    ]


def _best_torch_variant(f: Facts, ctx: Ctx, torch_version: str | None) -> str | None:
    kb = ctx.kb
    if kb is None or not torch_version:
        return None
    try:
        variants = kb.torch_variants(torch_version.split("+")[0])
    except Exception:
        return None
    ccs = [cc for _, cc in _ccs(ctx)]
    best = None
    for v in variants:
        m = re.match(r"cu(\d+)(\d)$", v)
        if not m:
            continue
        cuda = f"{m.group(1)}.{m.group(2)}"
        if f.driver_version:
            try:
                if kb.driver_supports_cuda(f.driver_version, cuda).ok is False:
                    continue
            except Exception:
                pass
        if ccs:
            try:
                al = kb.torch_arch_list(torch_version.split("+")[0], cuda)
            except Exception:
                al = None
            if al is not None and not all(kb.build_runs_on(cc, al.sms, al.ptx) for cc in ccs):
                continue
        best = v  # variants are listed oldest CUDA first
    return best


def _ccs(ctx: Ctx) -> list[tuple[str, str]]:
    from gpuops.doctor.checks import _gpu_cc

    return _gpu_cc(ctx)


def _torch_reinstall(f: Facts, ctx: Ctx, fw: Framework | None, variant: str | None, why: str) -> RepairStep:
    ver = (fw.version or "").split("+")[0] if fw else ""
    pin = f"torch=={ver}" if ver else "torch"
    idx = f"{TORCH_INDEX}/{variant or 'cu<XY>'}"
    return _pip_step(f, f"install --force-reinstall {pin} --index-url {idx}", why)


def driver_too_old(f: Facts, ctx: Ctx, fws: list[Framework]) -> list[RepairStep]:
    steps = []
    torch = next((fw for fw in fws if fw.name == "torch"), None) or f.framework("torch")
    if torch and torch.cuda:
        v = _best_torch_variant(f, ctx, torch.version)
        steps.append(
            _torch_reinstall(
                f, ctx, torch, v, "a torch build for a CUDA this driver runs (no root, no reboot)"
            )
        )
    need = max(
        (fw.cuda for fw in fws if fw.cuda),
        default=None,
        key=lambda c: tuple(int(x) for x in re.findall(r"\d+", c)),
    )
    steps.extend(upgrade_driver(f, ctx, need))
    return steps


def upgrade_driver(f: Facts, ctx: Ctx, cuda: str | None) -> list[RepairStep]:
    floor = None
    if ctx.kb is not None and cuda:
        try:
            d = ctx.kb.min_driver_for_cuda(cuda)
            floor = d.minor_compat_min or d.full_feature_min if d else None
        except Exception:
            floor = None
    branch = floor.split(".")[0] if floor else "<branch>"
    mgr = _mgr(f)
    cmd = {
        "dpkg": f"apt-get install -y nvidia-driver-{branch}",
        "rpm": "dnf upgrade -y 'nvidia-driver*'",
        "pacman": "pacman -Syu nvidia-dkms",
    }[mgr]
    why = f"a driver >= {floor} runs CUDA {cuda}" if floor else "a newer driver"
    return [
        RepairStep(command=cmd, why=why + " (or any newer branch)"),
        reboot_step("load the new driver", resolves="driver_too_old_for_cuda"),
    ]


def cpu_only(f: Facts, ctx: Ctx, fw: Framework) -> list[RepairStep]:
    if fw.name == "torch":
        steps = []
        if fw.source == "conda-meta" or fw.dist.startswith("pytorch"):
            feature = next(
                (m.split("-1.0")[0] for m in f.conda_meta if m.startswith(("cpuonly", "cpu-only"))), "cpuonly"
            )
            steps.append(
                RepairStep(
                    command=f"conda remove {feature}",
                    needs_root=False,
                    why="the cpuonly feature package keeps the solver on CPU builds",
                )
            )
            steps.append(
                RepairStep(
                    command=f"conda install {fw.dist}={fw.version} pytorch-cuda -c pytorch -c nvidia"
                    if fw.version
                    else "conda install pytorch pytorch-cuda -c pytorch -c nvidia",
                    needs_root=False,
                    why="install the CUDA build (check the build string: not *cpu*)",
                )
            )
            return steps
        v = _best_torch_variant(f, ctx, fw.version)
        return [_torch_reinstall(f, ctx, fw, v, "install the CUDA build of the same torch version")]
    if fw.name == "tensorflow":
        ver = fw.version or ""
        return [
            _pip_step(f, "uninstall -y tensorflow", "remove the CPU-only package"),
            _pip_step(
                f,
                f"install tensorflow-gpu=={ver}"
                if ver and ver.startswith(("0.", "1.", "2.0"))
                else f"install 'tensorflow[and-cuda]=={ver}'",
                "the GPU build of the same version",
            ),
        ]
    return [
        _pip_step(f, "install --upgrade 'jax[cuda12]'", "JAX with its CUDA plugin")
    ]


def torch_for_toolkit(f: Facts, ctx: Ctx, cuda: str) -> list[RepairStep]:
    mm = re.match(r"(\d+)\.(\d+)", cuda)
    variant = f"cu{mm.group(1)}{mm.group(2)}" if mm else None
    torch = f.framework("torch")
    return [
        _torch_reinstall(
            f,
            ctx,
            torch,
            variant,
            f"a torch build for CUDA {cuda}, the toolkit that compiles "
            f"extensions here (check the index lists this variant)",
        ),
        _manual_step(
            "export CUDA_HOME=/usr/local/cuda-<torch.version.cuda>",
            "or point CUDA_HOME/PATH at a toolkit of torch's CUDA version",
        ),
    ]


def cuda_libs(f: Facts, ctx: Ctx, cuda: str) -> list[RepairStep]:
    major_minor = ".".join(cuda.split(".")[:2]) if "." in cuda else f"{cuda}.0"
    return [
        RepairStep(
            command=f"apt-get install -y cuda-toolkit-{major_minor.replace('.', '-')}",
            why=f"install the CUDA {major_minor} libraries next to the current toolkit "
            f"(then put /usr/local/cuda-{major_minor}/lib64 on the loader path)",
        ),
        _manual_step(
            "# or install a framework release built for the CUDA already installed",
            "see `gpuops compat --tensorflow <version>`",
        ),
    ]


def cudnn(f: Facts, ctx: Ctx) -> list[RepairStep]:
    torch = f.framework("torch")
    steps = []
    if torch is not None or f.ld_library_path:
        steps.append(
            _manual_step(
                "unset LD_LIBRARY_PATH  # or drop the directory with the other cuDNN",
                "torch wheels bring the cuDNN they were built with; an older one found first on "
                "the loader path replaces it",
            )
        )
    if torch is None or f.framework("tensorflow"):
        steps.append(
            RepairStep(
                command="apt-get install -y libcudnn<major>-cuda-<cuda major>",
                why="install the cuDNN "
                "major version the framework was built with, for the installed CUDA major",
            )
        )
    return steps


def ld_path(f: Facts, ctx: Ctx, bad: list[str]) -> list[RepairStep]:
    keep = [d for d in f.ld_library_path or [] if d not in bad]
    return [
        _manual_step(
            f"export LD_LIBRARY_PATH={':'.join(keep)}" if keep else "unset LD_LIBRARY_PATH",
            "drop the directories with another cuDNN (and the line or `module load` that adds them)",
        )
    ]


def arch(f: Facts, ctx: Ctx, ccs: list[tuple[str, str]]) -> list[RepairStep]:
    torch = f.framework("torch")
    if torch and torch.version and any(fw.name == "torch" for fw in f.frameworks or []):
        v = _best_torch_variant(f, ctx, torch.version)
        return [
            _torch_reinstall(
                f,
                ctx,
                torch,
                v,
                "a wheel variant whose architecture list covers this GPU (`gpuops compat --gpu <name>`)",
            )
        ]
    return [
        _manual_step(
            "# rebuild on a CUDA toolkit that knows this GPU (CuPy: a matching cupy-cudaXXX wheel)",
            "see `gpuops compat --gpu <name>` for the first CUDA that supports this architecture",
        )
    ]


def cupy_reinstall(f: Facts, ctx: Ctx) -> list[RepairStep]:
    names = [n for n, _ in f.cupy_packages] or ["cupy-cudaXXX"]
    return [
        _pip_step(f, "uninstall -y " + " ".join(names), "they share one cupy/ tree: remove all of them"),
        _pip_step(f, "install cupy-cuda<major>x", "reinstall only the package for this CUDA major"),
    ]


def cupy_for_chainer(f: Facts, ctx: Ctx, spec: str | None) -> list[RepairStep]:
    names = [n for n, _ in f.cupy_packages] or ["cupy"]
    return [
        _pip_step(f, "uninstall -y " + " ".join(names), "remove the CuPy Chainer cannot use"),
        _pip_step(
            f,
            f"install 'cupy-cudaXXX{spec or '>=7,<8'}'",
            "XXX = the CUDA version, e.g. cupy-cuda101; CuPy v7 wheels exist for CUDA 8.0-11.0",
        ),
    ]


def container_toolkit(f: Facts, ctx: Ctx) -> list[RepairStep]:
    steps = []
    if f.docker_snap:
        steps.append(
            RepairStep(
                command="snap remove docker",
                why="the snap Docker does not use the NVIDIA toolkit; "
                "install docker-ce (or docker.io) from apt instead",
            )
        )
    mgr = _mgr(f)
    inst = {
        "dpkg": "apt-get install -y nvidia-container-toolkit",
        "rpm": "dnf install -y nvidia-container-toolkit",
        "pacman": "pacman -S --needed nvidia-container-toolkit",
    }[mgr]
    steps += [
        RepairStep(
            command=inst, why="the NVIDIA Container Toolkit (from NVIDIA's libnvidia-container repository)"
        ),
        RepairStep(
            command="nvidia-ctk runtime configure --runtime=docker",
            why="register the nvidia runtime in /etc/docker/daemon.json",
        ),
        RepairStep(
            command="systemctl restart docker",
            why="let the daemon read it",
            verify="docker info | grep -q nvidia",
            resolves="container_toolkit_missing",
        ),
    ]
    return steps
