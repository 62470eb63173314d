"""The gateway core shared by every shape (standalone, Litestar plug-in, ASGI/WSGI
middleware): configuration snapshot, limiter, cache, metrics, upstream client and,
lazily, the ONNX model manager."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.db.rows import Rows, SQLAlchemyRows, SQLiteRows, database_errors, sqlite_path
from litegate.errors import NotFound
from litegate.faults import explain_db_error
from litegate.middleware import (
    ABRoutingMiddleware,
    AuthMiddleware,
    CacheMiddleware,
    ObserveMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
    RouteResolutionMiddleware,
    SemanticCacheMiddleware,
)
from litegate.policies.bandit import Bandit, PendingFeedback
from litegate.policies.caching import RedisResponseCache, ResponseCache
from litegate.policies.limiting import Limiter, storage_uri
from litegate.policies.metrics import Metrics
from litegate.policies.runtime_metrics import register_runtime
from litegate.policies.semantic_cache import MemoryVectorStore, RedisVectorStore, SemanticCache
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.policies.tracing import Tracing, start_tracing
from litegate.settings import Settings
from litegate.snapshot import Snapshot, SnapshotStore
from litegate.upstreams.client import UpstreamClient

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from litegate.grpc_api.server import GrpcServer
    from litegate.inference.manager import ModelManager

log = structlog.get_logger("litegate.gateway")


class Gateway:
    def __init__(self, settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> None:
        self.settings = settings or Settings.load()
        s = self.settings
        self._engine = engine
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        path = sqlite_path(s.db_url) if engine is None else None
        # The embedded SQLite default is read with the stdlib: serving never loads
        # SQLAlchemy until the admin console (or another write) asks for the engine.
        self.rows: Rows = (SQLiteRows(path, timeout_s=s.db_timeout_s) if path
                           else SQLAlchemyRows(self.engine))
        self.snapshots = SnapshotStore(self.rows, interval_s=s.reload_interval_s)
        self.metrics = Metrics(per_key=s.metrics_per_key, max_keys=s.metrics_max_keys)
        self.stats = Stats()
        self.bandit = Bandit(metrics=self.metrics, stats=self.stats)
        """A/B shares: fixed weights, or adaptive ones learnt in this process."""
        self.pending_feedback = PendingFeedback(max_entries=s.feedback_max_requests,
                                                ttl_s=s.feedback_ttl_s)
        self.limiter = Limiter(
            storage=storage_uri(s.redis), strategy=s.limit_strategy, fail_open=s.limit_fail_open
        )
        self.spend = Spend(self.limiter.storage, fail_open=s.limit_fail_open,
                           scripts=self.limiter.scripts)
        """Usage, cost and budgets per key, in the limiter's storage (shared with Redis)."""
        self.cache: ResponseCache | RedisResponseCache
        if s.cache_backend == "redis" or (s.cache_backend == "auto" and s.redis):
            if not s.redis:
                raise ValueError("cache_backend=redis needs LITEGATE_REDIS / --redis")
            self.cache = RedisResponseCache(s.redis, max_bytes=s.cache_max_bytes)
        elif s.cache_backend in ("memory", "auto"):
            self.cache = ResponseCache(max_entries=s.cache_max_entries, max_bytes=s.cache_max_bytes)
        else:
            raise ValueError(f"unknown cache_backend {s.cache_backend!r}; use memory, redis or auto")
        self.semantic_cache = SemanticCache(
            embed=self._embed_text, metrics=self.metrics, max_entry_bytes=s.cache_max_bytes // 8,
            store=(RedisVectorStore(s.redis) if isinstance(self.cache, RedisResponseCache)
                   and s.redis else MemoryVectorStore(max_bytes=s.cache_max_bytes,
                                                      metrics=self.metrics)))
        """Routes with ``semantic_cache``: answers by meaning, in the exact cache's backend."""
        self.http = UpstreamClient(
            metrics=self.metrics,
            breaker_failures=s.breaker_failures,
            breaker_reset_s=s.breaker_reset_s,
            max_body_bytes=s.max_upstream_body_bytes,
        )
        self.tracing: Tracing | None = start_tracing(s.tracing)
        """OpenTelemetry tracer, None when ``settings.tracing`` is off (nothing imported)."""
        self._models: ModelManager | None = None
        self.grpc: GrpcServer | None = None
        """The gRPC Open Inference Protocol server while started (``grpc_port`` set)."""
        self._key_use: dict[int, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self.redis_ok: bool | None = None
        """Last Redis ping (None without Redis); checked at start and every few seconds."""
        self.missing_api_key_env: dict[str, str] = {}
        """Upstream name -> its unset ``api_key_env`` variable (requests go without a key)."""
        register_runtime(self.metrics.registry, redis_up=lambda: self.redis_ok,
                         queues=lambda: self._models.queue_states() if self._models else ())
        self.snapshots.subscribe(self._on_snapshot)

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (admin console, services), created on first use."""
        if self._engine is None:
            from litegate.db.engine import make_engine

            s = self.settings
            self._engine = make_engine(s.db_url, timeout_s=s.db_timeout_s)
        return self._engine

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            from litegate.db.engine import make_sessionmaker

            self._sessionmaker = make_sessionmaker(self.engine)
        return self._sessionmaker

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await self._open_database()
            await self.http.start()
            self._tasks.append(asyncio.create_task(self._flush_key_use_loop()))
            if self.snapshots.current.models:
                await self.models.start(self.snapshots.current)
            if self.settings.redis:
                await self._check_redis(at_start=True)
                self._tasks.append(asyncio.create_task(self._watch_redis()))
            if self.settings.grpc_port:
                await self._start_grpc()
            self._started = True
            log.info("gateway_started", config_version=self.snapshots.current.version)

    async def _start_grpc(self) -> None:
        """The gRPC inference service on its own port, in this event loop."""
        try:
            from litegate.grpc_api.server import GrpcServer
            from litegate.grpc_api.service import InferenceService
        except ImportError as exc:
            from litegate.faults import OperationalFault

            raise OperationalFault(f"--grpc-port needs grpcio and tritonclient[grpc] ({exc}): "
                                   "pip install 'litegate[grpc]'") from exc
        s = self.settings
        service = InferenceService(
            snapshots=self.snapshots, limiter=self.limiter, spend=self.spend, metrics=self.metrics,
            stats=self.stats, models=lambda: self.models, client=self.http,
            on_key_use=self.note_key_use, max_response_bytes=s.max_infer_response_bytes,
            access_log=s.access_log, bandit=self.bandit,
            pending=self.pending_feedback)
        server = GrpcServer(service, host=s.host, port=s.grpc_port,
                            max_receive_bytes=s.max_infer_body_bytes,
                            max_send_bytes=s.max_infer_response_bytes, reuse_port=s.workers > 1)
        await server.start()
        self.grpc = server

    async def _open_database(self) -> None:
        """First start in a new directory: migrate the embedded SQLite default in place.
        Any other database must already be at head (``litegate db upgrade``, once per
        deployment). Unreachable, locked or unmigrated: a one-line OperationalFault."""
        from litegate.db import migrate

        url = self.settings.db_url
        try:
            if url.startswith("sqlite"):
                # At head (every restart): one stdlib read, no thread; else Alembic, off the loop.
                if not migrate.sqlite_is_current(url):
                    await asyncio.to_thread(migrate.upgrade, url)
            else:
                await migrate.check_schema(self.engine, url)
            await self.snapshots.start()
        except database_errors() as exc:
            fault = explain_db_error(exc, url, timeout_s=self.settings.db_timeout_s)
            if fault is None:
                raise
            raise fault from exc

    async def _check_redis(self, *, at_start: bool = False) -> None:
        try:
            check = self.limiter.storage.check()  # a coroutine: the storage is async+redis
            ok = bool(await asyncio.wait_for(check, 1.0) if inspect.isawaitable(check) else check)
        except Exception:  # whatever the client raises, Redis is not usable now
            ok = False
        if not ok and (at_start or self.redis_ok):
            log.warning("redis_unreachable", fail_open=self.settings.limit_fail_open,
                        fix="start Redis or correct --redis / LITEGATE_REDIS")
        elif ok and self.redis_ok is False:
            log.info("redis_reachable")
        self.redis_ok = ok

    async def _watch_redis(self) -> None:
        while True:
            await asyncio.sleep(5)
            await self._check_redis()

    async def ensure_started(self) -> None:
        if not self._started:
            await self.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.grpc is not None:
            await self.grpc.stop()
            self.grpc = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self._flush_key_use()
        await self.snapshots.stop()
        if self._models is not None:
            await self._models.stop()
        await self.http.close()
        await self.spend.drain()  # the last requests' usage, before its connection closes
        self.limiter.close()
        if isinstance(self.cache, RedisResponseCache):
            await self.cache.close()
        if isinstance(self.semantic_cache.store, RedisVectorStore):
            await self.semantic_cache.store.close()
        await self.rows.close()
        if self._engine is not None:
            await self._engine.dispose()

    @property
    def started(self) -> bool:
        return self._started

    # -- models (ONNX), imported only when needed ----------------------------

    @property
    def models(self) -> ModelManager:
        if self._models is None:
            from litegate.inference.manager import ModelManager

            self._models = ModelManager(self.settings, self.metrics.registry)
        return self._models

    async def _embed_text(self, model: str, text: str) -> Any:
        """The semantic cache's embedding: the text's unit vector from a local model (off
        the event loop, batched with other requests), or None when the model would
        truncate it."""
        import numpy as np

        from litegate.inference.embeddings import DEFAULT_MAX_LENGTH

        options = self.models.spec(model).options or {}
        max_length = int(options.get("max_length", DEFAULT_MAX_LENGTH))
        if len(text) > 100 * max_length:  # a WordPiece token covers at most 100 characters
            return None
        [vector], tokens = await self.models.embed(model, [text])
        if tokens >= max_length:
            return None
        v = np.asarray(vector, dtype=np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    @property
    def models_loaded(self) -> bool:
        return self._models is not None

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        self.metrics.config_version.set(snapshot.version)
        self.metrics.keep_keys(snapshot.keys.values())
        self.semantic_cache.store.keep_routes(
            {r.name for r in snapshot.routes.values() if r.semantic_cache is not None})
        self.bandit.update_routes(snapshot.routes)
        self._note_missing_api_keys(snapshot)
        if self._models is not None:
            self._models.on_snapshot(snapshot)
        elif self._started and snapshot.models:
            self._tasks.append(asyncio.ensure_future(self.models.start(snapshot)))

    def _note_missing_api_keys(self, snapshot: Snapshot) -> None:
        missing = {
            v.upstream.name: v.upstream.api_key_env
            for route in snapshot.routes.values() for v in route.variants
            if v.upstream.api_key_env and v.upstream.api_key is None
        }
        for name, env in missing.items():
            if self.missing_api_key_env.get(name) != env:
                log.warning("upstream_api_key_unset", upstream=name, env=env,
                            fix=f"export {env}=... before starting; requests go without a key")
        self.missing_api_key_env = missing

    def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {
            "database": self.snapshots.db_ok,
            "config_version": self.snapshots.current.version,
        }
        ok = self._started and self.snapshots.db_ok
        if self.missing_api_key_env:
            detail["missing_api_key_env"] = self.missing_api_key_env
        if self.redis_ok is not None:
            # Fail-open keeps serving without shared limits (ready, degraded); fail-closed
            # refuses requests, so this replica should leave the load balancer.
            detail["redis"] = self.redis_ok
            if not self.redis_ok:
                detail["degraded"] = "redis unreachable: " + (
                    "limits are not enforced" if self.settings.limit_fail_open
                    else "requests are refused (fail-closed)")
                ok = ok and self.settings.limit_fail_open
        if self._models is not None:
            detail["models"] = self._models.status()
            ok = ok and self._models.ready()
        return ok, detail

    # -- key last-use bookkeeping (memory, flushed every few seconds) -------

    def note_key_use(self, key_id: int, at: float) -> None:
        self._key_use[key_id] = at

    async def _flush_key_use(self) -> None:
        if not self._key_use:
            return
        used, self._key_use = self._key_use, {}
        try:
            await self.rows.touch_last_used(
                {k: datetime.fromtimestamp(t, timezone.utc) for k, t in used.items()})
        except Exception as exc:
            log.warning("key_last_used_not_saved", error=str(exc))

    async def _flush_key_use_loop(self) -> None:
        while True:
            await asyncio.sleep(5)
            await self._flush_key_use()

    # -- ASGI ----------------------------------------------------------------

    def build_stack(
        self, app: ASGIApp, *, public_prefixes: tuple[str, ...] = (), branch: bool = False
    ) -> ASGIApp:
        """The policy stack around ``app``, outermost first (docs/architecture.md); every
        mount mode uses it. ``branch=True`` is an aggregate branch: the parent request
        already has its context (error boundary) and its authenticated key."""
        s = self.settings
        # Tracing off: no tracing layer at all (and no opentelemetry import), so `span` and
        # `end` return what they are given. On: a server span outermost, a span per policy
        # (opened around it, ended by its next app) and one around the handler.
        layers = None
        if self.tracing is not None:
            from litegate.middleware.tracing import TraceLayers

            layers = TraceLayers(self.tracing)

        def span(name: str, policy: ASGIApp) -> ASGIApp:
            return policy if layers is None else layers.policy(name, policy)

        def end(next_app: ASGIApp) -> ASGIApp:
            return next_app if layers is None else layers.end(next_app)

        inner: ASGIApp = ABRoutingMiddleware(app if layers is None else layers.handler(app),
                                             bandit=self.bandit, pending=self.pending_feedback)
        inner = SemanticCacheMiddleware(end(inner), cache=self.semantic_cache)
        inner = span("cache", CacheMiddleware(inner, cache=self.cache,
                                              cache_streams=s.cache_streams))
        inner = span("limits", RateLimitMiddleware(end(inner), limiter=self.limiter,
                                                                spend=self.spend))
        inner = RouteResolutionMiddleware(inner, max_body_bytes=s.max_body_bytes,
                                          limiter=self.limiter)
        if not branch:
            inner = span("auth", AuthMiddleware(
                end(inner), on_key_use=self.note_key_use, exclude_prefixes=public_prefixes
            ))
        inner = ObserveMiddleware(inner, metrics=self.metrics, stats=self.stats,
                                  spend=self.spend)
        if branch:
            return inner
        inner = RequestContextMiddleware(inner, snapshots=self.snapshots, access_log=s.access_log)
        return inner if layers is None else layers.server(inner)

    def inference_app(self) -> ASGIApp:
        """``/v1`` and ``/v2`` behind the full policy stack."""
        from litegate.aggregate import AggregateHandler
        from litegate.feedback import FEEDBACK_PATH, FeedbackHandler
        from litegate.proxy import OpenAIProxy

        s = self.settings
        v1 = OpenAIProxy(client=self.http, metrics=self.metrics, models=lambda: self.models,
                         bandit=self.bandit)
        aggregate = AggregateHandler(
            branch_app=self.build_stack(v1, branch=True), max_body_bytes=s.max_body_bytes,
            limiter=self.limiter,
        )
        feedback = FeedbackHandler(bandit=self.bandit, pending=self.pending_feedback,
                                   metrics=self.metrics)
        v2: ASGIApp | None = None

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal v2
            if scope["path"].startswith("/v2"):
                if v2 is None:  # onnxruntime and the v2 codec load with the first v2 call
                    from litegate.inference.v2_server import V2App
                    from litegate.upstreams.v2_forward import V2Router

                    v2 = V2Router(V2App(lambda: self.models, max_body_bytes=s.max_infer_body_bytes,
                                        max_response_bytes=s.max_infer_response_bytes),
                                  client=self.http, max_body_bytes=s.max_infer_body_bytes)
                await v2(scope, receive, send)
            elif scope["path"] == "/v1/aggregate":
                await aggregate(scope, receive, send)
            elif scope["path"] == FEEDBACK_PATH:
                await feedback(scope, receive, send)
            elif scope["path"].startswith("/v1/"):
                await v1(scope, receive, send)
            else:
                raise NotFound(f"Unknown endpoint {scope['method']} {scope['path']}")

        return self.build_stack(dispatch)
