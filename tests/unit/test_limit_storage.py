"""The in-process storage counts exactly like limits' own strategies."""

from __future__ import annotations

import asyncio

import pytest
from limits import parse
from limits.aio.strategies import STRATEGIES
from limits.storage import storage_from_string

from litegate.errors import RateLimited
from litegate.policies.limit_storage import LocalStorage
from litegate.policies.limiting import Limiter, _check


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_fast_path_matches_limits_strategy(strategy):
    item = parse("5/minute")
    reference = STRATEGIES[strategy](storage_from_string("async+memory://"))
    local = LocalStorage()

    async def run() -> tuple[list[tuple[bool, int]], list[tuple[bool, int]]]:
        ref, fast = [], []
        for _ in range(8):
            allowed = await reference.hit(item, "k")
            stats = await reference.get_window_stats(item, "k")
            ref.append((allowed, stats.remaining))
            ok, remaining, _reset = local.hit_now(strategy, item.key_for("k"), item.amount, item.get_expiry())
            fast.append((ok, remaining))
        return ref, fast

    ref, fast = asyncio.run(run())
    assert fast == ref
    assert [a for a, _ in fast] == [True] * 5 + [False] * 3


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_local_storage_also_serves_limits_own_strategies(strategy):
    storage = LocalStorage()
    limiter = STRATEGIES[strategy](storage)
    item = parse("2/second")

    async def run() -> list[bool]:
        return [await limiter.hit(item, "a") for _ in range(3)]

    assert asyncio.run(run()) == [True, True, False]


def test_limiter_reports_tightest_limit_and_raises_429():
    limiter = Limiter(storage="async+local://", strategy="moving-window", fail_open=True)
    checks = [_check(parse("10/minute"), "a"), _check(parse("3/minute"), "b")]

    async def run() -> list[object]:
        out: list[object] = []
        for _ in range(4):
            try:
                out.append(dict(await limiter.hit(checks)))
            except RateLimited as exc:
                out.append(exc)
        return out

    first, second, third, fourth = asyncio.run(run())
    assert first[b"x-ratelimit-limit"] == b"3" and first[b"x-ratelimit-remaining"] == b"2"
    assert third[b"x-ratelimit-remaining"] == b"0"
    assert isinstance(fourth, RateLimited) and fourth.headers["X-RateLimit-Limit"] == "3"
    assert int(fourth.headers["Retry-After"]) >= 1


def test_local_storage_sweeps_expired_keys():
    storage = LocalStorage()
    asyncio.run(storage.incr("gone", expiry=0))
    for i in range(10_000):
        storage.hit_now("fixed-window", f"k{i % 3}", 10**9, 60)
    assert "gone" not in storage._counters
