"""Every shipped GPU environment builds on a base with the traits of NVIDIA's CUDA images.

The base is the ``cuda_like_base`` fixture (``tests/infra/docker_engine.py``): the debootstrap Debian
12 image given what the gpuops Dockerfile meets on ``nvidia/cuda:*-ubuntu24.04``: user and group
``ubuntu`` with uid/gid 1000 and ``/home/ubuntu`` (the clash that made ``useradd --uid 1000`` fail), the
CUDA/NVIDIA variables, ``PATH`` with ``/usr/local/cuda/bin``, ``LD_LIBRARY_PATH`` with the
``/usr/local/nvidia`` folders, and a system Python marked ``EXTERNALLY-MANAGED`` without pip or venv.

What is real: the Dockerfile each GPU environment renders to, built by ``gpuops build``'s own code
(``build_image``) with the build-time file server, the CA bundle, apt (``pythonX.Y-venv`` from
Debian's mirror), the venv, the hash-locked gpuops runtime requirements from PyPI, the gpuops wheel,
``pip check``, the user step and ``USER gpuops``.

What is stubbed, and why:

- The framework wheels. The test writes tiny real wheels (``torch 2.13.0+cu126``, ``torch 2.13.0+cu130``,
  ``tensorflow 2.21.0``, ``chainer 7.8.1``, ``cupy-cuda110 7.8.0``: the exact pins of
  ``render.framework_requirements``) into a wheelhouse folder that the build serves, so pip's install
  step runs for real without the GB downloads. They carry the base interpreter's most specific wheel
  tag (``cp311-cp311-manylinux_2_36_x86_64`` on Debian 12), which pip ranks above the manylinux wheels
  PyPI has for the same version (with a ``py3-none-any`` stub, a first run got PyPI's real tensorflow
  2.21.0 and keras: a 2.3 GB venv).
  Each stub module holds only ``__version__`` and ``GPUOPS_TEST_STUB = True``; so the framework
  self-check (which runs the framework) is off.
- The Python version. Only Debian's mirror is reachable, whose bookworm has Python 3.11 alone (no
  Ubuntu archive, no 3.12/3.10/3.8), so each spec is built with ``python: "3.11"`` (the rendered
  Dockerfile differs from the shipped one in that number only). With 3.11 gpuops goes into every image,
  so the hash lock is the one for Python 3.11 and gpuops's requirements: ``environments/pytorch-cpu
  .lock.txt`` (its ``# inputs:`` hash is checked by ``require_lock`` as for any build).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpuops.envs import EnvSpec, load_environment
from gpuops.envs.build import BuildOptions, build_image
from gpuops.envs.render import framework_requirements, render
from tests.conftest import REPO, require
from tests.infra.docker_engine import CUDA_LIKE_ENV, HOST_CA

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GPU_ENVS = ["pytorch", "pytorch-cu130", "tensorflow", "chainer"]
BASE_PYTHON = "3.11"  # Debian 12's python3, the only interpreter the test base can have


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_stub_wheel(dest: Path, requirement: str, tag: str) -> Path:
    """A valid wheel with the wheel tag ``tag`` for the pinned ``name==version`` (METADATA, WHEEL, RECORD)."""
    req = Requirement(requirement)
    (spec,) = req.specifier
    version = spec.version
    dist = canonicalize_name(req.name).replace("-", "_")
    module = dist.split("_")[0]  # cupy_cuda110 → cupy, as the real wheel's import name
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'__version__ = "{version}"\nGPUOPS_TEST_STUB = True\n'.encode(),
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {req.name}\nVersion: {version}\n"
                             "Summary: gpuops test stub\n").encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: gpuops-tests\nRoot-Is-Purelib: false\nTag: {tag}\n"
                         .encode(),
    }
    record = "".join(f"{n},sha256={_b64_digest(d)},{len(d)}\n" for n, d in files.items())
    record += f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    path = dest / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def on_base_python(name: str, workdir: Path) -> EnvSpec:
    """The shipped spec with the base's Python; its lock is the Python 3.11 gpuops lock."""
    spec = load_environment(name, REPO / "environments")
    path = workdir / f"{name}.yaml"
    shutil.copy2(REPO / "environments" / "pytorch-cpu.lock.txt", workdir / f"{name}.lock.txt")
    return spec.model_copy(update={"python": BASE_PYTHON, "path": path})


def base_wheel_tag(client, image: str) -> str:
    """The most specific wheel tag the image's python3 accepts, e.g. ``cp311-cp311-manylinux_2_36_x86_64``."""
    out = _sh(client, image, "python3 -c 'import platform, sys; v = sys.version_info; "
              "print(f\"cp{v[0]}{v[1]}\", platform.libc_ver()[1].replace(\".\", \"_\"), platform.machine())'")
    py, glibc, arch = out.split()
    return f"{py}-{py}-manylinux_{glibc}_{arch}"


@pytest.fixture(scope="module")
def stub_wheelhouse(docker_client, cuda_like_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("stub-wheels")
    tag = base_wheel_tag(docker_client, cuda_like_base)
    for name in GPU_ENVS:
        for req in framework_requirements(load_environment(name, REPO / "environments")):
            write_stub_wheel(dest, req, tag)
    return dest


def _sh(client, image: str, script: str, user: str | None = None) -> str:
    return client.containers.run(image, ["bash", "-c", script], remove=True, network_mode="none",
                                 user=user).decode().strip()


def test_the_base_has_the_cuda_traits_and_the_uid_clash(docker_client, cuda_like_base):
    """The regression's premise: on this base the old user step (``useradd --uid 1000``) fails."""
    out = _sh(docker_client, cuda_like_base, "getent passwd 1000; getent group 1000; "
              "env | grep -E '^(CUDA_VERSION|NVIDIA_VISIBLE_DEVICES|LD_LIBRARY_PATH|PATH)=' | sort; "
              "python3 -m pip --version >/dev/null 2>&1 && echo pip || echo no-pip; "
              "ls /usr/lib/python3*/EXTERNALLY-MANAGED; "
              "useradd --no-create-home --home-dir /home/gpuops --uid 1000 gpuops; echo useradd=$?")
    lines = out.splitlines()
    assert lines[0].startswith("ubuntu:x:1000:1000:") and lines[0].split(":")[5] == "/home/ubuntu"
    assert lines[1].startswith("ubuntu:x:1000:")
    env = dict(line.split("=", 1) for line in lines[2:6])
    assert env == {k: CUDA_LIKE_ENV[k] for k in ("CUDA_VERSION", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES",
                                                   "PATH")}
    assert lines[6] == "no-pip" and lines[7].endswith("/EXTERNALLY-MANAGED")
    assert lines[-1] == "useradd=4"  # useradd: "UID already in use"


@pytest.mark.parametrize("name", GPU_ENVS)
def test_gpu_env_builds_on_the_cuda_like_base(docker_client, cuda_like_base, stub_wheelhouse, name,
                                              tmp_path):
    require(HOST_CA.is_file(), f"{HOST_CA} missing: pip and apt inside the build need it")
    spec = on_base_python(name, tmp_path)
    shipped = render(load_environment(name, REPO / "environments")).dockerfile
    assert "useradd" in shipped and "usermod --login gpuops" in shipped  # the shipped text has the fix
    opts = BuildOptions(base_image=cuda_like_base, wheelhouse=stub_wheelhouse, ca_cert=HOST_CA,
                        selfcheck=False, gpus=False)
    t0 = time.monotonic()
    built = build_image(spec, opts, client=docker_client)
    print(f"{name}: built {built.tag} in {time.monotonic() - t0:.0f} s (cached={built.cached})")
    img = docker_client.images.get(built.tag)
    assert img.attrs["Config"]["User"] == "gpuops"
    assert img.labels["org.gpuops.base_image"] == cuda_like_base

    # The uid-1000 account of the base became gpuops: same ids, home moved, no "ubuntu" left.
    out = _sh(docker_client, built.tag, "id -un; id -u; id -g; id -gn; echo $HOME; stat -c %u /home/gpuops; "
              "touch $HOME/w && echo writable; getent passwd ubuntu || echo no-ubuntu; "
              "test -e /home/ubuntu && echo old-home || echo no-old-home")
    assert out.splitlines() == ["gpuops", "1000", "1000", "gpuops", "/home/gpuops", "1000", "writable",
                                "no-ubuntu", "no-old-home"]

    # The CUDA base's environment survives the gpuops ENV step; the venv comes first on PATH.
    env = dict(e.split("=", 1) for e in img.attrs["Config"]["Env"])
    for key in ("CUDA_VERSION", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH"):
        assert env[key] == CUDA_LIKE_ENV[key], key
    assert env["PATH"] == f"/opt/venv/bin:{CUDA_LIKE_ENV['PATH']}"

    # The framework pins came from the stub wheels, into the venv; the system Python stayed untouched.
    mods = [Requirement(r) for r in framework_requirements(spec)]
    check = "; ".join(
        f"import {canonicalize_name(r.name).split('-')[0]} as m; print(m.__version__, m.GPUOPS_TEST_STUB, "
        "m.__file__.startswith('/opt/venv/'))" for r in mods)
    out = _sh(docker_client, built.tag, f"python -c \"{check}\" 2>&1; python -c 'import sys; "
              "print(sys.prefix != sys.base_prefix)'; /usr/bin/python3 -m pip --version >/dev/null 2>&1 "
              "&& echo system-pip || echo no-system-pip; gpuops --version")
    lines = out.splitlines()
    assert lines[:len(mods)] == [f"{next(iter(r.specifier)).version} True True" for r in mods]
    assert lines[len(mods):len(mods) + 2] == ["True", "no-system-pip"]
    assert lines[-1] == f"gpuops {img.labels['org.gpuops.version']}"
