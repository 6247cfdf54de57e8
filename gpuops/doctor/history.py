"""Package history: when NVIDIA, CUDA, cuDNN and kernel packages changed, and by what command.

Sources: ``/var/log/apt/history.log`` (and its rotated ``.gz`` copies), which name the command
(``apt-get upgrade``, ``/usr/bin/unattended-upgrade``), and ``/var/log/dpkg.log``, which has every
change but no command. A change seen in both is reported once, with the command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuops.doctor.capture import Capture

_ITEM = re.compile(r"([^\s,(][^,(]*?) \(([^)]*)\)")

KIND_PATTERNS = (
    ("kernel", re.compile(r"^linux-(image|modules|headers)|^kernel(-core|-modules|-devel)?($|-)", re.I)),
    (
        "driver",
        re.compile(
            r"nvidia-(driver|dkms|kernel|utils|compute|modprobe|persistenced|headless|fabricmanager)|"
            r"^libnvidia-|^nvidia-\d+|^nvidia$|^xserver-xorg-video-nvidia|^linux-modules-nvidia|"
            r"^linux-objects-nvidia|^linux-signatures-nvidia|^kmod-nvidia|^akmod-nvidia|^cuda-drivers",
            re.I,
        ),
    ),
    ("cudnn", re.compile(r"cudnn", re.I)),
    ("cuda", re.compile(r"^cuda|^libcu|nvidia-cuda", re.I)),
    ("container", re.compile(r"nvidia-container|nvidia-docker|libnvidia-container", re.I)),
    ("dkms", re.compile(r"^dkms$", re.I)),
    ("docker", re.compile(r"^docker|^containerd|^moby-", re.I)),
    # anything else NVIDIA- or CUDA-related (nvidia-settings, system76-cuda...): recorded, not judged
    ("other", re.compile(r"nvidia|cuda|^system76-cud", re.I)),
)


def is_relevant(name: str) -> bool:
    """The one rule for which OS packages doctor records and lists (probes and history alike)."""
    return package_kind(name) is not None


def package_kind(name: str) -> str | None:
    base = name.split(":", 1)[0]
    for kind, pat in KIND_PATTERNS:
        if pat.search(base):
            # container toolkit packages also match "libnvidia-": check it first
            if kind == "driver" and KIND_PATTERNS[4][1].search(base):
                return "container"
            return kind
    return None


@dataclass
class PackageChange:
    date: str  # "2024-11-20 06:25:13"
    action: str  # install | upgrade | remove | purge | downgrade | reinstall
    package: str  # without the :arch suffix
    old: str | None
    new: str | None
    command: str | None
    kind: str
    source: str  # the file it came from

    @property
    def unattended(self) -> bool:
        return bool(self.command and "unattended-upgrade" in self.command)

    def describe(self) -> str:
        ver = f"{self.old} → {self.new}" if self.old and self.new else (self.new or self.old or "")
        by = f" by {self.command}" if self.command else ""
        return f"{self.date[:16]} {self.action} {self.package} {ver}{by}".strip()


def parse_apt_history(text: str, source: str = "/var/log/apt/history.log") -> list[PackageChange]:
    out: list[PackageChange] = []
    for block in re.split(r"\n\s*\n", text):
        date = command = None
        for line in block.splitlines():
            key, _, rest = line.partition(": ")
            key = key.strip()
            if key == "Start-Date":
                date = re.sub(r"\s+", " ", rest.strip())
            elif key == "Commandline":
                command = rest.strip()
            elif key in ("Install", "Upgrade", "Remove", "Purge", "Downgrade", "Reinstall"):
                for name, vers in _ITEM.findall(rest):
                    pkg = name.strip().split(":", 1)[0]
                    kind = package_kind(pkg)
                    if kind is None:
                        continue
                    parts = [v.strip() for v in vers.split(",")]
                    parts = [p for p in parts if p != "automatic"]
                    old = new = None
                    if key in ("Upgrade", "Downgrade") and len(parts) >= 2:
                        old, new = parts[0], parts[1]
                    elif key in ("Remove", "Purge"):
                        old = parts[0] if parts else None
                    else:
                        new = parts[0] if parts else None
                    out.append(
                        PackageChange(
                            date=date or "?",
                            action=key.lower(),
                            package=pkg,
                            old=old,
                            new=new,
                            command=command,
                            kind=kind,
                            source=source,
                        )
                    )
    return out


_DPKG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (install|upgrade|remove|purge) (\S+) (\S+) (\S+)")


def parse_dpkg_log(text: str, source: str = "/var/log/dpkg.log") -> list[PackageChange]:
    out: list[PackageChange] = []
    for line in text.splitlines():
        m = _DPKG.match(line)
        if not m:
            continue
        date, action, pkgarch, v1, v2 = m.groups()
        pkg = pkgarch.split(":", 1)[0]
        kind = package_kind(pkg)
        if kind is None:
            continue
        old = None if v1 == "<none>" else v1
        new = None if v2 == "<none>" else v2
        if action == "upgrade" and old is None:
            action = "install"
        out.append(
            PackageChange(
                date=date,
                action=action,
                package=pkg,
                old=old,
                new=new,
                command=None,
                kind=kind,
                source=source,
            )
        )
    return out


def timeline(capture: Capture) -> list[PackageChange]:
    """All relevant changes, oldest first, apt's entries (with their command) preferred."""
    apt: list[PackageChange] = []
    dpkg: list[PackageChange] = []
    for path, rec in capture.files.items():
        if rec.content is None:
            continue
        if "/var/log/apt/history.log" in path:
            apt.extend(parse_apt_history(rec.content, path))
        elif "/var/log/dpkg.log" in path:
            dpkg.extend(parse_dpkg_log(rec.content, path))
    seen = {(c.package, c.new, c.old) for c in apt}
    merged = apt + [
        c
        for c in dpkg
        if (c.package, c.new, c.old) not in seen
        and not (c.action == "install" and (c.package, c.new, None) in seen)
    ]
    merged.sort(key=lambda c: c.date)
    return merged
