"""PSNR against wall time: sr_fast beside srcnn_y (the SRCNN paper's set-up), same machine, same run.

Each spec is trained, one after the other, by the project's own worker
(``python -m gpuops.train.worker``, the process ``gpuops run`` starts) with ``--threads`` torch
threads, evaluating on the whole of Set5 every ``--eval-every`` iterations. A spec stops at its own
last iteration or when its training time reaches ``--budget`` minutes (the worker's spot-interrupt
file, ``$GPUOPS_CHECKPOINT_DIR/INTERRUPT``, ends it cleanly), whichever comes first.

Training time is wall-clock time from the worker's ``start`` event, minus the time spent in the
evaluations (read from the progress/eval events of the same iteration); loading the images and
cutting the patch pool happen before ``start`` and are reported apart. The load average is sampled
at every evaluation, so a result file says whether other jobs slowed the run.

    python bench/sr_time_to_quality.py                                  # 15 minutes each
    python bench/sr_time_to_quality.py --out bench/results/sr_time_to_quality
    python bench/sr_time_to_quality.py --specs experiments/sr_fast_x2.yaml --out bench/results/sr_fast_x2
    python bench/sr_time_to_quality.py --smoke                          # seconds: the path only

Writes ``OUT.md`` (the table and the machine), ``OUT.png`` (the curves) and ``OUT.json`` (the points).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
from _machine import cpu_model, load_average  # noqa: E402 - bench/_machine.py, beside this script

# Published Set5 PSNR (dB) on Y, SRCNN (Dong et al., TPAMI 2016), as listed with their source in
# /work/shared/datasets/README.md: 9-1-5 trained on T91, and 9-5-5 trained on ImageNet.
PAPER = {2: {"SRCNN 9-1-5 (T91)": 36.34, "SRCNN 9-5-5 (ImageNet)": 36.66},
         3: {"SRCNN 9-1-5 (T91)": 32.39, "SRCNN 9-5-5 (ImageNet)": 32.75},
         4: {"SRCNN 9-1-5 (T91)": 30.09, "SRCNN 9-5-5 (ImageNet)": 30.49}}
DEFAULT_SPECS = [REPO / "experiments" / "sr_fast.yaml", REPO / "experiments" / "srcnn_y.yaml"]


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return out


def curve(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Training-time curve from a worker's events: ``points`` = [(train seconds, iteration, psnr,
    ssim)], the bicubic PSNR, the time spent evaluating and the wall time of the events."""
    start = next((e["time"] for e in events if e["event"] == "start"), None)
    first = events[0]["time"] if events else None
    progress = {e["it"]: e["time"] for e in events if e["event"] == "progress"}
    points: list[tuple[float, int, float, float]] = []
    eval_s = 0.0
    bicubic = None
    for e in events:
        if e["event"] != "eval" or start is None:
            continue
        it, m = int(e["it"]), e["metrics"]
        before = progress.get(it, e["time"])
        train_s = before - start - eval_s
        eval_s += e["time"] - before
        points.append((train_s, it, float(m["val/psnr"]), float(m["val/ssim"])))
        bicubic = float(m["val/psnr_bicubic"])
    end = next((e["time"] for e in reversed(events) if e["event"] == "end"), None)
    return {"points": points, "bicubic": bicubic, "setup_s": (start - first) if start and first else None,
            "eval_s": eval_s, "wall_s": (end - first) if end and first else None}


class NvmlSampler:
    """GPU utilisation, memory and power of GPU 0 from NVML every ``interval`` seconds, in a thread."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.rows: list[tuple[float, float, float, float]] = []  # time, util %, memory MB, power W
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            while not self._stop.is_set():
                util = pynvml.nvmlDeviceGetUtilizationRates(h)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                power = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
                self.rows.append((time.time(), float(util.gpu), mem.used / 1e6, power))
                self._stop.wait(self.interval)
            pynvml.nvmlShutdown()
        except Exception as e:  # no NVML here: say so in the result
            self.error = f"{type(e).__name__}: {e}"

    def __enter__(self) -> NvmlSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> dict[str, float] | None:
        inside = [r for r in self.rows if t0 <= r[0] <= t1]
        if not inside:
            return None
        return {"samples": len(inside), "util_mean": sum(r[1] for r in inside) / len(inside),
                "util_max": max(r[1] for r in inside), "memory_mb_max": max(r[2] for r in inside),
                "power_w_mean": sum(r[3] for r in inside) / len(inside)}


def run_spec(spec_path: Path, overrides: list[str], budget_s: float, workdir: Path,
             loads: list[tuple[float, str]], tracking_uri: str | None = None) -> dict[str, Any]:
    from gpuops.experiments.spec import load_experiment

    resolved = load_experiment(spec_path, overrides)
    run_id = None
    if tracking_uri:  # a real tracked run, as `gpuops run` makes it (params, tags, system metrics)
        from gpuops.tracking.runs import prepare_run
        from gpuops.tracking.tracker import Tracker

        run_id = prepare_run(Tracker(tracking_uri), resolved, target="local")
    doc = workdir / f"{resolved.spec.name}.resolved.json"
    doc.write_text(json.dumps(resolved.to_dict()))
    events = workdir / f"{resolved.spec.name}.events.jsonl"
    ckpt = workdir / f"{resolved.spec.name}.ckpt"
    ckpt.mkdir(exist_ok=True)
    env = {**os.environ, "GPUOPS_CHECKPOINT_DIR": str(ckpt)}
    env.pop("GPUOPS_OUTPUT_DIR", None)
    launched = time.time()
    cmd = [sys.executable, "-m", "gpuops.train.worker", "--resolved", str(doc), "--events", str(events)]
    if run_id:
        cmd += ["--run-id", run_id, "--tracking-uri", str(tracking_uri)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    stopped_by_budget = False
    seen_evals = 0
    while proc.poll() is None:
        time.sleep(1.0)
        c = curve(_events(events))
        if len(c["points"]) > seen_evals:
            seen_evals = len(c["points"])
            loads.append((time.time(), load_average()))
        evs = _events(events)
        start = next((e["time"] for e in evs if e["event"] == "start"), None)
        if start is not None and not stopped_by_budget:
            trained = time.time() - start - c["eval_s"]
            if trained >= budget_s:
                (ckpt / "INTERRUPT").touch()
                stopped_by_budget = True
    reader.join(timeout=5)
    c = curve(_events(events))
    evs = _events(events)
    start = next((e["time"] for e in evs if e["event"] == "start"), None)
    c["setup_s"] = (start - launched) if start else None
    end = next((e["time"] for e in reversed(evs) if e["event"] in ("summary", "end")), None)
    c["window"] = (start, end)
    c["run_id"] = run_id
    if run_id:
        c["system_metrics"] = system_metric_keys(str(tracking_uri), run_id)
    c.update(name=resolved.spec.name, spec=str(spec_path.relative_to(REPO)) if spec_path.is_relative_to(REPO)
             else str(spec_path), overrides=overrides, exit_code=proc.returncode,
             stopped_by_budget=stopped_by_budget, iterations=resolved.spec.train.iterations,
             scale=resolved.spec.data.scale, layers=resolved.spec.model.layers,
             arch=resolved.spec.model.arch, log_tail="".join(out)[-2000:])
    return c


Point = tuple[float, int, float, float]  # training seconds, iteration, PSNR, SSIM


def system_metric_keys(tracking_uri: str, run_id: str) -> list[str]:
    """The ``system/...`` metrics MLflow's system-metrics monitor logged on the run."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    return sorted(k for k in run.data.metrics if k.startswith("system/"))


def best_within(points: list[Point], seconds: float) -> tuple[float, int, float] | None:
    inside = [p for p in points if p[0] <= seconds]
    if not inside:
        return None
    p = inside[-1]
    return p[2], p[1], p[0]


def first_reaching(points: list[Point], target: float) -> tuple[float, int] | None:
    for p in points:
        if p[2] >= target:
            return p[0], p[1]
    return None


def write_figure(results: list[dict[str, Any]], scale: int, path: Path, threads: int = 2,
                 device: str = "cpu") -> Path:
    from gpuops.sr.figures import learning_curve_figure, save_figure

    curves = {r["name"]: [(p[0] / 60.0, p[2]) for p in r["points"]] for r in results}
    first, *rest = list(curves)
    bicubic = next((r["bicubic"] for r in results if r["bicubic"] is not None), None)
    fig = learning_curve_figure(curves[first], bicubic=bicubic, dataset="Set5", scale=scale, label=first,
                                x_label=(f"training time (minutes, {threads} CPU threads)" if device == "cpu"
                                         else f"training time (minutes, {device})"),
                                extra={k: curves[k] for k in rest}, refs=PAPER.get(scale, {}))
    return save_figure(fig, path)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", type=Path, nargs="+", default=DEFAULT_SPECS)
    ap.add_argument("--budget", type=float, default=15.0, help="minutes of training per spec")
    ap.add_argument("--eval-every", type=int, default=250, help="iterations between Set5 evaluations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra KEY=VALUE override for every spec (as gpuops run --set)")
    ap.add_argument("--smoke", action="store_true", help="a few iterations per spec: checks the path only")
    ap.add_argument("--tracking-uri", default=None,
                    help="log each spec as a real MLflow run here (params, metrics, system metrics)")
    ap.add_argument("--nvml", action="store_true", help="sample GPU 0's utilisation from NVML")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.md, OUT.png and OUT.json")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite OUT.md and OUT.png from an existing OUT.json (no training)")
    a = ap.parse_args(argv)
    if a.render:
        if a.out is None:
            ap.error("--render needs --out")
        summary = json.loads(a.out.with_suffix(".json").read_text(encoding="utf-8"))
        scale = summary["results"][0]["scale"]
        a.out.with_suffix(".md").write_text(render_markdown(summary, scale), encoding="utf-8")
        dev = "cuda" if "device cuda" in summary["machine"] else "cpu"
        write_figure(summary["results"], scale, a.out.with_suffix(".png"),
                     summary.get("threads", a.threads), dev)
        return 0

    overrides = [f"resources.threads={a.threads}", f"resources.device={a.device}", "eval.panels=false",
                 "train.log_every=50", f"eval.every={a.eval_every}", *a.sets]
    budget_s = a.budget * 60.0
    if a.smoke:
        overrides += ["train.iterations=20", "train.log_every=5", "eval.every=10", "train.warmup=0",
                      "train.checkpoint_every=0", "data.patches=256", "data.train_images=4",
                      "data.sampling=random"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = load_average()
    loads: list[tuple[float, str]] = []
    results = []
    sampler = NvmlSampler() if a.nvml else None
    with tempfile.TemporaryDirectory(prefix="sr-ttq-") as tmp, (sampler or _Null()):
        for spec in a.specs:
            spec = spec.resolve()
            r = run_spec(spec, overrides, budget_s, Path(tmp), loads, a.tracking_uri)
            if sampler is not None:
                t0, t1 = r["window"]
                r["nvml"] = sampler.between(t0 or 0.0, t1 or time.time()) if t0 else None
                r["nvml_error"] = sampler.error
            results.append(r)
            print(f"{r['name']}: exit {r['exit_code']}, {len(r['points'])} evaluations", flush=True)
            for train_s, it, p, s in r["points"]:
                print(f"  {train_s / 60:6.2f} min  it {it:6d}  PSNR {p:.3f} dB  SSIM {s:.4f}", flush=True)
            if r["exit_code"] not in (0, 130):
                print(r["log_tail"], file=sys.stderr)
                return 1
    import torch

    scale = results[0]["scale"]
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{a.threads} torch threads, device {a.device}")
    if a.device.startswith("cuda") and torch.cuda.is_available():
        machine += f" ({torch.cuda.get_device_name(0)})"
    summary = {"started": started, "machine": machine, "threads": a.threads, "budget_min": a.budget,
               "load_start": load_start,
               "load_end": load_average(), "loads_at_evaluations": [v for _, v in loads],
               "overrides": overrides, "results": results, "paper": PAPER.get(scale, {})}
    text = render_markdown(summary, scale)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(text, encoding="utf-8")
        a.out.with_suffix(".json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        write_figure(results, scale, a.out.with_suffix(".png"), a.threads, a.device)
    return 0


def render_markdown(s: dict[str, Any], scale: int) -> str:
    paper = s["paper"]
    budget_s = s["budget_min"] * 60
    lines = [f"# Set5 x{scale}: PSNR against training time on this machine", "",
             f"`python bench/sr_time_to_quality.py --specs {' '.join(r['spec'] for r in s['results'])}`, "
             f"started {s['started']}.", "",
             f"Machine: {s['machine']}. Load average (1, 5, 15 min) at the start: {s['load_start']}; at the "
             f"end: {s['load_end']}; at each evaluation (1-min figure): "
             f"{', '.join(v.split()[0] for v in s['loads_at_evaluations']) or 'n/a'}.", "",
             "PSNR/SSIM on the Y channel of the whole of Set5, scale-pixel border cropped (the papers' "
             "recipe, gpuops.sr.evaluate). Training time excludes the evaluations and the set-up "
             "(loading T91, cutting the patch pool), which are listed apart.", "",
             "| spec | model | iterations run | training time | final PSNR / SSIM | at the last evaluation "
             f"within {s['budget_min']:g} min | first >= {min(paper.values()) if paper else 0:.2f} dB | "
             "set-up | "
             "evaluations |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in s["results"]:
        pts = r["points"]
        last = pts[-1] if pts else None
        within = best_within(pts, budget_s)
        target = min(paper.values()) if paper else None
        reach = first_reaching(pts, target) if target else None
        lines.append(
            f"| {r['spec']} | {r['arch']} `{r['layers'] or 'preset'}` | {last[1] if last else 0} of "
            f"{r['iterations']}{' (budget stop)' if r['stopped_by_budget'] else ''} | "
            f"{(last[0] / 60 if last else 0):.1f} min | "
            f"{f'{last[2]:.2f} dB / {last[3]:.4f}' if last else 'n/a'} | "
            f"{f'{within[0]:.2f} dB (it {within[1]})' if within else 'n/a'} | "
            f"{f'{reach[0] / 60:.1f} min (it {reach[1]})' if reach else 'not reached'} | "
            f"{(r['setup_s'] or 0):.0f} s | {r['eval_s']:.0f} s |")
    loads = [float(v.split()[0]) for v in s["loads_at_evaluations"]] + [float(s["load_start"].split()[0])]
    cores = os.cpu_count() or 1
    if loads and max(loads) > cores:
        lines += ["", f"**Load:** the 1-minute load average reached {max(loads):.2f} on {cores} logical CPUs "
                  f"during this run (median {sorted(loads)[len(loads) // 2]:.2f}): other jobs shared the "
                  "cores, so these training times are longer than a quiet machine's, and more so for "
                  "the spec that ran while the load was highest (see the per-evaluation figures above)."]
    if s["results"] and s["results"][0]["bicubic"] is not None:
        lines += ["", f"Bicubic: {s['results'][0]['bicubic']:.2f} dB. Published (SRCNN, Dong et al., TPAMI "
                  "2016, figures as listed in the data sets' README): "
                  + "; ".join(f"{k} {v:.2f} dB" for k, v in paper.items()) + "."]
    for r in s["results"]:
        if "nvml" in r:
            n = r["nvml"]
            lines.append("")
            lines.append(f"GPU (NVML, {r['name']}): " + (
                f"utilisation mean {n['util_mean']:.0f} %, max {n['util_max']:.0f} %, memory up to "
                f"{n['memory_mb_max']:.0f} MB, power mean {n['power_w_mean']:.0f} W over "
                f"{n['samples']} samples" if n else
                f"no samples ({r.get('nvml_error') or 'NVML gave nothing'})") + ".")
        if r.get("run_id"):
            keys = r.get("system_metrics") or []
            gpu = [k for k in keys if k.startswith("system/gpu")]
            lines += ["", f"MLflow run {r['run_id']} ({r['name']}): {len(keys)} system metrics, "
                      f"{len(gpu)} of them GPU ({', '.join(gpu[:4]) or 'none'})."]
    lines += ["", "Curve points (training minutes, iteration, PSNR dB):", ""]
    for r in s["results"]:
        pts = ", ".join(f"{p[0] / 60:.1f}/{p[1]}/{p[2]:.2f}" for p in r["points"])
        lines.append(f"- {r['name']}: {pts}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
