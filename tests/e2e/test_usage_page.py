"""The console's Usage page in real Chromium, after real traffic: the official ``openai``
client sends chat completions (plain and streamed) through the gateway under uvicorn to a
fake OpenAI-compatible upstream, with the counters in a real Redis. The page must show
what ``litegate usage --json`` reports from that Redis, and its CSV link must download
the same rows. The screenshot goes to ``docs/screenshots/usage.png``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from litegate.app import create_app
from litegate.db import migrate
from litegate.settings import Settings
from tests.e2e.support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    add_user,
    browser_login,
    launch_chromium,
    screenshot,
)
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.servers import ThreadServer, run_fake_upstream
from tests.helpers.services import redis_server

pytestmark = pytest.mark.timeout(240)


def _config(base_url: str) -> dict[str, Any]:
    doc = chat_config(base_url, sticky="none")
    doc["routes"][0]["variants"] = [
        {"upstream": "mock", "model": "small-model", "weight": 50,
         "price": {"input_per_1m": 15, "output_per_1m": 60}},
        {"upstream": "mock", "model": "big-model", "weight": 50,
         "price": {"input_per_1m": 250, "output_per_1m": 1_000}},
    ]
    return doc


def _traffic(url: str, key: str, plain: int, streamed: int) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    for _ in range(plain):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    for _ in range(streamed):
        for _chunk in client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "tell me more " * 10}],
            stream=True,
        ):
            pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("usage") / "home"
    with run_fake_upstream(chunk_delay_s=0.0) as fake, redis_server() as redis:
        assert apply_config(home, _config(fake.base_url))[0] == 0
        keys = {
            # Spends $0.006-0.11 whichever variants it gets: past its alert, within budget.
            "research": create_key(home, "research", "--budget", "0.25", "--budget-period",
                                   "30d", "--budget-alert", "0.02"),
            "support-bot": create_key(home, "support-bot", "--budget", "5"),
        }
        settings = Settings.load(home=home, redis=redis, reload_interval_s=0.1)
        migrate.upgrade(settings.db_url)
        asyncio.run(add_user(settings, ADMIN_USER, ADMIN_PASSWORD))
        with ThreadServer(create_app(settings)) as server:
            _traffic(server.url, keys["research"], plain=8, streamed=3)
            _traffic(server.url, keys["support-bot"], plain=5, streamed=0)
            deadline = time.monotonic() + 5
            while True:  # usage is recorded just after each response
                code, out, err = run_cli("usage", "--json", "--since", "7d", home=home,
                                         extra=("--redis", redis))
                assert code == 0, err
                report = json.loads(out)
                if sum(r["requests"] for r in report["usage"]) == 16:
                    break
                assert time.monotonic() < deadline, report
                time.sleep(0.05)
            yield {"url": server.url, "report": report}


def _metric(page: Page, table: str, key: str, metric: str) -> str:
    return page.locator(f"#{table} tr[data-key='{key}'] [data-metric='{metric}']").inner_text()


def test_usage_page_shows_what_litegate_usage_reports(served: dict[str, Any],
                                                      tmp_path: Path) -> None:
    report = served["report"]
    per_key: dict[str, dict[str, float]] = {}
    for row in report["usage"]:
        totals = per_key.setdefault(row["key"], {"requests": 0, "prompt_tokens": 0,
                                                 "completion_tokens": 0, "cost_usd": 0.0})
        for field in totals:
            totals[field] += row[field]
    assert per_key["research"]["requests"] == 11 and per_key["support-bot"]["requests"] == 5

    with sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(base_url=served["url"], viewport={"width": 1280, "height": 860},
                                  accept_downloads=True)
        ctx.set_default_timeout(10_000)
        page = ctx.new_page()
        browser_login(page)
        page.click("nav >> text=Usage")
        expect(page).to_have_url(served["url"] + "/admin/usage")
        expect(page.locator("#usage-scope")).to_contain_text("Counted in Redis by every gateway")
        for key, totals in per_key.items():
            assert _metric(page, "usage-keys", key, "requests") == str(totals["requests"])
            assert _metric(page, "usage-keys", key, "prompt_tokens") == str(totals["prompt_tokens"])
            assert _metric(page, "usage-keys", key, "completion_tokens") == \
                str(totals["completion_tokens"])
        for row in report["usage"]:
            cell = page.locator(f"#usage-rows tr[data-key='{row['key']}'][data-variant="
                                f"'{row['variant']}'] [data-metric='cost']")
            assert cell.inner_text() == f"${row['cost_usd']:.6f}"
        # Charts: tokens (prompt/completion) and spend per day for each key, drawn by the
        # browser with a non-zero size.
        for key in per_key:
            for what in ("tokens per day", "spend per day (USD)"):
                chart = page.locator(f"svg[aria-label='{key}: {what}']")
                box = chart.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 80
            bars = page.locator(f"svg[aria-label='{key}: tokens per day'] g.bar rect")
            assert bars.count() == 2  # today's bar: a prompt and a completion segment
        [research] = [b for b in report["budgets"] if b["key"] == "research"]
        assert _metric(page, "usage-budgets", "research", "spent") == \
            f"${research['spent_usd']:.6f}"
        assert research["alert"] and not research["exceeded"]
        assert _metric(page, "usage-budgets", "research", "state") == "alert"
        expect(page.locator("#usage-budgets tr[data-key='research'] svg.meter")).to_be_visible()
        screenshot(page, "usage")

        page.click("#usage-periods >> text=30d")
        expect(page).to_have_url(served["url"] + "/admin/usage?period=30d")
        page.select_option("#usage-filters select[name=key]", "support-bot")
        page.click("#usage-filters button[type=submit]")
        expect(page.locator("#usage-keys tbody tr")).to_have_count(1)
        assert _metric(page, "usage-keys", "support-bot", "requests") == "5"
        with page.expect_download() as download:
            page.click("#usage-csv")
        assert download.value.suggested_filename == "usage-30d.csv"
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [(r["key"], r["variant"], int(r["requests"]), float(r["cost_usd"])) for r in rows] \
            == [(r["key"], r["variant"], r["requests"], r["cost_usd"]) for r in report["usage"]
                if r["key"] == "support-bot"]

        page.goto("/admin/usage?period=365d")
        expect(page.locator("main")).to_contain_text("period must be one of 1d, 7d, 30d, 90d")
        browser.close()
