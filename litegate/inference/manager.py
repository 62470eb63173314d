"""The model manager: one per gateway process.

It owns the loaded sessions (an LRU under a memory budget), loads each model version
at most once at a time (single-flight), warms hot models in the background, routes
requests through each version's :class:`AdaptiveBatcher` and follows configuration
snapshots: new active versions take effect for new requests at once, while requests
already holding an old version finish on it.

The snapshot is duck-typed: ``snapshot.models[name]`` has ``name``,
``active_version``, ``versions[v]`` (``version``, ``path``, ``sha256``,
``signature``), ``max_batch_size``, ``max_queue_delay_ms``, ``hot`` and ``options``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from litegate.errors import BadRequest, NotFound, ServiceUnavailable
from litegate.inference.batcher import AdaptiveBatcher
from litegate.inference.memory import release_memory
from litegate.inference.metrics import ModelMetrics
from litegate.inference.signature import Signature, validate_inputs

log = structlog.get_logger("litegate.inference")

Key = tuple[str, str]
Loader = Callable[..., Any]


@dataclass(slots=True)
class _Entry:
    key: Key
    path: str
    sha256: str
    loaded: Any  # LoadedSession
    batcher: AdaptiveBatcher
    inflight: int = 0
    retired: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def idle(self) -> bool:
        return self.inflight == 0 and self.batcher.idle


@dataclass(frozen=True, slots=True)
class InferResult:
    model: str
    version: str
    outputs: dict[str, np.ndarray]


def _default_loader(path: Path, settings: Any, *, name: str, version: str,
                    options: Mapping[str, Any]) -> Any:
    from litegate.inference.session import load_session

    return load_session(path, settings, name=name, version=version, options=options)


class ModelManager:
    def __init__(self, settings: Any, metrics_registry: Any = None, *,
                 loader: Loader | None = None, workers: int | None = None) -> None:
        self.settings = settings
        self.metrics = ModelMetrics(metrics_registry)
        self._loader = loader or _default_loader
        self._snapshot: Any = None
        self._loaded: OrderedDict[Key, _Entry] = OrderedDict()
        self._loading: dict[Key, asyncio.Task[_Entry]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._tokenizers: dict[tuple[str, int], Any] = {}
        self._warmup: asyncio.Task[None] | None = None
        self._ready = False
        self.load_count = 0
        n = workers or int(getattr(settings, "extra", {}).get("inference_workers", 0) or 0)
        self._executor = ThreadPoolExecutor(max_workers=n or max(2, os.cpu_count() or 2),
                                            thread_name_prefix="litegate-onnx")
        self._load_executor = ThreadPoolExecutor(max_workers=2,
                                                 thread_name_prefix="litegate-onnx-load")

    # ----------------------------------------------------------------- lifecycle
    async def start(self, snapshot: Any) -> None:
        """Remember the snapshot and warm the hot models in the background (idempotent)."""
        if self._warmup is not None:
            self.on_snapshot(snapshot)
            return
        self._snapshot = snapshot
        self._warmup = asyncio.get_running_loop().create_task(
            self._warm_hot(snapshot), name="litegate-model-warmup")

    async def _warm_hot(self, snapshot: Any) -> None:
        hot = [s for s in snapshot.models.values() if getattr(s, "hot", False) and s.active_version]
        results = await asyncio.gather(
            *(self._ensure(s, s.active_version) for s in hot), return_exceptions=True)
        for spec, result in zip(hot, results):
            if isinstance(result, BaseException):
                log.error("onnx_hot_model_failed", model=spec.name, error=str(result))
        self._ready = True
        log.info("onnx_warmup_done", models=[s.name for s in hot])

    def ready(self) -> bool:
        """True once the start-up warm-up finished (or when there is nothing to warm)."""
        if self._warmup is None:
            snap = self._snapshot
            return snap is None or not any(getattr(m, "hot", False) for m in snap.models.values())
        return self._ready

    @property
    def current_snapshot(self) -> Any:
        return self._snapshot

    async def wait_ready(self) -> None:
        if self._warmup is not None:
            await asyncio.shield(self._warmup)

    def on_snapshot(self, snapshot: Any) -> None:
        """Config changed: new requests see it at once; in-flight ones finish on their version."""
        old, self._snapshot = self._snapshot, snapshot
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
            if vspec is None or str(vspec.path) != entry.path or vspec.sha256 != entry.sha256:
                self._retire(entry)
            elif key[1] not in (spec.active_version, getattr(spec, "previous_version", None)):
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
            if getattr(spec, "hot", False) or was_loaded:
                self._spawn(self._preload(spec, spec.active_version))
        if old is not None:
            log.info("onnx_snapshot_applied", models=len(snapshot.models))

    async def _preload(self, spec: Any, version: str) -> None:
        try:
            await self._ensure(spec, version)
        except Exception as exc:
            log.error("onnx_preload_failed", model=spec.name, version=version, error=str(exc))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop (called from sync code): load lazily instead
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in (self._warmup, *self._background, *self._loading.values()):
            if task is not None and not task.done():
                task.cancel()
        for entry in list(self._loaded.values()):
            self._loaded.pop(entry.key, None)
            await entry.batcher.close()
            self._set_loaded_metric(entry, False)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------------- lookup
    @property
    def snapshot(self) -> Any:
        if self._snapshot is None:
            raise NotFound("no models are configured")
        return self._snapshot

    def spec(self, name: str) -> Any:
        spec = self.snapshot.models.get(name)
        if spec is None:
            raise NotFound(f"model {name!r} not found")
        return spec

    def resolve(self, name: str, version: str | None = None) -> tuple[Any, str]:
        spec = self.spec(name)
        if version in (None, ""):
            if not spec.active_version:
                raise NotFound(f"model {name!r} has no active version")
            return spec, str(spec.active_version)
        if version not in spec.versions:
            raise NotFound(f"model {name!r} has no version {version!r}")
        return spec, str(version)

    def loaded(self, name: str, version: str) -> Any | None:
        """The LoadedSession for a version if it is loaded now (no loading)."""
        entry = self._loaded.get((name, version))
        return entry.loaded if entry is not None else None

    def is_loaded(self, name: str, version: str) -> bool:
        return (name, version) in self._loaded

    # ------------------------------------------------------------------- loading
    async def _ensure(self, spec: Any, version: str) -> _Entry:
        key = (spec.name, version)
        vspec = spec.versions[version]
        entry = self._loaded.get(key)
        if entry is not None and entry.path == str(vspec.path):
            self._loaded.move_to_end(key)
            return entry
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(spec, vspec))
            self._loading[key] = task
            task.add_done_callback(lambda t, k=key: self._loading.pop(k, None)
                                   if self._loading.get(k) is t else None)
        return await asyncio.shield(task)

    def _plan(self, spec: Any, vspec: Any) -> tuple[int, dict[str, Any]]:
        """How many batches may run at once, and the session options to load with.

        Batched models default to 2 concurrent runs: one computes while the next batch is
        merged and the previous one split. Unbatched ones get one run per executor
        thread. Intra-op threads stay at the setting (0 = ORT's default, all cores): a
        lone request then uses every core, which the concurrency-1 latency needs. Set
        ``instances`` / ``intra_op_threads`` per model to trade latency for throughput
        (bench/inference.py measures both layouts).
        """
        options = dict(getattr(spec, "options", None) or {})
        signature = Signature.from_dict(vspec.signature or {})
        batching = int(spec.max_batch_size or 1) > 1 and (
            signature.batchable or not signature.inputs)
        workers = self._executor._max_workers
        instances = int(options.get("instances") or (min(2, workers) if batching else workers))
        return instances, options

    def _load_sync(self, spec: Any, vspec: Any, options: dict[str, Any]) -> Any:
        from litegate.inference.session import warm_up

        self.load_count += 1
        loaded = self._loader(Path(vspec.path), self.settings, name=spec.name,
                              version=str(vspec.version), options=options)
        warm_up(loaded, runs=int(options.get("warmup_runs", 2)))
        return loaded

    async def _load(self, spec: Any, vspec: Any) -> _Entry:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        instances, options = self._plan(spec, vspec)
        loaded = await loop.run_in_executor(self._load_executor, self._load_sync, spec, vspec,
                                            options)
        key = (spec.name, str(vspec.version))
        batching = int(spec.max_batch_size or 1) > 1 and loaded.signature.batchable
        batcher = AdaptiveBatcher(
            loaded.run,
            executor=self._executor,
            max_batch_size=int(spec.max_batch_size or 1) if batching else 1,
            max_delay_s=float(spec.max_queue_delay_ms or 0) / 1000.0,
            max_queue=int(options.get("max_queue") or getattr(self.settings, "max_queue", 256)),
            concurrency=instances,
            observer=self.metrics.observer(*key),
            name=spec.name,
        )
        entry = _Entry(key, str(vspec.path), str(vspec.sha256), loaded, batcher)
        previous = self._loaded.pop(key, None)
        if previous is not None:
            self._retire(previous)
        self._loaded[key] = entry
        self._set_loaded_metric(entry, True)
        self.metrics.load_seconds.labels(*key).observe(time.perf_counter() - started)
        self._enforce_budget(keep=key)
        return entry

    # ------------------------------------------------------------ memory budget
    @property
    def budget_bytes(self) -> int:
        return int(getattr(self.settings, "model_memory_mb", 0) or 0) * 1024 * 1024

    def loaded_bytes(self) -> int:
        return sum(e.loaded.size_bytes for e in self._loaded.values())

    def _enforce_budget(self, keep: Key) -> None:
        budget = self.budget_bytes
        if budget <= 0:
            return
        for key in list(self._loaded):
            if self.loaded_bytes() <= budget:
                return
            entry = self._loaded[key]
            if key != keep and entry.idle:
                self.metrics.evictions.labels(*key).inc()
                log.info("onnx_model_evicted", model=key[0], version=key[1])
                self._retire(entry)
        if self.loaded_bytes() > budget:
            log.warning("onnx_memory_budget_exceeded", loaded_bytes=self.loaded_bytes(),
                        budget_bytes=budget)

    def _retire(self, entry: _Entry) -> None:
        """Stop routing to ``entry``; close it once its last request is done."""
        if self._loaded.get(entry.key) is entry:
            del self._loaded[entry.key]
        if entry.retired:
            return
        entry.retired = True
        self._set_loaded_metric(entry, False)
        if entry.idle:
            self._spawn(self._close(entry))

    async def _close(self, entry: _Entry) -> None:
        await entry.batcher.close()
        entry.loaded = None  # drop the session so its arena can be freed
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_executor, release_memory)

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
            entry = await self._ensure(spec, v)
            if entry.retired:  # evicted between its load and our wake-up: load again
                continue
            entry.inflight += 1  # same loop step as the check: eviction cannot race us now
            entry.last_used = time.monotonic()
            return entry
        raise ServiceUnavailable(
            f"model {name!r} was unloaded while loading (memory budget too small?); retry",
            headers={"Retry-After": "1"})

    def _release(self, entry: _Entry) -> None:
        entry.inflight -= 1
        if entry.retired and entry.idle:
            self._spawn(self._close(entry))

    async def infer(self, name: str, inputs: Mapping[str, np.ndarray], *,
                    version: str | None = None, outputs: list[str] | None = None
                    ) -> InferResult:
        """Validate against the signature, batch, run off the loop, return named outputs."""
        entry = await self._checkout(name, version)
        requests = self.metrics.requests.labels(*entry.key)
        requests.inc()
        try:
            loaded = entry.loaded
            signature: Signature = loaded.signature
            validate_inputs(signature, inputs)
            if outputs:
                unknown = [o for o in outputs if o not in signature.output_names]
                if unknown:
                    raise BadRequest(
                        f"unknown output {unknown[0]!r}; the model has "
                        f"{', '.join(signature.output_names)}")
            result = await entry.batcher.submit(inputs)
        except Exception as exc:
            self.metrics.failures.labels(*entry.key, str(getattr(exc, "status_code", 500))).inc()
            raise
        finally:
            self._release(entry)
        if outputs:
            result = {o: result[o] for o in outputs}
        return InferResult(entry.key[0], entry.key[1], result)

    async def embed(self, name: str, texts: list[str]) -> tuple[list[list[float]], int]:
        """``/v1/embeddings`` for an ``onnx`` upstream: (vectors, prompt_tokens)."""
        from litegate.inference.embeddings import mean_pool

        if not texts:
            raise BadRequest("input must not be empty")
        spec = self.spec(name)
        options = dict(getattr(spec, "options", None) or {})
        tokenizer = await self._tokenizer(name, options)
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(self._executor, tokenizer.encode, list(texts))
        _, version = self.resolve(name)
        signature = spec.versions[version].signature or {}
        wanted = {t["name"] for t in signature.get("inputs", ())} or set(encoded)
        inputs = {k: v for k, v in encoded.items() if k in wanted}
        result = await self.infer(name, inputs, version=version)
        output = str(options.get("embedding_output") or next(iter(result.outputs)))
        hidden = result.outputs[output]
        if hidden.ndim == 3:
            vectors = mean_pool(hidden, encoded["attention_mask"],
                                normalize=bool(options.get("normalize", True)))
        else:  # the model pools itself
            vectors = hidden.astype(np.float32)
        return vectors.tolist(), int(encoded["attention_mask"].sum())

    async def _tokenizer(self, name: str, options: Mapping[str, Any]) -> Any:
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
                lambda: EmbeddingTokenizer.load(cache_key[0], max_length=cache_key[1]))
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
            models[name] = {
                "active_version": spec.active_version,
                "hot": bool(getattr(spec, "hot", False)),
                "loaded": {
                    k[1]: {"providers": list(e.loaded.providers),
                           "fell_back": list(e.loaded.fell_back)}
                    for k, e in self._loaded.items() if k[0] == name and e.loaded is not None
                },
            }
        ort = sys.modules.get("onnxruntime")
        return {
            "ready": self._ready,
            "models": models,
            "loaded_bytes": self.loaded_bytes(),
            "budget_bytes": self.budget_bytes,
            "available_providers": list(ort.get_available_providers()) if ort else None,
        }
