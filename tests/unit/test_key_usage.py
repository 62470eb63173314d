"""Per-key usage counters: hourly buckets, bounded in keys and in hours."""

from __future__ import annotations

from litegate.policies.key_usage import KeyUsage

T0 = 1_800_000_000 // 3600 * 3600


def test_counts_per_hour_and_totals():
    usage = KeyUsage()
    usage.record(7, 200, 12, now=T0 + 5)
    usage.record(7, 429, 0, now=T0 + 6)
    usage.record(7, 502, 3, now=T0 + 3600)
    hours = usage.hourly(7, now=T0 + 3600)
    assert [(h.start, h.requests, h.errors, h.limited, h.tokens) for h in hours] == [
        (T0 + 3600, 1, 1, 0, 3), (T0, 2, 0, 1, 12),
    ]
    total = usage.totals(7, now=T0 + 3600)
    assert (total.requests, total.errors, total.limited, total.tokens) == (3, 1, 1, 15)
    assert usage.hourly(8) == []


def test_bounded_in_keys_and_hours():
    usage = KeyUsage(hours=24, max_keys=100)
    for hour in range(48):
        usage.record(1, 200, 1, now=T0 + hour * 3600)
    assert len(usage.hourly(1, now=T0 + 47 * 3600)) == 24
    assert usage.totals(1, now=T0 + 47 * 3600).requests == 24
    assert usage.hourly(1, now=T0 + 90 * 3600) == []  # all older than 24 h
    for key_id in range(2, 1000):
        usage.record(key_id, 200, 0, now=T0 + 47 * 3600)
    assert len(usage._keys) == 100
    usage.record(999, 200, 0, now=T0 + 47 * 3600)  # recently used keys stay
    assert 999 in usage._keys and 1 not in usage._keys
