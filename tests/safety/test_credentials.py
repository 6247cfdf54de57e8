"""Credentials never reach the terminal or MLflow: passwords in tracking URIs, secret-named spec keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuops.experiments.spec import load_experiment
from gpuops.tracking.tracker import is_secret_key, redact, redact_text, redact_uri
from tests.run.conftest import client, run_cli, tiny_sr_spec


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:hunter2@mlflow.internal:5000", "http://alice:***@mlflow.internal:5000"),
    ("https://alice:p%40ss@h/path?x=1", "https://alice:***@h/path?x=1"),
    ("postgresql://u:p@ss@db.example:5432/mlflow", "postgresql://u:***@db.example:5432/mlflow"),
    ("https://ghp_tokenvalue@h/", "https://***@h/"),
    ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
    ("https://h/a@b", "https://h/a@b"),
])
def test_uris_keep_the_user_and_hide_the_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_text(f"API request to {uri}/api/2.0 failed") == f"API request to {shown}/api/2.0 failed"


@pytest.mark.parametrize("key", ["secret_token", "tracking.tags.secret_token", "password", "db_passwd",
                                 "api_key", "AWS_SECRET_ACCESS_KEY", "hf-token", "credentials", "key",
                                 "ssh.key", "x-auth"])
def test_secret_names(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["train.lr", "author", "monkey", "keyboard", "sweep.param", "data.patch"])
def test_ordinary_names(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_drops_secret_keys_and_hides_uri_passwords() -> None:
    out = redact({"secret_token": "abc", "note": "see http://a:b4d@h/", "lr": 0.1})
    assert out == {"note": "see http://a:***@h/", "lr": "0.1"}


def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path: Path, data_dir: Path) -> None:
    spec = tiny_sr_spec(tmp_path, "cred")
    uris = ["http://alice:hunter2@127.0.0.1:9/", "postgresql://alice:hunter2@127.0.0.1:9/mlflow",
            "databricks://alice:hunter2@workspace"]
    for uri in uris:
        r = run_cli("run", str(spec), "--tracking-uri", uri, cwd=tmp_path, timeout=180,
                    env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        # an http server that does not answer is found before anything starts (exit 2); a store
        # that fails when opened is an outside failure (exit 1)
        assert r.returncode == (2 if uri.startswith("http") else 1), (uri, r.stderr[-1500:])
        both = r.stdout + r.stderr
        assert "hunter2" not in both, (uri, both[-1500:])
        assert "alice:***@" in both, (uri, both[-1500:])
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.lstrip().startswith("hint:")]
        assert len(lines) == 1, (uri, r.stderr[-1500:])


def test_secret_overrides_are_kept_out_of_params_tags_and_the_spec_artifact(
        tmp_path: Path, data_dir: Path, store: str) -> None:
    spec = tiny_sr_spec(tmp_path, "secret", train={"iterations": 2, "log_every": 1, "checkpoint_every": 0},
                        eval={"every": None, "panels": False})
    token = "tok_9f8e7d6c5b4a"
    sets = ["--set", f"tracking.tags.secret_token={token}", "--set", "tracking.tags.note=kept"]
    resolved = load_experiment(spec, [s for s in sets if s != "--set"])
    assert not any(token in v for v in resolved.params().values())
    assert "tracking.tags.note" in resolved.params()
    r = run_cli("run", str(spec), "--tracking-uri", store, "--json", *sets, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_id = json.loads(r.stdout)["run_id"]
    c = client(store)
    run = c.get_run(run_id)
    assert run.data.tags["note"] == "kept"
    assert "secret_token" not in run.data.tags
    assert not any("secret_token" in k or token in v for k, v in run.data.params.items())
    assert token not in run.data.tags["gpuops.overrides"]
    assert json.loads(run.data.tags["gpuops.overrides"]) == ["tracking.tags.note=kept"]
    spec_text = Path(c.download_artifacts(run_id, "spec.yaml", str(tmp_path))).read_text()
    assert token not in spec_text and "note: kept" in spec_text
