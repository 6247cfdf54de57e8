"""Fixtures for the ``task: script`` tests: the real-store fixtures of the run tests, and small real
scripts written into the test's folder (they run on this interpreter, as a spec without ``env:``)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.run.conftest import client, data_dir, store, store_template  # noqa: F401 (fixtures)


def script_spec(folder: Path, name: str, body: str, **fields: Any) -> Path:
    """``folder/<name>.py`` holding ``body``, and ``folder/<name>.yaml``: a script spec running it
    with ``python <name>.py``, extended (or overridden) by ``fields``."""
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    spec: dict[str, Any] = {"name": name, "task": "script", "entrypoint": ["python", f"{name}.py"],
                            "resources": {"device": "cpu"}}
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def runs_of(uri: str, experiment: str) -> list[Any]:
    exp = client(uri).get_experiment_by_name(experiment)
    return [] if exp is None else list(client(uri).search_runs([exp.experiment_id]))


def artifact_paths(uri: str, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client(uri).list_artifacts(run_id, path):
        out |= artifact_paths(uri, run_id, a.path) if a.is_dir else {a.path}
    return out


def artifact_text(uri: str, run_id: str, path: str, dst: Path) -> str:
    return Path(client(uri).download_artifacts(run_id, path, str(dst))).read_text()
