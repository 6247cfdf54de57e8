"""Benchmark: ``gpuops doctor`` (no --deep) against ``python -m torch.utils.collect_env``.

Both run as fresh processes, N times each, interleaved in the same run so that machine load hits
both alike. Prints the medians, the ratio and how many facts each gathers, and writes
``bench/results/doctor.md`` with the machine it ran on.

    .venv/bin/python bench/doctor_vs_collect_env.py [-n 7] [--out bench/results/doctor.md]

Before timing, the gpuops package is byte-compiled (``compileall``), as an installed package is:
with ``PYTHONDONTWRITEBYTECODE`` set (as on the shared dev machine) every run would otherwise
compile the modules edited since their last ``.pyc`` and measure the compiler.

Facts counted: for collect_env, its "key: value" lines with a value (not "N/A", "Could not
collect", "None") plus its listed library versions; for doctor, the typed facts it knows (fields of
``gpuops.doctor.facts.Facts`` that are not unknown/empty, one per item for lists and maps) from a
capture made in the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model, load_average  # bench/_machine.py (scripts run with bench/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GPUOPS = str(Path(PY).with_name("gpuops"))


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    return time.perf_counter() - t0, out.stdout


def collect_env_facts(text: str) -> int:
    n = 0
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z][^:]{1,60}):\s*(.+)$", line)
        if (m and m.group(2).strip() not in ("N/A", "Could not collect", "None", "False", "")) or re.match(
            r"^\[(pip|pip3|conda)\]\s+\S+", line
        ):
            n += 1
    return n


def doctor_facts() -> tuple[int, int]:
    from gpuops.doctor import load_capture
    from gpuops.doctor.facts import facts_from_capture

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cap.yaml"
        subprocess.run(
            [GPUOPS, "doctor", "-q", "--capture", str(path)], cwd=ROOT, timeout=600, capture_output=True
        )
        cap = load_capture(path)
    f = facts_from_capture(cap)
    known = 0
    for fld in dataclasses.fields(f):
        v = getattr(f, fld.name)
        if v is None or v == "" or fld.name in ("stated_keys", "logs"):
            continue
        if isinstance(v, list | dict | set | tuple):
            known += len(v)
        else:
            known += 1
    raw = len(cap.commands) + len(cap.files) + len(cap.globs) + len(cap.packages or {}) + len(cap.env) + 1
    return known, raw


def load() -> str:
    return load_average()


def machine() -> str:
    cpu = cpu_model()
    return (
        f"- `uname -a`: {' '.join(platform.uname())}\n- nproc: {os.cpu_count()}\n- CPU: {cpu}\n"
        f"- load average at start: {load()}\n- Python: {sys.version.split()[0]}\n"
        f"- Docker Engine socket present: {os.path.exists('/var/run/docker.sock')}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7, help="runs of each (default 7)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "doctor.md")
    args = ap.parse_args()

    doc_cmd = [GPUOPS, "doctor", "-q"]
    plain_cmd = [GPUOPS, "doctor"]
    env_cmd = [PY, "-m", "torch.utils.collect_env"]
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "gpuops")], capture_output=True, timeout=600)
    header = machine()
    timed(doc_cmd)  # warm the page cache for both
    _, env_text = timed(env_cmd)
    lib_cmd = [PY, "-c", "from gpuops.doctor import collect, diagnose; diagnose(collect(), env_dir='environments')"]  # noqa: E501
    noop_cmd = [GPUOPS, "--version"]
    # What gpuops doctor cannot go below without dropping a dependency: importing the libraries it
    # uses (typer builds pydantic adapters for its options, which imports importlib.metadata).
    floor_cmd = [PY, "-c", "import typer, rich.console, rich.table, yaml, pydantic, importlib.metadata"]
    d_times, e_times, l_times, n_times, p_times, f_times = [], [], [], [], [], []
    for _ in range(args.n):
        d_times.append(timed(doc_cmd)[0])
        e_times.append(timed(env_cmd)[0])
        l_times.append(timed(lib_cmd)[0])
        n_times.append(timed(noop_cmd)[0])
        p_times.append(timed(plain_cmd)[0])
        f_times.append(timed(floor_cmd)[0])
    load_end = load()
    d_med, e_med = statistics.median(d_times), statistics.median(e_times)
    known, raw = doctor_facts()
    env_n = collect_env_facts(env_text)
    ratio = e_med / d_med
    lines = [
        "# gpuops doctor vs torch.utils.collect_env",
        "",
        f"Command: `{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))}` "
        f"({args.n} runs each, interleaved, fresh processes; wall time)",
        "",
        header,
        "",
        "| | median (s) | min (s) | max (s) | facts gathered |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| `gpuops doctor` (no --deep) | {d_med:.3f} | {min(d_times):.3f} | {max(d_times):.3f} | "
        f"{known} typed facts ({raw} raw observations) |",
        f"| `gpuops doctor` with its report (stdout to a pipe) | {statistics.median(p_times):.3f} | "
        f"{min(p_times):.3f} | {max(p_times):.3f} | same |",
        f"| (context) doctor library only, no CLI: `python -c 'diagnose(collect())'` | "
        f"{statistics.median(l_times):.3f} | {min(l_times):.3f} | {max(l_times):.3f} | same |",
        f"| (context) `gpuops --version` (CLI start-up alone) | {statistics.median(n_times):.3f} | "
        f"{min(n_times):.3f} | {max(n_times):.3f} | |",
        f"| (context) importing typer, rich, pydantic, PyYAML, importlib.metadata only | "
        f"{statistics.median(f_times):.3f} | {min(f_times):.3f} | {max(f_times):.3f} | |",
        f"| `python -m torch.utils.collect_env` | {e_med:.3f} | {min(e_times):.3f} | {max(e_times):.3f} | "
        f"{env_n} |",
        "",
        f"Ratio (collect_env / doctor, medians): **{ratio:.1f}x**. Goal: >= 8x and doctor < 0.3 s.",
        f"Load average at the end: {load_end}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
