"""The environment fingerprint that tags every tracked run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from gpuops.doctor import load_capture
from gpuops.doctor.fingerprint import KEYS, environment_fingerprint

FIXTURES = Path(__file__).parent / "fixtures"


def test_fingerprint_of_this_machine():
    fp = environment_fingerprint()
    assert tuple(fp) == KEYS
    assert all(isinstance(v, str) and v for v in fp.values())
    # this machine: no GPU, no driver, torch CPU wheel in the venv
    assert fp["env.gpu"] == "none" and fp["env.gpu_count"] == "0"
    assert fp["env.driver"] == "unknown"
    assert fp["env.torch"].endswith("+cpu") and fp["env.torch_cuda"] == "cpu"
    assert fp["env.python"] == ".".join(map(str, sys.version_info[:3]))


def test_fingerprint_is_fast_and_never_imports_torch():
    code = (
        "import sys, time; t=time.perf_counter(); from gpuops.doctor.fingerprint import environment_fingerprint;"  # noqa: E501
        "fp=environment_fingerprint(); print(time.perf_counter()-t); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "False"
    environment_fingerprint()  # warm
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        environment_fingerprint()
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.3


def test_fingerprint_from_a_capture(monkeypatch):
    monkeypatch.setenv("GPUOPS_IMAGE_DIGEST", "sha256:should-not-leak-into-a-replay")
    fp = environment_fingerprint(load_capture(FIXTURES / "real_06.capture.yaml"))
    assert fp["env.driver"] == "470.182.03"
    assert fp["env.cuda_driver"] == "11.4"
    assert fp["env.torch"] == "2.1.0+cu121" and fp["env.torch_cuda"] == "12.1"
    assert fp["env.in_container"] == "true"
    assert fp["env.image_digest"] == "unknown"
