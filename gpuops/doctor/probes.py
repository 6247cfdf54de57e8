"""Live collection: probe this host through a ``Runner`` and record everything into a ``Capture``.

Commands run concurrently in a small thread pool, each with its own time-out; files, globs and
package metadata are read meanwhile. Nothing here parses or judges: that is ``facts``/``checks``.
No framework is imported (torch, TensorFlow, CuPy, JAX): their versions come from package
metadata, and their build facts from small files read as text (``torch/version.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuops.doctor.capture import (
    Capture,
    CommandRecord,
    DistRecord,
    FileRecord,
    NvmlGpu,
    NvmlRecord,
    PciDevice,
    PlatformInfo,
    PythonInfo,
    now_iso,
)
from gpuops.doctor.history import is_relevant
from gpuops.doctor.runner import LiveRunner, Runner

# Binaries that live in sbin are not on a normal user's PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"

ENV_KEYS = (
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "VIRTUAL_ENV",
    "GPUOPS_IMAGE_DIGEST",
    "TF_CPP_MIN_LOG_LEVEL",
    "XLA_FLAGS",
)

# Python distributions doctor cares about (normalised names; prefixes end with "-").
_DIST_NAMES = (
    "torch",
    "tensorflow",
    "tensorflow-gpu",
    "tensorflow-cpu",
    "tf-nightly",
    "jax",
    "jaxlib",
    "chainer",
    "cupy",
    "mxnet",
    "paddlepaddle-gpu",
    "onnxruntime-gpu",
    "tensorrt",
    "nvidia-ml-py",
    "pynvml",
    "torchvision",
    "triton",
)
_DIST_PREFIXES = ("cupy-", "nvidia-", "jax-cuda", "jax-plugin", "tensorflow-", "mxnet-")

# Package-manager names worth recording (driver, CUDA, cuDNN, kernels, DKMS, container toolkit,
# Docker): one rule, shared with the history (``gpuops.doctor.history.is_relevant``).

DPKG_PATTERNS = [
    "*nvidia*",
    "cuda*",
    "libcudnn*",
    "cudnn*",
    "linux-image-*",
    "linux-headers-*",
    "linux-modules-*",
    "dkms",
    "docker*",
    "containerd*",
    "libcuda*",
    "system76-cud*",
]

KERNEL_LOG = re.compile(
    r"NVRM|nvidia|nouveau|module verification failed|Loading of unsigned module|"
    r"Lockdown|key was rejected|Secure boot|vfio-pci|nova_core|"
    # suspend/resume markers: CUDA's "unknown error" after a resume is read against them
    r"PM: suspend exit|PM: resume|ACPI: Waking up from system sleep",
    re.I,
)

MODULE_GLOBS = (
    "/lib/modules/*/updates/dkms/nvidia*.ko*",
    "/lib/modules/*/kernel/drivers/video/nvidia*.ko*",
    "/lib/modules/*/kernel/drivers/video/nvidia/nvidia*.ko*",
    "/lib/modules/*/kernel/nvidia*/nvidia*.ko*",
    "/lib/modules/*/extra/nvidia*.ko*",
    "/lib/modules/*/extra/nvidia/nvidia*.ko*",
    "/lib/modules/*/extra/nvidia-*/nvidia*.ko*",
    "/lib/modules/*/video/nvidia*.ko*",
)

SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

FILES = (
    "/proc/driver/nvidia/version",
    "/sys/module/nvidia/version",
    "/proc/modules",
    "/proc/cmdline",
    "/etc/os-release",
    "/proc/1/cgroup",
    "/etc/docker/daemon.json",
    "/usr/local/cuda/version.json",
    "/usr/local/cuda/version.txt",
    "/proc/version",
)

# Machine Owner Keys that DKMS / shim sign modules with (Ubuntu's shim-signed, DKMS >= 3.0).
MOK_KEYS = ("/var/lib/shim-signed/mok/MOK.der", "/var/lib/dkms/mok.pub")


_APT_ITEM = re.compile(r"([^\s,(][^,(]*?) \(([^)]*)\)")


def _history_filter(text: str) -> str:
    """Keep the apt history blocks that touch driver/CUDA/cuDNN/kernel packages, trimmed to those."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        keep: list[str] = []
        relevant = False
        for line in block.strip("\n").splitlines():
            key, _, rest = line.partition(": ")
            if key in ("Install", "Upgrade", "Remove", "Purge", "Downgrade", "Reinstall"):
                hits = [
                    f"{name} ({vers})"
                    for name, vers in _APT_ITEM.findall(rest)
                    if is_relevant(name)
                ]
                if hits:
                    relevant = True
                    keep.append(f"{key}: " + ", ".join(hits))
            else:
                keep.append(line)
        if relevant:
            out.append("\n".join(keep))
    return ("\n\n".join(out) + "\n") if out else ""


def _dpkg_log_filter(text: str) -> str:
    """Keep dpkg.log actions (install/upgrade/remove/purge) on relevant packages."""
    keep = []
    for line in text.splitlines():
        parts = line.split()
        if (
            len(parts) >= 4
            and parts[2] in ("install", "upgrade", "remove", "purge")
            and is_relevant(parts[3])
        ):
            keep.append(line)
    return "\n".join(keep) + ("\n" if keep else "")


def _kernel_log_filter(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if KERNEL_LOG.search(line))


def _docker_info_filter(text: str) -> str:
    # Host name, daemon id and registry credentials-adjacent lines are not needed for a diagnosis.
    return "\n".join(
        line
        for line in text.splitlines()
        if not re.match(r"\s*(Name|ID|Username|Registry|Labels|HTTPS? Proxy|No Proxy):", line)
    )


_DOCKER_KEYS = (
    "ServerVersion",
    "Runtimes",
    "DefaultRuntime",
    "CDISpecDirs",
    "OperatingSystem",
    "KernelVersion",
    "Driver",
    "Warnings",
)


def _docker_api(runner: Runner, environ: dict[str, str]) -> CommandRecord | None:
    """``docker info`` through the Engine API socket (no 50 MB CLI start). None: use the CLI."""
    host = _docker_api_host(runner, environ)
    return None if host is None else _docker_api_info(runner, host)


def _docker_api_host(runner: Runner, environ: dict[str, str]) -> str | None:
    """The ``unix://`` Docker host to ask through the API, or None (no socket: use the CLI)."""
    host = environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://") or not hasattr(runner, "unix_get"):
        return None
    if not runner.glob(host[len("unix://") :]):
        return None  # no socket: let the CLI say what it says
    return host


def _docker_api_info(runner: Runner, host: str) -> CommandRecord:
    import json
    import time

    sock = host[len("unix://") :]
    t0 = time.perf_counter()
    status, body, err = runner.unix_get(sock, "/info", timeout=5.0)
    argv = ["GET", f"{host}/info"]
    secs = round(time.perf_counter() - t0, 3)
    if err == "permission":
        return CommandRecord(
            argv=argv,
            rc=1,
            seconds=secs,
            stderr=f"permission denied while trying to connect to the Docker daemon socket at {host}",
        )
    if err is not None or status != 200:
        return CommandRecord(
            argv=argv,
            rc=1,
            seconds=secs,
            stderr=f"Cannot connect to the Docker daemon at {host}. "
            f"Is the docker daemon running? ({err or status})",
        )
    try:
        data = json.loads(body)
    except ValueError:
        return CommandRecord(
            argv=argv, rc=1, seconds=secs, stderr="Docker API answered with something that is not JSON"
        )
    keep = {k: data.get(k) for k in _DOCKER_KEYS if k in data}
    return CommandRecord(
        argv=argv, rc=0, seconds=secs, stdout=json.dumps(keep, indent=1, sort_keys=True)
    )


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(name: str) -> bool:
    n = _norm(name)
    return n in _DIST_NAMES or n.startswith(_DIST_PREFIXES)


def _scan_dists(paths: list[str]) -> dict[str, DistRecord]:
    """Find installed distributions by their metadata directory names (fast: no METADATA parse)."""
    found: dict[str, DistRecord] = {}
    for entry in paths:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for fn in names:
            if not (fn.endswith(".dist-info") or fn.endswith(".egg-info")):
                continue
            stem = fn.rsplit(".", 1)[0]
            name, _, version = stem.partition("-")
            version = version.split("-py")[0] if fn.endswith(".egg-info") else version
            if not _wanted(name):
                continue
            key = _norm(name)
            if key in found:
                continue
            found[key] = DistRecord(name=name, version=version or None, location=entry)
    return found


# Files read as text from a framework's package to learn its build (never imported).
_DIST_FILES = {
    "torch": ("torch/version.py",),
    "tensorflow": ("tensorflow/python/platform/build_info.py",),
    "tensorflow-gpu": ("tensorflow/python/platform/build_info.py",),
    "jaxlib": ("jaxlib/version.py",),
    "cupy": ("cupy/_environment.py",),
}


def _dist_files(dists: dict[str, DistRecord], runner: Runner) -> None:
    for key, rec in dists.items():
        for rel in _DIST_FILES.get(key, ()):
            if rec.location is None:
                continue
            fr = runner.read(str(Path(rec.location) / rel), limit=20_000)
            if fr.content is not None:
                if rel.endswith("_environment.py"):
                    continue
                rec.files[rel] = fr.content


def _nvml(timeout: float = 5.0) -> NvmlRecord:
    """Ask NVML in a worker thread; an init that hangs becomes an error value after ``timeout``."""
    box: dict[str, NvmlRecord] = {}

    def work() -> None:
        box["r"] = _nvml_inner()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    return box.get("r") or NvmlRecord(
        ok=False, error=f"NVML did not answer within {timeout:g} s"
    )


# What nvidia-ml-py reports when it cannot load the library (its NVMLError_LibraryNotFound).
NVML_LIBRARY_NOT_FOUND = "NVMLError_LibraryNotFound: NVML Shared Library Not Found"


def _nvml_library_loads() -> bool:
    """Whether ``libnvidia-ml.so.1`` loads, tried the way nvidia-ml-py loads it on Linux. Importing
    nvidia-ml-py costs more than the rest of the probes, so it is skipped when the library is absent
    (every machine without an NVIDIA driver), with the answer nvidia-ml-py itself would have given."""
    if not sys.platform.startswith("linux"):
        return True  # let nvidia-ml-py look in its own places
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _nvml_inner() -> NvmlRecord:
    if not _nvml_library_loads():
        return NvmlRecord(ok=False, error=NVML_LIBRARY_NOT_FOUND)
    try:
        import pynvml
    except Exception as e:  # nvidia-ml-py missing or broken
        return NvmlRecord(ok=False, error=f"nvidia-ml-py not importable: {e}")
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return NvmlRecord(ok=False, error=f"{type(e).__name__}: {e}")

    def s(v: object) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    rec = NvmlRecord(ok=True)
    try:
        try:
            rec.driver_version = s(pynvml.nvmlSystemGetDriverVersion())
        except Exception as e:
            rec.error = f"driver version: {e}"
        with contextlib.suppress(Exception):
            rec.nvml_version = s(pynvml.nvmlSystemGetNVMLVersion())
        with contextlib.suppress(Exception):
            rec.cuda_driver_version = int(pynvml.nvmlSystemGetCudaDriverVersion())
        try:
            n = int(pynvml.nvmlDeviceGetCount())
        except Exception as e:
            rec.error = f"device count: {e}"
            n = 0
        for i in range(n):
            g = NvmlGpu(index=i)
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                g.name = s(pynvml.nvmlDeviceGetName(h))
                try:
                    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
                    g.cc = f"{major}.{minor}"
                except Exception:
                    pass
                with contextlib.suppress(Exception):
                    g.memory_mib = int(pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024))
                with contextlib.suppress(Exception):
                    g.pci_bus_id = s(pynvml.nvmlDeviceGetPciInfo(h).busId)
                with contextlib.suppress(Exception):
                    pm = pynvml.nvmlDeviceGetPersistenceMode(h)
                    g.persistence_mode = "enabled" if pm == pynvml.NVML_FEATURE_ENABLED else "disabled"
                with contextlib.suppress(Exception):  # NVML_ERROR_NOT_SUPPORTED on GPUs without MIG
                    current, _pending = pynvml.nvmlDeviceGetMigMode(h)
                    g.mig_mode = "enabled" if current == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled"
                    if g.mig_mode == "enabled":
                        g.mig_instances = _mig_devices(pynvml, h)
            except Exception as e:
                rec.error = f"GPU {i}: {e}"
            rec.gpus.append(g)
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return rec


def _mig_devices(pynvml: Any, handle: Any) -> int:
    """How many MIG devices (compute instances) a MIG-enabled GPU has."""
    n = 0
    for i in range(int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            n += 1
        except Exception:  # NVML_ERROR_NOT_FOUND: no device in that slot
            continue
    return n


def _pci(runner: Runner) -> list[PciDevice] | None:
    devs = runner.glob("/sys/bus/pci/devices/*")
    if not devs:
        return None
    out = []
    for d in devs:
        vendor = (runner.read(d + "/vendor").content or "").strip()
        if vendor.lower() != "0x10de":  # NVIDIA's PCI vendor id
            continue
        link = runner.readlink(d + "/driver")
        out.append(
            PciDevice(
                slot=d.rsplit("/", 1)[-1],
                vendor=vendor,
                device=(runner.read(d + "/device").content or "").strip() or None,
                pci_class=(runner.read(d + "/class").content or "").strip() or None,
                driver=link.rsplit("/", 1)[-1] if link else None,
            )
        )
    return out


def _cpu_model(runner: Runner) -> str | None:
    text = runner.read("/proc/cpuinfo", limit=20_000).content or ""
    for line in text.splitlines():
        if line.startswith(("model name", "Model", "cpu model")):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or None


def _python_paths(python: str | None, runner: Runner) -> tuple[PythonInfo, list[str]]:
    if not python:
        v = sys.version_info
        return (
            PythonInfo(
                version=f"{v.major}.{v.minor}.{v.micro}", executable=sys.executable, prefix=sys.prefix
            ),
            list(sys.path),
        )
    rec = runner.run(
        [
            python,
            "-c",
            "import sys, json; print(json.dumps([sys.version.split()[0], "
            "sys.executable, sys.prefix, sys.path]))",
        ],
        timeout=10,
    )
    if rec.rc != 0:
        return PythonInfo(executable=python), []
    import json

    try:
        ver, exe, prefix, paths = json.loads(rec.stdout)
    except (ValueError, TypeError):
        return PythonInfo(executable=python), []
    return PythonInfo(version=ver, executable=exe, prefix=prefix), [
        p for p in paths if isinstance(p, str)
    ]


def _commands(env: dict[str, str]) -> dict[str, tuple[list[str], float, str | None]]:
    """key -> (argv, timeout, extra PATH)."""
    cuda_home = env.get("CUDA_HOME") or env.get("CUDA_PATH") or "/usr/local/cuda"
    return {
        "nvidia-smi": (["nvidia-smi"], 10.0, None),
        "modinfo-nvidia": (["modinfo", "-F", "version", "nvidia"], 5.0, _SBIN),
        "dkms-status": (["dkms", "status"], 10.0, _SBIN),
        "mokutil-sb-state": (["mokutil", "--sb-state"], 5.0, _SBIN),
        "ldconfig-p": (["ldconfig", "-p"], 5.0, _SBIN),
        "dpkg-query": (
            ["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n", *DPKG_PATTERNS],
            10.0,
            None,
        ),
        "rpm-qa": (
            [
                "rpm",
                "-qa",
                "--qf",
                "%{NAME}\\t%{VERSION}-%{RELEASE}\\n",
                "*nvidia*",
                "cuda*",
                "*cudnn*",
                "kernel*",
                "dkms",
                "akmod*",
                "docker*",
                "moby*",
            ],
            10.0,
            None,
        ),
        "pacman-q": (["pacman", "-Q"], 10.0, None),
        "nvcc": (["nvcc", "--version"], 10.0, f"{cuda_home}/bin"),
        "docker-info": (["docker", "info"], 8.0, None),
        "nvidia-ctk": (["nvidia-ctk", "--version"], 5.0, None),
        "kernel-log": (["dmesg"], 5.0, None),
        "systemctl-fabricmanager": (["systemctl", "is-active", "nvidia-fabricmanager"], 5.0, None),
        "systemctl-persistenced": (["systemctl", "is-active", "nvidia-persistenced"], 5.0, None),
        "nvidia-container-cli": (["nvidia-container-cli", "info"], 8.0, None),
    }


class _Task(threading.Thread):
    """Runs ``fn(*args)`` in a daemon thread now, holding ``limit`` while it runs; ``result()``
    waits for it and returns its value or raises its exception."""

    def __init__(self, limit: threading.BoundedSemaphore, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self._limit = limit
        self._fn = fn
        self._args = args
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        with self._limit:
            try:
                self._value = self._fn(*self._args)
            except BaseException as e:  # handed to the caller of result()
                self._error = e

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


_FILTERS = {
    "kernel-log": _kernel_log_filter,
    "docker-info": _docker_info_filter,
}


def _read_kernel_module(runner: Runner, cap: Capture) -> None:
    """Secure Boot, installed kernels and their NVIDIA modules, headers, DKMS trees and build logs,
    MOK keys, modprobe.d, the kernel command line in grub, the device nodes."""
    sb = runner.read_bytes(SECURE_BOOT_VAR, limit=64)
    if sb is not None:
        cap.files[SECURE_BOOT_VAR] = FileRecord(content=" ".join(f"{b:02x}" for b in sb))
    elif runner.glob("/sys/firmware/efi"):
        cap.files[SECURE_BOOT_VAR] = FileRecord(error="missing")
    cap.globs["/sys/firmware/efi"] = runner.glob("/sys/firmware/efi")
    cap.globs["/lib/modules/*"] = runner.glob("/lib/modules/*")
    for pat in MODULE_GLOBS:
        cap.globs[pat] = runner.glob(pat)
    cap.globs["/lib/modules/*/build"] = runner.glob("/lib/modules/*/build")
    cap.globs["/usr/src/linux-headers-*"] = runner.glob("/usr/src/linux-headers-*")
    cap.globs["/usr/src/kernels/*"] = runner.glob("/usr/src/kernels/*")
    cap.globs["/var/lib/dkms/nvidia*/*"] = runner.glob("/var/lib/dkms/nvidia*/*")
    conf = sorted(
        set(
            runner.glob("/etc/modprobe.d/*.conf")
            + runner.glob("/lib/modprobe.d/*.conf")
            + runner.glob("/usr/lib/modprobe.d/*.conf")
            + runner.glob("/run/modprobe.d/*.conf")
        )
    )
    cap.globs["modprobe.d"] = conf
    for c in conf:
        fr = runner.read(c, limit=20_000)
        if fr.content is not None and re.search(r"nouveau|nvidia", fr.content):
            cap.files[c] = fr
    cap.globs["/dev/nvidia*"] = runner.glob("/dev/nvidia*")
    for key in MOK_KEYS:
        cap.globs[key] = runner.glob(key)
    grub = runner.read("/etc/default/grub", limit=200_000)
    if grub.content is not None:
        lines = [ln for ln in grub.content.splitlines() if ln.startswith("GRUB_CMDLINE_LINUX")]
        grub = FileRecord(content="\n".join(lines) + "\n", truncated=True)
    cap.files["/etc/default/grub"] = grub
    for tree in cap.globs["/var/lib/dkms/nvidia*/*"]:
        log = f"{tree}/build/make.log"
        fr = runner.read(log, limit=5_000_000)
        if fr.content is not None:  # the last lines hold the compiler's error
            cap.files[log] = FileRecord(content="\n".join(fr.content.splitlines()[-80:]) + "\n",
                                        truncated=True)


def _read_cuda(runner: Runner, cap: Capture, environ: dict[str, str], prefix: str | None) -> None:
    """CUDA toolkits, cuDNN headers, CUDA libraries on LD_LIBRARY_PATH, conda's CUDA packages, WSL's
    libcuda."""
    cap.globs["/usr/local/cuda*"] = runner.glob("/usr/local/cuda*")
    link = runner.readlink("/usr/local/cuda")
    if link:
        cap.files["readlink /usr/local/cuda"] = FileRecord(content=link)
    for d in cap.globs["/usr/local/cuda*"]:
        for name in ("version.json", "version.txt"):
            p = f"{d}/{name}"
            if p not in cap.files:
                fr = runner.read(p)
                if fr.content is not None:
                    cap.files[p] = fr
        cap.globs[f"{d}/dist-info/*"] = runner.glob(f"{d}/dist-info/nvidia_cuda_runtime-*")
    for pat in (
        "/usr/include/cudnn_version*.h",
        "/usr/include/*/cudnn_version*.h",
        "/usr/local/cuda*/include/cudnn_version*.h",
        "/usr/include/cudnn.h",
    ):
        for p in runner.glob(pat):
            fr = runner.read(p, limit=20_000)
            if fr.content is not None:
                lines = [
                    ln
                    for ln in fr.content.splitlines()
                    if re.match(r"#define CUDNN_(MAJOR|MINOR|PATCHLEVEL)\b", ln)
                ]
                cap.files[p] = FileRecord(content="\n".join(lines) + "\n", truncated=True)
    for d in (environ.get("LD_LIBRARY_PATH") or "").split(":"):
        if d:
            cap.globs[f"ldpath:{d}"] = [
                p
                for p in runner.glob(f"{d}/lib*.so*")
                if re.search(
                    r"/lib(cudnn|cudart|cublas|cuda|nvidia-ml|nvrtc|cusolver|cufft|nccl)[^/]*$", p
                )
            ]
    cap.globs["/usr/lib/wsl/lib/libcuda.so*"] = runner.glob("/usr/lib/wsl/lib/libcuda.so*")
    if prefix:
        cap.globs["conda-meta"] = [
            p.rsplit("/", 1)[-1]
            for p in runner.glob(f"{prefix}/conda-meta/*.json")
            if re.search(r"/(py)?torch|cpuonly|cpu-only|cudatoolkit|cuda-|cudnn|tensorflow|cupy|jax", p)
        ]


def _read_containers(runner: Runner, cap: Capture, environ: dict[str, str]) -> None:
    """CDI specs, the container toolkit's configuration, where docker comes from (a snap?)."""
    cap.globs["/etc/cdi/*"] = runner.glob("/etc/cdi/*")
    cap.globs["/var/run/cdi/*"] = runner.glob("/var/run/cdi/*")
    for spec in cap.globs["/etc/cdi/*"] + cap.globs["/var/run/cdi/*"]:
        fr = runner.read(spec, limit=2_000_000)
        if fr.content is not None:  # only the lines that name driver files by version
            keep = [ln for ln in fr.content.splitlines() if re.search(r"\.so\.\d{3}\.", ln)][:50]
            cap.files[spec] = FileRecord(content="\n".join(keep) + "\n", truncated=True)
    cap.globs["/etc/nvidia-container-runtime/config.toml"] = runner.glob(
        "/etc/nvidia-container-runtime/config.toml"
    )
    docker = None
    for d in (environ.get("PATH") or "").split(":"):
        if d and runner.glob(f"{d}/docker"):
            docker = f"{d}/docker"
            break
    cap.globs["which docker"] = [docker] if docker else []
    cap.globs["/snap/bin/docker"] = runner.glob("/snap/bin/docker")



def _read_history(runner: Runner, cap: Capture) -> None:
    """apt's and dpkg's logs, reduced to the driver/CUDA/kernel/container packages."""
    for p in [
        "/var/log/apt/history.log",
        *runner.glob("/var/log/apt/history.log.*.gz"),
        *runner.glob("/var/log/apt/history.log.[0-9]"),
    ]:
        fr = runner.read(p, limit=20_000_000)
        if fr.content is not None:
            fr = FileRecord(content=_history_filter(fr.content), truncated=fr.truncated)
        cap.files[p] = fr
    for p in ["/var/log/dpkg.log", *runner.glob("/var/log/dpkg.log.[0-9]")]:
        fr = runner.read(p, limit=20_000_000)
        if fr.content is not None:
            fr = FileRecord(content=_dpkg_log_filter(fr.content), truncated=fr.truncated)
        cap.files[p] = fr



def collect(
    *,
    runner: Runner | None = None,
    quick: bool = False,
    python: str | None = None,
    deep: bool = False,
    deep_timeout: float = 120.0,
    env: dict[str, str] | None = None,
    workers: int = 8,
) -> Capture:
    """Probe the host. ``quick`` skips commands, history and Docker (for the fingerprint)."""
    from gpuops import __version__

    runner = runner or LiveRunner()
    environ = dict(os.environ) if env is None else env
    cap = Capture(
        created=now_iso(), gpuops_version=__version__, kind="quick" if quick else "live"
    )
    cap.live = True
    cap.env = {k: environ[k] for k in ENV_KEYS if k in environ}

    # Commands, the Docker API and NVML run in threads (at most ``workers`` at a time) while this
    # thread reads files; plain threads, not concurrent.futures, which costs an import of logging.
    tasks: dict[str, _Task] = {}
    api: _Task | None = None
    nvml_task: _Task | None = None
    if not quick:
        limit = threading.BoundedSemaphore(max(1, workers))
        base_path = environ.get("PATH", os.defpath)
        api_host = _docker_api_host(runner, environ) if isinstance(runner, LiveRunner) else None
        if api_host is not None:
            api = _Task(limit, _docker_api_info, runner, api_host)
        for key, (argv, timeout, extra) in _commands(environ).items():
            if key == "docker-info" and api is not None:
                continue
            path = f"{base_path}:{extra}" if extra else base_path
            r = (
                runner
                if not isinstance(runner, LiveRunner)
                else LiveRunner(root=runner.root or None, path=path, default_timeout=runner.default_timeout)
            )
            tasks[key] = _Task(limit, r.run, argv, timeout)
        nvml_task = _Task(limit, _nvml)

    # Meanwhile: platform, files, globs, packages.
    u = os.uname()
    cap.platform = PlatformInfo(
        system=u.sysname, machine=u.machine, kernel=u.release, cpu_model=_cpu_model(runner)
    )

    for path in FILES:
        cap.files[path] = runner.read(path)
    cap.globs["/.dockerenv"] = runner.glob("/.dockerenv")
    cap.globs["/run/.containerenv"] = runner.glob("/run/.containerenv")

    pyinfo, paths = _python_paths(python, runner)
    cap.python = pyinfo
    dists = _scan_dists(paths)
    _dist_files(dists, runner)
    cap.packages = dists

    if not quick:
        _read_kernel_module(runner, cap)
        _read_cuda(runner, cap, environ, pyinfo.prefix)
        _read_containers(runner, cap, environ)
        _read_history(runner, cap)

    cap.pci = _pci(runner)

    if not quick:
        if api is not None:
            cap.commands["docker-info"] = api.result()
        for key, task in tasks.items():
            rec: CommandRecord = task.result()
            f = _FILTERS.get(key)
            if f is not None and rec.stdout:
                rec.stdout = f(rec.stdout)
            cap.commands[key] = rec
        cap.nvml = nvml_task.result() if nvml_task else None
        keys = [k for key in MOK_KEYS for k in cap.globs.get(key, [])]
        sb = cap.commands.get("mokutil-sb-state")
        if keys and sb is not None and sb.error is None:
            r = runner if not isinstance(runner, LiveRunner) else LiveRunner(
                root=runner.root or None, path=f"{environ.get('PATH', os.defpath)}:{_SBIN}",
                default_timeout=runner.default_timeout)
            cap.commands["mokutil-test-key"] = r.run(["mokutil", "--test-key", keys[0]], 5.0)
    else:
        cap.nvml = _nvml()

    if deep:
        from gpuops.doctor.deep import run_deep

        cap.deep = run_deep(cap, runner=runner, python=python, timeout=deep_timeout)
    return cap
