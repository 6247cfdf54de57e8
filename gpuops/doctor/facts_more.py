"""Facts for the failure modes beyond the first fixture set, one function per area.

``facts_from_capture`` (``gpuops.doctor.facts``) calls each ``derive_<area>(cap, f)`` after the
basic facts are in place. Every value stays ``None`` (unknown) unless the capture holds an
observation or a statement for it; values that fail their grammar (``gpuops.doctor.grammar``) are
recorded in ``f.unreadable`` instead of being taken as facts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpuops.doctor import grammar
from gpuops.doctor.capture import Capture, PciDevice

if TYPE_CHECKING:
    from gpuops.doctor.facts import Facts

# Turing (compute capability 7.5) is the oldest architecture the open kernel modules support, and
# Blackwell (10.x, 12.x) needs them: NVIDIA driver README, "NVIDIA Open GPU Kernel Modules"
# (https://download.nvidia.com/XFree86/Linux-x86_64/560.35.03/README/kernel_open.html) and the
# open-gpu-kernel-modules README (https://github.com/NVIDIA/open-gpu-kernel-modules).
OPEN_MODULE_MIN_CC = (7, 5)
OPEN_MODULE_REQUIRED_CC = (10, 0)


def _cc_key(cc: str | None) -> tuple[int, ...] | None:
    if not cc:
        return None
    m = re.match(r"(\d+)\.(\d+)$", cc)
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- platform ----------------------------------------------------------------------------------


def _os_release(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for ln in (text or "").splitlines():
        m = re.match(r'^([A-Z_]+)="?([^"\n]*)"?\s*$', ln.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def derive_platform(cap: Capture, f: Facts) -> None:
    osr = _os_release(cap.file("/etc/os-release"))
    if osr.get("ID") and grammar.package_name(osr["ID"]):
        f.os_id = osr["ID"].lower()
    f.os_id_like = [x for x in osr.get("ID_LIKE", "").lower().split() if grammar.package_name(x)]
    if osr.get("VERSION_ID") and grammar.version(osr["VERSION_ID"]):
        f.os_version_id = osr["VERSION_ID"]
    if f.os_id is None and f.os_name:
        low = f.os_name.lower()
        for name in ("ubuntu", "debian", "fedora", "rocky", "almalinux", "centos", "rhel", "opensuse",
                     "sles", "arch", "manjaro", "pop", "linuxmint"):
            if name in low:
                f.os_id = {"pop": "pop", "linuxmint": "linuxmint"}.get(name, name)
                break
        if "red hat" in low:
            f.os_id = "rhel"
    f.python_executable = cap.python.executable or None
    st = cap.stated
    proc_version = cap.file("/proc/version") or ""
    wsl_kernel = re.search(r"microsoft|WSL", (f.kernel or "") + " " + proc_version, re.I)
    if wsl_kernel or cap.globs.get("/usr/lib/wsl/lib/libcuda.so*"):
        f.wsl = True
    elif st and st.wsl is not None:
        f.wsl = st.wsl
        f.stated_keys.add("wsl")
    elif f.kernel and cap.kind != "report":
        f.wsl = False
    if st:
        for key in ("rebooted_since_upgrade", "suspend_resume", "driver_install_method"):
            val = getattr(st, key)
            if val is not None:
                setattr(f, key, val)
                f.stated_keys.add(key)
    resumed = re.compile(r"PM: suspend exit|ACPI: Waking up from system sleep|PM: resume")
    if f.suspend_resume is None and f.kernel_log is not None and any(
        resumed.search(ln) for ln in f.kernel_log.lines
    ):
        f.suspend_resume = True


# -- kernel module -------------------------------------------------------------------------


_LSPCI_DEV = re.compile(
    r"^(?P<slot>(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+(?P<cls>[^:]+?)"
    r"(?: \[(?P<clsid>[0-9a-f]{4})\])?:\s*(?P<desc>.*?)(?:\[(?P<vendor>10de):(?P<dev>[0-9a-f]{4})\])?.*$",
    re.I,
)


def parse_lspci_k(text: str) -> list[PciDevice]:
    """``lspci -nnk`` / ``lspci -k``: NVIDIA devices and the kernel driver bound to each."""
    out: list[PciDevice] = []
    cur: PciDevice | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if not raw[:1].isspace():
            m = _LSPCI_DEV.match(raw.strip())
            cur = None
            if m and ("nvidia" in raw.lower() or m.group("vendor")):
                clsid = m.group("clsid")
                cls = m.group("cls").lower()
                pci_class = f"0x{clsid}00" if clsid else ("0x030000" if "vga" in cls or "3d" in cls else None)
                cur = PciDevice(slot=m.group("slot"), vendor="0x10de", device=m.group("dev"),
                                pci_class=pci_class)
                out.append(cur)
            continue
        if cur is not None:
            m2 = re.match(r"\s*Kernel driver in use:\s*(\S+)", raw)
            if m2:
                cur.driver = m2.group(1)
    return out


def derive_kmod(cap: Capture, f: Facts) -> None:
    ls = cap.cmd("lsmod")
    if ls is not None and ls.ran and ls.stdout and f.modules_loaded is None:
        mods = {ln.split()[0] for ln in ls.stdout.splitlines()[1:] if ln.split()}
        f.modules_loaded = mods if not ls.excerpt else None
        f.modules_seen = mods
    elif f.modules_loaded is not None:
        f.modules_seen = set(f.modules_loaded)
    lk = cap.cmd("lspci-k")
    if lk is not None and lk.text:
        devs = parse_lspci_k(lk.text)
        if f.pci_nvidia is None and devs:
            f.pci_nvidia = devs
            if f.gpu_present is None and any((d.pci_class or "").startswith("0x03") for d in devs):
                f.gpu_present = True
        else:
            for d in devs:
                for known in f.pci_nvidia or []:
                    if known.slot.endswith(d.slot) and not known.driver:
                        known.driver = d.driver
    if "/dev/nvidia*" in cap.globs:
        f.dev_nodes = sorted(cap.globs["/dev/nvidia*"])
    if f.modules_seen is not None and "nvidia" in f.modules_seen:
        f.uvm_loaded = "nvidia_uvm" in f.modules_seen if f.modules_loaded is not None else (
            True if "nvidia_uvm" in f.modules_seen else None)
    for d in f.pci_nvidia or []:
        if d.driver in ("vfio-pci", "nova_core", "pci-stub", "nova-core"):
            f.other_driver = d.driver
    if f.other_driver is None and f.modules_loaded and "nova_core" in f.modules_loaded:
        f.other_driver = "nova_core"
    if f.cmdline and re.search(r"vfio-pci\.ids=[^\s]*10de:", f.cmdline):
        f.vfio_ids_in_cmdline = True
    grub = cap.file("/etc/default/grub")
    if grub is not None:
        f.grub_cmdline = "\n".join(ln for ln in grub.splitlines() if ln.startswith("GRUB_CMDLINE_LINUX"))
    # the open or the proprietary kernel module
    flav = f.driver_flavour
    if flav is None and cap.stated and cap.stated.module_flavour:
        flav = cap.stated.module_flavour
        f.stated_keys.add("module_flavour")
    if flav is None and any(
        re.match(r"nvidia-(driver|dkms|kernel-source)-\d+-open$", p) or p.startswith("nvidia-open")
        or p == "kmod-nvidia-open-dkms"
        for p in f.os_packages or {}
    ):
        flav = "open"
    f.module_flavour = flav
    # DKMS: build logs and keys
    for path, rec in cap.files.items():
        make_log = re.match(
            r"/var/lib/dkms/nvidia[^/]*/[^/]+/(build/make\.log|[^/]+/[^/]+/log/make\.log)$", path
        )
        if make_log and rec.content:
                f.dkms_build_errors = [
                    ln.strip() for ln in rec.content.splitlines()
                    if re.search(r"\berror\b|\*\*\* |No such file|unrecognized command", ln, re.I)
                ][:6]
    for pat in ("/var/lib/shim-signed/mok/MOK.der", "/var/lib/dkms/mok.pub", "/var/lib/dkms/mok.key"):
        for p in cap.globs.get(pat, []):
            if p.endswith((".der", ".pub")):
                f.mok_keys.append(p)
    mt = cap.cmd("mokutil-test-key")
    if mt is not None and mt.text:
        if re.search(r"is not enrolled", mt.text):
            f.mok_enrolled = False
        elif re.search(r"is already enrolled", mt.text):
            f.mok_enrolled = True
    di = cap.cmd("dkms-install")
    if di is not None and di.text:
        f.dkms_build_errors = (f.dkms_build_errors or []) + [
            ln.strip() for ln in di.text.splitlines()
            if re.search(r"Error!|bad exit status|Bad return status|cannot be found|error:", ln, re.I)
        ][:6]


# -- hardware, MIG, persistence ---------------------------------------------------------------

_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\): (\d+)")


def _smi_table_columns(text: str) -> list[dict[str, str]]:
    """Per-GPU Persistence-M, MIG M. and driver model (TCC/WDDM) from the plain nvidia-smi table."""
    rows: list[dict[str, str]] = []
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        m = re.match(r"^\|\s+(\d+)\s+(.+?)\s+(On|Off|TCC|WDDM)\s*\|", ln)
        if not m:
            continue
        row = {"index": m.group(1), "pm": m.group(3)}
        if i + 1 < len(lines):
            nxt = lines[i + 1]
            mm = re.search(r"\|\s*(Enabled|Disabled|N/A)\s*\|\s*$", nxt)
            if mm:
                row["mig"] = mm.group(1)
        if m.group(3) in ("TCC", "WDDM"):
            row["model"] = m.group(3)
        rows.append(row)
    return rows


def derive_hardware(cap: Capture, f: Facts) -> None:
    texts = [t for _, t in f.error_texts]
    kl = cap.cmd("kernel-log")
    if kl is not None and kl.text:
        texts.append(kl.text)
    seen: set[tuple[str, int]] = set()
    for t in texts:
        for ln in t.splitlines():
            m = _XID.search(ln)
            if m and (m.group(1), int(m.group(2))) not in seen:
                seen.add((m.group(1), int(m.group(2))))
                f.xids.append((m.group(1), int(m.group(2)), ln.strip()))
            if re.search(r"GSP|gsp_|RmInitAdapter failed", ln) and re.search(
                r"fail|timeout|timed out|error", ln, re.I
            ):
                f.gsp_errors.append(ln.strip())
    f.gsp_errors = list(dict.fromkeys(f.gsp_errors))[:6]
    smi = cap.cmd("nvidia-smi")
    if smi is not None and smi.text:
        cols = _smi_table_columns(smi.text)
        for row in cols:
            idx = int(row["index"])
            g = next((g for g in f.gpus or [] if g.index == idx), None)
            if g is None:
                continue
            if row.get("mig") in ("Enabled", "Disabled") and g.mig_mode is None:
                g.mig_mode = row["mig"].lower()
            if row.get("pm") in ("On", "Off") and g.persistence_mode is None:
                g.persistence_mode = "enabled" if row["pm"] == "On" else "disabled"
        if any(r.get("model") == "TCC" for r in cols):
            f.tcc_mode = True
    nv = cap.nvml
    if nv is not None and nv.ok:
        for ng in nv.gpus:
            g = next((g for g in f.gpus or [] if g.index == ng.index), None)
            if g is not None:
                g.mig_mode = ng.mig_mode or g.mig_mode
                g.mig_instances = ng.mig_instances
                g.persistence_mode = ng.persistence_mode or g.persistence_mode
                g.pci_bus_id = ng.pci_bus_id
    mig = cap.cmd("nvidia-smi-mig")
    if mig is not None and mig.text:
        if re.search(r"No GPU instances found|No MIG-enabled devices found", mig.text, re.I):
            f.mig_no_instances = "No MIG-enabled" not in mig.text
            if "No MIG-enabled" in mig.text:
                f.mig_no_instances = None
        elif re.search(r"GPU instances:|\|\s+\d+\s+MIG\s+\S+", mig.text):
            f.mig_no_instances = False
    st = cap.stated
    if st and st.mig_enabled is not None and not any(g.mig_mode for g in f.gpus or []):
        f.mig_stated = st.mig_enabled
        f.stated_keys.add("mig_enabled")
    if st and st.persistence_mode is not None:
        f.persistence_stated = st.persistence_mode
        f.stated_keys.add("persistence_mode")
    pd = cap.cmd("systemctl-persistenced")
    if pd is not None and pd.text:
        f.persistenced = pd.text.strip().splitlines()[0] if pd.text.strip() else None


# -- containers ----------------------------------------------------------------------------------


def derive_containers(cap: Capture, f: Facts) -> None:
    di = cap.cmd("docker-info")
    if di is not None and di.text:
        m = re.search(r'"?Cgroup ?Driver"?\s*[:=]\s*"?(\w+)', di.text)
        if m:
            f.docker_cgroup_driver = m.group(1)
    if f.daemon_json and re.search(r"native\.cgroupdriver\s*=\s*cgroupfs", f.daemon_json):
        f.docker_cgroup_driver = "cgroupfs"
    for path, rec in cap.files.items():
        if (path.startswith(("/etc/cdi/", "/var/run/cdi/"))) and rec.content:
            for v in re.findall(r"\.so\.(\d{3}\.\d+(?:\.\d+)?)\b", rec.content):
                if grammar.driver_version(v):
                    f.cdi_driver_versions.add(v)
    cli = cap.cmd("nvidia-container-cli")
    if cli is not None and cli.text:
        m = re.search(r"NVRM version:\s*(\S+)", cli.text)
        if m and grammar.driver_version(m.group(1)):
            f.container_cli_driver = m.group(1)
    st = cap.stated
    if st and st.container_required_cuda and grammar.cuda_version(st.container_required_cuda):
        f.container_required_cuda = st.container_required_cuda
        f.stated_keys.add("container_required_cuda")
    req = cap.env.get("NVIDIA_REQUIRE_CUDA") or ""
    m = re.search(r"cuda>=(\d+\.\d+)", req)
    if m and f.container_required_cuda is None:
        f.container_required_cuda = m.group(1)
    # the fabric manager package and its version
    for name, ver in (f.os_packages or {}).items():
        if re.match(r"(nvidia-)?fabricmanager|nvidia-fabric-?manager", name) and ver and ver != "?":
            m = re.search(r"(\d{3}\.\d+(?:\.\d+)?)", ver)
            if m:
                f.fabricmanager_version = m.group(1)


# -- libraries: WSL's libcuda, conda ------------------------------------------------------------


def derive_libraries(cap: Capture, f: Facts) -> None:
    for k, d in (cap.packages or {}).items():
        if k.startswith("nvidia-") and grammar.package_name(k):
            f.cuda_wheels[k] = d.version
    for sp in cap.stated.packages if cap.stated else []:
        if sp.name.startswith("nvidia-") and grammar.package_name(sp.name):
            f.cuda_wheels.setdefault(sp.name, sp.version)
    libcuda = (f.cuda_libs or {}).get("libcuda.so.1") or []
    f.libcuda_paths = list(libcuda)
    f.wsl_libcuda = list(cap.globs.get("/usr/lib/wsl/lib/libcuda.so*", []))
    ld = cap.cmd("ldconfig-p")
    if ld is not None and re.search(r"libcuda\.so\.1 is not a symbolic link", ld.text):
        f.libcuda_not_symlink = True
    for log in f.logs:
        if re.search(r"libcuda\.so\.1 is not a symbolic link", log.text):
            f.libcuda_not_symlink = True
    conda_cuda = [m for m in f.conda_meta if re.match(r"(cudatoolkit|cudnn|cuda-cudart|cuda-runtime)-\d", m)]
    f.conda_cuda_packages = conda_cuda
    prefix = cap.env.get("CONDA_PREFIX")
    if prefix and f.ld_library_path:
        f.conda_lib_on_ld_path = any(p.rstrip("/") == prefix.rstrip("/") + "/lib" for p in f.ld_library_path)


def sanitize(f: Facts) -> None:
    """Every probed value that may reach a repair step or a report must read as what it claims
    to be (``gpuops.doctor.grammar``); one that does not becomes "unreadable", not a fact.

    A tool that prints ``Driver Version: 550.54.15;touch${IFS}/tmp/X;#`` leaves the driver version
    unknown, with the raw text kept (in ``f.unreadable``) for the report to mention, never to run."""

    def check(name: str, rule: object) -> None:
        val = getattr(f, name)
        if val is not None and rule(val) is None:  # type: ignore[operator]
            f.unreadable[name] = str(val)[:80]
            setattr(f, name, None)

    for name in ("driver_version", "userspace_driver_version", "loaded_module_version",
                 "installed_module_version", "fabricmanager_version", "container_cli_driver"):
        check(name, grammar.driver_version)
    check("kernel", grammar.kernel_release)
    for name in ("cuda_driver_version", "nvcc_version", "os_version_id"):
        check(name, grammar.version)
    if f.kernels_installed is not None:
        bad = [k for k in f.kernels_installed if grammar.kernel_release(k) is None]
        if bad:
            f.unreadable["kernels_installed"] = ", ".join(bad)[:80]
            f.kernels_installed = [k for k in f.kernels_installed if k not in bad]
    if f.kernels_with_nvidia is not None:
        f.kernels_with_nvidia = {k: v for k, v in f.kernels_with_nvidia.items() if grammar.kernel_release(k)}
    if f.os_packages is not None:
        bad = [k for k in f.os_packages if grammar.package_name(k.split(":", 1)[0]) is None]
        if bad:
            f.unreadable["os_packages"] = ", ".join(bad)[:80]
            f.os_packages = {k: v for k, v in f.os_packages.items() if k not in bad}
    for fw in f.frameworks or []:
        if fw.version is not None and grammar.version(fw.version) is None:
            f.unreadable[f"{fw.dist} version"] = fw.version[:80]
            fw.version = None
        if fw.cuda is not None and grammar.version(fw.cuda.replace(".x", "")) is None:
            f.unreadable[f"{fw.dist} CUDA"] = fw.cuda[:80]
            fw.cuda = None
    if f.dkms is not None:
        keep = []
        for e in f.dkms.entries:
            if grammar.module_name(e.module) and grammar.version(e.version) and (
                e.kernel is None or grammar.kernel_release(e.kernel)
            ):
                keep.append(e)
            else:
                f.unreadable["dkms status"] = f"{e.module}/{e.version}"[:80]
        f.dkms.entries = keep
    for g in f.gpus or []:
        if g.cc is not None and not re.fullmatch(r"\d{1,2}\.\d", g.cc):
            f.unreadable["compute capability"] = g.cc[:20]
            g.cc = None


def derive_all(cap: Capture, f: Facts) -> None:
    derive_platform(cap, f)
    derive_kmod(cap, f)
    derive_hardware(cap, f)
    derive_containers(cap, f)
    derive_libraries(cap, f)
    sanitize(f)


__all__ = ["OPEN_MODULE_MIN_CC", "OPEN_MODULE_REQUIRED_CC", "derive_all", "parse_lspci_k"]
