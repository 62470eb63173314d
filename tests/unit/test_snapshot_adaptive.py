"""A route's adaptive settings are served only when they pass the rules `config apply`
enforces: a row edited by hand (or written before a rule) falls back to fixed weights with
a warning, as a bad semantic-cache row does, instead of reaching the bandit."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from litegate.snapshot import AdaptiveSpec, build_adaptive


def test_valid_settings_are_served() -> None:
    spec = build_adaptive({"metric": "latency", "min_share": 0.1}, "chat", variants=2)
    assert spec == AdaptiveSpec(metric="latency", min_share=0.1, cooldown_s=30.0, min_samples=20)


@pytest.mark.parametrize(("raw", "variants", "reason"), [
    ({"metric": "vibes"}, 2, "adaptive.metric: must be one of"),
    ({"min_share": 0.6}, 2, "0.6 × 2 variants is more than 1"),
    ({"min_share": float("nan")}, 2, "adaptive.min_share: must be a fraction"),
    ({"min_samples": 0}, 2, "adaptive.min_samples: must be between 1"),
    ({"cooldown_s": -1}, 2, "adaptive.cooldown_s: must be between 0"),
    ({}, 1, "needs at least two variants"),
    ({"metric": 7}, 2, "Expected `str`"),
])
def test_settings_config_apply_would_refuse_serve_fixed_weights(raw, variants, reason) -> None:
    with capture_logs() as logs:
        assert build_adaptive(raw or {"metric": "errors"}, "chat", variants=variants) is None
    (warning,) = [e for e in logs if e["event"] == "adaptive_ignored"]
    assert warning["route"] == "chat" and reason in warning["error"], warning
