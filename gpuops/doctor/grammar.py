"""The grammar of every probed value that may enter a repair step.

A probed value (a driver version from ``nvidia-smi``, a kernel release from ``uname -r``, a package
name from ``dpkg-query``) is text printed by a tool gpuops does not control. Before such a value is
taken as a fact, or pasted into a command that may run as root, it must match the grammar of what it
claims to be. A value that does not is *unreadable*: doctor says so and offers no step built on it.

Each function returns the value unchanged when it is well formed, and None otherwise.
"""

from __future__ import annotations

import os
import re

# NVIDIA driver versions: 550.54.15, 535.104.05, 390.48, 470.182.03 (two or three dot-separated parts).
_DRIVER = re.compile(r"\d{2,4}\.\d{1,4}(?:\.\d{1,4})?")
# Versions in general (CUDA 12.2, cuDNN 8.9.7, torch 2.1.0+cu118, 2.0.0a0+gitabc, 1.13.1.post1).
_VERSION = re.compile(r"\d{1,6}(?:\.\d{1,6}){0,4}(?:\.?[a-z]{1,5}\d{0,6})*(?:\+[A-Za-z0-9.]{1,40})?")
# `uname -r`: 6.8.0-45-generic, 5.15.153.1-microsoft-standard-WSL2, 6.1.0-18-amd64, 4.18.0-513.el8.x86_64
_KERNEL = re.compile(r"\d{1,3}\.\d{1,3}(?:\.\d{1,6})?(?:[-+_.~][A-Za-z0-9]{1,40}){0,8}")
# Debian/RPM/Arch/Python package names (Debian policy: [a-z0-9][a-z0-9+.-]+; PEP 508 names).
_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,127}")
# A CUDA major.minor as used in wheel tags and package names: 11.8, 12.4.
_CUDA = re.compile(r"\d{1,2}\.\d{1,2}")
# A DKMS module name (nvidia, nvidia-open, nvidia-srv).
_MODULE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def _full(rx: re.Pattern[str], value: object, max_len: int = 128) -> str | None:
    if not isinstance(value, str) or not value or len(value) > max_len:
        return None
    return value if rx.fullmatch(value) else None


def driver_version(value: object) -> str | None:
    return _full(_DRIVER, value, 16)


def version(value: object) -> str | None:
    return _full(_VERSION, value, 64)


def kernel_release(value: object) -> str | None:
    return _full(_KERNEL, value, 128)


def package_name(value: object) -> str | None:
    return _full(_PACKAGE, value, 128)


def cuda_version(value: object) -> str | None:
    return _full(_CUDA, value, 5)


def module_name(value: object) -> str | None:
    return _full(_MODULE, value, 64)


def path_inside(path: object, base: str) -> str | None:
    """``path`` resolved (``..`` and symlinks followed lexically) when it stays inside ``base``.

    ``/var/lib/dkms/../../source`` is refused for base ``/var/lib/dkms``; so is ``base`` itself.
    """
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
        return None
    norm = os.path.normpath(path)
    root = os.path.normpath(base)
    if not norm.startswith(root + os.sep):
        return None
    return norm


__all__ = [
    "cuda_version",
    "driver_version",
    "kernel_release",
    "module_name",
    "package_name",
    "path_inside",
    "version",
]
