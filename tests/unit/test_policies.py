"""Unit tests of the policy building blocks."""

from __future__ import annotations

import collections
import time

import pytest
from limits import parse_many

from litegate.errors import ServiceUnavailable
from litegate.policies.variants import choose_variant
from litegate.policies.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from litegate.policies.caching import ResponseCache, cache_key
from litegate.services.schema import ValidationFailed, parse_document
from litegate.settings import Settings
from litegate.snapshot import RouteSpec, UpstreamSpec, VariantSpec

UP = UpstreamSpec("u", "openai", "http://x", None, 1, 1, 0)


def route(weights: list[int], sticky: str = "none") -> RouteSpec:
    variants = tuple(VariantSpec(f"v{i}", UP, f"m{i}", w) for i, w in enumerate(weights))
    cum, total = [], 0
    for w in weights:
        total += w
        cum.append(total)
    return RouteSpec("r", variants, tuple(cum), total, sticky, None, None, (), (), None)


def test_weighted_choice_follows_weights_and_skips_zero():
    r = route([70, 0, 30])
    counts = collections.Counter(choose_variant(r, None).name for _ in range(20000))
    assert counts["v1"] == 0
    assert 0.67 < counts["v0"] / 20000 < 0.73


def test_sticky_choice_is_deterministic_and_spreads():
    r = route([50, 50])
    picks = {i: choose_variant(r, str(i).encode()).name for i in range(400)}
    assert all(choose_variant(r, str(i).encode()).name == picks[i] for i in range(400))
    share = sum(1 for v in picks.values() if v == "v0") / 400
    assert 0.4 < share < 0.6


def test_cache_lru_ttl_and_byte_bound():
    cache = ResponseCache(max_entries=2, max_bytes=1000)
    for k in ("a", "b"):
        cache.put(k, status=200, headers=(), body=b"x", variant=None, ttl_s=60)
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", status=200, headers=(), body=b"x", variant=None, ttl_s=60)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    assert not cache.put("big", status=200, headers=(), body=b"x" * 500, variant=None, ttl_s=60)
    cache.put("short", status=200, headers=(), body=b"y", variant=None, ttl_s=0.05)
    time.sleep(0.06)
    assert cache.get("short") is None
    assert cache.size_bytes == sum(len(e.body) for e in cache._entries.values())


def test_cache_key_ignores_key_order():
    assert cache_key("r", {"a": 1, "b": [1, 2]}) == cache_key("r", {"b": [1, 2], "a": 1})
    assert cache_key("r", {"a": 1}) != cache_key("s", {"a": 1})


def test_breaker_closed_open_half_open_closed():
    b = CircuitBreaker("u", threshold=2, reset_s=0.05)
    b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN
    with pytest.raises(ServiceUnavailable):
        b.before_call()
    time.sleep(0.06)
    b.before_call()  # the trial request
    assert b.state == HALF_OPEN
    with pytest.raises(ServiceUnavailable):
        b.before_call()  # only one trial at a time
    b.success()
    assert b.state == CLOSED
    b.before_call()


def test_breaker_reopens_when_trial_fails():
    b = CircuitBreaker("u", threshold=1, reset_s=0.01)
    b.failure()
    time.sleep(0.02)
    b.before_call()
    b.failure()
    assert b.state == OPEN


def test_rate_strings_parse_once_into_items():
    items = parse_many("10/second;100/minute")
    assert [i.amount for i in items] == [10, 100]


def test_parse_document_accepts_the_documented_shape():
    doc = parse_document(
        {
            "upstreams": [{"name": "mock", "kind": "openai", "base_url": "http://h/v1",
                           "api_key_env": "K", "timeout_s": 30}],
            "routes": [{"name": "chat", "variants": [{"upstream": "mock", "model": "a", "weight": 90},
                                                     {"upstream": "mock", "model": "b", "weight": 10}],
                        "sticky": "key", "cache": {"ttl_s": 60}, "limits": ["100/minute"]}],
        }
    )
    assert doc.routes[0].cache.ttl_s == 60


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ([], "expected a mapping"),
        ({"routes": "x"}, "routes: expected a list"),
        ({"routes": [{"name": "r"}]}, "routes[0]"),
        ({"upstreams": [{"name": "u", "base_url": "http://x", "extra": 1}]}, "upstreams[0]"),
        ({"routes": [{"name": "r", "variants": [{"upstream": "u", "model": "m"}],
                      "fallback": "nope"}]}, "fallback"),
        ({"upstreams": [{"name": "u", "base_url": "http://user:pw@h/v1"}]},
         "upstreams[0].base_url: must not carry credentials"),
        ({"upstreams": [{"name": "u", "base_url": "https://h/v1?api-version=1"}]},
         "upstreams[0].base_url: must not carry a query"),
        ({"upstreams": [{"name": "u", "base_url": "ftp://h/"}]}, "http:// or https://"),
    ],
)
def test_parse_document_errors(raw, needle):
    with pytest.raises(ValidationFailed) as exc:
        parse_document(raw)
    assert any(needle in e for e in exc.value.errors), exc.value.errors


def test_settings_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEGATE_PORT", "9001")
    monkeypatch.setenv("LITEGATE_LIMIT_FAIL_OPEN", "false")
    s = Settings.load(home=tmp_path)
    assert s.port == 9001 and s.limit_fail_open is False
    assert Settings.load(port=9002).port == 9002
    assert s.db_url.startswith("sqlite+aiosqlite:///") and str(tmp_path) in s.db_url
    assert Settings.load(db="postgresql://u@h/d").db_url == "postgresql+asyncpg://u@h/d"
    monkeypatch.setenv("LITEGATE_PORT", "eighty")
    with pytest.raises(ValueError, match="LITEGATE_PORT"):
        Settings.load()


def test_fast_timestamper_matches_iso_utc():
    from datetime import datetime

    from litegate.log_config import FastTimeStamper

    stamp = FastTimeStamper()
    for _ in range(3):
        before = datetime.now(tz=None).timestamp()
        ts = stamp(None, "info", {})["timestamp"]
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        assert abs(parsed - before) < 0.5 and ts.endswith("Z") and "T" in ts


def test_dashboard_stats_keep_a_bounded_number_of_series():
    from litegate.policies.stats import Stats

    stats = Stats(max_series=50)
    for i in range(500):
        stats.record(f"route-{i}", "v", 200, 0.01, None)
    totals = stats.totals()
    assert len(totals) == 50
    assert "route-499/v" in totals and "route-0/v" not in totals
