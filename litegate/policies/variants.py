"""A/B variant choice: weighted, and sticky when given a stable value (a key id, a
header): the same value always lands on the same variant. Fallbacks use it too."""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right

from litegate.snapshot import RouteSpec, VariantSpec


def choose_variant(route: RouteSpec, sticky_value: bytes | None) -> VariantSpec:
    """Pick a variant; the same ``sticky_value`` always lands on the same point."""
    if len(route.variants) == 1 or route.total_weight <= 0:
        return route.variants[0]
    if sticky_value is None:
        point = random.randrange(route.total_weight)
    else:
        point = zlib.crc32(route.name.encode() + b"\0" + sticky_value) % route.total_weight
    return route.variants[bisect_right(route.cumulative, point)]
