"""The per-request Prometheus series (``Metrics.served``, counted in plain integers and
exposed at scrape time) read exactly as prometheus_client's own families would."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from litegate.policies import metrics as metrics_module
from litegate.policies.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def at(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_requests_latency_overhead_tokens_and_cache_are_exposed() -> None:
    m = Metrics()
    m.observe_request("chat", "a", 200, 0.001, 0.0001, None, tokens=10, prompt_tokens=4)
    m.observe_request("chat", "a", 200, 0.0011, 0.0002, "HIT", tokens=3, prompt_tokens=9)
    m.observe_request("chat", "a", 429, 70.0, 0.06, None)
    got = samples(m)
    lab = {"route": "chat", "variant": "a"}
    assert got[at("litegate_requests_total", **lab, status="200")] == 2
    assert got[at("litegate_requests_total", **lab, status="429")] == 1
    # le is inclusive: 0.001 lands in the 0.001 bucket; 70 s only in +Inf.
    assert got[at("litegate_request_duration_seconds_bucket", **lab, le="0.001")] == 1
    assert got[at("litegate_request_duration_seconds_bucket", **lab, le="0.0025")] == 2
    assert got[at("litegate_request_duration_seconds_bucket", **lab, le="60.0")] == 2
    assert got[at("litegate_request_duration_seconds_bucket", **lab, le="+Inf")] == 3
    assert got[at("litegate_request_duration_seconds_count", **lab)] == 3
    assert got[at("litegate_request_duration_seconds_sum", **lab)] == pytest.approx(70.0021)
    assert got[at("litegate_overhead_seconds_bucket", le="0.0001")] == 1
    assert got[at("litegate_overhead_seconds_count")] == 3
    # The prompt part is clamped to the total.
    assert got[at("litegate_tokens_total", **lab, kind="prompt")] == 4 + 3
    assert got[at("litegate_tokens_total", **lab, kind="completion")] == 6 + 0
    assert got[at("litegate_cache_total", route="chat", result="HIT")] == 1


def test_series_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 5)
    m = Metrics()
    for i in range(12):
        m.observe_request(f"r{i}", "v", 200, 0.01, 0.001, "MISS")
    assert len(m.served.pairs) <= 5 and len(m.served.cache) <= 5
    assert at("litegate_requests_total", route="r11", variant="v", status="200") in samples(m)
