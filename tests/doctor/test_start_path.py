"""``gpuops doctor``'s start-up path: what it imports, and that it runs when its neighbours are broken.

doctor is what people run when their Python environment is in a bad state, so the console script
sends ``gpuops doctor`` to an argparse front that needs none of typer, pydantic, rich or PyYAML
(``gpuops.cli.entry``), and the pinned environments are validated once and then read from a cache.
These tests run the real console entry in fresh processes on this machine.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from gpuops.doctor.envcheck import load_envs
from gpuops.doctor.probes import _nvml_library_loads

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("typer", "click", "pydantic", "rich", "yaml", "importlib.metadata", "torch")


def _doctor(args: list[str], cache: Path, *, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """``gpuops doctor ARGS`` through the console entry; prints the heavy modules it loaded on stderr."""
    code = (
        "import sys, atexit\n"
        f"atexit.register(lambda: print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), "
        "file=sys.stderr))\n"
        "from gpuops.cli.entry import main\n"
        f"main(['doctor', *{args!r}])\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "NO_COLOR": "1"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def _loaded(stderr: str) -> list[str]:
    line = next(x for x in stderr.splitlines() if x.startswith("LOADED "))
    return ast.literal_eval(line.removeprefix("LOADED "))  # a list printed by the child


def test_a_warm_run_imports_no_cli_framework_no_yaml_and_no_pydantic(tmp_path):
    first = _doctor(["--json"], tmp_path)  # validates environments/*.yaml, fills the cache
    assert first.returncode == 0, first.stderr
    assert "yaml" in _loaded(first.stderr) and "pydantic" in _loaded(first.stderr)
    second = _doctor(["--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert _loaded(second.stderr) == []
    assert json.loads(first.stdout)["environments"] == json.loads(second.stdout)["environments"]
    assert {e["name"] for e in json.loads(second.stdout)["environments"]} >= {"pytorch", "pytorch-cpu"}


def test_nvidia_ml_py_is_imported_only_when_the_library_loads(tmp_path):
    code = (
        "import sys; from gpuops.doctor import collect; c = collect(); "
        "print('pynvml' in sys.modules, c.nvml.error)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    imported, _, error = out.stdout.strip().partition(" ")
    if _nvml_library_loads():  # an NVIDIA host: NVML is asked through nvidia-ml-py
        assert imported == "True"
    else:  # the same answer nvidia-ml-py gives, without importing it
        assert imported == "False"
        assert error == "NVMLError_LibraryNotFound: NVML Shared Library Not Found"
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            assert f"{type(e).__name__}: {e}" == error


def _shadow(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """A directory of packages that fail on import, put first on the path: a broken environment."""
    root = tmp_path / "broken"
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is broken (test)')\n")
    return root


def test_doctor_runs_when_typer_pydantic_rich_yaml_and_torch_are_broken(tmp_path):
    broken = _shadow(tmp_path, ("typer", "click", "pydantic", "rich", "yaml", "torch"))
    out = _doctor(["--no-color"], tmp_path / "cache", extra_path=broken)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.startswith("gpuops doctor\n") and "\nCUDA toolkit " in out.stdout
    # the environments cannot be validated without PyYAML and pydantic: said, not fatal
    assert "environments not available (ImportError)" in out.stdout
    # --replay reads the file with PyYAML and pydantic: without them, one clear line and exit code 1
    devbox = REPO / "tests/doctor/fixtures/devbox.capture.yaml"
    replay = _doctor(["--replay", str(devbox)], tmp_path / "cache", extra_path=broken)
    assert replay.returncode == 1 and "Traceback" not in replay.stderr
    assert "cannot read the capture: yaml is not importable" in replay.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "gpuops", "doctor", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(broken)},
    )
    assert helped.returncode == 0 and "--replay" in helped.stdout


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    out = _doctor(["--no-such-option"], tmp_path)
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if not x.startswith("LOADED ")]
    assert lines == [
        "error: unrecognized arguments: --no-such-option (gpuops doctor --help lists the options)"
    ]
    out = _doctor(["--yes"], tmp_path)
    assert out.returncode == 2 and "error: --yes only goes with --fix" in out.stderr


def test_gpuops_help_lists_doctor_and_forwards_to_it():
    from typer.testing import CliRunner

    from gpuops.cli.main import app

    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "doctor" in r.output
    real_04 = REPO / "tests/doctor/fixtures/real_04.capture.yaml"
    r = CliRunner().invoke(app, ["doctor", "--replay", str(real_04)])
    assert r.exit_code == 1 and "driver_library_mismatch_needs_reboot" in r.output


ENV = "framework: pytorch\nframework_version: 2.13.0\ncuda: '12.6'\npython: '3.11'\n"


def test_environment_cache_follows_the_files_and_never_keeps_an_invalid_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "one.yaml").write_text(ENV)
    got, note = load_envs(envs)
    assert note is None and [(e.name, e.cuda) for e in got] == [("one", "12.6")]
    assert len(list((tmp_path / "cache" / "gpuops").glob("environments-*.json"))) == 1
    assert load_envs(envs) == (got, None)  # a hit: same answer

    (envs / "one.yaml").write_text(ENV.replace("'12.6'", "'12.8'"))  # edited: read afresh
    got, note = load_envs(envs)
    assert [(e.name, e.cuda) for e in got] == [("one", "12.8")]

    (envs / "two.yaml").write_text(ENV.replace("framework: pytorch", "framework: caffe"))
    for _ in range(2):  # reported on every run, never cached
        got, note = load_envs(envs)
        assert got == [] and note is not None and "framework" in note and "two.yaml" in note
    assert len(list((tmp_path / "cache" / "gpuops").glob("environments-*.json"))) == 2


def test_the_knowledge_base_answers_without_pydantic_or_pyyaml(tmp_path):
    """On a GPU host doctor queries the knowledge base; that too must work with both broken."""
    code = (
        "import sys; from gpuops.knowledge import load_kb; kb = load_kb(); "
        "print(kb.driver_supports_cuda('470.182.03', '12.1').ok, kb.gpu_cc('NVIDIA H100 80GB HBM3'), "
        "sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split() == ["False", "9.0", "['yaml']"]  # the first run parses the YAML
    env["PYTHONPATH"] = str(_shadow(tmp_path, ("pydantic", "yaml")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "9.0", "[]"]
