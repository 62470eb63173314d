"""Adaptive A/B: Thompson sampling over a route's variants.

Each variant (an *arm*) keeps a Beta posterior on its probability of a good outcome,
starting from Beta(1, 1):

- ``errors``: an answer below 500 is a success; a 5xx or an upstream failure is not.
- ``feedback``: a score ``s`` in [0, 1] from ``POST /v1/feedback`` adds ``s`` successes
  and ``1 - s`` failures (a fractional Bernoulli trial); a 5xx counts as a score of 0.
- ``latency``: a request is a success when it finished no slower than the route's
  running median (its last 255 successful requests), a failure when slower or failed.
  Asking "does this variant beat the route's typical latency" is a Bernoulli trial, so
  one conjugate Beta model serves all three metrics; it needs no latency scale and one
  slow outlier costs one failure, where a Gaussian posterior on raw latencies would be
  dragged by heavy tails.

Shares are Thompson sampling's probability matching done in batch: a variant's share is
the posterior probability that it is the best arm (estimated from joint draws), under
the guard rail ``share = min_share + (1 - n * min_share) * P(best)``, so no variant ever
falls below ``min_share`` and a clear winner converges to ``1 - (n - 1) * min_share``.
Shares change only after ``cooldown_s`` since the last change and once the route has
``min_samples`` outcomes; until then the configured weights (under the same floor) are
the shares: they are the starting point. Evidence is capped per arm (older outcomes
are discounted) so a variant that improves can win its traffic back.

State is per process (each worker and replica learns from its own traffic) and bounded:
only configured routes and variants, sticky assignments in an LRU of ``max_sticky``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litegate.policies.metrics import Metrics
from litegate.policies.stats import Stats
from litegate.policies.variants import choose_variant
from litegate.snapshot import AdaptiveSpec, RouteSpec, VariantSpec

MAX_EVIDENCE = 1000.0
"""Per arm: past this many outcomes, older ones are scaled down (a forgetting window)."""
LATENCY_WINDOW = 255
DRAWS = 4000


@dataclass(slots=True)
class Arm:
    successes: float = 0.0
    failures: float = 0.0

    def add(self, success: float) -> None:
        self.successes += success
        self.failures += 1.0 - success
        total = self.successes + self.failures
        if total > MAX_EVIDENCE:
            scale = MAX_EVIDENCE / total
            self.successes *= scale
            self.failures *= scale


@dataclass(slots=True)
class RouteState:
    route: RouteSpec
    adaptive: AdaptiveSpec
    arms: dict[str, Arm]
    """Variants with a weight > 0; weight 0 stays drained."""
    shares: tuple[float, ...]
    """Aligned with ``route.variants``."""
    cumulative: tuple[float, ...]
    next_update: float
    samples: int = 0
    updated_at: float | None = None
    """Wall time of the last change made by the bandit (``None``: configured weights)."""
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    median: float | None = None
    since_median: int = 0


def floored(route: RouteSpec, weights: Mapping[str, float], min_share: float) -> tuple[float, ...]:
    """``weights`` (any scale) as shares aligned with ``route.variants``: each variant
    with a weight gets at least ``min_share``; variants without one get 0."""
    active = [v.name for v in route.variants if weights.get(v.name, 0) > 0]
    total = sum(weights[n] for n in active)
    spread = 1.0 - min_share * len(active)
    return tuple(
        min_share + spread * weights[v.name] / total if v.name in active else 0.0
        for v in route.variants
    )


def _accumulate(shares: tuple[float, ...]) -> tuple[float, ...]:
    out, total = [], 0.0
    for s in shares:
        total += s
        out.append(total)
    return tuple(out)


def _signature(route: RouteSpec) -> tuple[Any, ...]:
    return (tuple((v.name, v.weight) for v in route.variants), route.adaptive)


class Bandit:
    """Current A/B shares of every configured route (fixed for routes without
    ``adaptive``), the variant choice that uses them, and the outcomes that move them."""

    def __init__(
        self, *, metrics: Metrics | None = None, stats: Stats | None = None,
        seed: int | None = None, clock: Callable[[], float] = time.monotonic,
        max_sticky: int = 100_000,
    ) -> None:
        self.metrics = metrics
        self.stats = stats
        self.seed = seed
        self._rng: Any = None  # numpy's Generator, created with the first recomputation
        self.clock = clock
        self.max_sticky = max_sticky
        self._states: dict[str, RouteState] = {}
        self._fixed: dict[str, tuple[RouteSpec, tuple[float, ...]]] = {}
        self._sticky: OrderedDict[tuple[str, bytes], str] = OrderedDict()
        self._published: set[tuple[str, str]] = set()

    # -- configuration -----------------------------------------------------

    def update_routes(self, routes: Mapping[str, RouteSpec]) -> None:
        """Follow a new configuration: keep the evidence of variants that remain (when
        the metric is the same), restart the shares from the weights when they changed."""
        now = self.clock()
        states: dict[str, RouteState] = {}
        fixed: dict[str, tuple[RouteSpec, tuple[float, ...]]] = {}
        for name, route in routes.items():
            weights = {v.name: float(max(v.weight, 0)) for v in route.variants}
            a = route.adaptive
            if a is None or sum(1 for w in weights.values() if w > 0) < 2:
                fixed[name] = (route, floored(route, weights, 0.0) if route.total_weight else
                               tuple(1.0 if i == 0 else 0.0 for i in range(len(route.variants))))
                continue
            old = self._states.get(name)
            if old is not None and _signature(old.route) == _signature(route):
                old.route = route
                states[name] = old
                continue
            keep = old is not None and old.adaptive.metric == a.metric
            arms = {n: (old.arms.get(n, Arm()) if keep and old else Arm())
                    for n, w in weights.items() if w > 0}
            shares = floored(route, weights, a.min_share)
            states[name] = RouteState(route=route, adaptive=a, arms=arms, shares=shares,
                                      cumulative=_accumulate(shares), next_update=now + a.cooldown_s)
        self._states, self._fixed = states, fixed
        self._publish_all()

    # -- choice --------------------------------------------------------------

    def choose(self, route: RouteSpec, sticky_value: bytes | None) -> VariantSpec:
        """The variant for one request. A sticky client keeps the variant it was given
        while that variant is configured with a weight > 0 (and its entry is among the
        ``max_sticky`` most recent); a new one is placed by the current shares."""
        state = self._states.get(route.name)
        if state is None or not _same_variants(state.route, route):
            return choose_variant(route, sticky_value)
        if sticky_value is None:
            return choose_variant(route, None, state.cumulative)
        # A digest, not the value: a header can be tens of KB, and the table is long.
        key = (route.name, hashlib.blake2b(sticky_value, digest_size=16).digest())
        kept = self._sticky.get(key)
        if kept is not None:
            for v in route.variants:
                if v.name == kept and v.weight > 0:
                    self._sticky.move_to_end(key)
                    return v
        variant = choose_variant(route, sticky_value, state.cumulative)
        self._sticky[key] = variant.name
        self._sticky.move_to_end(key)
        if len(self._sticky) > self.max_sticky:
            self._sticky.popitem(last=False)
        return variant

    # -- outcomes ------------------------------------------------------------

    def adaptive(self, route: str) -> AdaptiveSpec | None:
        state = self._states.get(route)
        return state.adaptive if state is not None else None

    def record(self, route: str, variant: str, *, ok: bool, latency_s: float) -> None:
        """One finished request (``ok``: not a 5xx / upstream failure)."""
        state = self._states.get(route)
        if state is None or variant not in state.arms:
            return
        metric = state.adaptive.metric
        if metric == "errors":
            success = 1.0 if ok else 0.0
        elif metric == "feedback":
            if ok:
                return  # the score comes later, from /v1/feedback
            success = 0.0
        else:
            success = 0.0 if not ok else self._below_median(state, latency_s)
        self._add(state, variant, success)

    def outcome(self, route: str, variant: str, status: int, latency_s: float, *,
                failed: bool = False) -> None:
        """One finished request by its status, on any surface: client errors (4xx) and
        requests that never got a status (0) say nothing about the variant; a 5xx, or
        ``failed`` (a broken stream, a fallback to another variant), is a failure."""
        if status and not 400 <= status < 500:
            self.record(route, variant, ok=status < 500 and not failed, latency_s=latency_s)

    def feedback(self, route: str, variant: str, score: float) -> bool:
        """A client's score for one answer; False when the route no longer collects it."""
        state = self._states.get(route)
        if state is None or state.adaptive.metric != "feedback" or variant not in state.arms:
            return False
        self._add(state, variant, min(max(score, 0.0), 1.0))
        return True

    def _below_median(self, state: RouteState, latency_s: float) -> float:
        state.latencies.append(latency_s)
        state.since_median += 1
        if state.median is None or state.since_median >= 16 or len(state.latencies) < 16:
            ordered = sorted(state.latencies)
            state.median = ordered[len(ordered) // 2]
            state.since_median = 0
        return 1.0 if latency_s <= state.median else 0.0

    def _add(self, state: RouteState, variant: str, success: float) -> None:
        state.arms[variant].add(success)
        state.samples += 1
        now = self.clock()
        if state.samples >= state.adaptive.min_samples and now >= state.next_update:
            self._recompute(state, now)

    def _recompute(self, state: RouteState, now: float) -> None:
        import numpy as np  # only routes with `adaptive` get here

        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        names = list(state.arms)
        alpha = np.array([1.0 + state.arms[n].successes for n in names])
        beta = np.array([1.0 + state.arms[n].failures for n in names])
        draws = self._rng.beta(alpha, beta, size=(DRAWS, len(names)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(names))
        p_best = {n: float(w) / DRAWS for n, w in zip(names, wins, strict=True)}
        # floored() drops a zero weight: keep a never-winning arm at the floor instead.
        weights = {n: p + 1e-12 for n, p in p_best.items()}
        state.shares = floored(state.route, weights, state.adaptive.min_share)
        state.cumulative = _accumulate(state.shares)
        state.next_update = now + state.adaptive.cooldown_s
        state.updated_at = time.time()
        self._publish(state.route.name)

    # -- reporting -------------------------------------------------------------

    def shares(self, route: str) -> dict[str, float]:
        """``{variant: share}`` now in force on ``route`` ({} for an unknown route)."""
        state = self._states.get(route)
        if state is not None:
            spec, shares = state.route, state.shares
        elif route in self._fixed:
            spec, shares = self._fixed[route]
        else:
            return {}
        return {v.name: s for v, s in zip(spec.variants, shares, strict=True)}

    def describe(self, route: str) -> dict[str, Any]:
        """Shares and evidence, for the console."""
        state = self._states.get(route)
        out: dict[str, Any] = {"shares": self.shares(route), "adaptive": None}
        if state is not None:
            out["adaptive"] = state.adaptive.metric
            out["min_share"] = state.adaptive.min_share
            out["samples"] = state.samples
            out["updated_at"] = state.updated_at
            out["success_rate"] = {
                n: (a.successes / (a.successes + a.failures)
                    if a.successes + a.failures else None)
                for n, a in state.arms.items()
            }
        return out

    def _publish(self, route: str) -> None:
        shares = self.shares(route)
        if self.metrics is not None:
            for variant, share in shares.items():
                self.metrics.variant_share.labels(route, variant).set(share)
        if self.stats is not None:
            self.stats.shares[route] = self.describe(route)

    def _publish_all(self) -> None:
        names = set(self._states) | set(self._fixed)
        current = {(r, v) for r in names for v in self.shares(r)}
        if self.metrics is not None:
            for labels in self._published - current:
                self.metrics.variant_share.remove(*labels)
        self._published = current
        if self.stats is not None:
            for gone in set(self.stats.shares) - names:
                del self.stats.shares[gone]
        for route in names:
            self._publish(route)


def pick_variant(bandit: Bandit | None, route: RouteSpec, sticky_value: bytes | None) -> VariantSpec:
    """The variant for one request on ``route``, for every caller that chooses one (A/B
    routing, a fallback route): an adaptive route's current shares through the bandit,
    else the configured weights. Its outcome goes back through ``Bandit.outcome``."""
    return choose_variant(route, sticky_value) if bandit is None else bandit.choose(route, sticky_value)


def _same_variants(a: RouteSpec, b: RouteSpec) -> bool:
    """The request's snapshot and the bandit's agree on the variants (shares align)."""
    return a is b or [v.name for v in a.variants] == [v.name for v in b.variants]


class PendingFeedback:
    """Requests that may still get feedback: (key id, request id) -> (route, variant), an
    LRU of ``max_entries`` that forgets entries after ``ttl_s``.

    Keyed by the key too: clients may choose their ``X-Request-ID`` and the gateway's
    own ids are sequential, so one key could otherwise claim the id another key's next
    request will get (and that request could not be scored)."""

    def __init__(self, *, max_entries: int = 100_000, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[tuple[int | None, str], tuple[str, str, float]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, request_id: str, route: str, variant: str, key_id: int | None) -> None:
        entry = (key_id, request_id)
        self._entries[entry] = (route, variant, self.clock() + self.ttl_s)
        self._entries.move_to_end(entry)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def take(self, request_id: str, key_id: int | None) -> tuple[str, str] | None:
        """The (route, variant) of ``key_id``'s request, once; ``None`` if unknown or
        expired."""
        entry = self._entries.pop((key_id, request_id), None)
        if entry is None or entry[2] < self.clock():
            return None
        return entry[0], entry[1]

    def peek(self, request_id: str, key_id: int | None) -> tuple[str, str] | None:
        entry = self._entries.get((key_id, request_id))
        if entry is None or entry[2] < self.clock():
            return None
        return entry[0], entry[1]
