"""The target-independent half of ``task: script`` (``gpuops.scripts.supervise``): real exit statuses
of real processes to run statuses, output lines to metrics, argv placeholders, the script's
environment; and the example specs and scripts as shipped."""

from __future__ import annotations

import ast
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpuops.experiments.spec import load_experiment, script_file_index
from gpuops.scripts.runner import absolute_tracking_uri, code_files
from gpuops.scripts.supervise import (
    LineTail,
    OutputMetrics,
    exit_outcome,
    fill_argv,
    script_environment,
)
from tests.conftest import REPO


def _exit_status(code: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return r.returncode, r.stderr


@pytest.mark.parametrize(("code", "status", "exit_code"), [
    ("print('done')", "FINISHED", 0),
    ("raise ValueError('bad batch')", "FAILED", 1),
    ("import sys; sys.exit(3)", "FAILED", 1),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "FAILED", 1),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "KILLED", 130),
    ("import os, signal; os.kill(os.getpid(), signal.SIGINT)", "KILLED", 130),
    ("import sys; sys.exit(130)", "KILLED", 130),  # what a shell wrapper reports for Ctrl-C
])
def test_exit_status_of_a_real_process_gives_the_run_status(code: str, status: str, exit_code: int) -> None:
    rc, stderr = _exit_status(code)
    tail = LineTail(5)
    for line in stderr.splitlines():
        tail.add(line)
    out = exit_outcome(rc, stderr_tail=tail.text())
    assert (out.status, out.exit_code) == (status, exit_code)
    if status == "FAILED":
        assert out.error is not None
        if "ValueError" in code:
            assert out.error.startswith("the script failed (exit code 1)")
            assert out.error.rstrip().endswith("ValueError: bad batch")
        if "SIGSEGV" in code:
            assert "killed by SIGSEGV" in out.error.splitlines()[0]
    if status == "FINISHED":
        assert out.error is None


def test_a_stop_gpuops_passed_on_is_killed_whatever_the_script_exits_with() -> None:
    rc, _ = _exit_status("print('cleaned up after Ctrl-C')")  # a script that handles SIGINT and exits 0
    out = exit_outcome(rc, stopped_by="SIGINT")
    assert (out.status, out.exit_code) == ("KILLED", 130)
    assert out.error is not None and out.error.startswith("interrupted (SIGINT)")


def test_the_tail_keeps_only_the_last_lines() -> None:
    tail = LineTail(3)
    for i in range(10):
        tail.add(f"line {i}\n")
    assert tail.text() == "line 7\nline 8\nline 9"


def test_output_patterns_read_values_and_steps() -> None:
    spec = load_experiment(REPO / "experiments" / "chainer_srcnn.yaml")
    parser = OutputMetrics(spec.spec.metrics)
    assert [(p.name, p.value, p.step) for p in parser.feed("iter 200 loss 0.001250 throughput 412.5")] == [
        ("train/loss", 0.00125, 200), ("train/throughput", 412.5, 200)]
    got = {p.name: (p.value, p.step) for p in parser.feed("eval iter 2000 psnr 31.2345 bicubic 30.1000")}
    assert got == {"val/psnr": (31.2345, 2000), "val/psnr_bicubic_pil": (30.1, 2000)}
    assert parser.feed("chainer 7.8.1, numpy 1.26.4, python 3.11.7") == []
    assert parser.last["val/psnr"] == 31.2345 and parser.last_step == 2000


def test_patterns_without_a_step_count_their_matches_and_skip_what_is_not_a_number() -> None:
    parser = OutputMetrics([("val/accuracy", r"accuracy: ([^ ]+)"), {"name": "lr", "regex": r"lr=(\S+)",
                                                                      "log": False}])
    lines = ["accuracy: 0.5", "accuracy: n/a", "accuracy: inf", "accuracy: nan lr=0.1", "accuracy: 0.75"]
    points = [p for line in lines for p in parser.feed(line)]
    acc = [(p.value, p.step) for p in points if p.name == "val/accuracy"]
    assert acc[0] == (0.5, 1) and acc[2] == (0.75, 3)
    assert math.isnan(acc[1][0]) and acc[1][1] == 2  # NaN is kept (a diverged run shows it), inf is not
    (lr,) = [p for p in points if p.name == "lr"]
    assert lr.log is False and lr.value == 0.1


def test_progress_events_have_the_built_in_trainer_shape() -> None:
    parser = OutputMetrics(load_experiment(REPO / "experiments" / "keras_resnet_cifar.yaml").spec.metrics)
    events = OutputMetrics.events(parser.feed("step 40 epoch 1 loss 1.834512 throughput 812.3"))
    assert events == [{"event": "progress", "it": 40, "total": None, "loss": 1.834512, "throughput": 812.3}]
    events = OutputMetrics.events(parser.feed("eval step 40 epoch 1 accuracy 0.412000 loss 1.612345"))
    assert events == [{"event": "eval", "it": 40, "metrics": {"val/accuracy": 0.412, "val/loss": 1.612345}}]


def test_fill_argv_with_another_machine_s_paths() -> None:
    """The docker target fills the same entrypoint with the container's paths."""
    spec = load_experiment(REPO / "experiments" / "chainer_srcnn.yaml", ["params.lr=0.0003"]).spec
    argv = fill_argv(spec.entrypoint, params=spec.params, data={"train": "/data/train", "eval": "/data/eval"},
                     outputs="/outputs", seed=spec.seed)
    assert argv[argv.index("--train") + 1] == "/data/train"
    assert argv[argv.index("--lr") + 1] == "0.0003"
    assert argv[argv.index("--out") + 1] == "/outputs"
    assert argv[argv.index("--seed") + 1] == "0"
    assert not any("{" in a for a in argv)
    assert fill_argv(["python", "-c", "print({'a': 1})", "{params.flag}"], params={"flag": True}, data={},
                     outputs=None, seed=0) == ["python", "-c", "print({'a': 1})", "true"]
    with pytest.raises(KeyError):
        fill_argv(["{params.missing}"], params={}, data={}, outputs=None, seed=0)


def test_script_environment() -> None:
    env = script_environment(tracking_uri="sqlite:////x/mlflow.db", run_id="abc", experiment_id="7",
                             data={"train": "/d/T91"}, outputs="/o", params={"lr": 0.1}, seed=5,
                             device="cpu", threads=2)
    assert env["MLFLOW_RUN_ID"] == "abc" and env["MLFLOW_EXPERIMENT_ID"] == "7"
    assert env["GPUOPS_DATA_TRAIN"] == "/d/T91" and env["GPUOPS_OUTPUTS"] == "/o"
    assert env["GPUOPS_PARAMS"] == '{"lr": 0.1}' and env["GPUOPS_SEED"] == "5"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in script_environment(
        tracking_uri="x", run_id="a", experiment_id="1", data={}, outputs=None, params={}, seed=0)


def test_a_relative_store_stays_the_same_store_from_the_script_s_folder(tmp_path: Path) -> None:
    assert absolute_tracking_uri("sqlite:///runs/mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert absolute_tracking_uri("sqlite:////abs/mlflow.db", tmp_path) == "sqlite:////abs/mlflow.db"
    assert absolute_tracking_uri("mlruns", tmp_path) == str(tmp_path / "mlruns")
    assert absolute_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_code_files_of_a_folder_leave_caches_and_hidden_files_out(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / ".git").mkdir()
    (tmp_path / "pkg" / "model.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / ".git" / "config").write_text("[core]\n")
    (tmp_path / "pkg" / "weights.bin").write_bytes(b"\0" * 10)
    (tmp_path / "train.py").write_text("import pkg\n")
    got = [(f.name, folder) for f, folder in code_files([str(tmp_path / "train.py"), str(tmp_path / "pkg")])]
    assert got == [("train.py", "code"), ("model.py", "code/pkg")]


def test_the_script_file_is_found_after_the_interpreter_s_options() -> None:
    assert script_file_index(["python", "-u", "-W", "ignore", "train.py", "--lr", "1"]) == 4
    assert script_file_index(["python3", "-m", "mypkg.train"]) is None
    assert script_file_index(["./run.sh", "a"]) == 0
    assert script_file_index(["torchrun", "train.py"]) is None


@pytest.mark.parametrize("name", ["chainer_srcnn", "keras_resnet_cifar", "torch_script"])
def test_example_specs_load_with_and_without_smoke(name: str) -> None:
    full = load_experiment(REPO / "experiments" / f"{name}.yaml")
    smoke = load_experiment(REPO / "experiments" / f"{name}.yaml", smoke=True)
    assert full.spec.task == smoke.spec.task == "script"
    assert full.spec_hash != smoke.spec_hash
    for key, value in smoke.spec.smoke.items():
        assert smoke.spec.params[key] == value
    assert Path(full.spec.entrypoint[1]).is_file()
    assert set(full.spec.data) <= {"train", "eval"}


def test_the_chainer_example_stays_python_3_8_syntax() -> None:
    """The chainer GPU image's Python is 3.8 (environments/chainer.yaml): the script must parse there."""
    src = (REPO / "experiments" / "scripts" / "chainer_srcnn.py").read_text()
    ast.parse(src, feature_version=(3, 8))


def test_sigterm_name_round_trip() -> None:
    out = exit_outcome(-signal.SIGHUP)
    assert out.status == "KILLED" and "SIGHUP" in (out.error or "")
