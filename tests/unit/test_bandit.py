"""The adaptive A/B bandit at policy level: simulated runs with a fixed seed, where one
variant is measurably better, converge on it; no variant ever drops below the floor;
shares move only after the cool-down; sticky clients keep their variant; every table
is bounded."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from prometheus_client import generate_latest

from litegate.policies.bandit import Bandit, PendingFeedback, floored
from litegate.policies.metrics import Metrics
from litegate.policies.stats import Stats
from litegate.policies.variants import choose_variant
from litegate.snapshot import AdaptiveSpec, RouteSpec, UpstreamSpec, VariantSpec

UP = UpstreamSpec("u", "openai", "http://x", None, 5, 1, 0)


def route(
    weights: list[int], *, metric: str = "errors", min_share: float = 0.05,
    cooldown_s: float = 10.0, min_samples: int = 20, sticky: str = "none", name: str = "r",
    adaptive: bool = True,
) -> RouteSpec:
    variants = tuple(VariantSpec(f"v{i}", UP, f"m{i}", w) for i, w in enumerate(weights))
    cum, total = [], 0
    for w in weights:
        total += w
        cum.append(total)
    spec = AdaptiveSpec(metric, min_share, cooldown_s, min_samples) if adaptive else None
    return RouteSpec(name, variants, tuple(cum), total, sticky, None, None, (), (), None,
                     adaptive=spec)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    spec: RouteSpec, outcome, *, rounds: int, step_s: float = 0.1, seed: int = 7
) -> tuple[Bandit, list[dict[str, float]]]:
    """Send ``rounds`` requests by the bandit's current shares; ``outcome(variant, rng)``
    says what happened. Returns the bandit and the shares seen after every request."""
    clock = Clock()
    bandit = Bandit(seed=seed, clock=clock)
    bandit.update_routes({spec.name: spec})
    rng = random.Random(seed)
    history = []
    for _ in range(rounds):
        shares = bandit.shares(spec.name)
        variant = rng.choices(list(shares), weights=list(shares.values()))[0]
        outcome(bandit, variant, rng)
        clock.now += step_s
        history.append(bandit.shares(spec.name))
    return bandit, history


def assert_floor(history: list[dict[str, float]], min_share: float) -> None:
    for shares in history:
        assert min(shares.values()) >= min_share - 1e-9
        assert sum(shares.values()) == pytest.approx(1.0)


def test_errors_metric_converges_on_the_variant_that_fails_less() -> None:
    spec = route([50, 50], metric="errors", cooldown_s=5)
    error_rate = {"v0": 0.30, "v1": 0.02}

    def outcome(bandit: Bandit, v: str, rng: random.Random) -> None:
        bandit.record("r", v, ok=rng.random() >= error_rate[v], latency_s=0.01)

    bandit, history = simulate(spec, outcome, rounds=3000)
    assert_floor(history, 0.05)
    top = 1 - 0.05 * 1
    assert bandit.shares("r")["v1"] >= top - 0.01
    assert bandit.shares("r")["v0"] == pytest.approx(0.05, abs=0.01)


def test_latency_metric_converges_on_the_faster_of_three_and_keeps_the_floor() -> None:
    spec = route([1, 1, 1], metric="latency", min_share=0.1, cooldown_s=5)
    mean_s = {"v0": 0.120, "v1": 0.060, "v2": 0.100}

    def outcome(bandit: Bandit, v: str, rng: random.Random) -> None:
        bandit.record("r", v, ok=True, latency_s=rng.expovariate(1 / mean_s[v]) * 0.3
                      + mean_s[v] * 0.7)

    bandit, history = simulate(spec, outcome, rounds=4000)
    assert_floor(history, 0.1)
    shares = bandit.shares("r")
    assert shares["v1"] >= 1 - 0.1 * 2 - 0.02
    assert shares["v0"] == pytest.approx(0.1, abs=0.02)


def test_feedback_metric_converges_on_the_better_rated_variant() -> None:
    spec = route([80, 20], metric="feedback", cooldown_s=2)
    liked = {"v0": 0.55, "v1": 0.80}

    def outcome(bandit: Bandit, v: str, rng: random.Random) -> None:
        bandit.record("r", v, ok=True, latency_s=0.01)  # feedback routes learn from scores
        assert bandit.feedback("r", v, 1.0 if rng.random() < liked[v] else 0.0)

    bandit, history = simulate(spec, outcome, rounds=4000)
    assert_floor(history, 0.05)
    assert bandit.shares("r")["v1"] >= 0.95 - 0.01


def test_equal_variants_keep_every_share_at_or_above_the_floor() -> None:
    spec = route([1, 1, 1, 1], metric="errors", min_share=0.2, cooldown_s=1)

    def outcome(bandit: Bandit, v: str, rng: random.Random) -> None:
        bandit.record("r", v, ok=rng.random() < 0.9, latency_s=0.01)

    _, history = simulate(spec, outcome, rounds=2000)
    assert_floor(history, 0.2)


def test_configured_weights_are_the_starting_shares_under_the_floor() -> None:
    bandit = Bandit(seed=1, clock=Clock())
    bandit.update_routes({"r": route([90, 10, 0], min_share=0.05)})
    shares = bandit.shares("r")
    assert shares == pytest.approx({"v0": 0.05 + 0.9 * 0.9, "v1": 0.05 + 0.9 * 0.1, "v2": 0.0})
    assert floored(route([3, 1]), {"v0": 3, "v1": 1}, 0.0) == (0.75, 0.25)


def test_shares_change_only_after_the_cooldown_and_min_samples() -> None:
    clock = Clock()
    bandit = Bandit(seed=3, clock=clock)
    bandit.update_routes({"r": route([50, 50], cooldown_s=30, min_samples=50)})
    start = bandit.shares("r")
    for _ in range(200):  # overwhelming evidence, but within the cool-down
        bandit.record("r", "v0", ok=False, latency_s=0.01)
        bandit.record("r", "v1", ok=True, latency_s=0.01)
        clock.now += 0.1
    assert bandit.shares("r") == start  # 20 s < 30 s
    clock.now += 10
    bandit.record("r", "v1", ok=True, latency_s=0.01)
    moved = bandit.shares("r")
    assert moved["v1"] > 0.9
    for _ in range(50):  # the next change waits another 30 s
        bandit.record("r", "v1", ok=False, latency_s=0.01)
        clock.now += 0.5
    assert bandit.shares("r") == moved

    fresh = Bandit(seed=3, clock=clock)
    fresh.update_routes({"r": route([50, 50], cooldown_s=0, min_samples=50)})
    for _ in range(24):
        fresh.record("r", "v0", ok=False, latency_s=0.01)
        fresh.record("r", "v1", ok=True, latency_s=0.01)
    assert fresh.shares("r") == {"v0": 0.5, "v1": 0.5}  # 48 outcomes < min_samples
    fresh.record("r", "v1", ok=True, latency_s=0.01)
    fresh.record("r", "v1", ok=True, latency_s=0.01)
    assert fresh.shares("r")["v1"] > 0.9


def test_sticky_clients_keep_their_variant_while_it_is_configured() -> None:
    clock = Clock()
    bandit = Bandit(seed=5, clock=clock)
    spec = route([50, 50], cooldown_s=0, min_samples=1, sticky="key")
    bandit.update_routes({"r": spec})
    before = {i: bandit.choose(spec, str(i).encode()).name for i in range(200)}
    assert set(before.values()) == {"v0", "v1"}
    for _ in range(300):
        bandit.record("r", "v0", ok=False, latency_s=0.01)
        bandit.record("r", "v1", ok=True, latency_s=0.01)
    assert bandit.shares("r")["v1"] > 0.9
    assert {i: bandit.choose(spec, str(i).encode()).name for i in range(200)} == before
    # New clients now mostly land on the winner.
    newcomers = [bandit.choose(spec, f"new-{i}".encode()).name for i in range(400)]
    assert newcomers.count("v1") > 0.85 * 400
    # v0 drained (weight 0): its clients move; v0 removed entirely: likewise.
    drained = route([0, 50, 50], cooldown_s=0, min_samples=1, sticky="key")
    bandit.update_routes({"r": drained})
    assert all(bandit.choose(drained, str(i).encode()).name != "v0" for i in range(200))


def test_sticky_memory_is_bounded() -> None:
    bandit = Bandit(seed=5, clock=Clock(), max_sticky=50)
    spec = route([50, 50], cooldown_s=0, min_samples=1, sticky="key")
    bandit.update_routes({"r": spec})
    for i in range(500):
        bandit.choose(spec, str(i).encode())
    assert len(bandit._sticky) == 50


def test_sticky_memory_is_bounded_in_bytes_whatever_the_header_length() -> None:
    """A ``header:`` sticky value is the client's header, up to the server's header
    bound (tens of KB); before the fix each remembered assignment kept it whole, so the
    100,000-entry table could hold gigabytes. Now it keeps a fixed-size digest."""
    import tracemalloc

    bandit = Bandit(seed=5, clock=Clock())
    spec = route([50, 50], cooldown_s=0, min_samples=1, sticky="header:X-User")
    bandit.update_routes({"r": spec})

    def user(i: int) -> bytes:  # a fresh 12 KB header value per request, as a server gives
        return (b"%06d" % i) * 2000

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        first = [bandit.choose(spec, user(i)).name for i in range(500)]  # 6 MB of headers
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(bandit._sticky) == 500
    assert kept < 500_000, kept
    assert [bandit.choose(spec, user(i)).name for i in range(500)] == first  # still sticky


def test_routes_without_adaptive_keep_their_weights_and_ignore_outcomes() -> None:
    bandit = Bandit(seed=1, clock=Clock())
    spec = route([70, 30], adaptive=False)
    bandit.update_routes({"r": spec})
    for _ in range(100):
        bandit.record("r", "v0", ok=False, latency_s=0.01)
    assert bandit.shares("r") == pytest.approx({"v0": 0.7, "v1": 0.3})
    assert bandit.adaptive("r") is None
    assert not bandit.feedback("r", "v0", 1.0)
    # The same sticky point as choose_variant on the weights.
    assert all(bandit.choose(spec, str(i).encode()) is choose_variant(spec, str(i).encode())
               for i in range(100))


def test_state_follows_the_configuration_and_the_gauge_only_has_configured_names() -> None:
    metrics, stats, clock = Metrics(), Stats(), Clock()
    bandit = Bandit(metrics=metrics, stats=stats, seed=2, clock=clock)
    a = route([50, 50], name="a", cooldown_s=0, min_samples=1)
    bandit.update_routes({"a": a, "b": route([1, 3], name="b", adaptive=False)})
    for _ in range(100):
        bandit.record("a", "v1", ok=True, latency_s=0.01)
        bandit.record("a", "v0", ok=False, latency_s=0.01)
        bandit.record("a", "not-a-variant", ok=False, latency_s=0.01)
    text = generate_latest(metrics.registry).decode()
    assert 'litegate_variant_share{route="b",variant="v1"} 0.75' in text
    assert "not-a-variant" not in text
    assert stats.shares["a"]["adaptive"] == "errors"
    assert stats.shares["a"]["shares"]["v1"] > 0.9
    # Same configuration again: the learnt shares stay.
    learnt = bandit.shares("a")
    bandit.update_routes({"a": a})
    assert bandit.shares("a") == learnt
    # Weights edited by an operator: back to them, evidence kept; route b gone everywhere.
    edited = route([20, 80], name="a", cooldown_s=0, min_samples=1)
    bandit.update_routes({"a": edited})
    assert bandit.shares("a") == pytest.approx({"v0": 0.05 + 0.9 * 0.2, "v1": 0.05 + 0.9 * 0.8})
    assert bandit._states["a"].arms["v1"].successes == 100
    text = generate_latest(metrics.registry).decode()
    assert 'route="b"' not in text
    assert set(stats.shares) == {"a"}


def test_evidence_is_capped_so_a_variant_can_win_back() -> None:
    clock = Clock()
    bandit = Bandit(seed=4, clock=clock)
    bandit.update_routes({"r": route([50, 50], cooldown_s=1, min_samples=1)})
    for _ in range(5000):
        bandit.record("r", "v0", ok=False, latency_s=0.01)
        bandit.record("r", "v1", ok=True, latency_s=0.01)
        clock.now += 0.01
    arm = bandit._states["r"].arms["v0"]
    assert arm.successes + arm.failures <= 1000.0 + 1e-6
    assert bandit.shares("r")["v0"] < 0.1
    for _ in range(3000):  # v0 fixed, v1 broke
        bandit.record("r", "v0", ok=True, latency_s=0.01)
        bandit.record("r", "v1", ok=False, latency_s=0.01)
        clock.now += 0.01
    assert bandit.shares("r")["v0"] > 0.9


def test_choose_variant_with_shares_skips_zero_shares_and_is_sticky() -> None:
    spec = route([1, 1, 1])
    cumulative = (0.5, 0.5, 1.0)
    assert {choose_variant(spec, str(i).encode(), cumulative).name for i in range(300)} == {
        "v0", "v2"}
    assert all(choose_variant(spec, b"k", cumulative) is choose_variant(spec, b"k", cumulative)
               for _ in range(10))


def test_pending_feedback_is_an_lru_with_a_ttl_taken_once() -> None:
    clock = Clock()
    pending = PendingFeedback(max_entries=3, ttl_s=60, clock=clock)
    for i in range(5):
        pending.remember(f"req-{i}", "r", "v0", 1)
    assert len(pending) == 3
    assert pending.peek("req-0", 1) is None and pending.peek("req-1", 1) is None
    assert pending.take("req-4", 1) == ("r", "v0")
    assert pending.take("req-4", 1) is None  # once
    pending.remember("req-3", "r", "v1", 2)  # another key's id: its own entry
    assert pending.peek("req-3", 1) == ("r", "v0") and pending.peek("req-3", 2) == ("r", "v1")
    assert pending.take("req-2", 2) is None  # not this key's request
    clock.now += 61
    assert pending.take("req-2", 1) is None  # expired


def test_turning_adaptive_on_keeps_sticky_clients_where_the_weights_put_them() -> None:
    fixed = route([70, 30], adaptive=False, sticky="key")
    adaptive = route([70, 30], min_share=0.0, sticky="key")
    bandit = Bandit(seed=1, clock=Clock())
    bandit.update_routes({"r": adaptive})
    keys = [str(i).encode() for i in range(500)]
    assert [bandit.choose(adaptive, k).name for k in keys] == [
        choose_variant(fixed, k).name for k in keys]
    # And a shifted split still spreads new sticky clients by the shares (fine-grained).
    spread = Counter(choose_variant(route([1, 1]), str(i).encode(), (0.9, 1.0)).name
                     for i in range(2000))
    assert 0.86 < spread["v0"] / 2000 < 0.94
