"""Admin console users: scrypt password hashes and per user+IP login throttling.

Hashes are stored as ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost
parameters can be raised later without breaking existing users. Verification is
constant-time and runs off the event loop (scrypt is deliberately slow).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import heapq
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import AdminUser, utcnow
from litegate.errors import BadRequest, Conflict, NotFound
from litegate.services import admin_sessions
from litegate.services.audit import record_audit

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_LENGTH = 8
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,100}\Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) * 2,
        dklen=KEY_BYTES,
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored ``scrypt$...`` hash."""
    try:
        scheme, n_s, r_s, p_s, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(hash_b64)
    except (ValueError, TypeError):
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) * 2,
        dklen=len(expected),
    )
    return hmac.compare_digest(digest, expected)


# Verified against when the user does not exist, so timing does not reveal usernames.
@functools.cache
def _dummy_hash() -> str:
    # Computed on first use, not at import: scrypt is deliberately slow (~0.1 s).
    return hash_password("litegate-dummy-password")


def validate_username(username: str) -> str:
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise BadRequest("username must be 1-100 characters: letters, digits, _ . @ -")
    return username


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


async def create_user(
    session: AsyncSession, username: str, password: str, *, actor: str = "cli"
) -> AdminUser:
    """Create an admin user (``Conflict`` when the name is taken); the caller commits.

    Like every service, it runs inside the caller's transaction and records an audit
    entry. The password hash is computed off the event loop.
    """
    username = validate_username(username)
    validate_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    existing = await session.scalar(select(AdminUser).where(AdminUser.username == username))
    if existing is not None:
        raise Conflict(f"admin user {username!r} already exists")
    user = AdminUser(username=username, password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"admin user {username!r} already exists") from exc
    await record_audit(
        session,
        actor=actor,
        action="create",
        entity_type="admin_user",
        entity_name=username,
        after={"username": username},
    )
    return user


async def set_password(
    session: AsyncSession, username: str, password: str, *, actor: str = "cli"
) -> AdminUser:
    """Replace a user's password and end all of that user's console sessions (a
    captured cookie must not outlive the password it was issued under); the caller commits."""
    validate_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    user = await session.scalar(select(AdminUser).where(AdminUser.username == username))
    if user is None:
        raise NotFound(f"no admin user {username!r}")
    user.password_hash = password_hash
    await admin_sessions.end_for_user(session, user.id)
    await record_audit(
        session,
        actor=actor,
        action="set_password",
        entity_type="admin_user",
        entity_name=username,
    )
    return user


async def end_sessions(session: AsyncSession, username: str | None, *, actor: str) -> int:
    """End one user's console sessions, or everyone's when ``username`` is ``None``;
    returns how many were ended. The caller commits."""
    if username is None:
        ended = await admin_sessions.end_all(session)
    else:
        user = await session.scalar(select(AdminUser).where(AdminUser.username == username))
        if user is None:
            raise NotFound(f"no admin user {username!r}")
        ended = await admin_sessions.end_for_user(session, user.id)
    await record_audit(
        session, actor=actor, action="end_sessions", entity_type="admin_user",
        entity_name=username or "*", after={"sessions_ended": ended},
    )
    return ended


async def authenticate(session: AsyncSession, username: str, password: str) -> AdminUser | None:
    """The user when the password matches, else ``None`` (same cost either way).

    Records ``last_login_at`` on success; commits itself (a login is not a config change).
    """
    user = await session.scalar(select(AdminUser).where(AdminUser.username == username))
    stored = user.password_hash if user is not None else _dummy_hash()
    ok = await asyncio.to_thread(verify_password, password, stored)
    if user is None or not ok:
        await session.rollback()
        return None
    user.last_login_at = utcnow()
    await session.commit()
    return user


async def check_password(session: AsyncSession, user_id: int, password: str) -> bool:
    """Whether ``password`` is this user's current one (for the console's password change)."""
    user = await session.get(AdminUser, user_id)
    stored = user.password_hash if user is not None else _dummy_hash()
    ok = await asyncio.to_thread(verify_password, password, stored)
    return user is not None and ok


async def ensure_demo_user(session: AsyncSession, username: str = "admin") -> str | None:
    """``--demo``: when no console user exists, create ``username`` with a random
    password and return it (to be printed once); ``None`` when users already exist."""
    if await count_users(session):
        return None
    password = secrets.token_urlsafe(12)
    await create_user(session, username, password, actor="demo")
    return password


async def get_user(session: AsyncSession, user_id: int) -> AdminUser | None:
    return await session.get(AdminUser, user_id)


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(AdminUser)) or 0)


@dataclass
class LoginThrottle:
    """Failed-login counter per (username, client IP) over a sliding window.

    After ``max_failures`` failures inside ``window_s`` the pair is locked until the
    oldest of them leaves the window; a success clears the pair's failures.

    Memory is bounded by two tables. Pairs still counting (``max_entries``) are
    evicted least-recently-failed first, so a flood of failures for other names
    only churns that table and never touches a lock. Locked pairs live in their own
    table (``max_locked``) and leave it only when their lock expires. If that table
    is full of live locks, the throttle fails closed: every pair not yet locked
    waits until the first lock expires, and no existing lock is dropped early.
    In-memory, so the lock is per process (each replica counts on its own).
    """

    max_failures: int = 5
    window_s: float = 300.0
    max_entries: int = 10_000
    max_locked: int = 10_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _failures: OrderedDict[tuple[str, str], deque[float]] = field(
        default_factory=OrderedDict, repr=False
    )
    _locked: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    _expiries: list[tuple[float, tuple[str, str]]] = field(default_factory=list, repr=False)

    def _now(self) -> float:
        return self.clock()

    def _expire_locks(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, key = heapq.heappop(self._expiries)
            if self._locked.get(key) == until:
                del self._locked[key]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, username: str, ip: str) -> float:
        """Seconds until the pair may try again; 0 when not locked."""
        key, now = (username.lower(), ip), self._now()
        self._expire_locks(now)
        until = self._locked.get(key)
        if until is not None:
            return until - now
        if len(self._locked) >= self.max_locked:
            return self._expiries[0][0] - now  # fail closed until a lock slot frees
        times = self._recent(key, now)
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def failure(self, username: str, ip: str) -> None:
        key, now = (username.lower(), ip), self._now()
        self._expire_locks(now)
        if key in self._locked:
            return
        times = self._recent(key, now)
        if times is None:
            if len(self._failures) >= self.max_entries:
                self._failures.popitem(last=False)  # least recently failed, never a lock
            times = self._failures[key] = deque()
        else:
            self._failures.move_to_end(key)
        times.append(now)
        if len(times) >= self.max_failures and len(self._locked) < self.max_locked:
            until = times[0] + self.window_s
            self._locked[key] = until
            heapq.heappush(self._expiries, (until, key))
            del self._failures[key]

    def success(self, username: str, ip: str) -> None:
        self._failures.pop((username.lower(), ip), None)
