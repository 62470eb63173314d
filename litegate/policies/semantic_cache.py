"""Semantic cache: answer a chat request with the stored answer to an earlier request that
means the same, judged by the cosine similarity of sentence embeddings.

What must match exactly (the *partition*): the route, the endpoint, the key (unless the
route shares across keys), every request field except the last user message and
``stream`` (model, temperature, max_tokens, tools, system prompt, earlier turns...), the
numbers written in the last message and whether it is negated. Only the last user
message is compared by meaning: embeddings say "the same topic", not "the same
question", and numbers and negations are where they fail most (bench/semantic_cache.py
measures both, with and without these guards).

Each route has a bounded index: ``max_entries`` answers, least recently used evicted,
``ttl_s`` each. In memory the vectors of a partition are one numpy matrix of unit rows,
so a lookup is one matrix-vector product. With Redis the vectors of a partition are one
hash read and scanned in process, and a sorted set per route bounds the entries for all
replicas. Redis failures and embedding failures are misses: the cache never fails a
request.

No ASGI here: the middleware (``middleware/cache.py``) asks :meth:`SemanticCache.query`
whether a request can be cached and hands back the answer to store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec
import structlog

from litegate.snapshot import RouteSpec, SemanticCacheSpec, Snapshot

if TYPE_CHECKING:  # numpy is imported with the first lookup, not with the gateway
    import numpy as np
    import numpy.typing as npt

    from litegate.policies.metrics import Metrics

    Vector = npt.NDArray[np.float32]

log = structlog.get_logger("litegate.semantic_cache")

Embed = Callable[[str, str], Awaitable["Vector | None"]]
"""``(local model, text)`` -> the text's unit vector, or ``None`` when the text is longer
than the model reads (a truncated text cannot be compared)."""

CHAT_PATH = "/v1/chat/completions"
TEXT_PATH = "/v1/completions"
PATHS = frozenset({CHAT_PATH, TEXT_PATH})
_ANSWER_INDEPENDENT = ("stream", "stream_options")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot)\b|n't\b", re.IGNORECASE
)
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
THREAD_ROWS = 2048
"""Partitions this large (~1 ms of numpy) are scanned in a worker thread."""


@dataclass(frozen=True, slots=True)
class Query:
    """A cacheable request: where to look (``partition``) and what to compare (``text``)."""

    route: str
    model: str
    """The local embedding model (resolved from a model or route name)."""
    partition: str
    text: str
    spec: SemanticCacheSpec


@dataclass(frozen=True, slots=True)
class Answer:
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    variant: str | None


@dataclass(frozen=True, slots=True)
class Hit:
    answer: Answer
    similarity: float


def resolve_model(snapshot: Snapshot, name: str) -> str | None:
    """A local model name as is, or the model a route's ``onnx`` variant serves."""
    if name in snapshot.models:
        return name
    route = snapshot.routes.get(name)
    if route is not None:
        for v in route.variants:
            if v.upstream.kind == "onnx" and v.model in snapshot.models:
                return v.model
    return None


def message_text(content: Any) -> str | None:
    """A message's text: a string, or text parts; ``None`` for anything else (an image
    part changes the answer and cannot be embedded)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            text = part.get("text")
            if not isinstance(text, str):
                return None
            texts.append(text)
        return "\n".join(texts)
    return None


def guards(text: str) -> tuple[list[str], bool]:
    """What must match exactly besides the meaning: the numbers, in order, and whether
    the text is negated ("How do I enable X" and "How do I not enable X" embed close)."""
    return _NUMBER.findall(text), bool(_NEGATION.search(text))


def split_request(path: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(the text compared by meaning, everything else) or ``None`` when not cacheable: the
    last chat message must be the user's and all text; a completion prompt one string."""
    rest = {k: v for k, v in body.items() if k not in _ANSWER_INDEPENDENT}
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            return None
        text = message_text(last.get("content"))
        rest["messages"] = [*messages[:-1], {k: v for k, v in last.items() if k != "content"}]
    elif path == TEXT_PATH:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else None
        rest.pop("prompt", None)
    else:
        return None
    if text is None:
        return None
    text = " ".join(text.split())
    return (text, rest) if text else None


class MemoryVectorStore:
    """Per route: an LRU of entries bounded by ``max_entries`` (from the route) and
    ``max_bytes`` of answers; per partition a matrix of unit vectors grown by doubling."""

    def __init__(self, *, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._routes: dict[str, _RouteIndex] = {}

    def entries(self, route: str) -> int:
        index = self._routes.get(route)
        return len(index.lru) if index is not None else 0

    def size_bytes(self, route: str) -> int:
        index = self._routes.get(route)
        return index.bytes if index is not None else 0

    def keep_routes(self, names: set[str]) -> None:
        """Forget routes that left the configuration (or no longer use the cache)."""
        for name in [n for n in self._routes if n not in names]:
            del self._routes[name]
            self._gauge(name, 0)

    async def search(self, query: Query, vector: Vector) -> Hit | None:
        index = self._routes.get(query.route)
        part = index.partitions.get(query.partition) if index is not None else None
        if index is None or part is None:
            return None
        now = time.monotonic()
        for entry in part.expired(now):
            index.remove(entry)
        n = len(part.entries)
        if not n:
            return None
        matrix = part.vectors[:n]
        threaded = n >= THREAD_ROWS
        # A big partition (a cache shared across keys) is scanned off the event loop;
        # numpy releases the GIL for the product.
        sims = await asyncio.to_thread(matrix.__matmul__, vector) if threaded else matrix @ vector
        row = int(sims.argmax())
        if row >= len(part.entries):
            return None
        entry = part.entries[row]
        similarity = float(sims[row])
        if threaded:  # rows may have moved meanwhile: check the entry that would be served
            if index.lru.get(entry.id) is not entry:
                return None
            similarity = float(index.partitions[entry.partition].vectors[entry.row] @ vector)
        if similarity < query.spec.threshold:
            return None
        index.lru.move_to_end(entry.id)
        return Hit(entry.answer, min(similarity, 1.0))

    async def add(self, query: Query, vector: Vector, answer: Answer) -> bool:
        index = self._routes.setdefault(query.route, _RouteIndex())
        index.add(query.partition, vector, answer, time.monotonic() + query.spec.ttl_s)
        while len(index.lru) > query.spec.max_entries or index.bytes > self.max_bytes:
            index.remove(next(iter(index.lru.values())))
        self._gauge(query.route, len(index.lru))
        return True

    def _gauge(self, route: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.semantic_cache_entries.labels(route).set(value)


class _Entry:
    __slots__ = ("answer", "expires_at", "id", "partition", "row")

    def __init__(self, id: int, partition: str, answer: Answer, expires_at: float) -> None:
        self.id = id
        self.partition = partition
        self.answer = answer
        self.expires_at = expires_at
        self.row = 0


class _Partition:
    __slots__ = ("entries", "vectors")

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.vectors: Vector = np.empty((4, dim), dtype=np.float32)
        self.entries: list[_Entry] = []

    def add(self, entry: _Entry, vector: Vector) -> None:
        import numpy as np

        n = len(self.entries)
        if n == len(self.vectors):
            grown = np.empty((2 * n, self.vectors.shape[1]), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        entry.row = n
        self.entries.append(entry)

    def remove(self, entry: _Entry) -> None:
        """Swap the last row into the freed one, so rows stay contiguous."""
        last = self.entries.pop()
        if last is not entry:
            self.vectors[entry.row] = self.vectors[len(self.entries)]
            self.entries[entry.row] = last
            last.row = entry.row

    def expired(self, now: float) -> list[_Entry]:
        return [e for e in self.entries if e.expires_at <= now]


class _RouteIndex:
    __slots__ = ("bytes", "lru", "next_id", "partitions")

    def __init__(self) -> None:
        self.partitions: dict[str, _Partition] = {}
        self.lru: OrderedDict[int, _Entry] = OrderedDict()
        self.bytes = 0
        self.next_id = 0

    def add(self, partition: str, vector: Vector, answer: Answer, expires_at: float) -> None:
        part = self.partitions.get(partition)
        if part is None or part.vectors.shape[1] != vector.shape[0]:
            for old in part.entries if part is not None else ():
                self.lru.pop(old.id, None)
                self.bytes -= len(old.answer.body)
            part = self.partitions[partition] = _Partition(vector.shape[0])
        self.next_id += 1
        entry = _Entry(self.next_id, partition, answer, expires_at)
        part.add(entry, vector)
        self.lru[entry.id] = entry
        self.bytes += len(answer.body)

    def remove(self, entry: _Entry) -> None:
        if self.lru.pop(entry.id, None) is None:
            return
        self.bytes -= len(entry.answer.body)
        part = self.partitions[entry.partition]
        part.remove(entry)
        if not part.entries:
            del self.partitions[entry.partition]


class RedisVectorStore:
    """Shared by replicas. Keys: ``v:<partition>`` a hash of entry id -> (expiry, vector);
    ``a:<id>`` the answer (with a TTL); ``lru:<route>`` a sorted set of
    ``<partition>:<id>`` by last use, trimmed to the route's ``max_entries`` after every
    store (the oldest go, with their vectors and answers)."""

    PREFIX = "litegate:semcache:"

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode_vector = msgspec.msgpack.Decoder(tuple[float, bytes]).decode
        self._decode_answer = msgspec.msgpack.Decoder(
            tuple[list[tuple[bytes, bytes]], bytes, str | None]).decode
        self._failing = False

    async def search(self, query: Query, vector: Vector) -> Hit | None:
        import numpy as np

        vkey = self.PREFIX + "v:" + query.partition
        try:
            stored = await self.redis.hgetall(vkey)
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss
            self._warn(exc)
            return None
        now = time.time()
        ids: list[bytes] = []
        rows: list[Vector] = []
        stale: list[bytes] = []
        for key, raw in stored.items():
            entry_id = _bytes(key)
            try:
                expires_at, data = self._decode_vector(_bytes(raw))
                row = np.frombuffer(data, dtype=np.float32)
            except (msgspec.MsgspecError, ValueError):  # not ours (or corrupt): drop it
                stale.append(entry_id)
                continue
            if expires_at <= now or row.shape != vector.shape:
                stale.append(entry_id)
            else:
                ids.append(entry_id)
                rows.append(row)
        try:
            if stale:
                await self.redis.hdel(vkey, *stale)
            if not rows:
                return None
            sims = np.vstack(rows) @ vector
            best = int(sims.argmax())
            similarity = float(sims[best])
            if similarity < query.spec.threshold:
                return None
            best_id = ids[best].decode()
            raw_answer = await self.redis.get(self.PREFIX + "a:" + best_id)
            if raw_answer is None:  # evicted by Redis itself
                await self.redis.hdel(vkey, best_id)
                return None
            await self.redis.zadd(self.PREFIX + "lru:" + query.route,
                                  {f"{query.partition}:{best_id}": now}, xx=True)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return None
        self._failing = False
        try:
            headers, body, variant = self._decode_answer(_bytes(raw_answer))
        except msgspec.MsgspecError:
            return None
        return Hit(Answer(tuple(headers), body, variant), min(similarity, 1.0))

    async def add(self, query: Query, vector: Vector, answer: Answer) -> bool:
        entry_id = os.urandom(8).hex()
        ttl_ms = max(1, int(query.spec.ttl_s * 1000))
        now = time.time()
        vkey = self.PREFIX + "v:" + query.partition
        lru = self.PREFIX + "lru:" + query.route
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(vkey, entry_id, self._encode((now + query.spec.ttl_s, vector.tobytes())))
            pipe.pexpire(vkey, ttl_ms)
            pipe.set(self.PREFIX + "a:" + entry_id,
                     self._encode((list(answer.headers), answer.body, answer.variant)), px=ttl_ms)
            pipe.zadd(lru, {f"{query.partition}:{entry_id}": now})
            pipe.pexpire(lru, ttl_ms)
            pipe.zcard(lru)
            size = int((await pipe.execute())[-1])
            if size > query.spec.max_entries:
                # redis-py types this loosely: it is [(member, score), ...] here.
                popped = cast("list[tuple[bytes, float]]",
                              await self.redis.zpopmin(lru, size - query.spec.max_entries))
                await self._evict([_bytes(member) for member, _ in popped])
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return False
        self._failing = False
        return True

    async def _evict(self, members: list[bytes]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            partition, _, entry_id = member.decode().rpartition(":")
            pipe.hdel(self.PREFIX + "v:" + partition, entry_id)
            pipe.delete(self.PREFIX + "a:" + entry_id)
        await pipe.execute()

    def keep_routes(self, names: set[str]) -> None:
        """Entries of removed routes expire with their TTL."""

    def _warn(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("redis_semantic_cache_unavailable", error=str(exc))

    async def close(self) -> None:
        await self.redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class SemanticCache:
    """The policy: which requests are cacheable, lookups and stores, and their counts."""

    def __init__(
        self, *, embed: Embed, store: MemoryVectorStore | RedisVectorStore,
        max_entry_bytes: int, metrics: Metrics | None = None,
    ) -> None:
        self.embed = embed
        self.store = store
        self.max_entry_bytes = max_entry_bytes
        self.metrics = metrics
        self._unresolved: set[tuple[str, str]] = set()

    def query(
        self, snapshot: Snapshot, route: RouteSpec, path: str, key_id: int | None,
        body: Mapping[str, Any],
    ) -> Query | None:
        """The request as a cache query, or ``None`` when it cannot be cached."""
        spec = route.semantic_cache
        if spec is None:
            return None
        model = resolve_model(snapshot, spec.embedding_model)
        if model is None:
            if (route.name, spec.embedding_model) not in self._unresolved:
                self._unresolved.add((route.name, spec.embedding_model))
                log.warning("semantic_cache_model_missing", route=route.name,
                            embedding_model=spec.embedding_model)
            return None
        split = split_request(path, body)
        if split is None:
            return None
        text, rest = split
        owner = None if spec.shared_across_keys else key_id
        identity = _encode_sorted([path, route.name, owner, model, guards(text), rest])
        partition = hashlib.blake2b(identity, digest_size=16).hexdigest()
        return Query(route.name, model, partition, text, spec)

    async def lookup(self, query: Query) -> tuple[Vector | None, Hit | None]:
        """(the text's vector, the best stored answer above the threshold). No vector:
        the text could not be embedded (too long, model failing) — bypass the cache."""
        try:
            vector = await self.embed(query.model, query.text)
        except Exception as exc:  # noqa: BLE001 - an embedding failure is a bypass
            log.warning("semantic_cache_embed_failed", route=query.route, error=str(exc))
            return None, None
        if vector is None:
            return None, None
        return vector, await self.store.search(query, vector)

    async def add(self, query: Query, vector: Vector, answer: Answer) -> bool:
        if len(answer.body) > self.max_entry_bytes:
            return False
        return await self.store.add(query, vector, answer)

    def record(self, route: str, result: str) -> None:
        """``hit`` / ``miss`` / ``bypass`` by configured route name."""
        if self.metrics is not None:
            self.metrics.semantic_cache.labels(route, result).inc()


def as_sse(body: bytes, path: str, *, include_usage: bool) -> bytes | None:
    """A stored (non-streamed) answer replayed as the Server-Sent Events a ``stream: true``
    request expects: one chunk per choice with the whole message, one with each finish
    reason, the usage when asked for, then ``[DONE]``. ``None`` if it is not an answer."""
    try:
        answer = msgspec.json.decode(body)
        choices = answer["choices"]
        head = {"id": answer.get("id", ""), "created": answer.get("created", 0),
                "model": answer.get("model", "")}
        chat = path == CHAT_PATH
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
        events = []
        for choice in choices:
            index = choice.get("index", 0)
            if chat:
                message = dict(choice["message"])
                calls = message.get("tool_calls")
                if calls:
                    message["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls)]
                delta: dict[str, Any] = {"delta": message}
            else:
                delta = {"text": choice.get("text", ""), "logprobs": None}
            events.append({**head, "choices": [{"index": index, **delta, "finish_reason": None}]})
            finish: dict[str, Any] = {"delta": {}} if chat else {"text": "", "logprobs": None}
            events.append({**head, "choices": [
                {"index": index, **finish, "finish_reason": choice.get("finish_reason")}]})
        if include_usage and answer.get("usage") is not None:
            events.append({**head, "choices": [], "usage": answer["usage"]})
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return None
    out = [b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events]
    return b"".join(out) + b"data: [DONE]\n\n"
