"""Groups of finding codes (``gpuops/knowledge/signature_groups.yaml``), expanded.

Signatures name a group in ``also`` as ``@name``; the registry uses the same groups to decide which
findings account for a tool's failure. Parsed once through the content-addressed cache, so a warm
``gpuops doctor`` does not import PyYAML.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

FILE = Path(__file__).resolve().parent.parent / "knowledge" / "signature_groups.yaml"


@cache
def _raw() -> dict[str, list[str]]:
    from gpuops.cache import cached_json

    data = FILE.read_bytes()

    def parse() -> dict[str, list[str]]:
        import yaml

        doc = yaml.safe_load(data) or {}
        return {str(k): [str(x) for x in v or []] for k, v in doc.items()}

    try:
        return cached_json("signature-groups", {"groups": data}, parse, lambda d: isinstance(d, dict))
    except Exception:  # PyYAML broken on a cold cache: doctor runs on, without the groups
        return {}


@cache
def group(name: str) -> frozenset[str]:
    """The codes of group ``name`` (``@`` optional), nested groups expanded (unknown: empty)."""
    raw = _raw()
    name = name.removeprefix("@")
    out: set[str] = set()
    todo, seen = [name], set()
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        for item in raw.get(g, []):
            if item.startswith("@"):
                todo.append(item[1:])
            else:
                out.add(item)
    return frozenset(out)


def names() -> list[str]:
    return sorted(_raw())


__all__ = ["FILE", "group", "names"]
