"""Environment specs, Dockerfile rendering and KB validation (no Docker Engine needed)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuops.cli.main import app
from gpuops.envs import EnvSpec, load_environment, load_environments
from gpuops.envs.build import BuildFileServer
from gpuops.envs.lock import lock_state
from gpuops.envs.validate import check_env
from gpuops.knowledge import load_kb
from tests.conftest import REPO

ENV_DIR = REPO / "environments"
SHIPPED = ["chainer", "chainer-cpu", "pytorch", "pytorch-cpu", "pytorch-cu130", "tensorflow",
           "tensorflow-cpu"]
runner = CliRunner()
WIDE = {"COLUMNS": "500"}  # one message, one line


def _print(env: str, *extra: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["build", env, "--print", "--env-dir", str(ENV_DIR), *extra], env=WIDE)
    return res.exit_code, res.stdout, res.stderr


def test_shipped_environments_load_and_pass_the_kb():
    specs = load_environments(ENV_DIR)
    assert [s.name for s in specs] == SHIPPED
    for spec in specs:
        chk = check_env(spec)
        assert chk.problems == [], (spec.name, [p.render() for p in chk.problems])


def _from_line(dockerfile: str) -> str:
    return next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))


@pytest.mark.parametrize("name", ["pytorch", "pytorch-cu130"])
def test_print_pytorch_agrees_with_kb(name):
    kb = load_kb()
    spec = load_environment(name, ENV_DIR)
    code, out, _ = _print(name)
    assert code == 0
    variant = spec.cuda_variant
    assert variant in kb.torch_variants(spec.framework_version)
    assert f"torch=={spec.framework_version}+{variant}" in out
    assert f"https://download.pytorch.org/whl/{variant}" in out
    # cuDNN in the spec is the one the KB says this torch build ships.
    assert spec.cudnn == kb.torch_cudnn(spec.framework_version, spec.cuda)
    assert f"GPUOPS_CUDNN={spec.cudnn}" in out
    # FROM: NVIDIA's CUDA runtime image of the same CUDA minor with cuDNN 9, on an OS whose python3 fits.
    image = _from_line(out)
    assert re.fullmatch(rf"nvidia/cuda:{re.escape(spec.cuda)}\.\d+-cudnn-runtime-ubuntu24\.04", image), image
    assert f"python{spec.python} -m venv" in out


def test_print_tensorflow_agrees_with_kb():
    build = load_kb().tensorflow_build("2.21.0")
    assert build is not None
    code, out, _ = _print("tensorflow")
    assert code == 0
    assert "tensorflow==2.21.0" in out
    image = _from_line(out)
    assert image.startswith(f"nvidia/cuda:{build.cuda}.") and "-cudnn-runtime-" in image
    assert f"GPUOPS_CUDA={build.cuda}" in out and f"GPUOPS_CUDNN={build.cudnn}" in out
    lo, hi = build.python.split("-")
    assert tuple(map(int, lo.split("."))) <= (3, 10) <= tuple(map(int, hi.split(".")))
    assert "python3.10 -m venv" in out


def test_print_chainer_agrees_with_kb():
    kb = load_kb()
    code, out, _ = _print("chainer")
    assert code == 0
    assert "chainer==7.8.1" in out and "cupy-cuda110==7.8.0" in out
    assert kb.chainer_cupy_specifier("7.8.1") == ">=7.7.0,<8.0.0"
    rng = kb.cupy_package_cuda("cupy-cuda110", "7.8.0")
    assert rng is not None and rng.contains("11.0")
    assert _from_line(out) == "nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04"
    assert "python3.8 -m venv" in out
    # gpuops needs Python >= 3.11: the Chainer image carries the framework only.
    assert 'org.gpuops.gpuops_installed="false"' in out


def test_print_cpu_env_and_labels():
    code, out, _ = _print("pytorch-cpu")
    assert code == 0
    assert "torch==2.13.0+cpu" in out and _from_line(out) == "debian:bookworm-slim"
    for label in ("spec_hash", "kb_version", "version", "framework", "cuda", "cudnn"):
        assert f"org.gpuops.{label}=" in out
    # the image's last word: a non-root user
    assert [line for line in out.splitlines() if line.strip()][-1] == "USER gpuops"


def test_print_json_and_base_image_override():
    res = runner.invoke(app, ["build", "pytorch-cpu", "--print", "--json", "--env-dir", str(ENV_DIR),
                              "--base-image", "example/base:1"], env=WIDE)
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["base_image"] == "example/base:1"
    assert doc["tag"].startswith("gpuops/pytorch-cpu:") and len(doc["tag"].split(":")[1]) == 12
    assert _from_line(doc["dockerfile"]) == "example/base:1"


def _write_env(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(body)
    return p


REFUSED = {
    "tensorflow": ("tf217", "framework: tensorflow\nframework_version: '2.17.0'\ncuda: '12.5'\ncudnn: '9.3'\n"
                   "python: '3.10'\n", ["CUDA 12.3", "tf_docs_source_md"]),
    "chainer": ("chainer-cupy13", "framework: chainer\nframework_version: '7.8.1'\n"
                "cupy: cupy-cuda12x==13.3.0\n"
                "cuda: '12.4'\ncudnn: '8.9'\npython: '3.10'\n", [">=7.7.0,<8.0.0", "chainer_repo_v7_8_1"]),
    "pytorch": ("torch-cu130-pascal", "framework: pytorch\nframework_version: '2.13.0'\ncuda: '13.0'\n"
                "python: '3.12'\ngpu_archs: ['6.1']\n", ["6.1", "Pascal", "pytorch_release_md"]),
}


@pytest.mark.parametrize("framework", sorted(REFUSED))
def test_known_broken_combination_is_refused_with_source(tmp_path, framework):
    name, body, needles = REFUSED[framework]
    path = _write_env(tmp_path, name, body)
    for extra in ([], ["--allow-untested"]):  # known broken stays refused even with --allow-untested
        code, out, err = _print(str(path), *extra)
        assert code == 2, (out, err)
        assert out == ""
        assert "refused" in err
        for n in needles:
            assert n in err, (n, err)


def test_untested_combination_needs_allow_untested(tmp_path):
    # A TensorFlow release the KB has no tested build configuration for: untested, not known broken.
    path = _write_env(tmp_path, "tf-future", "framework: tensorflow\nframework_version: '2.99.0'\n"
                      "cuda: '12.5'\ncudnn: '9.3'\npython: '3.10'\nbase_image: example/cuda:12.5\n")
    code, _, err = _print(str(path))
    assert code == 2 and "untested" in err and "--allow-untested" in err
    code, out, err = _print(str(path), "--allow-untested")
    assert code == 0 and "tensorflow==2.99.0" in out
    assert "warning" in err and "2.99.0" in err


def test_spec_errors_are_one_line_exit_2(tmp_path):
    path = _write_env(tmp_path, "bad", "framework: pytorch\nframework_version: '2.13.0'\npython: '3.12'\n"
                      "colour: blue\n")
    code, out, err = _print(str(path))
    assert code == 2 and out == ""
    assert "colour" in err and "unknown key" in err
    code, _, err = _print("no-such-env")
    assert code == 2 and "unknown environment" in err and "pytorch-cpu" in err


def test_env_spec_normalises_versions():
    s = EnvSpec(name="x", framework="pytorch", framework_version="2.13.0", cuda="cu126", python="3.12",
                gpu_archs=["sm_61", "8.6"])
    assert s.cuda == "12.6" and s.cuda_variant == "cu126" and s.gpu_archs == ["6.1", "8.6"]


def test_committed_locks_are_fresh_and_hashed():
    for spec in load_environments(ENV_DIR):
        st = lock_state(spec)
        assert st.fresh, f"{spec.name}: run gpuops lock {spec.name}"
        if st.needed:
            lines = [ln for ln in st.text.splitlines() if "==" in ln and not ln.startswith("#")]
            assert len(lines) == st.packages > 10
            assert st.text.count("--hash=sha256:") == st.packages
            assert any(ln.startswith("mlflow-skinny==") for ln in lines)
    res = runner.invoke(app, ["lock", "pytorch-cpu", "--check", "--env-dir", str(ENV_DIR), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["fresh"] is True


def test_build_file_server_serves_only_under_its_token(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nxyz\n-----END CERTIFICATE-----\n")
    wh = tmp_path / "wheels"
    wh.mkdir()
    (wh / "demo-1.0+cpu-py3-none-any.whl").write_bytes(b"PK\x03\x04demo")
    with BuildFileServer(ca, wh) as srv:
        assert urllib.request.urlopen(f"{srv.url}/ca.crt").read() == ca.read_bytes()
        listing = urllib.request.urlopen(f"{srv.url}/wheels/").read().decode()
        assert 'href="demo-1.0%2Bcpu-py3-none-any.whl"' in listing
        wheel = urllib.request.urlopen(f"{srv.url}/wheels/demo-1.0%2Bcpu-py3-none-any.whl").read()
        assert wheel == b"PK\x03\x04demo"
        root = srv.url.rsplit("/", 1)[0]
        for bad in (f"{root}/ca.crt", f"{root}/wrongtoken/ca.crt", f"{srv.url}/wheels/..%2Fca.pem"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(bad)
            assert e.value.code == 404
    with BuildFileServer(None, None) as srv, pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{srv.url}/ca.crt")
