"""``task: script`` end to end with small real scripts: a failing script, Ctrl-C and SIGTERM, a
script that ignores Ctrl-C, ``--set params.x=``, a sweep over a param, invalid specs (exit 2, no run),
an environment whose Python is missing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from gpuops.tracking.procs import pid_alive
from tests.conftest import REPO
from tests.run.conftest import client, gpuops_cmd, only_run, process_gone, run_cli, wait_for
from tests.scripts.conftest import artifact_paths, artifact_text, runs_of, script_spec

LOOP = """
import os, sys, time
lr = float(sys.argv[1])
print("starting with lr", lr, flush=True)
for step in range(1, 1_000_000):
    print(f"step {step} loss {lr / step:.6f}", flush=True)
    time.sleep(0.2)
"""
SET5 = REPO / "experiments" / "data" / "Set5"
LOOP_METRICS = [{"name": "train/loss", "regex": r"^step (?P<step>\d+) loss (?P<value>\S+)"}]


def _popen(args: list[str], cwd: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(gpuops_cmd(*args), cwd=cwd, stdout=open(out, "w"),
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _looping(tmp_path: Path, store: str, name: str,
             body: str = LOOP) -> tuple[subprocess.Popen[str], str, int]:
    """A script run that goes on until stopped: gpuops run, the run id, the script's pid (once it logs)."""
    spec = script_spec(tmp_path, name, body, entrypoint=["python", f"{name}.py", "{params.lr}"],
                       params={"lr": 0.5}, metrics=LOOP_METRICS)
    proc = _popen(["run", str(spec), "--tracking-uri", store], tmp_path, tmp_path / f"{name}.out")
    run = wait_for(lambda: (r := only_run(store, name)) is not None and "train/loss" in r.data.metrics
                   and "gpuops.script.pid" in r.data.tags and r, 240, "the first parsed loss", proc)
    pid = int(run.data.tags["gpuops.script.pid"])
    assert pid_alive(pid)
    return proc, run.info.run_id, pid


def _kill_all(proc: subprocess.Popen[str], *pids: int) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def test_a_failing_script_ends_failed_with_the_end_of_its_stderr(tmp_path: Path, store: str) -> None:
    spec = script_spec(tmp_path, "fails", """
        import sys
        print("step 1 loss 0.9", flush=True)
        print("loading the data set", file=sys.stderr)
        raise RuntimeError("CUDA out of memory in my own layer")
        """, metrics=LOOP_METRICS)
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    (run,) = runs_of(store, "fails")
    assert run.info.status == "FAILED"
    error = run.data.tags["gpuops.error"]
    assert error.splitlines()[0].startswith("the script failed (exit code 1)")
    assert "RuntimeError: CUDA out of memory in my own layer" in error
    assert "loading the data set" in error
    assert json.loads(r.stdout)["status"] == "FAILED"
    assert run.data.metrics["train/loss"] == 0.9  # what it printed before failing is kept
    assert {"logs/stdout.txt", "logs/stderr.txt", "code/fails.py"} <= artifact_paths(store, run.info.run_id)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_script_and_the_run_is_killed(tmp_path: Path, store: str,
                                                                  how: str) -> None:
    proc, run_id, pid = _looping(tmp_path, store, f"loop_{how.replace('-', '_')}")
    try:
        if how == "ctrl-c":  # a terminal's Ctrl-C: the whole foreground group of gpuops run
            os.killpg(proc.pid, signal.SIGINT)
        else:  # systemd or kill: gpuops run alone
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        _kill_all(proc, pid)
    out = (tmp_path / f"loop_{how.replace('-', '_')}.out").read_text()
    assert proc.returncode == 130, out[-2000:]
    run = client(store).get_run(run_id)
    assert run.info.status == "KILLED"
    assert "interrupted (SIGINT)" in run.data.tags["gpuops.error"]
    assert process_gone(pid, 30), "the script outlived its run"
    stdout = artifact_text(store, run_id, "logs/stdout.txt", tmp_path / "dl")
    assert "starting with lr 0.5" in stdout


def test_a_script_that_ignores_ctrl_c_is_terminated(tmp_path: Path, store: str) -> None:
    stubborn = LOOP.replace("import os, sys, time", "import os, signal, sys, time\n"
                            "signal.signal(signal.SIGINT, signal.SIG_IGN)")
    proc, run_id, pid = _looping(tmp_path, store, "stubborn", stubborn)
    began = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        _kill_all(proc, pid)
    assert proc.returncode == 130
    assert process_gone(pid, 10)
    run = client(store).get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["gpuops.error"]  # it took the SIGTERM that followed
    assert time.monotonic() - began < 60


def test_set_param_goes_into_the_command_line_and_the_params(tmp_path: Path, store: str) -> None:
    spec = script_spec(tmp_path, "echo_lr", """
        import json, os, sys
        print("argv", json.dumps(sys.argv[1:]))
        print("val/accuracy", float(sys.argv[2]) * 2)
        print("params", os.environ["GPUOPS_PARAMS"])
        print("data", os.environ["GPUOPS_DATA_IMAGES"], os.path.isdir(sys.argv[3]))
        print("run", os.environ["MLFLOW_RUN_ID"])
        """, entrypoint=["python", "echo_lr.py", "--lr", "{params.lr}", "{data.images}",
                         "--tag=x{params.tag}"],
        params={"lr": 0.1, "tag": "a"}, data={"images": str(SET5)},
        metrics=[{"name": "val/accuracy", "regex": r"^val/accuracy (\S+)"}])
    r = run_cli("run", str(spec), "--set", "params.lr=0.25", "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = runs_of(store, "echo_lr")
    argv = json.loads(run.data.tags["gpuops.script.command"])
    assert argv[1:] == [str(tmp_path / "echo_lr.py"), "--lr", "0.25", str(SET5), "--tag=xa"]
    assert run.data.params["params.lr"] == "0.25"
    assert json.loads(run.data.tags["gpuops.overrides"]) == ["params.lr=0.25"]
    assert run.data.metrics["val/accuracy"] == 0.5
    stdout = artifact_text(store, run.info.run_id, "logs/stdout.txt", tmp_path / "dl")
    assert f"run {run.info.run_id}" in stdout
    assert '"lr": 0.25' in stdout and "True" in stdout


def test_sweep_over_a_script_param(tmp_path: Path, store: str) -> None:
    spec = script_spec(tmp_path, "sweepme", """
        import sys
        width = int(sys.argv[1])
        print(f"val/accuracy {min(1.0, width / 10):.3f}")
        """, entrypoint=["python", "sweepme.py", "{params.width}"], params={"width": 1},
        metrics=[{"name": "val/accuracy", "regex": r"^val/accuracy (\S+)"}])
    r = run_cli("sweep", str(spec), "--param", "params.width=2,5", "--metric", "val/accuracy",
                "--tracking-uri", store, "--json", cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert [(x["value"], x["status"], x["metric"]) for x in doc["runs"]] == [(2, "FINISHED", 0.2),
                                                                             (5, "FINISHED", 0.5)]
    children = [x for x in runs_of(store, "sweepme") if x.info.run_id != doc["parent_run_id"]]
    assert sorted(c.data.params["params.width"] for c in children) == ["2", "5"]
    assert all(c.data.tags["mlflow.parentRunId"] == doc["parent_run_id"] for c in children)


@pytest.mark.parametrize(("fields", "where", "what"), [
    ({"entrypoint": ["python", "missing.py"]}, "entrypoint[1]", "an existing script file"),
    ({"entrypoint": ["python", "ok.py", "{params.nope}"]}, "entrypoint[2]",
     "placeholders of declared params"),
    ({"entrypoint": ["python", "ok.py", "{data.nope}"]}, "entrypoint[2]", "declared data folders"),
    ({"data": {"train": "no/such/folder"}}, "data.train", "an existing folder"),
    ({"env": "no-such-env"}, "env", "an environment"),
    ({"metrics": [{"name": "val/psnr", "regex": "psnr ([0-9.]+) ([0-9.]+)"}]}, "metrics[0].regex",
     "exactly one capture group"),
    ({"metrics": [{"name": "val/psnr", "regex": "psnr ("}]}, "metrics[0].regex", "regular expression"),
    ({"outputs": "../elsewhere"}, "outputs", "without '..'"),
    ({"smoke": {"epochs": 1}}, "smoke.epochs", "a parameter declared under params"),
    ({"resources": {"gpus": 2}}, "resources.gpus", "1 for task: script"),
    ({"params": {"lr": [1, 2]}}, "params.lr", ""),
    ({"entrypoint": []}, "entrypoint", ""),
])
def test_an_invalid_script_spec_is_exit_2_without_a_run(tmp_path: Path, store: str, fields: dict, where: str,
                                                         what: str) -> None:
    spec = script_spec(tmp_path, "bad", "print('never runs')\n", **fields)
    if fields.get("entrypoint") != ["python", "missing.py"]:
        (tmp_path / "ok.py").write_text("print('ok')\n")
    r = run_cli("run", str(spec), "--tracking-uri", store, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    assert str(spec) in r.stderr and where in r.stderr and what in r.stderr, r.stderr[-1500:]
    assert line, "one clear line"
    assert runs_of(store, "bad") == []


def test_set_of_an_undeclared_param_is_exit_2(tmp_path: Path, store: str) -> None:
    spec = script_spec(tmp_path, "typo", "print(1)\n", params={"lr": 0.1})
    r = run_cli("run", str(spec), "--set", "params.lrr=0.2", "--tracking-uri", store, cwd=tmp_path)
    assert r.returncode == 2
    assert "params.lrr" in r.stderr and "declared: lr" in r.stderr
    assert runs_of(store, "typo") == []


def test_an_environment_whose_python_is_missing_is_refused_before_any_run(tmp_path: Path, store: str) -> None:
    envs = tmp_path / "environments"
    envs.mkdir()
    (envs / "old-py.yaml").write_text(yaml.safe_dump({
        "framework": "chainer", "framework_version": "7.8.1", "python": "3.1", "cuda": None}))
    spec = script_spec(tmp_path, "oldpy", "print(1)\n", env=str(envs / "old-py.yaml"))
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]  # the local target's plan, before the run exists
    assert "needs Python 3.1" in r.stderr and "no python3.1 on PATH" in r.stderr
    assert "--target docker" in r.stderr  # the way out: its image
    assert json.loads(r.stdout)["error"]["exit_code"] == 2
    assert runs_of(store, "oldpy") == []


def test_compare_lines_up_a_script_run_with_a_built_in_one(tmp_path: Path, store: str) -> None:
    from tests.run.conftest import tiny_sr_spec

    builtin = tiny_sr_spec(tmp_path, "tiny_builtin", train={"iterations": 2, "log_every": 1,
                                                            "checkpoint_every": 0}, eval={"every": None})
    assert run_cli("run", str(builtin), "--tracking-uri", store, cwd=tmp_path).returncode == 0
    spec = script_spec(tmp_path, "tiny_script", """
        for step, (loss, psnr) in enumerate([(0.02, 20.5), (0.01, 22.25)], start=1):
            print(f"iter {step} loss {loss} psnr {psnr}")
        """, metrics=[{"name": "train/loss", "regex": r"^iter (?P<step>\d+) loss (?P<value>\S+)"},
                      {"name": "val/psnr", "regex": r"^iter (?P<step>\d+) loss \S+ psnr (?P<value>\S+)"}])
    assert run_cli("run", str(spec), "--tracking-uri", store, cwd=tmp_path).returncode == 0
    r = run_cli("compare", "-n", "2", "--tracking-uri", store, "--json", "--no-log", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {x["experiment"]: x for x in json.loads(r.stdout)["runs"]}
    assert set(runs) == {"tiny_builtin", "tiny_script"}
    assert runs["tiny_script"]["metrics"]["val/psnr"]["best"] == 22.25
    assert runs["tiny_script"]["metrics"]["val/psnr"]["final_step"] == 2
    assert {"val/psnr", "train/loss"} <= set(runs["tiny_builtin"]["metrics"])


def test_sigkill_of_gpuops_run_leaves_no_script_and_no_running_run(tmp_path: Path, store: str) -> None:
    """The kernel tells the trainer (PR_SET_PDEATHSIG); it passes the stop on to the script's group."""
    proc, run_id, pid = _looping(tmp_path, store, "orphan")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert process_gone(pid, 60), "the script outlived gpuops run"
    finally:
        _kill_all(proc, pid)
    wait_for(lambda: client(store).get_run(run_id).info.status != "RUNNING", 60, "the run to be ended")
    assert client(store).get_run(run_id).info.status == "KILLED"


def test_a_process_the_script_leaves_behind_neither_hangs_the_run_nor_outlives_it(tmp_path: Path,
                                                                                  store: str) -> None:
    spec = script_spec(tmp_path, "leaves_child", """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # holds our pipes
        print("child", child.pid, flush=True)
        """)
    began = time.monotonic()
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.monotonic() - began < 90
    (run,) = runs_of(store, "leaves_child")
    assert run.info.status == "FINISHED"
    stdout = artifact_text(store, run.info.run_id, "logs/stdout.txt", tmp_path / "dl")
    child = int(stdout.split("child ")[1].split()[0])
    assert process_gone(child, 15), "the script's leftover process was not ended"


def test_sigterm_of_the_trainer_ends_a_script_that_ignores_it_within_the_trainer_s_deadline(
        tmp_path: Path, store: str) -> None:
    """The trainer has 7 s after a SIGTERM (gpuops.train.worker.STOP_DEADLINE_S): the script that
    ignores it is killed in time for the run to end KILLED, not left RUNNING."""
    deaf = LOOP.replace("import os, sys, time", "import os, signal, sys, time\n"
                        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "signal.signal(signal.SIGINT, signal.SIG_IGN)")
    proc, run_id, pid = _looping(tmp_path, store, "deaf", deaf)
    trainer = int(client(store).get_run(run_id).data.tags["gpuops.trainer.pid"])
    began = time.monotonic()
    try:
        os.kill(trainer, signal.SIGTERM)  # as the kernel does when gpuops run dies (PR_SET_PDEATHSIG)
        proc.wait(timeout=120)
        assert process_gone(pid, 15)
    finally:
        _kill_all(proc, pid)
    run = client(store).get_run(run_id)
    assert run.info.status == "KILLED", run.data.tags.get("gpuops.error")
    assert "interrupted (SIGTERM)" in run.data.tags["gpuops.error"]
    assert time.monotonic() - began < 60
