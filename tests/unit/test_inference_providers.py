"""Provider selection and fallback detection (this machine has no usable GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from litegate.inference.providers import (
    CPU,
    CUDA,
    ProviderUnavailable,
    check_providers,
    parse_providers,
    select_providers,
)
from litegate.inference.session import load_session
from tests.fixtures.inference_env import settings
from tests.fixtures.onnx_models import matmul_add_model

GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]
CPU_BUILD = [CPU]


def test_parse_aliases_and_order() -> None:
    assert parse_providers("auto") is None
    assert parse_providers(" cuda , cpu ") == [CUDA, CPU]
    assert parse_providers("CPUExecutionProvider") == [CPU]


def test_auto_prefers_cuda_then_cpu_and_skips_tensorrt() -> None:
    assert select_providers("auto", GPU_BUILD, strict=False, cuda_device=True) == [CUDA, CPU]
    assert select_providers("auto", CPU_BUILD, strict=False, cuda_device=True) == [CPU]


def test_auto_skips_cuda_without_a_device_even_in_a_gpu_build() -> None:
    assert select_providers("auto", GPU_BUILD, strict=False, cuda_device=False) == [CPU]
    assert select_providers("auto", GPU_BUILD, strict=True, cuda_device=False) == [CPU]
    # an explicit request still tries (and reports the fallback, see below)
    assert select_providers("cuda", GPU_BUILD, strict=False, cuda_device=False) == [CUDA, CPU]


def test_device_probe_matches_this_machine() -> None:
    import shutil

    from litegate.inference.providers import cuda_device_present

    # no NVIDIA driver here; on a GPU machine nvidia-smi exists and a device is found
    assert cuda_device_present() is (shutil.which("nvidia-smi") is not None)


def test_explicit_cuda_on_cpu_build_falls_back_unless_strict() -> None:
    assert select_providers("cuda", CPU_BUILD, strict=False) == [CPU]
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider not available"):
        select_providers("cuda", CPU_BUILD, strict=True)


def test_explicit_cuda_only_gets_cpu_appended_as_last_resort() -> None:
    assert select_providers("cuda", GPU_BUILD, strict=False) == [CUDA, CPU]
    assert select_providers("cuda", GPU_BUILD, strict=True) == [CUDA]


def test_check_providers_reports_fallback_and_strict_raises() -> None:
    assert check_providers([CUDA, CPU], [CUDA, CPU], strict=True) == []
    assert check_providers([CUDA, CPU], [CPU], strict=False, model="m") == [CUDA]
    with pytest.raises(ProviderUnavailable, match="refusing to fall back"):
        check_providers([CUDA, CPU], [CPU], strict=True, model="m")


def test_real_session_cuda_requested_on_cpu_only_machine_reports_fallback(tmp_path: Path) -> None:
    # onnxruntime-gpu lists CUDA as available but no GPU/CUDA libraries are present here:
    # the session really falls back and we read that back from get_providers().
    path = matmul_add_model(tmp_path / "m.onnx")
    loaded = load_session(path, settings(tmp_path, providers="cuda,cpu"), name="m", version="1")
    assert loaded.providers == (CPU,)
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        assert loaded.fell_back == (CUDA,)
        with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider"):
            load_session(path, settings(tmp_path, providers="cuda", strict_providers=True),
                         name="m", version="1")
    else:
        assert loaded.fell_back == ()
        with pytest.raises(ProviderUnavailable, match="not available"):
            load_session(path, settings(tmp_path, providers="cuda", strict_providers=True),
                         name="m", version="1")


def test_real_session_cpu_only_has_no_fallback(tmp_path: Path) -> None:
    path = matmul_add_model(tmp_path / "m.onnx")
    loaded = load_session(path, settings(tmp_path, providers="cpu", strict_providers=True),
                          name="m", version="1")
    assert loaded.providers == (CPU,)
    assert loaded.fell_back == ()
