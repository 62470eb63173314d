"""Admin API tokens: random secrets shown once, stored only as SHA-256 hashes (like API
keys), scoped ``read`` (GET only) or ``write`` (everything), revocable, optionally
expiring.

:func:`authenticate` reads the row on every admin API request, so a revocation (CLI,
console) holds at the very next request on every replica. The table is bounded: at most
``MAX_TOKENS`` rows; revoked and expired rows are purged first to make room.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import MAX_ROW_ID, AdminToken, as_utc, utcnow
from litegate.errors import Conflict, NotFound
from litegate.services.audit import record_audit
from litegate.services.schema import ValidationFailed
from litegate.snapshot import hash_key

TOKEN_PREFIX = "lga-"
SCOPES = ("read", "write")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}\Z")
MAX_TOKENS = 200
TOUCH_EVERY = timedelta(seconds=60)
"""``last_used_at`` is written at most this often per token (not on every request)."""


def token_dict(t: AdminToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "scope": t.scope,
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "expires_at": t.expires_at.isoformat() if t.expires_at else None,
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
    }


def token_state(t: AdminToken, now: datetime | None = None) -> str:
    if t.revoked_at is not None:
        return "revoked"
    expires = as_utc(t.expires_at)
    if expires is not None and expires <= (now or utcnow()):
        return "expired"
    return "active"


def check_token(name: str, scope: str, expires_at: datetime | None = None) -> list[str]:
    """Every problem with a new token's fields (the CLI, the console and the service)."""
    errors = []
    if not NAME_RE.match(name or ""):
        errors.append("name: use 1-100 letters, digits, '_', '.', '@' or '-'")
    if scope not in SCOPES:
        errors.append(f"scope: must be one of {', '.join(SCOPES)}")
    expires_at = as_utc(expires_at)
    if expires_at is not None and expires_at <= utcnow():
        errors.append("expires_at: must be in the future")
    return errors


def _dead(now: datetime) -> Any:
    return or_(AdminToken.revoked_at.is_not(None), AdminToken.expires_at <= now)


async def create_token(
    session: AsyncSession,
    name: str,
    *,
    scope: str,
    actor: str,
    expires_at: datetime | None = None,
) -> tuple[AdminToken, str]:
    """Create a token and return it with its secret — the only time the secret exists.
    The name of a revoked or expired token can be reused (its row is replaced)."""
    now = utcnow()
    expires_at = as_utc(expires_at)
    errors = check_token(name, scope, expires_at)
    if errors:
        raise ValidationFailed(errors)
    existing = await session.scalar(select(AdminToken).where(AdminToken.name == name))
    if existing is not None:
        if token_state(existing, now) == "active":
            raise Conflict(f"an active admin token named {name!r} exists; revoke it first")
        await session.delete(existing)
        await session.flush()
    rows = list(await session.scalars(select(AdminToken.id).order_by(AdminToken.id)))
    if len(rows) >= MAX_TOKENS:
        dead = list(await session.scalars(
            select(AdminToken.id).where(_dead(now)).order_by(AdminToken.id)
            .limit(len(rows) - MAX_TOKENS + 1)
        ))
        if len(rows) - len(dead) >= MAX_TOKENS:
            raise Conflict(f"there are already {MAX_TOKENS} admin tokens; revoke unused ones")
        await session.execute(delete(AdminToken).where(AdminToken.id.in_(dead)))
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AdminToken(
        name=name, prefix=secret[: len(TOKEN_PREFIX) + 6], token_hash=hash_key(secret),
        scope=scope, created_at=now, expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    await record_audit(
        session, actor=actor, action="create", entity_type="admin_token", entity_name=name,
        after=token_dict(token),
    )
    return token, secret


async def list_tokens(session: AsyncSession) -> list[AdminToken]:
    return list(await session.scalars(select(AdminToken).order_by(AdminToken.id)))


async def get_token(session: AsyncSession, ref: str | int) -> AdminToken:
    """A token by id (a number) or by name."""
    text = str(ref)
    token = None
    if text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_ROW_ID:
        token = await session.get(AdminToken, int(text))
    if token is None:
        token = await session.scalar(select(AdminToken).where(AdminToken.name == text))
    if token is None:
        raise NotFound(f"admin token {text!r} not found")
    return token


async def revoke_token(session: AsyncSession, ref: str | int, *, actor: str) -> AdminToken:
    token = await get_token(session, ref)
    if token.revoked_at is None:
        before = token_dict(token)
        token.revoked_at = utcnow()
        await session.flush()
        await record_audit(
            session, actor=actor, action="revoke", entity_type="admin_token",
            entity_name=token.name, before=before, after=token_dict(token),
        )
    return token


async def authenticate(session: AsyncSession, secret: str) -> AdminToken | None:
    """The live token for ``secret``, else ``None`` (unknown, revoked or expired)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = await session.scalar(
        select(AdminToken).where(AdminToken.token_hash == hash_key(secret))
    )
    now = utcnow()
    if token is None or token_state(token, now) != "active":
        return None
    last = as_utc(token.last_used_at)
    if last is None or now - last >= TOUCH_EVERY:
        token.last_used_at = now  # written when the caller's transaction commits
    return token
