"""``gpuops compat`` through typer's CliRunner: human output, --json, and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from gpuops.cli.commands import compat

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    compat.register(app)
    return app


def run(cli: typer.Typer, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["compat", *args], env=ENV)
    return r.exit_code, r.output


def run_json(cli: typer.Typer, *args: str) -> dict:
    code, out = run(cli, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_driver_json(cli: typer.Typer) -> None:
    d = run_json(cli, "--driver", "470.182.03")["driver"]
    assert d["newest_cuda"] == "11.4"
    fam = {f["family"]: f["ok"] for f in d["families"]}
    assert fam == {"13.x": False, "12.x": False, "11.x": True}
    t21 = next(t for t in d["torch"] if t["torch"] == "2.1")
    assert (t21["fits"], t21["too_new"]) == (["cu118"], ["cu121"])
    tf = {t["version"]: t["verdict"]["ok"] for t in d["tensorflow"]}
    assert tf["2.14.0"] is True and tf["2.15.0"] is False
    cupy = {c["package"]: (c["in_chainer_spec"], c["verdict"]["ok"]) for c in d["cupy"]}
    assert cupy["cupy-cuda110"] == (True, True)
    assert cupy["cupy-cuda12x"] == (False, False)


def test_driver_human(cli: typer.Typer) -> None:
    code, out = run(cli, "--driver", "535.104.05")
    assert code == 0
    assert "Newest CUDA with the full feature set: 12.2 (12.2 Update 2)" in out
    assert "https://docs.nvidia.com/cuda/archive/13.2.2/cuda-toolkit-release-notes/index.html" in out


def test_gpu_by_name(cli: typer.Typer) -> None:
    g = run_json(cli, "--gpu", "GTX 980 Ti")["gpu"]
    assert (g["cc"], g["arch"]["name"]) == ("5.2", "Maxwell")
    assert (g["last_cuda"], g["removed_in_cuda"]) == ("12.9", "13.0")
    t213 = next(t for t in g["torch"] if t["torch"] == "2.13")
    assert (t213["with_kernels"], t213["without_kernels"]) == (["cu126"], ["cu130", "cu132"])
    assert g["recommended_torch"] == "torch 2.14 cu126"
    assert g["cudnn"]["last_listed"] == "9.10.2"


@pytest.mark.parametrize("arg", ["sm_52", "5.2"])
def test_gpu_by_cc(cli: typer.Typer, arg: str) -> None:
    code, out = run(cli, "--gpu", arg)
    assert code == 0
    assert "compute capability 5.2 (sm_52), Maxwell" in out
    assert "Last CUDA: 12.9 (removed in 13.0" in out


def test_torch_wheel(cli: typer.Typer) -> None:
    t = run_json(cli, "--torch", "2.13.0+cu130")["torch"]
    assert t["variant"] == "cu130" and len(t["builds"]) == 1
    b = t["builds"][0]
    assert (b["cuda"], b["cudnn"]) == ("13.0", "9.20.0.48")
    assert b["driver_floor"]["full_feature_min"] == "580.65.06"
    assert "5.0" not in b["archs"]["sms"] and b["archs"]["ptx"] == ["12.0"]


def test_tensorflow_and_chainer(cli: typer.Typer) -> None:
    d = run_json(cli, "--tensorflow", "2.17", "--chainer", "7.8.1")
    assert (d["tensorflow"]["linux"]["cuda"], d["tensorflow"]["linux"]["cudnn"]) == ("12.3", "8.9")
    assert d["chainer"]["chainer"]["cupy_specifier"] == ">=7.7.0,<8.0.0"
    inside = {p["package"] for p in d["chainer"]["in_spec_packages"]}
    assert "cupy-cuda110" in inside and "cupy-cuda11x" not in inside
    code, out = run(cli, "--chainer", "7.8.1")
    assert code == 0 and ">=7.7.0,<8.0.0" in out and "[inferred]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "Radeon RX 7900"], "unknown GPU 'Radeon RX 7900'"),
        (["--driver", "five"], "not a driver version: 'five'"),
        (["--torch", "2.13.0+cu118"], "torch 2.13.0 has no cu118 build"),
        (["--torch", "latest"], "not a torch version"),
        (["--tensorflow", "9.9"], "TensorFlow 9.9 is not in the knowledge base"),
        ([], "give at least one of"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli: typer.Typer, args: list[str], message: str) -> None:
    code, out = run(cli, *args)
    assert code == 2
    assert out.splitlines()[0].startswith(f"error: {message}")
    assert "Traceback" not in out


def test_help_teaches(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["compat", "--help"], env=ENV)
    assert r.exit_code == 0
    assert "gpuops compat --driver 535.104.05" in r.output
    assert "--json" in r.output


# ------------------------------------------------------------------------------------------ --error
# Real printed lines (their sources are the catalogue entries' example_source).
MISMATCH = "Failed to initialize NVML: Driver/library version mismatch"  # lyulyul/shine-cluster#30
XID79 = "NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus"  # NVIDIA/NVSentinel#155


def test_error_human(cli: typer.Typer) -> None:
    code, out = run(cli, "--error", MISMATCH)
    assert code == 0, out
    assert out.splitlines()[0] == MISMATCH
    assert "driver_library_mismatch_needs_reboot: loaded kernel module and user-space driver differ" in out
    assert "class:   driver" in out
    assert "https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceEnumvs.html" in out
    assert "knowledge base" not in out  # --error alone does not load the knowledge base


def test_error_from_stdin_json(cli: typer.Typer) -> None:
    dmesg = f"[ 1843.308145] some unrelated line\n[ 1843.439662] {XID79}\n"
    r = CliRunner().invoke(cli, ["compat", "--error", "-", "--json"], input=dmesg, env=ENV)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)["error"]
    assert d["matched"] is True
    (hit,) = d["hits"]
    assert (hit["id"], hit["xid"]) == ("nvrm_xid", 79)
    assert (hit["code"], hit["class"]) == ("gpu_fallen_off_bus", "hardware")
    assert hit["line"] == f"[ 1843.439662] {XID79}"
    assert hit["groups"] == ["0000:44:00", "79"]
    assert hit["action"].startswith("Immediate: RESTART_BM")
    assert hit["source"] == "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"


def test_error_no_match_exits_1_and_says_what_to_gather(cli: typer.Typer) -> None:
    # `nvidia-smi -L` of a working machine (NVIDIA/nvidia-container-toolkit#146)
    healthy = "GPU 0: NVIDIA GeForce RTX 2060 (UUID: GPU-2f68f999-7b41-e64a-3709-0c8c4fa756c0)"
    code, out = run(cli, "--error", healthy)
    assert code == 1
    assert "No known GPU error signature matches this text." in out
    assert "gpuops doctor --capture" in out
    code, out = run(cli, "--error", "all fine", "--json")
    assert code == 1 and json.loads(out) == {"error": {"matched": False, "hits": []}}


def test_error_with_other_options(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["compat", "--error", MISMATCH, "--driver", "535.104.05", "--json"], env=ENV)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["error"]["hits"][0]["code"] == "driver_library_mismatch_needs_reboot"
    assert d["driver"]["newest_cuda"] == "12.2"


def test_error_empty_text_is_usage_error(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["compat", "--error", "-"], input="", env=ENV)
    assert r.exit_code == 2
    assert r.output.splitlines()[0].startswith("error: --error needs a non-empty text")
