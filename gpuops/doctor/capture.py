"""The capture: everything doctor gathered from a host, raw, in a versioned YAML format.

A capture holds *observations*, not conclusions: each command with its exit code, stdout and
stderr; file contents; directory globs; Python package metadata; environment variables; the NVML
answer; ``--deep`` child-process results. Parsing happens later (``gpuops.doctor.facts``), so a
capture taken today can be diagnosed by tomorrow's doctor, on another machine.

Captures made from bug reports (the test fixtures) also use ``stated``: facts a person reported
without the raw output (e.g. "driver 470.182.03"). They rank below observed values.

The format is documented in ``docs/capture-format.md``. ``FORMAT_VERSION`` changes when a
reader of the old format would misread the new one; unknown versions are refused (exit 2).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from gpuops.errors import GpuopsError, UsageError

FORMAT = "gpuops-capture"
FORMAT_VERSION = 1


# The records are plain dataclasses: the live path builds them from what gpuops itself measured and
# needs no validation, and ``gpuops doctor`` must start fast and run when pydantic is broken. A file
# is validated when it is loaded (``parse_capture``: pydantic, imported there), with unknown keys
# refused (``__pydantic_config__``, read by pydantic only).
class _Strict:
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}


@dataclass(kw_only=True)
class CommandRecord(_Strict):
    """One command run through the runner. ``error`` says why it gave no normal result."""

    argv: list[str]
    rc: int | None = None  # None: did not run, or (in a report) not shown
    stdout: str = ""
    stderr: str = ""
    # not_found | timeout | permission | failed_to_start | crashed (killed by a signal) |
    # too_much_output (cut off at the runner's limit and killed)
    error: (
        Literal["not_found", "timeout", "permission", "failed_to_start", "crashed", "too_much_output"] | None
    ) = None
    seconds: float | None = None
    # A report capture may show only part of a command's output: an excerpt says nothing about
    # the lines it does not show (a missing line is unknown, not absent).
    excerpt: bool = False

    @property
    def ran(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """stdout and stderr together (tools mix what goes where)."""
        if self.stdout and self.stderr:
            return self.stdout.rstrip("\n") + "\n" + self.stderr
        return self.stdout or self.stderr


@dataclass(kw_only=True)
class FileRecord(_Strict):
    """A file read as text (truncated to a limit). ``content`` None: absent or unreadable."""

    content: str | None = None
    error: Literal["missing", "permission", "not_text", "other"] | None = None
    truncated: bool = False


@dataclass(kw_only=True)
class DistRecord(_Strict):
    """An installed Python distribution (from its metadata, never imported)."""

    name: str
    version: str | None = None
    location: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text (e.g. torch/version.py)


@dataclass(kw_only=True)
class NvmlGpu(_Strict):
    index: int
    name: str | None = None
    cc: str | None = None  # "9.0"
    memory_mib: int | None = None
    pci_bus_id: str | None = None
    mig_mode: Literal["enabled", "disabled"] | None = None  # current MIG mode; None: unsupported/unknown
    mig_instances: int | None = None  # GPU instances configured while MIG is on
    persistence_mode: Literal["enabled", "disabled"] | None = None


@dataclass(kw_only=True)
class NvmlRecord(_Strict):
    """What NVML answered (through nvidia-ml-py), or why it could not be asked."""

    ok: bool
    error: str | None = None
    driver_version: str | None = None
    nvml_version: str | None = None
    cuda_driver_version: int | None = None  # e.g. 12020 for 12.2
    gpus: list[NvmlGpu] = field(default_factory=list)


@dataclass(kw_only=True)
class PciDevice(_Strict):
    slot: str
    vendor: str  # "0x10de"
    device: str | None = None
    pci_class: str | None = None  # "0x030000"
    driver: str | None = None  # bound kernel driver, e.g. "nvidia", "nouveau"


@dataclass(kw_only=True)
class DeepRecord(_Strict):
    """``--deep``: one framework imported in a child process, one tiny convolution on the GPU."""

    framework: str
    ok: bool | None = None
    output: str = ""
    error: str | None = None
    seconds: float | None = None


@dataclass(kw_only=True)
class LogRecord(_Strict):
    """An error text the user attached (``--log FILE``), or that a bug report showed."""

    origin: str  # what produced it: "torch import", "docker run --gpus all", a file name
    text: str


@dataclass(kw_only=True)
class StatedGpu(_Strict):
    name: str | None = None
    cc: str | None = None
    count: int = 1


@dataclass(kw_only=True)
class StatedPackage(_Strict):
    name: str
    version: str | None = None
    cuda: str | None = None  # the CUDA the build targets, "11.7"; "cpu" for a CPU-only build


@dataclass(kw_only=True)
class Stated(_Strict):
    """Facts a person reported without the raw output. Used only where no observation exists."""

    os: str | None = None
    kernel: str | None = None
    driver_version: str | None = None
    loaded_module_version: str | None = None
    userspace_driver_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: list[StatedGpu] = field(default_factory=list)
    gpu_present: bool | None = None
    cuda_toolkit: str | None = None
    cudnn: str | None = None
    secure_boot: bool | None = None
    modules_loaded: list[str] = field(default_factory=list)
    in_container: bool | None = None
    docker_installed_as: str | None = None  # "snap", "deb", ...
    # What a report says happened, in words.
    rebooted_since_upgrade: bool | None = None  # rebooted after the last driver/kernel upgrade
    suspend_resume: bool | None = None  # the failure began after a suspend/resume
    driver_install_method: str | None = None  # package | runfile | conda | cuda-repo | other
    container_required_cuda: str | None = None  # the CUDA an image requires (NVIDIA_REQUIRE_CUDA)
    wsl: bool | None = None  # runs under WSL2
    mig_enabled: bool | None = None
    persistence_mode: bool | None = None
    module_flavour: str | None = None  # "open" | "proprietary" kernel module
    packages: list[StatedPackage] = field(default_factory=list)
    os_packages: dict[str, str | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class PythonInfo(_Strict):
    version: str | None = None
    executable: str | None = None
    prefix: str | None = None


@dataclass(kw_only=True)
class PlatformInfo(_Strict):
    system: str | None = None
    machine: str | None = None
    kernel: str | None = None  # the running kernel, as `uname -r` prints it
    cpu_model: str | None = None


@dataclass(kw_only=True)
class Capture(_Strict):
    format: Literal["gpuops-capture"] = FORMAT
    format_version: int = FORMAT_VERSION
    created: str | None = None
    gpuops_version: str | None = None
    kind: Literal["live", "quick", "report"] = "live"
    source: str | None = None  # for captures made from a public report: its URL
    note: str | None = None
    platform: PlatformInfo = field(default_factory=PlatformInfo)
    python: PythonInfo = field(default_factory=PythonInfo)
    commands: dict[str, CommandRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    globs: dict[str, list[str]] = field(default_factory=dict)
    pci: list[PciDevice] | None = None
    packages: dict[str, DistRecord] | None = None  # None: not collected
    env: dict[str, str] = field(default_factory=dict)
    nvml: NvmlRecord | None = None
    deep: list[DeepRecord] | None = None
    logs: list[LogRecord] = field(default_factory=list)
    stated: Stated | None = None

    # Not part of the file (not a field): set on a capture made on this host in this process.
    live: ClassVar[bool] = False

    # -- accessors that never raise ---------------------------------------------------------
    def cmd(self, key: str) -> CommandRecord | None:
        return self.commands.get(key)

    def file(self, path: str) -> str | None:
        rec = self.files.get(path)
        return rec.content if rec else None

    def file_known(self, path: str) -> bool:
        """True when the file was looked at (present or not)."""
        return path in self.files


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _str_presenter(dumper: Any, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def capture_dict(capture: Capture) -> dict[str, Any]:
    """The capture as plain data (every value is already a JSON/YAML type)."""
    return dataclasses.asdict(capture)


def _import(module: str, what: str, where: str) -> Any:
    """``module``, or one clear error: live doctor runs without it, reading or writing a file does not."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as e:
        raise GpuopsError(
            f"{where}: cannot {what}: {module} is not importable ({type(e).__name__}: {e})",
            hint="run `gpuops doctor` without --capture/--replay, or repair it (pip install -e .)",
        ) from None


def dump_capture(capture: Capture) -> str:
    yaml = _import("yaml", "write the capture", "capture")

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(str, _str_presenter)
    data = capture_dict(capture)
    # Keep files readable: drop empty sections.
    for key in ("logs",):
        if not data.get(key):
            data.pop(key, None)
    if data.get("stated") is None:
        data.pop("stated", None)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def save_capture(capture: Capture, path: str | Path) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dump_capture(capture), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{p}: cannot write the capture ({e.strerror or e})") from None
    return p


# Bounds on what a capture file may hold, checked before anything is built from it. A real capture
# is a few hundred KB with a few thousand values; these stop a hostile or broken file (an alias
# bomb, a count of 1e9, a 5,000-digit integer) from costing minutes or all the memory.
MAX_NODES = 1_000_000  # values in the document with every alias expanded
MAX_LIST = 100_000  # items in one list or mapping
MAX_INT_DIGITS = 40  # an integer literal longer than this is no size, count or version
MAX_GPU_COUNT = 1024  # stated.gpus[].count: more GPUs than any one machine has


def check_yaml_nodes(root: Any, where: str, what: str = "capture") -> None:
    """Refuse a composed YAML document that would expand past ``MAX_NODES`` or holds absurd scalars.

    Aliases point at the same node object, so the expanded size is counted once per node
    (memoised by identity) without building anything: a 1 MB alias bomb takes milliseconds."""
    import yaml

    sizes: dict[int, int] = {}
    order: list[tuple[Any, bool]] = [(root, False)]
    while order:  # iterative post-order walk: deep nesting cannot overflow the stack
        node, done = order.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
                line = node.start_mark.line + 1 if node.start_mark else "?"
                raise UsageError(f"{where}: malformed {what} at line {line}: an integer of "
                                 f"{len(node.value)} characters (at most {MAX_INT_DIGITS})")
            sizes[key] = 1
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = [c for pair in node.value for c in pair]
        if len(node.value) > MAX_LIST:
            raise UsageError(f"{where}: malformed {what}: a list or mapping of {len(node.value)} items "
                             f"(at most {MAX_LIST})")
        if not done:
            sizes[key] = -1  # in progress: a recursive alias points back here
            order.append((node, True))
            order.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1
        for c in children:
            n = sizes.get(id(c), 1)
            total += 1 if n < 0 else n
        if total > MAX_NODES:
            raise UsageError(f"{where}: refused: the YAML expands to more than {MAX_NODES:,} values "
                             "(aliases repeated over and over; not a gpuops capture)")
        sizes[key] = total


def _check_values(data: Any, where: str) -> None:
    """Bounds on the decoded document (a YAML or a JSON one): list lengths, integer sizes, counts."""
    stack: list[tuple[Any, str]] = [(data, "")]
    seen = 0
    while stack:
        value, loc = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise UsageError(f"{where}: refused: more than {MAX_NODES:,} values (not a gpuops capture)")
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if value.bit_length() > 128:
                raise UsageError(f"{where}: malformed capture at {loc or '(top)'}: expected an integer of "
                                 f"at most {MAX_INT_DIGITS} digits")
            continue
        if isinstance(value, list | dict):
            if len(value) > MAX_LIST:
                raise UsageError(f"{where}: malformed capture at {loc or '(top)'}: expected at most "
                                 f"{MAX_LIST:,} items, got {len(value):,}")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{loc}.{k}" if loc else str(k)) for k, v in items)
    stated = data.get("stated") if isinstance(data, dict) else None
    gpus = stated.get("gpus") if isinstance(stated, dict) else None
    for i, gpu in enumerate(gpus if isinstance(gpus, list) else []):
        count = gpu.get("count") if isinstance(gpu, dict) else None
        if isinstance(count, int | float) and not isinstance(count, bool) and not 0 <= count <= MAX_GPU_COUNT:
            raise UsageError(f"{where}: malformed capture at stated.gpus.{i}.count: expected a number of "
                             f"GPUs from 0 to {MAX_GPU_COUNT}, got {count!r}")


def parse_capture(data: Any, where: str = "capture") -> Capture:
    """Validate a decoded capture document; one clear ``UsageError`` line when it is not one."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a gpuops capture (expected a mapping, got {type(data).__name__})")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise UsageError(f"{where}: not a gpuops capture (format: {fmt!r}, expected {FORMAT!r})")
    ver = data.get("format_version")
    if ver != FORMAT_VERSION:
        raise UsageError(
            f"{where}: unknown capture format_version {ver!r}; this gpuops reads version {FORMAT_VERSION}",
            hint="upgrade gpuops, or re-capture with this version",
        )
    _check_values(data, where)
    pydantic = _import("pydantic", "validate the capture", where)
    TypeAdapter, ValidationError = pydantic.TypeAdapter, pydantic.ValidationError
    try:
        return TypeAdapter(Capture).validate_python(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{where}: malformed capture at {loc or '(top)'}: {first['msg']}") from None


def load_capture(path: str | Path, max_bytes: int = 64 * 1024 * 1024) -> Capture:
    p = Path(path)
    yaml = _import("yaml", "read the capture", str(p))
    if not p.is_file():
        raise UsageError(f"{p}: no such capture file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise UsageError(f"{p}: cannot read the capture ({e.strerror or e})") from None
    if len(raw) > max_bytes:
        raise UsageError(f"{p}: refused: larger than {max_bytes // (1024 * 1024)} MB (not a gpuops capture)")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError(f"{p}: not a gpuops capture (encoded as UTF-16; expected UTF-8 YAML text)")
    if b"\x00" in raw:
        raise UsageError(f"{p}: not a gpuops capture (binary data: a NUL byte; expected UTF-8 YAML text)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not a gpuops capture (expected UTF-8 text; byte {e.start} is not)") from None
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # Compose first (aliases stay shared nodes), check the sizes, then build the values.
        node = yaml.compose(text, Loader=loader_cls)
        if node is None:
            data = None
        else:
            check_yaml_nodes(node, str(p))
            constructor = yaml.SafeLoader("")
            data = constructor.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())[:300]
        raise UsageError(f"{p}: not valid YAML{at}: {why}") from None
    except RecursionError:
        raise UsageError(f"{p}: not valid YAML (nested too deeply)") from None
    except (ValueError, TypeError, OverflowError) as e:  # a value the constructor cannot build
        raise UsageError(f"{p}: not valid YAML: {str(e).splitlines()[0][:200]}") from None
    return parse_capture(data, str(p))
