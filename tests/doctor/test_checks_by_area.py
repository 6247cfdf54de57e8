"""Unit tests of the area checks, built from facts (``tests/doctor/factories.py``), no capture file.

Texts quoted here are real lines: each names where it was printed."""

from __future__ import annotations

from gpuops.doctor.checks import SUPERSEDES, hardware, kmod, platform
from gpuops.doctor.facts import Facts
from tests.doctor import factories as F


def test_vfio_bound_gpu_is_another_driver_not_a_missing_module():
    f = F.facts(pci_nvidia=[F.pci(driver="vfio-pci")], gpu_present=True, smi_status="no_driver",
                smi_message="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    found = F.diagnose_facts(f)
    assert "other_driver_bound" in F.codes(found)
    # the registry, not the module check, drops the consequential "module not loaded" diagnosis
    assert "driver_not_loaded" in SUPERSEDES["other_driver_bound"]
    (fd,) = [x for x in found if x.code == "other_driver_bound"]
    assert "PCI 0000:01:00.0: kernel driver in use: vfio-pci" in fd.evidence
    assert fd.plan


def test_open_module_on_pascal_wants_the_proprietary_one():
    f = F.facts(gpus=[F.gpu(name="NVIDIA GeForce GTX 1080", cc="6.1")], module_flavour="open")
    (fd,) = kmod.check_module_flavour(F.ctx(f))
    assert fd.code == "kernel_module_flavour_mismatch" and "older than Turing" in fd.title


def test_proprietary_module_on_blackwell_wants_the_open_one():
    f = F.facts(gpus=[F.gpu(name="NVIDIA GeForce RTX 5090", cc="12.0")], module_flavour="proprietary")
    (fd,) = kmod.check_module_flavour(F.ctx(f))
    assert "needs the open" in fd.title


def test_open_module_on_ada_is_fine():
    f = F.facts(gpus=[F.gpu(name="NVIDIA GeForce RTX 4090", cc="8.9")], module_flavour="open")
    assert kmod.check_module_flavour(F.ctx(f)) == []


def test_missing_uvm_node_with_the_module_loaded():
    f = F.facts(modules_seen={"nvidia", "nvidia_drm"}, modules_loaded={"nvidia", "nvidia_drm"},
                uvm_loaded=False, dev_nodes=["/dev/nvidia0", "/dev/nvidiactl"], smi_status="ok")
    found = kmod.check_uvm_and_device_nodes(F.ctx(f))
    assert [x.code for x in found] == ["nvidia_uvm_not_loaded"]
    assert any("no /dev/nvidia-uvm" in e for e in found[0].evidence)


def test_module_loaded_but_no_device_nodes():
    f = F.facts(modules_seen={"nvidia", "nvidia_uvm"}, modules_loaded={"nvidia", "nvidia_uvm"},
                uvm_loaded=True, dev_nodes=["/dev/nvidia-uvm"], loaded_module_version="550.54.15")
    assert [x.code for x in kmod.check_uvm_and_device_nodes(F.ctx(f))] == ["device_nodes_missing"]


def test_mig_enabled_without_instances():
    f = F.facts(gpus=[F.gpu(name="NVIDIA A100-SXM4-40GB", cc="8.0", mig_mode="enabled", mig_instances=0)],
                smi_status="ok")
    (fd,) = hardware.check_mig(F.ctx(f))
    assert fd.code == "mig_enabled_no_instances"
    assert "GPU 0 (NVIDIA A100-SXM4-40GB): MIG mode enabled" in fd.evidence


def test_mig_with_instances_is_fine():
    f = F.facts(gpus=[F.gpu(cc="8.0", mig_mode="enabled", mig_instances=3)], smi_status="ok")
    assert hardware.check_mig(F.ctx(f)) == []


def test_persistence_off_on_a_multi_gpu_server_is_a_warning():
    gpus = [F.gpu(index=i, name="NVIDIA H100 80GB HBM3", cc="9.0", persistence_mode="disabled")
            for i in range(4)]
    (fd,) = hardware.check_persistence(F.ctx(F.facts(gpus=gpus)))
    assert fd.code == "persistence_mode_off" and fd.severity == "warning"
    # a single GPU, or the daemon running, is not reported
    assert hardware.check_persistence(F.ctx(F.facts(gpus=gpus[:1]))) == []
    f = F.facts(gpus=gpus, persistenced="active (running)")
    assert hardware.check_persistence(F.ctx(f)) == []


def test_wsl_with_a_linux_driver_inside():
    f = F.facts(wsl=True, kernel="5.15.153.1-microsoft-standard-WSL2",
                os_packages={"nvidia-driver-535": "535.183.01-0ubuntu1"})
    codes = {x.code for x in platform.check_wsl(F.ctx(f))}
    assert codes == {"wsl_linux_driver_installed"}


def test_wsl_libcuda_shadowed_by_another_copy():
    f = F.facts(wsl=True, wsl_libcuda=["/usr/lib/wsl/lib/libcuda.so.1"],
                libcuda_paths=["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"])
    (fd,) = platform.check_wsl(F.ctx(f))
    assert fd.code == "wsl_libcuda_shadowed" and fd.severity == "error"


def test_not_wsl_means_no_wsl_findings():
    assert platform.check_wsl(F.ctx(F.facts(wsl=False, tcc_mode=True))) == []


def test_stated_fact_is_marked():
    f = F.facts(gpus=[F.gpu(cc="6.1")], module_flavour="open")
    f.stated_keys.add("module_flavour")
    (fd,) = kmod.check_module_flavour(F.ctx(f))
    assert "kernel module flavour: open (stated in the report, not observed)" in fd.evidence


def test_a_healthy_fact_set_gives_nothing():
    f = Facts(gpu_present=True, gpus=[F.gpu()], smi_status="ok", driver_version="550.54.15")
    assert F.codes(F.diagnose_facts(f), None) == set()
