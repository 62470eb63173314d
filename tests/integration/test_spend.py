"""Spend and budgets per key: prices per variant, exact cost, streams, 429 budget_exceeded
across 3 replicas on one Redis, ``litegate usage --json`` / ``--csv``."""

from __future__ import annotations

import csv
import json
import time

import httpx
import openai

from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.services import redis_server

PRICE = {"input_per_1m": 0.15, "output_per_1m": 0.60}


def priced_config(base_url: str, price: dict[str, float]) -> dict[str, object]:
    doc = chat_config(base_url)
    doc["routes"][0]["variants"][0]["price"] = price  # type: ignore[index]
    return doc


def usage(home, redis: str, *args: str) -> dict:
    code, out, err = run_cli("usage", "--json", *args, home=home, extra=("--redis", redis))
    assert code == 0, err
    return json.loads(out)


def wait_usage(home, redis: str, requests: int) -> dict:
    deadline = time.time() + 3
    while True:
        data = usage(home, redis)
        got = sum(r["requests"] for r in data["usage"])
        if got >= requests or time.time() > deadline:
            return data
        time.sleep(0.05)


def chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])


def test_cost_is_exact_and_streams_are_counted(home, tmp_path, fake_upstream, make_gateway):
    with redis_server() as redis:
        assert apply_config(home, priced_config(fake_upstream.base_url, PRICE))[0] == 0
        key = create_key(home, "team-a")
        server = make_gateway(redis=redis)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        for _ in range(3):
            chat(client)  # the upstream reports prompt 5, completion 7
        data = wait_usage(home, redis, 3)
        assert data["usage"] == [{
            "key": "team-a", "route": "chat", "variant": "small-model", "requests": 3,
            "prompt_tokens": 15, "completion_tokens": 21, "total_tokens": 36,
            # 15 × 0.15 / 1e6 + 21 × 0.60 / 1e6, to the nano-dollar
            "cost_usd": (15 * 150 + 21 * 600) / 1e9,
        }]
        for _chunk in client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello " * 40}], stream=True
        ):
            pass
        row = wait_usage(home, redis, 4)["usage"][0]
        assert row["requests"] == 4
        # This upstream's streams carry no usage: the estimate (prompt ≈ bytes / 4, one
        # token per event) is split into prompt and completion and priced the same way.
        stream_prompt, stream_completion = row["prompt_tokens"] - 15, row["completion_tokens"] - 21
        assert stream_prompt >= 60 and stream_completion == fake_upstream.chunks
        assert row["cost_usd"] == (row["prompt_tokens"] * 150 + row["completion_tokens"] * 600) / 1e9
        out = tmp_path / "usage.csv"
        code, _, err = run_cli("usage", "--csv", str(out), "--since", "1d", home=home,
                               extra=("--redis", redis))
        assert code == 0, err
        rows = list(csv.DictReader(out.open()))
        assert [(r["key"], r["route"], r["variant"], r["requests"]) for r in rows] == [
            ("team-a", "chat", "small-model", "4")
        ]


def post(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
                      timeout=10)


def test_one_budget_across_three_replicas_on_redis(home, fake_upstream, make_gateway):
    with redis_server() as redis:
        # $1000 per 1M tokens each way: 12 tokens cost $0.012 a request.
        price = {"input_per_1m": 1000, "output_per_1m": 1000}
        assert apply_config(home, priced_config(fake_upstream.base_url, price))[0] == 0
        key = create_key(home, "capped", "--budget", "0.03", "--budget-period", "30d",
                         "--budget-alert", "0.5")
        a, b, c = (make_gateway(redis=redis) for _ in range(3))
        statuses = [post(s.url, key).status_code for s in (a, b, c, a, b, c)]
        # 0 → 0.012 → 0.024 → 0.036: the fourth request, on any replica, is refused.
        assert statuses == [200, 200, 200, 429, 429, 429], statuses
        r = post(b.url, key)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "budget_exceeded"
        assert int(r.headers["retry-after"]) > 0
        assert fake_upstream.calls.__len__() == 3  # refused before the upstream call
        data = usage(home, redis)
        assert data["budgets"] == [{
            "key": "capped", "max_usd": 0.03, "period": "30d", "spent_usd": 0.036,
            "alert_at": 0.5, "alert": True, "exceeded": True,
        }]
        assert data["usage"][0]["requests"] == 3
        # Raising the budget reaches both replicas with the next snapshot.
        code, out, err = run_cli("keys", "update", "1", "--budget", "1", "--budget-alert", "0.9",
                                 home=home)
        assert code == 0 and "budget $1 per 30d, alert at 0.9" in out, err
        assert "$1 per 30d, alert at 0.9" in run_cli("keys", "list", home=home)[1]
        deadline = time.time() + 2
        while time.time() < deadline and {post(s.url, key).status_code for s in (a, b, c)} != {200}:
            time.sleep(0.05)
        assert {post(s.url, key).status_code for s in (a, b, c)} == {200}


def test_official_client_sees_budget_exceeded(home, fake_upstream, make_gateway):
    price = {"input_per_1m": 1000, "output_per_1m": 1000}
    assert apply_config(home, priced_config(fake_upstream.base_url, price))[0] == 0
    key = create_key(home, "tiny", "--budget", "0.001", "--budget-period", "1d")
    server = make_gateway()  # in-memory counters: one process
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    chat(client)  # $0.012 > $0.001: spent after one request
    time.sleep(0.1)
    try:
        chat(client)
    except openai.RateLimitError as exc:
        assert exc.status_code == 429
        assert exc.body["code"] == "budget_exceeded"
        assert exc.body["type"] == "insufficient_quota"
    else:
        raise AssertionError("the budget did not stop the second request")


def test_prices_and_budgets_are_validated(home, fake_upstream):
    code, _, err = apply_config(home, priced_config(fake_upstream.base_url,
                                                    {"input_per_1m": -1, "output_per_1m": 0.6}))
    assert code == 1 and "routes[0].variants[0].price.input_per_1m" in err
    code, _, err = apply_config(home, priced_config(fake_upstream.base_url, {"input": 1}))
    assert code == 1 and "price" in err
    assert apply_config(home, priced_config(fake_upstream.base_url, PRICE))[0] == 0
    code, out, _ = run_cli("config", "export", home=home)
    assert "input_per_1m: 0.15" in out and "output_per_1m: 0.6" in out
    code, _, err = run_cli("keys", "create", "--name", "x", "--budget", "10", "--budget-period",
                           "monthly", home=home)
    assert code == 1 and "budget.period" in err
    code, _, err = run_cli("keys", "create", "--name", "x", "--budget", "-5", home=home)
    assert code == 1 and "budget.max_usd" in err


def test_usage_without_redis_says_what_to_set(home):
    code, _, err = run_cli("usage", "--json", home=home)
    assert code == 3 and "LITEGATE_REDIS" in err


def test_usage_since_is_whole_days_up_to_the_retention(home):
    for bad, message in (("401d", "usage is kept 400 days"), ("7x", "expected a period")):
        code, _, err = run_cli("usage", "--since", bad, home=home, extra=("--redis", "redis://x"))
        assert code == 1 and message in err, err


def test_budget_with_redis_down_is_fail_open_or_closed(home, fake_upstream, make_gateway):
    with redis_server() as redis:
        pass  # started and stopped: the port is now closed
    assert apply_config(home, priced_config(fake_upstream.base_url, PRICE))[0] == 0
    key = create_key(home, "b", "--budget", "5")
    open_gw = make_gateway(redis=redis, limit_fail_open=True)
    closed_gw = make_gateway(redis=redis, limit_fail_open=False)
    assert post(open_gw.url, key).status_code == 200  # usage not recorded, only logged
    r = post(closed_gw.url, key)
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


def test_migration_0005_up_and_down_on_sqlite(home):
    import sqlalchemy as sa

    from litegate.db import migrate
    from litegate.settings import Settings

    url = Settings.load(home=home).db_url
    sync_url = url.replace("+aiosqlite", "")

    def columns(table: str) -> set[str]:
        engine = sa.create_engine(sync_url)
        try:
            return {c["name"] for c in sa.inspect(engine).get_columns(table)}
        finally:
            engine.dispose()

    migrate.upgrade(url, "0005")
    assert {"price_input_per_1m", "price_output_per_1m"} <= columns("route_variants")
    assert {"budget_usd", "budget_period", "budget_alert_at"} <= columns("api_keys")
    migrate.downgrade(url, "0004")
    assert not {"price_input_per_1m", "price_output_per_1m"} & columns("route_variants")
    assert not {"budget_usd", "budget_period", "budget_alert_at"} & columns("api_keys")
    migrate.upgrade(url)
    assert "(head)" in migrate.current(url)


def test_cache_hits_cost_nothing(home, fake_upstream, make_gateway):
    with redis_server() as redis:
        doc = priced_config(fake_upstream.base_url, PRICE)
        doc["routes"][0]["cache"] = {"ttl_s": 60}  # type: ignore[index]
        assert apply_config(home, doc)[0] == 0
        key = create_key(home, "cached")
        server = make_gateway(redis=redis)
        assert [post(server.url, key).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        time.sleep(0.2)
        [row] = usage(home, redis)["usage"]
        assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, 5, 7)


def test_usage_is_exact_across_three_gateway_processes(home, fake_upstream):
    """Three ``litegate serve`` processes on one Redis, hit concurrently: ``litegate
    --redis URL usage`` (another process) reports every request, token and nano-dollar."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from tests.helpers.cli import run_litegate, serving
    from tests.helpers.servers import free_port

    with redis_server() as redis, contextlib.ExitStack() as stack:
        price = {"input_per_1m": 0.15, "output_per_1m": 0.60}
        assert apply_config(home, priced_config(fake_upstream.base_url, price))[0] == 0
        keys = {name: create_key(home, name, "--budget", "100") for name in ("alpha", "beta")}
        urls = []
        for _ in range(3):
            port = free_port()
            stack.enter_context(serving("--port", str(port), "--redis", redis, home=home))
            urls.append(f"http://127.0.0.1:{port}")
        jobs = [(urls[i % 3], keys["alpha" if i % 4 else "beta"]) for i in range(240)]
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda job: post(*job).status_code, jobs))
        assert statuses == [200] * 240
        sent = {"alpha": 180, "beta": 60}
        deadline = time.time() + 5
        while True:  # each replica records just after its response
            out = run_litegate("--redis", redis, "usage", "--json", "--since", "1d", home=home)
            assert out.returncode == 0, out.stderr
            data = json.loads(out.stdout)
            if sum(r["requests"] for r in data["usage"]) >= 240 or time.time() > deadline:
                break
            time.sleep(0.05)
    nano = 5 * 150 + 7 * 600  # per request: prompt 5, completion 7, in nano-dollars
    assert [(r["key"], r["requests"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"])
            for r in data["usage"]] == [
        (name, n, 5 * n, 7 * n, n * nano / 1e9) for name, n in sent.items()]
    assert [(b["key"], b["spent_usd"]) for b in data["budgets"]] == [
        (name, n * nano / 1e9) for name, n in sent.items()]
    assert [d["requests"] for d in data["daily"][0]["days"]] == [180]
