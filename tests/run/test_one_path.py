"""One typed run path: no target reads the spec file, the CLI holds no MLflow or plotting code, and a
run lands in the spec's experiment with the same tags whatever the target (local here; docker in
tests/docker/test_e2e.py, aws in tests/aws/test_launch.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.conftest import REPO
from tests.run.conftest import check_one_path, run_cli, tiny_sr_spec, with_experiment

PKG = REPO / "gpuops"


def _imports(path: Path) -> set[str]:
    """Every module and name a file imports (``a.b`` and ``a.b.name``), anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_target_module_reads_a_spec_file() -> None:
    readers = {"yaml", "gpuops.specs.read_yaml", "gpuops.experiments.spec.load_experiment",
               "gpuops.experiments.spec.apply_overrides"}
    for path in sorted((PKG / "targets").glob("*.py")):
        assert not (_imports(path) & readers), f"{path.name} reads YAML: {_imports(path) & readers}"


def test_the_run_command_holds_no_mlflow_or_matplotlib_calls() -> None:
    for name in _imports(PKG / "cli" / "commands" / "run.py"):
        assert not name.startswith(("mlflow", "matplotlib")), name
        assert not name.endswith((".Tracker", ".MlflowClient", ".prepare_run", ".mark_if_running")), name


def test_a_local_run_lands_in_the_specs_experiment_with_the_common_tags(tmp_path: Path, store: str) -> None:
    spec = with_experiment(tiny_sr_spec(tmp_path, "one_path"), tmp_path, "one-path-exp")
    r = run_cli("run", str(spec), "--set", "resources.device=cpu", "--tracking-uri", store, "--json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["experiment"] == "one-path-exp" and doc["target"] == "local" and doc["state"] == "succeeded"
    check_one_path(store, doc["run_id"], "one-path-exp", "local", "resources.device=cpu")
