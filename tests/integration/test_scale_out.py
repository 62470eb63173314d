"""Shared state: PostgreSQL for config, Redis for one global quota across replicas."""

from __future__ import annotations

import time

import httpx
import pytest

from litegate.db import migrate
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.services import postgres_server, redis_server
from tests.helpers.windows import clear_of_minute_edge


def post(url, key):
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )


def test_migrations_on_postgresql_and_two_replicas_share_one_quota(home, tmp_path, fake_upstream, make_gateway):
    with postgres_server() as pg, redis_server() as redis:
        db = ("--db", pg)
        code, out, err = run_cli("db", "upgrade", home=home, extra=db)
        assert code == 0, err
        assert "(head)" in run_cli("db", "current", home=home, extra=db)[1]
        assert run_cli("db", "downgrade", "base", home=home, extra=db)[0] == 0
        assert run_cli("db", "upgrade", home=home, extra=db)[0] == 0
        assert apply_config(home, chat_config(fake_upstream.base_url, limits=["6/minute"]), tmp_path, extra=db)[0] == 0
        key = create_key(home, "shared", extra=db)
        a = make_gateway(db=pg, redis=redis)
        b = make_gateway(db=pg, redis=redis)
        clear_of_minute_edge()  # exact counts: not across a window boundary
        statuses = [post(server.url, key).status_code for _ in range(5) for server in (a, b)]
        assert statuses.count(200) == 6 and statuses.count(429) == 4, statuses
        # A change made through one database reaches both replicas within a second.
        run_cli("keys", "revoke", "1", home=home, extra=db)
        deadline = time.time() + 1.5
        while time.time() < deadline and {post(s.url, key).status_code for s in (a, b)} != {401}:
            time.sleep(0.05)
        assert {post(s.url, key).status_code for s in (a, b)} == {401}


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_is_fail_open_or_fail_closed(home, fake_upstream, make_gateway, fail_open):
    with redis_server() as redis:
        pass  # started and stopped: the port is now closed
    apply_config(home, chat_config(fake_upstream.base_url, limits=["100/minute"]))
    key = create_key(home)
    server = make_gateway(redis=redis, limit_fail_open=fail_open)
    r = post(server.url, key)
    if fail_open:
        assert r.status_code == 200
    else:
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert r.headers["retry-after"] == "1"


def test_sqlite_migrations_down_and_up(home):
    from litegate.settings import Settings

    url = Settings.load(home=home).db_url
    migrate.upgrade(url)
    assert "(head)" in migrate.current(url)
    migrate.downgrade(url, "base")
    assert migrate.current(url) == ""
    migrate.upgrade(url)
    assert "(head)" in migrate.current(url)


def test_sqlite_head_check_without_alembic(home):
    from litegate.settings import Settings

    url = Settings.load(home=home).db_url
    assert migrate.sqlite_is_current(url) is False  # no file yet
    migrate.upgrade(url, "0001")
    assert migrate.sqlite_is_current(url) is False
    migrate.upgrade_if_needed(url)
    assert migrate.sqlite_is_current(url) is True
    assert migrate.current(url).startswith(migrate.head_revision())


def test_token_quota_is_global_across_replicas_with_redis(home, fake_upstream, make_gateway):
    with redis_server() as redis:
        apply_config(home, chat_config(fake_upstream.base_url))
        key = create_key(home, "tok", "--token-limit", "30/hour")
        a = make_gateway(redis=redis)
        b = make_gateway(redis=redis)
        # Each completion reports 12 tokens: 0 -> 12 -> 24 -> 36 used; the 4th is refused
        # even though each replica alone has only seen half of the usage.
        statuses = [post(s.url, key).status_code for s in (a, b, a, b)]
        assert statuses == [200, 200, 200, 429], statuses


def test_redis_cache_is_shared_by_replicas_and_survives_redis_loss(home, fake_upstream, make_gateway):
    with redis_server() as redis:
        apply_config(home, chat_config(fake_upstream.base_url, cache={"ttl_s": 60}))
        key = create_key(home)
        a = make_gateway(redis=redis)
        b = make_gateway(redis=redis)
        first = post(a.url, key)
        second = post(b.url, key)
        assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
        assert second.json() == first.json() and len(fake_upstream.calls) == 1
        assert second.headers["x-litegate-variant"] == "small-model"
    # Redis is gone: the cache degrades to misses, requests still succeed.
    r = post(a.url, key)
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
