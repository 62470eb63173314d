"""API keys: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import ApiKey, Quota, Route, as_utc, utcnow
from litegate.errors import NotFound
from litegate.services.audit import bump_config_version, record_audit
from litegate.services.schema import ValidationFailed, check_rates

KEY_PREFIX = "lg-"


def hash_key(secret: str) -> str:
    # Keys are 256-bit random: a fast hash is safe and keeps auth O(1) per request.
    return hashlib.sha256(secret.encode()).hexdigest()


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
    }


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
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret — the only time the secret exists."""
    errors = []
    if not name or len(name) > 200:
        errors.append("name: must be 1-200 characters")
    errors += check_rates(limits or [], "limit")
    errors += check_rates(token_limits or [], "token_limit")
    expires_at = as_utc(expires_at)
    if expires_at is not None and expires_at <= utcnow():
        errors.append("expires_at: must be in the future")
    if routes:
        known = set(await session.scalars(select(Route.name)))
        missing = [r for r in routes if r not in known]
        if missing:
            errors.append(f"routes: unknown route(s) {missing}")
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
    session.add(key)
    await session.flush()
    for rate in limits or []:
        session.add(Quota(key_id=key.id, kind="requests", rate=rate))
    for rate in token_limits or []:
        session.add(Quota(key_id=key.id, kind="tokens", rate=rate))
    await session.flush()
    after = key_dict(key) | {"limits": list(limits or []), "token_limits": list(token_limits or [])}
    await record_audit(
        session, actor=actor, action="create", entity_type="api_key", entity_name=name, after=after
    )
    await bump_config_version(session)
    return key, secret


async def list_keys(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(await session.scalars(stmt))


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
        )
        await bump_config_version(session)
    return key


async def touch_last_used(session: AsyncSession, used: dict[int, datetime]) -> None:
    """Persist last-use times collected in memory (never written per request)."""
    for key_id, at in used.items():
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
