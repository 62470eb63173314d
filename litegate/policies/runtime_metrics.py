"""Gauges read at scrape time (no work on the request path): process CPU and memory,
Redis reachability and each loaded model version's queue and memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

QueueState = tuple[str, str, int, int, int]
"""(model, version, waiting requests, max_queue, memory bytes) of one loaded version."""


class RuntimeCollector(Collector):
    def __init__(self, redis_up: Callable[[], bool | None],
                 queues: Callable[[], Iterable[QueueState]]) -> None:
        self._redis_up = redis_up
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        up = self._redis_up()
        if up is not None:  # absent without Redis, so "Redis unreachable" cannot misfire
            yield GaugeMetricFamily("litegate_redis_up",
                                    "1 when the last Redis ping succeeded (checked every few seconds)",
                                    value=int(up))
        labels = ["model", "version"]
        depth = GaugeMetricFamily("litegate_model_queue_depth",
                                  "Requests waiting for a batch per loaded model version", labels=labels)
        limit = GaugeMetricFamily("litegate_model_queue_limit",
                                  "max_queue per loaded model version (503 beyond it)", labels=labels)
        memory = GaugeMetricFamily("litegate_model_memory_bytes",
                                   "Memory a loaded model version took (measured at load)",
                                   labels=labels)
        for model, version, waiting, max_queue, size in self._queues():
            depth.add_metric([model, version], waiting)
            limit.add_metric([model, version], max_queue)
            memory.add_metric([model, version], size)
        yield from (depth, limit, memory)


def register_runtime(registry: CollectorRegistry, *, redis_up: Callable[[], bool | None],
                     queues: Callable[[], Iterable[QueueState]]) -> None:
    # The process collector lives on the default registry only; each gateway registry
    # gets its own so /metrics carries process_cpu_seconds_total and memory.
    ProcessCollector(registry=registry)
    registry.register(RuntimeCollector(redis_up, queues))
