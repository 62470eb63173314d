"""Helpers shared by CLI commands."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db import migrate
from litegate.db.engine import make_engine, make_sessionmaker
from litegate.services.schema import escape_control
from litegate.settings import Settings


def actor() -> str:
    return "cli:" + (os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown")


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite default is migrated on demand; other databases need
    ``litegate db upgrade`` (run once per deployment, not by every replica)."""
    if settings.db_url.startswith("sqlite"):
        migrate.upgrade_if_needed(settings.db_url)


@asynccontextmanager
async def transaction(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends, rolled back on error."""
    import asyncio

    await asyncio.to_thread(ensure_schema, settings)
    engine = make_engine(settings.db_url, timeout_s=settings.db_timeout_s)
    try:
        async with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        await engine.dispose()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A human-readable table. Control characters in a cell (a key name stored before
    names had to be printable) are written as escapes (``\\x1b``), never sent to the
    terminal."""
    if not rows:
        print("(none)")
        return
    cells = [{c: escape_control(str(r[c])) if r.get(c) is not None else "" for c in columns}
             for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in cells:
        print("  ".join(r[c].ljust(widths[c]) for c in columns))
