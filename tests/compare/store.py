"""A real MLflow store holding SRCNN-like runs, logged with the MLflow client the way `gpuops run` does.

The runs carry the fixed names of helper "run" (metrics ``train/loss``, ``val/psnr``, ... logged
with step = iteration; params = the flattened spec; tags ``env.*``, ``git.*``, ``spec.hash``,
``gpuops.target``). Environment fingerprints are real: this machine's (taken now, the same
minimal fingerprint ``gpuops.tracking.runs`` falls back to, plus the installed torch), and a
GPU machine from a public report (``fixtures/env_rtx2080ti_real16.json``, its source inside).

Metric curves are deterministic shapes (rising PSNR, decaying noisy loss), one of them with a
late dip so that its best and final values differ. The tests compute what they expect from the
values logged here, never from the code under test.
"""

from __future__ import annotations

import json
import math
import platform
import random
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENT = "srcnn_y"
OTHER_EXPERIMENT = "fsrcnn_y"

BASE_PARAMS = {
    "name": EXPERIMENT,
    "task": "sr",
    "data.train": "T91",
    "data.eval": "Set5",
    "data.scale": "3",
    "data.patch": "33",
    "data.stride": "14",
    "model.arch": "srcnn",
    "model.layers": "64x9x9_32x5x5_1x5x5",
    "model.activation": "relu",
    "model.padding": "valid",
    "model.color": "y",
    "train.iterations": "1000",
    "train.batch_size": "128",
    "train.optimizer": "adam",
    "train.lr": "0.0001",
    "train.weight_decay": "0.0",
    "eval.every": "100",
    "seed": "0",
    "resources.device": "auto",
}


def local_env_tags() -> dict[str, str]:
    """This machine's minimal environment fingerprint, taken now."""
    return {
        "env.python": platform.python_version(),
        "env.os": platform.platform(),
        "env.torch": version("torch"),
        "env.image_digest": "unknown",
    }


def gpu_env_tags() -> dict[str, str]:
    """The fingerprint of a real GPU machine from a public report (see the fixture's source)."""
    doc = json.loads((HERE / "fixtures" / "env_rtx2080ti_real16.json").read_text(encoding="utf-8"))
    return dict(doc["tags"])


@dataclass
class LoggedRun:
    run_id: str
    name: str
    experiment: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, list[tuple[int, float]]]  # metric -> [(step, value)] as logged, in order

    @property
    def env(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if k.startswith("env.")}


@dataclass
class Store:
    root: Path
    uri: str
    runs: dict[str, LoggedRun] = field(default_factory=dict)  # by run name
    experiment_ids: dict[str, str] = field(default_factory=dict)


def _curves(seed: int, gain: float, dip_at: int | None, iterations: int = 1000,
            every: int = 100) -> dict[str, list[tuple[int, float]]]:
    rng = random.Random(seed)
    bicubic_psnr, bicubic_ssim = 30.39, 0.8682  # Set5 x3 bicubic (Y channel)
    psnr, ssim, loss, thr = [], [], [], []
    for step in range(0, iterations + 1, every):
        p = bicubic_psnr + gain * (1 - math.exp(-step / 300))
        if dip_at is not None and step >= dip_at:
            p -= 0.15 * (step - dip_at + every) / every
        psnr.append((step, round(p, 4)))
        ssim.append((step, round(bicubic_ssim + 0.02 * (p - bicubic_psnr) / max(gain, 1e-9), 5)))
    for step in range(10, iterations + 1, 10):
        base = 0.004 + 0.02 * math.exp(-step / 200)
        loss.append((step, round(base * (1 + 0.1 * (rng.random() - 0.5)), 6)))
        thr.append((step, round(900 + 40 * rng.random(), 1)))
    return {
        "val/psnr": psnr,
        "val/ssim": ssim,
        "val/psnr_bicubic": [(0, bicubic_psnr)],
        "val/ssim_bicubic": [(0, bicubic_ssim)],
        "train/loss": loss,
        "train/throughput": thr,
    }


def _log(client, exp_id: str, name: str, experiment: str, params: dict[str, str], tags: dict[str, str],
         metrics: dict[str, list[tuple[int, float]]], start_ms: int) -> LoggedRun:
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, start_time=start_ms, tags=tags, run_name=name)
    rid = run.info.run_id
    entries = [Metric(key, value, start_ms + step, step)
               for key, pts in metrics.items() for step, value in pts]
    client.log_batch(rid, params=[Param(k, v) for k, v in params.items()])
    for i in range(0, len(entries), 900):  # log_batch takes at most 1000 metrics per call
        client.log_batch(rid, metrics=entries[i:i + 900])
    client.set_terminated(rid, "FINISHED", end_time=start_ms + 60_000)
    return LoggedRun(rid, name, experiment, dict(params), dict(tags), metrics)


def make_store(root: Path, uri: str | None = None) -> Store:
    """Four runs: three of ``srcnn_y`` and one of ``fsrcnn_y``, oldest first.

    - ``srcnn-955-adam``: the paper's SRCNN 9-5-5, Adam, on this machine;
    - ``srcnn-333-sgd``: a 3-3-3 SRCNN with SGD+momentum and a batch-norm flag (a param the
      others lack), same machine, another git commit; its PSNR dips at the end (best != final);
    - ``srcnn-955-adam-gpu``: the same spec as the first, on the GPU machine of the fixture;
    - ``fsrcnn``: another experiment, the latest run of the store.
    """
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    uri = uri or f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    store = Store(root=root, uri=uri)
    for exp in (EXPERIMENT, OTHER_EXPERIMENT):
        artifact_location = (root / "mlruns" / exp).as_uri() if uri.startswith("sqlite:") else None
        # A shared tracking server may already hold this experiment (other tests log smoke runs
        # of srcnn_y to it): reuse it; the tests address runs by id.
        existing = client.get_experiment_by_name(exp)
        store.experiment_ids[exp] = (existing.experiment_id if existing is not None
                                     else client.create_experiment(exp, artifact_location=artifact_location))

    local = local_env_tags()
    commit_a = "3f1c2e9a7d5b4c1e8f0a6b2d9c7e5a3b1f4d6c8e"
    commit_b = "9b7d5f3a1c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d"
    prov = {"spec.hash": "sha256:5d41402abc4b2a76", "gpuops.target": "local", "git.dirty": "false"}
    t0 = 1_760_000_000_000
    sgd_params = {**BASE_PARAMS, "model.layers": "32x3x3_32x3x3_1x3x3", "train.optimizer": "sgd",
                  "train.lr": "0.001", "train.momentum": "0.9", "model.batch_norm": "true"}
    plan = [
        ("srcnn-955-adam", EXPERIMENT, BASE_PARAMS, {**local, **prov, "git.commit": commit_a},
         _curves(1, 2.1, None)),
        ("srcnn-333-sgd", EXPERIMENT, sgd_params,
         {**local, **prov, "git.commit": commit_b, "spec.hash": "sha256:7fc56270e7a70fa8"},
         _curves(2, 1.7, 800)),
        ("srcnn-955-adam-gpu", EXPERIMENT, BASE_PARAMS, {**gpu_env_tags(), **prov, "git.commit": commit_a},
         _curves(3, 2.3, None)),
        ("fsrcnn", OTHER_EXPERIMENT, {**BASE_PARAMS, "name": OTHER_EXPERIMENT, "model.arch": "fsrcnn",
                                      "model.layers": "56-12-4"},
         {**local, **prov, "git.commit": commit_a}, _curves(4, 2.4, None)),
    ]
    for i, (name, exp, params, tags, curves) in enumerate(plan):
        store.runs[name] = _log(client, store.experiment_ids[exp], name, exp, params, tags, curves,
                                t0 + i * 3_600_000)
    return store
