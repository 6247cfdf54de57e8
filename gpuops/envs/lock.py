"""Hash locks for an environment's extra pip packages: ``environments/<env>.lock.txt``.

What is locked: the spec's ``pip:`` list plus, for images that carry gpuops, gpuops's own runtime
requirements (core + the ``train`` extra, with ``mlflow-skinny`` at the host's MLflow version in
place of the full ``mlflow`` server). The framework itself is pinned exactly in the Dockerfile and
installed after the lock (its wheels come from PyTorch's index or a wheelhouse, which a PyPI
lock cannot name).

``gpuops lock ENV`` resolves them with pip for the image's Python and platform
(``pip install --dry-run --report`` with ``--python-version/--platform --only-binary=:all:``) and
writes ``name==version --hash=sha256:...`` lines, which the build installs with
``pip install --require-hashes --no-deps``. The header records a hash of the inputs; a build whose
inputs changed since the lock was written stops with "run gpuops lock ENV".
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from gpuops.envs import EnvSpec
from gpuops.envs.render import installs_gpuops
from gpuops.errors import ExternalError, SpecError

HEADER = "# gpuops lock"
_OS_GLIBC = {"ubuntu20.04": 31, "ubuntu22.04": 35, "ubuntu24.04": 39, "debian12": 36}


def gpuops_runtime_requirements() -> list[str]:
    """gpuops's install requirements as they go into an image (no dev/aws/docker extras)."""
    try:
        reqs = metadata.requires("gpuops") or []
    except metadata.PackageNotFoundError:
        reqs = []
    out: list[str] = []
    for r in reqs:
        req = Requirement(r)
        marker = str(req.marker) if req.marker else ""
        if marker and "extra" in marker and 'extra == "train"' not in marker:
            continue
        if req.name == "mlflow":
            try:
                out.append(f"mlflow-skinny=={metadata.version('mlflow')}")
            except metadata.PackageNotFoundError:
                out.append(f"mlflow-skinny{req.specifier}")
            continue
        req.marker = None
        out.append(str(req))
    return sorted(set(out), key=str.lower)


def lock_inputs(spec: EnvSpec) -> list[str]:
    reqs = list(spec.pip)
    if installs_gpuops(spec):
        reqs += gpuops_runtime_requirements()
    return reqs


def inputs_hash(spec: EnvSpec, reqs: list[str]) -> str:
    doc = json.dumps({"python": spec.python, "requirements": sorted(reqs)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


@dataclass
class LockState:
    path: Path | None
    needed: bool
    text: str  # what goes into the image ("" when nothing is locked)
    fresh: bool
    packages: int


def lock_state(spec: EnvSpec) -> LockState:
    reqs = lock_inputs(spec)
    path = spec.lock_path
    if not reqs:
        return LockState(path, False, "", True, 0)
    if path is None or not path.is_file():
        return LockState(path, True, "", False, 0)
    text = path.read_text(encoding="utf-8")
    fresh = f"# inputs: {inputs_hash(spec, reqs)}" in text
    n = sum(1 for line in text.splitlines() if "==" in line and not line.startswith("#"))
    return LockState(path, True, text, fresh, n)


def require_lock(spec: EnvSpec) -> LockState:
    st = lock_state(spec)
    if st.needed and not st.fresh:
        where = st.path or f"{spec.name}.lock.txt"
        what = "is missing" if not st.text else "is out of date with the spec"
        raise SpecError(where, "", f"a lock matching the environment (the lock {what}); "
                        f"run: gpuops lock {spec.name}")
    return st


def _platforms(glibc_minor: int) -> list[str]:
    plats = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 16, -1)]
    return [*plats, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def resolve(spec: EnvSpec, reqs: list[str], *, os_name: str | None = None,
            find_links: Path | None = None, timeout: float = 600) -> list[tuple[str, str, str]]:
    """(name, version, sha256) for every distribution pip would install for the image's Python."""
    glibc = _OS_GLIBC.get(os_name or "", 28)
    with tempfile.TemporaryDirectory(prefix="gpuops-lock-") as tmp:
        report = Path(tmp) / "report.json"
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(reqs) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--report", str(report), "--target", str(Path(tmp) / "t"),
               "--python-version", spec.python, "--only-binary=:all:", "--implementation", "cp"]
        for p in _platforms(glibc):
            cmd += ["--platform", p]
        if find_links is not None:
            cmd += ["--find-links", str(find_links)]
        cmd += ["-r", str(req_file)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ExternalError(f"pip could not resolve the lock for {spec.name}: "
                                f"{(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        data = json.loads(report.read_text())
    out = []
    for item in data.get("install", []):
        meta = item["metadata"]
        info = item.get("download_info", {}).get("archive_info", {})
        sha = (info.get("hashes") or {}).get("sha256") or info.get("hash", "").removeprefix("sha256=")
        if not sha:
            raise ExternalError(f"pip gave no sha256 for {meta['name']} {meta['version']}")
        out.append((meta["name"], meta["version"], sha))
    return sorted(out, key=lambda t: t[0].lower())


def write_lock(spec: EnvSpec, *, os_name: str | None = None, find_links: Path | None = None) -> LockState:
    reqs = lock_inputs(spec)
    path = spec.lock_path
    if path is None:
        raise SpecError(spec.name, "", "an environment loaded from a file (the lock goes beside it)")
    if not reqs:
        if path.exists():
            path.unlink()
        return lock_state(spec)
    pins = resolve(spec, reqs, os_name=os_name, find_links=find_links)
    lines = [
        f"{HEADER} for environments/{spec.name}.yaml: generated by `gpuops lock {spec.name}`; do not edit.",
        f"# inputs: {inputs_hash(spec, reqs)}",
        f"# python: {spec.python}; requirements: {', '.join(reqs)}",
    ]
    for name, version, sha in pins:
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lock_state(spec)
