"""Adaptive A/B (policies/bandit.py): what it costs per request and how fast it learns.

Cost: ``Bandit.choose`` (fixed weights, adaptive, adaptive sticky), ``Bandit.record``
without a recomputation, and one recomputation (Thompson draws) for 2 and 5 variants.
Learning: simulated runs (fixed seeds, the policy alone, no gateway) of 2 variants where
one is better; requests until the better one first holds >= 90 % of the traffic, with
min_share 0.05 and a recomputation every 50 requests.

    .venv/bin/python bench/bandit.py
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from litegate.policies.bandit import Bandit
from litegate.snapshot import AdaptiveSpec, RouteSpec, UpstreamSpec, VariantSpec

UP = UpstreamSpec("u", "openai", "http://x", None, 5, 1, 0)


def route(n: int, adaptive: AdaptiveSpec | None, sticky: str = "none") -> RouteSpec:
    variants = tuple(VariantSpec(f"v{i}", UP, f"m{i}", 1) for i in range(n))
    return RouteSpec("r", variants, tuple(range(1, n + 1)), n, sticky, None, None, (), (), None,
                     adaptive=adaptive)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def per_call_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def cost() -> None:
    print("| operation | µs per call (best of 5) |\n|---|---|")
    adaptive = AdaptiveSpec("errors", 0.05, 3600, 1)
    for label, spec, sticky in [
        ("choose, fixed weights (2 variants)", route(2, None), False),
        ("choose, adaptive (2 variants)", route(2, adaptive), False),
        ("choose, adaptive, sticky client remembered", route(2, adaptive, "key"), True),
    ]:
        bandit = Bandit(seed=1, clock=Clock())
        bandit.update_routes({"r": spec})
        keys = [str(i % 1000).encode() for i in range(1000)]
        fn = (lambda i, b=bandit, s=spec, k=keys: b.choose(s, k[i % 1000])) if sticky else (
            lambda i, b=bandit, s=spec: b.choose(s, None))
        print(f"| {label} | {per_call_us(fn, 100_000):.2f} |")
    bandit = Bandit(seed=1, clock=Clock())
    bandit.update_routes({"r": route(2, adaptive)})
    print(f"| record an outcome (no recomputation) | "
          f"{per_call_us(lambda i: bandit.record('r', 'v0', ok=True, latency_s=0.01), 100_000):.2f} |")
    for n in (2, 5):
        clock = Clock()
        bandit = Bandit(seed=1, clock=clock)
        bandit.update_routes({"r": route(n, AdaptiveSpec("errors", 0.05, 0, 1))})
        bandit.record("r", "v0", ok=True, latency_s=0.01)  # numpy imported here, not timed
        us = per_call_us(lambda i, b=bandit, n=n: b.record("r", f"v{i % n}", ok=i % 3 > 0,
                                                           latency_s=0.01), 300)
        print(f"| record + recomputation ({n} variants, 4,000 draws) | {us:.0f} |")


def learn(metric: str, outcome, seeds: range) -> list[int]:
    rounds = []
    for seed in seeds:
        clock = Clock()
        bandit = Bandit(seed=seed, clock=clock)
        bandit.update_routes({"r": route(2, AdaptiveSpec(metric, 0.05, 5.0, 20))})
        rng = random.Random(seed)
        for i in range(1, 20_001):
            shares = bandit.shares("r")
            v = rng.choices(list(shares), weights=list(shares.values()))[0]
            outcome(bandit, v, rng)
            clock.now += 0.1  # a recomputation every 50 requests
            if bandit.shares("r")["v1"] >= 0.9:
                rounds.append(i)
                break
        else:
            rounds.append(20_000)
    return rounds


def convergence(runs: int) -> None:
    print("\n| metric | variants (v0 vs v1, v1 better) | requests until v1 holds >= 90 %: "
          "median (min–max) |\n|---|---|---|")

    def errors(p0: float, p1: float):
        return lambda b, v, r: b.record("r", v, ok=r.random() >= (p0 if v == "v0" else p1),
                                        latency_s=0.01)

    def latency(m0: float, m1: float):
        return lambda b, v, r: b.record("r", v, ok=True, latency_s=r.expovariate(
            1 / (m0 if v == "v0" else m1)))

    def feedback(p0: float, p1: float):
        return lambda b, v, r: b.feedback("r", v, float(r.random() < (p0 if v == "v0" else p1)))

    for metric, label, outcome in [
        ("errors", "30 % vs 2 % errors", errors(0.30, 0.02)),
        ("errors", "10 % vs 5 % errors", errors(0.10, 0.05)),
        ("latency", "exponential, mean 120 ms vs 60 ms", latency(0.120, 0.060)),
        ("feedback", "55 % vs 80 % thumbs up", feedback(0.55, 0.80)),
    ]:
        r = learn(metric, outcome, range(runs))
        print(f"| {metric} | {label} | {statistics.median(r):.0f} ({min(r)}–{max(r)}) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="seeds per convergence row")
    args = parser.parse_args()
    cost()
    convergence(args.runs)
