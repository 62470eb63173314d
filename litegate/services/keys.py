"""API keys: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import ApiKey, Quota, Route, as_utc, utcnow
from litegate.errors import BadRequest, Conflict, NotFound
from litegate.services.audit import record_audit
from litegate.services.schema import (
    BudgetIn,
    ValidationFailed,
    check_budget,
    check_rates,
    printable,
)
from litegate.snapshot import hash_key

KEY_PREFIX = "lg-"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_dict(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "routes": list(k.routes or []),
        "is_admin": k.is_admin,
        "created_at": k.created_at.isoformat() if k.created_at else None,
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
        "budget": budget_dict(k),
    }


def budget_dict(k: ApiKey) -> dict[str, Any] | None:
    if k.budget_usd is None:
        return None
    return {"max_usd": k.budget_usd, "period": k.budget_period or "30d",
            "alert_at": k.budget_alert_at}


def _set_budget(k: ApiKey, budget: BudgetIn | None) -> None:
    k.budget_usd = budget.max_usd if budget else None
    k.budget_period = budget.period if budget else None
    k.budget_alert_at = budget.alert_at if budget else None


async def _check(
    session: AsyncSession,
    *,
    routes: list[str] | None,
    limits: list[str] | None,
    token_limits: list[str] | None,
    expires_at: datetime | None,
) -> list[str]:
    """The rules shared by create and update (CLI and console alike)."""
    errors = check_rates(limits or [], "limit") + check_rates(token_limits or [], "token_limit")
    if expires_at is not None and expires_at <= utcnow():
        errors.append("expires_at: must be in the future")
    if routes:
        known = set(await session.scalars(select(Route.name)))
        missing = [r for r in routes if r not in known]
        if missing:
            errors.append(f"routes: unknown route(s) {missing}")
    return errors


async def own_limits(session: AsyncSession, key_id: int) -> dict[str, list[str]]:
    """The key's own limits (all routes); per-route quotas live on the quotas page."""
    rows = await session.scalars(
        select(Quota).where(Quota.key_id == key_id, Quota.route_id.is_(None)).order_by(Quota.id)
    )
    out: dict[str, list[str]] = {"requests": [], "tokens": []}
    for q in rows:
        out.setdefault(q.kind, []).append(q.rate)
    return out


def _state(k: ApiKey, limits: dict[str, list[str]]) -> dict[str, Any]:
    return key_dict(k) | {"limits": limits["requests"], "token_limits": limits["tokens"]}


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    actor: str,
    routes: list[str] | None = None,
    limits: list[str] | None = None,
    token_limits: list[str] | None = None,
    expires_at: datetime | None = None,
    is_admin: bool = False,
    budget: BudgetIn | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret — the only time the secret exists."""
    errors = []
    if not name or len(name) > 200:
        errors.append("name: must be 1-200 characters")
    elif not printable(name):
        errors.append("name: must not contain control characters")
    expires_at = as_utc(expires_at)
    errors += await _check(
        session, routes=routes, limits=limits, token_limits=token_limits, expires_at=expires_at
    )
    if budget is not None:
        errors += check_budget(budget)
    if errors:
        raise ValidationFailed(errors)
    secret = new_secret()
    key = ApiKey(
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(secret),
        routes=list(routes or []),
        expires_at=expires_at,
        is_admin=is_admin,
    )
    _set_budget(key, budget)
    session.add(key)
    await session.flush()
    for rate in limits or []:
        session.add(Quota(key_id=key.id, kind="requests", rate=rate))
    for rate in token_limits or []:
        session.add(Quota(key_id=key.id, kind="tokens", rate=rate))
    await session.flush()
    after = key_dict(key) | {"limits": list(limits or []), "token_limits": list(token_limits or [])}
    await record_audit(
        session, actor=actor, action="create", entity_type="api_key",
        entity_name=name, after=after, bump=True,
    )
    return key, secret


class Keep(enum.Enum):
    """``update_key`` default: leave this field as it is."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


async def update_key(
    session: AsyncSession,
    key_id: int,
    *,
    actor: str,
    routes: list[str] | Keep = KEEP,
    limits: list[str] | Keep = KEEP,
    token_limits: list[str] | Keep = KEEP,
    expires_at: datetime | None | Keep = KEEP,
    budget: BudgetIn | None | Keep = KEEP,
) -> ApiKey:
    """Change a key's scopes, own limits or expiry (``KEEP`` leaves a field alone; an
    empty ``routes`` list means every route, ``expires_at=None`` never expires)."""
    key = await get_key(session, key_id)
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id} is revoked; create a new key instead")
    current = await own_limits(session, key.id)
    before = _state(key, current)
    new_expiry = key.expires_at if expires_at is KEEP else as_utc(expires_at)
    errors = await _check(
        session,
        routes=None if routes is KEEP else routes,
        limits=None if limits is KEEP else limits,
        token_limits=None if token_limits is KEEP else token_limits,
        expires_at=None if expires_at is KEEP else new_expiry,
    )
    if isinstance(budget, BudgetIn):
        errors += check_budget(budget)
    if errors:
        raise ValidationFailed(errors)
    if routes is not KEEP:
        key.routes = list(routes)
    key.expires_at = new_expiry
    if budget is not KEEP:
        _set_budget(key, budget)
    for kind, rates in (("requests", limits), ("tokens", token_limits)):
        if rates is KEEP:
            continue
        await session.execute(
            delete(Quota).where(
                Quota.key_id == key.id, Quota.route_id.is_(None), Quota.kind == kind
            )
        )
        for rate in rates:
            session.add(Quota(key_id=key.id, kind=kind, rate=rate))
    await session.flush()
    after = _state(key, await own_limits(session, key.id))
    if after != before:
        await record_audit(
            session, actor=actor, action="update", entity_type="api_key",
            entity_name=key.name, before=before, after=after,
            bump=True,
        )
    return key


async def list_keys(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(await session.scalars(stmt))


STATUSES = ("all", "active", "revoked", "expired")


async def search_keys(
    session: AsyncSession, *, query: str = "", status: str = "all", offset: int = 0, limit: int = 50
) -> tuple[list[ApiKey], int]:
    """One page of keys whose name or prefix contains ``query``, newest first, and
    how many match in all. ``status`` is one of :data:`STATUSES`."""
    if status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    stmt = select(ApiKey)
    if query:
        stmt = stmt.where(or_(
            ApiKey.name.contains(query, autoescape=True),
            ApiKey.prefix.contains(query, autoescape=True),
        ))
    now = utcnow()
    if status == "revoked":
        stmt = stmt.where(ApiKey.revoked_at.is_not(None))
    elif status == "active":
        stmt = stmt.where(
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
    elif status == "expired":
        stmt = stmt.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    total = int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = await session.scalars(stmt.order_by(ApiKey.id.desc()).offset(offset).limit(limit))
    return list(rows), total


async def get_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    return key


async def revoke_key(session: AsyncSession, key_id: int, *, actor: str) -> ApiKey:
    key = await get_key(session, key_id)
    before = key_dict(key)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        await record_audit(
            session,
            actor=actor,
            action="revoke",
            entity_type="api_key",
            entity_name=key.name,
            before=before,
            after=key_dict(key),
            bump=True,
        )
    return key
