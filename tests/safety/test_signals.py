"""Signals, for real: ``gpuops run`` and ``gpuops ui`` in subprocesses, signalled as systemd, a closed
SSH session or ``kill -9`` would; the MLflow store read back; processes and job folders looked for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpuops.tracking.procs import pid_alive
from tests.run.conftest import client, gpuops_cmd, only_run, process_gone, run_cli, tiny_sr_spec, wait_for
from tests.safety.conftest import job_folders


def _popen(args: list[str], cwd: Path, tmpdir: Path, out: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1", "TMPDIR": str(tmpdir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    stdout = open(out, "w") if out else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(gpuops_cmd(*args), cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def _long_run(tmp_path: Path, store: str, jobs_tmp: Path,
              name: str) -> tuple[subprocess.Popen[str], Any, int]:
    """A run that trains until stopped: the process, its MLflow run (once training), the trainer pid."""
    spec = tiny_sr_spec(tmp_path, name, train={"iterations": 1_000_000, "checkpoint_every": 0},
                        eval={"every": None})
    proc = _popen(["run", str(spec), "--tracking-uri", store], tmp_path, jobs_tmp, tmp_path / f"{name}.out")
    run = wait_for(lambda: (r := only_run(store, name)) is not None and "train/loss" in r.data.metrics and r,
                   240, "the first logged loss", proc)
    pid = int(run.data.tags["gpuops.trainer.pid"])
    assert pid_alive(pid)
    assert job_folders(jobs_tmp), "the job folder exists while the run trains"
    return proc, run, pid


def _kill_all(proc: subprocess.Popen[str], *pids: int) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_term_or_hup_of_gpuops_run_marks_the_run_killed(tmp_path: Path, store: str, jobs_tmp: Path,
                                                        sig: signal.Signals) -> None:
    proc, run, trainer = _long_run(tmp_path, store, jobs_tmp, f"sig{sig.name.lower()}")
    try:
        if sig == signal.SIGTERM:  # while the trainer lives, --resume refuses to start a second one
            r = run_cli("run", "--resume", run.info.run_id, "--tracking-uri", store,
                        cwd=tmp_path, timeout=120)
            assert r.returncode == 2, r.stderr[-1500:]
            assert f"still being trained (pid {trainer}" in r.stderr
            assert client(store).get_run(run.info.run_id).info.status == "RUNNING"
        os.kill(proc.pid, sig)  # gpuops run alone, as systemd or sshd do; not the trainer
        proc.wait(timeout=120)
    finally:
        _kill_all(proc, trainer)
    assert proc.returncode == 130, (tmp_path / f"sig{sig.name.lower()}.out").read_text()[-2000:]
    got = client(store).get_run(run.info.run_id)
    assert got.info.status == "KILLED"
    assert process_gone(trainer, 30), "the trainer outlived gpuops run"
    assert job_folders(jobs_tmp) == []


def test_sigkill_of_gpuops_run_ends_the_trainer_and_its_run(tmp_path: Path, store: str,
                                                            jobs_tmp: Path) -> None:
    proc, run, trainer = _long_run(tmp_path, store, jobs_tmp, "sigkill_parent")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # The kernel tells the trainer (PR_SET_PDEATHSIG): it stops and, normally, ends its own
        # run KILLED. What must hold in every case: no trainer is left after 10 s (it has 7 s,
        # gpuops.train.worker.STOP_DEADLINE_S), and no run stays RUNNING (KILLED by the trainer, or
        # marked by `gpuops runs --clean`).
        assert process_gone(trainer, 10), "the trainer outlived gpuops run by 10 s"
    finally:
        _kill_all(proc, trainer)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: client(store).get_run(run.info.run_id).info.status == "KILLED", 30,
                 "the trainer to mark its run KILLED")
    if client(store).get_run(run.info.run_id).info.status == "RUNNING":
        r = run_cli("runs", "--clean", "--tracking-uri", store, "--json", cwd=tmp_path)
        assert run.info.run_id in json.loads(r.stdout)["killed"], r.stderr[-2000:]
    assert client(store).get_run(run.info.run_id).info.status == "KILLED"
    wait_for(lambda: job_folders(jobs_tmp) == [], 30, "the orphaned job folder to go")
    # and now --resume may continue it
    assert "gpuops.trainer.pid" in client(store).get_run(run.info.run_id).data.tags


def test_a_crashed_trainer_fails_the_run_and_keeps_its_log_in_mlflow(tmp_path: Path, store: str,
                                                                     jobs_tmp: Path) -> None:
    proc, run, trainer = _long_run(tmp_path, store, jobs_tmp, "segv")
    try:
        os.kill(trainer, signal.SIGSEGV)
        proc.wait(timeout=120)
    finally:
        _kill_all(proc, trainer)
    assert proc.returncode == 1
    got = client(store).get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert f"code {-signal.SIGSEGV}" in got.data.tags["gpuops.error"]
    assert "trainer.log" in {a.path for a in client(store).list_artifacts(run.info.run_id)}
    log = Path(client(store).download_artifacts(run.info.run_id, "trainer.log", str(tmp_path))).read_text()
    assert "Segmentation fault" in log  # the trainer's Python stack at the crash (faulthandler)
    assert job_folders(jobs_tmp) == []


def _ui(tmp_path: Path, jobs_tmp: Path, store: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    out = tmp_path / "ui.out"
    proc = _popen(["ui", "--port", "0", "--json", "--tracking-uri", store], tmp_path, jobs_tmp, out)

    def up() -> dict[str, Any] | None:
        text = out.read_text()
        start = text.find("{")
        if start < 0:
            return None
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            return None

    doc = wait_for(up, 180, "the MLflow UI to start", proc)
    return proc, doc


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_gpuops_ui_takes_its_server_along(tmp_path: Path, store: str, jobs_tmp: Path,
                                          sig: signal.Signals) -> None:
    proc, doc = _ui(tmp_path, jobs_tmp, store)
    server = int(doc["pid"])
    try:
        assert _answers(doc["url"])
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        wait_for(lambda: not _answers(doc["url"]), 30, "the MLflow server to stop answering")
        assert process_gone(server, 30), "the server's supervisor outlived gpuops ui"
        # nothing of its process group is left (uvicorn and mlflow's own processes)
        wait_for(lambda: subprocess.run(["pgrep", "-g", str(server)], capture_output=True,
                                        check=False).returncode == 1, 30, "the server's group to end")
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(OSError):
            os.killpg(server, signal.SIGKILL)
