#!/usr/bin/env python3
"""Compile the compatibility reference into gpuops' knowledge files.

Reads ``compat_reference.yaml`` (default: ``../shared/reference/`` beside the checkout) and writes
normalised, versioned YAML files into ``gpuops/knowledge/``:

    sources.yaml drivers.yaml torch.yaml tensorflow.yaml cupy_chainer.yaml cudnn.yaml gpus.yaml errors.yaml

Every table keeps ``source`` (a key into sources.yaml; further keys in ``also``) and ``status``
(official / secondary / inferred). Every file carries ``kb_version``, ``compiled`` (the reference's
compile date) and ``reference_sha256``, so that running this script again on the same reference
reproduces the committed files byte for byte (tests/knowledge checks this).

Where the reference gives free text, this script turns it into structured data by hand; each such
place has a comment naming the reference entry it comes from.

    python scripts/build_knowledge.py [--reference PATH] [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "compat_reference.yaml"
DEFAULT_OUT = REPO / "gpuops" / "knowledge"

# Bump when the layout of the compiled files changes; the reference date is the data version.
SCHEMA = 1

FILES = ("sources", "drivers", "torch", "tensorflow", "cupy_chainer", "cudnn", "gpus", "errors")

_RANK = {"official": 0, "secondary": 1, "inferred": 2}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def norm_status(raw: str) -> str:
    """The weakest of official/secondary/inferred named in a status text ('official (x) / secondary (y)')."""
    words = [w for w in _RANK if w in str(raw).lower()]
    if not words:
        raise ValueError(f"unrecognised status {raw!r}")
    return max(words, key=_RANK.__getitem__)


def src(raw: Any) -> dict[str, Any]:
    """``source`` (first key) and ``also`` (the rest) from a key or a list of keys."""
    keys = [raw] if isinstance(raw, str) else list(raw)
    out: dict[str, Any] = {"source": keys[0]}
    if len(keys) > 1:
        out["also"] = keys[1:]
    return out


def stat(raw: str) -> dict[str, Any]:
    """``status`` normalised, plus ``status_note`` when the reference says more than one word."""
    s = norm_status(raw)
    out: dict[str, Any] = {"status": s}
    if str(raw).strip() != s:
        out["status_note"] = str(raw).strip()
    return out


def floor(raw: str | None) -> str | None:
    """'>=580.65.06' -> '580.65.06'; 'N/A' -> None."""
    if raw is None:
        return None
    m = re.match(r"\s*>=\s*([0-9][0-9.]*)", str(raw))
    return m.group(1) if m else None


def sm_to_cc(sm: str) -> str:
    """'sm_50' -> '5.0', 'sm_120' -> '12.0', 'sm_90a' -> '9.0a'."""
    m = re.fullmatch(r"sm_(\d+)(\d)([a-z]?)", sm)
    if not m:
        raise ValueError(sm)
    return f"{int(m.group(1))}.{m.group(2)}{m.group(3)}"


def minor_range(lo: str, hi: str) -> list[str]:
    """'11.0', '11.8' -> ['11.0', ..., '11.8'] (same major)."""
    a, b = lo.split("."), hi.split(".")
    assert a[0] == b[0], (lo, hi)
    return [f"{a[0]}.{i}" for i in range(int(a[1]), int(b[1]) + 1)]


def cuda_variant_to_version(v: str) -> str:
    """'cu126' -> '12.6', 'cu92' -> '9.2', 'cu110' -> '11.0'."""
    d = v.removeprefix("cu")
    return f"{int(d[:-1])}.{d[-1]}"


def header(ref_meta: dict[str, str], what: str) -> dict[str, Any]:
    return {
        "kb_version": ref_meta["kb_version"],
        "compiled": ref_meta["compiled"],
        "reference_sha256": ref_meta["sha256"],
        "about": what,
    }


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def build_sources(ref: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, s in ref["sources"].items():
        url = s.get("url")
        urls = url if isinstance(url, list) else ([url] if url else [])
        # A URL is taken only when it is one (some reference entries put a description there).
        urls = [u for u in urls if str(u).startswith("http")]
        # 'https://... (capture showing cuDNN 9.17.0)': the address, and the remark kept apart.
        url_notes = [u.split(None, 1)[1] for u in urls if len(u.split(None, 1)) > 1]
        urls = [u.split(None, 1)[0] for u in urls]
        repo = s.get("repo")
        path = s.get("path")
        if not urls and repo and path and re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            # path may be a list, or two paths joined by ' and ' (cupy_install_rst): the first one.
            first = path[0] if isinstance(path, list) else path.split(" and ")[0]
            commit = str(s.get("commit", "")).split()[0] if s.get("commit") else ""
            ref_name = commit if re.fullmatch(r"[0-9a-f]{40}", commit) else "HEAD"
            urls = [f"https://github.com/{repo}/blob/{ref_name}/{first}"]
        row: dict[str, Any] = {
            "url": urls[0] if urls else None,
            "type": str(s.get("type", "")),
            "status": norm_status(s.get("type", "")),
        }
        if len(urls) > 1:
            row["more_urls"] = urls[1:]
        if url_notes:
            row["url_note"] = "; ".join(url_notes)
        for extra in ("repo", "path", "commit", "commits", "read_via", "content", "note"):
            if extra in s:
                row[extra] = s[extra]
        out[key] = row
    return {"sources": out}


# --------------------------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------------------------
def parse_toolkit_label(label: str) -> dict[str, Any]:
    """Structure a row label of 'Table 3 CUDA Toolkit and Corresponding Driver Versions'.

    Labels read: '13.2 Update 2', '13.0 GA', '11.4.0 GA', '11.3.1 Update 1', '11.0.1 RC', '10.2.89',
    '10.1 (10.1.105 general release, and updates)', '9.2 (9.2.148 Update 1)', '9.2 (9.2.88)',
    '13.4 Developer Preview'.
    """
    m = re.fullmatch(r"(\d+\.\d+)(?:\.(\d+))?\s*(.*)", label.strip())
    if not m:
        raise ValueError(label)
    cuda, third, rest = m.group(1), m.group(2), m.group(3)
    patch = f"{cuda}.{third}" if third else None
    inner = re.fullmatch(r"\((\d+\.\d+\.\d+)\s*(.*)\)", rest)
    if inner:  # '9.2 (9.2.148 Update 1)', '10.1 (10.1.105 general release, and updates)'
        patch, rest = inner.group(1), inner.group(2)
    kind, update = "ga", 0
    up = re.search(r"Update\s+(\d+)", rest)
    if up:
        kind, update = "update", int(up.group(1))
    elif re.search(r"\bRC\b", rest):
        kind, update = "rc", -1
    elif "Developer Preview" in rest:
        kind, update = "preview", -1
    return {"label": label, "cuda": cuda, "kind": kind, "update": update, "patch": patch}


def build_drivers(ref: dict[str, Any]) -> dict[str, Any]:
    cdm = ref["cuda_driver_minimum"]
    tk = cdm["toolkit_driver_table"]
    entries = []
    for e in tk["entries"]:
        row = parse_toolkit_label(e["cuda"])
        row["linux"] = floor(e["linux_x86_64"])
        row["windows"] = floor(e["windows_x86_64"])
        entries.append(row)
    newer = cdm["newer_than_table_read"]
    newer_entries = []
    for e in newer["entries"]:
        row = parse_toolkit_label(e["cuda"])
        row["linux"] = floor(e["linux_x86_64"])
        row["windows"] = None
        if row["linux"] is None:
            row["note"] = e["linux_x86_64"]
        newer_entries.append(row)

    mvc = cdm["minor_version_compatibility"]
    # cuda_10x_minimums repeats the 10.x rows of the toolkit table, so it is not copied.
    exact = mvc["exact_family_floors"]
    fam_rows = []
    # minor_version_compatibility.table gives ranges as text ('>= 525', '< 580 (...)'); the exact
    # dotted floors come from exact_family_floors. Structured by hand from both.
    upper = {"13": None, "12": "580", "11": "525"}
    for fam in ("13", "12", "11"):
        ex = exact[f"{fam}.x"]
        win = ex.get("windows")
        row = {
            "family": fam,
            "linux": floor(ex["linux"]),
            "windows": floor(win) if win else None,
            # Drivers at or above this major use backward compatibility instead (same table).
            "minor_compat_below_driver": upper[fam],
            **src(ex["source"]),
            **stat(ex["status"]),
        }
        if win and floor(win) and str(win).strip() != f">={floor(win)}":
            row["windows_note"] = str(win)
        fam_rows.append(row)

    return {
        "toolkit_drivers": {
            "title": tk["title"],
            **src(tk["source"]),
            **stat(tk["status"]),
            "note": tk["note"],
            "known_discrepancies": tk["known_discrepancies"],
            "entries": entries,
        },
        "toolkit_drivers_unverified": {
            **src(newer["source"]),
            **stat(newer["status"]),
            "note": newer["note"],
            "entries": newer_entries,
        },
        "minor_version_compatibility": {
            **src(mvc["source"]),
            **stat(mvc["status"]),
            "rule": mvc["rule"],
            "note_11x": mvc["note_11x"],
            # 'From CUDA 11 onwards ...; before CUDA 11 each 10.x minor needed the driver shipped with it.'
            "first_family": "11",
            "families": fam_rows,
        },
    }


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------
def _cudnn_clean(raw: str) -> tuple[str, str | None]:
    """'9.1.0.70 (listed once for the pair ...)' -> ('9.1.0.70', 'listed once ...')."""
    m = re.fullmatch(r"([0-9.]+)\s*(?:\((.*)\))?", raw.strip())
    assert m, raw
    return m.group(1), m.group(2)


def _arch_cell(cell: str) -> tuple[str, bool, bool]:
    """'12.0+PTX (PTX linux only)' -> ('12.0', ptx=True, linux_only=True)."""
    m = re.fullmatch(r"(\d+\.\d+)(\+PTX)?\s*(\(PTX linux only\))?", cell.strip())
    assert m, cell
    return m.group(1), bool(m.group(2)), bool(m.group(3))


def _short_cuda(key: str) -> str:
    """'12.6.3' -> '12.6'; 'cu128' -> '12.8'."""
    if key.startswith("cu"):
        return cuda_variant_to_version(key)
    return ".".join(key.split(".")[:2])


def _arch_table(cells_by_cuda: dict[str, list[str]], platforms: list[str]) -> dict[str, dict[str, Any]]:
    """Per platform, per CUDA variant: sms and ptx. '+PTX (PTX linux only)' puts PTX on Linux only."""
    out: dict[str, dict[str, Any]] = {p: {} for p in platforms}
    for cuda_key, cells in cells_by_cuda.items():
        for plat in platforms:
            sms, ptx = [], []
            for c in cells:
                cc, has_ptx, linux_only = _arch_cell(c)
                sms.append(cc)
                if has_ptx and (not linux_only or plat.startswith("linux")):
                    ptx.append(cc)
            out[plat][_short_cuda(cuda_key)] = {"cuda_full": cuda_key, "sms": sms, "ptx": ptx}
    return out


def build_torch(ref: dict[str, Any]) -> dict[str, Any]:
    t = ref["torch"]
    rm = t["release_matrix"]
    releases = []
    for r in rm["rows"]:
        builds = []
        for channel in ("stable_cuda", "experimental_cuda"):
            for b in r[channel]:
                cudnn, note = _cudnn_clean(b["cudnn"])
                row = {
                    "cuda": b["cuda"],
                    "variant": "cu" + b["cuda"].replace(".", ""),
                    "channel": channel.split("_")[0],
                    "cudnn": cudnn,
                    "nccl": b.get("nccl"),
                }
                notes = [n for n in (note, b.get("note")) if n]
                if notes:
                    row["note"] = "; ".join(notes)
                builds.append(row)
        rel = {
            "torch": r["torch"],
            "python": r["python"],
            "cxx": r["cxx"],
            "rocm": r["rocm"],
            "builds": builds,
        }
        if "cross_check" in r:
            rel["cross_check"] = r["cross_check"]
        releases.append(rel)

    variants = []
    for w in t["wheel_variants"]:
        versions, planned = [], False
        for v in w["torch"]:
            # '1.8.2 LTS' -> '1.8.2'; '2.15 (planned)' -> '2.15' with planned: true.
            m = re.fullmatch(r"([0-9.]+)\s*(LTS|\(planned\))?", v)
            assert m, v
            versions.append(m.group(1))
            planned = planned or m.group(2) == "(planned)"
        row = {"torch": versions, "variants": list(w["variants"]), "planned": planned}
        if "pypi_default" in w:
            # 'cu102 (plain ...)' -> 'cu102'
            row["pypi_default"] = w["pypi_default"].split()[0]
            row["pypi_default_note"] = w["pypi_default"]
        if "note" in w:
            row["note"] = w["note"]
        variants.append({**row, **src(w["source"]), **stat(w["status"])})

    arch_entries = []
    for e in t["arch_support_by_variant"]["entries"]:
        # torch versions: '2.12' = a release series; '2.7.0' = the one measured build.
        row: dict[str, Any] = {"torch": list(e["torch"]), **src(e["source"]), **stat(e["status"])}
        if "linux_x86_and_windows" in e:
            row["platforms"] = _arch_table(e["linux_x86_and_windows"], ["linux_x86_64", "windows"])
            if "linux_aarch64" in e:
                row["platforms"].update(_arch_table(e["linux_aarch64"], ["linux_aarch64"]))
        elif "TORCH_CUDA_ARCH_LIST" in e:
            # torch 2.8: build_cuda.sh is the Linux manywheel build; strings '5.0;6.0;...;12.0+PTX'.
            cells = {k: v.split(";") for k, v in e["TORCH_CUDA_ARCH_LIST"].items()}
            row["platforms"] = _arch_table(cells, ["linux_x86_64"])
            row["conflict_note"] = " ".join(e["conflict_note"].split())
        elif "measured" in e:
            # get_arch_list() of conda/pip builds ('sm_50', 'sm_90a'); no PTX recorded.
            plat: dict[str, Any] = {}
            for variant, sms in e["measured"].items():
                plat[_short_cuda(variant)] = {
                    "cuda_full": variant,
                    "sms": [sm_to_cc(s) for s in sms],
                    "ptx": [],
                }
            row["platforms"] = {"linux_x86_64": plat}
            row["measured"] = True
        elif "measured_summary" in e:
            # 1.8.x-1.11.0 give only a range ('sm_35|37 .. sm_86'), not a list: not usable as an
            # arch list, so it is kept as a note and no lists are recorded.
            row["platforms"] = {}
            row["note"] = e["measured_summary"]
        if "measured_get_arch_list" in e:
            row["cross_check_get_arch_list"] = {
                k: [sm_to_cc(s) for s in v] for k, v in e["measured_get_arch_list"].items()
            }
        for k in ("note", "corroboration"):
            if k in e:
                row[k] = " ".join(str(e[k]).split())
        arch_entries.append(row)

    return {
        "releases": {**src(rm["source"]), **stat(rm["status"]), "rows": releases},
        "wheel_variants": {"rows": variants},
        "arch_lists": {"rule_note": t["arch_support_by_variant"]["rule_note"], "entries": arch_entries},
    }


# --------------------------------------------------------------------------------------------
# tensorflow
# --------------------------------------------------------------------------------------------
def _tf_rows(rows: list[list[str]]) -> list[dict[str, Any]]:
    out = []
    for name, python, compiler, tools, cudnn, cuda in rows:
        package, version = name.split("-", 1)  # 'tensorflow_gpu-1.15.0'
        out.append(
            {
                "version": version,
                "package": package,
                "python": python,
                "compiler": compiler,
                "build_tools": tools,
                "cudnn": str(cudnn),
                "cuda": str(cuda),
            }
        )
    return out


def build_tensorflow(ref: dict[str, Any]) -> dict[str, Any]:
    tf = ref["tensorflow"]
    lin, win, pip = (
        tf["linux_gpu_tested_build_configurations"],
        tf["windows_native_gpu_tested"],
        tf["pip_md_requirements"],
    )
    return {
        "builds": {
            "linux": {**src(lin["source"]), **stat(lin["status"]), "rows": _tf_rows(lin["rows"])},
            "windows": {
                **src(win["source"]),
                **stat(win["status"]),
                "note": win["note"],
                # pip.md: 'No GPU support on native Windows after TF 2.10'
                "last_native_gpu": "2.10.0",
                "rows": _tf_rows(win["rows"]),
            },
        },
        "pip_requirements": {
            **src(pip["source"]),
            **stat(pip["status"]),
            "driver_linux": floor(pip["driver"]["linux"]),
            "driver_wsl": floor(pip["driver"]["wsl_on_windows"]),
            "gpu_archs_text": pip["gpu_archs"],
            "ptx_note": pip["ptx_note"],
            "install_cmd": pip["install_cmd"],
            "stale_text_warning": pip["stale_text_warning"],
        },
        "cuda_13": {"built": False, "note": tf["cuda_13"], **src(lin["source"]), "status": "official"},
    }


# --------------------------------------------------------------------------------------------
# cupy / chainer
# --------------------------------------------------------------------------------------------
def _pkg_range(pkg: str, text: str | None) -> dict[str, str]:
    """CUDA range of a CuPy wheel: from its name ('cupy-cuda110' -> 11.0) or the docs' text
    ('CUDA 11.2 ~ 11.8', '12.x', 'CUDA 12.x ...')."""
    if text:
        m = re.search(r"(\d+\.\d+)\s*~\s*(\d+\.\d+)", text)
        if m:
            return {"cuda_min": m.group(1), "cuda_max": m.group(2)}
        m = re.search(r"(\d+)\.x", text)
        if m:
            return {"cuda_min": f"{m.group(1)}.0", "cuda_max": f"{m.group(1)}.x"}
        m = re.search(r"(\d+\.\d+)", text)
        if m:
            return {"cuda_min": m.group(1), "cuda_max": m.group(1)}
    d = pkg.removeprefix("cupy-cuda")
    v = f"{int(d[:-1])}.{d[-1]}"
    return {"cuda_min": v, "cuda_max": v}


# cupy_wheel_packages.by_cupy_major: which CuPy versions each documented row covers, by hand from
# the row labels ('v7.8.0', 'v11.x (11.0.0 .. 11.6.0)', 'v13.0.0 .. v13.5.x', 'v14.2.0 / master').
_CUPY_ROW_SPAN = {
    "v7.8.0": ("7.0.0", "8.0.0"),
    "v8.6.0": ("8.0.0", "9.0.0"),
    "v9.6.0": ("9.0.0", "10.0.0"),
    "v10.6.0": ("10.0.0", "11.0.0"),
    "v11.x (11.0.0 .. 11.6.0)": ("11.0.0", "12.0.0"),
    "v12.x (12.3.0)": ("12.0.0", "13.0.0"),
    "v13.0.0 .. v13.5.x": ("13.0.0", "13.6.0"),
    "v13.6.0": ("13.6.0", "14.0.0"),
    "v14.0.0": ("14.0.0", "14.2.0"),
    "v14.2.0 / master (2026-08)": ("14.2.0", None),
}
# 'cupy-cuda12x: CUDA 12.x (first appears in v11.5.0 docs)'
_CUPY_PKG_SINCE = {("v11.x (11.0.0 .. 11.6.0)", "cupy-cuda12x"): "11.5.0"}


def build_cupy_chainer(ref: dict[str, Any]) -> dict[str, Any]:
    cc = ref["cupy_chainer"]
    w = cc["cupy_wheel_packages"]
    rows = []
    for r in w["by_cupy_major"]:
        lo, hi = _CUPY_ROW_SPAN[r["cupy"]]
        pk = r["packages"]
        packages = {}
        if isinstance(pk, list):
            for p in pk:
                packages[p] = _pkg_range(p, None)
        else:
            for p, text in pk.items():
                packages[p] = _pkg_range(p, text)
        for p in packages:
            since = _CUPY_PKG_SINCE.get((r["cupy"], p))
            if since:
                packages[p]["since"] = since
        row = {
            "label": r["cupy"],
            "from": lo,
            "until": hi,
            "cuda_toolkits": r["cuda_toolkits"],
            "packages": packages,
        }
        for k in ("python", "cudnn_supported", "dropped", "note"):
            if k in r:
                row[k] = r[k]
        rows.append(row)
    ch = cc["chainer_7_8_1"]
    # cupy_chainer.chainer_7_8_1.practical_pairings is free text; structured by hand here.
    pairings = [
        {
            "cuda_min": "8.0",
            "cuda_max": "11.0",
            "cupy": "7.8.0",
            "packages": "cupy-cuda80 .. cupy-cuda110",
            "in_spec": True,
            "status": "official",
        },
        {
            "cuda_min": "11.1",
            "cuda_max": "11.x",
            "cupy": ">=8",
            "packages": "cupy-cuda111 .. cupy-cuda117, cupy-cuda11x",
            "in_spec": False,
            "status": "inferred",
            "note": "outside Chainer's specifier; CuPy v8 support called experimental",
        },
        {
            "cuda_min": "12.0",
            "cuda_max": "12.x",
            "cupy": ">=11.5",
            "packages": "cupy-cuda12x",
            "in_spec": False,
            "status": "inferred",
            "note": "outside Chainer's specifier; unverified",
        },
        {
            "cuda_min": "13.0",
            "cuda_max": "13.x",
            "cupy": ">=13.6",
            "packages": "cupy-cuda13x",
            "in_spec": False,
            "status": "inferred",
            "note": "with CuPy v14 cuDNN is gone and NumPy>=2 is required; "
            "Chainer 7.8.1 under NumPy 2 not verified",
        },
    ]
    # For CUDA 10.2 the reference adds: newer cupy-cuda102 (<= v12) is out-of-spec.
    chainer = {
        "version": "7.8.1",
        "versions": ["7.8.1", "7.8.1.post1"],
        **src(ch["source"]),
        **stat(ch["status"]),
        "released": ch["released"],
        "python_requires": ch["python_requires"],
        "cupy_specifier": ch["cupy_specifier"],
        # docs: 'CuPy v7.8.0 is the recommended version for Chainer v7 series.'
        "cupy_recommended": "7.8.0",
        "cupy_packages_checked": ch["cupy_packages_checked_by_chainer"],
        "enforcement": " ".join(ch["enforcement"].split()),
        "newer_cupy_evidence": ch["newer_cupy_evidence"],
        "pairings": pairings,
    }
    return {
        "cupy_wheels": {
            **src(w["source"]),
            **stat(w["status"]),
            "rows": rows,
            "package_lifetimes": w["package_lifetimes_summary"],
            "gpu_requirement_text": w["gpu_requirement_text"],
        },
        "chainer": [chainer],
    }


# --------------------------------------------------------------------------------------------
# cuDNN
# --------------------------------------------------------------------------------------------
def _cuda_cells(cells: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Structure cuDNN support-matrix CUDA cells into (listed, footnoted, inferred, not read).

    Cells read: '11.0 (SM 3.5+, r450)', '10.1 Update 2 (...)', '11.0 - 11.8 (cuda11)', '11.7 .. 11.3',
    '12.x (cuda12)', '11.2[fn]', '10.2 (not read; inferred ...)', '10.2 (table truncated in excerpt)'.
    """
    listed: list[str] = []
    fn: list[str] = []
    inferred: list[str] = []
    unread: list[str] = []
    for cell in cells:
        c = cell.strip()
        target = listed
        if "inferred" in c:
            target = inferred
        elif "truncated" in c:
            target = unread  # '10.2 (table truncated in excerpt)': the row was not read
        m = re.match(r"(\d+\.\d+|\d+\.x)(?:\.\d+)?\s*(?:-|\.\.)\s*(\d+\.\d+)", c)
        if m:
            a, b = m.group(1), m.group(2)
            lo, hi = (a, b) if float(a) <= float(b) else (b, a)
            target.extend(minor_range(lo, hi))
            continue
        m = re.match(r"(\d+\.(?:\d+|x))", c)
        assert m, c
        v = m.group(1)
        target.append(v)
        if "[fn]" in c:
            fn.append(v)
    return listed, fn, inferred, unread


def _cc_cells(cells: list[str]) -> tuple[list[str], list[str]]:
    ccs, fn = [], []
    for c in cells:
        m = re.match(r"(\d+\.\d+)(\[fn\d*\])?", c)
        assert m, c
        ccs.append(m.group(1))
        if m.group(2):
            fn.append(m.group(1))
    return ccs, fn


def _cudnn_span(label: str) -> tuple[str, str]:
    """'7.6.4-7.6.5' -> ('7.6.4', '7.6.5'); '8.9.5 / 8.9.6'; '8.3.x' -> ('8.3.0', '8.3.99');
    '8.0.0-8.0.1 Preview'; '9.4.0 (CUDA 11 non-static)'."""
    nums = re.findall(r"\d+\.\d+\.(?:\d+|x)", label)
    lo, hi = nums[0], nums[-1]
    return lo.replace(".x", ".0"), hi.replace(".x", ".99")


def build_cudnn(ref: dict[str, Any]) -> dict[str, Any]:
    c = ref["cudnn"]
    entries = []
    for e in c["entries"]:
        lo, hi = _cudnn_span(e["cudnn"])
        builds = []
        if "cuda" in e:
            listed, fn, inferred, unread = _cuda_cells(e["cuda"])
            b: dict[str, Any] = {"name": "all", "cuda": listed}
            if fn:
                b["cuda_footnoted"] = fn
            if inferred:
                b["cuda_inferred"] = inferred
            if unread:
                b["cuda_unread"] = unread
            if isinstance(e.get("cc"), list):
                b["cc"], ccfn = _cc_cells(e["cc"])
                if ccfn:
                    b["cc_footnoted"] = ccfn
            # 'SM 3.5 and later' / '11.x build SM 3.5+; 10.2 build SM 3.0+' / 'SM 3.5+ for 11.x':
            # the 11.x builds' lowest compute capability (cudnn entries 8.2.x, 8.4.0, 8.5.0).
            cc_text = e.get("cc_11x") or (e.get("cc") if isinstance(e.get("cc"), str) else None)
            if cc_text:
                m = re.search(r"(?:11\.x build )?SM (\d\.\d)\+?", cc_text)
                b["cc_min_cuda11"] = m.group(1) if m else None
            if isinstance(e.get("driver"), dict):
                b["driver_linux"] = {
                    fam: floor(v.split("/")[0].strip().replace(">= ", ">=")) for fam, v in e["driver"].items()
                }
            builds.append(b)
        for key in ("cuda_13_build", "cuda_12_blackwell_build", "cuda_12_build", "cuda_11_build"):
            if key in e:
                bb = e[key]
                listed, fn, _, _ = _cuda_cells(bb["cuda"])
                b = {"name": key.removesuffix("_build"), "cuda": listed}
                if "cc" in bb:
                    b["cc"], ccfn = _cc_cells(bb["cc"])
                    if ccfn:
                        b["cc_footnoted"] = ccfn
                if "driver" in bb:
                    b["driver_linux"] = floor(bb["driver"].split("/")[0].strip())
                builds.append(b)
        row = {
            "cudnn": e["cudnn"],
            "from": lo,
            "to": hi,
            "builds": builds,
            **src(e["source"]),
            **stat(e["status"]),
        }
        if "not_supported" in e:
            row["cuda_not_supported"] = [".".join(v.split(".")[:2]) for v in e["not_supported"]]
        if "note" in e:
            row["note"] = e["note"]
        entries.append(row)
    dp = c["drop_points"]
    return {
        "support_matrix": {"note": c["source_note"], "entries": entries},
        "drop_points": {
            # drop_points: free text; the versions named in it, structured by hand.
            "cuda_11_last_seen": "9.10.2",
            "maxwell_pascal_volta_last_seen": "9.10.2",
            "first_without_maxwell_pascal_volta_seen": "9.17.0",
            "notes": [
                dp["cuda_11_build_last_seen"]["status"],
                dp["maxwell_pascal_volta_last_seen"]["status"],
                dp["corroboration"],
            ],
            "source": "nvidia_cudnn_sm_latest_9_10_2",
            "also": ["nvidia_cudnn_sm_latest_9_17"],
            "status": "official",
        },
    }


# --------------------------------------------------------------------------------------------
# GPUs and architectures
# --------------------------------------------------------------------------------------------
# gpu_arch.architectures[*].example_gpus split by hand into one row per product. Names from a range
# or a wildcard ('Quadro RTX 4000-8000', 'RTX A6000-A2000', 'GeForce RTX 20xx') are expanded; the
# models between the two ends of a range are marked inferred. 'xx' in a name matches any digits.
_OFF, _INF = "official", "inferred"
GPUS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "Kepler": {"3.7": [("Tesla K80", _OFF)], "3.5": [("Tesla K40", _OFF), ("Tesla K20", _OFF)]},
    "Maxwell": {
        "5.2": [
            ("GeForce GTX 980 Ti", _OFF),
            ("GeForce GTX 980", _OFF),
            ("GeForce GTX 970", _OFF),
            ("GeForce GTX TITAN X", _OFF),
            ("Tesla M40", _OFF),
            ("Tesla M60", _OFF),
        ],
        "5.0": [("GeForce GTX 750 Ti", _OFF), ("Quadro K2200", _OFF)],
        "5.3": [("Jetson Nano", _OFF)],
    },
    "Pascal": {
        "6.0": [("Tesla P100", _OFF), ("Quadro GP100", _OFF)],
        "6.1": [
            ("GeForce GTX 1080 Ti", _OFF),
            ("GeForce GTX 1080", _OFF),
            ("GeForce GTX 1070", _OFF),
            ("GeForce GTX 1060", _OFF),
            ("GeForce GTX 1050", _OFF),
            ("TITAN Xp", _OFF),
            ("Tesla P40", _OFF),
            ("Tesla P4", _OFF),
        ],
        "6.2": [("Jetson TX2", _OFF)],
    },
    "Volta": {
        "7.0": [("NVIDIA V100", _OFF), ("Quadro GV100", _OFF), ("TITAN V", _OFF)],
        "7.2": [("Jetson AGX Xavier", _OFF), ("Jetson Xavier NX", _OFF)],
    },
    # Turing's example_gpus is one string without a cc key: 'T4, Quadro RTX 4000-8000, GeForce RTX 20xx,
    # GTX 16xx (secondary mirror of cuda-gpus page)'; all sm_75.
    "Turing": {
        "7.5": [
            ("Tesla T4", "secondary"),
            ("Quadro RTX 4000", "secondary"),
            ("Quadro RTX 5000", _INF),
            ("Quadro RTX 6000", _INF),
            ("Quadro RTX 8000", "secondary"),
            ("GeForce RTX 20xx", "secondary"),
            ("GeForce GTX 16xx", "secondary"),
        ],
    },
    "Ampere": {
        "8.0": [("NVIDIA A100", "secondary"), ("NVIDIA A30", "secondary")],
        "8.6": [
            ("NVIDIA A40", _OFF),
            ("NVIDIA A10", _OFF),
            ("NVIDIA A16", _OFF),
            ("NVIDIA A2", _OFF),
            ("RTX A6000", _OFF),
            ("RTX A5500", _INF),
            ("RTX A5000", _INF),
            ("RTX A4500", _INF),
            ("RTX A4000", _INF),
            ("RTX A2000", _OFF),
            ("GeForce RTX 30xx", _OFF),
        ],
        "8.7": [("Jetson AGX Orin", _OFF), ("Jetson Orin NX", _OFF), ("Jetson Orin Nano", _OFF)],
    },
    # Ada's example_gpus is one string (all sm_89): 'L4, L40, L40S, RTX 6000/5000/4500/4000/2000 Ada,
    # GeForce RTX 4090/4080/4070/4060/4050'.
    "Ada Lovelace": {
        "8.9": [
            ("NVIDIA L4", _OFF),
            ("NVIDIA L40", _OFF),
            ("NVIDIA L40S", _OFF),
            ("RTX 6000 Ada", _OFF),
            ("RTX 5000 Ada", _OFF),
            ("RTX 4500 Ada", _OFF),
            ("RTX 4000 Ada", _OFF),
            ("RTX 2000 Ada", _OFF),
            ("GeForce RTX 4090", _OFF),
            ("GeForce RTX 4080", _OFF),
            ("GeForce RTX 4070", _OFF),
            ("GeForce RTX 4060", _OFF),
            ("GeForce RTX 4050", _OFF),
        ],
    },
    # Hopper: 'H100, H200, GH200' (sm_90).
    "Hopper": {"9.0": [("NVIDIA H100", _OFF), ("NVIDIA H200", _OFF), ("NVIDIA GH200", _OFF)]},
    "Blackwell (datacenter)": {
        "10.0": [("NVIDIA B200", _OFF), ("NVIDIA GB200", _OFF)],
        "10.3": [("NVIDIA B300", _OFF), ("NVIDIA GB300", _OFF)],
    },
    # From the architecture's own name 'Blackwell (Thor / Jetson T5000,T4000)' (sm_110).
    "Blackwell (Thor / Jetson T5000,T4000)": {"11.0": [("Jetson T5000", _OFF), ("Jetson T4000", _OFF)]},
    "Blackwell (consumer/workstation)": {
        "12.0": [
            ("GeForce RTX 5090", _OFF),
            ("GeForce RTX 5080", _OFF),
            ("GeForce RTX 5070 Ti", _OFF),
            ("GeForce RTX 5070", _OFF),
            ("GeForce RTX 5060 Ti", _OFF),
            ("GeForce RTX 5060", _OFF),
            ("GeForce RTX 5050", _OFF),
            ("RTX PRO 6000 Blackwell", _OFF),
            ("RTX PRO 5000 Blackwell", _OFF),
            ("RTX PRO 4500 Blackwell", _OFF),
            ("RTX PRO 4000 Blackwell", _OFF),
            ("RTX PRO 2000 Blackwell", _OFF),
        ],
        "12.1": [("NVIDIA GB10", _OFF), ("DGX Spark", _OFF)],
    },
}

# Per-architecture CUDA facts from the free-text fields first_cuda / deprecated_in / last_cuda /
# cudnn_last of gpu_arch.architectures, structured by hand. 'last_cuda' is the newest toolkit that
# still builds for it (None = still supported); 'removed_in' the first toolkit without it.
ARCH_FACTS: dict[str, dict[str, Any]] = {
    # 'last_cuda: 11.x (removed in 12.0)'; 11.8 is the last 11.x in the toolkit table.
    "Kepler": {
        "family": "Kepler",
        "first_cuda": {},
        "last_cuda": "11.8",
        "removed_in": "12.0",
        "deprecated_in": None,
    },
    # 'deprecated_in: 11.0'; 'last_cuda: 12.9 (12.x series); removed in 13.0'; cudnn_last '9.10.2 ...'
    "Maxwell": {
        "family": "Maxwell",
        "first_cuda": {},
        "last_cuda": "12.9",
        "removed_in": "13.0",
        "deprecated_in": "11.0",
        "cudnn_last_seen": "9.10.2",
    },
    "Pascal": {
        "family": "Pascal",
        "first_cuda": {},
        "last_cuda": "12.9",
        "removed_in": "13.0",
        "deprecated_in": None,
        "cudnn_last_seen": "9.10.2",
    },
    # 'first_cuda: 9.0 (Volta Compatibility Guide ...)'; cudnn_last '9.10.2 (footnoted)'
    "Volta": {
        "family": "Volta",
        "first_cuda": {"7.0": "9.0"},
        "last_cuda": "12.9",
        "removed_in": "13.0",
        "deprecated_in": None,
        "cudnn_last_seen": "9.10.2",
    },
    "Turing": {
        "family": "Turing",
        "first_cuda": {"7.5": "10.0"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
    # first_cuda: {sm_80: '11.0 (...)', sm_86: '11.1 (secondary ...)'}
    "Ampere": {
        "family": "Ampere",
        "first_cuda": {"8.0": "11.0", "8.6": "11.1"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
    "Ada Lovelace": {
        "family": "Ada Lovelace",
        "first_cuda": {"8.9": "11.8"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
    "Hopper": {
        "family": "Hopper",
        "first_cuda": {"9.0": "11.8"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
    # first_cuda: {sm_100: '12.8 (...)', sm_103: '12.9 (...)'}
    "Blackwell (datacenter)": {
        "family": "Blackwell",
        "first_cuda": {"10.0": "12.8", "10.3": "12.9"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
    # note: 'was sm_101 in CUDA 12.8/12.9; renumbered SM110 in CUDA 13.0'
    "Blackwell (Thor / Jetson T5000,T4000)": {
        "family": "Blackwell",
        "first_cuda": {},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
        "former_sms": ["10.1"],
    },
    "Blackwell (consumer/workstation)": {
        "family": "Blackwell",
        "first_cuda": {"12.0": "12.8", "12.1": "12.9"},
        "last_cuda": None,
        "removed_in": None,
        "deprecated_in": None,
    },
}


def build_gpus(ref: dict[str, Any]) -> dict[str, Any]:
    ga = ref["gpu_arch"]
    archs, gpus = [], []
    for a in ga["architectures"]:
        name = a["arch"]
        facts = ARCH_FACTS[name]
        ccs = [sm_to_cc(s) for s in a["sm"]]
        row: dict[str, Any] = {
            "name": name,
            "family": facts["family"],
            "sms": [c for c in ccs if not c[-1].isalpha()],
            "arch_specific": [c for c in ccs if c[-1].isalpha()],
            "first_cuda": facts["first_cuda"],
            "last_cuda": facts["last_cuda"],
            "removed_in": facts["removed_in"],
            "deprecated_in": facts["deprecated_in"],
        }
        for k in ("cudnn_last_seen", "former_sms"):
            if k in facts:
                row[k] = facts[k]
        for k in ("torch_variants_with_kernels", "note"):
            if k in a:
                row["torch_note" if k.startswith("torch") else "note"] = a[k]
        row.update(src(a["source"]))
        row.update(stat(a["status"]))
        archs.append(row)
        # Product names come from NVIDIA's GPU pages: gpu_source where the entry names it, else the
        # legacy-GPU page where the entry lists it (Kepler), else the current cuda-gpus page (Turing's
        # names are from 'a secondary mirror of cuda-gpus page'; Thor's from the arch name).
        listed = [a["source"]] if isinstance(a["source"], str) else list(a["source"])
        gsrc = a.get("gpu_source") or next(
            (k for k in ("nvidia_cuda_legacy_gpus", "nvidia_cuda_gpus") if k in listed), "nvidia_cuda_gpus"
        )
        for cc, names in GPUS[name].items():
            for gname, gstatus in names:
                gpus.append({"name": gname, "cc": cc, "arch": name, "source": gsrc, "status": gstatus})
    return {
        "binary_compat_rule": {
            "text": " ".join(ga["binary_compat_rule"]["text"].split()),
            **src(ga["binary_compat_rule"]["source"]),
            **stat(ga["binary_compat_rule"]["status"]),
        },
        "statements": [
            {"id": k, "text": ga[k]["text"], **src(ga[k]["source"]), **stat(ga[k]["status"])}
            for k in ("cuda_13_statement", "cuda_13_deprecation", "kepler_removals")
        ],
        "architectures": archs,
        "gpus": gpus,
    }


# --------------------------------------------------------------------------------------------
# error messages
# --------------------------------------------------------------------------------------------
# Substrings that identify each message in a log, chosen by hand from the reference's `text`
# (and variants): stable parts only, no placeholders.
NEEDLES = {
    "nvidia_smi_no_driver": ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"],
    "nvml_version_mismatch": ["Driver/library version mismatch", "driver/library version mismatch"],
    "cuda_insufficient_driver": [
        "CUDA driver version is insufficient for CUDA runtime version",
        "The NVIDIA driver on your system is too old",
    ],
    "no_kernel_image": [
        "no kernel image is available for execution on the device",
        "is not compatible with the current PyTorch installation",
        "device kernel image is invalid",
    ],
    "tf_libcudnn_so_8": ["Could not load dynamic library 'libcudnn.so.8'"],
    "docker_no_gpu_driver": ['could not select device driver "" with capabilities: [[gpu]]'],
}

# Entries without a `fix` field: a fix written from the entry's own fields (named per id).
FIX_BY_HAND = {
    # nvidia_smi_no_driver: from common_causes + diagnostics
    "nvidia_smi_no_driver": "Load the nvidia kernel module: install the driver or rebuild it for the running "
    "kernel (DKMS), blacklist nouveau, reboot after installing; check with "
    "lsmod | grep -E 'nvidia|nouveau', dkms status, dmesg | grep -i nvidia.",
    # cuda_insufficient_driver: from official_description ('install an updated NVIDIA display driver')
    # and meaning
    "cuda_insufficient_driver": "Install a newer NVIDIA driver (CUDA 13.x needs >= 580.65.06, "
    "12.x >= 525.60.13, 11.x >= 450.80.02), or use a framework build for an older CUDA.",
}


def build_errors(ref: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for e in ref["error_messages"]:
        fix = e.get("fix") or FIX_BY_HAND.get(e["id"])
        if not fix and "fix_official_steps" in e:
            fix = "; ".join(e["fix_official_steps"])
        status_raw = e.get("status") or e.get("text_status") or "secondary"
        row: dict[str, Any] = {
            "id": e["id"],
            "text": e["text"],
            "needles": NEEDLES[e["id"]],
            "meaning": e["meaning"],
            "fix": fix,
            **src(e["source"]),
            **stat(status_raw),
        }
        variants = {
            k: e[k]
            for k in (
                "container_variant",
                "typical_pytorch_form",
                "following_line",
                "newer_driver_second_line",
                "pytorch_warning_text",
                "tensorflow_equivalent",
                "related",
            )
            if k in e
        }
        if variants:
            row["variants"] = variants
        for k in ("api_code", "official_description", "common_causes", "diagnostics", "emitted_by"):
            if k in e:
                row[k] = e[k]
        rows.append(row)
    return {"error_signatures": rows}


# --------------------------------------------------------------------------------------------
def reference_meta(text: str) -> dict[str, str]:
    m = re.search(r"Compiled (\d{4}-\d{2}-\d{2})", text)
    if not m:
        raise SystemExit("reference has no 'Compiled YYYY-MM-DD' line")
    compiled = m.group(1)
    return {
        "compiled": compiled,
        "kb_version": f"{compiled.replace('-', '.')}.{SCHEMA}",
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


BUILDERS = {
    "sources": (build_sources, "Where every table's numbers come from (key -> url, type)."),
    "drivers": (
        build_drivers,
        "Minimum Linux/Windows driver per CUDA toolkit, and minor-version compatibility.",
    ),
    "torch": (build_torch, "PyTorch releases: CUDA builds, cuDNN, wheel variants, arch lists per variant."),
    "tensorflow": (build_tensorflow, "TensorFlow tested GPU build configurations (CUDA, cuDNN, Python)."),
    "cupy_chainer": (build_cupy_chainer, "CuPy wheel packages per CuPy release; Chainer's CuPy requirement."),
    "cudnn": (build_cudnn, "cuDNN support matrices: CUDA versions, compute capabilities, drivers."),
    "gpus": (build_gpus, "GPU architectures and product names -> compute capability."),
    "errors": (build_errors, "Error messages of the stack: text, meaning, fix."),
}


def render(reference: Path) -> dict[str, str]:
    """File name -> YAML text, for every knowledge file."""
    text = reference.read_text(encoding="utf-8")
    # libyaml's loader when present (faster; same data); the dumper stays the pure-Python one so that
    # the output is byte-identical with or without libyaml.
    ref = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    meta = reference_meta(text)
    out = {}
    for name in FILES:
        fn, about = BUILDERS[name]
        doc = {**header(meta, about), **fn(ref)}
        out[f"{name}.yaml"] = (
            "# Generated by scripts/build_knowledge.py from compat_reference.yaml. Do not edit;\n"
            "# change the reference or the script and run it again.\n"
            + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110, default_flow_style=None)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ")
    args = ap.parse_args(argv)
    if not args.reference.is_file():
        sys.stderr.write(f"{args.reference}: no such file\n")
        return 2
    files = render(args.reference)
    if args.check:
        stale = [
            n
            for n, t in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != t
        ]
        if stale:
            sys.stderr.write("out of date: " + ", ".join(stale) + "\n")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, t in files.items():
        (args.out / n).write_text(t, encoding="utf-8")
    sys.stdout.write(f"wrote {len(files)} files to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
