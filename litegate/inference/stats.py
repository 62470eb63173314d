"""Per model-version counts for the v2 statistics extension (Triton's JSON shape).

Kept in plain integers updated on the event loop (the batcher's observer and the v2
app run there), keyed by configured model names and versions only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litegate.inference.batcher import BatchObserver

Key = tuple[str, str]


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(max(0.0, seconds) * 1e9)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class VersionStats:
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    batches: dict[int, _Duration] = field(default_factory=dict)

    def observe_batch(self, *, requests: int, rows: int, queue_s: list[float],
                      compute_s: float) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.compute_infer.add(compute_s, requests)
        self.queue.add(sum(queue_s), len(queue_s))  # waits are never negative
        self.batches.setdefault(rows, _Duration()).add(compute_s)

    def request_done(self, ok: bool, seconds: float) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        (self.success if ok else self.fail).add(seconds)

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": d.to_dict()}
                for size, d in sorted(self.batches.items())
            ],
        }


class Observers:
    """Feeds one batch to several observers (Prometheus metrics and these stats)."""

    __slots__ = ("_targets",)

    def __init__(self, *targets: BatchObserver) -> None:
        self._targets = targets

    def observe_batch(self, *, requests: int, rows: int, queue_s: list[float],
                      compute_s: float) -> None:
        for t in self._targets:
            t.observe_batch(requests=requests, rows=rows, queue_s=queue_s, compute_s=compute_s)
