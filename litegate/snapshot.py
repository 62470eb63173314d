"""The immutable in-memory configuration the hot path reads.

Built from the database whenever ``config_state.version`` changes. Requests hold a
reference to the snapshot they started with, so a reload never disturbs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from limits import RateLimitItem, parse_many

from litegate.db.rows import Row, Rows, SQLAlchemyRows, parse_json, parse_time
from litegate.services.schema import (
    AdaptiveIn,
    check_adaptive,
    parse_period,
    usable_api_key_env,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

log = structlog.get_logger("litegate.snapshot")

EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    name: str
    kind: str
    base_url: str
    api_key: str | None
    timeout_s: float
    connect_timeout_s: float
    max_retries: int
    api_key_env: str | None = None
    """The variable ``api_key`` was read from (reported when it is unset)."""


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    upstream: UpstreamSpec
    model: str
    weight: int
    input_nano_per_token: int = 0
    """Price of one prompt token in nano-USD (``input_per_1m`` × 1000), so cost is exact
    integer arithmetic."""
    output_nano_per_token: int = 0


def nano_per_token(price_per_1m: float | None) -> int:
    """USD per 1M tokens as nano-USD per token (1e-9 USD resolution)."""
    return round((price_per_1m or 0.0) * 1000)


@dataclass(frozen=True, slots=True)
class AdaptiveSpec:
    """A route's adaptive A/B settings (``services.schema.AdaptiveIn``, validated)."""

    metric: str
    min_share: float
    cooldown_s: float
    min_samples: int


def build_adaptive(raw: Mapping[str, Any] | None, route: str, variants: int
                   ) -> AdaptiveSpec | None:
    """``variants``: how many of the route's variants have a weight > 0."""
    if not raw:
        return None
    try:
        a = msgspec.convert(raw, AdaptiveIn)
    except msgspec.ValidationError as exc:  # a row edited by hand: serve fixed weights
        log.warning("adaptive_ignored", route=route, error=str(exc))
        return None
    errors = check_adaptive(a, "adaptive", variants)  # the rules `config apply` enforces
    if errors:
        log.warning("adaptive_ignored", route=route, error="; ".join(errors))
        return None
    return AdaptiveSpec(metric=a.metric, min_share=a.min_share, cooldown_s=a.cooldown_s,
                        min_samples=a.min_samples)


@dataclass(frozen=True, slots=True)
class SemanticCacheSpec:
    """A route's semantic cache (``services.schema.SemanticCacheIn``, validated)."""

    embedding_model: str
    """A local model, or a route whose ``onnx`` variant serves one."""
    threshold: float
    max_entries: int
    ttl_s: float
    shared_across_keys: bool


def build_semantic_cache(raw: Mapping[str, Any] | None, route: str) -> SemanticCacheSpec | None:
    if not raw:
        return None
    from litegate.services.schema import SemanticCacheIn, check_semantic_cache

    try:
        sc = msgspec.convert(raw, SemanticCacheIn)
    except msgspec.ValidationError as exc:  # a row edited by hand: no semantic cache
        log.warning("semantic_cache_ignored", route=route, error=str(exc))
        return None
    errors = check_semantic_cache(sc, "semantic_cache")
    if errors:
        log.warning("semantic_cache_ignored", route=route, error="; ".join(errors))
        return None
    return SemanticCacheSpec(embedding_model=sc.embedding_model, threshold=sc.threshold,
                             max_entries=sc.max_entries, ttl_s=sc.ttl_s,
                             shared_across_keys=sc.shared_across_keys)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    variants: tuple[VariantSpec, ...]
    cumulative: tuple[int, ...]
    """Running sum of weights, for bisecting a point in ``[0, total_weight)``."""
    total_weight: int
    sticky: str
    """``key`` | ``header`` | ``none``."""
    sticky_header: bytes | None
    cache_ttl_s: float | None
    limits: tuple[RateLimitItem, ...]
    token_limits: tuple[RateLimitItem, ...]
    fallback: str | None
    shadow: VariantSpec | None = None
    adaptive: AdaptiveSpec | None = None
    """Set: the A/B shares adapt (``policies.bandit``); ``None``: the weights are fixed."""
    semantic_cache: SemanticCacheSpec | None = None
    """Set: chat requests may be answered by meaning (``policies.semantic_cache``)."""

    def sticky_value(self, key_id: int | None, header: bytes | None) -> bytes | None:
        """What keeps a client on one variant: its key, or the value of ``sticky_header``
        (which the caller looks up in its own protocol's headers), or nothing."""
        if self.sticky == "key":
            return str(key_id).encode() if key_id is not None else None
        return header if self.sticky == "header" else None


@dataclass(frozen=True, slots=True)
class Budget:
    """A key's spend budget: ``max_nano`` nano-USD per fixed window of ``period_s``."""

    max_nano: int
    period: str
    period_s: int
    alert_at: float | None
    """Fraction of the budget at which a warning is logged once per period."""


def build_budget(max_usd: float | None, period: str | None, alert_at: float | None) -> Budget | None:
    if max_usd is None:
        return None
    period = period or "30d"
    return Budget(max_nano=round(max_usd * 1e9), period=period,
                  period_s=parse_period(period), alert_at=alert_at)


def hash_key(secret: str) -> str:
    """What ``Snapshot.keys`` is indexed by (and ``api_keys.key_hash`` stores)."""
    # Keys are 256-bit random: a fast hash is safe and keeps auth O(1) per request.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeySpec:
    id: int
    name: str
    routes: frozenset[str] | None
    """Allowed routes; ``None`` means all."""
    is_admin: bool
    expires_at: float | None
    limits: tuple[RateLimitItem, ...] = ()
    token_limits: tuple[RateLimitItem, ...] = ()
    route_limits: Mapping[str, tuple[RateLimitItem, ...]] = field(default_factory=lambda: EMPTY)
    route_token_limits: Mapping[str, tuple[RateLimitItem, ...]] = field(
        default_factory=lambda: EMPTY
    )
    budget: Budget | None = None

    def allows(self, route: str) -> bool:
        return self.routes is None or route in self.routes


@dataclass(frozen=True, slots=True)
class ModelVersionSpec:
    version: str
    path: str
    sha256: str
    size_bytes: int
    signature: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    active_version: str | None
    versions: Mapping[str, ModelVersionSpec]
    max_batch_size: int
    max_queue_delay_ms: float
    hot: bool
    options: Mapping[str, Any]
    previous_version: str | None = None
    """The version ``rollback`` would return to (kept loaded for an instant rollback)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int = 0
    routes: Mapping[str, RouteSpec] = field(default_factory=lambda: EMPTY)
    keys: Mapping[str, KeySpec] = field(default_factory=lambda: EMPTY)
    """By SHA-256 of the secret."""
    models: Mapping[str, ModelSpec] = field(default_factory=lambda: EMPTY)
    built_at: float = field(default_factory=time.time)


def _rates(rates: list[str]) -> tuple[RateLimitItem, ...]:
    items: list[RateLimitItem] = []
    for rate in rates:
        items.extend(parse_many(rate))
    return tuple(items)


def build_upstream(u: Any) -> UpstreamSpec:
    return UpstreamSpec(
        name=u.name,
        kind=u.kind,
        base_url=u.base_url.rstrip("/"),
        # A row written before the rule (or by hand) cannot send litegate's own settings.
        api_key=(os.environ.get(u.api_key_env)
                 if u.api_key_env and usable_api_key_env(u.api_key_env) else None),
        timeout_s=u.timeout_s,
        connect_timeout_s=u.connect_timeout_s,
        max_retries=u.max_retries,
        api_key_env=u.api_key_env,
    )


def build_route(r: Any, quotas: list[Any], upstreams: Mapping[int, UpstreamSpec]) -> RouteSpec:
    variants = tuple(
        VariantSpec(
            name=v.name, upstream=upstreams[v.upstream_id], model=v.model, weight=v.weight,
            input_nano_per_token=nano_per_token(v.price_input_per_1m),
            output_nano_per_token=nano_per_token(v.price_output_per_1m),
        )
        for v in r.variants
    )
    cumulative, total = [], 0
    for v in variants:
        total += max(v.weight, 0)
        cumulative.append(total)
    sticky, header = r.sticky, None
    if sticky.startswith("header:"):
        sticky, header = "header", sticky[7:].lower().encode("latin-1")
    return RouteSpec(
        name=r.name,
        variants=variants,
        cumulative=tuple(cumulative),
        total_weight=total,
        sticky=sticky,
        sticky_header=header,
        cache_ttl_s=r.cache_ttl_s,
        limits=_rates([q.rate for q in quotas if q.kind == "requests"]),
        token_limits=_rates([q.rate for q in quotas if q.kind == "tokens"]),
        fallback=r.fallback,
        shadow=next((v for v in variants if v.name == r.shadow), None),
        adaptive=build_adaptive(r.adaptive, r.name,
                                sum(1 for v in variants if v.weight > 0)),
        semantic_cache=build_semantic_cache(r.semantic_cache, r.name),
    )


def build_model(m: Any) -> ModelSpec:
    return ModelSpec(
        name=m.name,
        active_version=m.active_version,
        versions=MappingProxyType(
            {
                v.version: ModelVersionSpec(
                    version=v.version,
                    path=v.path,
                    sha256=v.sha256,
                    size_bytes=v.size_bytes,
                    signature=MappingProxyType(dict(v.signature or {})),
                )
                for v in m.versions
            }
        ),
        max_batch_size=m.max_batch_size,
        max_queue_delay_ms=m.max_queue_delay_ms,
        hot=m.hot,
        options=MappingProxyType(dict(m.options or {})),
        previous_version=m.history[-1] if m.history else None,
    )


JSON_COLUMNS = {
    "routes": frozenset({"adaptive", "semantic_cache"}),
    "api_keys": frozenset({"routes"}),
    "models": frozenset({"history", "options"}),
    "model_versions": frozenset({"signature"}),
}
"""The JSON columns of the tables the snapshot reads (the SQL returns their text);
a unit test checks this against the ORM metadata, so a new JSON column cannot be missed."""
BOOL_COLUMNS = {"api_keys": frozenset({"is_admin"}), "models": frozenset({"hot"})}
"""SQLite returns 0/1."""
TIME_COLUMNS = frozenset({"created_at", "updated_at", "expires_at", "revoked_at", "last_used_at"})

_QUERIES = (
    ("config_state", "SELECT version FROM config_state WHERE id = 1"),
    ("upstreams", "SELECT * FROM upstreams"),
    ("quotas", "SELECT * FROM quotas"),
    ("routes", "SELECT * FROM routes"),
    ("route_variants", "SELECT * FROM route_variants ORDER BY route_id, position, id"),
    ("api_keys", "SELECT * FROM api_keys WHERE revoked_at IS NULL"),
    ("models", "SELECT * FROM models"),
    ("model_versions", "SELECT * FROM model_versions ORDER BY model_id, id"),
)
VERSION_QUERY = _QUERIES[0][1]


def _records(table: str, names: list[str], rows: list[Row]) -> list[Any]:
    """Rows as attribute records (``r.name``), JSON and times decoded."""
    json_cols, out = JSON_COLUMNS.get(table, frozenset()), []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        for name in json_cols.intersection(values):
            values[name] = parse_json(values[name])
        for name in BOOL_COLUMNS.get(table, frozenset()).intersection(values):
            values[name] = None if values[name] is None else bool(values[name])
        for name in TIME_COLUMNS.intersection(values):
            values[name] = parse_time(values[name])
        out.append(SimpleNamespace(**values))
    return out


def as_rows(source: Rows | AsyncSession | AsyncConnection) -> Rows:
    return source if hasattr(source, "fetch_many") else SQLAlchemyRows(source)  # type: ignore[return-value]


async def build_snapshot(source: Rows | AsyncSession | AsyncConnection) -> Snapshot:
    """Read every configuration table in one transaction (plain SQL, no ORM)."""
    results = await as_rows(source).fetch_many([q for _, q in _QUERIES])
    tables = {t: _records(t, names, rows) for (t, _), (names, rows) in zip(_QUERIES, results, strict=True)}
    version = int(tables["config_state"][0].version or 0) if tables["config_state"] else 0
    variants: dict[int, list[Any]] = {}
    for v in tables["route_variants"]:
        variants.setdefault(v.route_id, []).append(v)
    for r in tables["routes"]:
        r.variants = variants.get(r.id, [])
    versions: dict[int, list[Any]] = {}
    for mv in tables["model_versions"]:
        versions.setdefault(mv.model_id, []).append(mv)
    for m in tables["models"]:
        m.versions = versions.get(m.id, [])
    upstreams = {u.id: build_upstream(u) for u in tables["upstreams"]}
    quotas = tables["quotas"]
    route_rows = tables["routes"]
    route_names = {r.id: r.name for r in route_rows}
    routes: dict[str, RouteSpec] = {}
    for r in route_rows:
        rq = [q for q in quotas if q.route_id == r.id and q.key_id is None]
        routes[r.name] = build_route(r, rq, upstreams)
    keys: dict[str, KeySpec] = {}
    for k in tables["api_keys"]:
        kq = [q for q in quotas if q.key_id == k.id]
        per_route: dict[str, list[str]] = {}
        per_route_tokens: dict[str, list[str]] = {}
        for q in kq:
            if q.route_id is not None:
                target = per_route if q.kind == "requests" else per_route_tokens
                target.setdefault(route_names[q.route_id], []).append(q.rate)
        keys[k.key_hash] = KeySpec(
            id=k.id,
            name=k.name,
            routes=frozenset(k.routes) if k.routes else None,
            is_admin=k.is_admin,
            expires_at=k.expires_at.timestamp() if k.expires_at else None,
            limits=_rates([q.rate for q in kq if q.route_id is None and q.kind == "requests"]),
            token_limits=_rates([q.rate for q in kq if q.route_id is None and q.kind == "tokens"]),
            route_limits=MappingProxyType({n: _rates(v) for n, v in per_route.items()}),
            route_token_limits=MappingProxyType({n: _rates(v) for n, v in per_route_tokens.items()}),
            budget=build_budget(k.budget_usd, k.budget_period, k.budget_alert_at),
        )
    models = {m.name: build_model(m) for m in tables["models"]}
    return Snapshot(
        version=version,
        routes=MappingProxyType(routes),
        keys=MappingProxyType(keys),
        models=MappingProxyType(models),
    )


class SnapshotStore:
    """Holds the current snapshot and swaps it when the config version moves."""

    def __init__(self, rows: Rows, *, interval_s: float = 0.25) -> None:
        self._rows = rows
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Snapshot], Any]] = []
        self.current = Snapshot()
        self.db_ok = False

    def subscribe(self, listener: Callable[[Snapshot], Any]) -> None:
        self._listeners.append(listener)

    async def refresh(self) -> Snapshot:
        snap = await build_snapshot(self._rows)
        self._swap(snap)
        return snap

    def _swap(self, snap: Snapshot) -> None:
        old = self.current
        self.current = snap
        self.db_ok = True
        if old.version != snap.version:
            log.info("config_reloaded", version=snap.version, routes=len(snap.routes))
        for listener in self._listeners:
            try:
                listener(snap)
            except Exception:  # a broken listener must not stop reloads
                log.exception("snapshot_listener_failed")

    async def check(self) -> bool:
        """Rebuild if the stored version differs; True when a new snapshot was installed."""
        # The frequent check is one SELECT of one row; the rebuild only when it moved.
        [(_, rows)] = await self._rows.fetch_many([VERSION_QUERY])
        version = int(rows[0][0] or 0) if rows else 0
        if version == self.current.version and self.db_ok:
            return False
        snap = await build_snapshot(self._rows)
        self._swap(snap)
        return True

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="litegate-snapshot-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last good snapshot
                if self.db_ok:
                    log.warning("config_poll_failed", error=str(exc))
                self.db_ok = False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
