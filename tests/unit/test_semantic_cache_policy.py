"""The semantic cache policy without a gateway: what is cacheable, what must match
exactly, the bounded index (LRU, TTL, bytes), the SSE replay and failure handling. The
vectors here are made by hand: these tests are about the index, not the embeddings
(tests/integration/test_semantic_cache.py runs the real model)."""

from __future__ import annotations

import asyncio
import json
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from litegate.policies import semantic_cache as sc
from litegate.policies.semantic_cache import (
    Answer,
    MemoryVectorStore,
    RedisVectorStore,
    SemanticCache,
    as_sse,
    split_request,
)
from litegate.snapshot import (
    ModelSpec,
    RouteSpec,
    SemanticCacheSpec,
    Snapshot,
    UpstreamSpec,
    VariantSpec,
)
from tests.helpers.servers import free_port

CHAT = "/v1/chat/completions"


def spec(**overrides: Any) -> SemanticCacheSpec:
    values: dict[str, Any] = {"embedding_model": "mini", "threshold": 0.9, "max_entries": 100,
                              "ttl_s": 60.0, "shared_across_keys": False}
    return SemanticCacheSpec(**(values | overrides))


def route(name: str = "chat", variants: tuple[VariantSpec, ...] = (), **overrides: Any) -> RouteSpec:
    return RouteSpec(name=name, variants=variants, cumulative=(), total_weight=0, sticky="none",
                     sticky_header=None, cache_ttl_s=None, limits=(), token_limits=(),
                     fallback=None, semantic_cache=spec(**overrides))


def snapshot(*routes: RouteSpec) -> Snapshot:
    model = ModelSpec(name="mini", active_version="1", versions=MappingProxyType({}),
                      max_batch_size=0, max_queue_delay_ms=0, hot=False,
                      options=MappingProxyType({}))
    return Snapshot(routes=MappingProxyType({r.name: r for r in routes}),
                    models=MappingProxyType({"mini": model}))


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": text}], **extra}


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def cache_with(vectors: dict[str, np.ndarray], **store: Any) -> SemanticCache:
    async def embed(model: str, text: str) -> np.ndarray | None:
        assert model == "mini"
        return vectors.get(text)

    return SemanticCache(embed=embed, store=MemoryVectorStore(max_bytes=store.get("max_bytes", 1 << 20)),
                         max_entry_bytes=store.get("max_entry_bytes", 1 << 16))


def test_what_is_compared_by_meaning_and_what_is_not_cacheable():
    assert split_request(CHAT, body("  How   do I\nreset it? ")) == (
        "How do I reset it?",
        {"model": "chat", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user"}]})
    parts = [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this"}]
    assert split_request(CHAT, body(parts))[0] == "Describe this"  # type: ignore[index]
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    assert split_request(CHAT, body(image)) is None
    assert split_request(CHAT, {"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) is None
    assert split_request(CHAT, {"messages": []}) is None
    assert split_request(CHAT, body("   ")) is None
    assert split_request("/v1/completions", {"model": "m", "prompt": "Say hi"}) == (
        "Say hi", {"model": "m"})
    assert split_request("/v1/completions", {"model": "m", "prompt": ["a", "b"]}) is None
    assert split_request("/v1/embeddings", {"model": "m", "input": "x"}) is None


def test_partitions_keep_apart_what_changes_the_answer():
    r, shared = route(), route("shared", shared_across_keys=True)
    cache, snap = cache_with({}), snapshot(r, shared)

    def partition(key: int | None = 1, text: str = "How do I reset my password?",
                  rt: RouteSpec = r, path: str = CHAT, **extra: Any) -> str:
        q = cache.query(snap, rt, path, key, body(text, **extra))
        assert q is not None
        return q.partition

    base = partition()
    assert partition(stream=True, stream_options={"include_usage": True}) == base
    assert partition(text="What's the way to reset my password?") == base
    for different in (partition(key=2), partition(key=None), partition(temperature=0.5),
                      partition(max_tokens=10), partition(model="other"),
                      partition(tools=[{"type": "function", "function": {"name": "f"}}]),
                      partition(text="How do I reset my password 2 times?"),
                      partition(text="How do I not reset my password?"),
                      partition(rt=shared), partition(path="/v1/completions", prompt="x")):
        assert different != base
    assert partition(rt=shared, key=1) == partition(rt=shared, key=2)


def test_the_embedding_model_is_a_model_or_a_route_serving_one():
    local = UpstreamSpec(name="local", kind="onnx", base_url="", api_key=None, timeout_s=1,
                         connect_timeout_s=1, max_retries=0)
    embedder = route("embedder", variants=(VariantSpec("v", local, "mini", 1),))
    snap = snapshot(embedder)
    assert sc.resolve_model(snap, "mini") == "mini"
    assert sc.resolve_model(snap, "embedder") == "mini"
    assert sc.resolve_model(snap, "chat") is None
    cache = cache_with({})
    assert cache.query(snap, route(embedding_model="gone"), CHAT, 1, body("q")) is None
    assert cache.query(snap, route(embedding_model="embedder"), CHAT, 1, body("q")) is not None


def test_nearest_neighbour_above_the_threshold_wins():
    a, b, c = "reset password", "reset my password", "tallest mountain"
    vectors = {a: unit(1, 0.1, 0), b: unit(1, 0.2, 0), c: unit(0, 0, 1)}
    cache, r = cache_with(vectors), route()
    snap = snapshot(r)

    async def run() -> None:
        qa = cache.query(snap, r, CHAT, 1, body(a))
        assert qa is not None
        va, hit = await cache.lookup(qa)
        assert va is not None and hit is None
        assert await cache.add(qa, va, Answer(((b"content-type", b"application/json"),),
                                              b'{"a": 1}', "v1"))
        qb = cache.query(snap, r, CHAT, 1, body(b))
        _, hit = await cache.lookup(qb)  # type: ignore[arg-type]
        assert hit is not None and hit.answer.body == b'{"a": 1}' and hit.answer.variant == "v1"
        assert hit.similarity == pytest.approx(float(vectors[a] @ vectors[b]))
        _, hit = await cache.lookup(cache.query(snap, r, CHAT, 1, body(c)))  # type: ignore[arg-type]
        assert hit is None
        # No vector (text too long for the model, or the model failed): a bypass.
        vector, hit = await cache.lookup(cache.query(snap, r, CHAT, 1, body("unknown")))  # type: ignore[arg-type]
        assert vector is None and hit is None

    asyncio.run(run())


def random_units(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def query(partition: str = "p", **overrides: Any) -> sc.Query:
    return sc.Query("chat", "mini", partition, "text", spec(threshold=0.999, **overrides))


def test_max_entries_evicts_the_least_recently_used_and_rows_stay_consistent():
    store = MemoryVectorStore(max_bytes=1 << 20)
    rows = random_units(12)

    async def run() -> None:
        for i in range(10):
            await store.add(query(partition=f"p{i % 3}", max_entries=6), rows[i],
                            Answer((), str(i).encode(), None))
        assert store.entries("chat") == 6  # 0..3 evicted, oldest first
        found = {}
        for i in range(10):
            hit = await store.search(query(partition=f"p{i % 3}"), rows[i])
            found[i] = hit.answer.body.decode() if hit else None
        assert found == {i: (str(i) if i >= 4 else None) for i in range(10)}
        # The lookups above touched 4..9 in order: a new entry now evicts 4.
        assert await store.search(query(partition="p1"), rows[4]) is not None  # 4 is newest
        await store.add(query(partition="p0", max_entries=6), rows[10], Answer((), b"10", None))
        assert await store.search(query(partition="p2"), rows[5]) is None
        assert await store.search(query(partition="p1"), rows[4]) is not None
        # A route that shrinks its bound is trimmed on the next store.
        await store.add(query(partition="p0", max_entries=2), rows[11], Answer((), b"11", None))
        assert store.entries("chat") == 2
        store.keep_routes(set())
        assert store.entries("chat") == 0

    asyncio.run(run())


def test_answer_bytes_are_bounded_per_route_and_per_entry():
    store = MemoryVectorStore(max_bytes=100)
    cache = SemanticCache(embed=None, store=store, max_entry_bytes=40)  # type: ignore[arg-type]
    rows = random_units(5)

    async def run() -> None:
        assert not await cache.add(query(), rows[0], Answer((), b"x" * 41, None))
        for i in range(1, 5):
            assert await cache.add(query(), rows[i], Answer((), b"x" * 40, None))
        assert store.size_bytes("chat") == 80 and store.entries("chat") == 2
        assert await store.search(query(), rows[1]) is None
        assert await store.search(query(), rows[4]) is not None

    asyncio.run(run())


def test_expired_entries_are_not_served_and_are_dropped(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(sc.time, "monotonic", lambda: now[0])
    store = MemoryVectorStore(max_bytes=1 << 20)
    rows = random_units(2)

    async def run() -> None:
        await store.add(query(ttl_s=10), rows[0], Answer((), b"old", None))
        now[0] += 5
        await store.add(query(ttl_s=10), rows[1], Answer((), b"new", None))
        assert (await store.search(query(), rows[0])) is not None
        now[0] += 6  # the first has expired, the second not
        assert await store.search(query(), rows[0]) is None
        assert store.entries("chat") == 1
        assert (await store.search(query(), rows[1])).answer.body == b"new"  # type: ignore[union-attr]

    asyncio.run(run())


def test_large_partitions_are_scanned_in_a_thread_with_the_same_answers(monkeypatch):
    monkeypatch.setattr(sc, "THREAD_ROWS", 4)
    store = MemoryVectorStore(max_bytes=1 << 20)
    rows = random_units(40, seed=3)

    async def run() -> None:
        for i, row in enumerate(rows):
            await store.add(query(), row, Answer((), str(i).encode(), None))
        hits = await asyncio.gather(*(store.search(query(), row) for row in rows))
        assert [h.answer.body.decode() for h in hits if h] == [str(i) for i in range(40)]

    asyncio.run(run())


def test_a_stored_answer_replays_as_openai_server_sent_events():
    answer = {"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
              "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                  "role": "assistant", "content": None, "tool_calls": [
                      {"id": "t1", "type": "function",
                       "function": {"name": "f", "arguments": "{}"}}]}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    raw = as_sse(json.dumps(answer).encode(), CHAT, include_usage=True)
    assert raw is not None and raw.endswith(b"data: [DONE]\n\n")
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e and e != "data: [DONE]"]
    assert [e["object"] for e in events] == ["chat.completion.chunk"] * 3
    first = events[0]["choices"][0]
    assert first["delta"]["tool_calls"][0] == {"index": 0, **answer["choices"][0]["message"]["tool_calls"][0]}  # type: ignore[index]
    assert events[1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert events[2] == {"id": "c1", "created": 7, "model": "m", "object": "chat.completion.chunk",
                         "choices": [], "usage": answer["usage"]}
    text = {"id": "x", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}
    raw = as_sse(json.dumps(text).encode(), "/v1/completions", include_usage=False)
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e and e != "data: [DONE]"]  # type: ignore[union-attr]
    assert [c["text"] for e in events for c in e["choices"]] == ["hi", ""]
    assert as_sse(b"not json", CHAT, include_usage=False) is None
    assert as_sse(b'{"choices": 3}', CHAT, include_usage=False) is None


def test_an_unreachable_redis_is_a_miss_never_an_error():
    store = RedisVectorStore(f"redis://127.0.0.1:{free_port()}/0")

    async def run() -> None:
        row = random_units(1)[0]
        assert await store.search(query(), row) is None
        assert await store.add(query(), row, Answer((), b"{}", None)) is False
        await store.close()

    asyncio.run(run())


def test_an_embedding_failure_is_a_bypass():
    async def failing(model: str, text: str) -> np.ndarray:
        raise RuntimeError("queue full")

    cache = SemanticCache(embed=failing, store=MemoryVectorStore(max_bytes=100),
                          max_entry_bytes=10)
    r = route()
    q = cache.query(snapshot(r), r, CHAT, 1, body("q"))
    assert q is not None and asyncio.run(cache.lookup(q)) == (None, None)


def test_corrupt_redis_entries_are_dropped_not_raised():
    import redis as sync_redis

    from tests.helpers.services import redis_server

    rows = random_units(2)
    with redis_server() as url:
        store = RedisVectorStore(url)
        r = sync_redis.Redis.from_url(url)

        async def run() -> None:
            assert await store.add(query(), rows[0], Answer((), b"good", None))
            vkey = RedisVectorStore.PREFIX + "v:p"
            r.hset(vkey, "junk", b"\x00not msgpack")
            r.hset(vkey, "odd", sc.msgspec.msgpack.encode((1e12, b"\x01\x02\x03")))
            hit = await store.search(query(), rows[0])
            assert hit is not None and hit.answer.body == b"good"
            assert len(r.hkeys(vkey)) == 1  # the two bad fields were dropped
            (answer_key,) = r.keys(RedisVectorStore.PREFIX + "a:*")
            r.set(answer_key, b"garbage")
            assert await store.search(query(), rows[0]) is None
            await store.close()

        asyncio.run(run())
