"""Rolling in-memory traffic statistics for the admin dashboard.

Fixed-width time buckets per (route, variant); each keeps counts and a small
latency histogram, so p50/p99 per bucket cost O(1) memory.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from litegate.policies.key_usage import KeyUsage

# Latency histogram edges in ms (log-ish); the last bucket is open-ended.
EDGES_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)


@dataclass(slots=True)
class Bucket:
    start: int
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    limited: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(EDGES_MS) + 1))

    def quantile_ms(self, q: float) -> float | None:
        if not self.requests:
            return None
        target = q * self.requests
        seen = 0
        for i, n in enumerate(self.latency):
            seen += n
            if seen >= target:
                return float(EDGES_MS[i]) if i < len(EDGES_MS) else float(EDGES_MS[-1])
        return float(EDGES_MS[-1])


class Stats:
    def __init__(self, *, bucket_s: int = 10, keep: int = 360, max_series: int = 2_000) -> None:
        self.bucket_s = bucket_s
        self.keep = keep
        self.max_series = max_series
        """Bound on (route, variant) series; names are configured ones, but configurations
        churn: past it the series idle the longest is dropped."""
        self._series: dict[tuple[str, str], deque[Bucket]] = {}
        self.keys = KeyUsage()  # per-API-key hourly usage (the console's key page)
        self.shares: dict[str, dict[str, Any]] = {}
        """Route -> its A/B shares now in force (``Bandit.describe``); configured routes only."""

    def record(
        self,
        route: str | None,
        variant: str | None,
        status: int,
        latency_s: float,
        cache: str | None,
    ) -> None:
        key = (route or "-", variant or "-")
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                idle = min(self._series, key=lambda k: self._series[k][-1].start)
                del self._series[idle]
            series = self._series[key] = deque(maxlen=self.keep)
        start = int(time.time()) // self.bucket_s * self.bucket_s
        if not series or series[-1].start != start:
            series.append(Bucket(start))
        b = series[-1]
        b.requests += 1
        if status >= 500 or status == 0:
            b.errors += 1
        if status == 429:
            b.limited += 1
        if cache in ("HIT", "SEMANTIC-HIT"):
            b.cache_hits += 1
        elif cache == "MISS":
            b.cache_misses += 1
        b.latency[bisect.bisect_left(EDGES_MS, latency_s * 1000.0)] += 1

    def series(self, bucket_s: int = 10, buckets: int = 60) -> dict[str, Any]:
        """Per route and per variant: ``[{t, requests, errors, p50_ms, p99_ms, ...}]``.

        ``bucket_s`` must be a multiple of the recording bucket width.
        """
        bucket_s = max(self.bucket_s, bucket_s // self.bucket_s * self.bucket_s)
        now = int(time.time()) // bucket_s * bucket_s
        starts = [now - bucket_s * i for i in range(buckets - 1, -1, -1)]
        routes: dict[str, dict[int, Bucket]] = {}
        variants: dict[str, dict[int, Bucket]] = {}
        for (route, variant), series in self._series.items():
            for b in series:
                t = b.start // bucket_s * bucket_s
                if t < starts[0]:
                    continue
                for table, name in ((routes, route), (variants, f"{route}/{variant}")):
                    agg = table.setdefault(name, {}).setdefault(t, Bucket(t))
                    agg.requests += b.requests
                    agg.errors += b.errors
                    agg.cache_hits += b.cache_hits
                    agg.cache_misses += b.cache_misses
                    agg.limited += b.limited
                    for i, n in enumerate(b.latency):
                        agg.latency[i] += n

        def rows(table: dict[str, dict[int, Bucket]]) -> dict[str, list[dict[str, Any]]]:
            out = {}
            for name, by_t in sorted(table.items()):
                out[name] = [
                    {
                        "t": t,
                        "requests": (b := by_t.get(t, Bucket(t))).requests,
                        "errors": b.errors,
                        "p50_ms": b.quantile_ms(0.5),
                        "p99_ms": b.quantile_ms(0.99),
                        "cache_hits": b.cache_hits,
                        "cache_misses": b.cache_misses,
                        "limited": b.limited,
                    }
                    for t in starts
                ]
            return out

        return {"bucket_s": bucket_s, "starts": starts, "routes": rows(routes), "variants": rows(variants)}

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (route, variant), series in self._series.items():
            t = out.setdefault(f"{route}/{variant}", {"requests": 0, "errors": 0})
            for b in series:
                t["requests"] += b.requests
                t["errors"] += b.errors
        return out
