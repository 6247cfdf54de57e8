"""``gpuops runs`` finds RUNNING runs whose trainer is gone, and ``--clean`` ends them KILLED;
a run whose trainer lives is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpuops.targets.local import TRAINER_TAG
from gpuops.tracking.procs import process_identity
from gpuops.tracking.tracker import Tracker


def _run_with_trainer(store: str, pid: int) -> str:
    tr = Tracker(store)
    run_id = tr.start("orphans")
    tr.set_tags({f"{TRAINER_TAG}.{k}": v for k, v in process_identity(pid).items()})
    return run_id


def _gpuops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuops", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_orphaned_runs_are_listed_and_cleaned(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    ident_run = _run_with_trainer(store, gone.pid)  # recorded while it ran
    gone.wait()
    live_run = _run_with_trainer(store, os.getpid())

    r = _gpuops("runs", "--tracking-uri", store, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = {o["run_id"]: o["why"] for o in json.loads(r.stdout)["orphaned"]}
    assert ident_run in listed and f"pid {gone.pid}" in listed[ident_run]
    assert live_run not in listed

    r = _gpuops("runs", "--clean", "--tracking-uri", store, "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["killed"] == [ident_run]
    c = Tracker(store).client
    run = c.get_run(ident_run)
    assert run.info.status == "KILLED"
    assert "gpuops runs --clean" in run.data.tags["gpuops.error"]
    assert c.get_run(live_run).info.status == "RUNNING"
    r = _gpuops("runs", "--tracking-uri", store, cwd=tmp_path)
    assert "No run is left RUNNING without its trainer." in r.stdout
