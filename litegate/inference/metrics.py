"""Per-model Prometheus metrics, registered once on the gateway's registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "litegate_model_requests", "Inference requests per model version",
            ["model", "version"], registry=r)
        self.failures = Counter(
            "litegate_model_request_failures", "Failed inference requests per model version",
            ["model", "version", "status"], registry=r)
        self.executions = Counter(
            "litegate_model_executions",
            "session.run calls per model version (requests / executions = mean batch size)",
            ["model", "version"], registry=r)
        self.rows = Counter(
            "litegate_model_batch_rows", "Rows computed per model version",
            ["model", "version"], registry=r)
        self.queue_seconds = Histogram(
            "litegate_model_queue_seconds", "Time a request waited for its batch to start",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram(
            "litegate_model_compute_seconds", "session.run time per execution",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.loaded = Gauge(
            "litegate_model_loaded",
            "1 for each loaded model version, labelled with the providers really in use",
            ["model", "version", "providers"], registry=r)
        self.load_seconds = Histogram(
            "litegate_model_load_seconds", "Session creation plus warm-up time",
            ["model", "version"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r)
        self.load_failures = Counter(
            "litegate_model_load_failures", "Failed loads (bad file, checksum, timeout) per model version",
            ["model", "version"], registry=r)
        self.queue_rejections = Counter(
            "litegate_model_queue_rejections", "Requests refused with 503 because the queue was full",
            ["model", "version"], registry=r)
        self.evictions = Counter(
            "litegate_model_evictions", "Sessions unloaded by the memory budget or a config change",
            ["model", "version"], registry=r)
        self._request_children: dict[tuple[str, str], Any] = {}

    def count_request(self, model: str, version: str) -> None:
        """One more request for a loaded version (its counter resolved once: ``labels``
        takes a lock and validates every call)."""
        child = self._request_children.get((model, version))
        if child is None:
            if len(self._request_children) >= 10_000:  # versions come from the config
                self._request_children.clear()
            child = self._request_children[(model, version)] = self.requests.labels(
                model, version)
        child.inc()

    def observer(self, model: str, version: str) -> BatchMetrics:
        return BatchMetrics(self, model, version)


class BatchMetrics:
    """The batcher's observer for one model version (label children resolved once)."""

    __slots__ = ("_exec", "_rows", "_queue", "_compute")

    def __init__(self, m: ModelMetrics, model: str, version: str) -> None:
        self._exec = m.executions.labels(model, version)
        self._rows = m.rows.labels(model, version)
        self._queue = m.queue_seconds.labels(model, version)
        self._compute = m.compute_seconds.labels(model, version)

    def observe_batch(self, *, requests: int, rows: int, queue_s: list[float],
                      compute_s: float) -> None:
        self._exec.inc()
        self._rows.inc(rows)
        self._compute.observe(compute_s)
        for q in queue_s:
            self._queue.observe(max(0.0, q))
