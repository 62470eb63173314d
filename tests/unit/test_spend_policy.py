"""The spend policy over the real in-process storage: exact cost, budget windows, the
alert logged once per period."""

from __future__ import annotations

import asyncio

import pytest
from limits.storage import storage_from_string
from structlog.testing import capture_logs

from litegate.errors import BudgetExceeded
from litegate.policies.limit_storage import LocalStorage  # noqa: F401  (registers async+local)
from litegate.policies.spend import Spend, cost_nano
from litegate.snapshot import KeySpec, UpstreamSpec, VariantSpec, build_budget, nano_per_token

UP = UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0)
VARIANT = VariantSpec("v", UP, "m", 1, nano_per_token(0.15), nano_per_token(0.60))


def key(max_usd: float, period: str = "1d", alert_at: float | None = 0.8) -> KeySpec:
    return KeySpec(id=7, name="k", routes=None, is_admin=False, expires_at=None,
                   budget=build_budget(max_usd, period, alert_at))


def test_cost_is_integer_nano_dollars():
    assert (VARIANT.input_nano_per_token, VARIANT.output_nano_per_token) == (150, 600)
    assert cost_nano(VARIANT, 5, 7) == 5 * 150 + 7 * 600
    assert cost_nano(None, 5, 7) == 0


def test_budget_window_alert_once_and_hard_stop():
    async def main() -> None:
        spend = Spend(storage_from_string("async+local://"))
        k = key(0.00001)  # 10_000 nano-USD; each request costs 4_950
        t = 1_000_000.0
        with capture_logs() as logs:
            for _ in range(2):
                await spend.check(k, now=t)
                await spend.record(k, "chat", VARIANT, 5, 7, now=t)
            await spend.check(k, now=t)  # 9_900 < 10_000: still allowed
            await spend.record(k, "chat", VARIANT, 5, 7, now=t)
        alerts = [e for e in logs if e["event"] == "budget_alert"]
        assert len(alerts) == 1 and alerts[0]["key"] == "k"  # crossed 8_000 once
        with pytest.raises(BudgetExceeded) as exc:
            await spend.check(k, now=t)
        assert exc.value.code == "budget_exceeded" and exc.value.status_code == 429
        assert await spend.spent_nano(k, now=t) == 3 * 4_950
        # The next day is a new window (the in-process storage expires by wall clock, so
        # the window is told apart by its key).
        assert await spend.spent_nano(k, now=t + 86_400) == 0

    asyncio.run(main())
