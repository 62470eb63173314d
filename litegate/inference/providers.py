"""Execution-provider selection and fallback detection (pure logic, no onnxruntime import).

``select_providers`` turns the ``providers`` setting into the list handed to
``InferenceSession``; ``build_provider_options`` gives each of them its options (device,
memory limit, CUDA-graph and TensorRT settings); ``check_providers`` compares the list
with what the session really uses (``session.get_providers()``), warns about a GPU that
fell back to CPU and, in strict mode, refuses the session instead.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from litegate.errors import ServiceUnavailable

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
AUTO_ORDER = (CUDA, CPU)
GPU_PROVIDERS = (TENSORRT, CUDA)
"""Providers that place a session on a CUDA device (``device_id``, device memory)."""
CUDNN_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
TRT_CACHE_DIR = "trt-cache"
"""Under ``home``: TensorRT's engine cache (never a client's choice of path)."""
ALIASES = {
    "cpu": CPU,
    "cuda": CUDA,
    "gpu": CUDA,
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

log = structlog.get_logger("litegate.inference")


class ProviderUnavailable(ServiceUnavailable):
    """A requested execution provider is not usable and strict providers are on."""


def parse_providers(setting: str) -> list[str] | None:
    """``"auto"`` -> None; ``"cuda,cpu"`` -> canonical provider names, in order."""
    text = (setting or "auto").strip()
    if text.lower() == "auto":
        return None
    names: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name = ALIASES.get(part.lower(), part)
        if name not in names:
            names.append(name)
    if not names:
        return None
    return names


@lru_cache(maxsize=1)
def cuda_device_present() -> bool:
    """Is there an NVIDIA driver with at least one device? (CUDA driver API via ctypes.)"""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return False
        except AttributeError:
            return False
        return count.value > 0
    return False


def wants_device(setting: str) -> bool:
    """Would ``setting`` request a CUDA device? (``auto`` does when a device is present.)"""
    wanted = parse_providers(setting)
    if wanted is None:
        return cuda_device_present()
    return any(p in GPU_PROVIDERS for p in wanted)


def on_device(actual: Sequence[str]) -> bool:
    """Does a session whose real providers are ``actual`` compute on a CUDA device?"""
    return bool(actual) and actual[0] in GPU_PROVIDERS


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def build_provider_options(
    providers: Sequence[str], options: Mapping[str, Any], *, device_id: int = 0,
    gpu_mem_limit: int = 0, trt_fp16: bool = False, home: Path | None = None,
    static_shapes: bool = False,
) -> list[dict[str, str]]:
    """One options dict per provider, in ``providers`` order, values as ORT reads them.

    CUDA: the device, ``gpu_mem_limit`` (bytes; 0 = ORT's default, the whole device),
    ``kSameAsRequested`` so the arena grows by what is asked and frees it with the
    session, cuDNN's algorithm search (``HEURISTIC`` unless the model's
    ``cudnn_conv_algo_search`` option says otherwise: exhaustive search re-runs for every
    new input shape), copies in the default stream, and CUDA graphs only when the model
    asks (``cuda_graph``) and every shape is static (a graph replays fixed addresses).
    TensorRT: the same device, FP16 when ``trt_fp16`` (setting or model option), and an
    engine cache under ``home``. Raises ``ValueError`` for an unknown search mode.
    """
    search = str(options.get("cudnn_conv_algo_search", "HEURISTIC")).upper()
    if search not in CUDNN_SEARCH:
        raise ValueError(f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_SEARCH)}, "
                         f"not {search!r}")
    device = str(int(device_id))
    result: list[dict[str, str]] = []
    for p in providers:
        if p == CUDA:
            cuda = {"device_id": device,
                    "arena_extend_strategy": str(options.get("gpu_arena_strategy",
                                                             "kSameAsRequested")),
                    "cudnn_conv_algo_search": search,
                    "do_copy_in_default_stream": "1"}
            if gpu_mem_limit > 0:
                cuda["gpu_mem_limit"] = str(int(gpu_mem_limit))
            if static_shapes and _flag(options.get("cuda_graph", False)):
                cuda["enable_cuda_graph"] = "1"
            result.append(cuda)
        elif p == TENSORRT:
            fp16 = _flag(options.get("trt_fp16", trt_fp16))
            trt = {"device_id": device, "trt_fp16_enable": "True" if fp16 else "False"}
            if home is not None:
                trt["trt_engine_cache_enable"] = "True"
                trt["trt_engine_cache_path"] = str((Path(home) / TRT_CACHE_DIR).resolve())
            if gpu_mem_limit > 0:
                trt["trt_max_workspace_size"] = str(int(gpu_mem_limit))
            result.append(trt)
        else:
            result.append({})
    return result


def select_providers(setting: str, available: Sequence[str], *, strict: bool,
                     cuda_device: bool | None = None) -> list[str]:
    """The providers to request, most preferred first.

    ``auto`` picks CUDA when this onnxruntime build offers it and a CUDA device is
    present (``cuda_device``; probed through the driver when None), then CPU. An explicit
    list keeps the available entries in the given order and (unless strict) appends
    CPU as the last resort. Strict mode raises :class:`ProviderUnavailable` when an
    explicitly requested provider is not in the build.
    """
    wanted = parse_providers(setting)
    if wanted is None:
        chosen = [p for p in AUTO_ORDER if p in available]
        if CUDA in chosen and not (cuda_device_present() if cuda_device is None else cuda_device):
            chosen.remove(CUDA)
        return chosen or [CPU]
    missing = [p for p in wanted if p not in available]
    if missing and strict:
        raise ProviderUnavailable(
            f"requested execution provider(s) {', '.join(missing)} not available in this "
            f"onnxruntime build (available: {', '.join(available) or 'none'}); "
            "strict providers are on, refusing to fall back: install onnxruntime-gpu, "
            "or choose --providers from the available ones"
        )
    chosen = [p for p in wanted if p in available]
    if missing:
        log.warning("onnx_provider_unavailable", missing=missing, using=chosen or [CPU])
    if not strict and CPU not in chosen:
        chosen.append(CPU)
    return chosen or [CPU]


def check_providers(
    requested: Sequence[str], actual: Sequence[str], *, strict: bool, model: str = ""
) -> list[str]:
    """Compare requested providers with those the session really uses.

    Returns the providers that fell back (requested, not in use). Logs a warning for
    them; raises :class:`ProviderUnavailable` in strict mode.
    """
    fell_back = [p for p in requested if p != CPU and p not in actual]
    if fell_back:
        message = (
            f"model {model!r}: execution provider(s) {', '.join(fell_back)} could not be "
            f"initialised (no usable device or missing CUDA/cuDNN libraries); "
            f"running on {', '.join(actual) or 'nothing'}"
        )
        if strict:
            raise ProviderUnavailable(
                message + "; strict providers are on, refusing to fall back: install the "
                "CUDA/cuDNN libraries this onnxruntime-gpu build needs, or turn "
                "--strict-providers off (LITEGATE_STRICT_PROVIDERS=0)")
        log.warning("onnx_provider_fallback", model=model, requested=list(requested),
                    actual=list(actual))
    return fell_back
