"""The snapshot is read with plain SQL (stdlib sqlite3 on the embedded default, SQLAlchemy
Core elsewhere): one schema — the ORM models — and the same snapshot either way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import JSON, Boolean, DateTime

from litegate.db import migrate
from litegate.db.engine import make_engine, make_sessionmaker
from litegate.db.models import Base, Model, ModelVersion
from litegate.db.rows import SQLiteRows, sqlite_path
from litegate.services import config as config_service
from litegate.services import keys as key_service
from litegate.snapshot import _QUERIES, BOOL_COLUMNS, JSON_COLUMNS, TIME_COLUMNS, build_snapshot


def test_the_sql_names_only_tables_and_columns_of_the_orm_schema() -> None:
    tables = {t for t, _ in _QUERIES}
    assert tables <= set(Base.metadata.tables), tables - set(Base.metadata.tables)
    for table in tables:
        columns = Base.metadata.tables[table].columns
        json_cols = {c.name for c in columns if isinstance(c.type, JSON)}
        bool_cols = {c.name for c in columns if isinstance(c.type, Boolean)}
        time_cols = {c.name for c in columns if isinstance(c.type, DateTime)}
        assert JSON_COLUMNS.get(table, frozenset()) == json_cols, table
        assert BOOL_COLUMNS.get(table, frozenset()) == bool_cols, table
        assert time_cols <= TIME_COLUMNS, (table, time_cols - TIME_COLUMNS)


def _populate(url: str) -> None:
    async def go() -> None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                doc = config_service.validate({
                    "upstreams": [
                        {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:9/x/",
                         "timeout_s": 7, "api_key_env": "LG_TEST_UNSET_KEY"},
                        {"name": "b", "kind": "openai", "base_url": "http://127.0.0.1:9"},
                    ],
                    "routes": [
                        {"name": "chat", "sticky": "header:X-User", "limits": ["5/minute"],
                         "token_limits": ["900/hour"], "cache": {"ttl_s": 30},
                         "variants": [
                             {"upstream": "a", "model": "m1", "weight": 70,
                              "price": {"input_per_1m": 0.5, "output_per_1m": 1.5}},
                             {"upstream": "b", "model": "m2", "weight": 30},
                         ]},
                        {"name": "embed", "variants": [{"upstream": "b", "model": "e"}]},
                    ],
                })
                await config_service.apply_document(session, doc, actor="test")
                await key_service.create_key(
                    session, name="k1", actor="test", routes=["chat"], limits=["10/second"],
                    expires_at=datetime.now(UTC) + timedelta(days=3))
                await key_service.create_key(session, name="k2", actor="test")
                revoked, _ = await key_service.create_key(session, name="gone", actor="test")
                await session.flush()
                await key_service.revoke_key(session, revoked.id, actor="test")
                model = Model(name="mlp", active_version="2", history=["1"], max_batch_size=8,
                              hot=True, options={"pooling": "mean"})
                session.add(model)
                await session.flush()
                for v in ("1", "2"):
                    session.add(ModelVersion(
                        model_id=model.id, version=v, path=f"/m/{v}.onnx", sha256=v * 64,
                        size_bytes=10, signature={"inputs": [{"name": "x", "shape": [-1, 4]}]}))
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_sqlite_rows_and_the_sqlalchemy_session_build_the_same_snapshot(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lg.db'}"
    migrate.upgrade(url)
    _populate(url)

    async def both() -> tuple[object, object]:
        rows = SQLiteRows(sqlite_path(url) or "")
        try:
            plain = await build_snapshot(rows)
        finally:
            await rows.close()
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                orm = await build_snapshot(session)
        finally:
            await engine.dispose()
        return plain, orm

    plain, orm = asyncio.run(both())
    assert plain.version == orm.version > 0  # type: ignore[attr-defined]
    for part in ("routes", "keys", "models"):  # repr: 1 == True, but not in a repr
        assert repr(dict(getattr(plain, part))) == repr(dict(getattr(orm, part))), part
    snap = plain
    chat = snap.routes["chat"]  # type: ignore[attr-defined]
    assert [v.name for v in chat.variants] == [v.name for v in orm.routes["chat"].variants]  # type: ignore[attr-defined]
    assert chat.cumulative == (70, 100) and chat.sticky_header == b"x-user"
    assert chat.variants[0].upstream.base_url == "http://127.0.0.1:9/x"
    assert chat.variants[0].input_nano_per_token == 500
    assert [str(r) for r in chat.limits] == ["5 per 1 minute"]
    assert sorted(k.name for k in snap.keys.values()) == ["k1", "k2"]  # type: ignore[attr-defined]
    k1 = next(k for k in snap.keys.values() if k.name == "k1")  # type: ignore[attr-defined]
    assert k1.routes == frozenset({"chat"}) and k1.expires_at is not None
    assert k1.expires_at > datetime.now(UTC).timestamp()
    mlp = snap.models["mlp"]  # type: ignore[attr-defined]
    assert mlp.previous_version == "1" and mlp.hot is True and sorted(mlp.versions) == ["1", "2"]
    assert mlp.versions["2"].signature["inputs"][0]["shape"] == [-1, 4]
    assert mlp.options["pooling"] == "mean"


def test_sqlite_rows_reopens_the_file_after_an_error(tmp_path: Path) -> None:
    """A failed read drops the connection, so a repaired database is read again."""
    db = tmp_path / "lg.db"
    url = f"sqlite+aiosqlite:///{db}"

    async def go() -> tuple[str, int]:
        rows = SQLiteRows(str(db))
        try:
            try:
                await rows.fetch_many(["SELECT version FROM config_state"])
                failed = "no"
            except Exception as exc:  # noqa: BLE001 - the sqlite3 error of a bare file
                failed = type(exc).__name__
            await asyncio.to_thread(migrate.upgrade, url)
            [(_, found)] = await rows.fetch_many(["SELECT count(*) FROM config_state"])
            return failed, found[0][0]
        finally:
            await rows.close()

    failed, count = asyncio.run(go())
    assert failed == "OperationalError"
    assert count >= 0
