"""Loading YAML specs into pydantic models with one clear error.

``load_spec(path, Model)`` returns a validated model, or raises ``SpecError`` naming the file,
the field path (``train.lr``, ``model.layers[2]``) and what was expected. Every spec in gpuops
(experiments, environments, captures) goes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gpuops.errors import SpecError, UsageError

M = TypeVar("M", bound=BaseModel)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_EXPECT = {
    "extra_forbidden": "no such field (unknown key)",
    "missing": "a value (this field is required)",
}


def spec_error_from_validation(path: str | Path, err: ValidationError) -> SpecError:
    """The first validation error, as a SpecError (one clear line)."""
    first = err.errors(include_url=False)[0]
    # pydantic puts the tag of a discriminated union / the validator name into loc; drop
    # function-validator names like "function-after[...]".
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p and "(" not in p))
    field = _loc(loc)
    kind = first.get("type", "")
    expected = _EXPECT.get(kind) or first.get("msg", "a valid value")
    # pydantic's wording -> "expected ...": "Input should be a valid number" -> "a valid number"
    for prefix in ("Value error, ", "Input should be ", "Assertion failed, "):
        if expected.startswith(prefix):
            expected = expected[len(prefix) :]
    got = first.get("input") if kind not in {"missing"} else None
    if isinstance(got, dict | list) and len(repr(got)) > 80:
        got = None
    n = err.error_count()
    if n > 1:
        expected += f" (and {n - 1} more problem{'s' if n > 2 else ''})"
    return SpecError(path, field, expected, got)


def read_yaml(path: str | Path) -> Any:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(p, "", f"valid YAML{where}: {getattr(e, 'problem', e)}") from None


def validate(path: str | Path, data: Any, model: type[M]) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(path, "", f"a mapping of {model.__name__} fields", type(data).__name__)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise spec_error_from_validation(path, e) from None


def load_spec(path: str | Path, model: type[M]) -> M:
    return validate(path, read_yaml(path), model)
