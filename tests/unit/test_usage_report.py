"""``Spend.report``, the one usage query behind ``litegate usage`` and the console's Usage
page, over the real in-process storage: per-day buckets with the prompt/completion split,
rows per key, route and variant, budgets, the key filter and the bound on days."""

from __future__ import annotations

import asyncio

import pytest
from limits.storage import storage_from_string

from litegate.policies.limit_storage import LocalStorage  # noqa: F401  (registers async+local)
from litegate.policies.spend import DAY, RETENTION_DAYS, Spend, day_date
from litegate.snapshot import KeySpec, RouteSpec, Snapshot, UpstreamSpec, VariantSpec, \
    build_budget, nano_per_token

UP = UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0)
SMALL = VariantSpec("small", UP, "m1", 1, nano_per_token(0.15), nano_per_token(0.60))
BIG = VariantSpec("big", UP, "m2", 1, nano_per_token(2.5), nano_per_token(10))


def route(name: str, *variants: VariantSpec) -> RouteSpec:
    return RouteSpec(name, variants, (1,) * len(variants), len(variants), "none", None, None,
                     (), (), None)


ALICE = KeySpec(id=1, name="alice", routes=None, is_admin=False, expires_at=None,
                budget=build_budget(0.001, "30d", 0.5))
BOB = KeySpec(id=2, name="bob", routes=frozenset({"chat"}), is_admin=False, expires_at=None)
SNAPSHOT = Snapshot(
    routes={"chat": route("chat", SMALL, BIG), "embed": route("embed", SMALL)},
    keys={"h1": ALICE, "h2": BOB},
)
NOW = 20_000 * DAY + 3_600.0  # one hour into UTC day 20000


def test_days_rows_budgets_and_filter():
    async def main() -> None:
        spend = Spend(storage_from_string("async+local://"))
        await spend.record(ALICE, "chat", SMALL, 100, 50, now=NOW - 2 * DAY)
        await spend.record(ALICE, "chat", BIG, 10, 20, now=NOW)
        await spend.record(ALICE, "chat", BIG, 10, 20, now=NOW)
        await spend.record(ALICE, "embed", SMALL, 7, 0, now=NOW - DAY)
        await spend.record(BOB, "chat", SMALL, 1, 2, now=NOW - 10 * DAY)  # outside 7 days

        report = await spend.report(SNAPSHOT, days=7, now=NOW)
        assert report.days == list(range(19_994, 20_001))
        assert [(r.key, r.route, r.variant, r.totals.requests) for r in report.rows] == [
            ("alice", "chat", "small", 1), ("alice", "chat", "big", 2),
            ("alice", "embed", "small", 1),
        ]
        [alice] = report.keys  # bob had no traffic in these 7 days
        assert [(d.prompt_tokens, d.completion_tokens) for d in alice.days[-3:]] == [
            (100, 50), (7, 0), (20, 40)]
        assert sum(d.requests for d in alice.days) == alice.total.requests == 4
        cost = 100 * 150 + 50 * 600 + 2 * (10 * 2500 + 20 * 10_000) + 7 * 150
        assert alice.total.cost_nano == cost
        [budget] = report.budgets
        assert (budget.key, budget.spent_nano, budget.alert_nano) == ("alice", cost, 500_000)
        assert not budget.alert and not budget.exceeded

        wide = await spend.report(SNAPSHOT, days=30, key_ids={2}, now=NOW)
        assert [(r.key, r.totals.prompt_tokens) for r in wide.rows] == [("bob", 1)]
        assert wide.budgets == []
        doc = wide.as_dict()
        assert doc["days"][0] == day_date(19_971) and doc["days"][-1] == "2024-10-04"
        assert doc["daily"][0]["days"][-11] == {  # type: ignore[index]
            "date": "2024-09-24", "requests": 1, "prompt_tokens": 1, "completion_tokens": 2,
            "total_tokens": 3, "cost_usd": (150 + 2 * 600) / 1e9}

        for days in (0, RETENTION_DAYS + 1):
            with pytest.raises(ValueError, match="days must be from 1"):
                await spend.report(SNAPSHOT, days=days, now=NOW)

    asyncio.run(main())


def test_redis_reads_by_mget_give_the_same_report():
    """Over Redis the counters are read by MGET in slices of ``MGET_BATCH``; a 400-day
    report (3,200 counters per key) crosses a slice boundary and must equal the report
    over the in-process storage."""
    from litegate.policies.spend import MGET_BATCH
    from tests.helpers.services import redis_server

    assert 400 * 2 * 4 > MGET_BATCH

    async def fill(spend: Spend) -> None:
        for back in (0, 1, 250, 399):
            await spend.record(ALICE, "chat", BIG, 3 + back, 4, now=NOW - back * DAY)
            await spend.record(BOB, "chat", SMALL, 1, back, now=NOW - back * DAY)

    async def main(redis: str) -> None:
        local = Spend(storage_from_string("async+local://"))
        shared = Spend(storage_from_string("async+" + redis))
        await fill(local)
        await fill(shared)
        expected = (await local.report(SNAPSHOT, days=400, now=NOW)).as_dict()
        assert (await shared.report(SNAPSHOT, days=400, now=NOW)).as_dict() == expected
        assert [r["requests"] for r in expected["usage"]] == [4, 4]  # type: ignore[index]

    with redis_server() as redis:
        asyncio.run(main(redis))
