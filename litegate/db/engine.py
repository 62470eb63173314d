"""Engine and session factory; sessions are passed in, never global."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, timeout_s: float = 5.0, **kwargs: object) -> AsyncEngine:
    """``timeout_s`` bounds waiting for another writer's lock (SQLite) or for a connection
    (PostgreSQL), so a busy or unreachable database fails fast instead of hanging."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": timeout_s}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            # A rollback journal, not WAL: WAL maps its -shm file into memory, and a
            # truncated or unwritable -shm then kills the process with SIGBUS. Here a
            # broken file is an ordinary error, and the gateway keeps its last snapshot.
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            try:
                cur.execute("PRAGMA journal_mode=DELETE")
            except Exception:  # noqa: BLE001 - a database still open in WAL mode elsewhere
                pass  # (an older gateway) keeps working; the next sole opener converts it
            cur.close()

        return engine
    return create_async_engine(
        url, pool_pre_ping=True, connect_args={"timeout": timeout_s}, **kwargs
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
