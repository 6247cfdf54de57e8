"""`task: script` with `--target docker`: the user's script runs in the environment's image (gpuops is not
needed inside), supervised from the host, against the real Docker Engine and a real sqlite MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuops.scripts.container import CODE_DIR, DATA_ROOT, WORK_DIR, container_layout
from tests.conftest import REPO
from tests.infra.docker_engine import WHEELHOUSE, build_env_vars

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _env(base_image: str, ca: Path) -> dict[str, str]:
    env = {**os.environ, **build_env_vars(base_image, ca), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _gpuops(*args: str, env: str | None = "pytorch-cpu") -> list[str]:
    with_env = ["--env", env] if env else []
    return [sys.executable, "-m", "gpuops", "run", *args, "--target", "docker", *with_env]


@pytest.fixture(autouse=True)
def _no_work_folders_left() -> Any:
    """``gpuops run`` is started in the checkout (where ``environments/`` is); the run folders it makes
    under ``gpuops-out/`` go at the end."""
    out = REPO / "gpuops-out"
    before = set(out.iterdir()) if out.is_dir() else set()
    yield
    for folder in (set(out.iterdir()) if out.is_dir() else set()) - before:
        shutil.rmtree(folder, ignore_errors=True)


def _left_containers(run_id: str) -> list[Any]:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": f"org.gpuops.run_id={run_id}"})


def _artifact_dir(store: str, run_id: str) -> Path:
    """The run's artifacts on the disk of the host-side server (it proxies them, ``mlflow-artifacts:``;
    the server is gone after the run, its folder stays beside the sqlite file)."""
    from gpuops.tracking.server import default_artifacts_dir

    (found,) = list(default_artifacts_dir(store).rglob(f"{run_id}/artifacts"))
    return found


def _artifacts(store: str, run_id: str) -> set[str]:
    root = _artifact_dir(store, run_id)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _check_image(tags: dict[str, str], env: str, built: Any) -> None:
    """The run names the image it ran in and that image's id: the fixture's, unless the gpuops sources
    changed since it was built (the image carries them, so the target built the new one)."""
    import docker

    assert tags["gpuops.image"].startswith(f"gpuops/{env}:")
    assert tags["env.image_digest"] == docker.from_env().images.get(tags["gpuops.image"]).id
    if tags["gpuops.image"] == built.tag:
        assert tags["env.image_digest"] == built.image_id


def _script_spec(folder: Path, name: str, body: str, **fields: Any) -> Path:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    spec: dict[str, Any] = {"name": name, "task": "script", "entrypoint": ["python", f"{name}.py"],
                            "resources": {"device": "cpu"}, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_layout_maps_script_data_and_outputs_into_the_container(tmp_path: Path) -> None:
    from gpuops.experiments.spec import load_experiment

    spec = load_experiment(REPO / "experiments" / "torch_script.yaml", ["params.lr=0.002"], smoke=True).spec
    work = tmp_path / "work"
    layout = container_layout(spec, work)
    argv = layout.argv
    assert argv[0] == "python" and argv[1] == f"{CODE_DIR}/torch_espcn.py"
    assert argv[argv.index("--train") + 1] == f"{DATA_ROOT}/train"
    assert argv[argv.index("--out") + 1] == f"{WORK_DIR}/outputs"
    assert argv[argv.index("--lr") + 1] == "0.002" and argv[argv.index("--iterations") + 1] == "4"
    vols = layout.volumes()
    assert f"{work}:{WORK_DIR}:rw" in vols
    assert f"{REPO / 'experiments' / 'data' / 'T91'}:{DATA_ROOT}/train:ro" in vols
    assert f"{REPO / 'experiments' / 'scripts'}:{CODE_DIR}:ro" in vols


def test_code_snapshot_is_readable_by_the_image_user(tmp_path: Path) -> None:
    from gpuops.scripts.container import snapshot_code

    folder = tmp_path / "private"
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "train.py").write_text("import helpers\n")
    (folder / "helpers.py").write_text("X = 1\n")
    (folder / "pkg" / "model.py").write_text("Y = 2\n")
    (folder / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    folder.chmod(0o700)  # a home or temp folder the container's uid 1000 cannot enter
    out = snapshot_code(folder / "train.py", tmp_path / "copy")
    files = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert files == {"train.py": 0o644, "helpers.py": 0o644, "pkg/model.py": 0o644}
    assert (out / "helpers.py").read_text() == "X = 1\n"


def test_a_script_runs_in_the_image_of_its_own_env() -> None:
    from gpuops.errors import UsageError
    from gpuops.experiments.spec import load_experiment
    from gpuops.targets.base import DockerOptions
    from gpuops.targets.docker import _script_env

    spec = load_experiment(REPO / "experiments" / "chainer_srcnn.yaml").spec
    assert Path(_script_env(spec, DockerOptions())).name == "chainer-cpu.yaml"  # no --env given
    assert Path(_script_env(spec, DockerOptions(env="chainer-cpu"))).name == "chainer-cpu.yaml"
    with pytest.raises(UsageError, match="chainer-cpu"):
        _script_env(spec, DockerOptions(env="pytorch-cpu"))
    torch = load_experiment(REPO / "experiments" / "torch_script.yaml").spec  # no env: --env decides
    assert _script_env(torch, DockerOptions(env="pytorch-cpu")) == "pytorch-cpu"


def test_torch_script_runs_in_the_pytorch_cpu_image(tmp_path: Path, pytorch_cpu_image: Any, base_image: str,
                                                    build_ca: tuple[Path, bytes]) -> None:
    import docker
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    began = time.monotonic()
    res = subprocess.run(
        _gpuops(str(REPO / "experiments" / "torch_script.yaml"), "--smoke", "--set", "params.lr=0.002",
                "--tracking-uri", store, "--json"),
        cwd=REPO, env=_env(base_image, build_ca[0]), capture_output=True, text=True, timeout=900)
    took = time.monotonic() - began
    assert res.returncode == 0, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    print(f"torch_script --target docker --smoke: {took:.1f} s")
    doc = json.loads(res.stdout)
    assert doc["status"] == "FINISHED" and doc["target"] == "docker"
    c = MlflowClient(tracking_uri=store)
    run = c.get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["spec.task"] == "script" and tags["gpuops.target"] == "docker"
    assert tags["gpuops.script.exit_code"] == "0"
    assert tags["gpuops.image"].startswith("gpuops/pytorch-cpu:")
    assert tags["env.image_digest"] == docker.from_env().images.get(tags["gpuops.image"]).id
    assert params["params.lr"] == "0.002" and params["params.iterations"] == "4"
    # the script logged these itself, from inside the container, through the host-side server
    for key in ("train/loss", "val/psnr"):
        assert key in metrics, sorted(metrics)
    assert 10.0 < metrics["val/psnr"] < 50.0
    assert tags.get("script.framework", "").startswith("torch ")
    files = _artifacts(store, doc["run_id"])
    assert {"logs/stdout.txt", "logs/stderr.txt", "code/torch_espcn.py", "outputs/espcn.pt"} <= files, files
    stdout = (_artifact_dir(store, doc["run_id"]) / "logs" / "stdout.txt").read_text()
    assert "step 4: loss" in stdout
    assert _left_containers(doc["run_id"]) == []


def test_failing_script_ends_failed_with_its_stderr_tail(
        tmp_path: Path, pytorch_cpu_image: Any, base_image: str, build_ca: tuple[Path, bytes]) -> None:
    from mlflow.tracking import MlflowClient

    spec = _script_spec(tmp_path, "fails", """
        import sys
        for i in range(1, 4):
            print(f"epoch {i} loss {1.0 / i:.3f}", flush=True)
        print("RuntimeError: the batch does not fit (a real message)", file=sys.stderr)
        sys.exit(3)
        """, metrics=[{"name": "train/loss", "regex": r"^epoch (?P<step>\d+) loss (?P<value>\S+)"}])
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = subprocess.run(_gpuops(str(spec), "--tracking-uri", store, "--json"), cwd=REPO,
                         env=_env(base_image, build_ca[0]), capture_output=True, text=True, timeout=900)
    assert res.returncode == 1, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    doc = json.loads(res.stdout)
    assert doc["status"] == "FAILED"
    c = MlflowClient(tracking_uri=store)
    run = c.get_run(doc["run_id"])
    assert run.info.status == "FAILED"
    error = run.data.tags["gpuops.error"]
    assert "exit code 3" in error and "the batch does not fit" in error
    assert run.data.tags["gpuops.script.exit_code"] == "3"
    # metrics read from the output by the spec's pattern, logged from the host side
    history = c.get_metric_history(doc["run_id"], "train/loss")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.333)]
    assert {"logs/stderr.txt", "code/fails.py"} <= _artifacts(store, doc["run_id"])
    assert _left_containers(doc["run_id"]) == []


def test_ctrl_c_kills_the_run_and_removes_the_container(
        tmp_path: Path, pytorch_cpu_image: Any, base_image: str, build_ca: tuple[Path, bytes]) -> None:
    from mlflow.tracking import MlflowClient

    spec = _script_spec(tmp_path, "sleeper", """
        import time
        print("ready", flush=True)
        time.sleep(600)
        """)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(_gpuops(str(spec), "--tracking-uri", store), cwd=REPO,
                            env=_env(base_image, build_ca[0]), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    run_id = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("run ") and run_id is None:
                run_id = line.split()[1]
            if line.strip() == "ready":
                break
            assert time.monotonic() < deadline, "".join(seen)
        assert run_id is not None and seen[-1].strip() == "ready", "".join(seen[-40:])
        assert len(_left_containers(run_id)) == 1
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(seen) + rest
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.info.status == "KILLED"
    assert "Ctrl-C" in run.data.tags["gpuops.error"]
    assert _left_containers(run_id) == []


def _build(docker_client: Any, env: str, base_image: str, build_ca: tuple[Path, bytes]) -> Any:
    """``env`` built on the debootstrap base with the build inputs `gpuops run` is given
    (``build_env_vars``), so that the run finds this image. Prints how long the build took (about 0
    when the image existed)."""
    from gpuops.envs import load_environment
    from gpuops.envs.build import BuildOptions, build_image

    began = time.monotonic()
    spec = load_environment(env, REPO / "environments")
    opts = BuildOptions(base_image=base_image, wheelhouse=WHEELHOUSE, ca_cert=build_ca[0])
    built = build_image(spec, opts, client=docker_client)
    print(f"{env} image {built.tag}: {time.monotonic() - began:.1f} s")
    return built


@pytest.fixture(scope="session")
def chainer_cpu_image(docker_client: Any, base_image: str, build_ca: tuple[Path, bytes]) -> Any:
    """Chainer 7.8.1 from PyPI, built from its source release."""
    return _build(docker_client, "chainer-cpu", base_image, build_ca)


@pytest.fixture(scope="session")
def tensorflow_cpu_image(docker_client: Any, base_image: str, build_ca: tuple[Path, bytes]) -> Any:
    return _build(docker_client, "tensorflow-cpu", base_image, build_ca)


def test_chainer_srcnn_runs_in_the_chainer_cpu_image(tmp_path: Path, chainer_cpu_image: Any, base_image: str,
                                                     build_ca: tuple[Path, bytes]) -> None:
    from mlflow.tracking import MlflowClient

    from gpuops.experiments.spec import load_experiment
    from gpuops.scripts.supervise import OutputMetrics

    spec_file = REPO / "experiments" / "chainer_srcnn.yaml"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    began = time.monotonic()
    # no --env: the spec's own env: (chainer-cpu) picks the image
    res = subprocess.run(_gpuops(str(spec_file), "--smoke", "--tracking-uri", store, "--json", env=None),
                         cwd=REPO, env=_env(base_image, build_ca[0]), capture_output=True, text=True,
                         timeout=900)
    print(f"chainer_srcnn --target docker --smoke: {time.monotonic() - began:.1f} s")
    assert res.returncode == 0, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    doc = json.loads(res.stdout)
    c = MlflowClient(tracking_uri=store)
    run = c.get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    _check_image(tags, "chainer-cpu", chainer_cpu_image)
    assert tags["gpuops.script.framework"] == "chainer==7.8.1"
    # the script knows nothing of MLflow: its metrics are what the spec's patterns read from its stdout
    root = _artifact_dir(store, doc["run_id"])
    stdout = (root / "logs" / "stdout.txt").read_text()
    resolved = load_experiment(spec_file, smoke=True)
    parser = OutputMetrics(resolved.spec.metrics)
    points = [p for line in stdout.splitlines() for p in parser.feed(line)]
    for metric in ("train/loss", "val/psnr", "val/psnr_bicubic_pil"):
        expect = sorted((p.step, p.value) for p in points if p.name == metric)
        assert expect, f"{metric} was printed"
        assert sorted((m.step, m.value) for m in c.get_metric_history(doc["run_id"], metric)) == expect
    assert (root / "outputs" / "model.npz").is_file() and (root / "code" / "chainer_srcnn.py").is_file()
    assert _left_containers(doc["run_id"]) == []


@pytest.mark.timeout(1800)
def test_keras_resnet_cifar_runs_in_the_tensorflow_cpu_image(
        tmp_path: Path, tensorflow_cpu_image: Any, base_image: str, build_ca: tuple[Path, bytes]) -> None:
    from mlflow.tracking import MlflowClient

    spec_file = REPO / "experiments" / "keras_resnet_cifar.yaml"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    began = time.monotonic()
    res = subprocess.run(_gpuops(str(spec_file), "--smoke", "--tracking-uri", store, "--json", env=None),
                         cwd=REPO, env=_env(base_image, build_ca[0]), capture_output=True, text=True,
                         timeout=900)
    print(f"keras_resnet_cifar --target docker --smoke: {time.monotonic() - began:.1f} s")
    assert res.returncode == 0, f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}"
    doc = json.loads(res.stdout)
    run = MlflowClient(tracking_uri=store).get_run(doc["run_id"])
    assert run.info.status == "FINISHED"
    _check_image(run.data.tags, "tensorflow-cpu", tensorflow_cpu_image)
    assert run.data.tags["gpuops.script.framework"] == "tensorflow==2.21.0"
    metrics = run.data.metrics
    assert {"train/loss", "val/accuracy", "val/loss"} <= set(metrics), sorted(metrics)
    assert 0.0 <= metrics["val/accuracy"] <= 1.0
    root = _artifact_dir(store, doc["run_id"])
    assert (root / "outputs" / "model.keras").is_file() and (root / "logs" / "stdout.txt").is_file()
    assert _left_containers(doc["run_id"]) == []
