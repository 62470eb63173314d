"""Server-side console sessions: the cookie names a row, and deleting the row ends
the session on every replica at the next request.

Only the SHA-256 of the session id is stored. Rows expire with the cookie; expired
rows are purged whenever someone signs in, and each user keeps at most
``MAX_SESSIONS_PER_USER`` (the oldest are ended first), so the table is bounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import delete, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import AdminSession, AdminUser, utcnow

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

MAX_SESSIONS_PER_USER = 20


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def start(session: AsyncSession, user_id: int, *, max_age_s: int) -> str:
    """Record a new session for ``user_id`` and return its id (for the cookie only)."""
    now = utcnow()
    await session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
    keep = MAX_SESSIONS_PER_USER - 1
    old = list(await session.scalars(
        select(AdminSession.id_hash).where(AdminSession.user_id == user_id)
        .order_by(AdminSession.created_at.desc()).offset(keep)
    ))
    if old:
        await session.execute(delete(AdminSession).where(AdminSession.id_hash.in_(old)))
    session_id = secrets.token_urlsafe(32)
    session.add(AdminSession(
        id_hash=_hash(session_id), user_id=user_id, created_at=now,
        expires_at=now + timedelta(seconds=max_age_s),
    ))
    await session.flush()
    return session_id


async def user_of(session: AsyncSession, session_id: str) -> tuple[int, str] | None:
    """``(user id, username)`` for a live session, else ``None`` (ended or expired)."""
    row = (await session.execute(
        select(AdminUser.id, AdminUser.username)
        .join(AdminSession, AdminSession.user_id == AdminUser.id)
        .where(AdminSession.id_hash == _hash(session_id), AdminSession.expires_at > utcnow())
    )).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def _changed(session: AsyncSession, stmt: Any) -> int:
    """Rows a DELETE/UPDATE touched."""
    result = cast("CursorResult[Any]", await session.execute(stmt))
    return int(result.rowcount or 0)


async def end(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(AdminSession).where(AdminSession.id_hash == _hash(session_id)))


async def end_for_user(session: AsyncSession, user_id: int) -> int:
    """End every session of one user; returns how many were live."""
    return await _changed(session, delete(AdminSession).where(AdminSession.user_id == user_id))


async def end_all(session: AsyncSession) -> int:
    return await _changed(session, delete(AdminSession))


async def count_for_user(session: AsyncSession, user_id: int) -> int:
    rows = await session.scalars(
        select(AdminSession.id_hash)
        .where(AdminSession.user_id == user_id, AdminSession.expires_at > utcnow())
    )
    return len(list(rows))


def _keystream(session_id: str, nonce: bytes, size: int) -> bytes:
    return hashlib.shake_256(b"litegate-flash\0" + nonce + session_id.encode()).digest(size)


def _seal(session_id: str, data: dict[str, Any]) -> dict[str, str]:
    """Encrypt ``data`` under the session id, which only the cookie holder has (the table
    stores its hash): a new key's secret never sits in the database in clear."""
    plain = json.dumps(data).encode()
    nonce = secrets.token_bytes(16)
    sealed = bytes(a ^ b for a, b in zip(plain, _keystream(session_id, nonce, len(plain))))
    return {"nonce": base64.b64encode(nonce).decode(), "sealed": base64.b64encode(sealed).decode()}


def _unseal(session_id: str, stored: dict[str, str]) -> dict[str, Any] | None:
    try:
        nonce, sealed = base64.b64decode(stored["nonce"]), base64.b64decode(stored["sealed"])
        plain = bytes(a ^ b for a, b in zip(sealed, _keystream(session_id, nonce, len(sealed))))
        data = json.loads(plain)
    except (KeyError, TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def set_flash(session: AsyncSession, session_id: str, data: dict[str, Any]) -> None:
    await session.execute(
        update(AdminSession).where(AdminSession.id_hash == _hash(session_id))
        .values(flash=_seal(session_id, data))
    )


async def pop_flash(session: AsyncSession, session_id: str) -> dict[str, Any] | None:
    """The one-time payload, cleared as it is read: a reload (or a second replica) sees none."""
    id_hash = _hash(session_id)
    data = await session.scalar(select(AdminSession.flash).where(AdminSession.id_hash == id_hash))
    if not data:
        return None
    # Only the request whose UPDATE clears the value shows it (two concurrent GETs race).
    cleared = await _changed(
        session,
        update(AdminSession)
        .where(AdminSession.id_hash == id_hash, AdminSession.flash.is_not(None))
        .values(flash=null()),  # SQL NULL, not the JSON 'null' a Python None would store
    )
    return _unseal(session_id, data) if cleared == 1 else None
