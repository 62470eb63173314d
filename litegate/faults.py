"""Operational faults: the machine, not the code or the input, is wrong.

Each one is explained in a single line that names the fix, so the CLI prints that line
(never a traceback) and a mounted gateway answers 503 with it.
"""

from __future__ import annotations

import socket
import sqlite3
import traceback
from urllib.parse import urlsplit

EXIT_OPERATIONAL = 3
"""Exit status of a CLI command stopped by an operational fault (documented in README)."""


class OperationalFault(RuntimeError):
    """The message is one line and says what to do."""


class DatabaseFault(OperationalFault):
    pass


class DatabaseUnreachable(DatabaseFault):
    pass


class DatabaseLocked(DatabaseFault):
    pass


class DatabaseNotMigrated(DatabaseFault):
    pass


class PortInUse(OperationalFault):
    pass


def describe_db(url: str) -> str:
    """Where the database is, without credentials: a file path or ``host:port/name``."""
    if url.startswith("sqlite"):
        return url.split(":///", 1)[1] if ":///" in url else url
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def not_migrated(url: str, detail: str = "") -> DatabaseNotMigrated:
    return DatabaseNotMigrated(
        f"the database {describe_db(url)} is not migrated{detail}: "
        "run `litegate db upgrade` with the same --db / LITEGATE_DB"
    )


def explain_db_error(exc: BaseException, url: str, *, timeout_s: float) -> DatabaseFault | None:
    """Map a driver/SQLAlchemy exception to a fault, or None when it is not operational."""
    where = describe_db(url)
    for err in _chain(exc):
        text = str(err)
        name = type(err).__name__
        if isinstance(err, sqlite3.OperationalError):
            if "locked" in text or "busy" in text:
                return DatabaseLocked(
                    f"the database {where} is locked by another writer (waited {timeout_s:g} s): "
                    "retry when it has finished, or raise LITEGATE_DB_TIMEOUT_S"
                )
            if "no such table" in text:
                return not_migrated(url)
            if "unable to open" in text:
                return DatabaseUnreachable(
                    f"cannot open the SQLite database {where}: check --home / --db and that "
                    "its directory is writable"
                )
        if url.startswith("sqlite") and isinstance(err, OSError) and err.filename is not None:
            return DatabaseUnreachable(
                f"cannot create the SQLite database {where} ({err.strerror}: {err.filename}): "
                "choose a writable --home (LITEGATE_HOME) or --db"
            )
        if name == "UndefinedTableError":  # asyncpg: relation does not exist
            return not_migrated(url)
        if name in _PG_CONNECT_ERRORS or _is_connect_error(err):
            reason = text.splitlines()[0] if text else name
            return DatabaseUnreachable(
                f"cannot connect to the database at {where} ({reason}): check --db / LITEGATE_DB "
                "and that the server is running and accepts this user"
            )
    return None


_PG_CONNECT_ERRORS = frozenset({
    "InvalidPasswordError", "InvalidAuthorizationSpecificationError", "InvalidCatalogNameError",
    "CannotConnectNowError", "TooManyConnectionsError",
})


def _is_connect_error(err: BaseException) -> bool:
    """Refused, unresolvable, unreachable or timed out; asyncio reports several addresses
    tried at once as a plain OSError("Multiple exceptions: ... Connect call failed ...")."""
    return isinstance(err, (ConnectionError, socket.gaierror, TimeoutError)) or (
        type(err) is OSError and "Connect call failed" in str(err)
    )


_DATABASE_CODE = ("sqlalchemy", "asyncpg", "aiosqlite", "alembic", "litegate.db")


def raised_by_database_code(exc: BaseException) -> bool:
    """True when ``exc`` came out of the database stack: an OSError from elsewhere (an
    upstream, a file) is never reported as a database fault."""
    return any(
        str(frame.f_globals.get("__name__", "")).startswith(_DATABASE_CODE)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what SQLAlchemy wrapped (``.orig``) and its causes, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or any(err is s for s in seen):
            continue
        seen.append(err)
        todo += [getattr(err, "orig", None), err.__cause__, err.__context__]
    return seen
