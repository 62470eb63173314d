"""What users of the official ``openai`` client hit: retrieving a model, token-id and
``dimensions`` embeddings input, and upstream errors that are not OpenAI-shaped."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import openai
import pytest
from aiohttp import web
from tokenizers import Tokenizer

from litegate.demo import DEMO_MODEL, setup_demo_model
from litegate.settings import Settings
from tests.helpers.cli import apply_config, create_key
from tests.helpers.servers import free_port, serve_aiohttp, wait_ready

MSGS = [{"role": "user", "content": "hi"}]


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_models_retrieve_follows_the_keys_scope(home, fake_upstream, make_gateway):
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": n, "variants": [{"upstream": "mock", "model": "m"}]}
                   for n in ("chat", "secret")],
    })
    key = create_key(home, "scoped", "--routes", "chat")
    server = make_gateway()
    c = client(server, key)
    model = c.models.retrieve("chat")
    assert model.id == "chat" and model.object == "model"
    for hidden in ("secret", "does-not-exist"):
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve(hidden)


def _plain_text_upstream() -> web.Application:
    async def plain(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        if model == "teapot":
            return web.Response(status=418, text="I'm a teapot", content_type="text/plain")
        if model == "html":
            return web.Response(status=503, text="<html>Service down</html>",
                                content_type="text/html")
        return web.json_response({"detail": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", plain)
    return app


def test_upstream_errors_always_reach_the_client_in_the_openai_shape(home, make_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with serve_aiohttp(_plain_text_upstream()) as port:
        apply_config(home, {
            "upstreams": [
                {"name": "plain", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                 "max_retries": 0},
                {"name": "gone", "kind": "openai", "base_url": dead, "max_retries": 0},
            ],
            "routes": [
                {"name": "notfound", "variants": [{"upstream": "plain", "model": "x"}]},
                {"name": "teapot", "variants": [{"upstream": "plain", "model": "teapot"}]},
                {"name": "html", "variants": [{"upstream": "plain", "model": "html"}]},
                {"name": "dead", "variants": [{"upstream": "gone", "model": "x"}]},
            ],
        })
        key = create_key(home)
        server = make_gateway()
        c = client(server, key)
        with pytest.raises(openai.NotFoundError) as nf:
            c.chat.completions.create(model="notfound", messages=MSGS)
        assert "Not Found" in nf.value.message and nf.value.status_code == 404
        for route, status, text in (("teapot", 418, "I'm a teapot"), ("html", 503, "Service down")):
            r = httpx.post(server.url + "/v1/chat/completions",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": route, "messages": MSGS})
            assert r.status_code == status
            assert r.headers["content-type"].startswith("application/json")
            error = r.json()["error"]
            assert text in error["message"] and error["type"] == "upstream_error"
        # A dead upstream's address stays in the log, not in the client's error.
        with pytest.raises(openai.InternalServerError) as exc:
            c.chat.completions.create(model="dead", messages=MSGS)
        assert exc.value.status_code == 502
        body = str(exc.value.body) + exc.value.message
        assert "127.0.0.1" not in body and dead.split(":")[-1].split("/")[0] not in body


@pytest.fixture
def minilm(home, make_gateway):
    asyncio.run(setup_demo_model(Settings.load(home=home)))
    key = create_key(home)
    server = make_gateway()
    wait_ready(server.url)
    return client(server, key)


def test_embeddings_take_token_ids_and_refuse_dimensions_they_cannot_honour(minilm):
    from importlib import resources

    tok = Tokenizer.from_file(
        str(resources.files("litegate.inference") / "data" / "minilm-tokenizer.json"))
    tok.no_padding()  # the file pads to 128; a client sends just its tokens
    ids = tok.encode("hello world").ids
    by_text = minilm.embeddings.create(model=DEMO_MODEL, input="hello world",
                                       encoding_format="float")
    for token_input in (ids, [ids]):
        by_ids = minilm.embeddings.create(model=DEMO_MODEL, input=token_input,
                                          encoding_format="float")
        np.testing.assert_allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-5)
        assert by_ids.usage.prompt_tokens == len(ids)
    assert len(minilm.embeddings.create(model=DEMO_MODEL, input="x", dimensions=384,
                                        encoding_format="float").data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError, match="384-dimensional"):
        minilm.embeddings.create(model=DEMO_MODEL, input="x", dimensions=64)
    for bad in ([[]], [[10**9]], [[1, "a"]], [1.5]):
        with pytest.raises(openai.BadRequestError):
            minilm.embeddings.create(model=DEMO_MODEL, input=bad)


def _more_endpoints(seen: list[tuple[str, str]]) -> web.Application:
    """A stand-in provider for the endpoints beyond chat: records (path, model)."""
    usage = {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append((request.path, body["model"]))
        done = {"id": "resp_1", "object": "response", "created_at": 1, "model": body["model"],
                "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": "hi there",
                                                    "annotations": []}]}],
                "usage": usage}
        if not body.get("stream"):
            return web.json_response(done)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [("response.output_text.delta", {"type": "response.output_text.delta",
                                                  "item_id": "msg_1", "output_index": 0,
                                                  "content_index": 0, "delta": "hi there",
                                                  "sequence_number": 1}),
                  ("response.completed", {"type": "response.completed", "response": done,
                                          "sequence_number": 2})]
        for name, data in events:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    async def moderations(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body["model"]))
        return web.json_response({"id": "modr-1", "model": body["model"], "results": [
            {"flagged": False, "categories": {}, "category_scores": {}}]})

    async def images(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body["model"]))
        return web.json_response({"created": 1, "data": [{"url": "https://example.invalid/a.png"}]})

    async def speech(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, body["model"]))
        return web.Response(body=b"ID3-fake-mp3-bytes", content_type="audio/mpeg")

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/images/generations", images)
    app.router.add_post("/v1/audio/speech", speech)
    return app


def test_every_json_endpoint_is_proxied_with_the_same_policies(home, fake_upstream, make_gateway):
    seen: list[tuple[str, str]] = []
    with serve_aiohttp(_more_endpoints(seen)) as port:
        apply_config(home, {
            "upstreams": [
                {"name": "prov", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
                {"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url},
            ],
            "routes": [
                {"name": "gpt", "variants": [{"upstream": "prov", "model": "real-model"}],
                 "token_limits": ["20/minute"]},
                {"name": "chat", "variants": [{"upstream": "mock", "model": "small-model"}]},
            ],
        })
        key = create_key(home)
        server = make_gateway()
        c = client(server, key)
        r = c.responses.create(model="gpt", input="hi")
        assert r.output_text == "hi there"
        c.moderations.create(model="gpt", input="x")
        assert c.images.generate(model="gpt", prompt="a cat").data[0].url
        assert c.audio.speech.create(model="gpt", voice="alloy", input="hi").content == b"ID3-fake-mp3-bytes"
        assert seen == [("/v1/responses", "real-model"), ("/v1/moderations", "real-model"),
                        ("/v1/images/generations", "real-model"), ("/v1/audio/speech", "real-model")]
        # Streamed responses are relayed, and their usage (in response.completed) counts:
        # 12 + 12 tokens pass the 20/minute quota, the next request is refused.
        events = [e.type for e in c.responses.create(model="gpt", input="hi", stream=True)]
        assert events == ["response.output_text.delta", "response.completed"]
        metrics = httpx.get(server.url + "/metrics").text
        gpt = 'litegate_tokens_total{kind="%s",route="gpt",variant="real-model"} %s'
        assert gpt % ("prompt", "10.0") in metrics and gpt % ("completion", "14.0") in metrics
        with pytest.raises(openai.RateLimitError):
            c.responses.create(model="gpt", input="hi")
        # The same routes on the bare host, as OpenAI clients configured without /v1 call them.
        bare = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)
        assert bare.chat.completions.create(model="chat", messages=MSGS).choices[0].message.content
        assert [m.id for m in bare.models.list().data] == ["chat", "gpt"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url, api_key="lg-wrong", max_retries=0).models.list()
