"""Prometheus metrics, on a registry per gateway (several gateways may share a process)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from litegate.snapshot import KeySpec

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)
MAX_SERIES = 50_000
"""(route, variant) pairs and cache series kept; labels come from the configuration, so
this bound is reached only by a configuration churning names (the counts then restart)."""
TOKEN_KINDS = ("prompt", "completion")
"""The ``kind`` label of the token counters (completion = total - prompt)."""
OTHER_KEYS = "-"
"""``litegate_key_tokens_total``'s ``key`` past ``max_keys`` distinct keys."""


def key_label(key: KeySpec) -> str:
    """A key's configured name (its id when it has none); never anything a client sent."""
    return key.name or str(key.id)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, per_key: bool = False,
                 max_keys: int = 1000) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.served = RequestCounts()
        """Requests, latency, overhead, tokens and cache results (the per-request series)."""
        r.register(self.served)
        self.limited = Counter(
            "litegate_limit_rejections", "Requests rejected by a limit", ["route"], registry=r
        )
        self.upstream_errors = Counter(
            "litegate_upstream_errors", "Upstream failures by upstream and kind",
            ["upstream", "kind"], registry=r,
        )
        self.key_tokens: Counter | None = Counter(
            "litegate_key_tokens", "LLM tokens by API key name, route and kind (prompt, "
            f"completion); keys past the first {max_keys} are counted under key=\"{OTHER_KEYS}\"",
            ["key", "route", "kind"], registry=r,
        ) if per_key else None
        """Only with ``per_key`` (``LITEGATE_METRICS_PER_KEY``): a series per key is
        cardinality, so it is opt-in and bounded by ``max_keys``."""
        self.max_keys = max_keys
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
        self._keys: set[str] = set()
        """Key labels with series of their own (at most ``max_keys``)."""
        self._live_keys: frozenset[str] | None = None
        """Key labels of the current snapshot (None until the first one)."""
        self._key_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        """(key label, route) -> its prompt and completion children: every per-key
        series, so that a removed key's can be removed."""

    def observe_request(
        self, route: str, variant: str, status: int, elapsed_s: float, overhead_s: float,
        cache: str | None,
        tokens: int = 0,
        prompt_tokens: int = 0,
        key: KeySpec | None = None,
    ) -> None:
        """``tokens`` is the total, ``prompt_tokens`` its prompt part (clamped to it)."""
        served = self.served
        pair = served.pairs.get((route, variant))
        if pair is None:
            if len(served.pairs) >= MAX_SERIES:
                served.pairs.clear()
            pair = served.pairs[(route, variant)] = _Pair()
        pair.statuses[status] = pair.statuses.get(status, 0) + 1
        pair.latency[bisect_left(LATENCY_BUCKETS, elapsed_s)] += 1
        pair.latency_sum += elapsed_s
        served.overhead[bisect_left(OVERHEAD_BUCKETS, overhead_s)] += 1
        served.overhead_sum += overhead_s
        if tokens > 0:
            prompt = min(max(prompt_tokens, 0), tokens)
            pair.prompt += prompt
            pair.completion += tokens - prompt
            if self.key_tokens is not None and key is not None:
                self._observe_key(key, route, prompt, tokens - prompt)
        if cache is not None:
            cached = served.cache
            if len(cached) >= MAX_SERIES and (route, cache) not in cached:
                cached.clear()
            cached[(route, cache)] = cached.get((route, cache), 0) + 1

    def _observe_key(self, key: KeySpec, route: str, prompt: int, completion: int) -> None:
        assert self.key_tokens is not None
        label = key_label(key)
        if label not in self._keys:
            live = self._live_keys
            if len(self._keys) >= self.max_keys or (live is not None and label not in live):
                label = OTHER_KEYS  # past the bound, or revoked while in flight
            else:
                self._keys.add(label)
        children = self._key_children.get((label, route))
        if children is None:
            children = self._key_children[(label, route)] = (
                self.key_tokens.labels(label, route, "prompt"),
                self.key_tokens.labels(label, route, "completion"),
            )
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)

    def keep_keys(self, keys: Iterable[KeySpec]) -> None:
        """On each new snapshot: the series of keys no longer in it (deleted, revoked,
        renamed) are removed, and their places under ``max_keys`` freed."""
        if self.key_tokens is None:
            return
        live = self._live_keys = frozenset(key_label(k) for k in keys)
        gone = self._keys - live
        self._keys -= gone
        for labels in [k for k in self._key_children if k[0] in gone]:
            del self._key_children[labels]
            for kind in TOKEN_KINDS:
                self.key_tokens.remove(*labels, kind)


class _Pair:
    """The counts of one (route, variant)."""

    __slots__ = ("completion", "latency", "latency_sum", "prompt", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        """Per bucket (not cumulative); the last one is +Inf."""
        self.latency_sum = 0.0
        self.prompt = 0
        self.completion = 0


class RequestCounts(Collector):
    """The per-request series, counted in plain integers and turned into Prometheus
    families when scraped. prometheus_client's own children take a lock and walk the
    buckets in Python for each of the seven updates a request makes (~6 µs of a proxied
    request's ~140); every update here runs on the event loop's thread, and a scrape
    reads whole values."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.overhead = [0] * (len(OVERHEAD_BUCKETS) + 1)
        self.overhead_sum = 0.0
        self.cache: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("litegate_requests", "Requests by route, variant and status",
                                       labels=["route", "variant", "status"])
        latency = HistogramMetricFamily("litegate_request_duration_seconds",
                                        "Request latency by route and variant",
                                        labels=["route", "variant"])
        tokens = CounterMetricFamily(
            "litegate_tokens", "LLM tokens by route, variant and kind (prompt, completion)",
            labels=["route", "variant", "kind"])
        for (route, variant), pair in list(self.pairs.items()):
            for status, count in list(pair.statuses.items()):
                requests.add_metric([route, variant, str(status)], count)
            latency.add_metric([route, variant], _cumulative(LATENCY_BUCKETS, pair.latency),
                               pair.latency_sum)
            tokens.add_metric([route, variant, "prompt"], pair.prompt)
            tokens.add_metric([route, variant, "completion"], pair.completion)
        overhead = HistogramMetricFamily(
            "litegate_overhead_seconds", "Time spent in the gateway itself (excluding upstream)",
            labels=[])
        overhead.add_metric([], _cumulative(OVERHEAD_BUCKETS, self.overhead), self.overhead_sum)
        cache = CounterMetricFamily("litegate_cache", "Cache lookups by route and result",
                                    labels=["route", "result"])
        for (route, result), count in list(self.cache.items()):
            cache.add_metric([route, result], count)
        yield from (requests, latency, overhead, cache, tokens)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Bucket counts as Prometheus wants them: cumulative, ``le`` spelled as
    prometheus_client spells it (``1.0``, ``+Inf``)."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*map(floatToGoString, bounds), "+Inf"), counts, strict=True):
        total += count
        out.append((bound, total))
    return out
