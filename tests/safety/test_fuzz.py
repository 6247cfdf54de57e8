"""Property-based fuzz (hypothesis, bounded): ``--replay`` of arbitrary capture documents and
loading arbitrary experiment specs end in a result or one ``UsageError`` line, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuops.doctor.capture import load_capture
from gpuops.errors import UsageError
from gpuops.experiments.spec import load_experiment
from tests.conftest import REPO

REAL_CAPTURE = yaml.safe_load((REPO / "tests" / "doctor" / "fixtures" / "real_01.capture.yaml").read_text())
DATA = REPO / "experiments" / "data"
BASE_SPEC: dict[str, Any] = {
    "name": "fuzz", "task": "sr", "seed": 1,
    "data": {"train": str(DATA / "T91"), "eval": str(DATA / "Set5"), "patch": 21, "sampling": "random",
             "patches": 64, "train_images": 2},
    "model": {"arch": "srcnn", "layers": "8x3x3_1x3x3", "padding": "same"},
    "train": {"iterations": 2, "batch_size": 4},
    "resources": {"device": "cpu"},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["1e9", "-1", "/proc/self", "/etc", "../../root", "\x00", "mlflow.user", "", "nan",
                     "~"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    import copy

    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _write(tmp: str, text: str | bytes) -> Path:
    p = Path(tmp) / "doc.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return p


@FUZZ
@given(data=st.data(), value=values)
def test_replay_of_a_mutated_real_capture_never_raises_anything_else(data: st.DataObject, value: Any) -> None:
    paths = _paths(REAL_CAPTURE)
    path = data.draw(st.sampled_from(paths[:400]))
    doc = _mutate(REAL_CAPTURE, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = yaml.safe_dump(doc, allow_unicode=True)
        except yaml.YAMLError:
            return
        try:
            load_capture(_write(tmp, text))
        except UsageError as e:
            assert "\n" not in e.message


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300),
                     st.text(max_size=300).map(lambda s: s.encode("utf-8", "replace"))))
def test_replay_of_arbitrary_bytes_never_raises_anything_else(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_capture(_write(tmp, b"format: gpuops-capture\nformat_version: 1\n" + raw))
        except UsageError as e:
            assert "\n" not in e.message


@FUZZ
@given(data=st.data(), value=values)
def test_a_mutated_spec_loads_or_is_one_line(data: st.DataObject, value: Any) -> None:
    path = data.draw(st.sampled_from(_paths(BASE_SPEC)))
    doc = _mutate(BASE_SPEC, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = yaml.safe_dump(doc, allow_unicode=True)
        except yaml.YAMLError:
            return
        p = _write(tmp, text)
        try:
            load_experiment(p)
        except UsageError as e:
            assert "\n" not in e.message.split("\n  hint:")[0]
            assert str(p) in e.message or repr(str(p)) in e.message


@FUZZ
@given(raw=st.binary(max_size=300))
def test_a_spec_of_arbitrary_bytes_is_one_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = _write(tmp, raw)
        try:
            load_experiment(p)
        except UsageError as e:
            assert "\n" not in e.message
