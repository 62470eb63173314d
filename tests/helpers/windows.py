"""Exact-count limit tests and the default strategy's minute boundary."""

from __future__ import annotations

import time


def clear_of_minute_edge(seconds: float = 8.0) -> None:
    """Wait, when needed, so that the next ``seconds`` stay inside one wall-clock minute.

    The default strategy (``sliding-window-counter``, limits' approximation) weighs the
    previous window's hits by the share of it still inside the last minute: right after a
    boundary a burst that filled the previous window is under-counted and one more request
    passes. Tests that assert exact counts under a per-minute limit call this just before
    their burst, so the burst never straddles a boundary.
    """
    into = time.time() % 60
    if 60 - into < seconds:
        time.sleep(60 - into + 0.05)
