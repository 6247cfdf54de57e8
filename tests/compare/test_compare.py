"""`gpuops compare` against a real MLflow store (sqlite) and a real MLflow server."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuops.cli.main import app
from gpuops.errors import UsageError
from gpuops.tracking.compare import (
    COMPARE_EXPERIMENT,
    COMPARE_TAG,
    compare_runs,
    differing,
    plot_comparison,
    summarize_history,
)
from tests.compare.store import EXPERIMENT, LoggedRun, Store, make_store


@pytest.fixture
def store(sr_store: Store) -> Store:
    return sr_store


def _cli(*args: str, cwd: Path | None = None, monkeypatch: pytest.MonkeyPatch | None = None):
    if cwd is not None and monkeypatch is not None:
        monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "220", "NO_COLOR": "1"})


def _expected_diff(runs: list[LoggedRun], values) -> dict[str, dict[str, str | None]]:
    keys = set().union(*(values(r) for r in runs))
    out = {}
    for k in keys:
        per_run = {r.run_id: values(r).get(k) for r in runs}
        if len(set(per_run.values())) > 1:
            out[k] = per_run
    return out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- pure parts ----------------------------------------------------------------------------------

def test_summarize_history_final_is_last_step_and_best_follows_direction() -> None:
    psnr = [(0, 30.0), (200, 31.5), (100, 31.0), (300, 31.2), (300, 31.3)]  # out of order, repeated step
    s = summarize_history("val/psnr", psnr)
    assert s is not None
    assert (s.final_step, s.final) == (300, 31.3)  # the later of two logs at the same step
    assert (s.best_step, s.best) == (200, 31.5)
    loss = [(10, 0.5), (20, 0.2), (30, float("nan")), (40, 0.3)]
    s = summarize_history("train/loss", loss)
    assert s is not None
    assert (s.best_step, s.best, s.final_step, s.final, s.steps) == (20, 0.2, 40, 0.3, 3)
    assert summarize_history("val/psnr", [(1, float("nan"))]) is None


def test_differing_treats_a_missing_key_as_a_difference() -> None:
    diff, same = differing({"a": {"x": "1", "y": "2"}, "b": {"x": "1", "y": "3", "z": "0"}})
    assert same == {"x": "1"}
    assert diff == {"y": {"a": "2", "b": "3"}, "z": {"a": None, "b": "0"}}


# -- against the store ---------------------------------------------------------------------------

def test_compare_finds_exactly_the_params_that_differ(store: Store) -> None:
    a, b = store.runs["srcnn-955-adam"], store.runs["srcnn-333-sgd"]
    c, _ = compare_runs(store.uri, run_ids=[a.run_id, b.run_id])
    assert c.run_ids == [a.run_id, b.run_id]
    expected = _expected_diff([a, b], lambda r: r.params)
    assert c.params == expected
    assert set(c.params) == {"model.layers", "train.optimizer", "train.lr", "train.momentum",
                             "model.batch_norm"}
    assert c.params["model.batch_norm"] == {a.run_id: None, b.run_id: "true"}
    assert c.params_same == len(set(a.params) & set(b.params)) - 3
    # Same machine: no environment difference, and the shared fingerprint is reported as such.
    assert c.env == {}
    assert c.env_same == a.env
    assert set(c.tags) == {"git.commit", "spec.hash"}


def test_compare_finds_exactly_the_environment_that_differs(store: Store) -> None:
    a, g = store.runs["srcnn-955-adam"], store.runs["srcnn-955-adam-gpu"]
    c, _ = compare_runs(store.uri, run_ids=[a.run_id, g.run_id])
    assert c.params == {}  # the same spec
    assert c.params_same == len(a.params)
    assert c.env == _expected_diff([a, g], lambda r: r.env)
    assert c.env["env.gpu"] == {a.run_id: None, g.run_id: "GeForce RTX 2080 Ti"}
    assert c.env["env.torch"][g.run_id] is None  # the report does not show it: unknown, not invented
    assert c.env_same == {}
    assert c.tags == {}


def test_compare_metrics_final_and_best(store: Store) -> None:
    runs = [store.runs[n] for n in ("srcnn-955-adam", "srcnn-333-sgd", "srcnn-955-adam-gpu")]
    c, histories = compare_runs(store.uri, run_ids=[r.run_id for r in runs])
    assert c.metrics == ["val/psnr", "val/psnr_bicubic", "val/ssim", "val/ssim_bicubic", "train/loss",
                         "train/throughput"]
    for logged, summary in zip(runs, c.runs, strict=True):
        assert summary.run_name == logged.name and summary.experiment == EXPERIMENT
        assert summary.status == "FINISHED"
        for metric, points in logged.metrics.items():
            s = summary.metrics[metric]
            last_step, last_value = max(points, key=lambda p: p[0])
            assert (s.final_step, s.final) == (last_step, pytest.approx(last_value))
            values = [v for _, v in points]
            best = min(values) if metric.endswith("loss") else max(values)
            assert s.best == pytest.approx(best)
            assert s.steps == len(points)
            assert histories[logged.run_id][metric] == [(st, pytest.approx(v)) for st, v in points]
    sgd = c.runs[1].metrics["val/psnr"]
    assert sgd.best > sgd.final and sgd.best_step < sgd.final_step  # the dip at the end


def test_latest_runs_of_an_experiment_or_of_the_store(store: Store) -> None:
    c, _ = compare_runs(store.uri, experiment=EXPERIMENT, latest=2)
    assert [r.run_name for r in c.runs] == ["srcnn-955-adam-gpu", "srcnn-333-sgd"]  # newest first
    c, _ = compare_runs(store.uri, latest=2)  # across experiments
    assert [r.run_name for r in c.runs] == ["fsrcnn", "srcnn-955-adam-gpu"]
    assert c.runs[0].experiment == "fsrcnn_y"
    with pytest.raises(UsageError, match="no experiment 'nope'"):
        compare_runs(store.uri, experiment="nope")
    with pytest.raises(UsageError, match="not both"):
        compare_runs(store.uri, run_ids=[c.runs[0].run_id], experiment=EXPERIMENT)
    with pytest.raises(UsageError, match="no run"):
        compare_runs(store.uri, run_ids=["0" * 32])
    with pytest.raises(UsageError, match="no MLflow store"):
        compare_runs(f"sqlite:///{store.root / 'missing' / 'mlflow.db'}")
    assert not (store.root / "missing").exists()


def test_plot_is_a_png_with_the_curves(store: Store, tmp_path: Path) -> None:
    from PIL import Image

    ids = [store.runs[n].run_id for n in ("srcnn-955-adam", "srcnn-333-sgd")]
    c, histories = compare_runs(store.uri, run_ids=ids)
    path = plot_comparison(c, histories, tmp_path / "sub" / "cmp.png")
    assert _png_size(path) == (1500, 460)
    with Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB")
    # Not a blank canvas: the lines and bars in the run colours (matplotlib's C0 and C1) are drawn.
    colours = {rgb.getpixel((x, y)) for x in range(0, rgb.width, 2) for y in range(0, rgb.height, 2)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours
    assert path.stat().st_size > 20_000


# -- the command ---------------------------------------------------------------------------------

def test_cli_json_logs_the_comparison_run(store: Store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    a, b = store.runs["srcnn-955-adam"], store.runs["srcnn-955-adam-gpu"]
    out = tmp_path / "cmp.png"
    res = _cli("compare", a.run_id, b.run_id, "--tracking-uri", store.uri, "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    direct, _ = compare_runs(store.uri, run_ids=[a.run_id, b.run_id])
    assert doc["env"] == direct.model_dump(mode="json")["env"]
    assert doc["params"] == {} and doc["plot"] == str(out)
    assert [r["run_id"] for r in doc["runs"]] == [a.run_id, b.run_id]
    assert math.isclose(doc["runs"][1]["metrics"]["val/psnr"]["final"], b.metrics["val/psnr"][-1][1])
    assert _png_size(out) == (1500, 460)

    client = MlflowClient(tracking_uri=store.uri)
    logged = client.get_run(doc["logged_run_id"])
    assert client.get_experiment(logged.info.experiment_id).name == COMPARE_EXPERIMENT
    assert logged.data.tags[COMPARE_TAG] == f"{a.run_id},{b.run_id}"
    assert logged.info.status == "FINISHED"
    names = sorted(f.path for f in client.list_artifacts(logged.info.run_id, "compare"))
    assert names == ["compare/comparison.json", "compare/comparison.png"]
    local = Path(client.download_artifacts(logged.info.run_id, "compare/comparison.png", str(tmp_path)))
    assert local.read_bytes() == out.read_bytes()
    # The compare runs are not themselves taken as runs to compare.
    c, _ = compare_runs(store.uri, latest=10)
    assert doc["logged_run_id"] not in c.run_ids


def test_cli_tables_show_only_what_differs(store: Store, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = store.runs["srcnn-955-adam"], store.runs["srcnn-333-sgd"]
    res = _cli("compare", a.run_id, b.run_id, "--tracking-uri", store.uri, "--no-log", "--no-color",
               cwd=tmp_path, monkeypatch=monkeypatch)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert re.search(rf"Params that differ \({len(a.params) - 3} identical\)", text)
    for key in ("model.layers", "train.optimizer", "train.momentum", "model.batch_norm", "git.commit"):
        assert key in text
    for key in ("data.scale", "train.batch_size", "model.activation"):
        assert key not in text  # identical params are counted, not listed
    assert "Environment: the same env.* tags in every run." in text
    assert "32x3x3_32x3x3_1x3x3" in text and "64x9x9_32x5x5_1x5x5" in text
    # The default PNG lands under gpuops-out/compare/ of the working directory.
    pngs = list((tmp_path / "gpuops-out" / "compare").glob("*.png"))
    assert len(pngs) == 1 and f"Plot: {pngs[0]}" in text.replace("\n", "")


def test_cli_errors_exit_2(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _cli("compare", "--json", cwd=tmp_path, monkeypatch=monkeypatch)  # no mlflow.db here
    assert res.exit_code == 2
    assert "no MLflow store" in res.stderr
    assert json.loads(res.stdout)["error"]["exit_code"] == 2  # --json: the error as a document too
    assert not (tmp_path / "mlflow.db").exists()
    res = _cli("compare", "-e", "nope", "--tracking-uri", store.uri)
    assert res.exit_code == 2 and "srcnn_y" in res.stderr  # the hint lists what is there


# -- through a real server -----------------------------------------------------------------------

def test_compare_through_a_tracking_server(mlflow_server, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    srv = make_store(tmp_path / "unused", uri=mlflow_server.url)  # runs logged over HTTP
    a, g = srv.runs["srcnn-955-adam"], srv.runs["srcnn-955-adam-gpu"]
    res = _cli("compare", a.run_id, g.run_id, "--tracking-uri", mlflow_server.url,
               "--out", str(tmp_path / "c.png"), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["env"]) == set(_expected_diff([a, g], lambda r: r.env))
    client = MlflowClient(tracking_uri=mlflow_server.url)
    arts = [f.path for f in client.list_artifacts(doc["logged_run_id"], "compare")]
    assert "compare/comparison.png" in arts
    # Uploaded through the server into its artifacts folder.
    assert list(mlflow_server.artifacts_dir.rglob("comparison.png"))
