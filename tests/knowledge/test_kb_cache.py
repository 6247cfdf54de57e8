"""The knowledge base's parsed-data cache: same data as parsing the YAML, no PyYAML on a hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from gpuops.knowledge import FILES, read_data


def _parse_yaml() -> dict:
    pkg = resources.files("gpuops.knowledge")
    return {n: yaml.safe_load((pkg / f"{n}.yaml").read_text(encoding="utf-8")) for n in FILES}


def _in_fresh_process(cache: Path, code: str) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_cache_is_written_once_and_gives_the_parsed_yaml(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = _parse_yaml()
    first = read_data()  # miss: parses, writes the cache
    files = list((tmp_path / "gpuops").glob("knowledge-*.json"))
    assert len(files) == 1
    assert first == expected
    assert json.loads(files[0].read_text(encoding="utf-8")) == expected
    second = read_data()  # hit
    assert second == expected
    assert list(second) == list(FILES)
    assert [list(d) for d in second.values()] == [list(d) for d in expected.values()]  # key order kept


def test_a_hit_does_not_import_yaml(tmp_path) -> None:
    code = "import sys; from gpuops.knowledge import load_kb; load_kb(); print('yaml' in sys.modules)"
    assert _in_fresh_process(tmp_path, code) == "True"  # the first run parses
    assert _in_fresh_process(tmp_path, code) == "False"  # the next one reads the cache


def test_a_damaged_or_foreign_cache_is_ignored(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    read_data()
    (cache,) = (tmp_path / "gpuops").glob("knowledge-*.json")
    expected = _parse_yaml()
    cache.write_text('{"sources": {', encoding="utf-8")  # cut short
    assert read_data() == expected
    cache.write_text(json.dumps({"sources": {}}), encoding="utf-8")  # not the knowledge files
    assert read_data() == expected


def test_an_unwritable_cache_dir_only_costs_a_parse(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert read_data() == _parse_yaml()
