"""Execution-provider selection and fallback detection (pure logic, no onnxruntime import).

``select_providers`` turns the ``providers`` setting into the list handed to
``InferenceSession``; ``check_providers`` compares it with what the session really
uses (``session.get_providers()``), warns about a GPU that fell back to CPU and, in
strict mode, refuses the session instead.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from functools import lru_cache

import structlog

from litegate.errors import ServiceUnavailable

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
AUTO_ORDER = (CUDA, CPU)
ALIASES = {
    "cpu": CPU,
    "cuda": CUDA,
    "gpu": CUDA,
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
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
            "strict providers are on, refusing to fall back"
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
            raise ProviderUnavailable(message + "; strict providers are on, refusing to fall back")
        log.warning("onnx_provider_fallback", model=model, requested=list(requested),
                    actual=list(actual))
    return fell_back
