"""The GPU path by construction (no GPU here): provider options, device placement, IO
binding (run on CPU, where ORT supports it) and the fallback a CUDA request meets on a
machine with onnxruntime-gpu and no device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from structlog.testing import capture_logs

from litegate.inference.binding import GraphBinding, run_bound
from litegate.inference.placement import (
    MIB,
    PlacementError,
    choose_device,
    device_charge,
    parse_devices,
    pinned_device,
    session_mem_limit,
)
from litegate.inference.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderUnavailable,
    build_provider_options,
    on_device,
    wants_device,
)
from litegate.inference.session import load_session, static_shapes
from tests.fixtures.inference_env import settings
from tests.fixtures.onnx_models import (
    fixed_shape_model,
    matmul_add_model,
    matmul_add_reference,
    multi_input_model,
    strings_model,
)

# ------------------------------------------------------------ provider options


def test_cuda_options_are_built_exactly() -> None:
    options = build_provider_options([CUDA, CPU], {}, device_id=1, gpu_mem_limit=512 * MIB)
    assert options == [
        {"device_id": "1", "arena_extend_strategy": "kSameAsRequested",
         "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1",
         "gpu_mem_limit": str(512 * MIB)},
        {},
    ]


def test_cuda_without_budget_has_no_mem_limit_and_model_options_win() -> None:
    [cuda] = build_provider_options(
        [CUDA], {"cudnn_conv_algo_search": "exhaustive", "gpu_arena_strategy": "kNextPowerOfTwo"})
    assert cuda == {"device_id": "0", "arena_extend_strategy": "kNextPowerOfTwo",
                    "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}


def test_unknown_cudnn_search_is_refused() -> None:
    with pytest.raises(ValueError, match="cudnn_conv_algo_search must be one of"):
        build_provider_options([CUDA], {"cudnn_conv_algo_search": "fastest"})


def test_cuda_graph_only_when_asked_and_shapes_are_static() -> None:
    def graph(options: dict[str, object], static: bool) -> str | None:
        return build_provider_options([CUDA], options, static_shapes=static)[0].get(
            "enable_cuda_graph")

    assert graph({"cuda_graph": True}, True) == "1"
    assert graph({"cuda_graph": "true"}, True) == "1"
    assert graph({"cuda_graph": True}, False) is None  # dynamic shapes: never
    assert graph({}, True) is None  # not asked
    assert graph({"cuda_graph": "false"}, True) is None


def test_tensorrt_options_fp16_and_cache_under_home(tmp_path: Path) -> None:
    trt, cuda, cpu = build_provider_options(
        [TENSORRT, CUDA, CPU], {}, device_id=2, gpu_mem_limit=MIB, trt_fp16=True,
        home=tmp_path / "home")
    assert trt == {"device_id": "2", "trt_fp16_enable": "True",
                   "trt_engine_cache_enable": "True",
                   "trt_engine_cache_path": str((tmp_path / "home" / "trt-cache").resolve()),
                   "trt_max_workspace_size": str(MIB)}
    assert cuda["device_id"] == "2" and cpu == {}
    # a model may turn FP16 off; it cannot choose the cache path
    [trt] = build_provider_options([TENSORRT], {"trt_fp16": False,
                                                "trt_engine_cache_path": "/tmp/evil"},
                                   trt_fp16=True, home=tmp_path)
    assert trt["trt_fp16_enable"] == "False"
    assert trt["trt_engine_cache_path"] == str((tmp_path / "trt-cache").resolve())


def test_cpu_only_gets_empty_options() -> None:
    assert build_provider_options([CPU], {"device_id": 3}, device_id=3) == [{}]


def test_device_wanted_and_on_device() -> None:
    assert wants_device("cuda,cpu") and wants_device("tensorrt,cuda,cpu")
    assert not wants_device("cpu")
    assert wants_device("auto") is False  # no CUDA driver on this machine
    assert on_device([CUDA, CPU]) and on_device([TENSORRT, CUDA, CPU])
    assert not on_device([CPU]) and not on_device([])


# ------------------------------------------------------------------ placement


def test_parse_devices() -> None:
    assert parse_devices("") == (0,)
    assert parse_devices(" 0, 1 ,3") == (0, 1, 3)
    with pytest.raises(PlacementError, match="not a CUDA device id"):
        parse_devices("0,gpu1")
    with pytest.raises(PlacementError, match="listed twice"):
        parse_devices("1,1")


def test_least_loaded_then_fewest_sessions_then_order() -> None:
    devices = (0, 1, 2)
    assert choose_device(devices, {}, {}) == 0
    assert choose_device(devices, {0: 100}, {0: 1}) == 1
    assert choose_device(devices, {0: 100, 1: 50, 2: 50}, {0: 1, 1: 2, 2: 1}) == 2
    assert choose_device((3, 1), {}, {}) == 3  # the configured order breaks ties
    # placing one after another spreads evenly
    charged: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for _ in range(6):
        d = choose_device(devices, charged, sessions)
        charged[d] = charged.get(d, 0) + 10
        sessions[d] = sessions.get(d, 0) + 1
    assert charged == {0: 20, 1: 20, 2: 20}


def test_pinned_device_must_be_configured() -> None:
    assert pinned_device({}, (0, 1)) is None
    assert pinned_device({"device_id": "1"}, (0, 1)) == 1
    assert choose_device((0, 1), {1: 10**9}, {1: 5}, pinned=1) == 1
    with pytest.raises(PlacementError, match="not one of the configured devices"):
        pinned_device({"device_id": 2}, (0, 1))
    with pytest.raises(PlacementError, match="not a CUDA device id"):
        pinned_device({"device_id": "x"}, (0,))


def test_device_charge_and_session_limit() -> None:
    assert device_charge({}, 3000) == 3000  # the weights, by default
    assert device_charge({"gpu_memory_mb": 64}, 3000) == 64 * MIB
    with pytest.raises(PlacementError, match="must be positive"):
        device_charge({"gpu_memory_mb": -1}, 0)
    assert session_mem_limit({}, 8 * MIB) == 8 * MIB  # one session never exceeds the device
    assert session_mem_limit({"gpu_memory_mb": 2}, 8 * MIB) == 2 * MIB
    assert session_mem_limit({}, 0) == 0


# ----------------------------------------------------------------- IO binding


def _cpu_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=[CPU])


def test_io_binding_on_cpu_gives_session_runs_answers(tmp_path: Path) -> None:
    session = _cpu_session(multi_input_model(tmp_path / "multi.onnx"))
    rng = np.random.default_rng(7)
    for rows in (1, 5, 64):
        inputs = {"a": rng.standard_normal((rows, 2)).astype(np.float32),
                  "b": rng.integers(-9, 9, (rows, 2)).astype(np.int64)}
        plain = session.run(["total", "twice"], inputs)
        bound = run_bound(session, inputs, ["total", "twice"], "cpu", 0)
        for p, b in zip(plain, bound):
            assert b.dtype == p.dtype and b.shape == p.shape
            np.testing.assert_array_equal(b, p)


def test_io_binding_takes_non_contiguous_inputs(tmp_path: Path) -> None:
    session = _cpu_session(matmul_add_model(tmp_path / "m.onnx"))
    x = np.arange(32, dtype=np.float32).reshape(4, 8)[:, ::2]  # a strided view
    [y] = run_bound(session, {"x": x}, ["y"], "cpu", 0)
    np.testing.assert_allclose(y, matmul_add_reference(np.ascontiguousarray(x)), rtol=1e-6)


def test_graph_binding_reuses_its_buffers_and_matches_run(tmp_path: Path) -> None:
    session = _cpu_session(fixed_shape_model(tmp_path / "fixed.onnx"))
    shapes = {"x": ((2, 2), np.float32), "y": ((2, 2), np.float32)}
    graph = GraphBinding(session, ["y"], "cpu", 0, shapes)
    for k in range(3):  # new values each run, same buffers
        x = np.full((2, 2), k + 0.5, np.float32)
        [y] = graph.run({"x": x})
        np.testing.assert_array_equal(y, session.run(["y"], {"x": x})[0])


def test_static_shapes_from_the_file(tmp_path: Path) -> None:
    assert static_shapes(fixed_shape_model(tmp_path / "fixed.onnx")) is True
    assert static_shapes(matmul_add_model(tmp_path / "dyn.onnx")) is False


def test_loaded_session_binds_only_when_asked_on_cpu(tmp_path: Path) -> None:
    path = multi_input_model(tmp_path / "multi.onnx")
    st = settings(tmp_path)
    plain = load_session(path, st, name="m", version="1")
    bound = load_session(path, st, name="m", version="1", options={"io_binding": True})
    off = load_session(path, st, name="m", version="1", options={"io_binding": False})
    assert plain.binding is None and off.binding is None  # CPU: plain session.run
    assert bound.binding == "cpu" and bound.device_id is None and bound.graph is None
    inputs = {"a": np.ones((3, 2), np.float32), "b": np.full((3, 2), 4, np.int64)}
    a, b = plain.run(inputs), bound.run(inputs)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_string_inputs_stay_on_session_run(tmp_path: Path) -> None:
    path = strings_model(tmp_path / "s.onnx")
    loaded = load_session(path, settings(tmp_path), name="s", version="1",
                          options={"io_binding": True})
    out = loaded.run({"s": np.array(["a", "b"], dtype=object)})
    assert out["same"].tolist() == ["a", "b"]  # BYTES tensors go through session.run


# ------------------------------------------------------------------ fallback


def test_cuda_requested_here_runs_on_cpu_and_says_so(tmp_path: Path) -> None:
    assert CUDA in ort.get_available_providers()  # onnxruntime-gpu, no device
    path = matmul_add_model(tmp_path / "m.onnx")
    with capture_logs() as logs:
        loaded = load_session(path, settings(tmp_path, providers="cuda,cpu", devices="0,1",
                                             gpu_memory_mb=256),
                              name="m", version="1", options={"device_id": 1})
    assert loaded.providers == (CPU,) and loaded.fell_back == (CUDA,)
    # the real provider decides: no device, no binding (plain session.run on CPU)
    assert loaded.device_id is None and loaded.binding is None
    fallback = [e for e in logs if e["event"] == "onnx_provider_fallback"]
    assert fallback and fallback[0]["actual"] == [CPU] and fallback[0]["model"] == "m"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], matmul_add_reference(x), rtol=1e-6)


def test_strict_cuda_refuses_with_the_fix(tmp_path: Path) -> None:
    path = matmul_add_model(tmp_path / "m.onnx")
    with pytest.raises(ProviderUnavailable) as info:
        load_session(path, settings(tmp_path, providers="cuda", strict_providers=True),
                     name="m", version="1")
    message = info.value.detail
    assert "CUDAExecutionProvider" in message and "refusing to fall back" in message
    assert "install the CUDA/cuDNN libraries" in message and "--strict-providers off" in message
    assert "\n" not in message


def test_tensorrt_requested_here_falls_back_too(tmp_path: Path) -> None:
    path = matmul_add_model(tmp_path / "m.onnx")
    loaded = load_session(path, settings(tmp_path, providers="tensorrt,cuda,cpu",
                                         trt_fp16=True),
                          name="m", version="1")
    assert loaded.providers == (CPU,)
    assert set(loaded.fell_back) == {TENSORRT, CUDA}
    assert (tmp_path / "home" / "trt-cache").is_dir()  # the engine cache, under home


def test_cuda_graph_is_asked_of_ort_only_for_static_models(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import litegate.inference.session as session_module

    built: list[list[dict[str, str]]] = []
    real = session_module.build_provider_options

    def spy(*args: object, **kwargs: object) -> list[dict[str, str]]:
        built.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(session_module, "build_provider_options", spy)
    st = settings(tmp_path, providers="cuda,cpu")
    for path in (fixed_shape_model(tmp_path / "fixed.onnx"),
                 matmul_add_model(tmp_path / "dyn.onnx")):
        loaded = load_session(path, st, name="m", version="1", options={"cuda_graph": True})
        assert loaded.graph is None  # CUDA fell back here: no device buffers to replay
    static, dynamic = (b[0] for b in built)
    assert static.get("enable_cuda_graph") == "1"
    assert "enable_cuda_graph" not in dynamic
