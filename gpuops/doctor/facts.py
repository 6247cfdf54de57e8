"""Facts: the capture parsed into typed values. ``None`` always means "unknown" (not collected,
or not in what was collected); an empty list means "looked, found none".

Observed values win over ``stated`` ones (facts a person reported in a bug report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpuops.doctor import parsers as P
from gpuops.doctor.capture import Capture, LogRecord, PciDevice
from gpuops.doctor.history import PackageChange, timeline


@dataclass
class Gpu:
    index: int | None
    name: str | None
    cc: str | None
    memory_mib: int | None = None
    source: str = "nvml"
    mig_mode: str | None = None  # "enabled" | "disabled" | None (unknown / not supported)
    mig_instances: int | None = None
    persistence_mode: str | None = None  # "enabled" | "disabled" | None
    pci_bus_id: str | None = None


@dataclass
class Framework:
    name: str  # torch | tensorflow | jax | chainer | cupy | mxnet ...
    dist: str  # the distribution name: tensorflow-gpu, cupy-cuda12x, pytorch (conda) ...
    version: str | None
    cuda: str | None = None  # CUDA the build targets ("12.1"); None = unknown or CPU
    cpu_only: bool | None = None
    cudnn: str | None = None
    archs: list[str] | None = None  # compute capabilities with kernels, e.g. ["5.0", "8.6"]
    source: str = "metadata"


@dataclass
class Toolkit:
    path: str
    version: str | None


@dataclass
class Facts:
    os_name: str | None = None
    os_id: str | None = None  # /etc/os-release ID: ubuntu, debian, fedora, rhel, opensuse-leap, arch ...
    os_id_like: list[str] = field(default_factory=list)  # ID_LIKE
    os_version_id: str | None = None  # VERSION_ID: "22.04", "9.3"
    python_executable: str | None = None  # the inspected interpreter (--python); pip runs through it
    wsl: bool | None = None
    rebooted_since_upgrade: bool | None = None  # True: the last driver upgrade was followed by a boot
    suspend_resume: bool | None = None
    driver_install_method: str | None = None  # package | runfile | conda | cuda-repo | other
    mok_keys: list[str] = field(default_factory=list)  # DKMS / shim MOK public keys found on disk
    unreadable: dict[str, str] = field(default_factory=dict)  # fact -> the raw text that failed its grammar
    kernel: str | None = None
    cpu_model: str | None = None
    python_version: str | None = None
    in_container: bool | None = None

    gpu_present: bool | None = None
    gpus: list[Gpu] | None = None
    gpu_count: int | None = None
    pci_nvidia: list[PciDevice] | None = None

    driver_version: str | None = None  # the user-space driver (NVML / nvidia-smi)
    userspace_driver_version: str | None = None
    loaded_module_version: str | None = None
    installed_module_version: str | None = None
    module_for_running_kernel: bool | None = None
    cuda_driver_version: str | None = None  # highest CUDA the driver supports, "12.2"
    smi_status: str | None = (
        None  # ok | missing | no_driver | mismatch | no_devices | no_library | timeout | error
    )
    smi_message: str | None = None
    nvml_error: str | None = None
    driver_flavour: str | None = None

    modules_loaded: set[str] | None = None
    kernels_installed: list[str] | None = None
    kernels_with_nvidia: dict[str, list[str]] | None = None
    kernels_with_headers: list[str] | None = None
    dkms: P.DkmsStatus | None = None
    dkms_trees: list[str] | None = None
    secure_boot: bool | None = None
    cmdline: str | None = None
    nouveau_blacklisted: bool | None = None
    nouveau_loaded: bool | None = None
    kernel_log: P.KernelLog | None = None

    os_packages: dict[str, str] | None = None
    package_manager: str | None = None
    held_packages: set[str] = field(default_factory=set)

    toolkits: list[Toolkit] = field(default_factory=list)
    nvcc_version: str | None = None
    cuda_home: str | None = None
    cudnn_versions: list[str] = field(default_factory=list)
    cuda_libs: dict[str, list[str]] | None = None  # from ldconfig -p
    ld_library_path: list[str] | None = None
    ld_path_libs: dict[str, list[str]] = field(default_factory=dict)

    frameworks: list[Framework] | None = None
    cupy_packages: list[tuple[str, str | None]] = field(default_factory=list)
    conda_meta: list[str] = field(default_factory=list)

    docker: P.DockerInfo | None = None
    docker_path: str | None = None
    docker_snap: bool | None = None
    nvidia_ctk: str | None = None
    nvidia_ctk_missing: bool | None = None  # True: looked, not installed; None: not looked
    cdi_specs: list[str] = field(default_factory=list)
    ctk_config: bool | None = None
    daemon_json: str | None = None
    fabricmanager: str | None = None

    # -- facts_more.py: the failure modes beyond the first fixtures -------------------------
    modules_seen: set[str] | None = None  # modules shown, also in an excerpt (presence only)
    dev_nodes: list[str] | None = None  # /dev/nvidia* as listed; None: not looked
    uvm_loaded: bool | None = None
    other_driver: str | None = None  # vfio-pci / nova_core / pci-stub bound to an NVIDIA GPU
    vfio_ids_in_cmdline: bool | None = None
    grub_cmdline: str | None = None
    module_flavour: str | None = None  # "open" | "proprietary"
    dkms_build_errors: list[str] = field(default_factory=list)
    mok_enrolled: bool | None = None
    xids: list[tuple[str, int, str]] = field(default_factory=list)  # (PCI address, Xid, line)
    gsp_errors: list[str] = field(default_factory=list)
    tcc_mode: bool | None = None
    mig_no_instances: bool | None = None
    mig_stated: bool | None = None
    persistence_stated: bool | None = None
    persistenced: str | None = None
    docker_cgroup_driver: str | None = None
    cdi_driver_versions: set[str] = field(default_factory=set)
    container_cli_driver: str | None = None
    container_required_cuda: str | None = None
    fabricmanager_version: str | None = None
    libcuda_paths: list[str] = field(default_factory=list)
    wsl_libcuda: list[str] = field(default_factory=list)
    libcuda_not_symlink: bool | None = None
    conda_cuda_packages: list[str] = field(default_factory=list)
    conda_lib_on_ld_path: bool | None = None
    cuda_wheels: dict[str, str | None] = field(default_factory=dict)  # pip nvidia-* CUDA/cuDNN wheels
    evidence: list[Any] = field(default_factory=list)  # gpuops.doctor.evidence.Evidence
    # command key -> (error, rc) for tools that timed out, crashed or printed without end
    commands_failed: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    history: list[PackageChange] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    logs: list[LogRecord] = field(default_factory=list)
    stated_keys: set[str] = field(default_factory=set)

    def framework(self, name: str) -> Framework | None:
        for fw in self.frameworks or []:
            if fw.name == name:
                return fw
        return None

    @property
    def error_texts(self) -> list[tuple[str, str]]:
        """(origin, text) of every error text: attached logs and --deep child output."""
        return [(lg.origin, lg.text) for lg in self.logs]


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])


def _cuda_from_int(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _torch_cuda_from_tag(version: str | None) -> tuple[str | None, bool | None]:
    if not version or "+" not in version:
        return None, None
    tag = version.split("+", 1)[1]
    if tag == "cpu":
        return None, True
    m = re.match(r"cu(\d+)(\d)$", tag)
    if m:
        return f"{m.group(1)}.{m.group(2)}", False
    if tag.startswith("rocm"):
        return None, None
    return None, None


def _os_name(text: str | None) -> str | None:
    if not text:
        return None
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else None


def _frameworks(cap: Capture, facts: Facts) -> list[Framework] | None:
    if cap.packages is None and not (cap.stated and cap.stated.packages) and not cap.globs.get("conda-meta"):
        return None
    out: list[Framework] = []
    pk = cap.packages or {}

    # nvidia-cudnn-cuXX wheel versions (the cuDNN a pip torch build loads)
    wheel_cudnn = next(
        (d.version for k, d in pk.items() if k.startswith("nvidia-cudnn-cu") and d.version), None
    )

    if "torch" in pk:
        d = pk["torch"]
        vp = P.parse_torch_version_py(d.files.get("torch/version.py", ""))
        version = vp.get("__version__") or d.version
        cuda, cpu = _torch_cuda_from_tag(version)
        if "cuda" in vp:
            cuda = vp["cuda"]
            cpu = cuda is None and not vp.get("hip")
        out.append(
            Framework(
                name="torch",
                dist=d.name,
                version=version,
                cuda=cuda,
                cpu_only=cpu,
                cudnn=wheel_cudnn if cuda else None,
            )
        )
    for key in ("tensorflow", "tensorflow-gpu", "tensorflow-cpu", "tf-nightly"):
        if key not in pk:
            continue
        d = pk[key]
        bi = P.parse_tf_build_info(d.files.get("tensorflow/python/platform/build_info.py", ""))
        fw = Framework(name="tensorflow", dist=d.name, version=d.version)
        if bi:
            fw.cpu_only = not bi.get("is_cuda_build", False)
            fw.cuda = bi.get("cuda_version") or None  # type: ignore[assignment]
            fw.cudnn = bi.get("cudnn_version") or None  # type: ignore[assignment]
            caps = bi.get("cuda_compute_capabilities")
            if isinstance(caps, list) and caps:
                fw.archs = [_cc_from_sm(c) for c in caps if _cc_from_sm(c)]
        else:
            fw.cpu_only = _tf_pip_cpu_only(d.name, d.version)
        out.append(fw)
    if "jax" in pk or "jaxlib" in pk:
        d = pk.get("jaxlib") or pk["jax"]
        plugin = next((k for k in pk if k.startswith(("jax-cuda", "jax-plugin"))), None)
        m = re.search(r"cuda(\d+)", plugin or "")
        out.append(
            Framework(
                name="jax",
                dist=d.name,
                version=d.version,
                cuda=f"{m.group(1)}.x" if m else None,
                cpu_only=None if plugin or "+cuda" in (d.version or "") else True,
            )
        )
    if "chainer" in pk:
        d = pk["chainer"]
        out.append(Framework(name="chainer", dist=d.name, version=d.version))
    for k, d in pk.items():
        if k == "cupy" or k.startswith("cupy-"):
            facts.cupy_packages.append((d.name, d.version))

    # conda: "pytorch-1.4.0-py3.7_cpu_0.json"
    for fn in cap.globs.get("conda-meta", []):
        m = re.match(r"(pytorch(?:-nightly)?)-([^-]+)-(.+)\.json$", fn)
        if m and not any(f.name == "torch" for f in out):
            build = m.group(3)
            cm = re.search(r"cuda(\d+)\.?(\d)", build)
            out.append(
                Framework(
                    name="torch",
                    dist=m.group(1),
                    version=m.group(2),
                    cuda=f"{cm.group(1)}.{cm.group(2)}" if cm else None,
                    cpu_only=True if "cpu" in build else (False if cm else None),
                    source="conda-meta",
                )
            )
    facts.conda_meta = list(cap.globs.get("conda-meta", []))

    # stated packages fill in what was not observed
    if cap.stated:
        for sp in cap.stated.packages:
            n = sp.name.lower()
            name = {
                "pytorch": "torch",
                "pytorch-nightly": "torch",
                "tensorflow-gpu": "tensorflow",
                "tensorflow-cpu": "tensorflow",
            }.get(n, n)
            if n.startswith("cupy"):
                if not any(c[0] == sp.name for c in facts.cupy_packages):
                    facts.cupy_packages.append((sp.name, sp.version))
                continue
            if any(f.name == name for f in out):
                continue
            fw = Framework(name=name, dist=sp.name, version=sp.version, source="stated")
            if name == "torch":
                c, cpu = _torch_cuda_from_tag(sp.version)
                fw.cuda, fw.cpu_only = c, cpu
            if name == "tensorflow":
                fw.cpu_only = _tf_pip_cpu_only(sp.name, sp.version)
            if sp.cuda == "cpu":
                fw.cuda, fw.cpu_only = None, True
            elif sp.cuda:
                fw.cuda, fw.cpu_only = sp.cuda, False
            out.append(fw)
            facts.stated_keys.add(f"package:{name}")
    if facts.cupy_packages and not any(f.name == "cupy" for f in out):
        name, ver = facts.cupy_packages[0]
        cuda = P.cupy_package_cuda(name)
        out.append(Framework(name="cupy", dist=name, version=ver, cuda=cuda))
    return out


def _tf_pip_cpu_only(dist: str, version: str | None) -> bool | None:
    """The PyPI package named ``tensorflow`` had no GPU support before 2.1 (TF 2.1 release notes:
    "The tensorflow pip package now includes GPU support by default ... for both Linux and Windows")."""
    n = dist.lower().replace("_", "-")
    if n in ("tensorflow-gpu",):
        return False
    if n == "tensorflow-cpu":
        return True
    if n == "tensorflow" and version:
        k = _version_key(version)
        if k and (k[0] < 2 or (k[0] == 2 and len(k) > 1 and k[1] < 1)):
            return True
        return None
    return None


def _cc_from_sm(s: str) -> str | None:
    m = re.match(r"(?:sm_|compute_)?(\d+)(\d)[a-z]?$", s.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _in_container(cap: Capture) -> bool | None:
    if cap.globs.get("/.dockerenv") or cap.globs.get("/run/.containerenv"):
        return True
    cg = cap.file("/proc/1/cgroup")
    if cg and re.search(r"docker|kubepods|containerd|libpod|lxc", cg):
        return True
    if "/.dockerenv" in cap.globs and cg is not None:
        return False
    return None


def _platform_facts(cap: Capture, f: Facts) -> None:
    """OS, kernel, Python, container, environment, attached logs."""
    st = cap.stated
    # -- platform ---------------------------------------------------------------------------
    f.os_name = _os_name(cap.file("/etc/os-release")) or (st.os if st else None)
    f.kernel = cap.platform.kernel or (st.kernel if st else None)
    f.cpu_model = cap.platform.cpu_model
    f.python_version = cap.python.version
    f.in_container = _in_container(cap)
    if f.in_container is None and st and st.in_container is not None:
        f.in_container = st.in_container
    f.env = dict(cap.env)
    f.logs = list(cap.logs)
    for d in cap.deep or []:
        if d.output or d.error:
            f.logs.append(
                LogRecord(origin=f"--deep {d.framework}", text=(d.output or "") + "\n" + (d.error or ""))
            )


def _driver_facts(cap: Capture, f: Facts) -> P.SmiResult | None:
    """nvidia-smi, NVML and PCI: the driver, its CUDA, the GPUs. Returns the parsed nvidia-smi."""
    st = cap.stated
    # -- driver / GPUs ----------------------------------------------------------------------
    smi = cap.cmd("nvidia-smi")
    smi_res: P.SmiResult | None = None
    if smi is not None:
        if smi.error == "not_found":
            f.smi_status = "missing"
        elif smi.error == "timeout":
            f.smi_status = "timeout"
            f.smi_message = f"nvidia-smi did not finish within its time-out ({smi.seconds or '?'} s)"
        elif smi.error:
            f.smi_status = "error"
            f.smi_message = smi.error
        else:
            smi_res = P.parse_nvidia_smi(smi.text, smi.rc)
            f.smi_status = smi_res.status
            f.smi_message = smi_res.message

    nv = cap.nvml
    gpus: list[Gpu] | None = None
    if nv is not None:
        if nv.ok:
            f.driver_version = nv.driver_version
            if nv.cuda_driver_version:
                f.cuda_driver_version = _cuda_from_int(nv.cuda_driver_version)
            gpus = [
                Gpu(index=g.index, name=g.name, cc=g.cc, memory_mib=g.memory_mib, source="nvml")
                for g in nv.gpus
            ]
        else:
            f.nvml_error = nv.error
    if smi_res is not None and smi_res.status == "ok":
        f.driver_version = f.driver_version or smi_res.driver_version
        f.cuda_driver_version = f.cuda_driver_version or smi_res.cuda_version
        if gpus is None and smi_res.gpus:
            gpus = [
                Gpu(index=g.index, name=g.name, cc=None, memory_mib=g.memory_mib, source="nvidia-smi")
                for g in smi_res.gpus
            ]
    if gpus is None and st and st.gpus:
        gpus = []
        for sg in st.gpus:
            for _ in range(max(1, sg.count)):
                gpus.append(Gpu(index=len(gpus), name=sg.name, cc=sg.cc, source="stated"))
        f.stated_keys.add("gpus")
    if st and st.driver_version and f.driver_version is None:
        f.driver_version = st.driver_version
        f.stated_keys.add("driver_version")
    if st and st.cuda_driver_version and f.cuda_driver_version is None:
        f.cuda_driver_version = st.cuda_driver_version
        f.stated_keys.add("cuda_driver_version")

    f.pci_nvidia = cap.pci
    pci_gpus = [d for d in (cap.pci or []) if (d.pci_class or "").startswith(("0x03", "0x0302", "0x0300"))]
    f.gpus = gpus
    if gpus:
        f.gpu_count = len(gpus)
        f.gpu_present = True
    elif nv is not None and nv.ok and not nv.gpus:
        f.gpu_count = 0
        f.gpu_present = bool(pci_gpus) if cap.pci is not None else False
    elif cap.pci is not None:
        f.gpu_present = bool(pci_gpus)
        if not pci_gpus:
            f.gpu_count = 0
    if st and st.gpu_present is not None and f.gpu_present is None:
        f.gpu_present = st.gpu_present
        f.stated_keys.add("gpu_present")
    if f.gpu_present is None and f.smi_status in ("no_driver", "mismatch"):
        f.gpu_present = None  # a driver is installed; the GPU is likely there but unconfirmed

    return smi_res


def _kernel_module_facts(cap: Capture, f: Facts, smi_res: P.SmiResult | None) -> None:
    """The kernel module: loaded, installed, per kernel, DKMS."""
    st = cap.stated
    nv = cap.nvml
    smi = cap.cmd("nvidia-smi")
    # kernel module: loaded / installed / per kernel
    proc_ver = cap.file("/proc/driver/nvidia/version")
    if proc_ver:
        f.loaded_module_version = P.parse_proc_driver_version(proc_ver)
        f.driver_flavour = P.parse_proc_driver_flavour(proc_ver)
    sys_ver = cap.file("/sys/module/nvidia/version")
    if sys_ver and not f.loaded_module_version:
        f.loaded_module_version = sys_ver.strip() or None
    klog_cmd = cap.cmd("kernel-log")
    if klog_cmd is not None and klog_cmd.stdout:
        f.kernel_log = P.parse_kernel_log(klog_cmd.stdout)
        if f.kernel_log.api_mismatch:
            client, module = f.kernel_log.api_mismatch
            f.userspace_driver_version = client
            f.loaded_module_version = f.loaded_module_version or module
        elif f.kernel_log.loaded_version and not f.loaded_module_version:
            f.loaded_module_version = f.kernel_log.loaded_version
    if nv is not None and nv.ok and nv.driver_version:
        f.userspace_driver_version = f.userspace_driver_version or nv.driver_version
    if smi_res is not None and smi_res.nvml_library_version:
        f.userspace_driver_version = f.userspace_driver_version or smi_res.nvml_library_version
    if smi_res is not None and smi_res.status == "ok" and smi_res.driver_version:
        f.userspace_driver_version = f.userspace_driver_version or smi_res.driver_version
    if st:
        if st.loaded_module_version and not f.loaded_module_version:
            f.loaded_module_version = st.loaded_module_version
            f.stated_keys.add("loaded_module_version")
        if st.userspace_driver_version and not f.userspace_driver_version:
            f.userspace_driver_version = st.userspace_driver_version
            f.stated_keys.add("userspace_driver_version")

    mi = cap.cmd("modinfo-nvidia")
    if mi is not None and mi.ran:
        f.installed_module_version, f.module_for_running_kernel = P.parse_modinfo_version(mi.text, mi.rc)
    if (
        smi_res is not None
        and smi_res.status == "no_driver"
        and re.search(r"Module nvidia not found", smi.text if smi else "")
    ):
        f.module_for_running_kernel = False

    mods = cap.files.get("/proc/modules")
    if mods is not None and mods.content is not None:
        f.modules_loaded = P.parse_proc_modules(mods.content)
    elif st and st.modules_loaded:
        f.modules_loaded = set(st.modules_loaded)
        f.stated_keys.add("modules_loaded")

    if "/lib/modules/*" in cap.globs:
        f.kernels_installed = sorted(p.rsplit("/", 1)[-1] for p in cap.globs["/lib/modules/*"])
    with_nv: dict[str, list[str]] = {}
    looked = False
    for pat, hits in cap.globs.items():
        if pat.startswith("/lib/modules/*/") and "nvidia" in pat:
            looked = True
            for h in hits:
                parts = h.split("/")
                if len(parts) > 3 and re.search(r"/nvidia(-current)?\.ko", h):
                    with_nv.setdefault(parts[3], []).append(h)
    if looked:
        f.kernels_with_nvidia = with_nv
        if f.kernel and f.module_for_running_kernel is None:
            f.module_for_running_kernel = f.kernel in with_nv if with_nv or f.kernels_installed else None
    headers = set()
    for p in cap.globs.get("/lib/modules/*/build", []):
        headers.add(p.split("/")[3])
    for p in cap.globs.get("/usr/src/linux-headers-*", []):
        headers.add(p.rsplit("/", 1)[-1].removeprefix("linux-headers-"))
    for p in cap.globs.get("/usr/src/kernels/*", []):
        headers.add(p.rsplit("/", 1)[-1])
    if "/lib/modules/*/build" in cap.globs or "/usr/src/linux-headers-*" in cap.globs:
        f.kernels_with_headers = sorted(headers)

    dk = cap.cmd("dkms-status")
    if dk is not None:
        if dk.error == "not_found":
            f.dkms = P.DkmsStatus(available=False)
        elif dk.ran or dk.rc is None:
            f.dkms = P.parse_dkms_status(dk.text, dk.rc)
    if "/var/lib/dkms/nvidia*/*" in cap.globs:
        f.dkms_trees = cap.globs["/var/lib/dkms/nvidia*/*"]


def _secure_boot_facts(cap: Capture, f: Facts) -> None:
    """Secure Boot state."""
    st = cap.stated
    # Secure Boot
    mok = cap.cmd("mokutil-sb-state")
    if mok is not None and mok.ran:
        f.secure_boot = P.parse_mokutil_sb_state(mok.text)
    if f.secure_boot is None:
        for path, rec in cap.files.items():
            if path.startswith("/sys/firmware/efi/efivars/SecureBoot-") and rec.content:
                f.secure_boot = P.parse_efivar_secure_boot(rec.content)
    if f.secure_boot is None and "/sys/firmware/efi" in cap.globs and not cap.globs["/sys/firmware/efi"]:
        f.secure_boot = False  # legacy BIOS boot: no Secure Boot
    if f.secure_boot is None and st and st.secure_boot is not None:
        f.secure_boot = st.secure_boot
        f.stated_keys.add("secure_boot")


def _nouveau_facts(cap: Capture, f: Facts) -> None:
    """nouveau: loaded, blacklisted."""
    f.cmdline = cap.file("/proc/cmdline")
    confs = [rec.content for path, rec in cap.files.items() if "modprobe.d" in path and rec.content]
    by_conf = any(P.modprobe_blacklists_nouveau(c) for c in confs) if "modprobe.d" in cap.globs else None
    by_cmdline = P.cmdline_blacklists_nouveau(f.cmdline) if f.cmdline is not None else None
    if by_conf or by_cmdline:
        f.nouveau_blacklisted = True
    elif by_conf is False and by_cmdline is False:
        f.nouveau_blacklisted = False
    if f.modules_loaded is not None:
        f.nouveau_loaded = "nouveau" in f.modules_loaded
    if any(d.driver == "nouveau" for d in cap.pci or []):
        f.nouveau_loaded = True
    if f.kernel_log is not None and f.kernel_log.nouveau_bound:
        f.nouveau_loaded = True


def _package_facts(cap: Capture, f: Facts) -> None:
    """OS packages (dpkg, rpm, pacman) and what reports state."""
    st = cap.stated
    # -- packages ---------------------------------------------------------------------------
    for key, parse, mgr in (
        ("dpkg-query", P.parse_dpkg_query, "dpkg"),
        ("rpm-qa", P.parse_name_version_lines, "rpm"),
        ("pacman-q", P.parse_name_version_lines, "pacman"),
    ):
        rec = cap.cmd(key)
        if rec is not None and rec.ran and rec.stdout:
            pk = parse(rec.stdout)
            if mgr == "pacman":
                from gpuops.doctor.history import is_relevant

                pk = {k: v for k, v in pk.items() if is_relevant(k)}
            f.os_packages = {**(f.os_packages or {}), **pk}
            f.package_manager = f.package_manager or mgr
            if mgr == "dpkg":
                f.held_packages = P.held_packages_dpkg(rec.stdout)
    if st and st.os_packages:
        f.os_packages = {**{k: v or "?" for k, v in st.os_packages.items()}, **(f.os_packages or {})}
        f.stated_keys.add("os_packages")


def _cuda_facts(cap: Capture, f: Facts) -> None:
    """CUDA toolkits, cuDNN, the loader's search path."""
    st = cap.stated
    # -- CUDA toolkits, cuDNN, loader path ----------------------------------------------------
    nvcc = cap.cmd("nvcc")
    if nvcc is not None and nvcc.ran:
        f.nvcc_version = P.parse_nvcc_version(nvcc.text)
    f.cuda_home = cap.env.get("CUDA_HOME") or cap.env.get("CUDA_PATH")
    link = cap.file("readlink /usr/local/cuda")
    dirs = cap.globs.get("/usr/local/cuda*", [])
    for d in dirs:
        if (
            d == "/usr/local/cuda"
            and link
            and (link if link.startswith("/") else "/usr/local/" + link) in dirs
        ):
            continue  # the symlink to a versioned toolkit listed anyway
        ver = None
        for name in ("version.json", "version.txt"):
            txt = cap.file(f"{d}/{name}")
            if txt:
                ver = P.parse_cuda_version_file(txt)
                if ver:
                    break
        if ver is None:
            for p in cap.globs.get(f"{d}/dist-info/*", []):
                m = re.search(r"nvidia_cuda_runtime-(\d+\.\d+(?:\.\d+)?)", p)
                if m:
                    ver = m.group(1)
        if ver is None:
            m = re.search(r"cuda-(\d+\.\d+)$", d)
            ver = m.group(1) if m else None
        f.toolkits.append(Toolkit(path=d, version=ver))
    if st and st.cuda_toolkit and not f.toolkits and not f.nvcc_version:
        f.toolkits.append(Toolkit(path="(stated)", version=st.cuda_toolkit))
        f.stated_keys.add("cuda_toolkit")
    for path, rec in cap.files.items():
        if "cudnn" in path and path.endswith(".h") and rec.content:
            v = P.parse_cudnn_header(rec.content)
            if v and v not in f.cudnn_versions:
                f.cudnn_versions.append(v)
    ld = cap.cmd("ldconfig-p")
    if ld is not None and ld.ran and ld.stdout:
        f.cuda_libs = P.parse_ldconfig(ld.stdout)
        for soname in f.cuda_libs:
            m = re.match(r"libcudnn\.so\.(\d+)$", soname)
            if m and not any(v.split(".")[0] == m.group(1) for v in f.cudnn_versions):
                f.cudnn_versions.append(m.group(1))
    if st and st.cudnn and not f.cudnn_versions:
        f.cudnn_versions.append(st.cudnn)
        f.stated_keys.add("cudnn")
    if "LD_LIBRARY_PATH" in cap.env:
        f.ld_library_path = [p for p in cap.env["LD_LIBRARY_PATH"].split(":") if p]
    for key, hits in cap.globs.items():
        if key.startswith("ldpath:"):
            f.ld_path_libs[key[len("ldpath:") :]] = hits

    f.frameworks = _frameworks(cap, f)


def _docker_facts(cap: Capture, f: Facts) -> None:
    """Docker, the container toolkit, CDI, Fabric Manager."""
    st = cap.stated
    # -- Docker -------------------------------------------------------------------------------
    di = cap.cmd("docker-info")
    if di is not None and di.ran:
        f.docker = P.parse_docker_info(di.text)
    if "which docker" in cap.globs:
        f.docker_path = (cap.globs["which docker"] or [None])[0]
        f.docker_snap = bool(f.docker_path and f.docker_path.startswith("/snap/")) or bool(
            cap.globs.get("/snap/bin/docker")
        )
    if st and st.docker_installed_as:
        f.docker_snap = st.docker_installed_as == "snap"
        f.stated_keys.add("docker_installed_as")
    ctk = cap.cmd("nvidia-ctk")
    if ctk is not None:
        f.nvidia_ctk_missing = ctk.error == "not_found"
    if ctk is not None and ctk.ran:
        m = re.search(r"version\s+(\S+)", ctk.text)
        f.nvidia_ctk = m.group(1) if m else "present"
    f.cdi_specs = cap.globs.get("/etc/cdi/*", []) + cap.globs.get("/var/run/cdi/*", [])
    if "/etc/nvidia-container-runtime/config.toml" in cap.globs:
        f.ctk_config = bool(cap.globs["/etc/nvidia-container-runtime/config.toml"])
    f.daemon_json = cap.file("/etc/docker/daemon.json")
    fm = cap.cmd("systemctl-fabricmanager")
    if fm is not None and fm.ran:
        f.fabricmanager = fm.stdout.strip() or None


def gpu_ccs(f: Facts, kb: Any | None) -> list[tuple[str, str]]:
    """(name, compute capability) of each distinct GPU: the derived fact checks, plans and the
    environment verdicts share. A GPU the probe gave no capability for is looked up by name in the
    knowledge base (``kb``, may be None or broken: then it is left out)."""
    out: list[tuple[str, str]] = []
    for g in f.gpus or []:
        cc = g.cc
        if cc is None and g.name and kb is not None:
            try:
                cc = kb.gpu_cc(g.name)
            except Exception:  # an incomplete or broken knowledge base: unknown
                cc = None
        if cc and (g.name or "?", cc) not in out:
            out.append((g.name or "?", cc))
    return out


def facts_from_capture(cap: Capture) -> Facts:
    """The capture parsed into facts, one function per area; ``facts_more`` adds the failure modes
    beyond the first fixtures, and ``evidence`` every failing text."""
    f = Facts()
    _platform_facts(cap, f)
    smi_res = _driver_facts(cap, f)
    _kernel_module_facts(cap, f, smi_res)
    _secure_boot_facts(cap, f)
    _nouveau_facts(cap, f)
    _package_facts(cap, f)
    _cuda_facts(cap, f)
    f.frameworks = _frameworks(cap, f)
    _docker_facts(cap, f)
    f.history = timeline(cap)
    from gpuops.doctor.facts_more import derive_all

    derive_all(cap, f)
    for key, rec in cap.commands.items():
        if rec.error in ("timeout", "crashed", "too_much_output"):
            f.commands_failed[key] = (rec.error, rec.rc)
    from gpuops.doctor.evidence import collect

    f.evidence = collect(cap, f)
    return f
