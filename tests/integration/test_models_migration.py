"""Alembic 0004 on SQLite: models still at the old implicit batching default (8) are
switched off; explicitly chosen sizes stay; down and up again work."""

from __future__ import annotations

import sqlite3

from litegate.db import migrate


def test_batching_opt_in_migration_up_and_down(tmp_path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url, "0003")
    with sqlite3.connect(path) as db:
        for name, size in (("implicit", 8), ("chosen", 32), ("off", 1)):
            db.execute(
                "INSERT INTO models (name, history, max_batch_size, max_queue_delay_ms, hot, "
                "options, row_version, created_at, updated_at) VALUES "
                "(?, '[]', ?, 2.0, 0, '{}', 1, '2026-01-01', '2026-01-01')", (name, size))

    def sizes() -> dict[str, int]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT name, max_batch_size FROM models"))

    migrate.upgrade(url, "0004")
    assert sizes() == {"implicit": 0, "chosen": 32, "off": 1}
    migrate.downgrade(url, "0003")
    assert sizes() == {"implicit": 0, "chosen": 32, "off": 1}  # 0 is "off" there too
    migrate.upgrade(url)
    assert migrate.current(url).startswith(migrate.head_revision())
