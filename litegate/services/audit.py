"""Audit trail and the config version counter."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from litegate.db.models import AuditEntry, ConfigState, utcnow

log = structlog.get_logger("litegate.audit")


async def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_name: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    bump: bool = False,
) -> AuditEntry:
    """The audit entry of one change; with ``bump``, also the config version gateways
    poll (a batch bumps once at its end). Call inside the change's transaction."""
    fields: dict[str, Any] = {
        "actor": actor, "action": action, "entity_type": entity_type,
        "entity_name": entity_name, "before": before, "after": after,
    }
    entry = AuditEntry(**fields)
    session.add(entry)
    log.info("config_change", **fields)
    if bump:
        await bump_config_version(session)
    return entry


async def bump_config_version(session: AsyncSession) -> int:
    """Increment the counter gateways poll; call inside the change's transaction."""
    result = await session.execute(
        update(ConfigState)
        .where(ConfigState.id == 1)
        .values(version=ConfigState.version + 1, updated_at=utcnow())
        .returning(ConfigState.version)
    )
    version = result.scalar_one_or_none()
    if version is None:
        session.add(ConfigState(id=1, version=1))
        await session.flush()
        return 1
    return int(version)


async def current_config_version(session: AsyncSession | AsyncConnection) -> int:
    value = await session.scalar(select(ConfigState.version).where(ConfigState.id == 1))
    return int(value or 0)


AUDIT_COLUMNS = {
    "actor": AuditEntry.actor, "entity_type": AuditEntry.entity_type, "action": AuditEntry.action,
}
"""The columns the log can be filtered on by exact value."""


async def search_audit(
    session: AsyncSession, *, filters: dict[str, str], text: str = "", offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditEntry], int]:
    """One page of entries, newest first, matching every non-empty filter (exact) and
    ``text`` (in the entity name or actor), and how many match in all."""
    stmt = select(AuditEntry)
    for name, value in filters.items():
        if value:
            stmt = stmt.where(AUDIT_COLUMNS[name] == value)
    if text:
        stmt = stmt.where(or_(
            AuditEntry.entity_name.contains(text, autoescape=True),
            AuditEntry.actor.contains(text, autoescape=True),
        ))
    total = int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = await session.scalars(stmt.order_by(AuditEntry.id.desc()).offset(offset).limit(limit))
    return list(rows), total


async def audit_choices(session: AsyncSession, *, limit: int) -> dict[str, list[str]]:
    """The distinct values of each filter column, the first ``limit`` of each."""
    return {
        name: list(await session.scalars(select(col).distinct().order_by(col).limit(limit)))
        for name, col in AUDIT_COLUMNS.items()
    }
