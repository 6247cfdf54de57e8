"""``gpuops reproduce RUN_ID`` end to end: a real run from a real git checkout, run again by the CLI
into the same sqlite store, on this CPU; then a run whose tags say another machine, and a dirty tree."""

from __future__ import annotations

import json

from gpuops.tracking.reproduce import DIFF_ARTIFACT, REPRODUCES_TAG
from tests.reproduce.test_gitinfo import git
from tests.reproduce.test_reproduce import OVERRIDE, clone, project  # noqa: F401 (the module fixture)
from tests.run.conftest import client, run_cli


def test_reproduce_gives_bit_identical_metrics_and_no_environment_diff(project) -> None:  # noqa: F811
    r = run_cli("reproduce", project["run_id"][:8], "--tracking-uri", project["uri"], "--json",
                cwd=project["repo"])
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    cmp = doc["comparison"]
    assert doc["original"] == project["run_id"] and cmp["bit_identical"] and cmp["env"] == []
    results = [m for m in cmp["metrics"] if not m["timing"]]
    assert {"val/psnr", "train/loss"} <= {m["name"] for m in results} and all(m["identical"] for m in results)
    new = client(project["uri"]).get_run(doc["run"]["run_id"])
    assert new.data.tags[REPRODUCES_TAG] == project["run_id"]
    assert new.data.params["train.lr"] == OVERRIDE.partition("=")[2]  # the original's --set, again
    assert new.data.tags["git.commit"] == project["commit"]


def test_reproduce_shows_what_differs_from_the_machine_that_made_the_run(project) -> None:  # noqa: F811
    c = client(project["uri"])
    r = run_cli("run", str(project["spec"]), "--tracking-uri", project["uri"], "--json", cwd=project["repo"])
    assert r.returncode == 0, r.stderr[-2000:]
    other = json.loads(r.stdout)["run_id"]
    c.set_tag(other, "env.driver", "535.104.05")  # as the run made on another box would say
    c.set_tag(other, "env.gpu", "NVIDIA A100-SXM4-40GB")
    r = run_cli("reproduce", other, "--tracking-uri", project["uri"], "--json", cwd=project["repo"])
    assert r.returncode == 0, r.stderr[-3000:]
    env = {e["key"]: e for e in json.loads(r.stdout)["comparison"]["env"]}
    assert set(env) >= {"env.driver", "env.gpu"}
    assert env["env.driver"]["original"] == "535.104.05"
    assert env["env.gpu"]["original"].startswith("NVIDIA A100")
    r = run_cli("reproduce", other, "--tracking-uri", project["uri"], cwd=project["repo"])
    assert "env.driver" in r.stdout and "535.104.05" in r.stdout  # the table says it too


def test_a_dirty_tree_is_refused_unless_allowed_and_its_run_carries_the_diff(project) -> None:  # noqa: F811
    repo = clone(project, "dirty")
    (repo / "README.md").write_text("a project trained with gpuops, changed\n")
    r = run_cli("reproduce", project["run_id"], "--tracking-uri", project["uri"], cwd=repo)
    assert r.returncode == 2 and "uncommitted changes" in r.stderr and "--allow-dirty" in r.stderr
    # a run made from this dirty tree keeps its diff, so that it can be made again
    r = run_cli("run", str(repo / project["spec"].name), "--tracking-uri", project["uri"], "--json", cwd=repo)
    assert r.returncode == 0, r.stderr[-2000:]
    dirty_run = json.loads(r.stdout)["run_id"]
    c = client(project["uri"])
    assert c.get_run(dirty_run).data.tags["git.dirty"] == "true"
    assert DIFF_ARTIFACT in {a.path for a in c.list_artifacts(dirty_run)}
    git(repo, "checkout", "--", "README.md")
    r = run_cli("reproduce", dirty_run, "--tracking-uri", project["uri"], "--allow-dirty", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "uncommitted changes" in r.stderr and DIFF_ARTIFACT in r.stderr  # warned, with where the diff is
