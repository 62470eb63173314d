"""Per-API-key usage for the console: requests, errors and tokens per hour.

Fed from what the metrics middleware already knows at the end of each request
(the authenticated key, the status, the tokens counted for quotas). Keys are
database rows, never client text, and both dimensions are bounded: at most
``max_keys`` keys (the least recently used is dropped) and ``hours`` hourly
buckets each. Counts are per process, like the dashboard's stats.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(slots=True)
class Hour:
    start: int
    requests: int = 0
    errors: int = 0
    limited: int = 0
    tokens: int = 0


class KeyUsage:
    def __init__(self, *, hours: int = 24, max_keys: int = 10_000) -> None:
        self.hours = hours
        self.max_keys = max_keys
        self._keys: OrderedDict[int, deque[Hour]] = OrderedDict()

    def record(self, key_id: int, status: int, tokens: int, *, now: float | None = None) -> None:
        start = int(now if now is not None else time.time()) // 3600 * 3600
        series = self._keys.get(key_id)
        if series is None:
            if len(self._keys) >= self.max_keys:
                self._keys.popitem(last=False)
            series = self._keys[key_id] = deque(maxlen=self.hours)
        else:
            self._keys.move_to_end(key_id)
        if not series or series[-1].start != start:
            series.append(Hour(start))
        hour = series[-1]
        hour.requests += 1
        hour.tokens += tokens
        if status >= 500 or status == 0:
            hour.errors += 1
        elif status == 429:
            hour.limited += 1

    def hourly(self, key_id: int, *, now: float | None = None) -> list[Hour]:
        """Buckets of the last ``hours`` hours that saw traffic, newest first."""
        this_hour = int(now if now is not None else time.time()) // 3600 * 3600
        horizon = this_hour - (self.hours - 1) * 3600
        return [h for h in reversed(self._keys.get(key_id, ())) if h.start >= horizon]

    def totals(self, key_id: int, *, now: float | None = None) -> Hour:
        total = Hour(0)
        for h in self.hourly(key_id, now=now):
            total.requests += h.requests
            total.errors += h.errors
            total.limited += h.limited
            total.tokens += h.tokens
        return total
