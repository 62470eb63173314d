"""Audit trail and the config version counter."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select, update
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
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_name=entity_name,
        before=before,
        after=after,
    )
    session.add(entry)
    log.info(
        "config_change",
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_name=entity_name,
        before=before,
        after=after,
    )
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
