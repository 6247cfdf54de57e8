"""The MLflow store under concurrency and a full disk: real processes, real sqlite files, a real
small filesystem (tmpfs) when this machine lets the tests mount one, else a file-size limit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuops.errors import ExternalError
from gpuops.tracking.store import ensure_sqlite_store
from tests.run.conftest import client, gpuops_cmd, tiny_sr_spec


def test_four_parallel_first_runs_on_a_fresh_store_all_finish(tmp_path: Path, data_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    specs = [tiny_sr_spec(tmp_path, f"par{i}", train={"iterations": 2, "log_every": 1, "checkpoint_every": 0},
                          eval={"every": None, "panels": False}) for i in range(4)]
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: ./mlflow.db of the working directory
    assert not (work / "mlflow.db").exists()
    procs = [subprocess.Popen(gpuops_cmd("run", str(s), "--json"), cwd=work, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for s in specs]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out)["status"] == "FINISHED"
    c = client(f"sqlite:///{work / 'mlflow.db'}")
    for i in range(4):
        exp = c.get_experiment_by_name(f"par{i}")
        assert exp is not None
        (run,) = c.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".mlflow.db")]
    assert leftovers == []  # no set-up files


def test_parallel_set_up_in_many_processes_makes_one_whole_store(tmp_path: Path) -> None:
    db = tmp_path / "s" / "mlflow.db"
    code = ("import sys; from gpuops.tracking.tracker import Tracker; t = Tracker(sys.argv[1]); "
            "t.start('e' + sys.argv[2]); t.finish(); print(t.status())")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.strip() == "FINISHED"
    assert len(client(f"sqlite:///{db}").search_experiments()) == 7  # Default + 6


@contextlib.contextmanager
def small_filesystem(where: Path, kib: int) -> Iterator[Path | None]:
    """A tmpfs of ``kib`` KiB mounted at ``where`` (None when mounting is not allowed here)."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _grow(where: Path, kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(where)], check=True)


def test_a_disk_that_fills_during_set_up_leaves_nothing_and_works_once_freed(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", 200) as fs:
        if fs is not None:
            db = fs / "mlflow.db"
            with pytest.raises(ExternalError) as info:
                ensure_sqlite_store(f"sqlite:///{db}")
            assert "is full" in str(info.value) and "\n" not in str(info.value)
            assert list(fs.iterdir()) == []  # no half-made mlflow.db, no set-up file
            _grow(fs, 64 * 1024)  # space freed
            assert ensure_sqlite_store(f"sqlite:///{db}") == db
            c = client(f"sqlite:///{db}")
            assert c.get_experiment("0").name == "Default"
            return
    # No mount allowed here: a file-size limit makes the writes fail the same way (EFBIG).
    db = tmp_path / "limited" / "mlflow.db"
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))\n"
            "from gpuops.errors import ExternalError\n"
            "from gpuops.tracking.store import ensure_sqlite_store\n"
            "try:\n    ensure_sqlite_store(sys.argv[1])\nexcept ExternalError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], capture_output=True, text=True,
                       timeout=300, check=False)
    # sqlite says "disk I/O error" when the size limit stops a write; either way one line, nothing left
    assert "could not set up the MLflow store" in r.stdout or "is full" in r.stdout, r.stdout + r.stderr
    assert len(r.stdout.strip().splitlines()) == 1
    assert list(db.parent.iterdir()) == []
    assert ensure_sqlite_store(f"sqlite:///{db}") == db
    assert client(f"sqlite:///{db}").get_experiment("0").name == "Default"


def test_an_existing_store_is_left_alone(tmp_path: Path, store: str) -> None:
    db = Path(store[len("sqlite:///"):])
    before = db.stat().st_mtime_ns, db.stat().st_size
    assert ensure_sqlite_store(store) == db
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before
