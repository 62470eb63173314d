"""Client CPU per Redis operation of a replica, now and before (#13 round six), side by
side in one run, in-process, with 64 concurrent callers on uvloop and a throwaway
redis-server: litegate's pipelined connection (``litegate/redis_wire.py``) against
redis-py (limits' own calls), and usage batched per loop step against a call each.

Rows: a request's limits (one script call), its token quotas (read, then count; one
check), its usage and spend (batched per loop step, against one shielded call per
request, both over redis_wire), a hit of the shared response cache. CPU = this process's CPU time ÷ operations
(redis-server's own CPU is not counted); the median of 5 rounds.

Run: ``.venv/bin/python bench/redis_client.py``
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from limits import parse  # noqa: E402

from litegate.policies.caching import RedisResponseCache  # noqa: E402
from litegate.policies.limiting import Limiter, _check  # noqa: E402

CALLERS, ROUNDS, PER_CALLER = 64, 5, 300


async def cpu_per_op(op: Callable[[], Awaitable[object]]) -> float:
    async def caller(n: int) -> None:
        for _ in range(n):
            await op()

    await asyncio.gather(*(caller(50) for _ in range(CALLERS)))  # warm: connect, load scripts
    rounds = []
    for _ in range(ROUNDS):
        cpu = time.process_time()
        await asyncio.gather(*(caller(PER_CALLER) for _ in range(CALLERS)))
        rounds.append((time.process_time() - cpu) / (CALLERS * PER_CALLER) * 1e6)
    return statistics.median(rounds)


async def measure(url: str) -> list[tuple[str, float, float]]:
    import redis.asyncio as aioredis

    rows = []
    limiters = {}
    for wire in (True, False):
        limiter = Limiter(storage="async+" + url, strategy="sliding-window-counter",
                          fail_open=False)
        if not wire:  # limits' own client calls
            limiter.scripts = None
            assert limiter.windows is not None
            limiter.windows._scripts.wire = None  # the same script, through redis-py
        limiters[wire] = limiter
    requests = [_check(parse("1000000000/minute"), "litegate", "req", "bench", "*")]
    tokens = [_check(parse("1000000000/hour"), "litegate", "tok", "bench", "*")]

    def limits_op(limiter: Limiter) -> Callable[[], Awaitable[object]]:
        return lambda: limiter.hit(requests)

    def tokens_op(limiter: Limiter) -> Callable[[], Awaitable[object]]:
        async def op() -> None:
            await limiter.check_tokens(tokens)
            await limiter.add_tokens(tokens, 10)
        return op

    for name, make in (("a request's limits, one script call (redis-py → redis_wire)", limits_op),
                       ("token quotas: read, then count, one check (limits' redis-py calls → "
                        "two script calls on redis_wire)", tokens_op)):
        rows.append((name, await cpu_per_op(make(limiters[True])),
                     await cpu_per_op(make(limiters[False]))))

    from litegate.policies.spend import Spend
    from litegate.snapshot import KeySpec, UpstreamSpec, VariantSpec

    spend = Spend(limiters[True].storage, scripts=limiters[True].scripts)
    variant = VariantSpec("v", UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0),
                          "m", 1, 150, 600)
    key = KeySpec(id=1, name="bench", routes=None, is_admin=False, expires_at=None)

    async def batched() -> None:  # what a request does now: no await, written per step
        spend.record_nowait(key, "chat", variant, 5, 7)
        await asyncio.sleep(0)

    async def one_call_each() -> None:  # before: a shielded script call per request
        incrs, _, _ = spend._usage_incrs(key, "chat", variant, 5, 7, time.time())
        await asyncio.shield(spend._incr_many(incrs))

    new = await cpu_per_op(batched)
    await spend.drain()
    rows.append(("a request's usage and spend (one shielded call each → batched per loop "
                 "step; both redis_wire)",
                 new, await cpu_per_op(one_call_each)))

    caches = []
    for wire in (True, False):
        cache = RedisResponseCache(url, max_bytes=1 << 20)
        if not wire:
            cache.wire, cache.redis = None, aioredis.Redis.from_url(
                url, socket_timeout=0.5, socket_connect_timeout=0.5)
        await cache.store("bench", status=200, headers=((b"content-type", b"application/json"),),
                          body=b"x" * 500, variant="v", ttl_s=600)
        caches.append(cache)

    def hit(cache: RedisResponseCache) -> Callable[[], Awaitable[object]]:
        async def op() -> None:
            assert await cache.lookup("bench") is not None
        return op

    rows.append(("a response cache hit, 500-byte body (redis-py → redis_wire)", await cpu_per_op(hit(caches[0])),
                 await cpu_per_op(hit(caches[1]))))
    for cache in caches:
        await cache.close()
    return rows


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not on PATH (make test installs it)", file=sys.stderr)
        return 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        import uvloop

        rows = uvloop.run(measure(f"redis://127.0.0.1:{port}/0"))
    finally:
        server.terminate()
        server.wait(10)
    print(f"| operation ({CALLERS} concurrent callers; before → now) | now µs | before µs | ratio |")
    print("|---|--:|--:|--:|")
    for name, wire, plain in rows:
        print(f"| {name} | {wire:.1f} | {plain:.1f} | {plain / wire:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
