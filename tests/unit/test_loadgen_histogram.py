"""The load tester's latency histogram: fixed memory, percentiles within its precision."""

from __future__ import annotations

import math
import random

import pytest

from litegate.ops.histogram import LatencyHistogram


def test_percentiles_are_within_one_percent_and_memory_does_not_grow() -> None:
    h = LatencyHistogram()
    size = len(h.counts)
    rng = random.Random(7)
    samples = [rng.lognormvariate(math.log(0.02), 1.0) for _ in range(100_000)]
    for s in samples:
        h.record(s)
    assert len(h.counts) == size < 2_000 and h.count == len(samples)
    samples.sort()
    for q in (50, 95, 99, 99.9):
        exact = samples[math.ceil(len(samples) * q / 100) - 1]
        assert exact <= h.percentile(q) <= exact * 1.0101, q
    assert h.max == samples[-1] and h.min == samples[0]


def test_out_of_range_values_are_clamped_not_lost() -> None:
    h = LatencyHistogram(low=0.001, high=1.0)
    for v in (0.0, 5.0, 0.5):
        h.record(v)
    assert h.count == 3 and h.percentile(100) == 5.0 and h.percentile(1) <= 0.00102
    with pytest.raises(ValueError):
        LatencyHistogram(low=1.0, high=0.5)
