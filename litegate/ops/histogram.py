"""A fixed-size log-bucketed latency histogram (HDR-style): memory does not grow with the
number of samples, and percentiles are exact to within ``precision`` (1 % by default)."""

from __future__ import annotations

import math


class LatencyHistogram:
    """Seconds from ``low`` to ``high``; values outside are clamped into the end buckets
    (and ``max`` stays exact)."""

    __slots__ = ("_log_base", "count", "counts", "high", "low", "max", "min", "total")

    def __init__(self, low: float = 1e-5, high: float = 600.0, precision: float = 0.01) -> None:
        if not 0 < low < high or not 0 < precision < 1:
            raise ValueError("need 0 < low < high and 0 < precision < 1")
        self.low, self.high = low, high
        self._log_base = math.log1p(precision)
        self.counts = [0] * (self._index(high) + 1)  # about 1,800 ints at the defaults
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def _index(self, value: float) -> int:
        return int(math.log(max(value, self.low) / self.low) / self._log_base)

    def record(self, value: float) -> None:
        self.counts[min(self._index(value), len(self.counts) - 1)] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def percentile(self, q: float) -> float:
        """The value at quantile ``q`` (0..100): the upper edge of its bucket, capped at max."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if i == len(self.counts) - 1:  # the overflow bucket: only max is known
                    return self.max
                return min(self.low * math.exp((i + 1) * self._log_base), self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
