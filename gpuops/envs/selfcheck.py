"""The framework self-check: import the framework, report its CUDA/cuDNN build, one tiny GPU op.

The same probe runs in two places: inside a freshly built image (``selfcheck_in_image``) and, on a
GPU host without a Docker engine, in any Python environment (``selfcheck_local``). It prints one JSON
line; this module parses it. A failed import is a result (``ok: false`` with the error), not a crash.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

_PROBES = {
    "pytorch": r"""
import json
d = {"framework": "pytorch"}
try:
    import torch
    d.update(version=torch.__version__, cuda_build=torch.version.cuda,
             cudnn_build=str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
             cuda_available=torch.cuda.is_available(), arch_list=torch.cuda.get_arch_list())
    x = torch.arange(6.0).reshape(2, 3)
    d["cpu_op"] = float((x @ x.T).sum())
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
        d["gpu_cc"] = "%d.%d" % torch.cuda.get_device_capability(0)
        y = x.cuda()
        d["gpu_op"] = float((y @ y.T).sum().item())
    d["ok"] = True
except Exception as e:
    d.update(ok=False, error=f"{type(e).__name__}: {e}")
print("GPUOPS_SELFCHECK " + json.dumps(d))
""",
    "tensorflow": r"""
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
d = {"framework": "tensorflow"}
try:
    import tensorflow as tf
    info = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    d.update(version=tf.__version__, cuda_build=info.get("cuda_version"),
             cudnn_build=info.get("cudnn_version"),
             cuda_available=bool(gpus))
    d["cpu_op"] = float(tf.reduce_sum(tf.range(6.0)))
    if gpus:
        with tf.device("/GPU:0"):
            d["gpu_op"] = float(tf.reduce_sum(tf.range(6.0) * 2))
        d["gpu"] = gpus[0].name
    d["ok"] = True
except Exception as e:
    d.update(ok=False, error=f"{type(e).__name__}: {e}")
print("GPUOPS_SELFCHECK " + json.dumps(d))
""",
    "chainer": r"""
import json
d = {"framework": "chainer"}
try:
    import chainer
    d.update(version=chainer.__version__, cuda_available=bool(chainer.backends.cuda.available),
             cudnn_enabled=bool(chainer.backends.cuda.cudnn_enabled))
    try:
        import cupy
        d["cupy"] = cupy.__version__
        d["cuda_build"] = str(cupy.cuda.runtime.runtimeGetVersion())
        if chainer.backends.cuda.available:
            d["gpu_op"] = float(cupy.arange(6.0).sum())
            if chainer.backends.cuda.cudnn_enabled:
                d["cudnn_build"] = str(cupy.cuda.cudnn.getVersion())
    except Exception as e:
        d["cupy_error"] = f"{type(e).__name__}: {e}"
    import numpy
    d["cpu_op"] = float(numpy.arange(6.0).sum())
    d["ok"] = True
except Exception as e:
    d.update(ok=False, error=f"{type(e).__name__}: {e}")
print("GPUOPS_SELFCHECK " + json.dumps(d))
""",
}


def probe_source(framework: str) -> str:
    return _PROBES[framework]


def parse_output(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("GPUOPS_SELFCHECK "):
            return json.loads(line[len("GPUOPS_SELFCHECK "):])
    return {"ok": False, "error": "the self-check printed no result", "output": text[-2000:]}


def selfcheck_local(framework: str, python: str, timeout: float = 300) -> dict[str, Any]:
    """Run the probe with the given interpreter (a GPU host's venv, no Docker needed)."""
    try:
        res = subprocess.run([python, "-c", probe_source(framework)], capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"framework": framework, "ok": False, "error": f"{type(e).__name__}: {e}"}
    out = parse_output(res.stdout)
    if not out.get("ok") and res.stderr:
        out.setdefault("stderr", res.stderr[-2000:])
    return out


def selfcheck_in_image(client: Any, tag: str, framework: str, *, gpus: bool = False,
                       timeout: float = 300) -> dict[str, Any]:
    """Run the probe in a throw-away container of ``tag`` (no network; ``--gpus all`` if asked)."""
    import docker

    kwargs: dict[str, Any] = {"network_mode": "none", "detach": True}
    if gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    container = client.containers.run(tag, ["python", "-c", probe_source(framework)], **kwargs)
    try:
        status = container.wait(timeout=timeout)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    out = parse_output(logs)
    out["exit_code"] = status.get("StatusCode")
    out["gpus_requested"] = gpus
    return out
