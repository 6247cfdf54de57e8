"""The reproduce library on real runs: ``gpuops run`` in a subprocess into a real sqlite MLflow store,
from a real git checkout (so that ``git.commit`` and ``git.dirty`` are real), on this CPU."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpuops.errors import UsageError
from gpuops.tracking.gitinfo import run_diff
from gpuops.tracking.reproduce import (
    DIFF_ARTIFACT,
    check_tree,
    compare_runs,
    is_timing_metric,
    load_original,
)
from tests.reproduce.test_gitinfo import git
from tests.run.conftest import DATA, client, run_cli, tiny_sr_spec

OVERRIDE = "train.lr=0.002"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A git checkout holding the tiny spec, a sqlite store, and one real run made from it (with a
    ``--set`` override, which a reproduction must apply again)."""
    assert (DATA / "T91").is_dir() and (DATA / "Set5").is_dir(), f"{DATA}: T91 and Set5 are needed"
    tmp = tmp_path_factory.mktemp("reproduce")
    repo = tmp / "project"
    repo.mkdir()
    spec = tiny_sr_spec(repo)
    (repo / "README.md").write_text("a project trained with gpuops\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the experiment")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client(uri).search_experiments()  # the store's schema, made once before the runs use it
    r = run_cli("run", str(spec), "--tracking-uri", uri, "--set", OVERRIDE, "--json", cwd=repo)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    return {"uri": uri, "repo": repo, "spec": spec, "run_id": doc["run_id"], "doc": doc,
            "commit": git(repo, "rev-parse", "HEAD").strip(), "tmp": tmp}


def clone(project: dict[str, Any], name: str) -> Path:
    """A fresh clone of the project at the same commit, to change without touching the original."""
    dst = project["tmp"] / name
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["git", "clone", "-q", str(project["repo"]), str(dst)], check=True, timeout=60,
                   capture_output=True)
    return dst


def test_load_original(project: dict[str, Any]) -> None:
    o = load_original(client(project["uri"]), project["run_id"][:10])  # a unique prefix will do
    assert o.run_id == project["run_id"]
    assert o.status == "FINISHED"
    assert o.target == "local"
    assert o.git_commit == project["commit"] and o.git_dirty is False
    assert o.image_digest is None and o.image is None  # not a container run
    assert o.has_diff is False
    assert o.experiment_name == "tiny_sr"
    assert o.seed == 3
    assert o.overrides == [OVERRIDE]
    assert o.resolved.spec.train.lr == 0.002
    assert Path(o.resolved.source) == project["spec"]
    # the tags and final metrics are the run's own, as the run summary reported them
    assert o.tags["git.commit"] == project["commit"]
    assert o.tags["env.python"] and o.tags["env.torch"].endswith("+cpu")
    reported = project["doc"]["metrics"]
    assert reported and all(o.metrics[k] == v for k, v in reported.items())


def test_load_original_refuses_a_run_not_made_by_gpuops(project: dict[str, Any]) -> None:
    c = client(project["uri"])
    exp = c.get_experiment_by_name("tiny_sr")
    other = c.create_run(exp.experiment_id, tags={"mlflow.source.name": "someone_elses_script.py"})
    c.log_metric(other.info.run_id, "val/psnr", 20.0)
    c.set_terminated(other.info.run_id)
    with pytest.raises(UsageError, match="not started by gpuops run") as e:
        load_original(c, other.info.run_id)
    assert e.value.exit_code == 2
    with pytest.raises(UsageError, match="no MLflow run"):
        load_original(c, "0" * 32)


def test_check_tree_at_the_run_commit(project: dict[str, Any]) -> None:
    o = load_original(client(project["uri"]), project["run_id"])
    here = clone(project, "same")
    assert check_tree(o, here, allow_dirty=False) == []
    (here / "sub").mkdir()
    assert check_tree(o, here / "sub", allow_dirty=False) == []  # from a folder inside the checkout


def test_check_tree_refuses_a_dirty_tree_unless_allowed(project: dict[str, Any]) -> None:
    o = load_original(client(project["uri"]), project["run_id"])
    here = clone(project, "dirty")
    (here / "README.md").write_text("changed after the run\n")
    with pytest.raises(UsageError, match="uncommitted changes") as e:
        check_tree(o, here, allow_dirty=False)
    assert e.value.exit_code == 2 and "--allow-dirty" in (e.value.hint or "")
    warnings = check_tree(o, here, allow_dirty=True)
    assert len(warnings) == 1 and "uncommitted changes" in warnings[0] and "--allow-dirty" in warnings[0]
    # an untracked file is not a change to the code that ran
    (here / "README.md").write_text("a project trained with gpuops\n")
    (here / "scratch.txt").write_text("notes\n")
    assert check_tree(o, here, allow_dirty=False) == []


def test_check_tree_refuses_another_commit_unless_allowed(project: dict[str, Any]) -> None:
    o = load_original(client(project["uri"]), project["run_id"])
    here = clone(project, "later")
    (here / "README.md").write_text("a later commit\n")
    git(here, "commit", "-q", "-am", "later")
    head = git(here, "rev-parse", "HEAD").strip()
    with pytest.raises(UsageError) as e:
        check_tree(o, here, allow_dirty=False)
    assert head[:12] in e.value.message and project["commit"][:12] in e.value.message
    assert project["commit"][:12] in (e.value.hint or "")
    warnings = check_tree(o, here, allow_dirty=True)
    assert any(head[:12] in w for w in warnings)
    # not a checkout at all
    plain = project["tmp"] / "plain"
    plain.mkdir(exist_ok=True)
    with pytest.raises(UsageError, match="not in a git checkout"):
        check_tree(o, plain, allow_dirty=False)


def test_check_tree_warns_when_the_run_has_no_commit(project: dict[str, Any]) -> None:
    o = load_original(client(project["uri"]), project["run_id"])
    unknown = dataclasses.replace(o, git_commit="unknown", git_dirty=None)
    plain = project["tmp"] / "plain"
    plain.mkdir(exist_ok=True)
    warnings = check_tree(unknown, plain, allow_dirty=False)
    assert len(warnings) == 1 and "no git commit" in warnings[0]


def test_a_second_run_is_bit_identical_and_env_drift_shows(project: dict[str, Any]) -> None:
    """The same resolved spec again (its source and overrides, as reproduce runs it), from a clone at
    the same commit: same final metrics to the last bit on this CPU, no environment difference.
    Then the new run's tags are changed as if it had run with another driver and GPU."""
    c = client(project["uri"])
    o = load_original(c, project["run_id"])
    here = clone(project, "again")
    assert check_tree(o, here, allow_dirty=False) == []
    args = ["run", str(here / "tiny_sr.yaml")]
    for item in o.overrides:
        args += ["--set", item]
    r = run_cli(*args, "--tracking-uri", project["uri"], "--json", cwd=here)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    new_id = json.loads(r.stdout)["run_id"]
    assert new_id != o.run_id
    assert c.get_run(new_id).data.tags["spec.hash"] == o.tags["spec.hash"]

    rep = compare_runs(c, o.run_id, new_id)
    assert rep.original_id == o.run_id and rep.new_id == new_id
    names = {m.name for m in rep.metrics}
    assert {"train/loss", "val/psnr", "val/ssim", "train/throughput"} <= names
    assert rep.only_original == [] and rep.only_new == []
    results = [m for m in rep.metrics if not m.timing]
    assert results and all(m.identical and m.abs_diff == 0.0 and m.original == m.new for m in results)
    assert rep.bit_identical is True
    assert [m.name for m in rep.metrics if m.timing] == ["train/throughput"]
    assert rep.env == [] and rep.env_identical
    doc = rep.to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["bit_identical"] is True and doc["env"] == []

    # the new run as if made on a GPU machine: another driver and GPU, one tag it alone has
    c.set_tag(new_id, "env.driver", "535.104.05")
    c.set_tag(new_id, "env.gpu", "NVIDIA A100-SXM4-40GB")
    c.set_tag(new_id, "env.gpu_cc", "8.0")
    c.set_tag(new_id, "env.image", "ghcr.io/example/train:1")
    rep = compare_runs(c, o.run_id, new_id)
    by_key = {d.key: d for d in rep.env}
    assert set(by_key) == {"env.driver", "env.gpu", "env.gpu_cc", "env.image"}
    assert (by_key["env.driver"].original, by_key["env.driver"].new) == (o.tags["env.driver"], "535.104.05")
    assert by_key["env.gpu"].original == o.tags["env.gpu"] == "none"
    assert by_key["env.image"].original is None
    assert not rep.env_identical and rep.bit_identical  # the metrics did not change
    assert {d["key"] for d in rep.to_dict()["env"]} == set(by_key)


def test_compare_runs_with_different_results(project: dict[str, Any]) -> None:
    """A run with another seed is not bit-identical; a metric only one run has is listed."""
    c = client(project["uri"])
    o = load_original(c, project["run_id"])
    here = clone(project, "seed")
    r = run_cli("run", str(here / "tiny_sr.yaml"), "--set", OVERRIDE, "--set", "seed=4",
                "--tracking-uri", project["uri"], "--json", cwd=here)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    new_id = json.loads(r.stdout)["run_id"]
    c.log_metric(new_id, "val/extra", 1.0)
    rep = compare_runs(c, o.run_id, new_id)
    assert rep.bit_identical is False
    loss = next(m for m in rep.metrics if m.name == "train/loss")
    assert not loss.identical and loss.abs_diff == abs(loss.original - loss.new) > 0
    assert rep.only_new == ["val/extra"] and rep.only_original == []
    assert "val/extra" not in {m.name for m in rep.metrics}


def test_a_dirty_tree_run_and_its_diff(project: dict[str, Any]) -> None:
    """A run made from a checkout with a changed tracked file says so; with its ``git.diff``
    artifact (what ``run_diff`` gives for that tree, as the run path logs it) it says where the
    changes are."""
    c = client(project["uri"])
    here = clone(project, "dirty_run")
    (here / "README.md").write_text("an uncommitted change\n")
    r = run_cli("run", str(here / "tiny_sr.yaml"), "--tracking-uri", project["uri"], "--json", cwd=here)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run_id = json.loads(r.stdout)["run_id"]
    o = load_original(c, run_id)
    assert o.git_dirty is True and o.git_commit == project["commit"]
    if not o.has_diff:  # until the run path logs it: the diff it is to log (run_diff of the spec)
        diff = run_diff(here / "tiny_sr.yaml")
        assert diff is not None and "+an uncommitted change" in diff
        c.log_text(run_id, diff, DIFF_ARTIFACT)
        o = load_original(c, run_id)
    assert o.has_diff
    stored = Path(c.download_artifacts(run_id, DIFF_ARTIFACT, str(project["tmp"])))
    assert "+an uncommitted change" in stored.read_text()
    # the tree is still dirty in the same way: refused without --allow-dirty, warned with it
    with pytest.raises(UsageError, match="uncommitted changes"):
        check_tree(o, here, allow_dirty=False)
    warnings = check_tree(o, here, allow_dirty=True)
    assert any(DIFF_ARTIFACT in w and "git apply" in w for w in warnings)


def test_timing_metrics() -> None:
    assert is_timing_metric("train/throughput") and is_timing_metric("train/seconds")
    assert is_timing_metric("eval/time") and is_timing_metric("sys/samples_per_s")
    for name in ("train/loss", "val/psnr", "val/ssim_bicubic_full", "val/accuracy", "val/estimate"):
        assert not is_timing_metric(name), name
