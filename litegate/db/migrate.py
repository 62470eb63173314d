"""Run Alembic migrations programmatically (``litegate db ...``, ``serve``)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(url: str) -> Config:
    import litegate.migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(litegate.migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking; call from a thread when an event loop is running."""
    _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str:
    _ensure_sqlite_dir(url)
    buf = io.StringIO()
    cfg = alembic_config(url)
    cfg.stdout = buf
    with redirect_stdout(buf):
        command.current(cfg)
    return buf.getvalue().strip()
