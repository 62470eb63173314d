"""SQLAlchemy 2 typed models: the source of truth for configuration.

The hot path never reads these directly; :mod:`litegate.snapshot` turns them
into an immutable in-memory snapshot whenever ``config_state.version`` moves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MAX_ROW_ID = 2**31 - 1
"""Ids are ``Integer`` columns (32-bit on PostgreSQL): larger values cannot exist."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, list[Any]: JSON}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Upstream(TimestampMixin, Base):
    """A provider the gateway forwards to (``openai``, ``v2``) or a local model host (``onnx``)."""

    __tablename__ = "upstreams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="openai")
    base_url: Mapped[str] = mapped_column(String(500), default="")
    api_key_env: Mapped[str | None] = mapped_column(String(200), default=None)
    timeout_s: Mapped[float] = mapped_column(Float, default=30.0)
    connect_timeout_s: Mapped[float] = mapped_column(Float, default=5.0)
    max_retries: Mapped[int] = mapped_column(Integer, default=1)
    row_version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": row_version}


class Route(TimestampMixin, Base):
    """What a client names in ``model``: weighted variants plus cache/limit policy."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # "key" | "header:<Header-Name>" | "none"
    sticky: Mapped[str] = mapped_column(String(200), default="key")
    cache_ttl_s: Mapped[float | None] = mapped_column(Float, default=None)
    fallback: Mapped[str | None] = mapped_column(String(200), default=None)
    # Variant that receives a mirrored copy of each request; its answer is ignored.
    shadow: Mapped[str | None] = mapped_column(String(200), default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    # Adaptive A/B (bandit) settings; NULL: the configured weights stay fixed.
    adaptive: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Semantic cache settings (embedding model, threshold, bounds); NULL: off.
    semantic_cache: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    row_version: Mapped[int] = mapped_column(Integer, default=1)

    variants: Mapped[list[RouteVariant]] = relationship(
        back_populates="route",
        cascade="all, delete-orphan",
        order_by="RouteVariant.position",
        lazy="selectin",
    )

    __mapper_args__ = {"version_id_col": row_version}


class RouteVariant(Base):
    __tablename__ = "route_variants"
    __table_args__ = (UniqueConstraint("route_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("routes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id", ondelete="RESTRICT"))
    model: Mapped[str] = mapped_column(String(200))
    weight: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # USD per 1M tokens; NULL: no price (usage is counted, cost is 0).
    price_input_per_1m: Mapped[float | None] = mapped_column(Float, default=None)
    price_output_per_1m: Mapped[float | None] = mapped_column(Float, default=None)

    route: Mapped[Route] = relationship(back_populates="variants")
    upstream: Mapped[Upstream] = relationship(lazy="joined")


class ApiKey(Base):
    """An API key. Only the SHA-256 of the secret is stored; ``prefix`` is for display."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Route names the key may use; empty list means every route.
    routes: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Spend budget: USD per period (``30d``, ``12h``); NULL: no budget.
    budget_usd: Mapped[float | None] = mapped_column(Float, default=None)
    budget_period: Mapped[str | None] = mapped_column(String(20), default=None)
    budget_alert_at: Mapped[float | None] = mapped_column(Float, default=None)


class Quota(Base):
    """One limit: ``rate`` in limits' syntax, counted per API key.

    * ``route_id`` NULL and ``key_id`` set: the key's limit across all routes.
    * ``route_id`` set and ``key_id`` NULL: every key's limit on that route.
    * both set: that key's limit on that route (overrides nothing; all apply).

    ``kind`` is ``requests`` or ``tokens`` (LLM usage reported by the upstream).
    """

    __tablename__ = "quotas"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), default=None
    )
    route_id: Mapped[int | None] = mapped_column(
        ForeignKey("routes.id", ondelete="CASCADE"), default=None
    )
    kind: Mapped[str] = mapped_column(String(20), default="requests")
    rate: Mapped[str] = mapped_column(String(200))

    key: Mapped[ApiKey | None] = relationship(lazy="joined")
    route: Mapped[Route | None] = relationship(lazy="joined")


class Model(TimestampMixin, Base):
    """A local ONNX model; ``active_version`` names the serving :class:`ModelVersion`."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    active_version: Mapped[str | None] = mapped_column(String(100), default=None)
    # Previously active versions, most recent last: ``rollback`` pops from here.
    history: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Triton semantics: 0 (or 1) = no batching; > 1 only when the operator says so.
    max_batch_size: Mapped[int] = mapped_column(Integer, default=0)
    max_queue_delay_ms: Mapped[float] = mapped_column(Float, default=2.0)
    hot: Mapped[bool] = mapped_column(Boolean, default=False)
    # Free-form serving options (tokenizer path for embedding models, pooling...).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    row_version: Mapped[int] = mapped_column(Integer, default=1)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        order_by="ModelVersion.id",
        lazy="selectin",
    )

    __mapper_args__ = {"version_id_col": row_version}


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]} (v2 datatypes, -1 = dynamic)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AdminSession(Base):
    """A signed-in console session; deleting the row ends it on every replica at once."""

    __tablename__ = "admin_sessions"

    # SHA-256 of the session id in the cookie: a database dump does not yield live cookies.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # One-time payload for the next page (a new API key's secret), cleared when shown.
    flash: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class AuditEntry(Base):
    """Every configuration change: who, when, what, before and after."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_name: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class ConfigState(Base):
    """Single row whose ``version`` is bumped by every configuration change."""

    __tablename__ = "config_state"

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdminToken(Base):
    """A token for the admin HTTP API. Only the SHA-256 of the secret is stored; the row
    is read on every API request, so a revocation holds at once on every replica."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(10))  # "read" (GET only) | "write"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
