"""How batches fill: one run in flight on one usable core, full batches, never past max_batch.

Real ONNX models (tests/fixtures/onnx_models), real threads; the single-core case runs in
a child process whose CPU affinity is really narrowed to one core (as ``taskset -c 0``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from litegate.inference.batcher import AdaptiveBatcher, usable_cpus

ROOT = Path(__file__).resolve().parents[2]

_PLAN_ON_ONE_CORE = """
import asyncio, os, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from litegate.inference.batcher import usable_cpus
from litegate.inference.manager import ModelManager
from tests.fixtures.inference_env import model_spec, settings, snapshot
from tests.fixtures.onnx_models import matmul_add_model

async def main():
    tmp = Path(sys.argv[1])
    model = matmul_add_model(tmp / "add.onnx")
    manager = ModelManager(settings(tmp), CollectorRegistry())
    await manager.start(snapshot(
        model_spec("batched", {"1": model}, max_batch_size=8),
        model_spec("tuned", {"1": model}, max_batch_size=8, options={"instances": 2}),
        model_spec("off", {"1": model}, max_batch_size=1)))
    for name in ("batched", "tuned", "off"):
        await manager.load(name)
    plan = {n: e.batcher.concurrency for (n, _), e in manager._loaded.items()}
    await manager.stop()
    print("PLAN", usable_cpus(), plan["batched"], plan["tuned"], plan["off"])

asyncio.run(main())
"""


def test_usable_cpus_follows_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))


def test_one_usable_core_runs_one_batch_at_a_time(tmp_path: Path) -> None:
    # os.cpu_count() says 2+ even under `taskset -c 0`; two runs on one core would share
    # it and split the waiting requests into two half-size batches.
    out = subprocess.run([sys.executable, "-c", _PLAN_ON_ONE_CORE, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PLAN ")][-1]
    cores, batched, tuned, unbatched = map(int, line.split()[1:])
    assert cores == 1
    assert batched == 1       # the default follows the core
    assert tuned == 2         # an explicit `instances` option is kept
    assert unbatched == 2     # unbatched models keep their worker threads


class GatedDouble:
    """y = 2x; the first run blocks until released, so requests pile up behind it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray], run_options: object = None
                 ) -> dict[str, np.ndarray]:
        with self.lock:
            self.batches.append(int(inputs["x"].shape[0]))
            first = len(self.batches) == 1
        if first:
            self.started.set()
            self.release.wait(10)
        return {"y": inputs["x"] * 2}


def _x(i: int, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), float(i), dtype=np.float32)}


async def test_requests_waiting_behind_a_run_form_one_batch_not_two_halves() -> None:
    model = GatedDouble()
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = AdaptiveBatcher(model, executor=executor, max_batch_size=32,
                                  max_delay_s=0.001, concurrency=1, name="fill")
        first = asyncio.ensure_future(batcher.submit(_x(-1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
        # 24 requests arrive one by one, each well past max_delay after the previous one,
        # while the only run is busy: they must all go into the next run together.
        waiting = []
        for i in range(24):
            waiting.append(asyncio.ensure_future(batcher.submit(_x(i))))
            await asyncio.sleep(0.003)
        model.release.set()
        results = await asyncio.gather(*waiting)
        await first
        await batcher.close()
    assert model.batches == [1, 24]
    for i, result in enumerate(results):  # answers never mix
        np.testing.assert_array_equal(result["y"], _x(i)["x"] * 2)


async def test_a_full_queue_is_cut_at_max_batch_in_arrival_order() -> None:
    model = GatedDouble()
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = AdaptiveBatcher(model, executor=executor, max_batch_size=16,
                                  max_delay_s=0.001, concurrency=1, max_queue=1024,
                                  name="cut")
        first = asyncio.ensure_future(batcher.submit(_x(-1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
        # 40 rows queued (some requests carry 3 rows): batches of at most 16 rows,
        # each as full as the next request allows, no request split or reordered.
        sizes = [1, 3, 1, 1, 3, 1, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1]
        waiting = [asyncio.ensure_future(batcher.submit(_x(i, rows=n)))
                   for i, n in enumerate(sizes)]
        await asyncio.sleep(0)
        model.release.set()
        results = await asyncio.gather(*waiting)
        await first
        await batcher.close()
    runs = model.batches[1:]
    assert sum(runs) == sum(sizes)
    assert max(runs) <= 16
    # Greedy in arrival order: a run closes only when the next request does not fit.
    expected, run = [], 0
    for n in sizes:
        if run + n > 16:
            expected.append(run)
            run = 0
        run += n
    assert runs == expected + [run]
    for i, result in enumerate(results):
        assert result["y"].shape == (sizes[i], 3)
        np.testing.assert_array_equal(result["y"], _x(i, rows=sizes[i])["x"] * 2)


class SlowDouble:
    """y = 2x in ~80 ms a run, whatever the batch (an accelerator's fixed cost)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray], run_options: object = None
                 ) -> dict[str, np.ndarray]:
        self.batches.append(int(inputs["x"].shape[0]))
        threading.Event().wait(0.08)
        return {"y": inputs["x"] * 2}


async def test_callers_coming_back_join_the_next_batch_instead_of_splitting_it() -> None:
    # 16 closed-loop clients, each sending its next request as soon as it is answered.
    # With one run in flight, the requests that arrived during a run used to go alone
    # into the next one, and the batches settled at 8 + 8; the callers the last run
    # answered are on their way back, and the batch waits for them (up to max_delay).
    # A run (80 ms) longer than max_delay (40 ms), as on a CPU: the requests queued behind
    # a run have waited out their own max_delay when it ends. A client takes 2 ms to come
    # back (its network and HTTP), well inside the 10 ms lull that ends the wait.
    model = SlowDouble()
    clients, rounds = 16, 10
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = AdaptiveBatcher(model, executor=executor, max_batch_size=64,
                                  max_delay_s=0.04, concurrency=1, name="loop")

        async def client(i: int) -> None:
            await asyncio.sleep(i * 0.01)  # clients start over two runs, as wrk's do
            for r in range(rounds):
                out = await batcher.submit(_x(i * 1000 + r))
                np.testing.assert_array_equal(out["y"], _x(i * 1000 + r)["x"] * 2)
                await asyncio.sleep(0.002)

        await asyncio.gather(*(client(i) for i in range(clients)))
        await batcher.close()
    steady = model.batches[3:-3]
    assert sum(model.batches) == clients * rounds
    assert sum(steady) / len(steady) >= 12, model.batches
