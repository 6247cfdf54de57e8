"""Docker Engine fixtures (owned by the images work): dockerd, the debootstrap base image, built images.

Session fixtures:

- ``docker_client``: a docker SDK client for a running engine. When none answers on the default
  socket, starts Debian's ``dockerd`` (installed by ``scripts/test-deps.sh``) with the overlay2
  storage driver when the kernel has overlayfs, else ``--storage-driver=vfs`` (see
  ``storage_drivers``), and stops it at the end of the session.
- ``base_image``: a Debian bookworm image made here with ``debootstrap`` (minbase + python3,
  python3-venv, python3-pip, ca-certificates) and ``docker import``, because no image registry is
  reachable. Reused when its tag exists already.
- ``cuda_like_base``: a Docker image built FROM ``base_image`` that gives it the traits of NVIDIA's
  ``nvidia/cuda:*-ubuntu24.04`` images that a build depends on (see ``CUDA_LIKE_DOCKERFILE``): user and
  group ``ubuntu`` with uid/gid 1000 and a home, the CUDA/NVIDIA variables and library paths, a
  ``/usr/local/cuda`` folder, and a system Python marked ``EXTERNALLY-MANAGED`` without pip or venv.
  Debian, not Ubuntu: only Debian's mirror is reachable. Reused when its tag exists already.
- ``pytorch_cpu_image``: ``gpuops build pytorch-cpu`` on that base with torch from the wheelhouse on
  disk (``/opt/wheels``) and the host CA bundle for PyPI; yields a ``BuiltImage``.
- ``local_registry``: the Docker distribution registry (Debian's ``docker-registry``) started here,
  not through its systemd unit, on ``127.0.0.1:<free port>`` with filesystem storage in a temp dir;
  yields ``"127.0.0.1:<port>"``. dockerd allows plain HTTP to registries in 127.0.0.0/8 by default
  (its ``InsecureRegistryCIDRs``). ``start_registry`` also starts one with htpasswd auth.

Without root, Docker or debootstrap, the fixtures go through ``tests.conftest.require``: skipped
locally, a failure in CI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_REPO = "gpuops-test/bookworm-python"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
WHEELHOUSE = Path(os.environ.get("GPUOPS_TEST_WHEELHOUSE", "/opt/wheels"))


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file() or f.name.endswith((".disabled-by-farm", ".save")):
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                for uri in line.split()[1:]:
                    if "debian" in uri and "security" not in uri:
                        return uri
            if line.startswith("deb ") and "debian" in line and "security" not in line:
                parts = [p for p in line.split() if not p.startswith("[")]
                if len(parts) >= 2:
                    return parts[1]
    return "http://deb.debian.org/debian"


def base_image_tag() -> str:
    key = hashlib.sha256(f"{SUITE}|minbase|{','.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{key}"


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def storage_drivers() -> list[str]:
    """overlay2 when the kernel has overlayfs (each build step is then a cheap layer), else vfs.

    vfs works everywhere but copies the whole filesystem for every container and build step; on a
    loaded 2-core machine that is ~40 s per step, which is what the 20-minute test budget cannot afford.
    """
    try:
        has_overlay = "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        has_overlay = False
    forced = os.environ.get("GPUOPS_TEST_STORAGE_DRIVER")
    if forced:
        return [forced]
    return ["overlay2", "vfs"] if has_overlay else ["vfs"]


def start_dockerd(workdir: Path, timeout: float = 60) -> subprocess.Popen[bytes] | None:
    """Start dockerd on the default socket (overlay2, falling back to vfs); None if it cannot run."""
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if dockerd is None or os.geteuid() != 0:
        return None
    import docker

    for driver in storage_drivers():
        log = open(workdir / f"dockerd-{driver}.log", "wb")  # noqa: SIM115 - lives as long as the daemon
        proc = subprocess.Popen(
            [dockerd, f"--storage-driver={driver}", "--host", "unix:///var/run/docker.sock"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if docker.DockerClient(base_url="unix:///var/run/docker.sock").ping():
                    return proc
            except Exception:
                time.sleep(0.5)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return None


def make_base_image(client: Any, workdir: Path) -> str:
    """debootstrap a minimal bookworm with Python into ``workdir`` and ``docker import`` it."""
    tag = base_image_tag()
    root = workdir / "rootfs"
    cmd = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        SUITE, str(root), debian_mirror(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({res.returncode}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    # Leave no apt caches in the image.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / sub).glob("*"):
            if p.is_file():
                p.unlink()
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    repo, _, version = tag.partition(":")
    client.api.import_image_from_stream(tar.stdout, repository=repo, tag=version,
                                        changes=['CMD ["/bin/bash"]'])
    tar.wait()
    shutil.rmtree(root, ignore_errors=True)
    client.images.get(tag)
    return tag


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker
    except ImportError:
        require(False, "the docker SDK is not installed (pip install -e '.[docker]')")
        return
    client = None
    try:
        client = docker.from_env(timeout=600)
    except Exception:
        client = None
    proc = None
    tmp = Path(tempfile.mkdtemp(prefix="gpuops-dockerd-"))
    if client is None or not _ping(client):
        proc = start_dockerd(tmp)
        require(proc is not None, "no Docker Engine answers and dockerd could not be started "
                                   "(needs root and Debian's docker.io: bash scripts/test-deps.sh)")
        client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=600)
    yield client
    client.close()
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    tag = base_image_tag()
    try:
        docker_client.images.get(tag)
        return tag
    except Exception:
        pass
    require(shutil.which("debootstrap") is not None,
            "debootstrap is not installed (bash scripts/test-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="gpuops-base-"))
    try:
        return make_base_image(docker_client, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# The NVIDIA images' variables as their base Dockerfiles set them: PATH and LD_LIBRARY_PATH with the
# /usr/local/nvidia and /usr/local/cuda entries, NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES
# (https://gitlab.com/nvidia/container-images/cuda/-/raw/master/dist/12.0.0/ubuntu2204/base/Dockerfile,
# as transcribed in github.com/wordslab-org/wordslab doc/infra/containers/nvidia-cuda-base-install.sh).
# CUDA_VERSION is the one of the pytorch environment's base image (base_images.yaml).
CUDA_LIKE_ENV = {
    "CUDA_VERSION": "12.6.3",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "PATH": "/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
            ":/sbin:/bin",
}
# Offline (dpkg only, no download). Removing python3-venv and the pip/setuptools wheels takes ensurepip
# away, so the gpuops Dockerfile has to fetch pythonX.Y-venv with apt, as on the CUDA runtime images.
CUDA_LIKE_DOCKERFILE = """FROM {base}
RUN set -eu; \\
    py=$(python3 -c 'import sys; print(f"python{{sys.version_info[0]}}.{{sys.version_info[1]}}")'); \\
    apt-get purge -y python3-pip python3-venv "$py-venv" python3-pip-whl python3-setuptools-whl; \\
    apt-get autoremove -y; rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \\
    test -f "/usr/lib/$py/EXTERNALLY-MANAGED"; \\
    if python3 -m pip --version; then exit 1; fi; \\
    if python3 -m venv /tmp/v; then exit 1; fi; rm -rf /tmp/v; \\
    useradd --uid 1000 --user-group --create-home --shell /bin/bash ubuntu; \\
    mkdir -p /usr/local/cuda/bin /usr/local/cuda/lib64 /usr/local/nvidia/lib /usr/local/nvidia/lib64
ENV {env}
"""


def cuda_like_dockerfile(base: str) -> str:
    env = " \\\n    ".join(f"{k}={v}" for k, v in CUDA_LIKE_ENV.items())
    return CUDA_LIKE_DOCKERFILE.format(base=base, env=env)


def make_cuda_like_base(client: Any, base: str, workdir: Path) -> str:
    """Build the CUDA-like image FROM ``base`` (no network: the purge is dpkg's); returns its tag."""
    text = cuda_like_dockerfile(base)
    tag = f"gpuops-test/cuda-like:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except Exception:
        pass
    (workdir / "Dockerfile").write_text(text, encoding="utf-8")
    errors: list[str] = []
    tail: list[str] = []
    for event in client.api.build(path=str(workdir), tag=tag, rm=True, forcerm=True, pull=False,
                                  network_mode="none", decode=True):
        if "stream" in event:
            tail = [*tail, *str(event["stream"]).splitlines()][-30:]
        elif "error" in event:
            errors.append(str(event["error"]))
    if errors:
        raise RuntimeError(f"building {tag} failed: {errors}\n" + "\n".join(tail))
    client.images.get(tag)
    return tag


@pytest.fixture(scope="session")
def cuda_like_base(docker_client: Any, base_image: str) -> str:
    work = Path(tempfile.mkdtemp(prefix="gpuops-cudalike-"))
    try:
        return make_cuda_like_base(docker_client, base_image, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_canary_ca(workdir: Path) -> tuple[Path, bytes]:
    """The host CA bundle plus a freshly made self-signed certificate (the canary).

    The build gets this bundle as ``--ca-cert``; the no-secret test then searches the image for the
    canary, which exists nowhere else. Returns (bundle path, one base64 line of the canary's body).
    """
    key, cert = workdir / "canary.key", workdir / "canary.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN=gpuops-test-canary-{os.getpid()}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    bundle = workdir / "ca-bundle.crt"
    bundle.write_bytes(HOST_CA.read_bytes() + b"\n" + cert.read_bytes())
    body = [ln for ln in cert.read_bytes().splitlines() if ln and not ln.startswith(b"-----")]
    return bundle, body[len(body) // 2]


@pytest.fixture(scope="session")
def build_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    require(HOST_CA.is_file(), f"{HOST_CA} missing: pip inside the build cannot reach PyPI")
    require(shutil.which("openssl") is not None, "openssl is needed to make the canary certificate")
    return make_canary_ca(tmp_path_factory.mktemp("ca"))


def build_env_vars(base_image: str, ca_bundle: Path) -> dict[str, str]:
    """The variables with which ``gpuops run --target docker`` finds the image the fixture built."""
    return {"GPUOPS_BASE_IMAGE": base_image, "GPUOPS_WHEELHOUSE": str(WHEELHOUSE),
            "GPUOPS_CA_CERT": str(ca_bundle)}


@pytest.fixture(scope="session")
def pytorch_cpu_image(docker_client: Any, base_image: str, build_ca: tuple[Path, bytes],
                      tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ``pytorch-cpu`` environment built on the debootstrap base (a ``BuiltImage``).

    Self-check results go to a session temp dir (``GPUOPS_CACHE_DIR``), not the user's cache.
    """
    from gpuops.envs import load_environment
    from gpuops.envs.build import BuildOptions, build_image

    require(any(WHEELHOUSE.glob("torch-*.whl")), f"no torch wheel in {WHEELHOUSE} (GPUOPS_TEST_WHEELHOUSE)")
    os.environ.setdefault("GPUOPS_CACHE_DIR", str(tmp_path_factory.mktemp("gpuops-cache")))
    spec = load_environment("pytorch-cpu", REPO / "environments")
    opts = BuildOptions(base_image=base_image, wheelhouse=WHEELHOUSE, ca_cert=build_ca[0])
    built = build_image(spec, opts, client=docker_client)
    if built.selfcheck is None:  # built by an earlier session: check it again, keep the result here
        from gpuops.envs.images import save_selfcheck
        from gpuops.envs.selfcheck import selfcheck_in_image

        built.selfcheck = selfcheck_in_image(docker_client, built.tag, spec.framework)
        save_selfcheck(built.tag, built.image_id, built.selfcheck)
    return built


# -- a local image registry ------------------------------------------------------------------------
REGISTRY_BIN = Path("/usr/bin/docker-registry")


@dataclass
class LocalRegistry:
    """A running ``docker-registry serve``: ``host`` is what goes into image references."""

    host: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(workdir: Path, htpasswd: tuple[str, str] | None = None,
                   timeout: float = 30) -> LocalRegistry:
    """Run the distribution registry on 127.0.0.1 with its storage under ``workdir``.

    With ``htpasswd=(user, password)`` the registry demands HTTP basic auth for every request (the
    password stored bcrypt-hashed, the only format the registry reads). Returns once ``GET /v2/``
    answers (200, or 401 when auth is on); raises ``RuntimeError`` with the log tail otherwise.
    """
    port = free_port()
    root = workdir / "storage"
    root.mkdir(parents=True, exist_ok=True)
    auth = ""
    if htpasswd is not None:
        import bcrypt

        user, password = htpasswd
        pwfile = workdir / "htpasswd"
        pwfile.write_bytes(user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) + b"\n")
        auth = f"auth:\n  htpasswd:\n    realm: gpuops-test\n    path: {pwfile}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth,
        encoding="utf-8",
    )
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    reg = LocalRegistry(f"127.0.0.1:{port}", root, log, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{reg.url}/v2/", timeout=2) as r:
                if r.status == 200:
                    return reg
        except urllib.error.HTTPError as e:
            if e.code == 401 and htpasswd is not None:
                return reg
        except OSError:
            pass
        time.sleep(0.2)
    reg.stop()
    raise RuntimeError(f"docker-registry did not answer on {reg.url}/v2/:\n"
                       f"{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a registry without auth, for the whole session."""
    require(REGISTRY_BIN.is_file(),
            f"{REGISTRY_BIN} missing (Debian's docker-registry: bash scripts/test-deps.sh)")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg.host
    finally:
        reg.stop()
