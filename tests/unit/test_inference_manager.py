"""ModelManager with real tiny ONNX models: single-flight, warm-up, LRU, batching, switching."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from litegate.errors import BadRequest, NotFound
from litegate.inference.manager import ModelManager, _default_loader
from tests.fixtures.inference_env import model_spec, settings, snapshot
from tests.fixtures.onnx_models import (
    fixed_shape_model,
    gather_model,
    matmul_add_model,
    matmul_add_reference,
    multi_input_model,
)


class CountingLoader:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = gate

    def __call__(self, path, settings_, *, name, version, options):
        self.calls.append((name, version))
        if self.gate is not None:
            self.gate.wait(10)
        return _default_loader(path, settings_, name=name, version=version, options=options)


def _x(i: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 4), i, dtype=np.float32)}


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    return {
        "v1": matmul_add_model(tmp_path / "add1.onnx"),
        "v2": matmul_add_model(tmp_path / "add2.onnx", offset=10.0),
        "multi": multi_input_model(tmp_path / "multi.onnx"),
        "fixed": fixed_shape_model(tmp_path / "fixed.onnx"),
        "gather": gather_model(tmp_path / "gather.onnx"),
    }


async def test_single_flight_lazy_load_under_32_concurrent_first_requests(tmp_path, models):
    loader = CountingLoader()
    manager = ModelManager(settings(tmp_path), CollectorRegistry(), loader=loader)
    await manager.start(snapshot(model_spec("add", {"1": models["v1"]})))
    results = await asyncio.gather(*(manager.infer("add", _x(i)) for i in range(32)))
    assert loader.calls == [("add", "1")]
    assert manager.load_count == 1
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.outputs["y"], matmul_add_reference(_x(i)["x"]), rtol=1e-6)
    await manager.stop()


async def test_ready_only_after_hot_models_are_warmed(tmp_path, models):
    gate = threading.Event()
    loader = CountingLoader(gate)
    manager = ModelManager(settings(tmp_path), CollectorRegistry(), loader=loader)
    snap = snapshot(model_spec("hot", {"1": models["v1"]}, hot=True),
                    model_spec("lazy", {"1": models["multi"]}))
    await manager.start(snap)
    await asyncio.sleep(0.05)
    assert manager.ready() is False
    assert manager.status()["models"]["hot"]["loaded"] == {}
    gate.set()
    await asyncio.wait_for(manager.wait_ready(), 10)
    assert manager.ready() is True
    status = manager.status()
    assert status["models"]["hot"]["loaded"]["1"]["providers"] == ["CPUExecutionProvider"]
    assert status["models"]["lazy"]["loaded"] == {}  # not hot: loaded on first request only
    assert loader.calls == [("hot", "1")]
    await manager.stop()


async def test_lru_eviction_under_memory_budget(tmp_path, models, monkeypatch):
    trims: list[int] = []
    monkeypatch.setattr("litegate.inference.manager.release_memory", lambda: trims.append(1))
    registry = CollectorRegistry()
    manager = ModelManager(settings(tmp_path, model_memory_mb=1), registry)
    opts = {"memory_bytes": 400 * 1024}
    await manager.start(snapshot(
        model_spec("a", {"1": models["v1"]}, options=opts),
        model_spec("b", {"1": models["v2"]}, options=opts),
        model_spec("c", {"1": models["multi"]}, options=opts),
    ))
    await manager.infer("a", _x(1))
    await manager.infer("b", _x(1))
    await manager.infer("a", _x(2))  # a is now the most recently used
    await manager.infer("c", {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.int64)})
    assert manager.is_loaded("a", "1") and manager.is_loaded("c", "1")
    assert not manager.is_loaded("b", "1")
    assert manager.loaded_bytes() <= 1024 * 1024
    for _ in range(50):  # the evicted session is closed and memory trimmed in the background
        if trims:
            break
        await asyncio.sleep(0.01)
    assert trims
    assert registry.get_sample_value("litegate_model_evictions_total",
                                     {"model": "b", "version": "1"}) == 1.0
    assert registry.get_sample_value(
        "litegate_model_loaded", {"model": "b", "version": "1",
                                  "providers": "CPUExecutionProvider"}) is None
    # b comes back transparently on its next request
    r = await manager.infer("b", _x(1))
    np.testing.assert_allclose(r.outputs["y"], matmul_add_reference(_x(1)["x"], offset=10.0))
    await manager.stop()


async def test_batching_real_model_fewer_runs_same_results(tmp_path, models):
    registry = CollectorRegistry()
    manager = ModelManager(settings(tmp_path), registry)
    await manager.start(snapshot(model_spec("add", {"1": models["v1"]}, max_batch_size=16,
                                            max_queue_delay_ms=20)))
    await manager.load("add")
    xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 4)).astype(np.float32)
          for i in range(40)]
    results = await asyncio.gather(*(manager.infer("add", {"x": x}) for x in xs))
    executions = registry.get_sample_value("litegate_model_executions_total",
                                           {"model": "add", "version": "1"})
    requests = registry.get_sample_value("litegate_model_requests_total",
                                         {"model": "add", "version": "1"})
    assert requests == 40
    assert executions < 40
    session = manager.loaded("add", "1").session
    for x, r in zip(xs, results):
        (unbatched,) = session.run(["y"], {"x": x})
        np.testing.assert_allclose(r.outputs["y"], unbatched, rtol=1e-6, atol=1e-6)
    assert registry.get_sample_value("litegate_model_compute_seconds_count",
                                     {"model": "add", "version": "1"}) == executions
    await manager.stop()


async def test_multi_input_types_output_selection_and_errors(tmp_path, models):
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    await manager.start(snapshot(model_spec("multi", {"1": models["multi"]}),
                                 model_spec("fixed", {"1": models["fixed"]})))
    a = np.array([[0.5, 1.5]], np.float32)
    b = np.array([[2, 3]], np.int64)
    r = await manager.infer("multi", {"a": a, "b": b}, outputs=["twice"])
    assert list(r.outputs) == ["twice"]
    assert r.outputs["twice"].dtype == np.int64 and r.outputs["twice"].tolist() == [[4, 6]]
    with pytest.raises(BadRequest, match="input 'b': datatype FP32"):
        await manager.infer("multi", {"a": a, "b": b.astype(np.float32)})
    with pytest.raises(BadRequest, match="unknown output 'nope'"):
        await manager.infer("multi", {"a": a, "b": b}, outputs=["nope"])
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        await manager.infer("ghost", {"a": a})
    with pytest.raises(NotFound, match="no version '9'"):
        await manager.infer("multi", {"a": a, "b": b}, version="9")
    r = await manager.infer("fixed", {"x": np.ones((2, 2), np.float32)})
    assert r.outputs["y"].tolist() == [[3, 3], [3, 3]]
    with pytest.raises(BadRequest, match=r"input 'x': shape \[3, 2\]"):
        await manager.infer("fixed", {"x": np.ones((3, 2), np.float32)})
    await manager.stop()


async def test_runtime_failure_in_batch_fails_only_that_request(tmp_path, models):
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    await manager.start(snapshot(model_spec("g", {"1": models["gather"]}, max_batch_size=8,
                                            max_queue_delay_ms=20)))
    await manager.load("g")
    idx = [np.array([i], np.int64) for i in range(5)] + [np.array([99], np.int64)]
    results = await asyncio.gather(*(manager.infer("g", {"idx": i}) for i in idx),
                                   return_exceptions=True)
    assert isinstance(results[-1], Exception) and getattr(results[-1], "status_code", 0) in (400, 500)
    assert "'g'" in str(results[-1])
    for i in range(5):
        assert results[i].outputs["rows"].tolist() == [[2 * i, 2 * i + 1]]
    await manager.stop()


async def test_activate_and_rollback_under_concurrent_load_zero_failures(tmp_path, models):
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    s1 = snapshot(model_spec("add", {"1": models["v1"], "2": models["v2"]}, active="1"))
    s2 = snapshot(model_spec("add", {"1": models["v1"], "2": models["v2"]}, active="2"),
                  version=2)
    await manager.start(s1)
    await manager.load("add")
    stop = asyncio.Event()
    seen: list[str] = []
    failures: list[BaseException] = []
    x = _x(1.0)
    refs = {"1": matmul_add_reference(x["x"]), "2": matmul_add_reference(x["x"], offset=10.0)}

    async def client() -> None:
        while not stop.is_set():
            try:
                r = await manager.infer("add", x)
            except BaseException as exc:  # noqa: BLE001 - the test counts every failure
                failures.append(exc)
                continue
            np.testing.assert_allclose(r.outputs["y"], refs[r.version], rtol=1e-6)
            seen.append(r.version)

    clients = [asyncio.ensure_future(client()) for _ in range(16)]
    for snap in (s2, s1, s2, s1, s2):  # activate, rollback, ...
        await asyncio.sleep(0.05)
        manager.on_snapshot(snap)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert {"1", "2"} <= set(seen)
    assert seen[-1] == "2"
    r = await manager.infer("add", x)
    assert r.version == "2"
    await manager.stop()


async def test_removed_version_is_unloaded_after_snapshot(tmp_path, models):
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    await manager.start(snapshot(model_spec("add", {"1": models["v1"], "2": models["v2"]})))
    await manager.infer("add", _x(1), version="2")
    assert manager.is_loaded("add", "2")
    manager.on_snapshot(snapshot(model_spec("add", {"1": models["v1"]})))
    assert not manager.is_loaded("add", "2")
    with pytest.raises(NotFound):
        await manager.infer("add", _x(1), version="2")
    await manager.stop()


def test_onnxruntime_is_not_imported_until_a_model_is_needed() -> None:
    code = (
        "import sys\n"
        "from prometheus_client import CollectorRegistry\n"
        "from litegate.settings import Settings\n"
        "from litegate.inference.manager import ModelManager\n"
        "from litegate.inference.v2_server import V2App\n"
        "m = ModelManager(Settings(), CollectorRegistry())\n"
        "V2App(lambda: m)\n"
        "m.status()\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
        "assert 'onnx' not in sys.modules, 'onnx imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_batching_plan_per_model(tmp_path, models):
    manager = ModelManager(settings(tmp_path), CollectorRegistry(), workers=3)
    await manager.start(snapshot(
        model_spec("batched", {"1": models["v1"]}, max_batch_size=8),
        model_spec("off", {"1": models["v1"]}, max_batch_size=1),
        model_spec("fixed", {"1": models["fixed"]}, max_batch_size=8),  # no dynamic batch dim
        model_spec("tuned", {"1": models["v1"]}, max_batch_size=8, options={"instances": 1}),
    ))
    for name in ("batched", "off", "fixed", "tuned"):
        await manager.load(name)
    plan = {name: (e.batcher.max_batch_size, e.batcher.concurrency)
            for (name, _), e in manager._loaded.items()}
    assert plan == {"batched": (8, 2), "off": (1, 3), "fixed": (1, 3), "tuned": (8, 1)}
    await manager.stop()


async def test_superseded_versions_are_unloaded_but_rollback_target_stays(tmp_path, models):
    import dataclasses

    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    versions = {"1": models["v1"], "2": models["v2"], "3": models["v1"]}
    s1 = snapshot(model_spec("add", versions, active="1"))
    await manager.start(s1)
    for v in ("1", "2", "3"):
        await manager.infer("add", _x(1), version=v)
    assert all(manager.is_loaded("add", v) for v in ("1", "2", "3"))
    # 1 -> 2 -> 3 activated: 3 serves, 2 is the rollback target, 1 is superseded.
    spec = model_spec("add", versions, active="3")
    s3 = snapshot(dataclasses.replace(spec, previous_version="2"), version=3)
    manager.on_snapshot(s3)
    assert manager.is_loaded("add", "3") and manager.is_loaded("add", "2")
    assert not manager.is_loaded("add", "1")
    # An explicit request for the old version still works (loaded again on demand).
    r = await manager.infer("add", _x(1), version="1")
    assert r.version == "1"
    await manager.stop()
