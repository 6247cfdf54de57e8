"""Facts of the knowledge base, checked against the compatibility reference and real reports."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpuops.errors import UsageError
from gpuops.knowledge import load_kb, read_data
from gpuops.knowledge.versions import parse_cuda, version_key
from tests.conftest import SHARED, require

kb = load_kb()


# -- the data files ------------------------------------------------------------------------------
def _tables(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "source" in node:
            out.append((path, node))
        for k, v in node.items():
            out.extend(_tables(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_tables(v, f"{path}[{i}]"))
    return out


def test_every_table_names_a_known_source_and_a_status() -> None:
    data = read_data()
    sources = data["sources"]["sources"]
    count = 0
    for name, doc in data.items():
        assert doc["kb_version"] == kb.kb_version
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(doc["compiled"]))
        if name == "sources":
            continue
        for path, table in _tables(doc):
            count += 1
            keys = [table["source"], *table.get("also", [])]
            assert all(k in sources for k in keys), (name, path, keys)
            assert table.get("status") in {"official", "secondary", "inferred"}, (name, path)
    assert count > 100
    assert all(s["url"] is None or s["url"].startswith("https://") for s in sources.values())


# -- drivers -------------------------------------------------------------------------------------
def test_driver_floors() -> None:
    f = kb.min_driver_for_cuda("12.1")
    assert (f.full_feature_min, f.minor_compat_min) == ("530.30.02", "525.60.13")
    assert f.source.key == "nvidia_cuda_rn_13_2_2" and f.source.status == "official"
    f = kb.min_driver_for_cuda("11.0")
    # 11.0 shipped with 450.51.05, below the 11.x minor-compat floor 450.80.02: no lower floor.
    assert (f.full_feature_min, f.minor_compat_min) == ("450.51.05", None)
    assert kb.min_driver_for_cuda("12.2 Update 2").full_feature_min == "535.104.05"
    assert kb.min_driver_for_cuda("12.2.2").full_feature_min == "535.104.05"
    assert kb.min_driver_for_cuda("cu130").full_feature_min == "580.65.06"
    assert kb.min_driver_for_cuda("9.0").full_feature_min == "384.81"
    assert kb.min_driver_for_cuda("8.0") is None
    assert kb.min_driver_for_cuda("13.3").source.status == "secondary"


def test_driver_supports_cuda() -> None:
    assert kb.driver_supports_cuda("470.182.03", "12.1").ok is False
    v = kb.driver_supports_cuda("470.182.03", "11.8")
    assert v.ok is True and "minor-version" in v.reason
    assert kb.driver_supports_cuda("525.60.13", "12.8").ok is True
    assert kb.driver_supports_cuda("575.57.08", "13.0").ok is False
    # Before CUDA 11 each toolkit needs its own driver.
    assert kb.driver_supports_cuda("418.39", "10.2").ok is False
    assert kb.driver_supports_cuda("440.33", "10.2").ok is True
    assert kb.driver_supports_cuda("400.1", "8.0").ok is None
    with pytest.raises(UsageError):
        kb.driver_supports_cuda("five-three-five", "12.1")


def test_newest_cuda_for_driver() -> None:
    assert kb.newest_cuda_for_driver("535.104.05") == "12.2"
    assert kb.newest_cuda_for_driver("470.182.03") == "11.4"
    assert kb.newest_cuda_for_driver("580.65.06") == "13.0"
    assert kb.newest_cuda_for_driver("300.1") is None
    assert kb.cuda_from_driver_api_int(11040) == "11.4"
    assert kb.cuda_from_driver_api_int(12020) == "12.2"


def test_real_06_old_gke_driver_with_cu121_torch() -> None:
    """pytorch/pytorch#112553: torch 2.1.0+cu121 on driver 470.182.03, which torch saw as 11040."""
    require((SHARED / "doctor-cases/real/real_06.yaml").is_file(), "shared doctor-cases not found")
    import yaml

    case = yaml.safe_load((SHARED / "doctor-cases/real/real_06.yaml").read_text())
    driver = case["facts"]["nvidia_driver"].split()[0]
    seen = int(str(case["facts"]["driver_cuda_version_seen_by_torch"]).split()[0])
    built = case["facts"]["collect_env"]["CUDA used to build PyTorch"]
    assert kb.cuda_from_driver_api_int(seen) == kb.newest_cuda_for_driver(driver)
    assert kb.driver_supports_cuda(driver, built).ok is False
    # The fix the thread used: the cu118 build of the same release, which the driver runs.
    assert "cu118" in kb.torch_variants("2.1.0")
    assert kb.driver_supports_cuda(driver, parse_cuda("cu118")).ok is True
    assert [s.id for s in kb.match_errors(case["symptom"])] == ["cuda_insufficient_driver"]


# -- GPUs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cc"),
    [
        ("NVIDIA GeForce GTX 1080 Ti", "6.1"),
        ("GTX 1080", "6.1"),
        ("GeForce GTX 980 Ti", "5.2"),
        ("Tesla K80", "3.7"),
        ("H100 80GB HBM3", "9.0"),
        ("NVIDIA H200", "9.0"),
        ("Tesla V100-SXM2-16GB", "7.0"),
        ("NVIDIA A100-SXM4-40GB", "8.0"),
        ("NVIDIA GeForce RTX 3090", "8.6"),
        ("NVIDIA GeForce RTX 5090", "12.0"),
        ("NVIDIA RTX 6000 Ada Generation", "8.9"),
        ("Quadro RTX 6000", "7.5"),
        ("sm_52", "5.2"),
        ("8.6", "8.6"),
    ],
)
def test_gpu_cc(name: str, cc: str) -> None:
    assert kb.gpu_cc(name) == cc


def test_unknown_gpu_and_arch() -> None:
    assert kb.gpu_cc("Radeon RX 7900") is None
    a = kb.gpu_arch("5.2")
    assert a.name == "Maxwell" and "5.2" in a.sms and a.removed_in == "13.0" and a.last_cuda == "12.9"
    assert kb.gpu_arch("sm_90a").name == "Hopper"
    assert kb.gpu_arch("10.1").name.startswith("Blackwell (Thor")  # renumbered sm_110 in CUDA 13.0
    assert kb.gpu_arch("4.0") is None
    assert kb.gpu_arch("GTX 980") is None  # a name is not a compute capability


def test_cubin_and_ptx_rule() -> None:
    # The reference's own examples: 8.0 cubin runs on 8.6; 8.6 not on 8.0; 8.x not on 9.0.
    assert kb.build_runs_on("8.6", ["8.0"])
    assert not kb.build_runs_on("8.0", ["8.6"])
    assert not kb.build_runs_on("9.0", ["8.0", "8.6"])
    assert kb.build_runs_on("9.0", ["8.6"], ptx=["8.6"])  # PTX is JIT-compiled for newer GPUs
    assert not kb.build_runs_on("7.5", [], ptx=["8.0"])
    assert not kb.build_runs_on("9.1", ["9.0a"])  # arch-specific cubins run on that GPU only


# -- torch ---------------------------------------------------------------------------------------
def test_torch_tables() -> None:
    assert kb.torch_variants("2.13.0") == ["cu126", "cu130", "cu132"]
    assert kb.torch_variants("1.13.1") == ["cu116", "cu117"]
    assert kb.torch_cudnn("2.13.0", "12.6") == "9.10.2.21"
    assert kb.torch_cudnn("2.13.0", "cu130") == "9.20.0.48"
    assert kb.torch_cudnn("3.0.0", "12.6") is None
    al = kb.torch_arch_list("2.13.0", "cu130")
    assert al.sms == ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"] and al.ptx == ["12.0"]
    assert kb.torch_arch_list("2.13.0", "cu130", "windows").ptx == []  # PTX on Linux only
    assert kb.torch_arch_list("2.7.1", "12.8").status == "inferred"  # measured on 2.7.0 only


def test_gtx_980_ti_runs_cu126_not_cu130() -> None:
    fits = {f.variant: f for f in kb.torch_variants_for_gpu(kb.gpu_cc("GTX 980 Ti"), "2.13.0")}
    assert fits["cu126"].runs is True and "sm_50" in fits["cu126"].via
    assert fits["cu130"].runs is False
    assert fits["cu132"].runs is False


def test_h100_in_every_cu118_and_newer_variant() -> None:
    checked = 0
    for f in kb.torch_variants_for_gpu("9.0"):
        if f.runs is None:
            continue
        assert f.runs is (version_key(f.cuda) >= (11, 8)), (f.torch, f.variant)
        checked += f.runs
    assert checked >= 25
    # torch 1.13.1 cu117 has no sm_90 (H800 rejected, per the secondary log).
    assert [f.runs for f in kb.torch_variants_for_gpu("9.0", "1.13.1") if f.variant == "cu117"] == [False]


def test_volta_in_cu128_only_for_2_8_to_2_10() -> None:
    with_cu128 = {f.torch: f.runs for f in kb.torch_variants_for_gpu("7.0") if f.variant == "cu128"}
    assert with_cu128 == {"2.11": False, "2.10": True, "2.9": True, "2.8": True, "2.7.0": False}


def test_measured_arch_lists_agree_with_table() -> None:
    entries = read_data()["torch"]["arch_lists"]["entries"]
    seen = 0
    for e in entries:
        for build, sms in e.get("cross_check_get_arch_list", {}).items():
            version, variant = build.split("+")
            assert kb.torch_arch_list(version, variant).sms == sms, build
            seen += 1
    assert seen == 3


# -- TensorFlow, CuPy, Chainer, cuDNN ---------------------------------------------------------------
def test_tensorflow() -> None:
    b = kb.tensorflow_build("2.17")
    assert (b.version, b.cuda, b.cudnn) == ("2.17.0", "12.3", "8.9")
    b = kb.tensorflow_build("2.20.0")
    assert (b.cuda, b.cudnn, b.python) == ("12.5", "9.3", "3.9-3.13")
    assert kb.tensorflow_build("2.16").version == "2.16.1"
    assert kb.tensorflow_build("2.11", "windows") is None  # no native-Windows GPU after 2.10
    assert kb.tensorflow_build("1.15").package == "tensorflow_gpu"
    assert all(version_key(b.cuda)[0] < 13 for b in kb.tensorflow_builds())


def test_cupy_and_chainer() -> None:
    r = kb.cupy_package_cuda("cupy-cuda110")
    assert (r.cuda_min, r.cuda_max) == ("11.0", "11.0")
    r = kb.cupy_package_cuda("cupy-cuda11x")
    assert (r.cuda_min, r.cuda_max) == ("11.2", "11.8") and r.contains("11.8") and not r.contains("12.0")
    r = kb.cupy_package_cuda("cupy-cuda12x")
    assert (r.cuda_min, r.cuda_max) == ("12.0", "12.x") and r.contains("12.9") and r.cupy_from == "11.5.0"
    assert kb.cupy_package_cuda("cupy-cuda12x", "11.2.0") is None
    assert kb.cupy_package_cuda("cupy-cuda11x", "14.0.0") is None  # v14 dropped CUDA 11
    assert kb.cupy_package_cuda("cupy-cuda110", "7.8.0").cuda_max == "11.0"
    assert kb.chainer_cupy_specifier("7.8.1") == ">=7.7.0,<8.0.0"
    assert kb.chainer_cupy_specifier("6.0.0") is None


def test_cudnn() -> None:
    assert kb.cudnn_supports_cuda("9.10.2.21", "11.8") is True
    assert kb.cudnn_supports_cuda("9.17.0", "11.8") is False
    assert kb.cudnn_supports_cuda("8.9.2.26", "12.1") is True  # between 8.9.1 and 8.9.5, both list it
    assert kb.cudnn_cuda_support("8.9.2.26", "12.1").source.status == "inferred"
    assert kb.cudnn_supports_cuda("9.12.0", "11.8") is None  # the drop point was not read
    assert kb.cudnn_supports_cuda("7.6.5", "9.1") is False
    c = kb.cudnn_for_cc("6.1")
    assert (c.last_listed, c.first_unlisted) == ("9.10.2", "9.17.0")


def test_error_signatures() -> None:
    sigs = {s.id: s for s in kb.error_signatures()}
    assert set(sigs) >= {"nvml_version_mismatch", "no_kernel_image", "docker_no_gpu_driver"}
    for s in sigs.values():
        assert s.fix and s.meaning and s.source.key in kb.sources() and s.matches(s.text), s.id
    log = "nvidia-container-cli: initialization error: nvml error: driver/library version mismatch: unknown."
    assert [s.id for s in kb.match_errors(log)] == ["nvml_version_mismatch"]
