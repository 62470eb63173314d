"""Device placement and the per-device memory budget in the model manager, with real ONNX
files and real sessions (no GPU here: CUDA is requested and really falls back to CPU).

Where a test needs sessions that are *on* a device, the CPU session stands in for it:
the loader records the session on the device it was placed on (``device_id``), which is
the one fact this machine cannot produce. Everything else (the placement, the charges,
eviction, refusals, the provider options handed to ONNX Runtime) is the real code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import litegate.inference.session as session_module
from litegate.errors import ServiceUnavailable
from litegate.inference.manager import ModelManager, _default_loader
from litegate.inference.placement import MIB
from litegate.inference.providers import CPU, CUDA
from litegate.inference.session import LoadedSession
from tests.fixtures.inference_env import model_spec, settings, snapshot
from tests.fixtures.onnx_models import amplify_model, matmul_add_model, matmul_add_reference


class StandInLoader:
    """The real loader; the session is then recorded on the device it was placed on."""

    def __init__(self) -> None:
        self.placed: list[tuple[str, Any]] = []

    def __call__(self, path: Path, settings_: Any, *, name: str, version: str,
                 options: Any) -> LoadedSession:
        loaded = _default_loader(path, settings_, name=name, version=version, options=options)
        assert loaded.providers == (CPU,)  # really CPU: no GPU on this machine
        self.placed.append((name, options.get("device_id")))
        loaded.device_id = int(options["device_id"])
        return loaded


def _x() -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 4), np.float32)}


def _gpu_settings(tmp_path: Path, **overrides: Any) -> Any:
    return settings(tmp_path, providers="cuda,cpu", **overrides)


def _models(tmp_path: Path, names: list[str], **options: Any) -> Any:
    return snapshot(*(model_spec(n, {"1": matmul_add_model(tmp_path / f"{n}.onnx")},
                                 options=options) for n in names))


def _device_of(manager: ModelManager, name: str) -> Any:
    return manager.status()["models"][name]["loaded"]["1"]["device_id"]


async def test_sessions_spread_over_the_devices_least_loaded_first(tmp_path: Path) -> None:
    loader = StandInLoader()
    manager = ModelManager(_gpu_settings(tmp_path, devices="0,1"), CollectorRegistry(),
                           loader=loader)
    names = ["a", "b", "c", "d"]
    await manager.start(_models(tmp_path, names))
    for n in names:
        out = await manager.infer(n, _x())
        np.testing.assert_allclose(out.outputs["y"], matmul_add_reference(_x()["x"]), rtol=1e-6)
    assert loader.placed == [("a", 0), ("b", 1), ("c", 0), ("d", 1)]
    assert [_device_of(manager, n) for n in names] == [0, 1, 0, 1]
    per_device = manager.status()["devices"]
    assert set(per_device) == {"0", "1"}
    assert per_device["0"]["loaded_bytes"] == per_device["1"]["loaded_bytes"] > 0
    await manager.stop()


async def test_concurrent_loads_do_not_pile_onto_one_device(tmp_path: Path) -> None:
    import asyncio

    loader = StandInLoader()
    manager = ModelManager(_gpu_settings(tmp_path, devices="0,1,2"), CollectorRegistry(),
                           loader=loader)
    names = ["a", "b", "c"]
    await manager.start(_models(tmp_path, names))
    await asyncio.gather(*(manager.infer(n, _x()) for n in names))
    assert sorted(d for _, d in loader.placed) == [0, 1, 2]
    await manager.stop()


async def test_device_id_option_pins_and_must_be_configured(tmp_path: Path) -> None:
    loader = StandInLoader()
    manager = ModelManager(_gpu_settings(tmp_path, devices="0,1"), CollectorRegistry(),
                           loader=loader)
    snap = snapshot(
        model_spec("pinned", {"1": matmul_add_model(tmp_path / "p.onnx")},
                   options={"device_id": 1}),
        model_spec("also", {"1": matmul_add_model(tmp_path / "q.onnx")},
                   options={"device_id": 1}),
        model_spec("nowhere", {"1": matmul_add_model(tmp_path / "n.onnx")},
                   options={"device_id": 5}))
    await manager.start(snap)
    await manager.infer("pinned", _x())
    await manager.infer("also", _x())  # device 0 is emptier; the pin wins
    assert loader.placed == [("pinned", 1), ("also", 1)]
    with pytest.raises(ServiceUnavailable) as info:
        await manager.infer("nowhere", _x())
    assert info.value.status_code == 503
    assert "device_id 5 is not one of the configured devices (0,1" in info.value.detail
    await manager.stop()


async def test_device_budget_evicts_least_recently_used_on_that_device(tmp_path: Path) -> None:
    loader = StandInLoader()
    st = _gpu_settings(tmp_path, devices="0,1", gpu_memory_mb=10)
    manager = ModelManager(st, CollectorRegistry(), loader=loader)
    pins = {"a": 0, "b": 0, "c": 0, "other": 1}
    snap = snapshot(*(model_spec(n, {"1": matmul_add_model(tmp_path / f"{n}.onnx")},
                                 options={"device_id": d, "gpu_memory_mb": 4})
                      for n, d in pins.items()))
    await manager.start(snap)
    for n in ("other", "a", "b"):
        await manager.infer(n, _x())
    assert manager.loaded_bytes(0) == 8 * MIB and manager.loaded_bytes(1) == 4 * MIB
    await manager.infer("a", _x())  # a is now more recent than b
    await manager.infer("c", _x())  # 12 MiB would not fit on device 0: b goes
    assert manager.is_loaded("a", "1") and manager.is_loaded("c", "1")
    assert not manager.is_loaded("b", "1")
    assert manager.is_loaded("other", "1")  # device 1 untouched
    assert manager.loaded_bytes(0) == 8 * MIB <= st.gpu_memory_mb * MIB
    evicted = manager.metrics.evictions.labels("b", "1")._value.get()
    assert evicted == 1
    await manager.stop()


async def test_model_larger_than_the_device_budget_is_refused(tmp_path: Path) -> None:
    # refused before loading, with the default loader: CUDA really requested here
    manager = ModelManager(_gpu_settings(tmp_path, gpu_memory_mb=2), CollectorRegistry())
    big = amplify_model(tmp_path / "big.onnx")  # 4 MiB of weights: the default charge
    snap = snapshot(model_spec("big", {"1": big}),
                    model_spec("declared", {"1": matmul_add_model(tmp_path / "d.onnx")},
                               options={"gpu_memory_mb": 3}))
    await manager.start(snap)
    for name, need in (("big", big.stat().st_size / MIB), ("declared", 3.0)):
        with pytest.raises(ServiceUnavailable) as info:
            await manager.infer(name, {"x": np.ones((1, 256 if name == "big" else 4),
                                                    np.float32)})
        assert info.value.status_code == 503
        assert (f"needs {need:.1f} MiB on a device; the budget per device is 2 MiB: raise "
                "LITEGATE_GPU_MEMORY_MB") in info.value.detail
        assert not manager.is_loaded(name, "1")
    await manager.stop()


async def test_a_session_that_fell_back_to_cpu_is_not_charged_to_a_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    real = session_module.build_provider_options

    def spy(providers: Any, options: Any, **kwargs: Any) -> Any:
        built.append({"providers": list(providers), **kwargs})
        return real(providers, options, **kwargs)

    monkeypatch.setattr(session_module, "build_provider_options", spy)
    st = _gpu_settings(tmp_path, devices="1", gpu_memory_mb=3)
    manager = ModelManager(st, CollectorRegistry())
    await manager.start(_models(tmp_path, ["a", "b", "c"], gpu_memory_mb=2))
    for n in ("a", "b", "c"):  # 3 x 2 MiB would not fit one 3 MiB device: none is there
        await manager.infer(n, _x())
    status = manager.status()
    for n in ("a", "b", "c"):
        loaded = status["models"][n]["loaded"]["1"]
        assert loaded["providers"] == [CPU] and loaded["fell_back"] == [CUDA]
        assert loaded["device_id"] is None and loaded["io_binding"] is None
    assert status["devices"] == {}
    # ONNX Runtime was asked for the placed device with the session's own limit
    assert [b["device_id"] for b in built] == [1, 1, 1]
    assert {b["gpu_mem_limit"] for b in built} == {2 * MIB}
    assert built[0]["providers"] == [CUDA, CPU]
    await manager.stop()
