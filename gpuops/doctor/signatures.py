"""Error texts doctor recognises in attached logs and ``--deep`` output, beyond the knowledge base's.

Data, not logic: each entry is a pattern on the message's stable part, the finding code it points
to, and where the text was seen. The knowledge base (``kb.error_signatures()``) has the six most
common messages with their official meaning; these are the framework-specific ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Signature:
    id: str
    pattern: str
    code: str
    source: str

    def search(self, text: str) -> re.Match[str] | None:
        return re.search(self.pattern, text, re.I | re.S)


SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "nvrm_api_mismatch",
        r"API mismatch: the client has the version (\S+?),? but\s+(?:NVRM:\s*)?this kernel module has the "
        r"version (\S+?)\.?\s",
        "driver_library_mismatch_needs_reboot",
        "https://github.com/NVIDIA/nvidia-docker/issues/182",
    ),
    Signature(
        "torch_driver_too_old",
        r"The NVIDIA driver on your system is too old \(found version (\d+)\)",
        "driver_too_old_for_cuda",
        "https://github.com/pytorch/pytorch/issues/112553",
    ),
    Signature(
        "cuda_lib_missing",
        r"(lib(?:cublas|cudart|cusolver|cufft|curand|cusparse|nvrtc|nvinfer)\.so\.(\d+(?:\.\d+)?))"
        r"[^\n]*?cannot open shared object file",
        "framework_cuda_variant_mismatch",
        "https://github.com/tensorflow/tensorflow/issues/16513",
    ),
    Signature(
        "cudnn_lib_missing",
        r"(libcudnn[^\s':]*\.so\.(\d+))[^\n]*?cannot open shared object file",
        "cudnn_missing_or_wrong_version",
        "https://github.com/system76/cuda/issues/17",
    ),
    Signature(
        "torch_cudnn_incompatible",
        r"cuDNN version incompatibility: PyTorch was compiled\s+against \(([\d, ]+)\) but "
        r"(?:linked against|found runtime version) \(([\d, ]+)\)",
        "cudnn_missing_or_wrong_version",
        "https://github.com/pytorch/pytorch/issues/80637",
    ),
    Signature(
        "torch_cudnn_ld_path",
        r"LD_LIBRARY_PATH contains incompatible version of cudnn",
        "ld_library_path",
        "https://github.com/pytorch/pytorch/pull/80877",
    ),
    Signature(
        "cpp_extension_cuda_mismatch",
        r"detected CUDA version \((\S+)\) mismatches the version that was used to compile\s+PyTorch \((\S+)\)",  # noqa: E501
        "framework_cuda_variant_mismatch",
        "https://github.com/vllm-project/vllm/issues/129",
    ),
    Signature(
        "torch_arch_not_compatible",
        r"with CUDA capability sm_(\d+) is not compatible with the current PyTorch installation",
        "gpu_arch_unsupported_by_build",
        "https://github.com/open-mmlab/mmcv/issues/1558",
    ),
    Signature(
        "nvrtc_invalid_arch",
        r"nvrtc: error: invalid value for --gpu-architecture",
        "gpu_arch_unsupported_by_build",
        "https://github.com/cupy/cupy/issues/1048",
    ),
    Signature(
        "module_not_signed",
        r"not signed by a key that is trusted by the kernel|Loading of unsigned module is rejected|"
        r"Key was rejected by service|Required key not available",
        "secure_boot_blocks_module",
        "https://github.com/NVIDIA/gpu-operator/issues/266",
    ),
    Signature(
        "cupy_multiple_packages",
        r"multiple CuPy packages are installed",
        "cupy_package_mismatch",
        "https://github.com/gpustack/gpustack/issues/5459",
    ),
    Signature(
        "chainer_cupy_util_missing",
        r"No module named 'cupy\.util'",
        "cupy_package_mismatch",
        "https://github.com/cupy/cupy/issues/4696",
    ),
    Signature(
        "cuda_system_not_ready",
        r"system not yet initialized|cudaErrorSystemNotReady|error=802\b",
        "fabric_manager_not_running",
        "https://github.com/pytorch/pytorch/issues/35710",
    ),
    Signature(
        "tf_no_known_devices",
        r"Device mapping: no known devices",
        "framework_cpu_only_build",
        "https://github.com/tensorflow/tensorflow/issues/7648",
    ),
)

# Knowledge-base signature id -> finding code.
KB_CODES: dict[str, str] = {
    "nvidia_smi_no_driver": "kernel_module_not_built_after_upgrade",
    "nvml_version_mismatch": "driver_library_mismatch_needs_reboot",
    "cuda_insufficient_driver": "driver_too_old_for_cuda",
    "no_kernel_image": "gpu_arch_unsupported_by_build",
    "tf_libcudnn_so_8": "cudnn_missing_or_wrong_version",
    "docker_no_gpu_driver": "container_toolkit_missing",
}


def scan(texts: list[tuple[str, str]]) -> list[tuple[Signature, str, re.Match[str]]]:
    """Every signature hit in (origin, text) pairs: (signature, origin, match)."""
    hits = []
    for origin, text in texts:
        for sig in SIGNATURES:
            m = sig.search(text)
            if m:
                hits.append((sig, origin, m))
    return hits
