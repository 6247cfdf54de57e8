"""The error-signature catalogue (``gpuops/knowledge/signatures_*.yaml``, ``xid.yaml``) and its loader.

Every entry's example is a real printed line; these tests check that each example is recognised by
its own entry and resolves to its code, that the data is well-formed, that Xid lines resolve through
NVIDIA's Xid table, that real text without errors gives no hit, and that the ids doctor's checks use
keep their capture groups on the real lines of the doctor fixtures.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuops.doctor import signatures as sigs
from gpuops.doctor.findings import CODES

FIXTURES = Path(__file__).resolve().parents[1] / "doctor" / "fixtures"
URL = re.compile(r"^https?://\S+$")


def _raw_files() -> dict[str, Any]:
    pkg = resources.files("gpuops.knowledge")
    names = sorted(p.name for p in pkg.iterdir() if re.match(r"signatures_.*\.yaml$", p.name))
    return {n: yaml.safe_load((pkg / n).read_text(encoding="utf-8")) for n in names}


RAW = _raw_files()
ENTRIES = [(name, e) for name, doc in RAW.items() for e in doc["signatures"]]
XIDS = yaml.safe_load((resources.files("gpuops.knowledge") / "xid.yaml").read_text(encoding="utf-8"))["xids"]


def _capture_texts(path: Path) -> list[tuple[str, str]]:
    """(origin, text) of a capture's attached logs and command outputs."""
    d = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for lg in d.get("logs") or []:
        if isinstance(lg, dict):
            out.append((lg.get("origin", "log"), lg.get("text", "")))
    for name, cmd in (d.get("commands") or {}).items():
        for stream in ("stdout", "stderr"):
            if cmd.get(stream):
                out.append((name, cmd[stream]))
    return out


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


# ------------------------------------------------------------------------------------------ the data
def test_files_found() -> None:
    assert "signatures_nvidia.yaml" in RAW
    assert {s.file for s in sigs.catalogue()} == set(RAW)


@pytest.mark.parametrize(("file", "entry"), ENTRIES, ids=[e["id"] for _, e in ENTRIES])
def test_example_matches_and_resolves(file: str, entry: dict[str, Any]) -> None:
    example = entry.get("example")
    assert example, f"{file}: {entry['id']} has no example"
    assert re.search(entry["pattern"], example, re.I | re.S), f"{entry['id']}: example does not match"
    hits = [h for h in sigs.match(example, "example") if h.signature.id == entry["id"]]
    assert hits, f"{entry['id']}: match() does not report its own example"
    if entry["id"] == sigs.XID_SIGNATURE:
        row = sigs.xid_table()[int(hits[0].match.group(2))]
        assert hits[0].code == row.code
    else:
        assert hits[0].code == entry["code"]


def test_codes_and_classes_known() -> None:
    for s in sigs.catalogue():
        assert s.code in CODES, s.id
        assert set(s.also) <= set(CODES), s.id
        assert s.klass in sigs.CLASSES, s.id
        assert s.meaning and s.action, s.id


def test_sources_are_urls() -> None:
    for file, e in ENTRIES:
        assert URL.match(str(e.get("source", ""))), f"{file}: {e['id']}: source"
        assert URL.match(str(e.get("example_source", ""))), f"{file}: {e['id']}: example_source"


def test_ids_unique_across_files() -> None:
    ids = [e["id"] for _, e in ENTRIES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_nvidia_file_size() -> None:
    nvidia = [e for e in RAW["signatures_nvidia.yaml"]["signatures"] if e.get("example")]
    assert len(nvidia) >= 85


def test_enough_real_examples() -> None:
    # the whole catalogue, NVIDIA and CUDA/framework files together
    assert sum(1 for _, e in ENTRIES if e.get("example") and e.get("example_source")) >= 150


def test_groups_expanded() -> None:
    s = sigs.by_id("nvidia_smi_no_driver")
    groups = yaml.safe_load((resources.files("gpuops.knowledge") / "signature_groups.yaml").read_text())
    assert set(groups["driver_down"]) - {s.code} <= set(s.also)
    assert not any(a.startswith("@") for a in s.also)


# ------------------------------------------------------------------------------------------ Xid table
def test_xid_rows_complete() -> None:
    numbers = [r["xid"] for r in XIDS]
    assert numbers == list(range(1, max(numbers) + 1)), "the catalogue lists every number from 1"
    for r in XIDS:
        for key in ("name", "class", "action", "code", "source"):
            assert isinstance(r.get(key), str) and r[key].strip(), (r["xid"], key)
        assert r["class"] in sigs.CLASSES, r["xid"]
        assert r["code"] in CODES, r["xid"]
        assert URL.match(r["source"]), r["xid"]


def test_xid_classes_follow_the_catalogue() -> None:
    table = sigs.xid_table()
    assert table[79].code == "gpu_fallen_off_bus"
    assert {table[x].code for x in (119, 120)} == {"gsp_firmware_error"}
    assert {table[x].code for x in (13, 31, 43, 45)} == {"gpu_application_fault"}
    assert {table[x].code for x in (48, 63, 64, 74, 92, 94, 95)} == {"gpu_hardware_fault"}
    assert table[48].klass == "hardware" and table[13].klass == "application"


@pytest.mark.parametrize("row", [r for r in XIDS if r.get("example")], ids=lambda r: f"xid{r['xid']}")
def test_xid_line_resolves_through_the_table(row: dict[str, Any]) -> None:
    assert URL.match(row["example_source"])
    (hit,) = [h for h in sigs.match(row["example"], "dmesg") if h.signature.id == sigs.XID_SIGNATURE]
    assert hit.xid == row["xid"]
    assert (hit.code, hit.klass) == (row["code"], row["class"])
    assert (hit.action, hit.source) == (row["action"], row["source"])
    assert row["name"] in hit.meaning
    assert hit.line.endswith(row["example"].strip()[-30:])


def test_each_xid_number_once_per_text() -> None:
    # the real Xid 31 and 69 lines, each repeated as in a burst: one hit per Xid number
    lines = [r["example"] for r in XIDS if r["xid"] in (31, 69)]
    text = "\n".join(lines * 3)
    hits = [h for h in sigs.match(text) if h.signature.id == sigs.XID_SIGNATURE]
    assert sorted(h.xid for h in hits) == [31, 69]


# ------------------------------------------------------------------------------------------ matching
def test_text_without_errors_gives_no_hit() -> None:
    # a real capture of a machine whose GPU stack printed no error (docker info, ldconfig -p, dpkg ...)
    texts = _capture_texts(FIXTURES / "devbox.capture.yaml")
    assert texts
    assert sigs.scan(texts) == []


def test_no_text_does_not_load_the_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    sigs._load.cache_clear()
    assert sigs.scan([]) == [] and sigs.scan([("nvidia-smi", "")]) == []
    assert sigs.match("   \n") == []
    assert sigs._load.cache_info().currsize == 0


def test_warm_load_needs_no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    sigs._load.cache_clear()
    cold = sigs.catalogue()
    sigs._load.cache_clear()
    monkeypatch.setitem(sys.modules, "yaml", None)  # importing yaml now fails
    warm = sigs.catalogue()
    assert warm == cold and sigs.xid_table()[79].code == "gpu_fallen_off_bus"
    sigs._load.cache_clear()


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.capture.yaml")))
def test_needles_never_hide_a_match(fixture: str) -> None:
    # the literal prefilter must give exactly the hits a plain search of every pattern gives
    for origin, text in _capture_texts(FIXTURES / fixture):
        plain = {s.id for s in sigs.catalogue() if re.search(s.pattern, text, re.I | re.S)}
        assert {h.signature.id for h in sigs.match(text, origin)} == plain


def test_needle_is_in_every_example() -> None:
    for s in sigs.catalogue():
        assert s.needle in s.example.lower(), s.id


def test_hit_line_is_the_whole_line() -> None:
    text = (FIXTURES / "real_19.capture.yaml").read_text(encoding="utf-8")
    (h,) = [h for h in sigs.match(text) if h.signature.id == "module_not_signed"]
    assert h.line.startswith("ERROR: The kernel module failed to load, because it was not signed")
    assert h.line.endswith("sign the kernel module when prompted to do so.")


# ------------------------------------------------------------------------------------------ validation
GOOD = {
    "id": "x_test",
    "pattern": "boom",
    "code": "driver_not_loaded",
    "also": [],
    "class": "driver",
    "meaning": "m",
    "action": "a",
    "source": "https://example.org/doc",
    "example": "boom",
    "example_source": "https://example.org/issue",
}


def _validate(*entries: dict[str, Any]) -> dict[str, Any]:
    pkg = resources.files("gpuops.knowledge")
    raw = {
        "signatures_t.yaml": yaml.safe_dump({"signatures": list(entries)}).encode(),
        "signature_groups.yaml": (pkg / "signature_groups.yaml").read_bytes(),
        "xid.yaml": (pkg / "xid.yaml").read_bytes(),
    }
    return sigs._validate(raw, set(CODES))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": "no_such_code"}, "unknown code 'no_such_code'"),
        ({"class": "firmware"}, "bad class 'firmware'"),
        ({"also": ["@no_such_group"]}, "unknown group '@no_such_group'"),
        ({"also": ["nope"]}, "unknown code 'nope' in 'also'"),
        ({"pattern": "("}, "pattern does not compile"),
        ({"source": "docs.nvidia.com"}, "'source' is not an http(s) URL"),
        ({"id": "Bad-Id"}, "id must be snake_case"),
    ],
)
def test_bad_entry_is_one_clear_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(sigs.CatalogueError) as err:
        _validate({**GOOD, **change})
    assert str(err.value).startswith("signatures_t.yaml: entry ")
    assert message in str(err.value)


def test_duplicate_id_is_an_error() -> None:
    with pytest.raises(sigs.CatalogueError, match=r"signatures_t.yaml: entry 'x_test' \(#2\): duplicate id"):
        _validate(GOOD, GOOD)


def test_good_entry_validates() -> None:
    doc = _validate({**GOOD, "also": ["@driver_down"]})
    (e,) = doc["signatures"]
    assert "secure_boot_blocks_module" in e["also"] and "driver_not_loaded" not in e["also"]


# ------------------------------------------------------------------------------------------ ids in use
# The ids doctor's checks look up, with the capture groups they read, on real lines of the fixtures.
KEPT = [
    ("nvrm_api_mismatch", "real_04", ("367.44", "367.35")),
    ("nvrm_api_mismatch", "real_05", ("535.54.03", "530.30.02")),
    ("torch_driver_too_old", "real_06", ("11040",)),
    ("cuda_lib_missing", "real_11", ("libcublas.so.9.0", "9.0")),
    ("cudnn_lib_missing", "real_13", ("libcudnn.so.8", "8")),
    ("torch_cudnn_incompatible", "real_23", ("8, 3, 2", "8, 0, 3")),
    ("torch_cudnn_ld_path", "real_14", ()),
    ("cpp_extension_cuda_mismatch", "real_12", ("12.1", "11.7")),
    ("torch_arch_not_compatible", "real_15", ("86",)),
    ("nvrtc_invalid_arch", "real_16", ()),
    ("module_not_signed", "real_19", ()),
    ("cupy_multiple_packages", "real_24", ()),
    ("chainer_cupy_util_missing", "real_25", ()),
    ("cuda_system_not_ready", "real_26", ()),
    ("tf_no_known_devices", "real_08", ()),
]


@pytest.mark.parametrize(("sid", "fixture", "groups"), KEPT, ids=[f"{s}-{f}" for s, f, _ in KEPT])
def test_kept_ids_keep_their_groups(sid: str, fixture: str, groups: tuple[str, ...]) -> None:
    hits = [h for h in sigs.scan(_capture_texts(FIXTURES / f"{fixture}.capture.yaml")) if h[0].id == sid]
    assert hits, f"{sid} no longer matches {fixture}"
    assert hits[0][2].groups()[: len(groups)] == groups
