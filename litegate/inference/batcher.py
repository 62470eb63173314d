"""Per-model adaptive batcher (MLServer ``AdaptiveBatcher`` style).

Requests wait in an asyncio queue created lazily on the running loop. A collector
task takes the first waiting request, then keeps adding requests until the batch
holds ``max_batch_size`` rows or ``max_delay_s`` has passed (not waiting at all when the
request is alone: nothing else in flight and the previous batch was not shared), and hands
the batch to the thread executor (``session.run`` releases the GIL). At most ``concurrency``
batches run at once; while they run, the next batch fills up. A failing batch is
re-run request by request so that only the faulty request fails. The number of
waiting requests is bounded by ``max_queue``: beyond it callers get a 503.

Every run gets its own ``RunOptions``: ONNX Runtime terminates it when its deadline
passes (504), when every caller in it has gone away (client disconnected), or when
the batcher closes for shutdown, so no thread stays pinned by a run nobody awaits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from litegate.errors import LitegateError, ServiceUnavailable
from litegate.inference.batch import RunFn, group_key, rows, run_merged
from litegate.inference.dtypes import Tensor, Tensors
from litegate.inference.session import InferenceFailed

if TYPE_CHECKING:
    from onnxruntime import RunOptions


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (``taskset``, cpusets), not
    the machine's count, so a server pinned to one core does not plan for two."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS)
        return max(1, os.cpu_count() or 1)


class QueueFull(ServiceUnavailable):
    """The model's request queue is full; retry shortly."""


class RunTimeout(LitegateError):
    """The model ran past its deadline; the run was terminated."""

    status_code = 504
    type = "timeout"
    code = "inference_timeout"


class _Run:
    """One ``session.run`` in flight: its ``RunOptions`` and why it was ended early."""

    __slots__ = ("options", "reason")

    def __init__(self, options: RunOptions | None) -> None:
        self.options = options
        self.reason: LitegateError | None = None

    def stop(self, reason: LitegateError) -> None:
        if self.reason is None:
            self.reason = reason
        if self.options is not None:
            self.options.terminate = True


class BatchObserver(Protocol):
    def observe_batch(self, *, requests: int, rows: int, queue_s: list[float],
                      compute_s: float) -> None: ...


@dataclass(slots=True)
class _Waiting:
    inputs: Tensors
    rows: int
    future: asyncio.Future[dict[str, Tensor]]
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
        run_options: Callable[[], RunOptions | None] | None = None,
        timeout_s: float = 0.0,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay_s = max(0.0, float(max_delay_s))
        self.max_queue = max(1, int(max_queue))
        self.concurrency = max(1, int(concurrency))
        self._observer = observer
        self.name = name
        self._new_options = run_options or (lambda: None)
        self.timeout_s = max(0.0, float(timeout_s))
        self._active: set[_Run] = set()
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

    async def submit(self, inputs: Tensors, *, alone: bool = False) -> dict[str, Tensor]:
        """The outputs for ``inputs``; ``alone``: the caller batched already (the text
        pipeline), so run it as it is, without waiting for company."""
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
            if alone or not self.batching or n >= self.max_batch_size:
                return await self._run_alone(inputs, n)
            assert self._queue is not None
            future: asyncio.Future[dict[str, Tensor]] = (
                asyncio.get_running_loop().create_future()
            )
            self._queue.put_nowait(_Waiting(inputs, n, future))
            return await future
        finally:
            self.pending -= 1

    async def _run_alone(self, inputs: Tensors, n: int) -> dict[str, Tensor]:
        assert self._slots is not None
        enqueued = time.perf_counter()
        async with self._slots:
            started = time.perf_counter()
            try:
                results = await self._call([dict(inputs)], ())
            finally:
                self._observe(1, n, [started - enqueued], time.perf_counter() - started)
        return results[0]

    async def _call(self, items: list[Tensors],
                    callers: Sequence[asyncio.Future[dict[str, Tensor]]]
                    ) -> list[dict[str, Tensor]]:
        """Run ``items`` merged on the executor under a deadline; stop the run when
        every one of ``callers`` is gone (or, with none, when our own caller is)."""
        loop = asyncio.get_running_loop()
        run = _Run(self._new_options())
        self._active.add(run)
        timer = None
        if self.timeout_s > 0:
            timer = loop.call_later(self.timeout_s, run.stop, RunTimeout(
                f"model {self.name!r} ran longer than {self.timeout_s:g} s (infer_timeout_s); "
                "the run was stopped"))

        def gone(_: asyncio.Future[dict[str, Tensor]]) -> None:
            if all(f.cancelled() for f in callers):
                run.stop(ServiceUnavailable("every caller left"))

        for f in callers:
            f.add_done_callback(gone)
        future = loop.run_in_executor(self._executor, run_merged, self._run, items, run.options)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            run.stop(ServiceUnavailable("the caller left"))  # nobody wants this answer
            raise
        except Exception as exc:
            if run.reason is not None:
                raise run.reason from exc
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._active.discard(run)

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
                own = first.enqueued + (self.max_delay_s if busy else 0.0)
                # When the model just freed up, the callers its last batch answered are
                # usually on their way back (closed-loop clients: each sends its next
                # request once answered, and on a busy core its answer and its next request
                # take a while to go through the HTTP stack). ``first`` may have waited out
                # its own max_delay behind the run, so a busy batch also waits up to
                # max_delay from now; once past ``own``, a lull of ``grace`` after an
                # arrival ends the wait. Without this the queue split into two halves
                # that alternate (8 + 8 for 16 clients) where one batch of 16 runs
                # ~1.25× the rows per second.
                now = time.perf_counter()
                hard = max(own, now + self.max_delay_s) if busy else own
                grace = self.max_delay_s / 2
                last: float | None = None
                while total < self.max_batch_size:
                    try:
                        if queue.qsize():
                            item = queue.get_nowait()
                        else:
                            t = time.perf_counter()
                            end = hard if t < own or last is None else min(hard, last + grace)
                            if end <= t:
                                break
                            item = await asyncio.wait_for(queue.get(), end - t)
                            last = time.perf_counter()
                    except (TimeoutError, asyncio.QueueEmpty):
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
        started = time.perf_counter()
        queue_s = [started - w.enqueued for w in group]
        try:
            results = await self._call([w.inputs for w in group], [w.future for w in group])
        except Exception as exc:
            self._observe(len(group), sum(w.rows for w in group), queue_s,
                          time.perf_counter() - started)
            if len(group) == 1 or isinstance(exc, (RunTimeout, ServiceUnavailable)):
                for w in group:
                    _fail(w, exc)
                return
            # Isolate the faulty request(s): everyone else still gets an answer.
            for w in group:
                if w.future.done():
                    continue
                t0 = time.perf_counter()
                try:
                    (result,) = await self._call([w.inputs], [w.future])
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

    async def close(self, *, terminate: bool = False) -> None:
        """Stop collecting; requests still queued get a 503. Running batches finish, or
        with ``terminate`` (shutdown) are stopped and answer 503."""
        self._closed = True
        if terminate:
            for run in list(self._active):
                run.stop(ServiceUnavailable(f"model {self.name!r} is shutting down; retry",
                                            headers={"Retry-After": "1"}))
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
