"""Adaptive A/B through a real gateway: two fake upstreams (one failing 30 % of the
time), the official ``openai`` client, ``/v1/feedback`` by the ``X-Request-ID`` of an
answer, sticky clients, the share gauge, config validation and export."""

from __future__ import annotations

import argparse
import itertools
import re
from collections import Counter
from collections.abc import Iterator
from unittest.mock import ANY

import httpx
import openai
import pytest
import yaml
from aiohttp import web

from tests.helpers.cli import apply_config, create_key, run_cli
from tests.helpers.servers import serve_aiohttp

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture
def flaky_upstream() -> Iterator[str]:
    """An OpenAI-compatible upstream that answers 500 to 3 requests in every 10."""
    counter = itertools.count()

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        if next(counter) % 10 in (1, 4, 7):
            return web.json_response({"error": {"message": "flaky", "type": "server_error"}},
                                     status=500)
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with serve_aiohttp(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


def config(good: str, flaky: str) -> dict:
    return {
        "upstreams": [{"name": "good", "base_url": good, "max_retries": 0},
                      {"name": "flaky", "base_url": flaky, "max_retries": 0}],
        "routes": [
            {"name": "chat", "sticky": "header:X-User",
             "variants": [{"upstream": "good", "model": "m", "name": "steady", "weight": 50},
                          {"upstream": "flaky", "model": "m", "name": "flaky", "weight": 50}],
             "adaptive": {"metric": "errors", "min_share": 0.1, "cooldown_s": 0.2,
                          "min_samples": 20}},
            {"name": "rated", "sticky": "none",
             "variants": [{"upstream": "good", "model": "model-a", "name": "a", "weight": 50},
                          {"upstream": "good", "model": "model-b", "name": "b", "weight": 50}],
             "adaptive": {"metric": "feedback", "min_share": 0.1, "cooldown_s": 0,
                          "min_samples": 10}},
        ],
    }


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def shares(server, route: str) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    pattern = re.compile(r'^litegate_variant_share\{route="' + re.escape(route)
                         + r'",variant="([^"]+)"\} (\S+)$', re.MULTILINE)
    return {m.group(1): float(m.group(2)) for m in pattern.finditer(text)}


def ask(c: openai.OpenAI, route: str, user: str | None = None) -> tuple[str, str, bool]:
    """(variant, request id, ok) of one chat request."""
    headers = {"X-User": user} if user else None
    try:
        raw = c.chat.completions.with_raw_response.create(model=route, messages=MSGS,
                                                          extra_headers=headers)
        return raw.headers["x-litegate-variant"], raw.headers["x-request-id"], True
    except openai.InternalServerError as exc:
        return exc.response.headers["x-litegate-variant"], exc.response.headers["x-request-id"], False


@pytest.fixture
def configured(home, fake_upstream, flaky_upstream) -> None:
    code, _, err = apply_config(home, config(fake_upstream.base_url, flaky_upstream))
    assert code == 0, err


def test_errors_metric_moves_traffic_off_the_flaky_variant_sticky_users_stay(
    home, configured, make_gateway
) -> None:
    key = create_key(home)
    gateway = make_gateway()
    c = client(gateway, key)
    assert shares(gateway, "chat") == {"steady": 0.5, "flaky": 0.5}  # the configured start
    users = {f"user-{i}": ask(c, "chat", f"user-{i}")[0] for i in range(24)}
    assert set(users.values()) == {"steady", "flaky"}

    seen = [ask(c, "chat") for _ in range(300)]
    assert any(not ok for v, _, ok in seen if v == "flaky")
    assert all(ok for v, _, ok in seen if v == "steady")
    now = shares(gateway, "chat")
    assert now["steady"] >= 0.85, now
    assert now["flaky"] >= 0.1 - 1e-9  # the floor
    late = Counter(v for v, _, _ in seen[-100:])
    assert late["steady"] >= 75, late
    assert late["flaky"] >= 1  # still explored

    # Sticky users keep the variant they were given, even the ones on the flaky one.
    assert {u: ask(c, "chat", u)[0] for u in users} == users
    newcomers = Counter(ask(c, "chat", f"new-{i}")[0] for i in range(40))
    assert newcomers["steady"] >= 30, newcomers


def test_feedback_end_to_end_with_the_openai_client(home, configured, make_gateway) -> None:
    key = create_key(home)
    outsider_key = create_key(home, "outsider", "--routes", "chat")
    gateway = make_gateway()
    c = client(gateway, key)
    for _ in range(60):
        variant, rid, ok = ask(c, "rated")
        assert ok
        got = c.post("/feedback", cast_to=object,
                     body={"request_id": rid, "thumbs": "up" if variant == "b" else "down"})
        assert got == {"request_id": rid, "route": "rated", "variant": variant,
                       "score": 1.0 if variant == "b" else 0.0}
    now = shares(gateway, "rated")
    assert now["b"] >= 0.85 and now["a"] >= 0.1 - 1e-9, now
    metrics = httpx.get(gateway.url + "/metrics").text
    assert re.search(r'litegate_feedback_score_count\{route="rated",variant="b"\} [1-9]', metrics)

    _, rid, _ = ask(c, "rated")
    c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 0.5})
    with pytest.raises(openai.NotFoundError, match="once per request"):  # only once
        c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 0.5})
    with pytest.raises(openai.NotFoundError):
        c.post("/feedback", cast_to=object, body={"request_id": "never-seen", "score": 1})
    _, chat_rid, _ = ask(c, "chat")  # a route whose metric is not feedback
    with pytest.raises(openai.NotFoundError):
        c.post("/feedback", cast_to=object, body={"request_id": chat_rid, "score": 1})

    # A key without scope on the route cannot score (nor learn the id exists); the
    # owner still can afterwards.
    _, rid, _ = ask(c, "rated")
    outsider = client(gateway, outsider_key)
    with pytest.raises(openai.NotFoundError):
        outsider.post("/feedback", cast_to=object, body={"request_id": rid, "score": 1})
    assert c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 1})

    for bad, why in [
        ({"request_id": rid, "score": 2}, "between 0 and 1"),
        ({"request_id": rid, "score": True}, "between 0 and 1"),
        ({"request_id": rid, "thumbs": "sideways"}, "'up' or 'down'"),
        ({"request_id": rid, "score": 1, "thumbs": "up"}, "exactly one"),
        ({"score": 1}, "request_id"),
        ({"request_id": rid, "score": 1, "extra": 1}, "unknown field"),
        ([1, 2], "object"),
    ]:
        with pytest.raises(openai.BadRequestError, match=why):
            c.post("/feedback", cast_to=object, body=bad)
    raw = httpx.post(gateway.url + "/v1/feedback", content=b"{not json",
                     headers={"Authorization": f"Bearer {key}"})
    assert raw.status_code == 400 and raw.json()["error"]["message"]
    big = httpx.post(gateway.url + "/v1/feedback", content=b"x" * 10_000,
                     headers={"Authorization": f"Bearer {key}"})
    assert big.status_code == 413
    assert httpx.post(gateway.url + "/v1/feedback", json={"request_id": rid, "score": 1}
                      ).status_code == 401
    # Another method is a 405 naming POST (it was a 400 before the fix).
    with pytest.raises(openai.APIStatusError) as wrong:
        c.get("/feedback", cast_to=object)
    assert wrong.value.status_code == 405 and wrong.value.response.headers["allow"] == "POST"
    assert wrong.value.body["code"] == "method_not_allowed"


def test_a_key_allowed_on_the_route_cannot_score_another_keys_request(
    home, configured, make_gateway
) -> None:
    """Request ids are sequential within a process, so a neighbour's id is one guess
    away: only the key that made the request may score it, even when another key is
    allowed on the route (before the fix, any such key could steer the bandit)."""
    owner, neighbour = create_key(home, "owner"), create_key(home, "neighbour")
    gateway = make_gateway()
    c, other = client(gateway, owner), client(gateway, neighbour)
    _, mine, _ = ask(other, "rated")
    _, rid, _ = ask(c, "rated")
    assert rid != mine
    with pytest.raises(openai.NotFoundError, match="unknown or expired"):
        other.post("/feedback", cast_to=object, body={"request_id": rid, "score": 0})
    assert c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 1}) == {
        "request_id": rid, "route": "rated", "variant": ANY, "score": 1.0}
    assert other.post("/feedback", cast_to=object, body={"request_id": mine, "score": 1})


def test_another_key_cannot_claim_a_request_id_before_its_owner(
    home, configured, make_gateway
) -> None:
    """A client may choose its X-Request-ID, and the gateway's own ids are sequential: a
    key could send the next id before its owner's request got it. Before the fix the
    owner's request was then not remembered (the id was taken), and its feedback was a
    404; now each key has its own ids."""
    owner, squatter = create_key(home, "owner"), create_key(home, "squatter")
    gateway = make_gateway()
    c, other = client(gateway, owner), client(gateway, squatter)
    _, seen, _ = ask(other, "rated")
    prefix, counter = seen[:-8], int(seen[-8:], 16)
    predicted = f"{prefix}{counter + 1:08x}"
    other.chat.completions.create(model="rated", messages=MSGS,
                                  extra_headers={"X-Request-ID": predicted})
    _, rid, _ = ask(c, "rated")
    assert rid == predicted
    assert c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 1})
    assert other.post("/feedback", cast_to=object, body={"request_id": rid, "score": 0})


def test_feedback_counts_against_the_key_limits(home, configured, make_gateway) -> None:
    limited, other = create_key(home, "limited", "--limit", "2/minute"), create_key(home)
    gateway = make_gateway()
    c = client(gateway, limited)
    _, rid, _ = ask(c, "rated")
    _, rid2, _ = ask(client(gateway, other), "rated")
    c.post("/feedback", cast_to=object, body={"request_id": rid, "score": 1})
    with pytest.raises(openai.RateLimitError):
        c.post("/feedback", cast_to=object, body={"request_id": rid2, "score": 1})


def test_adaptive_config_is_validated_and_exported(home, fake_upstream, flaky_upstream) -> None:
    doc = config(fake_upstream.base_url, flaky_upstream)
    doc["routes"][0]["adaptive"] = {"metric": "clicks", "min_share": 0.6, "cooldown_s": -1}
    doc["routes"][1]["adaptive"] = {"metric": "errors", "min_sahre": 0.1}
    code, out, err = apply_config(home, doc)
    assert code != 0
    text = out + err
    assert "routes[0].adaptive.metric: must be one of errors, latency, feedback" in text
    assert "routes[0].adaptive.min_share: 0.6 × 2 variants is more than 1" in text
    assert "routes[0].adaptive.cooldown_s" in text
    assert "min_sahre" in text

    doc = config(fake_upstream.base_url, flaky_upstream)
    assert apply_config(home, doc)[0] == 0
    code, out, err = run_cli("config", "export", home=home)
    assert code == 0, err
    exported = {r["name"]: r for r in yaml.safe_load(out)["routes"]}
    assert exported["chat"]["adaptive"] == {"metric": "errors", "min_share": 0.1,
                                            "cooldown_s": 0.2, "min_samples": 20}
    assert exported["rated"]["adaptive"]["metric"] == "feedback"
    # Export → apply is a fixed point; dropping `adaptive` turns it off.
    del doc["routes"][0]["adaptive"]
    assert apply_config(home, doc)[0] == 0
    code, out, _ = run_cli("config", "export", home=home)
    assert "adaptive" not in {k for r in yaml.safe_load(out)["routes"] if r["name"] == "chat"
                              for k in r}


def test_console_shows_the_shares_and_keeps_adaptive_on_save(
    home, configured, make_gateway
) -> None:
    from tests.e2e.support import browser_fields, create_console_user, http_login

    key = create_key(home)
    create_console_user(home, "alice", "alice-password")
    gateway = make_gateway()
    c = client(gateway, key)
    for _ in range(200):
        ask(c, "chat")
    console = http_login(gateway.url, "alice", "alice-password")
    dash = console.get("/admin/").text
    table = re.search(r'<table class="grid" id="variant-shares">.*?</table>', dash, re.DOTALL).group(0)
    rows = dict(re.findall(r'<tr data-variant="([a-z]+/[a-z]+)"><td>[^<]*</td><td>[^<]*</td>'
                           r'<td class="num" data-metric="share-now">([0-9.]+)%<', table))
    assert float(rows["chat/steady"]) >= 85 and float(rows["chat/flaky"]) >= 10, rows
    assert rows["rated/a"] == "50.0"  # no traffic yet: the configured start

    route_id = re.search(r'href="/admin/routes/(\d+)">chat<', console.get("/admin/routes").text)
    page = console.get(f"/admin/routes/{route_id.group(1)}").text
    assert re.search(r'id="route-shares".*data-variant="steady".*share-now">(9\d|8[5-9])',
                     page, re.DOTALL), page
    fields = browser_fields(page, 'id="route-form"')
    assert (fields["adaptive_metric"], fields["adaptive_min_share"]) == ("errors", "0.1")

    # Saving another change through the console keeps the adaptive settings.
    fields["description"] = "edited in the console"
    r = console.post(f"/admin/routes/{route_id.group(1)}", data=fields)
    assert r.status_code == 303, r.text
    exported = {x["name"]: x for x in yaml.safe_load(run_cli("config", "export", home=home)[1])
                ["routes"]}
    assert exported["chat"]["description"] == "edited in the console"
    assert exported["chat"]["adaptive"]["min_share"] == 0.1

    page = console.get(f"/admin/routes/{route_id.group(1)}").text
    fields = browser_fields(page, 'id="route-form"') | {"adaptive_min_share": "0.6"}
    r = console.post(f"/admin/routes/{route_id.group(1)}", data=fields)
    assert r.status_code == 400
    assert "min_share: 0.6 × 2 variants is more than 1" in r.text.replace("&#215;", "×")
    fields |= {"adaptive_metric": "", "adaptive_min_share": "0.1"}  # off
    r = console.post(f"/admin/routes/{route_id.group(1)}", data=fields)
    assert r.status_code == 303, r.text
    exported = {x["name"]: x for x in yaml.safe_load(run_cli("config", "export", home=home)[1])
                ["routes"]}
    assert "adaptive" not in exported["chat"]


def test_routes_set_takes_adaptive(home, fake_upstream) -> None:
    assert run_cli("upstreams", "set", "mock", "--base-url", fake_upstream.base_url,
                   home=home)[0] == 0
    variants = ("--variant", "upstream=mock,model=a", "--variant", "upstream=mock,model=b")
    code, _, err = run_cli("routes", "set", "chat", *variants,
                           "--adaptive", "metric=latency,min_share=0.2,cooldown_s=10", home=home)
    assert code == 0, err
    route = yaml.safe_load(run_cli("config", "export", home=home)[1])["routes"][0]
    assert route["adaptive"] == {"metric": "latency", "min_share": 0.2, "cooldown_s": 10.0,
                                 "min_samples": 20}
    code, out, err = run_cli("routes", "set", "chat", *variants,
                             "--adaptive", "metric=latency,min_share=0.6", home=home)
    assert code == 1 and "min_share: 0.6 × 2 variants is more than 1" in out + err
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        run_cli("routes", "set", "chat", *variants, "--adaptive", "clicks", home=home)
    assert exit_info.value.code == 2
    from litegate.cli.routes import parse_adaptive

    for bad in ("clicks", "metric=errors,min_share=lots", "metric=errors,bogus=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected metric=errors"):
            parse_adaptive(bad)


def test_an_adaptive_fallback_route_learns_from_the_requests_it_takes(
    home, fake_upstream, flaky_upstream, make_gateway
) -> None:
    """A route's fallback used to pick its variant by the configured weights and never
    report the outcome: an adaptive fallback route stayed at its starting shares however
    its variants did. Its choice and outcome now go through the same bandit path as A/B
    routing's, so its shares move off the flaky variant from fallbacks alone."""
    doc = config(fake_upstream.base_url, flaky_upstream)
    chat = doc["routes"][0]
    chat["sticky"] = "none"
    # Nothing listens on port 1: every request to "primary" falls back to "chat".
    doc["upstreams"].append({"name": "dead", "base_url": "http://127.0.0.1:1/v1",
                             "max_retries": 0})
    doc["routes"] = [chat, {"name": "primary", "fallback": "chat",
                            "variants": [{"upstream": "dead", "model": "m"}]}]
    code, _, err = apply_config(home, doc)
    assert code == 0, err
    key = create_key(home)
    gateway = make_gateway()
    assert shares(gateway, "chat") == {"steady": 0.5, "flaky": 0.5}
    seen = []
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(300):
            r = c.post("/v1/chat/completions", json={"model": "primary", "messages": MSGS})
            assert r.headers["x-litegate-fallback"] == "chat"
            seen.append(r.headers["x-litegate-variant"])
    now = shares(gateway, "chat")
    assert now["steady"] >= 0.85, now
    assert now["flaky"] >= 0.1 - 1e-9  # the floor
    late = Counter(seen[-100:])
    assert late["steady"] >= 75, late
