"""Run Alembic migrations programmatically (``litegate db ...``, ``serve``)."""

from __future__ import annotations

import io
import re
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

from litegate.faults import DatabaseNotMigrated, describe_db, not_migrated

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

_REVISION = re.compile(r"^(down_)?revision(?:: [^=]+)? = ['\"]?([\w]+)['\"]?", re.MULTILINE)


def migrations_dir() -> Path:
    import litegate.migrations

    return Path(litegate.migrations.__file__).parent


def _revisions() -> tuple[set[str], set[str]]:
    """(every revision, every revision that has a child), read from the scripts."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (migrations_dir() / "versions").glob("*.py"):
        for down, rev in _REVISION.findall(script.read_text()):
            (parents if down else revisions).add(rev)
    return revisions, parents


def head_revision() -> str:
    """The head revision, read from the scripts without importing Alembic."""
    revisions, parents = _revisions()
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {sorted(heads)}")
    return heads.pop()


def sqlite_is_current(url: str) -> bool:
    """True when an SQLite database is already at head (checked with the stdlib only,
    so a restart of the embedded default does not pay for importing Alembic)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or not Path(path).exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == head_revision()


async def check_schema(engine: AsyncEngine, url: str) -> None:
    """Raise DatabaseNotMigrated unless the database is at head. A shared database is
    migrated once per deployment (``litegate db upgrade``), never by each replica."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    except DBAPIError as exc:
        message = str(exc)
        if "alembic_version" in message and ("no such table" in message or "does not exist" in message):
            raise not_migrated(url) from exc
        raise
    head = head_revision()
    if row is None:
        raise not_migrated(url)
    if row[0] not in _revisions()[0]:
        raise DatabaseNotMigrated(
            f"the database {describe_db(url)} is at revision {row[0]}, newer than this litegate "
            f"({head}): upgrade litegate"
        )
    if row[0] != head:
        raise not_migrated(url, f" (at {row[0]}, this litegate needs {head})")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking; call from a thread when an event loop is running."""
    from alembic import command

    _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def upgrade_if_needed(url: str) -> None:
    if url.startswith("sqlite") and sqlite_is_current(url):
        return
    upgrade(url)


def downgrade(url: str, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str:
    from alembic import command

    _ensure_sqlite_dir(url)
    buf = io.StringIO()
    cfg = alembic_config(url)
    cfg.stdout = buf
    with redirect_stdout(buf):
        command.current(cfg)
    return buf.getvalue().strip()
