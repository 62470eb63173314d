"""A new key's secret waits for the next page on the session's row: sealed under the
session id (which the database never stores), so a database reader cannot see it."""

from __future__ import annotations

import json

from sqlalchemy import select

from litegate.db.models import AdminSession
from litegate.services import admin_sessions
from tests.e2e.support import make_admin_gateway


async def test_flash_is_sealed_at_rest_and_shown_once(tmp_path):
    gw = await make_admin_gateway(tmp_path)  # user alice, id 1
    try:
        async with gw.sessionmaker() as s, s.begin():
            sid = await admin_sessions.start(s, 1, max_age_s=3600)
            other = await admin_sessions.start(s, 1, max_age_s=3600)
            await admin_sessions.set_flash(s, sid, {"new_key": "lg-very-secret-value"})
        async with gw.sessionmaker() as s:
            stored = await s.scalar(select(AdminSession.flash).where(AdminSession.flash.is_not(None)))
        assert stored is not None and "lg-very-secret" not in json.dumps(stored)
        async with gw.sessionmaker() as s, s.begin():
            assert await admin_sessions.pop_flash(s, other) is None
            assert await admin_sessions.pop_flash(s, sid) == {"new_key": "lg-very-secret-value"}
        async with gw.sessionmaker() as s, s.begin():
            assert await admin_sessions.pop_flash(s, sid) is None
    finally:
        await gw.engine.dispose()
