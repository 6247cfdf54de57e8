"""What each CPU lever gives the sr_fast training step: channels_last, torch.compile, bf16
autocast on the CPU, and the thread count.

Every variant trains its own copy of the same initial sr_fast network (from
``experiments/sr_fast.yaml``) on the same batch of real T91 patches with Adam; rounds of
``--steps`` steps of the variants are interleaved (the order rotates every round) so that all of
them see the same machine load, and the figure is the median time per step over the rounds.
bf16 is also checked for what it does to the result: the loss after the timed steps, beside fp32's.

    python bench/sr_cpu_levers.py                        # all levers, 2 threads
    python bench/sr_cpu_levers.py --out bench/results/sr_cpu_levers.md
    python bench/sr_cpu_levers.py --quick               # 2 rounds of 2 steps (CI dry run)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
from _machine import cpu_model, load_average  # noqa: E402 - bench/_machine.py, beside this script

VARIANTS = ("fp32", "channels_last", "bf16 autocast", "channels_last + bf16", "torch.compile")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=REPO / "experiments" / "sr_fast.yaml")
    ap.add_argument("--steps", type=int, default=5, help="steps per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (it takes a minute)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 steps, no compile (a dry run)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown result here")
    ap.add_argument("--env-rounds", type=int, default=0,
                    help="also compare OpenMP wait policies in child processes, this many rounds")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one timed variant, for --env-rounds
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.rounds, a.no_compile = 2, 2, True

    import numpy as np
    import torch
    import torch.nn.functional as F

    from gpuops.experiments.spec import load_experiment
    from gpuops.sr.data import load_images, random_patches
    from gpuops.train.sr import build_from_config, model_config

    torch.set_num_threads(a.threads)
    spec = load_experiment(a.spec).spec
    d, t = spec.data, spec.train
    torch.manual_seed(0)
    base = build_from_config(model_config(spec))
    images = load_images(REPO / "experiments" / "data" / "T91")[:8]
    xs, ys = random_patches(images, d.scale, d.colour, d.patch, t.batch_size, np.random.default_rng(0),
                            pre_upsample=base.pre_upsample)
    x0, y0 = torch.from_numpy(xs), torch.from_numpy(ys)

    class Variant:
        def __init__(self, name: str) -> None:
            self.name = name
            self.cl = "channels_last" in name
            self.bf16 = "bf16" in name
            m = copy.deepcopy(base)
            if self.cl:
                m = m.to(memory_format=torch.channels_last)
            self.model = m
            self.opt = torch.optim.Adam(m.parameters(), lr=t.lr)
            self.fwd = torch.compile(m) if name == "torch.compile" else m
            self.x = x0.contiguous(memory_format=torch.channels_last) if self.cl else x0
            self.times: list[float] = []
            self.loss = float("nan")

        def round(self, steps: int) -> float:
            began = time.perf_counter()
            for _ in range(steps):
                self.opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    out = self.fwd(self.x)
                loss = F.mse_loss(out.float(), y0)
                loss.backward()
                self.opt.step()
            self.loss = float(loss.detach())
            return (time.perf_counter() - began) / steps

    if a.child:  # a child of --env-rounds: time one variant, print ms/step
        v = Variant(a.child)
        v.round(1)
        print(f"CHILD {statistics.median(v.round(a.steps) for _ in range(a.rounds)) * 1000:.3f}")
        return 0
    names = [v for v in VARIANTS if not (a.no_compile and v == "torch.compile")]
    variants = [Variant(n) for n in names]
    load_before = load_average()
    compile_s = None
    for v in variants:  # warm-up (and compilation)
        began = time.perf_counter()
        v.round(1)
        if v.name == "torch.compile":
            compile_s = time.perf_counter() - began
    for r in range(a.rounds):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            v.times.append(v.round(a.steps))
    # the thread lever: the fp32 step on one thread against the threads asked for
    one = Variant("fp32")
    torch.set_num_threads(1)
    one.round(1)
    one_times = [one.round(a.steps) for _ in range(max(1, a.rounds // 2))]
    torch.set_num_threads(a.threads)

    env_rows = omp_policies(a) if a.env_rounds else []

    med = {v.name: statistics.median(v.times) for v in variants}
    ref = med["fp32"]
    rows = []
    for v in variants:
        rows.append((v.name, med[v.name] * 1000, ref / med[v.name], v.loss))
    rows.append(("fp32, 1 thread", statistics.median(one_times) * 1000, ref / statistics.median(one_times),
                 one.loss))
    machine = (f"{cpu_model()}, {__import__('os').cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{a.threads} threads; load average {load_before} before, {load_average()} after")
    lines = [f"machine: {machine}",
             f"model: {base.arch} {base.layers} (residual {getattr(base, 'residual', False)}), "
             f"batch {t.batch_size} of {d.patch}x{d.patch} HR patches, x{d.scale}",
             f"{'variant':24s} {'ms/step':>9s} {'speed-up':>9s} {'loss after':>11s}"]
    lines += [f"{n:24s} {ms:9.1f} {sp:9.2f} {loss:11.6f}" for n, ms, sp, loss in rows]
    if compile_s is not None:
        lines.append(f"torch.compile: first step (compilation) took {compile_s:.1f} s")
    lines += [f"{n:40s} {ms:9.1f} ms/step  (rounds: {', '.join(f'{x:.0f}' for x in all_ms)})"
              for n, ms, all_ms in env_rows]
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        table = "\n".join(f"| {n} | {ms:.1f} | {sp:.2f}x | {loss:.6f} |" for n, ms, sp, loss in rows)
        a.out.write_text(
            "# CPU levers for the sr_fast training step\n\n"
            f"`python bench/sr_cpu_levers.py --steps {a.steps} --rounds {a.rounds} --threads {a.threads}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"Machine: {machine}.\n\n"
            f"Model: `{base.layers}` ({base.arch}, residual over bicubic), batch {t.batch_size} of "
            f"{d.patch}x{d.patch} real T91 patches, Adam; rounds of {a.steps} steps interleaved, "
            "median time per step.\n\n"
            "| variant | ms / step | speed-up over fp32 | loss after the timed steps |\n"
            "| --- | --- | --- | --- |\n" + table + "\n"
            + (f"\ntorch.compile's first step (compilation) took {compile_s:.1f} s.\n" if compile_s else "")
            + ("" if not env_rows else
               "\nOpenMP wait policy and threads, each a fresh process (fp32 + channels_last + bf16 as "
               f"sr_fast trains), {a.env_rounds} interleaved rounds, median of rounds:\n\n"
               "| environment | ms / step | per round |\n| --- | --- | --- |\n"
               + "\n".join(f"| {n} | {ms:.1f} | {', '.join(f'{x:.0f}' for x in all_ms)} |"
                            for n, ms, all_ms in env_rows) + "\n")
        )
    return 0


ENV_VARIANTS = (
    ("2 threads, default (spinning) OpenMP waits", 2, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("1 thread", 1, {}),
)


def omp_policies(a: argparse.Namespace) -> list[tuple[str, float, list[float]]]:
    """Each environment in its own process (the OpenMP runtime reads it at start), interleaved."""
    import os
    import subprocess

    got: dict[str, list[float]] = {name: [] for name, _, _ in ENV_VARIANTS}
    for r in range(a.env_rounds):
        order = ENV_VARIANTS[r % len(ENV_VARIANTS):] + ENV_VARIANTS[: r % len(ENV_VARIANTS)]
        for name, threads, extra in order:
            env = {**os.environ, **extra}
            env.pop("OMP_NUM_THREADS", None)
            out = subprocess.run([sys.executable, __file__, "--child", "channels_last + bf16", "--spec",
                                  str(a.spec), "--threads", str(threads), "--steps", str(a.steps),
                                  "--rounds", "2"], capture_output=True, text=True, env=env, check=True)
            line = next(x for x in out.stdout.splitlines() if x.startswith("CHILD "))
            got[name].append(float(line.split()[1]))
    return [(name, statistics.median(v), v) for name, v in got.items()]


if __name__ == "__main__":
    sys.exit(main())
