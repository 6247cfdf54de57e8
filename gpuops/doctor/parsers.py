"""Pure parsers: raw text from one tool or file -> small typed values. None means "not in there".

Each parser is tested on real outputs (healthy and failing) taken from public reports; the
fixtures under ``tests/doctor/fixtures/parsers/`` name their sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VER = r"\d+(?:\.\d+)+"


# -- nvidia-smi ------------------------------------------------------------------------------


@dataclass
class SmiGpu:
    index: int
    name: str
    memory_mib: int | None = None


@dataclass
class SmiResult:
    """What the plain ``nvidia-smi`` output says."""

    status: str  # ok | no_driver | mismatch | no_devices | no_library | error
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_library_version: str | None = None  # the second line of the newer mismatch message
    gpus: list[SmiGpu] = field(default_factory=list)
    message: str | None = None  # the first line that explains a failure


_SMI_HEADER = re.compile(
    r"NVIDIA-SMI\s+(?P<smi>\S+)\s+(?:Driver|KMD) Version:\s*(?P<drv>\S+)\s+CUDA(?: UMD)? Version:\s*(?P<cuda>\S+)"  # noqa: E501
)
# "|   0  NVIDIA H100 80GB HBM3          On  | 00000000:18:00.0 Off |   0 |"
_SMI_GPU = re.compile(
    r"^\|\s+(?P<idx>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*\|\s*[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:"
)
_SMI_MEM = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")


def parse_nvidia_smi(text: str, rc: int | None = None) -> SmiResult:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if "couldn't communicate with the NVIDIA driver" in text:
        return SmiResult(status="no_driver", message=_line_with(text, "couldn't communicate"))
    if re.search(r"Driver/library version mismatch", text, re.I):
        m = re.search(r"NVML library version:\s*(\S+)", text)
        return SmiResult(
            status="mismatch",
            nvml_library_version=m.group(1) if m else None,
            message=_line_with(text, "version mismatch"),
        )
    if "couldn't find libnvidia-ml.so" in text:
        return SmiResult(status="no_library", message=_line_with(text, "libnvidia-ml"))
    if re.search(r"^No devices were found", text, re.M):
        return SmiResult(status="no_devices", message="No devices were found")
    h = _SMI_HEADER.search(text)
    if not h:
        return SmiResult(status="error", message=first or None)
    res = SmiResult(
        status="ok",
        driver_version=h.group("drv"),
        cuda_version=None if h.group("cuda") in ("N/A", "") else h.group("cuda"),
    )
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        m = _SMI_GPU.match(ln)
        if m:
            g = SmiGpu(index=int(m.group("idx")), name=m.group("name").strip())
            if i + 1 < len(lines):
                mm = _SMI_MEM.search(lines[i + 1])
                if mm:
                    g.memory_mib = int(mm.group(2))
            res.gpus.append(g)
    if rc not in (None, 0) and not res.gpus:
        res.status = "error"
    return res


def _line_with(text: str, needle: str) -> str:
    for ln in text.splitlines():
        if needle.lower() in ln.lower():
            return ln.strip()
    return needle


# -- /proc/driver/nvidia/version, modinfo -------------------------------------------------------


def parse_proc_driver_version(text: str) -> str | None:
    """The loaded kernel module's version: 'NVRM version: NVIDIA UNIX ... Kernel Module  535.104.05  ...'."""
    m = re.search(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(" + _VER + r")", text)
    return m.group(1) if m else None


def parse_proc_driver_flavour(text: str) -> str | None:
    m = re.search(r"NVRM version:.*?(Open )?Kernel Module", text)
    if not m:
        return None
    return "open" if m.group(1) else "proprietary"


def parse_modinfo_version(text: str, rc: int | None) -> tuple[str | None, bool | None]:
    """(version, module_exists) from ``modinfo -F version nvidia``."""
    if re.search(r"Module nvidia not found|not found\.", text):
        return None, False
    m = re.search(r"^\s*(" + _VER + r")\s*$", text, re.M)
    if m and rc in (0, None):
        return m.group(1), True
    return None, None


# -- /proc/modules ---------------------------------------------------------------------------


def parse_proc_modules(text: str) -> set[str]:
    return {ln.split()[0] for ln in text.splitlines() if ln.strip()}


# -- DKMS ------------------------------------------------------------------------------------


@dataclass
class DkmsEntry:
    module: str
    version: str
    kernel: str | None
    arch: str | None
    state: str  # added | built | installed | broken | ...
    note: str | None = None


@dataclass
class DkmsStatus:
    entries: list[DkmsEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    available: bool = True


# dkms 2.x: "nvidia, 396.45, 4.17.14-202.fc28.x86_64, x86_64: installed (original_module exists)"
_DKMS_OLD = re.compile(
    r"^(?P<mod>[^,\s/]+),\s*(?P<ver>[^,\s]+)(?:,\s*(?P<kern>[^,\s]+),\s*(?P<arch>[^:\s]+))?:\s*"
    r"(?P<state>[a-z]+)(?P<rest>.*)$"
)
# dkms 3.x: "nvidia/535.104.05, 6.5.0-14-generic, x86_64: installed"
_DKMS_NEW = re.compile(
    r"^(?P<mod>[^,\s/]+)/(?P<ver>[^,\s]+)(?:,\s*(?P<kern>[^,\s]+),\s*(?P<arch>[^:\s]+))?:\s*"
    r"(?P<state>[a-z]+)(?P<rest>.*)$"
)


def parse_dkms_status(text: str, rc: int | None = None) -> DkmsStatus:
    st = DkmsStatus()
    if re.search(r"dkms'? is currently not installed|dkms: (command )?not found", text):
        st.available = False
        return st
    for raw in text.splitlines():
        ln = raw.strip()
        if not ln:
            continue
        m = _DKMS_NEW.match(ln) or _DKMS_OLD.match(ln)
        if m:
            rest = m.group("rest").strip()
            st.entries.append(
                DkmsEntry(
                    module=m.group("mod"),
                    version=m.group("ver"),
                    kernel=m.group("kern"),
                    arch=m.group("arch"),
                    state=m.group("state"),
                    note=rest.strip("() ") or None,
                )
            )
        elif ln.lower().startswith("error") or "does not exist" in ln or "Bad return status" in ln:
            st.errors.append(ln)
        elif ln.lower().startswith("warning") or "WARNING" in ln:
            st.warnings.append(ln)
        elif st.errors and not st.entries:
            st.errors.append(ln)
    return st


# -- Secure Boot -----------------------------------------------------------------------------


def parse_mokutil_sb_state(text: str) -> bool | None:
    if re.search(r"SecureBoot enabled", text):
        return True
    if re.search(r"SecureBoot disabled|doesn't support Secure Boot|EFI variables are not supported", text):
        return False
    return None


def parse_efivar_secure_boot(hexbytes: str) -> bool | None:
    """The SecureBoot EFI variable: 4 attribute bytes then one data byte (1 = enabled)."""
    parts = hexbytes.split()
    if len(parts) < 5:
        return None
    try:
        return int(parts[4], 16) == 1
    except ValueError:
        return None


# -- nouveau ---------------------------------------------------------------------------------


def modprobe_blacklists_nouveau(text: str) -> bool:
    for ln in text.splitlines():
        s = ln.split("#", 1)[0].strip()
        if re.match(r"blacklist\s+nouveau\b", s) or re.match(r"install\s+nouveau\s+/bin/(false|true)", s):
            return True
    return False


def cmdline_blacklists_nouveau(text: str) -> bool:
    """Only ``modprobe.blacklist=nouveau`` (or nouveau.modeset=0) keeps nouveau out after the initramfs."""
    return bool(re.search(r"(?:^|\s)modprobe\.blacklist=\S*\bnouveau\b|(?:^|\s)nouveau\.modeset=0\b", text))


# -- ldconfig, cuDNN, CUDA toolkit -----------------------------------------------------------


def parse_ldconfig(text: str) -> dict[str, list[str]]:
    """soname -> paths, for CUDA-related libraries only."""
    out: dict[str, list[str]] = {}
    for ln in text.splitlines():
        m = re.match(
            r"\s*(lib(?:cudnn|cudart|cublas|cuda|nvidia-ml|nvrtc|cusolver|cufft|nccl)[^\s]*)\s+\(.*?\)\s+=>\s+(\S+)",
            ln,
        )
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def parse_cudnn_header(text: str) -> str | None:
    vals = {}
    for key in ("MAJOR", "MINOR", "PATCHLEVEL"):
        m = re.search(r"#define\s+CUDNN_" + key + r"\s+(\d+)", text)
        if m:
            vals[key] = m.group(1)
    if "MAJOR" not in vals:
        return None
    return ".".join(vals[k] for k in ("MAJOR", "MINOR", "PATCHLEVEL") if k in vals)


def parse_nvcc_version(text: str) -> str | None:
    """'Cuda compilation tools, release 13.0, V13.0.88' -> '13.0'."""
    m = re.search(r"release\s+(\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_cuda_version_file(text: str) -> str | None:
    """version.json ('"cuda" : {"version" : "12.2.2"') or version.txt ('CUDA Version 10.2.89')."""
    m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"(' + _VER + ')"', text)
    if m:
        return m.group(1)
    m = re.search(r"CUDA Version\s+(" + _VER + ")", text)
    return m.group(1) if m else None


# -- frameworks ------------------------------------------------------------------------------


def parse_torch_version_py(text: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in ("__version__", "cuda", "hip", "git_version"):
        m = re.search(r"^" + re.escape(key) + r"\s*(?::[^=]+)?=\s*(None|'[^']*'|\"[^\"]*\")", text, re.M)
        if m:
            v = m.group(1)
            out[key] = None if v == "None" else v.strip("'\"")
    return out


def parse_tf_build_info(text: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in ("cuda_version", "cudnn_version"):
        m = re.search(r"['\"]" + key + r"['\"]\s*[,:]\s*['\"]([^'\"]*)['\"]", text)
        if m:
            out[key] = m.group(1)
    m = re.search(r"['\"]is_cuda_build['\"]\s*[,:]\s*(True|False)", text)
    if m:
        out["is_cuda_build"] = m.group(1) == "True"
    m = re.search(r"['\"]cuda_compute_capabilities['\"]\s*[,:]\s*\[([^\]]*)\]", text)
    if m:
        out["cuda_compute_capabilities"] = re.findall(r"['\"]([^'\"]+)['\"]", m.group(1))
    return out


# -- docker ----------------------------------------------------------------------------------


@dataclass
class DockerInfo:
    reachable: bool
    error: str | None = None
    server_version: str | None = None
    runtimes: list[str] = field(default_factory=list)
    default_runtime: str | None = None
    cdi_dirs: list[str] = field(default_factory=list)


def parse_docker_info(text: str) -> DockerInfo:
    """``docker info`` text, or the Engine API's ``GET /info`` JSON (what doctor records itself)."""
    if text.lstrip().startswith("{"):
        import json

        try:
            d = json.loads(text)
        except ValueError:
            d = None
        if isinstance(d, dict):
            rt = d.get("Runtimes")
            cdi = d.get("CDISpecDirs")
            return DockerInfo(
                reachable=True,
                server_version=str(d.get("ServerVersion") or "") or None,
                runtimes=sorted(rt) if isinstance(rt, dict) else [],
                default_runtime=d.get("DefaultRuntime") if isinstance(d.get("DefaultRuntime"), str) else None,
                cdi_dirs=[str(x) for x in cdi] if isinstance(cdi, list) else [],
            )
    err = re.search(
        r"(Cannot connect to the Docker daemon[^\n]*|permission denied while trying to connect[^\n]*|"
        r"error during connect[^\n]*)",
        text,
    )
    server = re.search(r"^\s*Server Version:\s*(\S+)", text, re.M)
    if err and not server:
        return DockerInfo(reachable=False, error=err.group(1).strip())
    info = DockerInfo(reachable=bool(server), server_version=server.group(1) if server else None)
    m = re.search(r"^\s*Runtimes:\s*(.+)$", text, re.M)
    if m:
        info.runtimes = m.group(1).split()
    m = re.search(r"^\s*Default Runtime:\s*(\S+)", text, re.M)
    if m:
        info.default_runtime = m.group(1)
    m = re.search(r"^\s*CDI spec directories:\s*\n((?:\s{2,}\S.*\n?)+)", text, re.M)
    if m:
        info.cdi_dirs = [ln.strip() for ln in m.group(1).splitlines() if ln.strip()]
    return info


# -- kernel log ------------------------------------------------------------------------------


@dataclass
class KernelLog:
    api_mismatch: tuple[str, str] | None = None  # (client/userspace version, kernel module version)
    loaded_version: str | None = None
    nouveau_bound: bool = False
    unsigned_rejected: bool = False
    lines: list[str] = field(default_factory=list)


def parse_kernel_log(text: str) -> KernelLog:
    # syslog writes a newline inside a message as "#012".
    norm = text.replace("#012", "\n")
    flat = re.sub(
        r"\s*\n\s*(?:\S+\s+\d+\s+[\d:]+\s+\S+\s+kernel:\s*)?(?:\[\s*[\d.]+\]\s*)?NVRM:\s*", " ", norm
    )
    kl = KernelLog()
    m = re.search(
        r"API mismatch: the client has the version (" + _VER + r"), but\s+(?:NVRM:\s*)?"
        r"this kernel module has the version (" + _VER + ")",
        flat,
    )
    if m:
        kl.api_mismatch = (m.group(1), m.group(2))
    m = re.search(r"loading NVIDIA UNIX.*?Kernel Module(?: for \S+)?\s+(" + _VER + ")", flat)
    if m:
        kl.loaded_version = m.group(1)
    kl.nouveau_bound = bool(re.search(r"nouveau \S+: (?:NVIDIA|enabling device|DRM:|fb:|bios:)", norm))
    kl.unsigned_rejected = bool(
        re.search(
            r"Loading of unsigned module is rejected|Key was rejected by service|"
            r"Required key not available|unsigned module loading is restricted",
            norm,
        )
    )
    kl.lines = [ln.strip() for ln in norm.splitlines() if ln.strip()]
    return kl


# -- package managers ------------------------------------------------------------------------


def parse_dpkg_query(text: str) -> dict[str, str]:
    """'pkg<TAB>version<TAB>ii ' lines -> installed packages (state 'ii' or 'hi'). Also reads what
    reports paste instead: ``dpkg -l`` rows ("ii  name  version  arch  description") and
    ``dpkg --get-selections`` ("name:arch   install", version unknown: "?")."""
    out: dict[str, str] = {}
    for ln in text.splitlines():
        m = re.match(r"^(ii|hi)\s+(\S+?)(?::\w+)?\s+(\S+)\s", ln)
        if m:
            out[m.group(2)] = m.group(3)
            continue
        m = re.match(r"^(\S+?)(?::\w+)?\s+(install|hold)\s*$", ln)
        if m:
            out[m.group(1)] = "?"
            continue
        parts = ln.split("\t")
        if len(parts) >= 2 and parts[1]:
            state = parts[2].strip() if len(parts) > 2 else "ii"
            if state[:2] in ("ii", "hi", "iU", "iF", "hU"):
                out[parts[0].strip()] = parts[1].strip()
    return out


def parse_name_version_lines(text: str) -> dict[str, str]:
    """``rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}'`` or ``pacman -Q`` output."""
    out: dict[str, str] = {}
    for ln in text.splitlines():
        parts = ln.replace("\t", " ").split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def held_packages_dpkg(text: str) -> set[str]:
    return {
        ln.split("\t")[0]
        for ln in text.splitlines()
        if ln.count("\t") >= 2 and ln.split("\t")[2].startswith("h")
    }


# -- CuPy / error texts ----------------------------------------------------------------------


def cupy_package_cuda(name: str) -> str | None:
    """'cupy-cuda110' -> '11.0', 'cupy-cuda12x' -> '12.x', 'cupy-cuda102' -> '10.2'."""
    m = re.match(r"cupy-cuda(\d+)(x)?$", name.lower())
    if not m:
        return None
    digits, x = m.groups()
    if x:
        return f"{digits}.x"
    return f"{digits[:-1]}.{digits[-1]}"
