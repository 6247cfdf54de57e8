"""``gpuops doctor --against RUN_ID``: a real sqlite MLflow store, runs tagged with this machine's real
fingerprint (changed where a test needs another machine), the real CLI in a subprocess, and machines
presented through doctor's captures (a real report's capture, and this machine's own capture with
a stated driver and GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuops.doctor import load_capture
from gpuops.doctor.against import MAJOR, compare_environment
from gpuops.doctor.fingerprint import KEYS, environment_fingerprint
from gpuops.knowledge import load_kb
from tests.run.conftest import client, run_cli

FIXTURES = Path(__file__).parent / "fixtures"
# The GKE node of https://github.com/pytorch/pytorch/issues/112553: driver 470.182.03 (CUDA 11.4),
# where torch 2.1.0+cu121 said "The NVIDIA driver on your system is too old (found version 11040)".
GKE_470 = FIXTURES / "real_06.capture.yaml"
# Another machine: a real driver release and real GPUs (their compute capabilities from the knowledge base).
OTHER = {"env.driver": "535.104.05", "env.cuda_driver": "12.2", "env.gpu": "NVIDIA A100-SXM4-40GB",
         "env.gpu_cc": "8.0", "env.gpu_count": "1", "env.torch": "2.1.0+cu121", "env.torch_cuda": "12.1"}


@pytest.fixture(scope="module")
def here() -> dict[str, str]:
    return environment_fingerprint()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("against") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client(uri).search_experiments()  # the schema, once
    return uri


def make_run(uri: str, tags: dict[str, str]) -> str:
    """A finished run carrying ``tags``, as gpuops run tags one (the fingerprint, target, commit)."""
    c = client(uri)
    exp = c.get_experiment_by_name("drift")
    exp_id = exp.experiment_id if exp else c.create_experiment("drift")
    run = c.create_run(exp_id, tags={"gpuops.target": "local", "git.commit": "unknown"})
    for k, v in tags.items():
        c.set_tag(run.info.run_id, k, v)
    c.log_metric(run.info.run_id, "val/psnr", 30.0)
    c.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def doctor(*args: str, cwd: Path) -> tuple[int, Any, str]:
    r = run_cli("doctor", *args, cwd=cwd, timeout=120)
    doc = json.loads(r.stdout) if "--json" in args and r.stdout.strip() else None
    return r.returncode, doc, r.stdout + r.stderr


def test_the_same_machine_shows_no_differences(store: str, here: dict[str, str], tmp_path: Path) -> None:
    run_id = make_run(store, here)
    rc, doc, _ = doctor("--against", run_id, "--tracking-uri", store, "--json", cwd=tmp_path)
    assert rc == 0, doc
    assert doc["run_id"] == run_id and doc["here"] == "this machine"
    assert doc["identical"] is True and doc["differences"] == []
    assert doc["same"] == list(KEYS)
    # this machine's torch is a CPU wheel: the run's build fits it without a GPU
    assert doc["verdict"]["build"] == f"torch {here['env.torch']}" and doc["verdict"]["ok"] is True
    # text output, with a unique prefix of the id, and the capture it compared saved on the way
    rc, _, text = doctor("--against", run_id[:12], "--tracking-uri", store, "--capture", "host.yaml",
                         cwd=tmp_path)
    assert rc == 0 and "No differences" in text and "fits" in text
    assert environment_fingerprint(load_capture(tmp_path / "host.yaml")) == here


def test_a_run_from_another_driver_and_gpu(store: str, here: dict[str, str], tmp_path: Path) -> None:
    run_id = make_run(store, {**here, **OTHER})
    rc, doc, _ = doctor("--against", run_id, "--tracking-uri", store, "--json", cwd=tmp_path)
    diffs = {d["key"]: d for d in doc["differences"]}
    changed = {k for k, v in OTHER.items() if here[k] != v}
    assert set(diffs) == changed and doc["identical"] is False
    for k in changed:
        assert (diffs[k]["run"], diffs[k]["here"]) == (OTHER[k], here[k])
        assert diffs[k]["major"] is (k in MAJOR)
    # this machine has no NVIDIA GPU: the run's CUDA build cannot use one here
    assert here["env.gpu_count"] == "0"
    assert doc["verdict"]["ok"] is False and "no NVIDIA GPU here" in doc["verdict"]["reasons"][0]
    assert rc == 1
    rc, _, text = doctor("--against", run_id, "--tracking-uri", store, cwd=tmp_path)
    assert rc == 1 and "does not fit" in text and "535.104.05" in text and "A100" in text


def test_replay_of_a_machine_whose_driver_is_too_old(store: str, here: dict[str, str],
                                                     tmp_path: Path) -> None:
    """The reported GKE node, replayed, against a run that used the same torch 2.1.0+cu121 build on a
    newer driver: the knowledge base says what the real error in that report said."""
    cap = load_capture(GKE_470)
    assert any("driver on your system is too old" in log.text for log in cap.logs)
    run_id = make_run(store, {**here, **OTHER})
    rc, doc, _ = doctor("--replay", str(GKE_470), "--against", run_id, "--tracking-uri", store, "--json",
                        cwd=tmp_path)
    assert rc == 1
    diffs = {d["key"]: d for d in doc["differences"]}
    assert (diffs["env.driver"]["run"], diffs["env.driver"]["here"]) == ("535.104.05", "470.182.03")
    assert (diffs["env.cuda_driver"]["run"], diffs["env.cuda_driver"]["here"]) == ("12.2", "11.4")
    assert "env.torch" not in diffs  # the same wheel on both machines
    assert str(GKE_470) in doc["here"]
    v = doc["verdict"]
    expected = load_kb().driver_supports_cuda("470.182.03", "12.1")
    assert expected.ok is False and v["ok"] is False
    assert expected.reason in v["reasons"]
    assert expected.source is not None and expected.source.url in [s["url"] for s in v["sources"]]


@pytest.fixture(scope="module")
def host_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """This machine's own capture, made by ``gpuops doctor --capture``."""
    tmp = tmp_path_factory.mktemp("host")
    r = run_cli("doctor", "--capture", "host.yaml", "--quiet", cwd=tmp, timeout=120)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    doc = yaml.safe_load((tmp / "host.yaml").read_text())
    assert doc["kind"] == "live" and "stated" not in doc
    return doc


def presented(host: dict[str, Any], tmp_path: Path, stated: dict[str, Any]) -> Path:
    """This machine's capture with a driver and GPU stated in it (doctor takes stated facts where
    nothing was observed: this machine has no NVIDIA driver or GPU to observe)."""
    doc = {**host, "stated": stated}
    out = tmp_path / "presented.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@pytest.mark.parametrize(("gpu", "cc", "fits"),
                         [("NVIDIA A100-SXM4-40GB", "8.0", True), ("Tesla K80", "3.7", False)])
def test_a_presented_machine_with_a_given_driver(store: str, here: dict[str, str],
                                                 host_capture: dict[str, Any], tmp_path: Path, gpu: str,
                                                 cc: str, fits: bool) -> None:
    """A run made with torch 2.13.0+cu126 on a CUDA 12.6 driver, against this machine presented with
    driver 535.104.05 (CUDA 12.2) and one GPU: the driver runs the build through minor-version
    compatibility; the GPU fits when the build carries kernels for its compute capability."""
    kb = load_kb()
    assert kb.gpu_cc(gpu) == cc
    floor = kb.min_driver_for_cuda("12.6")  # the driver CUDA 12.6 ships with
    assert floor is not None
    run_driver = floor.full_feature_min
    run_tags = {**here, "env.driver": run_driver, "env.cuda_driver": "12.6",
                "env.gpu": "NVIDIA H100 80GB HBM3", "env.gpu_cc": "9.0", "env.gpu_count": "1",
                "env.torch": "2.13.0+cu126", "env.torch_cuda": "12.6"}
    run_id = make_run(store, run_tags)
    cap = presented(host_capture, tmp_path, {"driver_version": "535.104.05", "gpu_present": True,
                                             "gpus": [{"name": gpu, "cc": cc, "count": 1}]})
    rc, doc, _ = doctor("--replay", str(cap), "--against", run_id, "--tracking-uri", store, "--json",
                        cwd=tmp_path)
    diffs = {d["key"]: (d["run"], d["here"]) for d in doc["differences"]}
    assert diffs["env.driver"] == (run_driver, "535.104.05")
    assert diffs["env.gpu"] == ("NVIDIA H100 80GB HBM3", gpu) and diffs["env.gpu_cc"] == ("9.0", cc)
    assert diffs["env.torch"] == ("2.13.0+cu126", here["env.torch"])
    assert "env.python" not in diffs and "env.kernel" not in diffs  # the same machine otherwise
    v = doc["verdict"]
    driver = kb.driver_supports_cuda("535.104.05", "12.6")
    assert driver.ok is True and driver.reason in v["reasons"]
    archs = kb.torch_arch_list("2.13.0", "12.6")
    assert archs is not None and kb.build_runs_on(cc, archs.sms, archs.ptx) is fits
    assert v["ok"] is fits and rc == (0 if fits else 1)
    sm = f"sm_{cc.replace('.', '')}"
    assert any(r.startswith(sm) and ("not among" in r) is (not fits) for r in v["reasons"])
    assert archs.source.url in [s["url"] for s in v["sources"]]


def test_compare_environment_keys_the_run_lacks(here: dict[str, str]) -> None:
    """A run from an older gpuops, without some env tags: they count as differences."""
    old = {k: v for k, v in here.items() if k not in ("env.cudnn", "env.image_digest")}
    rep = compare_environment("0" * 32, old, here)
    assert [d.key for d in rep.differences] == ["env.cudnn", "env.image_digest"]
    assert all(d.run is None and d.major for d in rep.differences)
    assert rep.to_dict()["identical"] is False
    # a run with a CUDA build but no recorded torch version: the verdict cannot tell
    rep = compare_environment("0" * 32, {**here, "env.torch": "unknown"}, here)
    assert rep.verdict.ok is None and rep.verdict.build is None and rep.exit_code == 0


def test_usage_errors(store: str, tmp_path: Path) -> None:
    rc, doc, _ = doctor("--against", "abcd1234", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--json",
                        cwd=tmp_path)
    assert rc == 2 and "no MLflow store" in doc["error"]["message"]
    assert not (tmp_path / "none.db").exists()  # no empty store made on the way
    c = client(store)
    exp = c.get_experiment_by_name("drift") or c.get_experiment(c.create_experiment("drift"))
    bare = c.create_run(exp.experiment_id).info.run_id  # not made by gpuops run: no env tags
    rc, doc, _ = doctor("--against", bare, "--tracking-uri", store, "--json", cwd=tmp_path)
    assert rc == 2 and "no env.* tags" in doc["error"]["message"]
    rc, doc, _ = doctor("--against", "f" * 32, "--tracking-uri", store, "--json", cwd=tmp_path)
    assert rc == 2 and "no MLflow run" in doc["error"]["message"]
    rc, _, text = doctor("--tracking-uri", store, cwd=tmp_path)
    assert rc == 2 and "--tracking-uri only goes with --against" in text
    rc, _, text = doctor("--against", bare, "--fix", cwd=tmp_path)
    assert rc == 2 and "does not go with --fix" in text


def test_doctor_imports_mlflow_only_for_against() -> None:
    code = ("import sys; from gpuops.cli.commands.doctor import main; "
            f"rc = main(['--replay', {str(FIXTURES / 'devbox.capture.yaml')!r}, '--quiet']); "
            "print('mlflow' in sys.modules, 'gpuops.doctor.against' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.split()[-2:] == ["False", "False"], r.stdout + r.stderr
