"""Every answer the knowledge base can build from its data has the types its dataclass declares.

The answers are plain dataclasses (no validation at construction, so that ``gpuops doctor`` needs no
pydantic); this test is where the data files are type-checked instead: each answer is built from
every row of the shipped data and its fields are checked against the declared annotations, without
coercion (a YAML 12.1 read as a float where a string is declared fails here).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import pytest

from gpuops.knowledge import load_kb


def _check(value: Any, tp: Any, where: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return
    if tp is type(None):
        assert value is None, f"{where}: {value!r} is not None"
    elif origin in (typing.Union, types.UnionType):
        errors = []
        for alt in args:
            try:
                _check(value, alt, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(" / ".join(errors))
    elif origin is Literal:
        assert value in args, f"{where}: {value!r} not one of {args}"
    elif origin is list:
        assert isinstance(value, list), f"{where}: {type(value).__name__}, expected a list"
        for i, v in enumerate(value):
            _check(v, args[0], f"{where}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict), f"{where}: {type(value).__name__}, expected a dict"
        for k, v in value.items():
            _check(k, args[0], f"{where} key")
            _check(v, args[1], f"{where}[{k!r}]")
    elif dataclasses.is_dataclass(tp):
        assert isinstance(value, tp), f"{where}: {type(value).__name__}, expected {tp.__name__}"
        _check_answer(value, where)
    elif tp is bool:
        assert type(value) is bool, f"{where}: {value!r} is not a bool"
    else:
        assert type(value) is tp, f"{where}: {value!r} is a {type(value).__name__}, expected {tp.__name__}"


def _check_answer(answer: Any, where: str = "") -> None:
    hints = typing.get_type_hints(type(answer))
    for f in dataclasses.fields(answer):
        _check(getattr(answer, f.name), hints[f.name], f"{where or type(answer).__name__}.{f.name}")


def _all_answers() -> list[Any]:
    kb = load_kb()
    out: list[Any] = list(kb.sources().values())
    for cuda in kb.toolkits():
        if (floor := kb.min_driver_for_cuda(cuda)) is not None:
            out.append(floor)
        out.append(kb.driver_supports_cuda("470.182.03", cuda))
        out.append(kb.driver_supports_cuda("580.65.06", cuda))
    out += kb.architectures()
    for name, _ in kb.gpu_names():
        if (match := kb.gpu_lookup(name)) is not None:
            out.append(match)
    for cc in {a for arch in kb.architectures() for a in arch.sms}:
        out.append(kb.cudnn_for_cc(cc))
    for release in kb.torch_releases():
        builds = kb.torch_builds(release)
        out += builds
        for b in builds:
            if (al := kb.torch_arch_list(release, b.cuda)) is not None:
                out.append(al)
    for cc in ("5.2", "6.1", "8.6", "9.0"):
        out += kb.torch_variants_for_gpu(cc)
    for platform in ("linux", "windows"):
        out += kb.tensorflow_builds(platform)
    for package in kb.cupy_packages():
        if (rng := kb.cupy_package_cuda(package)) is not None:
            out.append(rng)
    for version in ("7.8.1", "7.8.0", "6.7.0"):
        if (info := kb.chainer(version)) is not None:
            out.append(info)
    out += kb.error_signatures()
    return out


ANSWERS = _all_answers()


def test_every_kind_of_answer_is_covered() -> None:
    kinds = {type(a).__name__ for a in ANSWERS}
    assert kinds >= {
        "SourceRef", "DriverFloor", "Verdict", "Arch", "GpuMatch", "ArchList", "TorchBuild",
        "TorchVariantFit", "TFBuild", "CudaRange", "ChainerInfo", "CudnnCC", "ErrorSignature",
    }


@pytest.mark.parametrize("kind", sorted({type(a).__name__ for a in ANSWERS}))
def test_every_answer_has_its_declared_types(kind: str) -> None:
    answers = [a for a in ANSWERS if type(a).__name__ == kind]
    for answer in answers:
        _check_answer(answer)


def test_the_checker_refuses_a_wrong_type() -> None:
    from gpuops.knowledge.models import Verdict

    with pytest.raises(AssertionError, match="reason"):
        _check_answer(Verdict(ok=True, reason=12.1))  # type: ignore[arg-type]
