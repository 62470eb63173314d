"""Memory stays bounded under churn (LiteLLM's proxy grows until OOM): unique request
bodies, many keys and many limit counters must not grow the process without bound."""

from __future__ import annotations

import asyncio
import gc

import httpx

from litegate.app import create_app
from litegate.db import migrate
from litegate.settings import Settings
from tests.helpers.cli import apply_config, chat_config, create_key


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_cache_limits_and_metrics_stay_bounded_under_unique_traffic(home, fake_upstream):
    apply_config(home, chat_config(fake_upstream.base_url, cache={"ttl_s": 600}, limits=["1000000/hour"]))
    keys = [create_key(home, f"k{i}") for i in range(5)]
    settings = Settings.load(home=home, cache_max_entries=200, cache_max_bytes=256 * 1024, access_log=False)
    migrate.upgrade(settings.db_url)
    app = create_app(settings)

    async def burst(client: httpx.AsyncClient, start: int, n: int) -> None:
        for i in range(start, start + n):
            r = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                json={"model": "chat", "messages": [{"role": "user", "content": f"unique {i} " * 20}]},
            )
            assert r.status_code == 200

    async def main() -> tuple[float, float]:
        await app.gateway.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                await burst(c, 0, 600)  # warm up allocators and caches
                gc.collect()
                before = rss_mb()
                await burst(c, 600, 2400)
                gc.collect()
                return before, rss_mb()
        finally:
            await app.gateway.stop()

    before, after = asyncio.run(main())
    cache = app.gateway.cache
    assert len(cache) <= 200 and cache.size_bytes <= 256 * 1024
    assert len(fake_upstream.calls) == 3000  # every body was unique: all misses
    # 2,400 more unique requests must not keep growing the process.
    assert after - before < 15, (before, after)
