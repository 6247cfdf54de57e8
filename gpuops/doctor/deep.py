"""``--deep``: import each installed framework in a child Python and run one tiny convolution on the
GPU (so that cuDNN loads), keeping the real error text. One child per framework, with a time-out:
a framework that hangs or crashes cannot take doctor down with it.
"""

from __future__ import annotations

import sys
import time

from gpuops.doctor.capture import Capture, DeepRecord
from gpuops.doctor.runner import Runner

# Each snippet prints facts as "key=value" lines; the last line is "OK" when the GPU op ran.
SNIPPETS: dict[str, str] = {
    "torch": """
import torch
print("version=" + torch.__version__)
print("cuda_build=" + str(torch.version.cuda))
print("cuda_available=" + str(torch.cuda.is_available()))
print("cudnn=" + str(torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None))
if torch.cuda.is_available():
    print("arch_list=" + " ".join(torch.cuda.get_arch_list()))
    print("device=" + torch.cuda.get_device_name(0))
    x = torch.randn(1, 1, 8, 8, device="cuda")
    w = torch.randn(1, 1, 3, 3, device="cuda")
    y = torch.nn.functional.conv2d(x, w)
    torch.cuda.synchronize()
    print("conv_sum=%.4f" % float(y.sum()))
    print("OK")
""",
    "tensorflow": """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
import tensorflow as tf
print("version=" + tf.__version__)
print("build=" + str(dict(tf.sysconfig.get_build_info())))
gpus = tf.config.list_physical_devices("GPU")
print("gpus=" + str(len(gpus)))
if gpus:
    with tf.device("/GPU:0"):
        y = tf.nn.conv2d(tf.random.normal([1, 8, 8, 1]), tf.random.normal([3, 3, 1, 1]), 1, "VALID")
    print("conv_sum=%.4f" % float(tf.reduce_sum(y)))
    print("OK")
""",
    "cupy": """
import cupy
print("version=" + cupy.__version__)
print("runtime=" + str(cupy.cuda.runtime.runtimeGetVersion()))
print("driver=" + str(cupy.cuda.runtime.driverGetVersion()))
x = cupy.arange(64, dtype=cupy.float32).reshape(8, 8)
k = cupy.ones((3, 3), dtype=cupy.float32)
from cupyx.scipy import signal
y = signal.convolve2d(x, k, mode="valid")
print("conv_sum=%.4f" % float(y.sum()))
print("OK")
""",
    "jax": """
import jax, jax.numpy as jnp
print("version=" + jax.__version__)
devs = jax.devices()
print("devices=" + " ".join(d.platform for d in devs))
if any(d.platform == "gpu" for d in devs):
    y = jax.lax.conv(jnp.ones((1, 1, 8, 8)), jnp.ones((1, 1, 3, 3)), (1, 1), "VALID")
    print("conv_sum=%.4f" % float(y.sum()))
    print("OK")
""",
}


def _installed(cap: Capture) -> list[str]:
    pk = cap.packages or {}
    out = []
    if "torch" in pk:
        out.append("torch")
    if any(k in pk for k in ("tensorflow", "tensorflow-gpu", "tensorflow-cpu", "tf-nightly")):
        out.append("tensorflow")
    if any(k == "cupy" or k.startswith("cupy-") for k in pk):
        out.append("cupy")
    if "jax" in pk:
        out.append("jax")
    return out


def run_deep(
    cap: Capture, *, runner: Runner, python: str | None = None, timeout: float = 120.0
) -> list[DeepRecord]:
    py = python or sys.executable
    out = []
    for fw in _installed(cap):
        t0 = time.perf_counter()
        rec = runner.run([py, "-c", SNIPPETS[fw]], timeout=timeout)
        secs = round(time.perf_counter() - t0, 2)
        if rec.error == "timeout":
            out.append(
                DeepRecord(
                    framework=fw,
                    ok=False,
                    output=rec.stdout,
                    error=f"timed out after {timeout:g} s\n{rec.stderr[-4000:]}",
                    seconds=secs,
                )
            )
            continue
        if rec.error:
            out.append(DeepRecord(framework=fw, ok=False, error=rec.error, seconds=secs))
            continue
        # True: the GPU op ran; None: the import worked but there was no GPU to run on; False: it failed.
        ok = (True if rec.stdout.rstrip().endswith("OK") else None) if rec.rc == 0 else False
        out.append(
            DeepRecord(
                framework=fw, ok=ok, output=rec.stdout, error=rec.stderr[-8000:] or None, seconds=secs
            )
        )
    return out
