"""Request limits on Redis in one round trip per request (issue #13, scaling): the same
decisions and headers as ``limits``' own sliding-window-counter calls, on a real
redis-server, and one script call per request instead of two calls per check."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import redis as redis_client
from limits import parse

from litegate.errors import RateLimited
from litegate.policies.limiting import Limiter, _check
from tests.helpers.servers import free_port
from tests.helpers.services import redis_server
from tests.helpers.windows import clear_of_minute_edge


async def _run(limiter: Limiter, key_id: str, hits: int) -> list[object]:
    """Each hit's outcome: the rate headers it got, or the limit that refused it."""
    key_rate, route_rate = parse("5/minute"), parse("3/minute")
    checks = [_check(key_rate, "litegate", "req", key_id, "*"),
              _check(route_rate, "litegate", "req", key_id, "chat")]

    clear_of_minute_edge()  # exact counts: not across a window boundary
    out: list[object] = []
    for _ in range(hits):
        try:
            headers = dict(await limiter.hit(checks))
            out.append((headers[b"x-ratelimit-limit"], headers[b"x-ratelimit-remaining"]))
        except RateLimited as exc:
            out.append(("429", exc.headers["X-RateLimit-Limit"]))
    return out


def _evalsha_calls(url: str) -> int:
    stats = redis_client.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_round_trip_gives_limits_own_decisions_and_headers() -> None:
    with redis_server() as url:
        asyncio.run(_compare(url))


def _limiters(url: str) -> tuple[Limiter, Limiter]:
    """Two limiters on one Redis: litegate's scripts, and one whose caller turns them off
    to compare with limits' own calls."""
    return tuple(Limiter(storage="async+" + url, strategy="sliding-window-counter",  # type: ignore[return-value]
                         fail_open=False) for _ in range(2))


async def _compare(url: str) -> None:
    fast, plain = _limiters(url)
    assert fast.windows is not None
    plain.windows = None  # limits' own calls: a hit and a window read per check
    await _run(fast, "0", 1)
    await _run(plain, "0", 1)  # both load their scripts into Redis (NOSCRIPT, then EVAL)
    before = _evalsha_calls(url)
    got = await _run(fast, "1", 6)
    assert _evalsha_calls(url) - before == 6  # one script call per request
    before = _evalsha_calls(url)
    expected = await _run(plain, "2", 6)
    assert _evalsha_calls(url) - before > 6 * 2
    assert got == expected
    # The route's 3/minute is the tighter one and refuses the 4th and 5th requests;
    # the key's 5/minute, checked first, counted them, so it refuses the 6th.
    assert got == [(b"3", b"2"), (b"3", b"1"), (b"3", b"0"),
                   ("429", "3"), ("429", "3"), ("429", "5")]


def test_fixed_window_and_local_storage_keep_their_own_paths() -> None:
    assert Limiter(storage="async+local://", strategy="sliding-window-counter",
                   fail_open=True).windows is None
    with redis_server() as url:
        assert Limiter(storage="async+" + url, strategy="fixed-window",
                       fail_open=True).windows is None


def test_the_limiter_uses_the_redis_client_the_caches_use() -> None:
    """One Redis library per process: redis-py (the caches'), not limits' default coredis
    (+30 MiB per worker)."""
    with redis_server() as url:
        limiter = Limiter(storage="async+" + url, strategy="sliding-window-counter",
                          fail_open=False)
        assert type(limiter.storage.bridge).__name__ == "RedispyBridge"
        assert asyncio.run(_run(limiter, "7", 1)) == [(b"3", b"2")]
        code = ("import sys; from litegate.policies.limiting import Limiter; "
                f"Limiter(storage='async+{url}', strategy='sliding-window-counter', "
                "fail_open=False); "
                "print(sorted(m for m in ('coredis', 'valkey', 'redis') if m in sys.modules))")
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, check=True)
        assert loaded.stdout.split() == ["['redis']"], loaded


def test_a_requests_usage_and_spend_are_one_script_call_on_redis() -> None:
    """Spend on Redis: the usage counters and the budget counter of one request in one
    call, with the same totals, expiry and once-per-period alert as counter by counter."""
    from structlog.testing import capture_logs

    from litegate.policies.spend import RETENTION_DAYS, Spend
    from litegate.snapshot import KeySpec, UpstreamSpec, VariantSpec, build_budget

    variant = VariantSpec("v", UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0),
                          "m", 1, 150, 600)
    key = KeySpec(id=7, name="k", routes=None, is_admin=False, expires_at=None,
                  budget=build_budget(0.00001, "1d", 0.8))  # 10_000 nano-USD

    async def main(url: str) -> None:
        limiter = Limiter(storage="async+" + url, strategy="sliding-window-counter",
                          fail_open=False)
        spend = Spend(limiter.storage)
        t = time.time()
        await spend.record(key, "chat", variant, 5, 7, now=t)  # loads the script
        before = _evalsha_calls(url)
        with capture_logs() as logs:
            for _ in range(2):
                await spend.record(key, "chat", variant, 5, 7, now=t)
        assert _evalsha_calls(url) - before == 2
        assert [e["event"] for e in logs].count("budget_alert") == 1  # 9_900 crosses 8_000
        assert await spend.spent_nano(key, now=t) == 3 * 4_950
        day = int(t // 86_400)
        usage = f"litegate/usage/{day}/7/chat/v"
        assert [int(await limiter.storage.get(f"{usage}/{f}")) for f in
                ("requests", "prompt_tokens", "completion_tokens")] == [3, 15, 21]
        ttl = redis_client.Redis.from_url(url).ttl(f"LIMITS:{usage}/requests")
        # the usage retention, set on the new counter
        assert RETENTION_DAYS * 86_400 - 120 < ttl <= RETENTION_DAYS * 86_400

    with redis_server() as url:
        asyncio.run(main(url))


def test_token_quotas_read_and_count_in_one_script_call_each() -> None:
    """Token quotas on Redis: a request's windows are read in one call and its tokens
    added in one, with the decisions of limits' own fixed-window calls (a GET and a TTL
    per check to read, a call per check to add)."""
    with redis_server() as url:
        asyncio.run(_compare_tokens(url))


async def _compare_tokens(url: str) -> None:
    fast, plain = _limiters(url)
    assert fast.scripts is not None
    plain.scripts = None  # limits' own calls

    async def run(limiter: Limiter, key_id: str) -> list[object]:
        checks = [_check(parse("100/hour"), "litegate", "tok", key_id, "*"),
                  _check(parse("50/hour"), "litegate", "tok", key_id, "chat")]
        out: list[object] = []
        for tokens in (30, 30, 30):
            try:
                await limiter.check_tokens(checks)
                out.append("ok")
            except RateLimited as exc:
                out.append((exc.code, exc.headers["X-RateLimit-Limit"],
                            int(exc.headers["X-RateLimit-Reset"]) - int(time.time())))
            await limiter.add_tokens(checks, tokens)
        return out

    calls: list[str] = []
    run_script = fast.scripts.run

    async def counted(source: str, keys: list[str], args: list[int]) -> object:
        calls.append(source)
        return await run_script(source, keys, args)

    fast.scripts.run = counted  # type: ignore[method-assign]
    fast.tokens = None  # type: ignore[assignment]  # limits' own calls would fail now
    got = await run(fast, "t1")
    assert len(calls) == 6  # 3 reads + 3 adds of two checks each
    expected = await run(plain, "t2")
    # 30 then 60 of the route's 50: the third request is refused by the route's quota,
    # its window reset within the hour.
    assert got[:2] == expected[:2] == ["ok", "ok"]
    assert got[2][:2] == expected[2][:2] == ("token_quota_exceeded", "50")  # type: ignore[index]
    assert abs(got[2][2] - expected[2][2]) <= 1 and 3590 <= got[2][2] <= 3600  # type: ignore[index]
    counted = redis_client.Redis.from_url(url)
    assert int(counted.get("LIMITS:" + parse("100/hour").key_for("litegate", "tok", "t1", "*"))) == 90
    assert counted.get("LIMITS:" + parse("100/hour").key_for("litegate", "tok", "t1", "*")) == \
        counted.get("LIMITS:" + parse("100/hour").key_for("litegate", "tok", "t2", "*"))


def test_the_usage_of_requests_that_finish_together_is_one_script_call() -> None:
    """Usage on Redis is batched per loop step (at most MAX_BATCH requests a call):
    the same totals, and the budget alert still fires exactly once, from the request
    that moves the shared counter across it."""
    from structlog.testing import capture_logs

    from litegate.policies.spend import MAX_BATCH, Spend
    from litegate.snapshot import KeySpec, UpstreamSpec, VariantSpec, build_budget

    variant = VariantSpec("v", UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0),
                          "m", 1, 150, 600)
    key = KeySpec(id=8, name="k", routes=None, is_admin=False, expires_at=None,
                  budget=build_budget(0.001, "1d", 0.5))  # alert at 500_000 nano-USD
    finishing = MAX_BATCH + 44

    async def main(url: str) -> None:
        limiter = _limiters(url)[0]
        spend = Spend(limiter.storage, scripts=limiter.scripts)
        assert spend.scripts is not None
        calls: list[int] = []
        run_script = spend.scripts.run

        async def counted(source: str, keys: list[str], args: list[int]) -> object:
            calls.append(len(keys))
            return await run_script(source, keys, args)

        spend.scripts.run = counted  # type: ignore[method-assign]
        t = time.time()
        with capture_logs() as logs:
            # 300 requests finish in one loop step; each costs 4_950 nano-USD (5 × 150 +
            # 7 × 600), so the 102nd (504_900) crosses the alert threshold, inside a call.
            costs = [spend.record_nowait(key, "chat", variant, 5, 7, now=t)
                     for _ in range(finishing)]
            assert calls == []  # nothing written yet: at the end of the step
            await spend.drain()
        assert costs == [4_950] * finishing
        assert calls == [MAX_BATCH * 5, 44 * 5]  # 4 usage counters + the budget each
        assert [e["event"] for e in logs].count("budget_alert") == 1
        assert await spend.spent_nano(key, now=t) == finishing * 4_950
        day = int(t // 86_400)
        assert int(await limiter.storage.get(f"litegate/usage/{day}/8/chat/v/requests")) \
            == finishing

    async def down_then_up(port: int) -> None:
        limiter = _limiters(f"redis://127.0.0.1:{port}/0")[0]
        spend = Spend(limiter.storage, scripts=limiter.scripts)
        with capture_logs() as logs:
            for _ in range(2):  # two loop steps, two failed batches: one warning
                assert [spend.record_nowait(key, "chat", variant, 5, 7) for _ in range(3)] \
                    == [4_950] * 3  # never raises: the response is already sent
                await spend.drain()
        assert [(e["event"], e["requests"]) for e in logs] == [("spend_not_recorded", 3)]
        assert spend.lost == 6
        with redis_server(port=port):
            await asyncio.sleep(0.6)  # past the pause after a failed connect
            with capture_logs() as logs:
                spend.record_nowait(key, "chat", variant, 5, 7)
                await spend.drain()
        assert [(e["event"], e["lost_requests"]) for e in logs] == [("spend_recorded_again", 6)]
        assert spend.lost == 0

    with redis_server() as url:
        asyncio.run(main(url))
    asyncio.run(down_then_up(free_port()))
