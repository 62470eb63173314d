"""The memory budget counts what a loaded session really holds (measured while loading
and warming up), and loads queue for room instead of evicting each other."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry

from litegate.inference.manager import ModelManager
from tests.fixtures.inference_env import (
    LifespanApp,
    ServerThread,
    model_spec,
    settings,
    snapshot,
    v2_app,
)
from tests.fixtures.onnx_models import arena_model

ARENA = 32 * 1024 * 1024  # what each version's session keeps after a run


def test_budget_counts_measured_memory_and_loads_queue(tmp_path) -> None:
    versions = {str(v): arena_model(tmp_path / f"a{v}.onnx", offset=float(v))
                for v in (1, 2, 3)}
    file_size = versions["1"].stat().st_size
    st = settings(tmp_path, model_memory_mb=48)  # room for one version at a time
    manager = ModelManager(st, CollectorRegistry(), workers=2)
    snap = snapshot(model_spec("arena", versions, active="1"))
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # how many versions are loaded at once, sampled from outside
        while not stop.is_set():
            seen.append(len(manager._loaded))
            stop.wait(0.002)

    with ServerThread(LifespanApp(v2_app(manager, snap), manager, snap)) as srv:
        client = httpclient.InferenceServerClient(url=srv.url, network_timeout=60,
                                                  concurrency=8)
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))
        client.infer("arena", [x], model_version="1")
        size = manager._loaded[("arena", "1")].loaded.size_bytes
        # Before: the file size (a few hundred bytes) was all the budget saw.
        assert size >= ARENA // 2 and file_size < 1024, (size, file_size)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        order = [str(1 + i % 3) for i in range(24)]
        pending = [client.async_infer("arena", [x], model_version=v) for v in order]
        answers = [(p.get_result().as_numpy("y").item(), v) for p, v in zip(pending, order)]
        stop.set()
        watcher.join()
        client.close()
    assert all(y == 8 * 1024 * 1024 + float(v) for y, v in answers)
    # Before: nothing was ever evicted (3 versions resident, 3x the budget).
    assert max(seen) == 1
    assert manager.load_count <= 1 + len(order)  # loads never outnumber requests
