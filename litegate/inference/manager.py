"""The model manager: one per gateway process.

It owns the loaded sessions (an LRU under a memory budget), loads each model version
at most once at a time (single-flight), warms hot models in the background, routes
requests through each version's :class:`AdaptiveBatcher` and follows configuration
snapshots: new active versions take effect for new requests at once, while requests
already holding an old version finish on it.

It reads the configuration's frozen specs (:class:`~litegate.snapshot.Snapshot`,
:class:`~litegate.snapshot.ModelSpec`, :class:`~litegate.snapshot.ModelVersionSpec`).
Everything here runs on the event loop except the loader and the sessions' runs.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from litegate.errors import BadRequest, LitegateError, NotFound, ServiceUnavailable
from litegate.inference.batcher import AdaptiveBatcher, QueueFull, usable_cpus
from litegate.inference.dtypes import Tensor, Tensors
from litegate.inference.memory import MEASURING, release_memory
from litegate.inference.metrics import ModelMetrics
from litegate.inference.placement import (
    MIB,
    PlacementError,
    choose_device,
    device_charge,
    parse_devices,
    pinned_device,
)
from litegate.inference.providers import wants_device
from litegate.inference.signature import Signature, validate_inputs
from litegate.inference.stats import Observers, VersionStats
from litegate.inference.text_pipeline import (
    EMBEDDING_OUTPUT,
    MAX_QUEUE_TEXTS,
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    PAD_WASTE,
    TEXT_INPUT,
    TextPipeline,
    is_text_model,
    text_signature,
)
from litegate.settings import Settings
from litegate.snapshot import ModelSpec, ModelVersionSpec, Snapshot

if TYPE_CHECKING:  # onnxruntime and tokenizers load only with the first model
    from onnxruntime import RunOptions
    from prometheus_client import CollectorRegistry

    from litegate.inference.embeddings import EmbeddingTokenizer
    from litegate.inference.session import LoadedSession

log = structlog.get_logger("litegate.inference")

Key = tuple[str, str]


class Loader(Protocol):
    """Creates one version's session (on a loading thread)."""

    def __call__(self, path: Path, settings: Settings, *, name: str, version: str,
                 options: Mapping[str, Any]) -> LoadedSession: ...


FAILED_RETRY_S = 5.0
"""A version that failed to load answers 503 at once for this long before a retry."""


@dataclass(slots=True)
class _Entry:
    key: Key
    path: str
    sha256: str
    loaded: LoadedSession | None  # None once freed (retired and closed)
    batcher: AdaptiveBatcher
    executor: ThreadPoolExecutor  # this version's own threads: no model takes them all
    hot: bool = False
    inflight: int = 0
    retired: bool = False
    last_used: float = field(default_factory=time.monotonic)
    device: int | None = None  # the CUDA device it is charged to (None: host only)
    device_bytes: int = 0
    pipeline: TextPipeline | None = None  # built by the first text request
    pipeline_config: tuple[Any, ...] = ()

    @property
    def idle(self) -> bool:
        return self.inflight == 0 and self.batcher.idle

    @property
    def session(self) -> LoadedSession:
        """The live session: an entry is freed only once retired and idle, so nothing
        that holds it (a request, its batcher) sees it freed."""
        if self.loaded is None:
            raise ServiceUnavailable(f"model {self.key[0]!r} was unloaded; retry",
                                     headers={"Retry-After": "1"})
        return self.loaded


@dataclass(frozen=True, slots=True)
class InferResult:
    model: str
    version: str
    outputs: dict[str, Tensor]


def _default_loader(path: Path, settings: Settings, *, name: str, version: str,
                    options: Mapping[str, Any]) -> LoadedSession:
    from litegate.inference.session import load_session

    return load_session(path, settings, name=name, version=version, options=options)


def _configured(snapshot: Snapshot, key: Key) -> bool:
    spec = snapshot.models.get(key[0])
    return spec is not None and key[1] in spec.versions


class _Serving:
    """``ModelManager._serving``: a plain async context manager, as
    ``contextlib.asynccontextmanager`` costs an async generator per inference."""

    __slots__ = ("_entry", "_manager", "_name", "_started", "_stats", "_version")

    def __init__(self, manager: ModelManager, name: str, version: str | None) -> None:
        self._manager, self._name, self._version = manager, name, version

    async def __aenter__(self) -> _Entry:
        manager = self._manager
        self._started = time.perf_counter()
        entry = self._entry = await manager._checkout(self._name, self._version)
        manager.metrics.count_request(*entry.key)
        self._stats = manager.version_stats(entry.key)
        return entry

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        manager, entry = self._manager, self._entry
        manager._release(entry)
        if exc is None:
            self._stats.request_done(True, time.perf_counter() - self._started)
        elif isinstance(exc, Exception):
            status = exc.status_code if isinstance(exc, LitegateError) else 500
            manager.metrics.failures.labels(*entry.key, str(status)).inc()
            if isinstance(exc, QueueFull):
                manager.metrics.queue_rejections.labels(*entry.key).inc()
            self._stats.request_done(False, time.perf_counter() - self._started)


class ModelManager:
    def __init__(self, settings: Settings, metrics_registry: CollectorRegistry | None = None,
                 *, loader: Loader | None = None, workers: int | None = None) -> None:
        self.settings = settings
        self.metrics = ModelMetrics(metrics_registry)
        self._loader: Loader = loader or _default_loader
        self._snapshot: Snapshot | None = None
        self._loaded: OrderedDict[Key, _Entry] = OrderedDict()
        self._loading: dict[Key, asyncio.Task[_Entry]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._tokenizers: dict[tuple[str, int], EmbeddingTokenizer] = {}
        self._warmup: asyncio.Task[None] | None = None
        self.load_count = 0
        """Loads started; counted on the event loop (never on a loading thread)."""
        n = workers or settings.inference_workers
        self.workers = n or max(2, usable_cpus())
        # Tokenizers only; each loaded version runs on its own bounded executor.
        self._executor = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="litegate-onnx")
        self._load_executor = ThreadPoolExecutor(max_workers=2,
                                                 thread_name_prefix="litegate-onnx-load")
        self._failed: dict[Key, tuple[float, LitegateError]] = {}
        self._pins: dict[Key, int] = {}  # requests waiting for a load: not evictable
        self._room = asyncio.Event()  # set whenever a version goes idle
        self._budget_lock: asyncio.Lock | None = None
        self._measured: dict[Key, int] = {}
        self._placing: dict[Key, tuple[int, int]] = {}  # loads under way: (device, bytes)
        self._closing: set[asyncio.Task[None]] = set()  # sessions being freed
        self.stats: dict[Key, VersionStats] = {}

    # ----------------------------------------------------------------- lifecycle
    async def start(self, snapshot: Snapshot) -> None:
        """Remember the snapshot and warm the hot models in the background (idempotent)."""
        if self._warmup is not None:
            self.on_snapshot(snapshot)
            return
        self._snapshot = snapshot
        self._warmup = asyncio.get_running_loop().create_task(
            self._warm_hot(snapshot), name="litegate-model-warmup")

    async def _warm_hot(self, snapshot: Snapshot) -> None:
        hot = [(s, s.active_version) for s in snapshot.models.values()
               if s.hot and s.active_version]
        results = await asyncio.gather(
            *(self._ensure(s, v) for s, v in hot), return_exceptions=True)
        for (spec, _), result in zip(hot, results):
            if isinstance(result, BaseException):
                log.error("onnx_hot_model_failed", model=spec.name, error=str(result))
        log.info("onnx_warmup_done", models=[s.name for s, _ in hot])

    def ready(self) -> bool:
        """True when every hot model's active version is loaded: a hot model that
        cannot load (bad file, timeout, checksum) keeps the gateway not ready."""
        snap = self._snapshot
        if snap is None:
            return True
        return all((m.name, m.active_version) in self._loaded for m in snap.models.values()
                   if m.hot and m.active_version)

    @property
    def current_snapshot(self) -> Snapshot | None:
        return self._snapshot

    async def wait_ready(self) -> None:
        if self._warmup is not None:
            await asyncio.shield(self._warmup)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Config changed: new requests see it at once; in-flight ones finish on their version."""
        old, self._snapshot = self._snapshot, snapshot
        self._failed.clear()  # a changed configuration deserves a fresh try
        for key in [k for k in self.stats if not _configured(snapshot, k)]:
            del self.stats[key]  # statistics only for configured versions
        if self._warmup is None:  # never started: this snapshot is the start-up one
            try:
                self._warmup = asyncio.get_running_loop().create_task(
                    self._warm_hot(snapshot), name="litegate-model-warmup")
            except RuntimeError:
                pass
            return
        for key, entry in list(self._loaded.items()):
            spec = snapshot.models.get(key[0])
            vspec = spec.versions.get(key[1]) if spec is not None else None
            if (spec is None or vspec is None or str(vspec.path) != entry.path
                    or vspec.sha256 != entry.sha256):
                self._retire(entry)
            elif key[1] not in (spec.active_version, spec.previous_version):
                # Superseded twice over: give its memory back (it reloads lazily if a
                # request names that version explicitly). The active version and the
                # one a rollback returns to stay loaded, so both switches are instant.
                self._retire(entry)
        # Pre-load newly activated versions of models that were serving, and hot models,
        # so the first request after an activation does not pay for the load.
        for spec in snapshot.models.values():
            if not spec.active_version or (spec.name, spec.active_version) in self._loaded:
                continue
            was_loaded = any(k[0] == spec.name for k in self._loaded)
            if spec.hot or was_loaded:
                self._spawn(self._preload(spec, spec.active_version))
        if old is not None:
            log.info("onnx_snapshot_applied", models=len(snapshot.models))

    async def _preload(self, spec: ModelSpec, version: str) -> None:
        try:
            await self._ensure(spec, version)
        except Exception as exc:
            log.error("onnx_preload_failed", model=spec.name, version=version, error=str(exc))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop (called from sync code): load lazily instead
            coro.close()
            return None
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _close_soon(self, entry: _Entry) -> None:
        task = self._spawn(self._close(entry))
        if task is not None:
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        for task in (self._warmup, *self._background, *self._loading.values()):
            if task is not None and not task.done():
                task.cancel()
        for entry in list(self._loaded.values()):
            self._loaded.pop(entry.key, None)
            if entry.pipeline is not None:
                await entry.pipeline.close(terminate=True)
            await entry.batcher.close(terminate=True)  # in-flight runs end now
            entry.executor.shutdown(wait=False, cancel_futures=True)
            self._set_loaded_metric(entry, False)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------------- lookup
    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise NotFound("no models are configured")
        return self._snapshot

    def spec(self, name: str) -> ModelSpec:
        spec = self.snapshot.models.get(name)
        if spec is None:
            raise NotFound(f"model {name!r} not found")
        return spec

    def resolve(self, name: str, version: str | None = None) -> tuple[ModelSpec, str]:
        spec = self.spec(name)
        if version in (None, ""):
            if not spec.active_version:
                raise NotFound(f"model {name!r} has no active version")
            return spec, str(spec.active_version)
        if version not in spec.versions:
            raise NotFound(f"model {name!r} has no version {version!r}")
        return spec, str(version)

    def loaded(self, name: str, version: str) -> LoadedSession | None:
        """The LoadedSession for a version if it is loaded now (no loading)."""
        entry = self._loaded.get((name, version))
        return entry.loaded if entry is not None else None

    def is_loaded(self, name: str, version: str) -> bool:
        return (name, version) in self._loaded

    def version_stats(self, key: Key) -> VersionStats:
        """The v2 statistics of a loaded version, created on first use (not on every
        request, as ``setdefault(key, VersionStats())`` would)."""
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = VersionStats()
        return stats

    # ------------------------------------------------------------------- loading
    async def _ensure(self, spec: ModelSpec, version: str) -> _Entry:
        key = (spec.name, version)
        vspec = spec.versions[version]
        entry = self._loaded.get(key)
        if entry is not None and entry.path == str(vspec.path):
            self._loaded.move_to_end(key)
            return entry
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILED_RETRY_S:
            raise failed[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(spec, vspec))
            self._loading[key] = task
            task.add_done_callback(functools.partial(self._load_done, key))
        return await asyncio.shield(task)

    def _load_done(self, key: Key, task: asyncio.Task[_Entry]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]

    def _plan(self, spec: ModelSpec, vspec: ModelVersionSpec) -> tuple[int, dict[str, Any]]:
        """How many runs of this version may go at once, and the session options.

        Batched models default to 2 concurrent runs: one computes while the next batch is
        merged and the previous one split; unbatched ones to one per worker. On a single
        usable core (``taskset``) a batched model gets one run: a second would only share
        that core and split the queue into two half batches. Each version
        gets that many threads of its own, so a slow or hostile model can pin only its
        own. Intra-op threads stay at the setting (0 = ORT's default, all cores).
        """
        options = dict(spec.options or {})
        signature = Signature.from_dict(vspec.signature or {})
        batching = int(spec.max_batch_size or 0) > 1 and (
            signature.batchable or not signature.inputs)
        workers = self.workers
        instances = int(options.get("instances")
                        or (min(2, workers, usable_cpus()) if batching else workers))
        return max(1, instances), options

    def _load_sync(self, spec: ModelSpec, vspec: ModelVersionSpec,
                   options: dict[str, Any]) -> LoadedSession:
        """On a loading thread: check the file, then create the session."""
        from litegate.inference.session import verify_file

        verify_file(Path(vspec.path), str(vspec.sha256), name=spec.name,
                    version=str(vspec.version))
        return self._loader(Path(vspec.path), self.settings, name=spec.name,
                            version=str(vspec.version), options=options)

    async def _load(self, spec: ModelSpec, vspec: ModelVersionSpec) -> _Entry:
        key = (spec.name, str(vspec.version))
        try:
            entry = await self._load_bounded(spec, vspec)
        except LitegateError as exc:
            self._failed[key] = (time.monotonic(), exc)
            self.metrics.load_failures.labels(*key).inc()
            log.error("onnx_model_load_failed", model=key[0], version=key[1], error=exc.detail)
            raise
        self._failed.pop(key, None)
        return entry

    async def _load_bounded(self, spec: ModelSpec, vspec: ModelVersionSpec) -> _Entry:
        from litegate.inference.session import ModelUnavailable, new_run_options

        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        key = (spec.name, str(vspec.version))
        instances, options = self._plan(spec, vspec)
        timeout = float(self.settings.model_load_timeout_s or 120.0)
        gpu = wants_device(str(options.get("providers") or self.settings.providers))
        if self.budget_bytes > 0 or (gpu and self.device_budget_bytes > 0):
            # One load at a time under a budget: each makes room first, so loads queue
            # instead of evicting each other (and they are measured one by one).
            if self._budget_lock is None:
                self._budget_lock = asyncio.Lock()
            async with self._budget_lock:
                device, charge = self._place(key, vspec, options) if gpu else (None, 0)
                if self.budget_bytes > 0:
                    await self._make_room(key, self._estimate(key, vspec), timeout)
                if device is not None and self.device_budget_bytes > 0:
                    await self._make_room(key, charge, timeout, device)
                loaded = await self._run_placed(loop, spec, vspec, options, timeout, device,
                                                charge)
        else:
            device, charge = self._place(key, vspec, options) if gpu else (None, 0)
            loaded = await self._run_placed(loop, spec, vspec, options, timeout, device, charge)
        if loaded is None:
            raise ModelUnavailable(
                f"model {spec.name!r} version {vspec.version!r} did not load within "
                f"{timeout:g} s (model_load_timeout_s)")
        self._measured[key] = int(loaded.size_bytes)
        batching = int(spec.max_batch_size or 0) > 1 and loaded.signature.batchable
        executor = ThreadPoolExecutor(max_workers=instances,
                                      thread_name_prefix=f"litegate-onnx-{spec.name}")
        stats = self.version_stats(key)
        holder: list[_Entry] = []  # the batcher reaches the session only through the entry

        def run(inputs: dict[str, Tensor], run_options: RunOptions | None) -> dict[str, Tensor]:
            return holder[0].session.run(inputs, run_options)

        batcher = AdaptiveBatcher(
            run,
            executor=executor,
            max_batch_size=int(spec.max_batch_size or 1) if batching else 1,
            max_delay_s=float(spec.max_queue_delay_ms or 0) / 1000.0,
            max_queue=int(options.get("max_queue") or self.settings.max_queue),
            concurrency=instances,
            observer=Observers(self.metrics.observer(*key), stats),
            name=spec.name,
            run_options=new_run_options,
            timeout_s=float(self.settings.infer_timeout_s or 0.0),
        )
        entry = _Entry(key, str(vspec.path), str(vspec.sha256), loaded, batcher, executor,
                       hot=spec.hot)
        if loaded.device_id is not None:  # really on the device (not fallen back to CPU)
            entry.device, entry.device_bytes = loaded.device_id, charge
        holder.append(entry)
        previous = self._loaded.pop(key, None)
        if previous is not None:
            self._retire(previous)
        self._loaded[key] = entry
        self._set_loaded_metric(entry, True)
        self.metrics.load_seconds.labels(*key).observe(time.perf_counter() - started)
        self._enforce_budget(keep=key)
        return entry

    def _place(self, key: Key, vspec: ModelVersionSpec, options: dict[str, Any]
               ) -> tuple[int, int]:
        """The device for a session on a GPU provider (set as its ``device_id``) and the
        bytes it will be charged there; see :mod:`litegate.inference.placement`."""
        from litegate.inference.session import ModelUnavailable

        try:
            devices = parse_devices(self.settings.devices)
            pinned = pinned_device(options, devices)
            charge = device_charge(options, int(vspec.size_bytes or 0))
        except PlacementError as exc:
            raise ModelUnavailable(f"model {key[0]!r} version {key[1]!r}: {exc}") from exc
        charged: dict[int, int] = {}
        sessions: dict[int, int] = {}
        placed = [(e.device, e.device_bytes) for e in self._loaded.values()
                  if e.device is not None]
        for d, n in [*placed, *self._placing.values()]:
            charged[d] = charged.get(d, 0) + n
            sessions[d] = sessions.get(d, 0) + 1
        device = choose_device(devices, charged, sessions, pinned)
        options["device_id"] = device
        return device, charge

    async def _run_placed(self, loop: asyncio.AbstractEventLoop, spec: ModelSpec,
                          vspec: ModelVersionSpec, options: dict[str, Any], timeout: float,
                          device: int | None, charge: int) -> LoadedSession | None:
        """:meth:`_run_load`, with the device held for this load while it runs (so
        concurrent loads spread over the devices)."""
        key = (spec.name, str(vspec.version))
        if device is not None:
            self._placing[key] = (device, charge)
        try:
            return await self._run_load(loop, spec, vspec, options, timeout)
        finally:
            self._placing.pop(key, None)

    async def _run_load(self, loop: asyncio.AbstractEventLoop, spec: ModelSpec,
                        vspec: ModelVersionSpec, options: dict[str, Any], timeout: float
                        ) -> LoadedSession | None:
        """The load on a loading thread, awaited at most about ``timeout`` (None past it).

        Warm-up stops itself at ``timeout`` with a precise error; the margin leaves it
        that chance, and this bound catches a session creation that never returns.
        """
        self.load_count += 1
        future = loop.run_in_executor(self._load_executor, self._load_sync, spec, vspec,
                                      options)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout * 1.5 + 1.0)
        except TimeoutError:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # consumed
            return None

    # ------------------------------------------------------------ memory budget
    @property
    def budget_bytes(self) -> int:
        return int(self.settings.model_memory_mb or 0) * MIB

    @property
    def device_budget_bytes(self) -> int:
        """The budget of each CUDA device (``gpu_memory_mb``); 0 = unlimited."""
        return int(self.settings.gpu_memory_mb or 0) * MIB

    def _budget(self, device: int | None) -> int:
        return self.budget_bytes if device is None else self.device_budget_bytes

    def queue_states(self) -> list[tuple[str, str, int, int, int]]:
        """(model, version, waiting requests, max_queue, bytes) per loaded version, for
        the scrape-time gauges."""
        return [(k[0], k[1], e.batcher.pending, e.batcher.max_queue, e.loaded.size_bytes)
                for k, e in list(self._loaded.items()) if e.loaded is not None]

    @staticmethod
    def _charge(entry: _Entry, device: int | None) -> int:
        """What ``entry`` counts against the host budget (None) or ``device``'s."""
        if device is None:
            return entry.loaded.size_bytes if entry.loaded is not None else 0
        return entry.device_bytes if entry.device == device else 0

    def loaded_bytes(self, device: int | None = None) -> int:
        """Bytes held by loaded sessions: all of them (host), or those on ``device``."""
        return sum(self._charge(e, device) for e in self._loaded.values())

    def _evictable(self, key: Key, entry: _Entry) -> bool:
        return entry.idle and not entry.hot and not self._pins.get(key)

    def _evict_until(self, budget: int, keep: Key | None, device: int | None = None) -> None:
        for key in list(self._loaded):
            if self.loaded_bytes(device) <= budget:
                return
            entry = self._loaded[key]
            if key != keep and self._charge(entry, device) and self._evictable(key, entry):
                self.metrics.evictions.labels(*key).inc()
                log.info("onnx_model_evicted", model=key[0], version=key[1])
                self._retire(entry)

    def _enforce_budget(self, keep: Key) -> None:
        entry = self._loaded.get(keep)
        for device in {None, entry.device if entry is not None else None}:
            budget = self._budget(device)
            if budget <= 0:
                continue
            self._evict_until(budget, keep, device)
            if self.loaded_bytes(device) > budget:
                log.warning("onnx_memory_budget_exceeded", device=device,
                            loaded_bytes=self.loaded_bytes(device), budget_bytes=budget)

    def _estimate(self, key: Key, vspec: ModelVersionSpec) -> int:
        """Bytes a version will hold once loaded: its last measurement, else the largest
        measured version of the same model (versions are alike), else its file size."""
        if key in self._measured:
            return self._measured[key]
        same = [n for k, n in self._measured.items() if k[0] == key[0]]
        return max([*same, int(vspec.size_bytes or 0)])

    async def _make_room(self, key: Key, need: int, timeout: float,
                         device: int | None = None) -> None:
        """Evict idle versions until ``need`` more bytes fit in the host budget, or in
        ``device``'s; wait for busy ones to go idle rather than overshooting. Alone in the
        host budget, a version loads anyway; one larger than a device's budget is refused
        (``gpu_mem_limit`` would fail it there)."""
        from litegate.inference.session import ModelUnavailable

        setting = "model_memory_mb" if device is None else f"gpu_memory_mb, device {device}"
        if device is not None and need > self.device_budget_bytes:
            raise ModelUnavailable(
                f"model {key[0]!r} version {key[1]!r} needs {need / MIB:.1f} MiB on a device; "
                f"the budget per device is {self.device_budget_bytes / MIB:.0f} MiB: raise "
                "LITEGATE_GPU_MEMORY_MB or lower the model's gpu_memory_mb option")
        deadline = time.monotonic() + timeout
        while True:
            budget = self._budget(device) - need
            self._evict_until(budget, None, device)
            if self.loaded_bytes(device) <= budget or not any(
                    k != key and self._charge(e, device) for k, e in self._loaded.items()):
                # Evicted sessions are freed before the new one allocates: never both.
                await asyncio.gather(*list(self._closing), return_exceptions=True)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(
                    f"model {key[0]!r}: the memory budget ({setting}) is held by busy "
                    "models; retry", headers={"Retry-After": "1"})
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def _retire(self, entry: _Entry) -> None:
        """Stop routing to ``entry``; close it once its last request is done."""
        if self._loaded.get(entry.key) is entry:
            del self._loaded[entry.key]
        if entry.retired:
            return
        entry.retired = True
        self._set_loaded_metric(entry, False)
        if entry.idle:
            self._close_soon(entry)

    async def _close(self, entry: _Entry) -> None:
        if entry.pipeline is not None:
            await entry.pipeline.close()
        await entry.batcher.close()
        entry.executor.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_executor, self._free, entry)

    @staticmethod
    def _free(entry: _Entry) -> None:
        """Free the session (its arena) and trim, never while a load is being measured."""
        with MEASURING:
            entry.loaded = None
            release_memory()

    def _set_loaded_metric(self, entry: _Entry, on: bool) -> None:
        if entry.loaded is None:
            return
        labels = (*entry.key, ",".join(entry.loaded.providers))
        if on:
            self.metrics.loaded.labels(*labels).set(1)
        else:
            try:
                self.metrics.loaded.remove(*labels)
            except KeyError:
                pass

    # ---------------------------------------------------------------- inference
    async def _checkout(self, name: str, version: str | None) -> _Entry:
        for _ in range(3):
            spec, v = self.resolve(name, version)
            key = (spec.name, v)
            # Pinned while waiting: the budget never evicts what a request is about to
            # use, so loads never outnumber the requests that asked for them.
            self._pins[key] = self._pins.get(key, 0) + 1
            try:
                entry = await self._ensure(spec, v)
            finally:
                self._pins[key] -= 1
                if not self._pins[key]:
                    del self._pins[key]
            if entry.retired:  # unloaded by a config change meanwhile: load again
                continue
            entry.inflight += 1  # same loop step as the check: eviction cannot race us now
            entry.last_used = time.monotonic()
            self._loaded.move_to_end(entry.key)
            return entry
        raise ServiceUnavailable(
            f"model {name!r} was unloaded while loading (memory budget too small?); retry",
            headers={"Retry-After": "1"})

    def _release(self, entry: _Entry) -> None:
        entry.inflight -= 1
        if entry.idle:
            self._room.set()
        if entry.retired and entry.idle:
            self._close_soon(entry)

    def _serving(self, name: str, version: str | None) -> _Serving:
        """The version checked out for one request, counted in metrics and statistics:
        ``async with self._serving(name, version) as entry``."""
        return _Serving(self, name, version)

    async def infer(self, name: str, inputs: Tensors, *,
                    version: str | None = None, outputs: list[str] | None = None
                    ) -> InferResult:
        """Validate against the signature, batch, run off the loop, return named outputs.
        A text model also takes its text face: ``text`` (BYTES) in, ``embedding`` out."""
        async with self._serving(name, version) as entry:
            signature = entry.session.signature
            face = self._text_face(entry)
            if face is not None and set(inputs) != set(signature.input_names):
                signature = face
            validate_inputs(signature, inputs)
            if outputs:
                unknown = [o for o in outputs if o not in signature.output_names]
                if unknown:
                    raise BadRequest(
                        f"unknown output {unknown[0]!r}; the model has "
                        f"{', '.join(signature.output_names)}")
            if signature is face:
                pipeline = await self._pipeline(entry)
                vectors, _ = await pipeline.submit(inputs[TEXT_INPUT].tolist(),
                                                   what=f"input {TEXT_INPUT!r}")
                result: dict[str, Tensor] = {EMBEDDING_OUTPUT: vectors}
            else:
                result = await entry.batcher.submit(inputs)
        if outputs:
            result = {o: result[o] for o in outputs}
        return InferResult(entry.key[0], entry.key[1], result)

    async def embed(
        self, name: str, texts: list[str] | list[list[int]]
    ) -> tuple[list[list[float]], int]:
        """``/v1/embeddings`` for an ``onnx`` upstream: (vectors, prompt_tokens); the input
        is texts, or token ids already produced by the model's tokenizer."""
        if not self.spec(name).options.get("tokenizer"):
            raise BadRequest(f"model {name!r} has no tokenizer configured for embeddings")
        async with self._serving(name, None) as entry:
            pipeline = await self._pipeline(entry)
            vectors, tokens = await pipeline.submit(texts, what="'input'")
        rows: list[list[float]] = vectors.tolist()
        return rows, tokens

    def _text_face(self, entry: _Entry) -> Signature | None:
        """The text signature of a text model's version (see ``text_pipeline``)."""
        spec = self.snapshot.models.get(entry.key[0])
        if spec is None or not is_text_model(spec.options):
            return None
        face = text_signature(spec.options, entry.session.signature.to_dict())
        return Signature.from_dict(face) if face is not None else None

    async def _pipeline(self, entry: _Entry) -> TextPipeline:
        """The version's text pipeline; rebuilt (the old one drains) when its model's
        options or batching change."""
        spec = self.spec(entry.key[0])
        options = dict(spec.options or {})
        tokenizer = await self._tokenizer(spec.name, options)
        batcher = entry.batcher
        overlap = options.get("overlap", self.settings.text_pipeline_overlap)
        kwargs: dict[str, Any] = {
            "output": options.get("embedding_output"),
            "normalize": bool(options.get("normalize", True)),
            "max_batch": batcher.max_batch_size if batcher.batching else 1,
            "max_delay_s": batcher.max_delay_s,
            "concurrency": batcher.concurrency,
            "overlap": str(overlap).lower() not in ("false", "0", "off", "no"),
            "max_queue": int(options.get("max_queue") or self.settings.max_queue),
            "max_queue_texts": int(options.get("max_queue_texts") or MAX_QUEUE_TEXTS),
            "max_texts": int(options.get("max_texts") or MAX_TEXTS),
            "max_text_chars": int(options.get("max_text_chars") or MAX_TEXT_CHARS),
            "pad_waste": float(options.get("pad_waste", PAD_WASTE)),
        }
        config = (options.get("tokenizer"), options.get("max_length"), *kwargs.values())
        if entry.pipeline is None or entry.pipeline_config != config:
            old = entry.pipeline
            entry.pipeline = TextPipeline(
                tokenizer, functools.partial(batcher.submit, alone=True),
                executor=self._executor, input_names=entry.session.signature.input_names,
                name=spec.name, **kwargs)
            entry.pipeline_config = config
            if old is not None:
                self._spawn(old.close())  # it answers what it holds, then stops
        return entry.pipeline

    async def _tokenizer(self, name: str, options: Mapping[str, Any]) -> EmbeddingTokenizer:
        from litegate.inference.embeddings import DEFAULT_MAX_LENGTH, EmbeddingTokenizer

        ref = options.get("tokenizer")
        if not ref:
            raise BadRequest(f"model {name!r} has no tokenizer configured for embeddings")
        cache_key = (str(ref), int(options.get("max_length", DEFAULT_MAX_LENGTH)))
        tok = self._tokenizers.get(cache_key)
        if tok is None:
            loop = asyncio.get_running_loop()
            tok = await loop.run_in_executor(
                self._load_executor,
                functools.partial(EmbeddingTokenizer.load, cache_key[0],
                                  max_length=cache_key[1]))
            self._tokenizers[cache_key] = tok
        return tok

    # --------------------------------------------------------- repository / ops
    async def load(self, name: str, version: str | None = None) -> None:
        spec, v = self.resolve(name, version)
        await self._ensure(spec, v)

    async def unload(self, name: str) -> int:
        self.spec(name)
        entries = [e for k, e in self._loaded.items() if k[0] == name]
        for entry in entries:
            self._retire(entry)
        return len(entries)

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and the admin console."""
        models: dict[str, Any] = {}
        snapshot = self._snapshot
        for name, spec in (snapshot.models.items() if snapshot is not None else ()):
            errors = {k[1]: exc.detail for k, (_, exc) in self._failed.items() if k[0] == name}
            models[name] = {
                "active_version": spec.active_version,
                "hot": spec.hot,
                "max_batch_size": int(spec.max_batch_size or 0),
                "errors": errors,
                "loaded": {
                    k[1]: {"providers": list(e.loaded.providers),
                           "fell_back": list(e.loaded.fell_back),
                           "device_id": e.device, "io_binding": e.loaded.binding,
                           "warm_up_error": e.loaded.warm_up_error}
                    for k, e in self._loaded.items() if k[0] == name and e.loaded is not None
                },
            }
        # Another thread may be importing onnxruntime right now (partially initialised).
        providers = getattr(sys.modules.get("onnxruntime"), "get_available_providers", None)
        return {
            "ready": self.ready(),
            "models": models,
            "loaded_bytes": self.loaded_bytes(),
            "budget_bytes": self.budget_bytes,
            "devices": {str(d): {"loaded_bytes": self.loaded_bytes(d),
                                 "budget_bytes": self.device_budget_bytes}
                        for d in sorted({e.device for e in self._loaded.values()
                                         if e.device is not None})},
            "available_providers": list(providers()) if providers else None,
        }
