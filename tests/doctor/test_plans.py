"""Repair plans fit the machine: the distribution's package manager and package names, argv steps with
no unfilled placeholder, alternatives as alternatives, nothing built on a value that fails its grammar.

The os-release texts below are excerpts of real ``/etc/os-release`` files (the lines that matter: NAME,
ID, ID_LIKE, VERSION_ID, PRETTY_NAME), as the distributions ship them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuops.doctor import diagnose, load_capture, plans
from gpuops.doctor.capture import FileRecord
from gpuops.doctor.facts import Facts, Gpu, facts_from_capture
from gpuops.doctor.findings import RepairStep
from gpuops.doctor.parsers import DkmsStatus

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.capture.yaml")) + sorted((HERE / "corpus").rglob("*.capture.yaml"))

OS_RELEASES: dict[str, tuple[str, str | None]] = {
    "ubuntu-24.04": (
        'NAME="Ubuntu"\nVERSION="24.04.1 LTS (Noble Numbat)"\nID=ubuntu\nID_LIKE=debian\n'
        'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nVERSION_ID="24.04"\n',
        "apt",
    ),
    "debian-12": (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
        'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
        "apt",
    ),
    "fedora-41": (
        'NAME="Fedora Linux"\nVERSION="41 (Workstation Edition)"\nID=fedora\nVERSION_ID=41\n'
        'PRETTY_NAME="Fedora Linux 41 (Workstation Edition)"\n',
        "dnf",
    ),
    "rocky-8.6": (
        'NAME="Rocky Linux"\nVERSION="8.6 (Green Obsidian)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
        'VERSION_ID="8.6"\nPLATFORM_ID="platform:el8"\nPRETTY_NAME="Rocky Linux 8.6 (Green Obsidian)"\n',
        "dnf",
    ),
    "centos-7": (
        'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n'
        'PRETTY_NAME="CentOS Linux 7 (Core)"\n',
        "yum",
    ),
    "opensuse-leap-15.6": (
        'NAME="openSUSE Leap"\nVERSION="15.6"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\n'
        'VERSION_ID="15.6"\nPRETTY_NAME="openSUSE Leap 15.6"\n',
        "zypper",
    ),
    "arch": ('NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n', "pacman"),
    "cachyos": (
        'NAME="CachyOS Linux"\nPRETTY_NAME="CachyOS"\nID=cachyos\nID_LIKE=arch\nBUILD_ID=rolling\n',
        "pacman",
    ),
    "gentoo": ('NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\nVERSION_ID="2.15"\n', None),
}

# Programs that belong to one package-manager family (package managers, initramfs and boot tools).
FAMILY_TOOLS = {
    "apt": {"apt-get", "apt-mark", "update-initramfs", "ubuntu-drivers"},
    "dnf": {"dnf", "dracut", "grubby"},
    "yum": {"yum", "dracut", "grubby"},
    "zypper": {"zypper", "dracut"},
    "pacman": {"pacman", "mkinitcpio"},
}
ALL_TOOLS = set().union(*FAMILY_TOOLS.values()) | {"apt", "dpkg", "rpm"}

KERNELS = {
    "apt": "6.8.0-45-generic",
    "dnf": "6.11.4-301.fc41.x86_64",
    "yum": "3.10.0-1160.el7.x86_64",
    "zypper": "6.4.0-150600.23.7-default",
    "pacman": "6.12.1-arch1-1",
    None: "6.6.52-gentoo",
}


@dataclass
class _Ctx:
    """What plans read from the checks' context: the facts, the knowledge base, the path prefix."""

    facts: Facts
    kb: object | None = None
    root: str = ""
    hits: list = dataclasses.field(default_factory=list)
    kb_hits: list = dataclasses.field(default_factory=list)


def _with_os(path: Path, os_release: str):
    cap = load_capture(path)
    cap.files["/etc/os-release"] = FileRecord(content=os_release)
    cap.stated = dataclasses.replace(cap.stated, os=None) if cap.stated is not None else None
    return cap


def _check_step(step: RepairStep, family: str | None, where: str) -> None:
    assert not plans.has_placeholder(step), f"{where}: unfilled placeholder in {step.command!r}"
    assert isinstance(step.argv, list) and all(isinstance(a, str) for a in step.argv)
    assert step.command, f"{where}: a step that says nothing"
    if step.manual or not step.argv:
        return
    prog = step.argv[0]
    if family is None:
        assert prog not in ALL_TOOLS, f"{where}: a guessed {prog} command on an unknown distribution"
    elif prog in ALL_TOOLS:
        assert prog in FAMILY_TOOLS[family], f"{where}: {prog} on a {family} system"


@pytest.mark.parametrize("variant", sorted(OS_RELEASES))
def test_every_fixture_plan_uses_the_distributions_tools(variant):
    text, family = OS_RELEASES[variant]
    used: set[str] = set()
    assert CAPTURES
    for path in CAPTURES:
        cap = _with_os(path, text)
        assert plans.distro(facts_from_capture(cap)).family == family, path.name
        for step in diagnose(cap).plan():
            _check_step(step, family, f"{variant} {path.name}")
            if step.argv and not step.manual:
                used.add(step.argv[0])
    if family is None:
        assert not used & ALL_TOOLS
    else:
        # not vacuous: the fixtures do produce commands of this family's tools
        assert used & FAMILY_TOOLS[family], f"{variant}: no package-manager step in any plan"


def _facts(family: str | None, os_release: str, **kw) -> Facts:
    cap = _with_os(FIXTURES / "devbox.capture.yaml", os_release)
    f = facts_from_capture(cap)
    f.kernel = KERNELS[family]
    f.driver_version = "550.54.15"
    f.gpus = [
        Gpu(index=0, name="NVIDIA H100 80GB HBM3", cc="9.0"),
        Gpu(index=1, name="NVIDIA H100", cc="9.0"),
    ]
    f.gpu_count = 2
    f.in_container = False
    if family == "apt":
        f.os_packages = {
            "nvidia-driver-550": "550.54.15-0ubuntu1",
            "libnvidia-compute-550": "550.54.15-0ubuntu1",
        }
    f.cuda_libs = {
        "libcuda.so.1": ["/usr/lib/wsl/lib/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    }
    f.cupy_packages = [("cupy-cuda11x", "12.3.0"), ("cupy-cuda12x", "13.0.0")]
    for k, v in kw.items():
        setattr(f, k, v)
    return f


FAMILIES = {
    "load_uvm": lambda f, c: plans.load_uvm(f, c),
    "make_device_nodes": lambda f, c: plans.make_device_nodes(f, c),
    "reload_uvm_after_resume": lambda f, c: plans.reload_uvm_after_resume(f, c),
    "mig": lambda f, c: plans.mig(f, c, [0, 1]),
    "persistence": lambda f, c: plans.persistence(f, c),
    "hardware_fault": lambda f, c: plans.hardware_fault(f, c, "Xid 79"),
    "gsp_firmware": lambda f, c: plans.gsp_firmware(f, c),
    "module_flavour_open": lambda f, c: plans.module_flavour(f, c, "open"),
    "module_flavour_proprietary": lambda f, c: plans.module_flavour(f, c, "proprietary"),
    "unbind_vfio": lambda f, c: plans.unbind_other_driver(f, c, "vfio-pci"),
    "unbind_nova": lambda f, c: plans.unbind_other_driver(f, c, "nova_core"),
    "container_daemon_reload": lambda f, c: plans.container_daemon_reload(f, c),
    "register_runtime": lambda f, c: plans.register_runtime(f, c, default=True),
    "cdi_regenerate": lambda f, c: plans.cdi_regenerate(f, c),
    "docker_snap": lambda f, c: plans.docker_snap(f, c),
    "fabric_manager": lambda f, c: plans.fabric_manager(f, c),
    "fabric_manager_version": lambda f, c: plans.fabric_manager_version(f, c),
    "wsl_remove_linux_driver": lambda f, c: plans.wsl_remove_linux_driver(f, c),
    "wsl_libcuda": lambda f, c: plans.wsl_libcuda(f, c),
    "tcc_mode": lambda f, c: plans.tcc_mode(f, c),
    "jax_cuda": lambda f, c: plans.jax_cuda(f, c, "12.4"),
    "cupy_for_cuda": lambda f, c: plans.cupy_for_cuda(f, c, "12.2"),
    "tf_and_cuda": lambda f, c: plans.tf_and_cuda(f, c, "2.15.0"),
    "conda_shadow": lambda f, c: plans.conda_shadow(f, c, ["cudatoolkit", "cudnn"]),
    "gather": lambda f, c: plans.gather(f, c, "an unexplained Xid"),
    "install_driver": lambda f, c: plans.install_driver(f, c),
    "upgrade_driver": lambda f, c: plans.upgrade_driver(f, c, "12.4"),
    "mismatch": lambda f, c: plans.mismatch(f, c),
    "secure_boot": lambda f, c: plans.secure_boot(f, c),
    "blacklist_nouveau": lambda f, c: plans.blacklist_nouveau(f, c),
    "rebuild_module": lambda f, c: plans.rebuild_module(f, c),
    "container_toolkit": lambda f, c: plans.container_toolkit(f, c),
}


@pytest.mark.parametrize("variant", sorted(OS_RELEASES))
def test_every_plan_function_fits_each_distribution(variant):
    text, family = OS_RELEASES[variant]
    f = _facts(family, text)
    for name, build in FAMILIES.items():
        steps = build(f, _Ctx(f))
        assert steps, name
        for s in steps:
            _check_step(s, family, f"{variant} {name}")


@pytest.mark.parametrize(
    ("variant", "kernel", "package"),
    [
        ("ubuntu-24.04", "6.8.0-45-generic", "linux-headers-6.8.0-45-generic"),
        ("debian-12", "6.1.0-18-amd64", "linux-headers-6.1.0-18-amd64"),
        ("fedora-41", "6.11.4-301.fc41.x86_64", "kernel-devel-6.11.4-301.fc41.x86_64"),
        ("centos-7", "3.10.0-1160.el7.x86_64", "kernel-devel-3.10.0-1160.el7.x86_64"),
        ("opensuse-leap-15.6", "6.4.0-150600.23.7-default", "kernel-default-devel"),
        ("arch", "6.12.1-arch1-1", "linux-headers"),
        ("arch", "6.6.63-1-lts", "linux-lts-headers"),
    ],
)
def test_headers_package_per_distribution(variant, kernel, package):
    text, family = OS_RELEASES[variant]
    f = _facts(family, text, kernel=kernel)
    steps = plans.rebuild_module(f, _Ctx(f))
    inst = next(s for s in steps if s.argv and s.argv[0] in ALL_TOOLS)
    assert package in inst.argv and "dkms" in inst.argv
    assert inst.argv[0] in FAMILY_TOOLS[family]


def test_unknown_distribution_says_what_to_install():
    text, _ = OS_RELEASES["gentoo"]
    f = _facts(None, text)
    (inst, reboot) = plans.install_driver(f, _Ctx(f))
    assert inst.manual and not inst.argv and "driver-installation-guide" in inst.command
    assert reboot.needs_reboot
    hdr = next(s for s in plans.rebuild_module(f, _Ctx(f)) if "headers" in s.command)
    assert hdr.manual and "6.6.52-gentoo" in hdr.command


def test_no_host_driver_change_inside_a_container():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text, in_container=True)
    for build in (plans.install_driver, plans.mismatch, plans.rebuild_module, plans.blacklist_nouveau):
        for s in build(f, _Ctx(f)):
            assert s.manual, s.command
            assert s.command.startswith("on the host: ") or s.optional


def test_pip_runs_through_the_inspected_interpreter():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text, python_executable="/opt/envs/train/bin/python")
    (step,) = plans.tf_and_cuda(f, _Ctx(f), "2.15.0")
    assert step.argv == ["/opt/envs/train/bin/python", "-m", "pip", "install", "tensorflow[and-cuda]==2.15.0"]
    assert not step.needs_root
    f.python_executable = None
    assert plans.jax_cuda(f, _Ctx(f), "12.4")[0].argv[:3] == ["python3", "-m", "pip"]


def test_cupy_gets_the_wheel_of_its_cuda_and_loses_the_others():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text)
    rm, inst = plans.cupy_for_cuda(f, _Ctx(f), "12.2")
    assert rm.argv[3:] == ["uninstall", "-y", "cupy-cuda11x", "cupy-cuda12x"]
    assert inst.argv[3:] == ["install", "cupy-cuda12x"]
    f.cupy_packages = []
    (inst,) = plans.cupy_for_cuda(f, _Ctx(f), "10.2")
    assert inst.argv[-1] == "cupy-cuda102"  # before 11.2, one wheel per minor release


def test_driver_too_old_offers_alternatives():
    steps = diagnose(load_capture(FIXTURES / "real_06.capture.yaml")).plan()
    groups = {s.group for s in steps}
    assert groups == {"driver_too_old_for_cuda"}
    first = [s for s in steps if s.alternative == 1]
    second = [s for s in steps if s.alternative == 2]
    assert first[0].argv[-1] == "https://download.pytorch.org/whl/cu118" and not first[0].needs_root
    assert any(s.needs_reboot or "reboot" in s.command for s in second)


def test_mismatch_reload_or_reboot_and_after_a_reboot_reinstall():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text)
    steps = [s for s in plans.mismatch(f, _Ctx(f)) if not s.optional]
    assert [s.alternative for s in steps] == [1, 1, 1, 2]
    assert steps[0].argv[0] == "rmmod" and steps[-1].needs_reboot
    f.rebooted_since_upgrade = True
    steps = [s for s in plans.mismatch(f, _Ctx(f)) if not s.optional]
    assert all(s.group is None for s in steps)
    assert steps[0].argv == [
        "apt-get",
        "install",
        "-y",
        "--reinstall",
        "libnvidia-compute-550=550.54.15-0ubuntu1",
        "nvidia-driver-550=550.54.15-0ubuntu1",
    ]
    assert steps[1].needs_reboot and len(steps) == 2


def test_secure_boot_enrols_the_key_the_modules_were_signed_with():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text, mok_keys=["/var/lib/shim-signed/mok/MOK.der"])
    steps = plans.secure_boot(f, _Ctx(f))
    assert steps[0].argv == ["mokutil", "--import", "/var/lib/shim-signed/mok/MOK.der"]
    assert {s.alternative for s in steps} == {1, 2}
    assert next(s for s in steps if s.alternative == 2).manual
    f.mok_keys = ["/var/lib/dkms/../../etc/shadow.pub"]
    assert plans.secure_boot(f, _Ctx(f))[0].argv == []  # not a key path: only the manual instruction


def test_a_hostile_driver_version_builds_no_step():
    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text, driver_version="550.54.15;touch${IFS}/tmp/X;#")
    (step,) = plans.fabric_manager(f, _Ctx(f))
    assert step.manual and not step.argv and "could not read the driver version safely" in step.command
    for build in FAMILIES.values():
        for s in build(f, _Ctx(f)):
            assert not any(";" in a or "$" in a for a in [*s.argv, *(s.verify or [])]), s.command


HOSTILE = "1.2;touch${IFS}/tmp/INJ;#"


def test_no_probed_text_reaches_a_step_unchecked():
    """Every string fact is hostile at once: no plan may carry it into a command, path, text or why."""
    from gpuops.doctor.facts import Framework

    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text)
    for key in (
        "os_name",
        "kernel",
        "driver_version",
        "installed_module_version",
        "userspace_driver_version",
        "nvcc_version",
        "cmdline",
        "daemon_json",
        "python_executable",
        "cuda_driver_version",
    ):
        setattr(f, key, HOSTILE)
    f.gpus = [Gpu(index=0, name=HOSTILE, cc=HOSTILE), Gpu(index=1, name=HOSTILE, cc="8.6")]
    f.os_packages = {HOSTILE: HOSTILE, "nvidia-driver-550": HOSTILE}
    f.cupy_packages = [(HOSTILE, HOSTILE)]
    f.mok_keys = [HOSTILE, f"/var/lib/dkms/{HOSTILE}.pub"]
    f.cuda_libs = {"libcuda.so.1": [HOSTILE, f"/usr/lib/{HOSTILE}/libcuda.so.1"]}
    f.ld_library_path = [HOSTILE]
    f.conda_meta = [HOSTILE]
    f.dkms = DkmsStatus(errors=[f"File: /var/lib/dkms/nvidia/{HOSTILE}/source/dkms.conf does not exist."])
    torch = Framework(name="torch", dist="torch", version=HOSTILE, cuda=HOSTILE)
    f.frameworks = [
        torch,
        Framework(name="tensorflow", dist=HOSTILE, version=HOSTILE, cudnn=HOSTILE, cuda=HOSTILE),
    ]
    more = {
        "cpu_only": lambda f, c: plans.cpu_only(f, c, torch),
        "cpu_only_tf": lambda f, c: plans.cpu_only(f, c, f.frameworks[1]),
        "torch_for_toolkit": lambda f, c: plans.torch_for_toolkit(f, c, HOSTILE),
        "arch": lambda f, c: plans.arch(f, c, [(HOSTILE, "8.6")]),
        "cuda_libs": lambda f, c: plans.cuda_libs(f, c, HOSTILE),
        "cudnn": plans.cudnn,
        "ld_path": lambda f, c: plans.ld_path(f, c, []),
        "cupy_reinstall": plans.cupy_reinstall,
        "cupy_for_chainer": lambda f, c: plans.cupy_for_chainer(f, c, HOSTILE),
        "driver_too_old": lambda f, c: plans.driver_too_old(f, c, f.frameworks),
        "jax_hostile": lambda f, c: plans.jax_cuda(f, c, HOSTILE),
        "tf_hostile": lambda f, c: plans.tf_and_cuda(f, c, HOSTILE),
        "conda_hostile": lambda f, c: plans.conda_shadow(f, c, [HOSTILE]),
        "cupy_hostile": lambda f, c: plans.cupy_for_cuda(f, c, HOSTILE),
        "rebuild_hostile": lambda f, c: plans.rebuild_module(f, c, kernel=HOSTILE),
    }
    for rebooted in (False, True):
        f.rebooted_since_upgrade = rebooted
        for name, build in {**FAMILIES, **more}.items():
            for s in build(f, _Ctx(f)):
                parts = [*s.argv, *(s.verify or []), s.text or "", s.why]
                if s.write is not None:
                    parts += [s.write.path, s.write.content]
                assert not any("INJ" in p or "${IFS}" in p for p in parts), f"{name}: {s.command} / {s.why}"


def test_an_unreadable_fact_is_named_not_repeated():
    text, family = OS_RELEASES["ubuntu-24.04"]
    hostile = "550.54.15;touch${IFS}/tmp/X;#"
    f = _facts(family, text, driver_version=None, unreadable={"driver_version": hostile})
    (step,) = plans.fabric_manager(f, _Ctx(f))
    assert step.manual and "could not read the driver version safely" in step.command
    assert "touch" not in step.command and not plans.has_placeholder(step)


def test_daemon_json_is_rewritten_only_from_what_was_read(tmp_path):
    import json

    text, family = OS_RELEASES["ubuntu-24.04"]
    f = _facts(family, text, daemon_json='{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}')
    steps = plans.container_daemon_reload(f, _Ctx(f, root=str(tmp_path)))
    (w,) = [s for s in steps if s.write is not None]
    assert w.write.path == f"{tmp_path}/etc/docker/daemon.json" and w.alternative == 1
    data = json.loads(w.write.content)
    assert data["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime"}}
    assert data["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert any(s.argv[:3] == ["nvidia-ctk", "cdi", "generate"] and s.alternative == 2 for s in steps)
    f.daemon_json = None  # not read: no rewrite that could drop its settings
    steps = plans.container_daemon_reload(f, _Ctx(f, root=str(tmp_path)))
    assert not [s for s in steps if s.write is not None]


def test_dkms_dotdot_path_is_never_deleted(tmp_path):
    text, family = OS_RELEASES["ubuntu-24.04"]
    errors = [
        "Error! Could not locate dkms.conf file.",
        "File: /var/lib/dkms/../../source/dkms.conf does not exist.",
        "File: /var/lib/dkms/nvidia/../../../etc/source/dkms.conf does not exist.",
        "File: /var/lib/dkms/nvidia/390.48/source/dkms.conf does not exist.",
    ]
    f = _facts(family, text, dkms=DkmsStatus(errors=errors))
    steps = plans.rebuild_module(f, _Ctx(f, root=str(tmp_path)))
    rms = [s for s in steps if s.argv[:1] == ["rm"]]
    assert [s.argv for s in rms] == [["rm", "-rf", "--", f"{tmp_path}/var/lib/dkms/nvidia/390.48"]]
    refused = [s for s in steps if s.manual and "nothing is deleted" in s.command]
    assert len(refused) == 2


def test_plan_renders_either_or_in_text_and_json():
    from gpuops.cli.commands.doctor import _render_plan, plan_data

    steps = diagnose(load_capture(FIXTURES / "shine_cluster_30.capture.yaml")).plan()
    text = "\n".join("".join(t for t, _ in line) for line in _render_plan(steps))
    data = plan_data(steps)
    (alt,) = data["alternatives"]
    assert alt["group"] == "driver_library_mismatch"
    assert alt["text"].startswith("either rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia (+2 steps) or ")
    assert alt["text"].endswith("or systemctl reboot")
    assert [len(a) for a in alt["alternatives"]] == [3, 1]
    assert all(s["command"] and (s["argv"] or s["write"]) for s in data["steps"])
    assert "either" in text and "or:" in text
