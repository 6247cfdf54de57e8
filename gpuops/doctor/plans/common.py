"""What every plan area shares: the distribution's package manager, pip, reboot, manual and file steps.

Steps are argument vectors (``RepairStep.argv``), never shell strings; a probed value enters one only
after it matched its grammar (``gpuops.doctor.grammar``). When a value does not, the plan says so in a
manual step and builds nothing on it.

Package managers and package names, by distribution family (``/etc/os-release`` ID and ID_LIKE):

* apt: Debian, Ubuntu and derivatives. Kernel headers ``linux-headers-<kernel release>``.
* dnf: Fedora, RHEL >= 8 and its rebuilds (Rocky, AlmaLinux, CentOS Stream). yum: RHEL/CentOS 7.
  Headers ``kernel-devel-<kernel release>``. NVIDIA: "the kernel headers and development packages for
  the running version of the kernel [must] be installed"
  (https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/pre-installation-actions.html).
* zypper: openSUSE, SLES. Headers ``kernel-<flavour>-devel``, ``kernel-default-devel`` for the default
  kernel (the driver KMP's spec requires ``kernel-%1-devel``:
  https://build.opensuse.org/projects/home:cabelo:innovators/packages/nvidia-driver-G06/files/preamble?expand=1).
* pacman: Arch, Manjaro, EndeavourOS, CachyOS. Headers ``linux-headers`` for the ``linux`` kernel,
  ``<kernel package>-headers`` for the others (https://wiki.archlinux.org/title/NVIDIA, as cited by
  https://gist.github.com/Alistair1231/94a0a9b85d7133e47b1729d1ea5852d4).

An unknown distribution gets a manual step that says what to install, never a guessed command.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuops.doctor import grammar
from gpuops.doctor.findings import RepairStep, WriteFile

if TYPE_CHECKING:
    from gpuops.doctor.checks.base import Ctx
    from gpuops.doctor.facts import Facts

Family = str  # "apt" | "dnf" | "yum" | "zypper" | "pacman"

_APT_IDS = {"debian", "ubuntu", "linuxmint", "pop", "raspbian", "kali", "elementary", "zorin", "neon"}
_RHEL_IDS = {"rhel", "centos", "rocky", "almalinux", "ol", "fedora"}
_SUSE_IDS = {"opensuse", "opensuse-leap", "opensuse-tumbleweed", "opensuse-microos", "sles", "sled", "suse"}
_ARCH_IDS = {"arch", "manjaro", "endeavouros", "cachyos", "garuda", "artix"}

# PRETTY_NAME words -> os-release ID, for captures whose facts carry only the pretty name.
_NAME_IDS = [
    ("ubuntu", "ubuntu"),
    ("debian", "debian"),
    ("linux mint", "linuxmint"),
    ("pop!_os", "pop"),
    ("fedora", "fedora"),
    ("red hat", "rhel"),
    ("rhel", "rhel"),
    ("centos", "centos"),
    ("rocky", "rocky"),
    ("alma", "almalinux"),
    ("opensuse", "opensuse"),
    ("suse linux enterprise", "sles"),
    ("manjaro", "manjaro"),
    ("endeavour", "endeavouros"),
    ("cachyos", "cachyos"),
    ("arch linux", "arch"),
]


@dataclass(frozen=True)
class Distro:
    family: Family | None  # None: not known well enough to write a command
    id: str | None
    name: str  # for texts: "Ubuntu 22.04", "this distribution"
    major: int | None = None  # VERSION_ID's first number: 9 for Rocky 9.4

    @property
    def known(self) -> bool:
        return self.family is not None


def _major(version: str | None) -> int | None:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def distro(f: Facts) -> Distro:
    """The distribution family from ``/etc/os-release`` (``f.os_id``, ``f.os_id_like``)."""
    os_id = (f.os_id or "").lower() or None
    like = [x.lower() for x in (f.os_id_like or [])]
    version = f.os_version_id
    if os_id is None and f.os_name:
        low = f.os_name.lower()
        os_id = next((i for word, i in _NAME_IDS if word in low), None)
    if version is None and f.os_name:
        m = re.search(r"\b(\d+(?:\.\d+)?)\b", f.os_name)
        version = m.group(1) if m else None
    # the pretty name appears in texts only when it is plain (letters, digits, spaces, a few marks)
    pretty = f.os_name if f.os_name and re.fullmatch(r"[A-Za-z0-9 ._()/+-]{1,60}", f.os_name) else None
    name = pretty or (os_id if os_id and grammar.package_name(os_id) else None) or "this distribution"
    ids = [os_id, *like] if os_id else list(like)
    fam: Family | None = None
    if any(i in _APT_IDS for i in ids):
        fam = "apt"
    elif any(i in _ARCH_IDS for i in ids):
        fam = "pacman"
    elif any(i in _SUSE_IDS or (i or "").startswith("opensuse") for i in ids):
        fam = "zypper"
    elif os_id == "fedora":
        fam = "dnf"
    elif os_id == "amzn":
        fam = "dnf" if (_major(version) or 0) >= 2022 else "yum" if _major(version) == 2 else None
    elif any(i in _RHEL_IDS for i in ids):
        major = _major(version)
        # CentOS Stream has ID centos and VERSION_ID 8 or 9; RHEL 8 and later use dnf, 7 uses yum.
        fam = "dnf" if major is not None and major >= 8 else "yum" if major == 7 else None
    if fam is None and not ids:
        # no os-release: the package database that answered (dpkg-query / pacman -Q), or apt's own
        # logs, still tell which package manager this machine has
        fam = {"dpkg": "apt", "pacman": "pacman"}.get(f.package_manager or "")
        if fam is None and any(
            (c.source or "").startswith(("/var/log/apt/", "/var/log/dpkg.log")) for c in f.history
        ):
            fam = "apt"
    return Distro(family=fam, id=os_id, name=name, major=_major(version))


# -- generic steps ------------------------------------------------------------------------------


def manual(text: str, why: str, argv: list[str] | None = None, **kw: Any) -> RepairStep:
    """A step a person does (firmware, Windows, another machine): the executor stops there."""
    return RepairStep(argv=list(argv or []), text=text, why=why, needs_root=False, manual=True, **kw)


def unreadable(what: str, f: Facts | None = None, key: str | None = None) -> RepairStep:
    """The manual step of a plan that cannot be built because a probed value failed its grammar."""
    raw = (f.unreadable.get(key or what) if f is not None else None) or None
    # the raw text is not repeated here: it may be anything, a shell command included
    shown = " (the probe printed something else; gpuops doctor --capture keeps it)" if raw else ""
    return manual(
        f"could not read {what} safely{shown}; check it by hand before repairing",
        "gpuops builds no command on a value that does not look like what it claims to be",
    )


def reboot_step(why: str, resolves: str | None = None, **kw: Any) -> RepairStep:
    return RepairStep(
        argv=["systemctl", "reboot"],
        why=why,
        needs_root=True,
        needs_reboot=True,
        verify=["nvidia-smi"],
        resolves=resolves,
        **kw,
    )


def root_path(ctx: Ctx, path: str) -> str:
    """``path`` (absolute, on the host) under ``ctx.root``, the prefix the executor tests use."""
    return (ctx.root.rstrip("/") + path) if ctx.root else path


def inside(ctx: Ctx, path: str, base: str) -> str | None:
    """``path`` (host path) re-based on ``ctx.root`` when, resolved, it stays inside ``base``."""
    ok = grammar.path_inside(path, base)
    return root_path(ctx, ok) if ok else None


def write_step(ctx: Ctx, base: str, name: str, content: str, why: str, **kw: Any) -> RepairStep | None:
    """Write ``base/name`` (under ``ctx.root``); None when the name would leave ``base``."""
    path = inside(ctx, os.path.join(base, name), base)
    if path is None:
        return None
    return RepairStep(write=WriteFile(path=path, content=content), why=why, **kw)


# -- packages -----------------------------------------------------------------------------------


_PKG_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:_-]{0,63}")


def valid_packages(names: list[str]) -> list[str] | None:
    """``names`` when every one is a well-formed package name (``pkg`` or ``pkg=version``)."""
    for n in names:
        base, sep, ver = n.partition("=")
        if grammar.package_name(base) is None or (sep and not _PKG_VERSION.fullmatch(ver)):
            return None
    return list(names)


# argv before the package names, per package manager and verb.
_PKG_ARGV: dict[str, dict[str, list[str]]] = {
    "install": {
        "apt": ["apt-get", "install", "-y"],
        "dnf": ["dnf", "install", "-y"],
        "yum": ["yum", "install", "-y"],
        "zypper": ["zypper", "--non-interactive", "install"],
        "pacman": ["pacman", "-S", "--needed", "--noconfirm"],
    },
    "reinstall": {
        "apt": ["apt-get", "install", "-y", "--reinstall"],
        "dnf": ["dnf", "reinstall", "-y"],
        "yum": ["yum", "reinstall", "-y"],
        "zypper": ["zypper", "--non-interactive", "install", "--force"],
        "pacman": ["pacman", "-S", "--noconfirm"],
    },
    "remove": {
        "apt": ["apt-get", "remove", "-y", "--purge"],
        "dnf": ["dnf", "remove", "-y"],
        "yum": ["yum", "remove", "-y"],
        "zypper": ["zypper", "--non-interactive", "remove"],
        "pacman": ["pacman", "-Rns", "--noconfirm"],
    },
}


def _package_step(verb: str, d: Distro, pkgs: list[str], why: str, **kw: Any) -> RepairStep:
    """``verb`` (install | reinstall | remove) ``pkgs`` with the distribution's package manager; a
    manual step when it is unknown, none built on a package name that fails its grammar."""
    ok = valid_packages(pkgs)
    if ok is None:
        return unreadable("a package name")
    if d.family is None:
        if verb == "install":
            return manual(
                f"install with your distribution's package manager: {' '.join(ok)} "
                f"(names may differ on {d.name})",
                why,
            )
        return manual(f"{verb} with your package manager: {' '.join(ok)}", why)
    return RepairStep(argv=[*_PKG_ARGV[verb][d.family], *ok], why=why, **kw)


def install(d: Distro, pkgs: list[str], why: str, **kw: Any) -> RepairStep:
    """Install ``pkgs`` with the distribution's package manager (a manual step when it is unknown)."""
    return _package_step("install", d, pkgs, why, **kw)


def reinstall(d: Distro, pkgs: list[str], why: str, **kw: Any) -> RepairStep:
    return _package_step("reinstall", d, pkgs, why, **kw)


def remove(d: Distro, pkgs: list[str], why: str, **kw: Any) -> RepairStep:
    return _package_step("remove", d, pkgs, why, **kw)


def headers_package(d: Distro, kernel: str) -> str | None:
    """The package with the build headers of ``kernel`` (a release that passed its grammar)."""
    if d.family == "apt":
        return f"linux-headers-{kernel}"
    if d.family in ("dnf", "yum"):
        return f"kernel-devel-{kernel}"
    if d.family == "zypper":
        m = re.search(r"-([a-z]+)$", kernel)  # 6.4.0-150600.23.7-default -> default
        return f"kernel-{m.group(1) if m else 'default'}-devel"
    if d.family == "pacman":
        for flavour in ("lts", "zen", "hardened", "cachyos", "rt"):
            if re.search(rf"[-.]{flavour}(?:[-.\d]|$)", kernel):
                return f"linux-{flavour}-headers"
        return "linux-headers"
    return None


def initramfs(
    d: Distro, why: str = "the initramfs carries its own copy of the module configuration"
) -> RepairStep:
    # the initramfs of the running kernel (the one that boots next, unless an upgrade is pending)
    if d.family == "apt":
        return RepairStep(argv=["update-initramfs", "-u"], why=why)
    if d.family in ("dnf", "yum", "zypper"):
        return RepairStep(argv=["dracut", "--force"], why=why)
    if d.family == "pacman":
        return RepairStep(argv=["mkinitcpio", "-P"], why=why)
    return manual("rebuild the initramfs with your distribution's tool", why)


# -- host or container ---------------------------------------------------------------------------


def on_host(f: Facts, steps: list[RepairStep]) -> list[RepairStep]:
    """Inside a container a host driver change cannot be made: each step becomes a manual one."""
    if not f.in_container:
        return steps
    out = []
    for s in steps:
        if s.manual:
            out.append(s)
            continue
        out.append(
            manual(
                f"on the host: {s.command}",
                s.why + " (this runs in a container: the driver and kernel module belong to the host)",
                group=s.group,
                alternative=s.alternative,
                needs_reboot=s.needs_reboot,
                optional=s.optional,
            )
        )
    return out


# -- pip ----------------------------------------------------------------------------------------


SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+-]{0,4000}")


def safe_path(p: object) -> str | None:
    """An absolute, normalised path of plain characters (no spaces, quotes, ``$``, ``;``), else None."""
    if isinstance(p, str) and SAFE_PATH.fullmatch(p) and os.path.normpath(p) == p:
        return p
    return None


def python_exe(f: Facts) -> str:
    """The inspected interpreter, when its path is a plain absolute path; else ``python3``."""
    return safe_path(f.python_executable) or "python3"


def pip_step(f: Facts, args: list[str], why: str, **kw: Any) -> RepairStep:
    """pip of the inspected interpreter (no root): ``[python, -m, pip, ...]``."""
    return RepairStep(argv=[python_exe(f), "-m", "pip", *args], needs_root=False, why=why, **kw)


# -- no placeholders ----------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"<[^>\s]*>|\$\(|\$\{|[{}]|XXX|\bXY\b")
_TEXT_PLACEHOLDER = re.compile(r"<[^>\s]*>|\$\(|\$\{|XXX")


def has_placeholder(step: RepairStep) -> bool:
    """A step that still has an unfilled ``<...>``, ``$(...)``, ``{...}`` or ``XXX``.

    Commands and paths are searched for all of them, the texts (what to do, why) for ``<...>``,
    ``$(``, ``${`` and ``XXX``; file contents are not searched (an apt.conf snippet has braces)."""
    parts = [*step.argv, *(step.verify or [])]
    if step.write is not None:
        parts.append(step.write.path)
    if any(PLACEHOLDER.search(p) for p in parts):
        return True
    return any(_TEXT_PLACEHOLDER.search(t or "") for t in (step.text, step.why))


_PLAIN = re.compile(r"[A-Za-z0-9 ._()/+,:=-]{1,80}")


def plain(value: object) -> str | None:
    """Probed text fit to quote in a step's explanation (a GPU name, say), else None."""
    return value if isinstance(value, str) and _PLAIN.fullmatch(value) else None


def no_placeholders(text: str) -> str:
    """Free text from elsewhere (a catalogue action) with ``<word>`` written as WORD."""
    return re.sub(r"<([^<>\s]{1,40})>", lambda m: m.group(1).upper().replace("-", "_"), text)


def gather(f: Facts, ctx: Ctx, what: str) -> list[RepairStep]:
    """What to collect next when the evidence is not explained (manual steps only)."""
    what = no_placeholders(" ".join((what or "the error").split()))[:300]
    return [
        manual(
            "save everything doctor sees: gpuops doctor --capture gpuops-capture.yaml",
            f"a capture holds every probe's output; attach it to a bug report (about: {what})",
            argv=["gpuops", "doctor", "--capture", "gpuops-capture.yaml"],
        ),
        manual(
            "as root, run nvidia-bug-report.sh (it writes nvidia-bug-report.log.gz in the current directory)",
            "NVIDIA's own report: driver state, kernel log, PCI config",
            argv=["nvidia-bug-report.sh"],
        ),
        manual(
            "keep the kernel log of this boot: journalctl -k -b --no-pager > kernel.log",
            "NVRM and Xid lines there say what the driver saw",
            argv=["journalctl", "-k", "-b", "--no-pager"],
        ),
    ]
