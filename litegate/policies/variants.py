"""A/B variant choice: weighted, and sticky when given a stable value (a key id, a
header): the same value always lands on the same variant. Fallbacks use it too."""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Sequence

from litegate.snapshot import RouteSpec, VariantSpec


def choose_variant(
    route: RouteSpec, sticky_value: bytes | None, cumulative: Sequence[float] | None = None
) -> VariantSpec:
    """Pick a variant; the same ``sticky_value`` always lands on the same point.

    ``cumulative``: running sum of shares (fractions, aligned with ``route.variants``)
    to use instead of the configured weights (the adaptive bandit's)."""
    if len(route.variants) == 1 or route.total_weight <= 0:
        return route.variants[0]
    if cumulative is not None:
        if sticky_value is None:
            share_point = random.random()
        else:
            # Inside the weight bucket the weights would pick, refined by the hash's other
            # bits: while the shares equal the weights, a client stays where it was.
            crc = zlib.crc32(route.name.encode() + b"\0" + sticky_value)
            bucket, rest = divmod(crc, route.total_weight)
            share_point = (rest + (bucket % 65536 + 0.5) / 65536) / route.total_weight
        index = bisect_right(cumulative, share_point * cumulative[-1])
        return route.variants[min(index, len(route.variants) - 1)]
    if sticky_value is None:
        point = random.randrange(route.total_weight)
    else:
        point = zlib.crc32(route.name.encode() + b"\0" + sticky_value) % route.total_weight
    return route.variants[bisect_right(route.cumulative, point)]
