"""Only the database stack's errors are explained as database faults."""

from __future__ import annotations

import asyncio
import socket

from litegate.db.engine import make_engine
from litegate.faults import DatabaseUnreachable, explain_db_error, raised_by_database_code


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_database_connection_is_a_database_fault():
    url = f"postgresql+asyncpg://u@127.0.0.1:{_refused_port()}/db"

    async def connect() -> None:
        engine = make_engine(url, timeout_s=2)
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        asyncio.run(connect())
    except OSError as exc:
        assert raised_by_database_code(exc)
        assert isinstance(explain_db_error(exc, url, timeout_s=2), DatabaseUnreachable)
    else:
        raise AssertionError("connected to a closed port")


def test_a_refused_connection_elsewhere_is_not_blamed_on_the_database():
    try:
        socket.create_connection(("127.0.0.1", _refused_port()), timeout=2)
    except OSError as exc:
        assert not raised_by_database_code(exc)
    else:
        raise AssertionError("connected to a closed port")
