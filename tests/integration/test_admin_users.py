"""Console users: scrypt hashes, constant-time verification, login throttling, the CLI."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from litegate.cli import main
from litegate.db.engine import make_engine, make_sessionmaker
from litegate.db.models import AdminUser, AuditEntry
from litegate.errors import BadRequest, Conflict
from litegate.services import users
from tests.e2e.support import make_admin_gateway


def test_hash_format_and_verify():
    stored = users.hash_password("s3cret-password")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert users.verify_password("s3cret-password", stored)
    assert not users.verify_password("s3cret-passwore", stored)
    assert users.hash_password("s3cret-password") != stored  # random salt
    for broken in ("", "plain", "scrypt$x$y$z$a$b", "bcrypt$1$2$3$4$5"):
        assert not users.verify_password("s3cret-password", broken)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_per_user_and_ip():
    clock = FakeClock()
    t = users.LoginThrottle(max_failures=3, window_s=60, clock=clock)
    for _ in range(3):
        assert t.retry_after("alice", "1.1.1.1") == 0
        t.failure("alice", "1.1.1.1")
    assert t.retry_after("alice", "1.1.1.1") == pytest.approx(60)
    assert t.retry_after("ALICE", "1.1.1.1") > 0  # usernames are case-folded
    assert t.retry_after("alice", "2.2.2.2") == 0  # another IP
    assert t.retry_after("bob", "1.1.1.1") == 0  # another user
    clock.now += 30
    assert t.retry_after("alice", "1.1.1.1") == pytest.approx(30)
    clock.now += 31
    assert t.retry_after("alice", "1.1.1.1") == 0
    t.failure("alice", "1.1.1.1")
    t.success("alice", "1.1.1.1")
    assert t._failures == {}


def test_throttle_memory_is_bounded():
    t = users.LoginThrottle(max_entries=10, max_locked=10)
    for i in range(100):
        t.failure(f"user{i}", "ip")
    assert len(t._failures) <= 10
    for i in range(100):
        for _ in range(5):
            t.failure(f"locked{i}", "ip")
    assert len(t._failures) <= 10 and len(t._locked) <= 10 and len(t._expiries) <= 10


def test_throttle_lock_survives_a_flood_of_other_usernames():
    """Before: 10,000 failures for other names evicted the lock on ``admin``."""
    clock = FakeClock()
    t = users.LoginThrottle(clock=clock)
    for _ in range(5):
        t.failure("admin", "6.6.6.6")
    assert t.retry_after("admin", "6.6.6.6") == pytest.approx(300)
    for i in range(25_000):  # one failure each for 25,000 other names, same attacker
        t.failure(f"spray-{i}", "6.6.6.6")
        clock.now += 0.001
    for i in range(200):  # and some other names pushed to a lock of their own
        for _ in range(5):
            t.failure(f"locked-{i}", "7.7.7.7")
    assert t.retry_after("admin", "6.6.6.6") > 250
    assert len(t._failures) <= t.max_entries and len(t._locked) <= t.max_locked
    clock.now += 300
    assert t.retry_after("admin", "6.6.6.6") == 0  # locks still expire on time


def test_throttle_fails_closed_when_the_lock_table_is_full():
    clock = FakeClock()
    t = users.LoginThrottle(max_failures=2, window_s=60, max_locked=3, clock=clock)
    for _ in range(2):
        t.failure("admin", "ip")
    for name in ("x", "y", "z"):
        clock.now += 1
        for _ in range(2):
            t.failure(name, "ip")
    # 3 locks (admin, x, y) fill the table: admin's is kept, and neither z (which
    # could not get a slot) nor a fresh pair slips through until a lock expires
    assert t.retry_after("admin", "ip") == pytest.approx(57)
    assert t.retry_after("y", "ip") == pytest.approx(59)
    assert t.retry_after("z", "ip") == pytest.approx(57)
    assert t.retry_after("fresh", "ip") == pytest.approx(57)
    clock.now += 57.5  # admin's lock expires and frees a slot
    assert t.retry_after("fresh", "ip") == 0 and t.retry_after("admin", "ip") == 0
    assert t.retry_after("z", "ip") == pytest.approx(2.5)  # its own failures still count


async def test_create_authenticate_and_audit(tmp_path):
    gw = await make_admin_gateway(tmp_path)  # creates alice
    try:
        async with gw.sessionmaker() as s, s.begin():
            with pytest.raises(Conflict):
                await users.create_user(s, "alice", "another-password")
        async with gw.sessionmaker() as s, s.begin():
            with pytest.raises(BadRequest):
                await users.create_user(s, "bob", "short")
        async with gw.sessionmaker() as s, s.begin():
            with pytest.raises(BadRequest):
                await users.create_user(s, "bad name!", "long-enough-1")
        async with gw.sessionmaker() as s:
            assert await users.authenticate(s, "alice", "wrong-password") is None
            assert await users.authenticate(s, "nobody", "wrong-password") is None
            user = await users.authenticate(s, "alice", "correct horse battery")
            assert user is not None and user.last_login_at is not None
        async with gw.sessionmaker() as s:
            entry = await s.scalar(select(AuditEntry).where(AuditEntry.entity_type == "admin_user"))
            assert entry.entity_name == "alice" and "password" not in str(entry.after)
        async with gw.sessionmaker() as s, s.begin():
            assert await users.ensure_demo_user(s) is None  # users exist already
    finally:
        await gw.engine.dispose()


def test_cli_create_user(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["--home", str(home), "admin", "create-user", "carol", "--password-stdin"]) == 0
    assert "Created admin user 'carol'" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["--home", str(home), "admin", "create-user", "carol", "--password-stdin"]) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["--home", str(home), "admin", "create-user", "dave", "--password-stdin"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("new-long-password\n"))
    assert main(["--home", str(home), "admin", "set-password", "carol", "--password-stdin"]) == 0

    async def check() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{(home / 'litegate.db').resolve()}")
        try:
            async with make_sessionmaker(engine)() as s:
                user = await s.scalar(select(AdminUser).where(AdminUser.username == "carol"))
                assert users.verify_password("new-long-password", user.password_hash)
                actors = set(await s.scalars(select(AuditEntry.actor)))
                assert all(a.startswith("cli:") for a in actors)
        finally:
            await engine.dispose()

    import asyncio

    asyncio.run(check())


def test_cli_prompts_with_getpass(tmp_path, monkeypatch):
    answers = iter(["prompted-password", "prompted-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["--home", str(tmp_path / "h"), "admin", "create-user", "erin"]) == 0
    answers = iter(["one-password-1", "two-password-2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["--home", str(tmp_path / "h"), "admin", "create-user", "frank"]) == 2


async def test_login_lock_survives_a_username_flood_over_http(tmp_path):
    """Through the console: the lock on alice holds after more failed logins for other
    names than the throttle keeps counters for."""
    from litestar.testing import AsyncTestClient

    from tests.e2e.support import ADMIN_PASSWORD, ADMIN_USER, login, make_app

    gw = await make_admin_gateway(tmp_path)
    app, _ = make_app(gw, throttle=users.LoginThrottle(max_entries=8))
    try:
        async with AsyncTestClient(app) as client:
            for _ in range(5):
                assert (await login(client, ADMIN_USER, "wrong-password")).status_code == 401
            for i in range(24):
                assert (await login(client, f"spray-{i}", "wrong-password")).status_code == 401
            r = await login(client, ADMIN_USER, ADMIN_PASSWORD)
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 200
    finally:
        await gw.engine.dispose()
