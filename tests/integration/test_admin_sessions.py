"""Server-side console sessions across two real gateways on one database: logout,
a password change and ``admin end-sessions`` end a captured cookie on the very next
request, on either replica."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import create_console_user, csrf_of, http_login
from tests.helpers.cli import run_cli

PASSWORD = "first-password-1"


def _cli_with_stdin(monkeypatch: pytest.MonkeyPatch, home: Path, text: str, *argv: str) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(text + "\n"))
    code, out, err = run_cli(*argv, home=home)
    assert code == 0, err
    return out


def _login(url: str, user: str, password: str = PASSWORD) -> httpx.Client:
    return http_login(url, user, password)


def _opens_console(url: str, cookie: str) -> bool:
    """A fresh client presenting only the captured cookie: 200 = signed in, 303 = login."""
    r = httpx.get(f"{url}/admin/", cookies={"litegate_admin": cookie}, timeout=10)
    assert r.status_code in (200, 303), r.status_code
    return r.status_code == 200


@pytest.fixture
def replicas(home: Path, make_gateway, monkeypatch) -> Iterator[tuple[str, str]]:
    home.mkdir(parents=True, exist_ok=True)
    a, b = make_gateway(), make_gateway()  # one SQLite database, two servers
    for user in ("alice", "bob"):
        create_console_user(home, user, PASSWORD)
    yield a.url, b.url


def test_logout_ends_the_session_on_every_replica(replicas):
    a, b = replicas
    client = _login(a, "alice")
    captured = client.cookies["litegate_admin"]
    assert _opens_console(a, captured) and _opens_console(b, captured)
    token = csrf_of(client.get("/admin/").text)
    assert client.post("/admin/logout", data={"_csrf": token}).status_code == 303
    # The cookie captured before logout is dead at once, on the other replica too.
    assert not _opens_console(b, captured)
    assert not _opens_console(a, captured)


def test_set_password_ends_only_that_users_sessions(replicas, home, monkeypatch):
    a, b = replicas
    alice = _login(a, "alice").cookies["litegate_admin"]
    alice_2 = _login(b, "alice").cookies["litegate_admin"]
    bob = _login(a, "bob").cookies["litegate_admin"]
    out = _cli_with_stdin(
        monkeypatch, home, "second-password-2", "admin", "set-password", "alice", "--password-stdin"
    )
    assert "sessions were ended" in out
    for cookie in (alice, alice_2):
        assert not _opens_console(a, cookie) and not _opens_console(b, cookie)
    assert _opens_console(b, bob)
    _login(b, "alice", "second-password-2")  # the new password works


def test_end_sessions_cli_for_one_user_and_for_all(replicas, home):
    a, b = replicas
    alice = _login(a, "alice").cookies["litegate_admin"]
    bob = _login(b, "bob").cookies["litegate_admin"]
    code, out, _ = run_cli("admin", "end-sessions", "bob", home=home)
    assert code == 0 and "Ended 1 console session(s) of user 'bob'" in out
    assert not _opens_console(a, bob) and _opens_console(b, alice)
    code, out, _ = run_cli("admin", "end-sessions", home=home)
    assert code == 0 and "Ended 1 console session(s) of all users" in out
    assert not _opens_console(b, alice)
    code, _, err = run_cli("admin", "end-sessions", "nobody", home=home)
    assert code != 0 and "no admin user 'nobody'" in err


def test_console_password_change_ends_the_users_other_sessions(replicas):
    a, b = replicas
    other = _login(b, "alice").cookies["litegate_admin"]
    bob = _login(b, "bob").cookies["litegate_admin"]
    client = _login(a, "alice")
    token = csrf_of(client.get("/admin/account").text)
    wrong = client.post("/admin/account/password", data={
        "_csrf": token, "current_password": "not-it-at-all", "new_password": "second-password-2",
        "repeat_password": "second-password-2",
    })
    assert wrong.status_code == 400 and "wrong password" in wrong.text
    assert _opens_console(b, other)
    r = client.post("/admin/account/password", data={
        "_csrf": token, "current_password": PASSWORD, "new_password": "second-password-2",
        "repeat_password": "second-password-2",
    })
    assert r.status_code == 303 and r.headers["location"] == "/admin/account"
    assert not _opens_console(b, other) and not _opens_console(a, other)
    assert _opens_console(b, bob)
    # this browser got a new session and stays signed in
    page = client.get("/admin/account")
    assert page.status_code == 200 and "Every other session of yours was signed out" in page.text


def test_console_end_all_sessions_button(replicas):
    a, b = replicas
    bob = _login(b, "bob").cookies["litegate_admin"]
    client = _login(a, "alice")
    token = csrf_of(client.get("/admin/account").text)
    assert client.post("/admin/sessions/end-all", data={"_csrf": token}).status_code == 303
    assert not _opens_console(a, bob) and not _opens_console(b, bob)
    assert client.get("/admin/").status_code == 303  # this browser too


def test_admin_sessions_migration_up_and_down_on_sqlite(tmp_path):
    import sqlite3

    from litegate.db import migrate

    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"

    def tables() -> set[str]:
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    migrate.upgrade(url)
    assert "admin_sessions" in tables()
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(admin_sessions)")}
        indexes = {r[1] for r in db.execute("PRAGMA index_list(admin_sessions)")}
    assert columns == {"id_hash", "user_id", "created_at", "expires_at", "flash"}
    assert {"ix_admin_sessions_user_id", "ix_admin_sessions_expires_at"} <= indexes
    migrate.downgrade(url, "0002")
    assert "admin_sessions" not in tables() and "admin_users" in tables()
    migrate.upgrade(url)
    assert "admin_sessions" in tables()


def test_new_key_secret_flash_is_one_time_across_replicas(replicas):
    a, b = replicas
    client = _login(a, "alice")
    token = csrf_of(client.get("/admin/keys").text)
    r = client.post("/admin/keys", data={"_csrf": token, "name": "from-a"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/keys"
    cookie = client.cookies["litegate_admin"]
    # the redirect lands on the other replica: it shows the secret, once
    first = httpx.get(f"{b}/admin/keys", cookies={"litegate_admin": cookie}, timeout=10).text
    assert 'id="new-key-secret" value="lg-' in first
    again = httpx.get(f"{a}/admin/keys", cookies={"litegate_admin": cookie}, timeout=10).text
    assert "new-key-secret" not in again and again.count('data-key-name="from-a"') == 1


async def test_session_table_is_bounded_per_user_and_purged(tmp_path):
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from litegate.db.models import AdminSession
    from litegate.services import admin_sessions
    from tests.e2e.support import make_admin_gateway

    gw = await make_admin_gateway(tmp_path)  # user alice, id 1
    try:
        limit = admin_sessions.MAX_SESSIONS_PER_USER
        async with gw.sessionmaker() as s, s.begin():
            ids = [await admin_sessions.start(s, 1, max_age_s=3600) for _ in range(limit + 5)]
        async with gw.sessionmaker() as s:
            assert await s.scalar(select(func.count()).select_from(AdminSession)) == limit
            assert await admin_sessions.user_of(s, ids[0]) is None  # the oldest were ended
            assert await admin_sessions.user_of(s, ids[-1]) == (1, "alice")
        async with gw.sessionmaker() as s, s.begin():  # all of them expire...
            await s.execute(update(AdminSession).values(
                expires_at=AdminSession.expires_at - timedelta(hours=2)))
        async with gw.sessionmaker() as s:
            assert await admin_sessions.user_of(s, ids[-1]) is None
        async with gw.sessionmaker() as s, s.begin():  # ...and the next sign-in purges them
            await admin_sessions.start(s, 1, max_age_s=3600)
        async with gw.sessionmaker() as s:
            assert await s.scalar(select(func.count()).select_from(AdminSession)) == 1
    finally:
        await gw.engine.dispose()


async def test_unreadable_session_table_is_a_503_not_a_500(tmp_path):
    from litestar.testing import AsyncTestClient
    from sqlalchemy import text

    from tests.e2e.support import login, make_admin_gateway, make_app

    gw = await make_admin_gateway(tmp_path)
    app, _ = make_app(gw)
    try:
        async with AsyncTestClient(app) as client:
            assert (await login(client)).status_code == 303
            async with gw.engine.begin() as conn:  # e.g. a database one migration behind
                await conn.execute(text("DROP TABLE admin_sessions"))
            r = await client.get("/admin/", headers={"Accept": "application/json"})
            assert r.status_code == 503 and "litegate db upgrade" in r.text
            assert "Traceback" not in r.text
    finally:
        await gw.engine.dispose()
