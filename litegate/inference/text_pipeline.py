"""Text in, vectors out: tokenize -> batch -> infer -> pool, the device never waiting
for the tokenizer.

One :class:`TextPipeline` per loaded version of a model registered with a tokenizer
(``{"tokenizer": ..., "task": "embeddings"}``); ``/v1/embeddings`` and v2 BYTES inputs
both go through it. Requests (texts, or token ids made with the model's tokenizer) wait
in a bounded queue. A collector takes up to ``max_batch`` rows (across requests when the
model batches, else from one request), tokenizes them on the worker pool (``tokenizers``
releases the GIL in ``encode_batch``; a batch of a few short texts inline, as a thread hop
costs more), sorts them by length into runs whose padding stays under :data:`PAD_WASTE`,
and hands each run to the session through the version's batcher (deadline, termination,
metrics). Pooling and normalisation run on the worker pool too (small outputs inline).

With ``overlap`` on, the collector goes straight on to collect and tokenize the next
batch while the session runs this one (the async prefetch): one batch more than the
session has slots is in the pipeline, so one is ready when a slot frees; rows that
arrived meanwhile then top it up to ``max_batch``. With it off, a batch is collected and
tokenized only once a slot is free.

Every row carries its request and index, so answers never mix; a request whose caller
left is dropped before tokenizing, and a run whose callers all left is cancelled (the
batcher then terminates the ORT run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from litegate.errors import BadRequest, ServiceUnavailable
from litegate.inference.batcher import QueueFull
from litegate.inference.dtypes import BYTES, Tensor
from litegate.inference.embeddings import EmbeddingTokenizer, Row, mean_pool

TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"
MAX_TEXTS = 2048
"""Texts per request (OpenAI's own bound); option ``max_texts``."""
MAX_TEXT_CHARS = 32768
"""Characters per text, checked before tokenizing; option ``max_text_chars``."""
MAX_QUEUE_TEXTS = 8192
"""Texts waiting in one pipeline before new requests get 503; option ``max_queue_texts``."""
UNBATCHED_ROWS = 32
"""Rows per run of a model that does not batch across requests."""
PAD_WASTE = 0.25
"""A run is cut where padding would exceed this share of its tokens (option
``pad_waste``; 1 keeps a batch in one run, as suits a device where a run costs more than
padding)."""
MIN_RUN_ROWS = 8
"""Runs are not cut below this many rows: each run has a fixed cost too."""
INLINE_CHARS = 512
"""Batches with fewer characters are tokenized on the event loop (no thread hop)."""
INLINE_ELEMENTS = 65536
"""Outputs with fewer elements are pooled on the event loop."""

Items = Sequence[str] | Sequence[Sequence[int]]
Vectors = npt.NDArray[np.float32]
RunFn = Callable[[dict[str, Tensor]], Awaitable[dict[str, Tensor]]]


def is_text_model(options: Mapping[str, Any]) -> bool:
    """Registered with a tokenizer for the (default) embeddings task."""
    return bool(options.get("tokenizer")) and options.get("task", "embeddings") == "embeddings"


def text_signature(options: Mapping[str, Any], signature: Mapping[str, Any]
                   ) -> dict[str, Any] | None:
    """The v2 face of a text model (``text`` BYTES [-1] in, ``embedding`` FP32 [-1, dim]
    out), from its options and its ONNX signature; None for other models."""
    if not is_text_model(options):
        return None
    outputs = list(signature.get("outputs") or ())
    wanted = options.get("embedding_output")
    out = next((o for o in outputs if o.get("name") == wanted), outputs[0] if outputs else None)
    shape = list(out["shape"]) if out is not None else []
    dim = int(shape[-1]) if len(shape) >= 2 else -1
    return {"inputs": [{"name": TEXT_INPUT, "datatype": BYTES, "shape": [-1]}],
            "outputs": [{"name": EMBEDDING_OUTPUT, "datatype": "FP32", "shape": [-1, dim]}]}


def public_signature(options: Mapping[str, Any], signature: Mapping[str, Any]
                     ) -> Mapping[str, Any]:
    """What v2 metadata and config advertise: the text face for text models."""
    return text_signature(options, signature) or signature


def check_texts(items: Sequence[object], *, what: str, max_texts: int = MAX_TEXTS,
                max_chars: int = MAX_TEXT_CHARS) -> None:
    """400 for an empty request, too many texts or a text that is too long."""
    if not items:
        raise BadRequest(f"{what} holds no text", code="invalid_input")
    if len(items) > max_texts:
        raise BadRequest(f"{what} holds {len(items)} texts; this model takes at most "
                         f"{max_texts} per request", code="invalid_input")
    for i, item in enumerate(items):
        if isinstance(item, str) and len(item) > max_chars:
            raise BadRequest(f"{what}: text {i} has {len(item)} characters; this model takes "
                             f"at most {max_chars}", code="invalid_input")


def plan_runs(lengths: Sequence[int], max_rows: int, waste: float = PAD_WASTE,
              min_rows: int = MIN_RUN_ROWS) -> list[list[int]]:
    """Row indices grouped into runs: sorted by length, a run is cut where it would hold
    ``max_rows`` rows, or where it holds ``min_rows`` and padding to its longest row would
    exceed ``waste`` of its tokens (so short texts are not padded to a long one's width)."""
    runs: list[list[int]] = []
    current: list[int] = []
    useful = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        if current and (len(current) >= max_rows or (
                len(current) >= min_rows
                and (len(current) + 1) * n * (1.0 - waste) > useful + n)):
            runs.append(current)
            current, useful = [], 0
        current.append(i)
        useful += n
    if current:
        runs.append(current)
    return runs


@dataclass(slots=True, eq=False)
class _Request:
    items: Items
    future: asyncio.Future[tuple[Vectors, int]]
    enqueued: float = field(default_factory=time.perf_counter)
    taken: int = 0
    """Rows handed to batches so far."""
    done: int = 0
    tokens: int = 0
    vectors: Vectors | None = None

    @property
    def gone(self) -> bool:
        return self.future.done()


@dataclass(frozen=True, slots=True)
class _Run:
    rows: list[tuple[_Request, int]]
    inputs: dict[str, Tensor]
    mask: npt.NDArray[np.int64]
    lengths: list[int]


class TextPipeline:
    """Shared by every request of one loaded version; per-request state lives in
    :class:`_Request`."""

    def __init__(self, tokenizer: EmbeddingTokenizer, run: RunFn, *, executor: Executor,
                 input_names: Sequence[str], output: str | None = None, normalize: bool = True,
                 max_batch: int = 1, max_delay_s: float = 0.0, concurrency: int = 1,
                 overlap: bool = True, max_queue: int = 256,
                 max_queue_texts: int = MAX_QUEUE_TEXTS, max_texts: int = MAX_TEXTS,
                 max_text_chars: int = MAX_TEXT_CHARS, pad_waste: float = PAD_WASTE,
                 name: str = "") -> None:
        self.tokenizer = tokenizer
        self._run = run
        self._executor = executor
        self.input_names = tuple(input_names)
        self.output = output
        self.normalize = normalize
        self.across = max_batch > 1
        """Rows of several requests share a run only when the model batches."""
        self.max_batch = max_batch if self.across else UNBATCHED_ROWS
        self.max_delay_s = max(0.0, max_delay_s)
        self.overlap = overlap
        self.max_queue = max(1, max_queue)
        self.max_queue_texts = max(1, max_queue_texts)
        self.max_texts = max_texts
        self.max_text_chars = max_text_chars
        self.name = name
        self.concurrency = max(1, concurrency)
        self._depth_limit = self.concurrency + (1 if overlap else 0)
        self.pad_waste = pad_waste
        self._waiting: deque[_Request] = deque()
        self.pending = 0
        """Requests submitted and not yet answered."""
        self.queued_texts = 0
        """Texts not yet handed to a batch."""
        self.batches = 0
        self._depth: asyncio.Semaphore | None = None
        self._slots: asyncio.Semaphore | None = None
        self._arrived: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, items: Items, *, what: str = "input") -> tuple[Vectors, int]:
        """The vectors of ``items`` (one row each, in order) and their token count."""
        check_texts(items, what=what, max_texts=self.max_texts, max_chars=self.max_text_chars)
        if self._closed:
            raise ServiceUnavailable(f"model {self.name!r} was unloaded; retry",
                                     headers={"Retry-After": "1"})
        if self.pending >= self.max_queue or (
                self.queued_texts and self.queued_texts + len(items) > self.max_queue_texts):
            raise QueueFull(
                f"model {self.name!r} has {self.pending} requests ({self.queued_texts} texts) "
                f"waiting (max_queue {self.max_queue}, max_queue_texts "
                f"{self.max_queue_texts}); retry shortly", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        if any(not isinstance(item, str) for item in items):  # token ids: checked here,
            # off the loop, so one client's bad ids never fail a batch shared with others
            await loop.run_in_executor(self._executor, self.tokenizer.check_ids, items)
        if self._collector is None:  # bound to the loop that serves requests
            self._depth = asyncio.Semaphore(self._depth_limit)
            self._slots = asyncio.Semaphore(self.concurrency)
            self._arrived = asyncio.Event()
            self._collector = loop.create_task(self._collect(),
                                               name=f"litegate-text-{self.name}")
        request = _Request(items, loop.create_future())
        self._waiting.append(request)
        self.pending += 1
        self.queued_texts += len(items)
        assert self._arrived is not None
        self._arrived.set()
        try:
            return await request.future
        finally:
            self.pending -= 1
            if request.taken < len(items):  # left (or failed) before all its rows were taken
                self.queued_texts -= len(items) - request.taken
                request.taken = len(items)

    # ------------------------------------------------------------- collector
    async def _collect(self) -> None:
        assert self._depth is not None and self._slots is not None
        while True:
            await self._depth.acquire()  # overlap on: one batch more than session slots
            rows: list[tuple[_Request, int]] = []
            try:
                rows = await self._take()
                if not rows:  # closed, and nothing waits any more
                    self._depth.release()
                    return
                tokens = await self._tokenize(rows)  # while the session runs other batches
                await self._slots.acquire()
                try:
                    if self.overlap:  # top up with what arrived while this batch waited
                        extra = self._take_now(self.max_batch - len(rows), rows)
                        if extra:
                            tokens += await self._tokenize(extra)
                            rows += extra
                    runs = self._plan(rows, tokens)
                except BaseException:
                    self._slots.release()
                    raise
            except asyncio.CancelledError:
                self._depth.release()
                _fail(rows, ServiceUnavailable(f"model {self.name!r} was unloaded; retry",
                                               headers={"Retry-After": "1"}))
                raise
            except Exception as exc:
                self._depth.release()
                _fail(rows, exc)
                continue
            self.batches += 1
            task = asyncio.get_running_loop().create_task(self._execute(runs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_now(self, room: int, rows: list[tuple[_Request, int]]
                  ) -> list[tuple[_Request, int]]:
        """Up to ``room`` waiting rows that may join ``rows``, without waiting."""
        taken: list[tuple[_Request, int]] = []
        while self._waiting and len(taken) < room:
            request = self._waiting[0]
            if request.gone:
                self._waiting.popleft()
                continue
            first = rows[0] if rows else taken[0] if taken else None
            if not self.across and first is not None and first[0] is not request:
                break  # a model that does not batch: one request per batch
            n = min(room - len(taken), len(request.items) - request.taken)
            taken.extend((request, i) for i in range(request.taken, request.taken + n))
            request.taken += n
            self.queued_texts -= n
            if request.taken == len(request.items):
                self._waiting.popleft()
        return taken

    async def _take(self) -> list[tuple[_Request, int]]:
        """Up to ``max_batch`` rows; waits ``max_delay_s`` for company only when other
        requests are in flight (a lone client never waits)."""
        assert self._arrived is not None
        rows: list[tuple[_Request, int]] = []
        deadline: float | None = None
        while True:
            rows += self._take_now(self.max_batch - len(rows), rows)
            if rows and (len(rows) >= self.max_batch or not self.across):
                break
            if rows and deadline is None:
                busy = self.pending > len({id(r) for r, _ in rows})
                deadline = rows[0][0].enqueued + (self.max_delay_s if busy else 0.0)
            if self._closed and not self._waiting:
                break
            timeout = None if deadline is None else deadline - time.perf_counter()
            if timeout is not None and timeout <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                break
        return rows

    async def _tokenize(self, rows: list[tuple[_Request, int]]) -> list[Row]:
        """Token rows of ``rows`` on the worker pool (inline when tiny: a thread hop
        costs more than tokenizing one short text)."""
        items = [r.items[i] for r, i in rows]
        if sum(len(t) for t in items) <= INLINE_CHARS:
            return self.tokenizer.rows(items)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.tokenizer.rows, items)

    def _plan(self, rows: list[tuple[_Request, int]], tokens: list[Row]) -> list[_Run]:
        """Runs of similar length, padded; rows whose request left are dropped."""
        keep = [j for j, (r, _) in enumerate(rows) if not r.gone]
        lengths = [len(tokens[j][0]) for j in keep]
        runs = []
        for part in plan_runs(lengths, self.max_batch, self.pad_waste):
            padded = self.tokenizer.pad([tokens[keep[j]] for j in part])
            inputs: dict[str, Tensor] = {k: v for k, v in padded.items() if k in self.input_names}
            runs.append(_Run([rows[keep[j]] for j in part], inputs, padded["attention_mask"],
                             [lengths[j] for j in part]))
        return runs

    # ------------------------------------------------------------- runs
    async def _execute(self, runs: list[_Run]) -> None:
        assert self._depth is not None and self._slots is not None
        try:
            await asyncio.gather(*(self._one(run) for run in runs), return_exceptions=True)
        finally:
            self._slots.release()
            self._depth.release()

    async def _one(self, run: _Run) -> None:
        requests = {id(r): r for r, _ in run.rows}.values()
        if all(r.gone for r in requests):
            return
        task = asyncio.ensure_future(self._run(run.inputs))

        def left(_: object) -> None:
            if all(r.gone for r in requests):
                task.cancel()  # nobody waits for this run: the batcher terminates it

        for r in requests:
            r.future.add_done_callback(left)
        try:
            outputs = await task
            if sum(a.size for a in outputs.values()) <= INLINE_ELEMENTS:
                vectors = self._pool(outputs, run.mask)
            else:
                vectors = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._pool, outputs, run.mask)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            return
        except Exception as exc:
            _fail(run.rows, exc)
            return
        finally:
            for r in requests:
                r.future.remove_done_callback(left)
        for (request, index), vector, n in zip(run.rows, vectors, run.lengths):
            if request.gone:
                continue
            if request.vectors is None:
                request.vectors = np.empty((len(request.items), vector.shape[-1]), np.float32)
            request.vectors[index] = vector
            request.tokens += n
            request.done += 1
            if request.done == len(request.items):
                request.future.set_result((request.vectors, request.tokens))

    def _pool(self, outputs: Mapping[str, Tensor], mask: npt.NDArray[np.int64]) -> Vectors:
        hidden = outputs[self.output] if self.output else next(iter(outputs.values()))
        if hidden.ndim != 3:  # the model pools itself
            return np.asarray(hidden, dtype=np.float32)
        return mean_pool(hidden, mask, normalize=self.normalize)

    async def close(self, *, terminate: bool = False) -> None:
        """Take no new requests; answer the waiting ones, then stop. With ``terminate``
        (shutdown) the waiting ones get 503 instead; runs already handed to the session
        finish (the batcher decides whether they are stopped)."""
        self._closed = True
        if self._collector is not None:
            if terminate:
                self._collector.cancel()
            elif self._arrived is not None:
                self._arrived.set()  # an idle collector sees the pipeline closed
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._collector
        while self._waiting:
            request = self._waiting.popleft()
            if not request.gone:
                request.future.set_exception(ServiceUnavailable(
                    f"model {self.name!r} was unloaded; retry", headers={"Retry-After": "1"}))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _fail(rows: Sequence[tuple[_Request, int]], exc: BaseException) -> None:
    for request, _ in rows:
        if not request.gone:
            request.future.set_exception(exc)
