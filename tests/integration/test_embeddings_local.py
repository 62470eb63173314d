"""``/v1/embeddings`` from the demo ONNX model through the real gateway and ``openai``."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import openai
import pytest

from litegate.demo import DEMO_MODEL, setup_demo_model
from litegate.settings import Settings
from tests.helpers.cli import create_key
from tests.helpers.embeddings import reference_embeddings
from tests.helpers.servers import wait_ready

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "litegate serves embeddings from a local ONNX model",
         "Hi"]


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, int]:
    return reference_embeddings(TEXTS)


@pytest.fixture
def demo_gateway(home, make_gateway):
    settings = Settings.load(home=home)
    asyncio.run(setup_demo_model(settings))
    asyncio.run(setup_demo_model(settings))  # idempotent
    key = create_key(home)
    server = make_gateway()
    wait_ready(server.url)
    return server, key


def test_openai_client_embeddings_equal_direct_model_run(demo_gateway, reference) -> None:
    server, key = demo_gateway
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    expected, tokens = reference
    for fmt in ("float", "base64"):
        resp = client.embeddings.create(model=DEMO_MODEL, input=TEXTS, encoding_format=fmt)
        if fmt == "base64":  # asked for explicitly, the client hands back the raw string
            got = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4")
                            for d in resp.data])
        else:
            got = np.array([d.embedding for d in resp.data], dtype=np.float32)
        assert got.shape == (3, 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert [d.index for d in resp.data] == [0, 1, 2]
        assert resp.usage.prompt_tokens == tokens
    # default: the client asks for base64 itself and decodes it
    single = client.embeddings.create(model=DEMO_MODEL, input=TEXTS[2])
    np.testing.assert_allclose(single.data[0].embedding, expected[2], atol=1e-5)


def test_demo_model_is_hot_and_reported_in_readyz(demo_gateway) -> None:
    server, _ = demo_gateway
    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    models = ready.json()["models"]["models"]
    assert models[DEMO_MODEL]["loaded"]["1"]["providers"] == ["CPUExecutionProvider"]
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'litegate_model_loaded{model="minilm",providers="CPUExecutionProvider",version="1"} 1.0' in metrics


def test_concurrent_embedding_requests_are_batched_and_correct(demo_gateway, reference) -> None:
    server, key = demo_gateway
    expected, _ = reference
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)

    async def main() -> list:
        return await asyncio.gather(*(
            client.embeddings.create(model=DEMO_MODEL, input=TEXTS[i % 2]) for i in range(24)))

    results = asyncio.run(main())
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.data[0].embedding, expected[i % 2], atol=1e-5)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
               if line.startswith("litegate_model_")}
    requests = samples['litegate_model_requests_total{model="minilm",version="1"}']
    executions = samples['litegate_model_executions_total{model="minilm",version="1"}']
    assert requests >= 24
    assert executions < requests
