"""The error-signature catalogue: GPU error texts doctor recognises, loaded from data.

The entries live in ``gpuops/knowledge/signatures_*.yaml`` (NVIDIA driver, kernel module and
container texts; CUDA and framework texts), each a regular expression over the stable part of a
message, the finding code it points to, the codes that also explain it, where in the stack it lives,
what it means, what to do, an official source and a real printed example. ``xid.yaml`` is NVIDIA's
Xid catalogue: a hit of the ``nvrm_xid`` signature takes its code, class and action from the row of
the Xid number it captured.

Loading is cheap on a warm run: the YAML is parsed and validated once and kept as JSON in the user's
cache under the digest of the files' bytes (``gpuops.cache``); patterns are compiled on first use,
and a text-free scan never loads the catalogue at all.

    hits = match(open("dmesg.txt").read(), origin="dmesg")
    hits[0].code, hits[0].line
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

# Where in the stack a signature lives (the same classes as gpuops.doctor.findings.Klass).
CLASSES: tuple[str, ...] = (
    "hardware",
    "driver",
    "kernel module",
    "container",
    "library",
    "framework",
    "application",
)
XID_SIGNATURE = "nvrm_xid"  # its group 2 is the Xid number, resolved through xid.yaml
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_URL = re.compile(r"^https?://\S+$")
_FLAGS = re.I | re.S
_LAYOUT = "1"  # bump when the cached document's fields change


class CatalogueError(ValueError):
    """The signature data is malformed: the message names the file and the entry."""


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _FLAGS)


@dataclass(frozen=True)
class Signature:
    id: str
    pattern: str
    code: str
    also: tuple[str, ...] = ()  # finding codes (groups expanded) that also explain this text
    klass: str = ""
    meaning: str = ""
    action: str = ""
    source: str = ""
    example: str = ""
    example_source: str = ""
    file: str = ""  # the catalogue file the entry comes from
    needle: str = ""  # lower-case text every match contains ("" when none is known)

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """The first match in ``text``. ``lowered`` (``text.lower()``) lets a caller that tries many
        signatures on one text skip, without compiling it, every pattern whose needle is absent."""
        if self.needle and self.needle not in (text.lower() if lowered is None else lowered):
            return None
        return _compiled(self.pattern).search(text)


@dataclass(frozen=True)
class XidRow:
    xid: int
    name: str
    klass: str
    action: str
    code: str
    source: str
    mnemonic: str = ""


@dataclass(frozen=True)
class Hit:
    """One signature found in one text. For an Xid line, code, class, meaning, action and source
    are those of the Xid's row in NVIDIA's catalogue (``xid``), not the generic signature's."""

    signature: Signature
    origin: str
    match: re.Match[str]
    code: str
    also: tuple[str, ...]
    klass: str
    meaning: str
    action: str
    source: str
    xid: int | None = None

    @property
    def line(self) -> str:
        """The whole line of the text on which the match starts."""
        s = self.match.string
        start = s.rfind("\n", 0, self.match.start()) + 1
        end = s.find("\n", self.match.start())
        return s[start : end if end != -1 else len(s)].strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.signature.id,
            "origin": self.origin,
            "line": self.line,
            "groups": list(self.match.groups()),
            "code": self.code,
            "also": list(self.also),
            "class": self.klass,
            "meaning": self.meaning,
            "action": self.action,
            "source": self.source,
            "xid": self.xid,
        }


# ------------------------------------------------------------------------------------ loading
def _knowledge_dir() -> str:
    # The data files sit in the gpuops.knowledge package; they are read by path, not through
    # importlib.resources, because importing that package pulls in the knowledge base's models.
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "knowledge")


def _raw_files() -> dict[str, bytes]:
    folder = _knowledge_dir()
    names = sorted(n for n in os.listdir(folder) if n.startswith("signatures_") and n.endswith(".yaml"))
    raw: dict[str, bytes] = {}
    for name in [*names, "signature_groups.yaml", "xid.yaml"]:
        with open(os.path.join(folder, name), "rb") as fh:
            raw[name] = fh.read()
    return raw


_SPECIAL = set(".^$*+?{}[]|()\\")


def _needle(pattern: str) -> str:
    """The longest literal run (4 characters or more, lower-cased) that every match of ``pattern``
    contains, or "" when that is not certain. Only runs outside groups and character classes count,
    and a pattern with a top-level alternation (or in verbose mode) has none."""
    if "(?x" in pattern:
        return ""
    runs: list[str] = []
    cur: list[str] = []
    depth = 0
    i = 0

    def end_run() -> None:
        if cur:
            runs.append("".join(cur))
            cur.clear()

    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if depth == 0 and not nxt.isalnum():
                cur.append(nxt)
            else:
                end_run()
            i += 2
            continue
        if c == "[":
            end_run()
            j = i + 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if c == "(":
            end_run()
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return ""
        elif c in "?*{" and cur:
            cur.pop()  # the quantified character is optional
            end_run()
        elif c in _SPECIAL:
            end_run()
        elif depth == 0:
            cur.append(c)
        i += 1
    end_run()
    best = max(runs, key=len, default="")
    return best.lower() if len(best) >= 4 else ""


def _expand(name: str, groups: dict[str, list[str]], seen: tuple[str, ...] = ()) -> list[str]:
    if name in seen:
        raise CatalogueError(f"signature_groups.yaml: group '{name}' includes itself")
    if name not in groups:
        raise KeyError(name)
    out: list[str] = []
    for item in groups[name]:
        out += _expand(item[1:], groups, (*seen, name)) if item.startswith("@") else [item]
    return out


def _validate(raw: dict[str, bytes], codes: set[str]) -> dict[str, Any]:
    """Parse and check every file; the JSON document the cache keeps. Raises CatalogueError."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    parsed = {name: yaml.load(blob.decode("utf-8"), Loader=loader) for name, blob in raw.items()}
    groups = parsed["signature_groups.yaml"] or {}
    for gname, members in groups.items():
        for m in members:
            if m.startswith("@"):
                if m[1:] not in groups:
                    raise CatalogueError(f"signature_groups.yaml: group '{gname}': unknown group '{m}'")
            elif m not in codes:
                raise CatalogueError(f"signature_groups.yaml: group '{gname}': unknown code '{m}'")
    sigs: list[dict[str, Any]] = []
    where: dict[str, str] = {}
    for fname, doc in parsed.items():
        if not fname.startswith("signatures_"):
            continue
        entries = (doc or {}).get("signatures")
        if not isinstance(entries, list):
            raise CatalogueError(f"{fname}: no 'signatures:' list")
        for i, e in enumerate(entries):
            sid = e.get("id") if isinstance(e, dict) else None

            def bad(msg: str, fname: str = fname, sid: object = sid, i: int = i) -> CatalogueError:
                return CatalogueError(f"{fname}: entry {sid!r} (#{i + 1}): {msg}")

            if not isinstance(sid, str) or not _ID.match(sid):
                raise bad("id must be snake_case")
            if sid in where:
                raise bad(f"duplicate id (also in {where[sid]})")
            where[sid] = fname
            for key in ("pattern", "code", "class", "meaning", "action", "source"):
                if not isinstance(e.get(key), str) or not e[key].strip():
                    raise bad(f"'{key}' is missing or empty")
            try:
                re.compile(e["pattern"], _FLAGS)
            except re.error as err:
                raise bad(f"pattern does not compile: {err}") from None
            if e["code"] not in codes:
                raise bad(f"unknown code '{e['code']}'")
            if e["class"] not in CLASSES:
                raise bad(f"bad class '{e['class']}' (one of: {', '.join(CLASSES)})")
            also: list[str] = []
            for a in e.get("also") or []:
                if not isinstance(a, str):
                    raise bad(f"bad 'also' item {a!r}")
                if a.startswith("@"):
                    try:
                        also += _expand(a[1:], groups)
                    except KeyError:
                        raise bad(f"unknown group '{a}'") from None
                elif a in codes:
                    also.append(a)
                else:
                    raise bad(f"unknown code '{a}' in 'also'")
            for key in ("source", "example_source"):
                if e.get(key) is not None and not _URL.match(str(e[key])):
                    raise bad(f"'{key}' is not an http(s) URL")
            sigs.append(
                {
                    "id": sid,
                    "pattern": e["pattern"],
                    "code": e["code"],
                    "also": list(dict.fromkeys(a for a in also if a != e["code"])),
                    "klass": e["class"],
                    "meaning": e["meaning"].strip(),
                    "action": e["action"].strip(),
                    "source": e["source"],
                    "example": str(e.get("example") or ""),
                    "example_source": str(e.get("example_source") or ""),
                    "file": fname,
                    "needle": _needle(e["pattern"]),
                }
            )
    xids: list[dict[str, Any]] = []
    seen_x: set[int] = set()
    for i, r in enumerate((parsed["xid.yaml"] or {}).get("xids") or []):
        x = r.get("xid") if isinstance(r, dict) else None
        if not isinstance(x, int) or x in seen_x:
            raise CatalogueError(f"xid.yaml: row #{i + 1}: missing or duplicate xid {x!r}")
        seen_x.add(x)
        for key in ("name", "class", "action", "code", "source"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise CatalogueError(f"xid.yaml: Xid {x}: '{key}' is missing or empty")
        if r["code"] not in codes:
            raise CatalogueError(f"xid.yaml: Xid {x}: unknown code '{r['code']}'")
        if r["class"] not in CLASSES:
            raise CatalogueError(f"xid.yaml: Xid {x}: bad class '{r['class']}'")
        for key in ("source", "example_source"):
            if r.get(key) is not None and not _URL.match(str(r[key])):
                raise CatalogueError(f"xid.yaml: Xid {x}: '{key}' is not an http(s) URL")
        xids.append(
            {
                "xid": x,
                "name": r["name"],
                "klass": r["class"],
                "action": r["action"],
                "code": r["code"],
                "source": r["source"],
                "mnemonic": str(r.get("mnemonic") or ""),
            }
        )
    return {"signatures": sigs, "xids": xids}


@lru_cache(maxsize=1)
def _load() -> tuple[tuple[Signature, ...], dict[int, XidRow]]:
    from gpuops.cache import cached_json
    from gpuops.doctor.findings import CODES

    raw = _raw_files()
    codes = set(CODES)
    # The codes are part of the key (a code removed from CODES must fail validation again), and so
    # is the layout of the document this module writes.
    parts = {**raw, "\0codes": "\n".join(sorted(codes)).encode(), "\0layout": _LAYOUT.encode()}
    doc = cached_json(
        "signatures",
        parts,
        lambda: _validate(raw, codes),
        valid=lambda d: isinstance(d, dict) and isinstance(d.get("signatures"), list) and "xids" in d,
    )
    sigs = tuple(Signature(**{**s, "also": tuple(s["also"])}) for s in doc["signatures"])
    xids = {r["xid"]: XidRow(**r) for r in doc["xids"]}
    return sigs, xids


def catalogue() -> tuple[Signature, ...]:
    """Every entry of every ``signatures_*.yaml`` (read once per process)."""
    return _load()[0]


def xid_table() -> dict[int, XidRow]:
    """NVIDIA's Xid catalogue: Xid number -> row."""
    return _load()[1]


def by_id(sid: str) -> Signature:
    for s in catalogue():
        if s.id == sid:
            return s
    raise KeyError(sid)


# ----------------------------------------------------------------------------------- matching
def _hit(sig: Signature, origin: str, m: re.Match[str]) -> Hit:
    if sig.id == XID_SIGNATURE:
        try:
            number = int(m.group(2))
        except (IndexError, TypeError, ValueError):
            number = None
        row = xid_table().get(number) if number is not None else None
        if row is not None:
            meaning = f"Xid {row.xid}: {row.name}" + (f" ({row.mnemonic})" if row.mnemonic else "")
            return Hit(
                sig, origin, m, row.code, sig.also, row.klass, meaning, row.action, row.source, row.xid
            )
        return Hit(sig, origin, m, sig.code, sig.also, sig.klass, sig.meaning, sig.action, sig.source, number)
    return Hit(sig, origin, m, sig.code, sig.also, sig.klass, sig.meaning, sig.action, sig.source)


def match(text: str, origin: str = "text") -> list[Hit]:
    """Every catalogue entry found in ``text``, in catalogue order. An Xid signature gives one hit
    per distinct Xid number in the text; every other entry at most one (its first occurrence)."""
    if not text or not text.strip():
        return []
    hits: list[Hit] = []
    lowered = text.lower()
    for sig in catalogue():
        if sig.id == XID_SIGNATURE:
            if sig.needle and sig.needle not in lowered:
                continue
            seen: set[str] = set()
            for m in _compiled(sig.pattern).finditer(text):
                key = m.group(2) if m.re.groups >= 2 else m.group(0)
                if key not in seen:
                    seen.add(key)
                    hits.append(_hit(sig, origin, m))
            continue
        m = sig.search(text, lowered)
        if m:
            hits.append(_hit(sig, origin, m))
    return hits


def scan(texts: list[tuple[str, str]]) -> list[tuple[Signature, str, re.Match[str]]]:
    """Every signature hit in (origin, text) pairs: (signature, origin, match). No text, no
    catalogue: a capture without error text never loads it."""
    out: list[tuple[Signature, str, re.Match[str]]] = []
    for origin, text in texts:
        if text and text.strip():
            out += [(h.signature, h.origin, h.match) for h in match(text, origin)]
    return out


# Knowledge-base signature id -> finding code (the knowledge base's own error signatures).
KB_CODES: dict[str, str] = {
    "nvidia_smi_no_driver": "kernel_module_not_built_after_upgrade",
    "nvml_version_mismatch": "driver_library_mismatch_needs_reboot",
    "cuda_insufficient_driver": "driver_too_old_for_cuda",
    "no_kernel_image": "gpu_arch_unsupported_by_build",
    "tf_libcudnn_so_8": "cudnn_missing_or_wrong_version",
    "docker_no_gpu_driver": "container_toolkit_missing",
}
