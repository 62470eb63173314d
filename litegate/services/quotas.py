"""Quotas (limits) attached to keys, routes, or a key on a route."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import MAX_ROW_ID, ApiKey, Quota, Route
from litegate.errors import NotFound
from litegate.services.audit import record_audit
from litegate.services.schema import QUOTA_KINDS, ValidationFailed, check_quota

KINDS = QUOTA_KINDS


def quota_dict(q: Quota) -> dict[str, Any]:
    return {
        "id": q.id,
        "key": q.key.name if q.key else None,
        "key_id": q.key_id,
        "route": q.route.name if q.route else None,
        "kind": q.kind,
        "rate": q.rate,
    }


def quota_label(q: Quota) -> str:
    parts = []
    if q.key_id is not None:
        parts.append(f"key {q.key_id}")
    if q.route is not None:
        parts.append(f"route {q.route.name}")
    return f"{' on '.join(parts) or 'global'}: {q.rate} {q.kind}"


async def list_quotas(session: AsyncSession) -> list[Quota]:
    return list(await session.scalars(select(Quota).order_by(Quota.id)))


async def route_level(session: AsyncSession) -> dict[int, list[Quota]]:
    """Every route's own quotas (no key), by route id."""
    rows = await session.scalars(
        select(Quota).where(Quota.route_id.is_not(None), Quota.key_id.is_(None)).order_by(Quota.id)
    )
    return _group(rows, lambda q: q.route_id)


async def of_keys(session: AsyncSession, key_ids: Iterable[int]) -> dict[int, list[Quota]]:
    """The quotas of these keys (own and per route), by key id."""
    rows = await session.scalars(
        select(Quota).where(Quota.key_id.in_(list(key_ids))).order_by(Quota.id)
    )
    return _group(rows, lambda q: q.key_id)


async def key_on_routes(session: AsyncSession, key_id: int) -> list[Quota]:
    """A key's quotas on single routes (its own limits are ``keys.own_limits``)."""
    rows = await session.scalars(
        select(Quota).where(Quota.key_id == key_id, Quota.route_id.is_not(None)).order_by(Quota.id)
    )
    return list(rows)


def _group(rows: Iterable[Quota], by: Callable[[Quota], int | None]) -> dict[int, list[Quota]]:
    out: dict[int, list[Quota]] = {}
    for q in rows:
        owner = by(q)
        if owner is not None:
            out.setdefault(owner, []).append(q)
    return out


async def add_quota(
    session: AsyncSession,
    *,
    actor: str,
    rate: str,
    kind: str = "requests",
    key_id: int | None = None,
    route: str | None = None,
) -> Quota:
    errors = check_quota(rate=rate, kind=kind, key_id=key_id, route=route)
    route_row = None
    if route is not None:
        route_row = await session.scalar(select(Route).where(Route.name == route))
        if route_row is None:
            errors.append(f"route: unknown route {route!r}")
    if key_id is not None and (
        not 1 <= key_id <= MAX_ROW_ID or await session.get(ApiKey, key_id) is None
    ):
        errors.append(f"key: unknown key {key_id}")
    if errors:
        raise ValidationFailed(errors)
    q = Quota(key_id=key_id, route_id=route_row.id if route_row else None, kind=kind, rate=rate)
    session.add(q)
    await session.flush()
    await session.refresh(q)
    await record_audit(
        session, actor=actor, action="create", entity_type="quota",
        entity_name=quota_label(q), after=quota_dict(q),
        bump=True,
    )
    return q


async def delete_quota(session: AsyncSession, quota_id: int, *, actor: str) -> None:
    q = await session.get(Quota, quota_id)
    if q is None:
        raise NotFound(f"quota {quota_id} not found")
    before = quota_dict(q)
    label = quota_label(q)
    await session.delete(q)
    await record_audit(
        session, actor=actor, action="delete", entity_type="quota",
        entity_name=label, before=before, bump=True,
    )
