"""Token metrics through a real gateway and the openai client: ``litegate_tokens_total``
split into prompt and completion for plain and streamed calls, and the opt-in
``litegate_key_tokens_total`` by key name, bounded, with revoked keys' series removed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from litegate.policies.metrics import Metrics
from litegate.snapshot import KeySpec
from tests.helpers.cli import apply_config, chat_config, run_cli
from tests.helpers.servers import serve_aiohttp

PLAIN = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
STREAMED = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
# An upstream whose prompt count exceeds its total: completion is clamped to 0, never < 0.
ODD = {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 6}


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    message = {"role": "assistant", "content": f"hello from {model}"}
    if not body.get("stream"):
        return web.json_response({
            "id": "c-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": ODD if model == "odd" else PLAIN,
        })
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    chunk = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    for i in range(3):
        delta = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}
        await resp.write(f"data: {json.dumps({**chunk, 'choices': [delta]})}\n\n".encode())
    # The last event carries the usage, as with stream_options.include_usage.
    await resp.write(f"data: {json.dumps({**chunk, 'choices': [], 'usage': STREAMED})}\n\n"
                     .encode())
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture
def upstream() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    with serve_aiohttp(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


def _configure(home, base_url: str) -> None:
    doc = chat_config(base_url)
    doc["routes"].append({"name": "odd", "variants": [{"upstream": "mock", "model": "odd"}]})
    code, _, err = apply_config(home, doc)
    assert code == 0, err


def _key(home, name: str) -> tuple[int, str]:
    code, out, err = run_cli("keys", "create", "--name", name, "--json", home=home)
    assert code == 0, err
    created = json.loads(out)
    return created["id"], created["key"]


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _plain(client: openai.OpenAI, model: str = "chat") -> None:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hello from " + ("odd" if model == "odd"
                                                           else "small-model")


def _streamed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "tok0 tok1 tok2 ")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15


def _samples(url: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``metric``'s samples by their sorted labels, from a real scrape of /metrics."""
    text = httpx.get(url + "/metrics").text
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def _tokens(url: str) -> dict[tuple[str, str, str], float]:
    return {(d["route"], d["variant"], d["kind"]): v
            for labels, v in _samples(url, "litegate_tokens_total").items()
            for d in [dict(labels)]}


def _key_tokens(url: str) -> dict[tuple[str, str, str], float]:
    return {(d["key"], d["route"], d["kind"]): v
            for labels, v in _samples(url, "litegate_key_tokens_total").items()
            for d in [dict(labels)]}


def test_prompt_and_completion_split_for_plain_and_streamed_calls(home, upstream, make_gateway):
    _configure(home, upstream)
    _, key = _key(home, "team-a")
    server = make_gateway()
    client = _client(server.url, key)
    _plain(client)
    _plain(client)
    _streamed(client)
    _plain(client, "odd")
    assert _tokens(server.url) == {
        ("chat", "small-model", "prompt"): 2 * 5 + 11,
        ("chat", "small-model", "completion"): 2 * 7 + 4,
        # prompt 9 of a total of 6: the prompt is the whole total, completion 0.
        ("odd", "odd", "prompt"): 6,
        ("odd", "odd", "completion"): 0,
    }
    # Per key is opt-in: without LITEGATE_METRICS_PER_KEY there is no such metric at all.
    text = httpx.get(server.url + "/metrics").text
    assert "litegate_key_tokens" not in text
    assert "team-a" not in text


def test_per_key_tokens_by_name_bounded_and_revoked_keys_removed(home, upstream, make_gateway):
    _configure(home, upstream)
    _, alpha = _key(home, "alpha")
    beta_id, beta = _key(home, "beta")
    _, gamma = _key(home, "gamma")
    server = make_gateway(metrics_per_key=True, metrics_max_keys=2)
    _plain(_client(server.url, alpha))
    _streamed(_client(server.url, alpha))
    _plain(_client(server.url, beta))
    _plain(_client(server.url, beta))
    _plain(_client(server.url, gamma))  # a third key, past the bound of 2
    _plain(_client(server.url, gamma), "odd")
    expected = {
        ("alpha", "chat", "prompt"): 5 + 11, ("alpha", "chat", "completion"): 7 + 4,
        ("beta", "chat", "prompt"): 10, ("beta", "chat", "completion"): 14,
        ("-", "chat", "prompt"): 5, ("-", "chat", "completion"): 7,
        ("-", "odd", "prompt"): 6, ("-", "odd", "completion"): 0,
    }
    assert _key_tokens(server.url) == expected
    # Every keyed token is in one key's series: the sums match the route totals.
    totals = _tokens(server.url)
    for kind in ("prompt", "completion"):
        assert sum(v for (_, _, k), v in expected.items() if k == kind) == sum(
            v for (_, _, k), v in totals.items() if k == kind)
    # The label is the configured name, never the secret.
    text = httpx.get(server.url + "/metrics").text
    assert all(secret not in text for secret in (alpha, beta, gamma))

    code, _, err = run_cli("keys", "revoke", str(beta_id), home=home)
    assert code == 0, err
    deadline = time.monotonic() + 10
    while ("beta", "chat", "prompt") in _key_tokens(server.url):
        assert time.monotonic() < deadline, "the revoked key's series stayed"
        time.sleep(0.1)
    with pytest.raises(openai.AuthenticationError):
        _plain(_client(server.url, beta))
    got = _key_tokens(server.url)
    assert got == {k: v for k, v in expected.items() if k[0] != "beta"}
    # beta's place under the bound is free again: the next new key gets its own series.
    _plain(_client(server.url, gamma))
    assert _key_tokens(server.url) == {**got, ("gamma", "chat", "prompt"): 5,
                                       ("gamma", "chat", "completion"): 7}


def test_a_key_without_a_name_is_labelled_by_its_id() -> None:
    """Names are required by the services; a row without one (older data, direct SQL)
    is still labelled by configuration, not by anything a client sent."""
    metrics = Metrics(per_key=True, max_keys=10)
    nameless = KeySpec(id=42, name="", routes=None, is_admin=False, expires_at=None)
    named = KeySpec(id=7, name="ops", routes=None, is_admin=False, expires_at=None)
    metrics.keep_keys([nameless, named])
    metrics.observe_request("chat", "v", 200, 0.01, 0.001, None, 12, 5, nameless)
    metrics.observe_request("chat", "v", 200, 0.01, 0.001, None, 3, 3, named)
    value = metrics.registry.get_sample_value
    assert value("litegate_key_tokens_total", {"key": "42", "route": "chat",
                                               "kind": "prompt"}) == 5
    assert value("litegate_key_tokens_total", {"key": "42", "route": "chat",
                                               "kind": "completion"}) == 7
    assert value("litegate_key_tokens_total", {"key": "ops", "route": "chat",
                                               "kind": "prompt"}) == 3
    # A snapshot without the nameless key removes its series; ops keeps its own.
    metrics.keep_keys([named])
    assert value("litegate_key_tokens_total", {"key": "42", "route": "chat",
                                               "kind": "prompt"}) is None
    assert value("litegate_key_tokens_total", {"key": "ops", "route": "chat",
                                               "kind": "prompt"}) == 3
    # A request that was in flight when its key went is counted under "-", not revived.
    metrics.observe_request("chat", "v", 200, 0.01, 0.001, None, 2, 1, nameless)
    assert value("litegate_key_tokens_total", {"key": "42", "route": "chat",
                                               "kind": "prompt"}) is None
    assert value("litegate_key_tokens_total", {"key": "-", "route": "chat",
                                               "kind": "prompt"}) == 1
