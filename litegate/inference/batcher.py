"""Per-model adaptive batcher (MLServer ``AdaptiveBatcher`` style).

Requests wait in an asyncio queue created lazily on the running loop. A collector
task takes the first waiting request, then keeps adding requests until the batch
holds ``max_batch_size`` rows or ``max_delay_s`` has passed (not waiting at all when the
request is alone: nothing else in flight and the previous batch was not shared), and hands
the batch to the thread executor (``session.run`` releases the GIL). At most ``concurrency``
batches run at once; while they run, the next batch fills up. A failing batch is
re-run request by request so that only the faulty request fails. The number of
waiting requests is bounded by ``max_queue``: beyond it callers get a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from litegate.errors import LitegateError, ServiceUnavailable
from litegate.inference.batch import RunFn, group_key, rows, run_merged
from litegate.inference.session import InferenceFailed


class QueueFull(ServiceUnavailable):
    """The model's request queue is full; retry shortly."""


class BatchObserver(Protocol):
    def observe_batch(self, *, requests: int, rows: int, queue_s: list[float],
                      compute_s: float) -> None: ...


@dataclass(slots=True)
class _Waiting:
    inputs: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.perf_counter)


class AdaptiveBatcher:
    def __init__(
        self,
        run: RunFn,
        *,
        executor: Executor,
        max_batch_size: int = 8,
        max_delay_s: float = 0.002,
        max_queue: int = 256,
        concurrency: int = 1,
        observer: BatchObserver | None = None,
        name: str = "",
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay_s = max(0.0, float(max_delay_s))
        self.max_queue = max(1, int(max_queue))
        self.concurrency = max(1, int(concurrency))
        self._observer = observer
        self.name = name
        self.pending = 0
        self.executions = 0
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._last_batch = 0

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def _start(self) -> None:
        # Created on first use so they bind to the loop that serves requests.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        if self.batching and self._queue is None:
            self._queue = asyncio.Queue()
            self._collector = asyncio.get_running_loop().create_task(
                self._collect(), name=f"litegate-batcher-{self.name}"
            )

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise ServiceUnavailable(f"model {self.name!r} was unloaded; retry",
                                     headers={"Retry-After": "1"})
        if self.pending >= self.max_queue:
            raise QueueFull(
                f"model {self.name!r} has {self.pending} requests waiting (max_queue "
                f"{self.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.pending += 1
        try:
            self._start()
            n = rows(inputs)
            if not self.batching or n >= self.max_batch_size:
                return await self._run_alone(inputs, n)
            assert self._queue is not None
            future: asyncio.Future[dict[str, np.ndarray]] = (
                asyncio.get_running_loop().create_future()
            )
            self._queue.put_nowait(_Waiting(inputs, n, future))
            return await future
        finally:
            self.pending -= 1

    async def _run_alone(self, inputs: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        assert self._slots is not None
        enqueued = time.perf_counter()
        async with self._slots:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._executor, self._run, dict(inputs))
            finally:
                self._observe(1, n, [started - enqueued], time.perf_counter() - started)
        return result

    def _observe(self, requests: int, n: int, queue_s: list[float], compute_s: float) -> None:
        self.executions += 1
        if self._observer is not None:
            self._observer.observe_batch(requests=requests, rows=n, queue_s=queue_s,
                                         compute_s=compute_s)

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        batch: list[_Waiting] = []
        try:
            await self._collect_forever(queue, loop, batch)
        except asyncio.CancelledError:
            for w in batch:
                _fail(w, ServiceUnavailable(f"model {self.name!r} was unloaded; retry",
                                            headers={"Retry-After": "1"}))
            raise

    async def _collect_forever(self, queue: asyncio.Queue[_Waiting],
                               loop: asyncio.AbstractEventLoop, held: list[_Waiting]) -> None:
        assert self._slots is not None
        carry: _Waiting | None = None
        while True:
            held.clear()
            first = carry or await queue.get()
            carry = None
            held.append(first)
            # Wait for a free execution slot first: requests keep arriving meanwhile,
            # so a busy model naturally gets bigger batches.
            await self._slots.acquire()
            try:
                batch, total = [first], first.rows
                # Wait for company only when there is some: other requests in flight, or
                # the previous batch was shared. A lone client (concurrency 1) runs at once
                # instead of paying max_delay on every request.
                busy = self.pending > 1 or self._last_batch > 1
                deadline = first.enqueued + (self.max_delay_s if busy else 0.0)
                while total < self.max_batch_size:
                    try:
                        if queue.qsize():
                            item = queue.get_nowait()
                        else:
                            timeout = deadline - time.perf_counter()
                            if timeout <= 0:
                                break
                            item = await asyncio.wait_for(queue.get(), timeout)
                    except (asyncio.TimeoutError, asyncio.QueueEmpty):
                        break
                    held.append(item)
                    if total + item.rows > self.max_batch_size:
                        carry = item
                        break
                    batch.append(item)
                    total += item.rows
            except BaseException:
                self._slots.release()
                raise
            held[:] = [carry] if carry is not None else []
            self._last_batch = len(batch)
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Waiting]) -> None:
        assert self._slots is not None
        try:
            live = [w for w in batch if not w.future.done()]  # drop cancelled callers
            groups: dict[object, list[_Waiting]] = {}
            for w in live:
                groups.setdefault(group_key(w.inputs), []).append(w)
            for group in groups.values():
                await self._execute_group(group)
        finally:
            self._slots.release()

    async def _execute_group(self, group: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        queue_s = [started - w.enqueued for w in group]
        try:
            results = await loop.run_in_executor(
                self._executor, run_merged, self._run, [w.inputs for w in group]
            )
        except Exception as exc:
            self._observe(len(group), sum(w.rows for w in group), queue_s,
                          time.perf_counter() - started)
            if len(group) == 1:
                _fail(group[0], exc)
                return
            # Isolate the faulty request(s): everyone else still gets an answer.
            for w in group:
                t0 = time.perf_counter()
                try:
                    result = await loop.run_in_executor(self._executor, self._run, dict(w.inputs))
                except Exception as one_exc:
                    _fail(w, one_exc)
                else:
                    if not w.future.done():
                        w.future.set_result(result)
                finally:
                    self._observe(1, w.rows, [0.0], time.perf_counter() - t0)
            return
        self._observe(len(group), sum(w.rows for w in group), queue_s,
                      time.perf_counter() - started)
        for w, result in zip(group, results):
            if not w.future.done():
                w.future.set_result(result)

    async def close(self) -> None:
        """Stop collecting; requests still queued get a 503, running batches finish."""
        self._closed = True
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except (asyncio.CancelledError, Exception):
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _fail(self._queue.get_nowait(), ServiceUnavailable(
                    f"model {self.name!r} was unloaded; retry", headers={"Retry-After": "1"}))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if waiting.future.done():
        return
    if not isinstance(exc, LitegateError):
        exc = InferenceFailed(f"inference failed: {exc}")
    waiting.future.set_exception(exc)
