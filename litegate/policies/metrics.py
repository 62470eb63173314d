"""Prometheus metrics, on a registry per gateway (several gateways may share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "litegate_requests", "Requests by route, variant and status",
            ["route", "variant", "status"], registry=r,
        )
        self.latency = Histogram(
            "litegate_request_duration_seconds", "Request latency by route and variant",
            ["route", "variant"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "litegate_overhead_seconds", "Time spent in the gateway itself (excluding upstream)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05), registry=r,
        )
        self.cache = Counter(
            "litegate_cache", "Cache lookups by route and result", ["route", "result"], registry=r
        )
        self.limited = Counter(
            "litegate_limit_rejections", "Requests rejected by a limit", ["route"], registry=r
        )
        self.upstream_errors = Counter(
            "litegate_upstream_errors", "Upstream failures by upstream and kind",
            ["upstream", "kind"], registry=r,
        )
        self.tokens = Counter(
            "litegate_tokens", "LLM tokens by route and variant", ["route", "variant"], registry=r
        )
        self.stream_errors = Counter(
            "litegate_stream_errors", "Streams that failed after the first chunk", ["route"],
            registry=r,
        )
        self.shadow = Counter(
            "litegate_shadow_requests", "Mirrored (shadow) requests by route, variant and status",
            ["route", "variant", "status"], registry=r,
        )
        self.breaker_state = Gauge(
            "litegate_circuit_open", "1 while an upstream's circuit is open", ["upstream"],
            registry=r,
        )
        self.variant_share = Gauge(
            "litegate_variant_share", "Share of a route's new traffic each A/B variant gets "
            "(the configured weights, or the adaptive bandit's current shares)",
            ["route", "variant"], registry=r,
        )
        self.feedback = Summary(
            "litegate_feedback_score", "Scores received on /v1/feedback by route and variant",
            ["route", "variant"], registry=r,
        )
        self.semantic_cache = Counter(
            "litegate_semantic_cache", "Semantic cache lookups by route and result "
            "(hit, miss, bypass)", ["route", "result"], registry=r,
        )
        self.semantic_cache_entries = Gauge(
            "litegate_semantic_cache_entries", "Answers held in this process's semantic cache "
            "by route", ["route"], registry=r,
        )
        self.config_version = Gauge(
            "litegate_config_version", "Configuration version in use", registry=r
        )
        # labels() takes a lock and builds a tuple per call; children are reused.
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        self._cache_children: dict[tuple[str, str], Any] = {}

    def observe_request(
        self, route: str, variant: str, status: int, elapsed_s: float, overhead_s: float,
        cache: str | None,
        tokens: int = 0,
    ) -> None:
        key = (route, variant, str(status))
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 50_000:  # bounded even if label values churn
                self._children.clear()
            children = self._children[key] = (
                self.requests.labels(*key),
                self.latency.labels(route, variant),
                self.tokens.labels(route, variant),
            )
        children[0].inc()
        children[1].observe(elapsed_s)
        if tokens:
            children[2].inc(tokens)
        self.overhead.observe(overhead_s)
        if cache is not None:
            child = self._cache_children.get((route, cache))
            if child is None:
                child = self._cache_children[(route, cache)] = self.cache.labels(route, cache)
            child.inc()
