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


MAX_SPEC_BYTES = 1024 * 1024  # a spec is a page of YAML


def read_yaml(path: str | Path, max_bytes: int = MAX_SPEC_BYTES) -> Any:
    """The YAML document of a spec file: UTF-8 text, at most ``max_bytes``, aliases bounded.

    Anything else (UTF-16, binary, a NUL byte, nesting too deep, an alias bomb) is one
    ``SpecError`` line naming the file."""
    import yaml

    p = Path(path)
    if "\x00" in str(p):
        raise UsageError(f"{str(p)!r}: not a valid path (it holds a NUL byte)")
    try:
        if not p.is_file():
            raise UsageError(f"{p}: no such file")
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except ValueError:  # a NUL in the path itself
        raise UsageError(f"{str(p)!r}: not a valid path (it holds a NUL byte)") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read ({e.strerror or e})") from None
    if len(raw) > max_bytes:
        raise SpecError(p, "", f"a spec of at most {max_bytes // 1024} KB of YAML")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise SpecError(p, "", "UTF-8 text (this file is UTF-16 or UTF-32; save it as UTF-8)")
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise SpecError(p, "", f"UTF-8 YAML text (byte {at} is NUL: a binary file?)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(p, "", f"UTF-8 text (byte {e.start} is not UTF-8)") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        if node is None:
            return None
        from gpuops.doctor.capture import check_yaml_nodes

        check_yaml_nodes(node, str(p), what="spec")
        return yaml.SafeLoader("").construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())[:300]
        raise SpecError(p, "", f"valid YAML{where}: {why}") from None
    except RecursionError:
        raise SpecError(p, "", "valid YAML (nested too deeply)") from None
    except (ValueError, TypeError, OverflowError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise SpecError(p, "", f"valid YAML: {first}") from None


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
