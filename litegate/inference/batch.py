"""Merge concurrent requests into one batch and split the outputs back (no queueing here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from litegate.inference.dtypes import Tensor, Tensors
from litegate.inference.session import InferenceFailed

if TYPE_CHECKING:
    from onnxruntime import RunOptions


def rows(inputs: Tensors) -> int:
    """Rows in the batch (first) dimension; 1 for scalars."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def group_key(inputs: Tensors) -> tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]:
    """Requests with equal keys can be concatenated along the first dimension."""
    if len(inputs) == 1:  # most models: no sorting (this runs for every request)
        ((name, array),) = inputs.items()
        return ((name, array.dtype, array.shape[1:]),)
    return tuple(sorted(((n, a.dtype, a.shape[1:]) for n, a in inputs.items()),
                        key=lambda item: item[0]))


def merge(items: Sequence[Tensors]) -> dict[str, Tensor]:
    if len(items) == 1:
        return dict(items[0])
    return {name: np.concatenate([item[name] for item in items], axis=0) for name in items[0]}


def split(outputs: Mapping[str, Tensor], sizes: Sequence[int]) -> list[dict[str, Tensor]]:
    total = sum(sizes)
    offsets = np.cumsum(sizes)[:-1]
    parts: list[dict[str, Tensor]] = [{} for _ in sizes]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceFailed(
                f"output {name!r} has shape {list(array.shape)}, not one row per input row "
                f"({total}); this model cannot be batched — set max_batch_size to 1"
            )
        for part, chunk in zip(parts, np.split(array, offsets, axis=0)):
            part[name] = chunk
    return parts


RunFn = Callable[[dict[str, Tensor], "RunOptions | None"], dict[str, Tensor]]
"""``run(inputs, run_options)``: one ``session.run``."""


def run_merged(run: RunFn, items: Sequence[Tensors], run_options: RunOptions | None = None
               ) -> list[dict[str, Tensor]]:
    """Merge, run once, split: called on a worker thread, never on the event loop."""
    if len(items) == 1:
        return [run(dict(items[0]), run_options)]
    return split(run(merge(items), run_options), [rows(i) for i in items])
