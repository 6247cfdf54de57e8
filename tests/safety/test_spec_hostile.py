"""Hostile and unlucky experiment specs: each is one line naming file, field and what was expected,
exit code 2, and no MLflow run is created (a run that would FAILED minutes later is refused now)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from gpuops.errors import SpecError, UsageError
from gpuops.experiments.spec import load_experiment
from tests.run.conftest import client, run_cli, tiny_sr_spec


def _spec(tmp: Path, **sections: Any) -> Path:
    return tiny_sr_spec(tmp, "hostile", **sections)


def _edit(path: Path, fn: Any) -> Path:
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _folder_of(tmp: Path, name: str, files: dict[str, bytes]) -> Path:
    d = tmp / name
    d.mkdir()
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    return d


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _hostile_train_folders(tmp: Path, data_dir: Path) -> dict[str, tuple[str, str]]:
    """name -> (data.train value, words the error must hold)."""
    real = sorted((data_dir / "T91").glob("*.png"))[0]
    good = real.read_bytes()
    with Image.open(real) as im:
        one = im.crop((0, 0, 1, 1))
        small = im.crop((0, 0, 12, 40))
    (tmp / "up" / "deeper").mkdir(parents=True)
    return {
        "etc": ("/etc", "a folder of images"),
        "proc-self": ("/proc/self", "outside /proc"),
        "dev": ("/dev/shm", "outside"),
        "sys": ("/sys/class", "outside"),
        "dotdot-root": ("../../../../../../../../root", "image"),
        "empty": (str(_folder_of(tmp, "empty", {})), "it has none"),
        "txt-only": (str(_folder_of(tmp, "txt", {"readme.txt": b"no images here\n"})), "it has none"),
        "corrupt-png": (str(_folder_of(tmp, "corrupt", {"a.png": good[: len(good) // 3]})), "decodable"),
        "not-a-png": (str(_folder_of(tmp, "fake", {"a.png": b"GIF89a but not really"})), "decodable"),
        "1x1": (str(_folder_of(tmp, "one", {"a.png": _png(one)})), "at least 21x21"),
        "12x40": (str(_folder_of(tmp, "small", {"a.png": _png(small)})), "is 12x40"),
        "a-file": (str(real), "a folder"),
        "missing": (str(tmp / "nowhere"), "an existing image folder"),
        "nul": ("data/T91\x00x", "NUL"),
        "blank": ("", "not empty"),
    }


def test_hostile_data_folders_are_refused(tmp_path: Path, data_dir: Path) -> None:
    base = _spec(tmp_path)
    for name, (value, words) in _hostile_train_folders(tmp_path, data_dir).items():
        p = _edit(base, lambda d, v=value: d["data"].__setitem__("train", v))
        with pytest.raises(UsageError) as info:
            load_experiment(p)
        msg = str(info.value)
        assert "\n" not in msg, (name, msg)
        assert words in msg, (name, msg)
        assert str(p) in msg, (name, msg)
        if isinstance(info.value, SpecError):
            assert info.value.field == "data.train", (name, msg)


BAD_VALUES: list[tuple[str, Any, Any, str]] = [
    # (id, section.field, value, field named in the error)
    ("batch-1e9-int", "train.batch_size", 1_000_000_000, "train.batch_size"),
    ("batch-1e9-str", "train.batch_size", "1e9", "train.batch_size"),
    ("batch-0", "train.batch_size", 0, "train.batch_size"),
    ("seed-negative", "seed", -1, "seed"),
    ("seed-huge", "seed", 2**40, "seed"),
    ("patch-huge", "data.patch", 100_000, "data.patch"),
    ("patches-huge", "data.patches", 10**12, "data.patches"),
    ("iterations-huge", "train.iterations", 10**15, "train.iterations"),
    ("lr-inf", "train.lr", float("inf"), "train.lr"),
    ("lr-nan", "train.lr", float("nan"), "train.lr"),
    ("threads-huge", "resources.threads", 10**6, "resources.threads"),
    ("name-600", "name", "n" * 600, "name"),
    ("name-dotdot", "name", "a..b", "name"),
    ("experiment-600", "tracking.experiment", "e" * 600, "tracking.experiment"),
    ("run-name-300", "tracking.run_name", "r" * 300, "tracking.run_name"),
    ("tag-bad-key", "tracking.tags", {"bad key!@#": "v"}, "tracking.tags"),
    ("tag-reserved-mlflow", "tracking.tags", {"mlflow.user": "root"}, "tracking.tags"),
    ("tag-reserved-source", "tracking.tags", {"mlflow.source.name": "x"}, "tracking.tags"),
    ("tag-reserved-gpuops", "tracking.tags", {"gpuops.target": "aws"}, "tracking.tags"),
    ("tag-key-300", "tracking.tags", {"k" * 300: "v"}, "tracking.tags"),
    ("tag-value-huge", "tracking.tags", {"note": "v" * 9000}, "tracking.tags"),
    ("tag-path-key", "tracking.tags", {"../x": "v"}, "tracking.tags"),
]


@pytest.mark.parametrize("key, value, field", [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_absurd_values_are_one_line_naming_the_field(tmp_path: Path, data_dir: Path, key: str, value: Any,
                                                      field: str) -> None:
    def put(doc: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    p = _edit(_spec(tmp_path), put)
    for smoke in (False, True):  # --smoke replaces some values: it must not hide the file's
        with pytest.raises(SpecError) as info:
            load_experiment(p, smoke=smoke)
        assert info.value.field.startswith(field), (smoke, str(info.value))
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(f"{p}: {info.value.field}: expected ")


@pytest.mark.parametrize("name, data, words", [
    ("utf16", "name: x\ntask: sr\n".encode("utf-16"), "UTF-16"),
    ("utf32", "name: x\n".encode("utf-32"), "UTF-16 or UTF-32"),
    ("binary", bytes(range(256)) * 4, "NUL"),
    ("latin1", "name: caf\xe9\ntask: sr\n".encode("latin-1"), "not UTF-8"),
    ("deep", b"name: x\ntask: sr\nx: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "valid YAML"),
    ("alias-bomb", b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
        b"a%d: &a%d [%s]\n" % (i, i, b",".join([b"*a" if i == 1 else b"*a%d" % (i - 1)] * 10))
        for i in range(1, 8)), "expands"),
    ("huge-int", b"name: x\ntask: sr\nseed: " + b"9" * 5000 + b"\n", "integer"),
])
def test_undecodable_specs_are_one_line(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    p = tmp_path / f"{name}.yaml"
    p.write_bytes(data)
    with pytest.raises(UsageError) as info:
        load_experiment(p)
    assert words in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert str(p) in str(info.value)


def test_a_spec_path_with_a_nul_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="NUL"):
        load_experiment(str(tmp_path / "a\x00b.yaml"))


def test_set_overrides_are_validated_like_the_file(tmp_path: Path, data_dir: Path) -> None:
    p = _spec(tmp_path)
    with pytest.raises(SpecError, match=r"train\.batch_size"):
        load_experiment(p, ["train.batch_size=1e9"], smoke=True)
    with pytest.raises(SpecError, match=r"tracking\.tags"):
        load_experiment(p, ["tracking.tags.mlflow.runName=x"])


def test_the_shipped_tiny_spec_still_loads(tmp_path: Path, data_dir: Path) -> None:
    r = load_experiment(_spec(tmp_path), smoke=True)
    assert Path(r.spec.data.train) == (data_dir / "T91").resolve()


# -- the CLI: exit 2, one line, no run ------------------------------------------------------------
CLI_CASES = ["etc", "proc-self", "corrupt-png", "1x1"]


def _no_runs(db: Path) -> bool:
    if not db.exists():
        return True
    c = client(f"sqlite:///{db}")
    exps = c.search_experiments()
    return all(not c.search_runs([e.experiment_id]) for e in exps)


def test_the_cli_refuses_before_any_run_exists(tmp_path: Path, data_dir: Path) -> None:
    folders = _hostile_train_folders(tmp_path, data_dir)
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    cases: list[tuple[str, Path, list[str]]] = []
    for name in CLI_CASES:
        value = folders[name][0]
        p = _edit(shutil.copy(_spec(tmp_path), tmp_path / f"{name}.yaml") and tmp_path / f"{name}.yaml",
                  lambda d, v=value: d["data"].__setitem__("train", v))
        cases.append((name, p, []))
    base = _spec(tmp_path)
    cases += [
        ("tags", _edit(shutil.copy(base, tmp_path / "tags.yaml") and tmp_path / "tags.yaml",
                       lambda d: d.setdefault("tracking", {}).__setitem__("tags", {"bad key!@#": "v"})), []),
        ("smoke-batch", base, ["--smoke", "--set", "train.batch_size=1000000000"]),
        ("seed", base, ["--set", "seed=-1"]),
    ]
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(base.read_text().encode("utf-16"))
    cases.append(("utf16", utf16, []))
    for name, spec, extra in cases:
        r = run_cli("run", str(spec), "--tracking-uri", uri, *extra, cwd=tmp_path, timeout=120)
        assert r.returncode == 2, (name, r.stdout[-800:], r.stderr[-800:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, (name, r.stderr)
        assert "expected" in lines[0] and str(spec) in lines[0], (name, lines[0])
        assert "Traceback" not in r.stderr
        assert _no_runs(db), name
