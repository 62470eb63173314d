"""Prometheus metrics, on a registry per gateway (several gateways may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.config_version = Gauge(
            "litegate_config_version", "Configuration version in use", registry=r
        )
