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


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    return time.perf_counter() - t0, out.stdout


def timed_tty(cmd: list[str], columns: int = 100) -> float:
    """Wall time of ``cmd`` with stdout and stderr on a pseudo-terminal (colours and wrapping on),
    as a person at a terminal runs it. The output is drained as it comes."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:  # EIO: the child side closed
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")} | {"TERM": "xterm-256color"}
    subprocess.run(cmd, stdout=slave, stderr=slave, cwd=ROOT, timeout=600, env=env)
    dt = time.perf_counter() - t0
    os.close(slave)
    reader.join(5)
    os.close(master)
    return dt


def timed_cold_cache(cmd: list[str]) -> float:
    """Wall time of ``cmd`` with an empty gpuops cache: the first run after the environment files
    (or gpuops) changed, which validates them with PyYAML and pydantic."""
    with tempfile.TemporaryDirectory() as d:
        return timed(cmd, env={**os.environ, "XDG_CACHE_HOME": d})[0]


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

    doc_cmd = [GPUOPS, "doctor"]  # the report goes to a pipe
    json_cmd = [GPUOPS, "doctor", "--json"]
    env_cmd = [PY, "-m", "torch.utils.collect_env"]
    lib_cmd = [PY, "-c", "from gpuops.doctor import collect, diagnose; diagnose(collect(), env_dir='environments')"]  # noqa: E501
    noop_cmd = [GPUOPS, "--version"]
    py_cmd = [PY, "-c", "pass"]
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "gpuops")], capture_output=True, timeout=600)
    header = machine()
    timed(doc_cmd)  # warm the page cache and gpuops' parse cache
    _, env_text = timed(env_cmd)
    rows: dict[str, tuple[str, list[float]]] = {
        "doctor": ("`gpuops doctor` (no --deep; report to a pipe)", []),
        "tty": ("`gpuops doctor` on a terminal (pty, 100 columns: colours, wrapping)", []),
        "json": ("`gpuops doctor --json`", []),
        "cold": ("`gpuops doctor`, first run after the environment files changed (empty cache)", []),
        "lib": ("(context) doctor library only, no CLI: `python -c 'diagnose(collect())'`", []),
        "noop": ("(context) `gpuops --version` (the typer CLI's start-up, which doctor skips)", []),
        "py": ("(context) `python -c pass` (the interpreter's start-up)", []),
        "env": ("`python -m torch.utils.collect_env`", []),
    }
    for _ in range(args.n):
        rows["doctor"][1].append(timed(doc_cmd)[0])
        rows["env"][1].append(timed(env_cmd)[0])
        rows["tty"][1].append(timed_tty(doc_cmd))
        rows["json"][1].append(timed(json_cmd)[0])
        rows["cold"][1].append(timed_cold_cache(doc_cmd))
        rows["lib"][1].append(timed(lib_cmd)[0])
        rows["noop"][1].append(timed(noop_cmd)[0])
        rows["py"][1].append(timed(py_cmd)[0])
    load_end = load()
    med = {k: statistics.median(v) for k, (_, v) in rows.items()}
    known, raw = doctor_facts()
    env_n = collect_env_facts(env_text)
    facts = {"doctor": f"{known} typed facts ({raw} raw observations)", "env": str(env_n)}
    for k in ("tty", "json", "cold", "lib"):
        facts[k] = "same"
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
    ]
    for k, (label, ts) in rows.items():
        lines.append(f"| {label} | {med[k]:.3f} | {min(ts):.3f} | {max(ts):.3f} | {facts.get(k, '')} |")
    ratio = med["env"] / med["doctor"]
    lines += [
        "",
        f"Ratio (collect_env / doctor, medians): **{ratio:.1f}x**; on a terminal "
        f"{med['env'] / med['tty']:.1f}x, first run after an environment change "
        f"{med['env'] / med['cold']:.1f}x. Goal: >= 8x and doctor < 0.3 s.",
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
