"""The serving path's way into the configuration tables: plain SQL, rows as tuples.

The gateway reads its snapshot and polls ``config_state.version`` several times a
second; it needs a few SELECTs, not the ORM. On the embedded SQLite default the SQL
runs on the standard library's ``sqlite3`` (one connection, on one thread), so a
serving process never imports SQLAlchemy (~19 MiB, ~0.15 s). Any other database goes
through SQLAlchemy Core ``text()`` on the engine the admin console uses as well.
The ORM models (:mod:`litegate.db.models`) stay the one schema: the tests check every
table and column named here against their metadata.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

Row = tuple[Any, ...]
Table = tuple[list[str], list[Row]]
"""Column names and rows of one SELECT."""


class Rows(Protocol):
    async def fetch_many(self, queries: Sequence[str]) -> list[Table]:
        """Run each SELECT in one read transaction; their columns and rows, in order."""

    async def touch_last_used(self, used: dict[int, datetime]) -> None:
        """Set ``api_keys.last_used_at`` (UTC) for each key id."""

    async def close(self) -> None: ...


def database_errors() -> tuple[type[BaseException], ...]:
    """What a database call may raise: OSError, ``sqlite3.Error`` and — once SQLAlchemy
    is loaded — its ``DBAPIError``. A process that never loaded SQLAlchemy cannot get
    one, and checking does not import it (use as ``except database_errors():``)."""
    exc_module = sys.modules.get("sqlalchemy.exc")
    base: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
    return base if exc_module is None else (*base, exc_module.DBAPIError)


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite[+driver]:///path`` URL; None for anything else
    (in-memory, URI options, another database)."""
    if not url.startswith("sqlite") or ":///" not in url or "?" in url:
        return None
    path = url.split(":///", 1)[1]
    return path if path and path != ":memory:" else None


def _sqlite_time(at: datetime) -> str:
    """How SQLAlchemy's SQLite ``DateTime`` stores a UTC time, so the ORM reads it back."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteRows:
    """One stdlib ``sqlite3`` connection, used from one thread (it never blocks the loop)."""

    def __init__(self, path: str, *, timeout_s: float = 5.0) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=self._timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            try:  # the same journal as the engine's (litegate.db.engine explains why)
                conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="litegate-sqlite")
        loop = asyncio.get_running_loop()

        def call() -> Any:
            try:
                return work(self._connect())
            except sqlite3.Error:
                self._drop()  # a replaced or repaired file is reopened on the next call
                raise

        return await loop.run_in_executor(self._pool, call)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    async def fetch_many(self, queries: Sequence[str]) -> list[Table]:
        def work(conn: sqlite3.Connection) -> list[Table]:
            conn.execute("BEGIN")
            try:
                out: list[Table] = []
                for q in queries:
                    cursor = conn.execute(q)
                    out.append(([d[0] for d in cursor.description], cursor.fetchall()))
                return out
            finally:
                conn.execute("ROLLBACK")

        result: list[Table] = await self._run(work)
        return result

    async def touch_last_used(self, used: dict[int, datetime]) -> None:
        params = [(_sqlite_time(at), key_id) for key_id, at in used.items()]

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?", params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(work)

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._drop)
            self._pool.shutdown(wait=False)
            self._pool = None


class SQLAlchemyRows:
    """The same SQL through SQLAlchemy Core, on an engine, a connection or a session."""

    def __init__(self, source: AsyncEngine | AsyncConnection | AsyncSession) -> None:
        self._source = source

    async def fetch_many(self, queries: Sequence[str]) -> list[Table]:
        from sqlalchemy.ext.asyncio import AsyncEngine

        if isinstance(self._source, AsyncEngine):
            async with self._source.connect() as conn:
                return [await _table(conn, q) for q in queries]
        return [await _table(self._source, q) for q in queries]

    async def touch_last_used(self, used: dict[int, datetime]) -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import AsyncEngine

        if not isinstance(self._source, AsyncEngine):
            raise TypeError("touch_last_used needs an engine")
        statement = text("UPDATE api_keys SET last_used_at = :at WHERE id = :id")
        async with self._source.begin() as conn:
            await conn.execute(statement, [{"at": at, "id": key_id} for key_id, at in used.items()])

    async def close(self) -> None:
        """The engine belongs to whoever made it."""


async def _table(source: AsyncConnection | AsyncSession, query: str) -> Table:
    from sqlalchemy import text

    result = await source.execute(text(query))
    return list(result.keys()), [tuple(r) for r in result]


def parse_time(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite returns text, PostgreSQL datetimes."""
    if value is None:
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def parse_json(value: Any) -> Any:
    """A JSON column as Python: SQLite and ``text()`` return the stored text."""
    if isinstance(value, (str, bytes, bytearray)):
        return json.loads(value)
    return value
