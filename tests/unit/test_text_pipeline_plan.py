"""The text pipeline with the real tokenizer and a real ONNX encoder small enough to check
every vector exactly: its hidden state per token is ``[token id, 1]``, so a text's pooled,
normalised vector is ``[mean id, 1] / norm`` — distinct texts, distinct vectors.

Covered: run planning, the v2 text face, bad input, overlap on (the next batch is
tokenized while the session holds this one) and off (never), answers never mixing,
clients leaving (queued texts never tokenized, a run nobody waits for terminated), the
bounded queue, unbatched models, and the manager serving text through ``infer``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from prometheus_client import CollectorRegistry

from litegate.errors import BadRequest, ServiceUnavailable
from litegate.inference.batcher import AdaptiveBatcher, QueueFull
from litegate.inference.embeddings import EmbeddingTokenizer
from litegate.inference.manager import ModelManager
from litegate.inference.session import new_run_options
from litegate.inference.text_pipeline import (
    TextPipeline,
    check_texts,
    plan_runs,
    public_signature,
    text_signature,
)
from tests.fixtures.inference_env import model_spec, settings, snapshot
from tests.fixtures.onnx_models import _save

OPTIONS = {"tokenizer": "builtin:minilm", "task": "embeddings"}


def id_encoder(path: Path) -> Path:
    """input_ids, attention_mask, token_type_ids INT64 [b, s] -> last_hidden_state FP32
    [b, s, 2] = [id, 1] per token."""
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["f", "axis"], ["col"]),
         helper.make_node("Mul", ["col", "zero"], ["zeros"]),
         helper.make_node("Add", ["zeros", "one"], ["ones"]),
         helper.make_node("Concat", ["col", "ones"], ["last_hidden_state"], axis=2)],
        "id_encoder", ints,
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "seq", 2])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    return _save(graph, path)


@pytest.fixture(scope="module")
def tokenizer() -> EmbeddingTokenizer:
    return EmbeddingTokenizer.load("builtin:minilm", max_length=32)


def expected(tokenizer: EmbeddingTokenizer, text: str) -> np.ndarray:
    ids = tokenizer.rows([text])[0][0]
    v = np.array([np.mean(ids), 1.0])
    return (v / np.linalg.norm(v)).astype(np.float32)


class Recording:
    """The real tokenizer, recording what it tokenizes and how many runs had finished."""

    def __init__(self, inner: EmbeddingTokenizer, finished: list[int]) -> None:
        self.inner, self.finished = inner, finished
        self.batches: list[tuple[list[Any], int]] = []
        self.max_length = inner.max_length

    def rows(self, items: Sequence[Any]) -> Any:
        self.batches.append((list(items), self.finished[0]))
        return self.inner.rows(items)

    def pad(self, rows: Any) -> Any:
        return self.inner.pad(rows)

    def check_ids(self, items: Any) -> None:
        self.inner.check_ids(items)


class Harness:
    """A pipeline over a real batcher and session; runs can be held at a gate."""

    def __init__(self, path: Path, tokenizer: EmbeddingTokenizer, **options: Any) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.gate = threading.Event()
        self.gate.set()
        self.in_run = [0]
        self.finished = [0]
        self.terminated: list[bool] = []
        self.pool = ThreadPoolExecutor(2)
        self.batcher = AdaptiveBatcher(self._run, executor=ThreadPoolExecutor(2),
                                       max_batch_size=8, max_delay_s=0.0,
                                       concurrency=options.get("concurrency", 1),
                                       run_options=new_run_options)
        self.tok = Recording(tokenizer, self.finished)
        options.setdefault("max_batch", 4)
        self.pipeline = TextPipeline(
            self.tok, self._submit,  # type: ignore[arg-type]
            executor=self.pool, input_names=["input_ids", "attention_mask", "token_type_ids"],
            **options)

    async def _submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return await self.batcher.submit(inputs, alone=True)
        finally:
            self.finished[0] += 1

    def _run(self, inputs: dict[str, np.ndarray], run_options: Any) -> dict[str, np.ndarray]:
        self.in_run[0] += 1
        try:
            self.gate.wait(20)
            self.terminated.append(bool(run_options.terminate))
            return dict(zip(["last_hidden_state"], self.session.run(None, inputs, run_options)))
        finally:
            self.in_run[0] -= 1


async def until(condition: Any, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_plan_runs_groups_similar_lengths_within_the_waste_bound() -> None:
    lengths = [30, 5, 6, 29, 5, 31, 7]
    runs = plan_runs(lengths, max_rows=8, min_rows=1)
    assert sorted(i for run in runs for i in run) == list(range(7))  # every row once
    for run in runs:
        widest = max(lengths[i] for i in run)
        assert sum(lengths[i] for i in run) >= 0.75 * widest * len(run)
    assert {frozenset(r) for r in runs} == {frozenset({1, 4, 2, 6}), frozenset({3, 0, 5})}
    assert [len(r) for r in plan_runs([8] * 10, max_rows=4)] == [4, 4, 2]
    # a run is not cut below min_rows (each run has a fixed cost), nor with waste 1
    assert [len(r) for r in plan_runs(lengths, max_rows=8, min_rows=5)] == [5, 2]
    assert len(plan_runs(lengths, max_rows=8, waste=1.0, min_rows=1)) == 1


def test_text_face_is_what_metadata_advertises() -> None:
    onnx_sig = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
                "outputs": [{"name": "last_hidden_state", "datatype": "FP32",
                             "shape": [-1, -1, 384]}]}
    face = text_signature(OPTIONS, onnx_sig)
    assert face == {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]}
    assert public_signature({}, onnx_sig) is onnx_sig  # not a text model: unchanged
    assert text_signature({**OPTIONS, "task": "other"}, onnx_sig) is None


def test_bad_text_requests_are_named_400s() -> None:
    with pytest.raises(BadRequest, match="holds no text"):
        check_texts([], what="input 'text'")
    with pytest.raises(BadRequest, match="holds 3 texts; this model takes at most 2"):
        check_texts(["a", "b", "c"], what="input 'text'", max_texts=2)
    with pytest.raises(BadRequest, match="text 1 has 11 characters; .* at most 10"):
        check_texts(["ok", "x" * 11], what="input 'text'", max_chars=10)


@pytest.mark.parametrize("overlap", [True, False])
async def test_overlap_tokenizes_the_next_batch_while_the_session_runs(
        tmp_path, tokenizer, overlap) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, overlap=overlap, max_batch=2)
    h.gate.clear()
    texts = [f"request {i} says hello" for i in range(6)]
    tasks = [asyncio.ensure_future(h.pipeline.submit([t])) for t in texts]
    await until(lambda: h.in_run[0] == 1, "the first run reaches the session")
    if overlap:  # batch 2 is tokenized while batch 1 is still held in the session
        await until(lambda: len(h.tok.batches) == 2, "the next batch is tokenized")
        assert h.in_run[0] == 1 and h.finished[0] == 0
    h.gate.set()
    results = await asyncio.gather(*tasks)
    for text, (vectors, tokens) in zip(texts, results):
        np.testing.assert_allclose(vectors[0], expected(tokenizer, text), rtol=1e-6)
        assert tokens == len(tokenizer.rows([text])[0][0])
    assert len(h.tok.batches) == 3
    if not overlap:  # off: batch k+1 is tokenized only once run k has finished
        assert [finished for _, finished in h.tok.batches] == [0, 1, 2]


async def test_concurrent_requests_get_exactly_their_own_vectors(tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, max_batch=16, concurrency=2,
                max_delay_s=0.002)
    requests = [[f"client {i} text {j} " + "word " * ((i * 7 + j) % 11) for j in range(i % 4 + 1)]
                for i in range(60)]
    refs = [np.stack([expected(tokenizer, t) for t in r]) for r in requests]
    assert len({v.tobytes() for r in refs for v in r}) == sum(len(r) for r in requests)
    results = await asyncio.gather(*(h.pipeline.submit(r) for r in requests))
    for (vectors, _), ref in zip(results, refs):
        np.testing.assert_allclose(vectors, ref, rtol=1e-6)
    assert h.batcher.executions < len(requests)  # runs really were shared


async def test_a_request_larger_than_a_batch_spans_batches_in_order(tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, max_batch=8)
    texts = [f"item {i} " + "x " * (i % 5) for i in range(21)]
    vectors, _ = await h.pipeline.submit(texts)
    np.testing.assert_allclose(vectors, np.stack([expected(tokenizer, t) for t in texts]),
                               rtol=1e-6)
    assert len(h.tok.batches) == 3


async def test_unbatched_model_never_shares_a_run_between_requests(tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, max_batch=1)
    h.gate.clear()
    first = asyncio.ensure_future(h.pipeline.submit(["one", "two"]))
    await until(lambda: h.in_run[0] == 1, "the first run starts")
    others = [asyncio.ensure_future(h.pipeline.submit([f"other {i}"])) for i in range(3)]
    h.gate.set()
    await asyncio.gather(first, *others)
    assert [len(items) for items, _ in h.tok.batches] == [2, 1, 1, 1]


async def test_a_client_that_left_is_never_tokenized_and_its_run_is_stopped(
        tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, overlap=False, max_batch=4)
    h.gate.clear()
    running = asyncio.ensure_future(h.pipeline.submit(["held in the session"]))
    await until(lambda: h.in_run[0] == 1, "the run starts")
    queued = asyncio.ensure_future(h.pipeline.submit(["never tokenized"]))
    await asyncio.sleep(0.01)
    queued.cancel()
    running.cancel()  # nobody waits for the run any more: it is terminated
    await until(lambda: h.finished[0] == 1, "the pipeline gives the run up")
    h.gate.set()
    await until(lambda: h.terminated, "the held run returns")
    assert h.terminated == [True]
    after, _ = await h.pipeline.submit(["still served"])
    np.testing.assert_allclose(after[0], expected(tokenizer, "still served"), rtol=1e-6)
    seen = [t for items, _ in h.tok.batches for t in items]
    assert "never tokenized" not in seen
    assert h.pipeline.pending == 0 and h.pipeline.queued_texts == 0


async def test_the_queue_is_bounded_in_texts_and_requests(tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, overlap=False, max_batch=2,
                max_queue_texts=4, max_queue=3)
    h.gate.clear()
    running = asyncio.ensure_future(h.pipeline.submit(["a", "b"]))
    await until(lambda: h.in_run[0] == 1, "the run starts")
    waiting = asyncio.ensure_future(h.pipeline.submit(["c", "d", "e"]))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="max_queue_texts 4") as info:
        await h.pipeline.submit(["f", "g"])
    assert info.value.status_code == 503
    small = asyncio.ensure_future(h.pipeline.submit(["h"]))  # 4 texts: fits
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="3 requests"):
        await h.pipeline.submit(["i"])
    h.gate.set()
    await asyncio.gather(running, waiting, small)
    assert h.pipeline.pending == 0 and h.pipeline.queued_texts == 0


async def test_close_answers_waiting_requests_then_refuses(tmp_path, tokenizer) -> None:
    h = Harness(id_encoder(tmp_path / "enc.onnx"), tokenizer, overlap=False, max_batch=1)
    h.gate.clear()
    running = asyncio.ensure_future(h.pipeline.submit(["first"]))
    await until(lambda: h.in_run[0] == 1, "the run starts")
    waiting = asyncio.ensure_future(h.pipeline.submit(["second"]))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(h.pipeline.close())
    h.gate.set()
    await closing
    assert (await waiting)[0].shape == (1, 2) and (await running)[0].shape == (1, 2)
    with pytest.raises(ServiceUnavailable, match="unloaded"):
        await h.pipeline.submit(["late"])


async def test_manager_serves_text_through_infer_and_embed(tmp_path, tokenizer) -> None:
    path = id_encoder(tmp_path / "enc.onnx")
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    options = {**OPTIONS, "max_length": 32}
    await manager.start(snapshot(model_spec("enc", {"1": path}, max_batch_size=8,
                                            options=options)))
    texts = ["first text", "a second, longer text here"]
    ref = np.stack([expected(tokenizer, t) for t in texts])
    result = await manager.infer("enc", {"text": np.array(texts, dtype=object)},
                                 outputs=["embedding"])
    assert list(result.outputs) == ["embedding"]
    np.testing.assert_allclose(result.outputs["embedding"], ref, rtol=1e-6)
    vectors, tokens = await manager.embed("enc", texts)
    np.testing.assert_allclose(vectors, ref, rtol=1e-6)
    ids = [tokenizer.rows([t])[0][0] for t in texts]
    assert tokens == sum(len(i) for i in ids)
    by_ids, _ = await manager.embed("enc", ids)  # token ids: the same pipeline
    np.testing.assert_allclose(by_ids, ref, rtol=1e-6)
    raw = tokenizer.encode(texts)  # the ONNX inputs themselves still work
    hidden = (await manager.infer("enc", raw)).outputs["last_hidden_state"]
    assert hidden.shape[:2] == raw["input_ids"].shape
    bad = [
        ({"text": np.array([1, 2], dtype=np.int32)},
         "datatype INT32 does not match the model's BYTES"),
        ({"text": np.array([["a"], ["b"]], dtype=object)}, r"shape \[2, 1\] does not match"),
        ({"text": np.array(["a"], dtype=object), "extra": np.zeros(1, np.float32)},
         "unexpected input 'extra'"),
        ({"text": np.array(["x" * 40000], dtype=object)}, "text 0 has 40000 characters"),
        ({"text": np.array(["a"] * 2049, dtype=object)}, "holds 2049 texts"),
        ({"text": np.array([], dtype=object)}, "holds no text"),
    ]
    for inputs, message in bad:
        with pytest.raises(BadRequest, match=message):
            await manager.infer("enc", inputs)
    with pytest.raises(BadRequest, match="unknown output 'last_hidden_state'"):
        await manager.infer("enc", {"text": np.array(["a"], dtype=object)},
                            outputs=["last_hidden_state"])
    with pytest.raises(BadRequest, match=r"token ids must be in \[0, 30522\)"):
        await manager.embed("enc", [[101, 99999999]])
    await manager.stop()


async def test_model_options_switch_overlap_and_a_change_rebuilds_the_pipeline(
        tmp_path, tokenizer) -> None:
    path = id_encoder(tmp_path / "enc.onnx")
    manager = ModelManager(settings(tmp_path), CollectorRegistry())
    options = {**OPTIONS, "max_length": 32, "overlap": "off"}
    await manager.start(snapshot(model_spec("enc", {"1": path}, max_batch_size=8,
                                            options=options)))
    text = {"text": np.array(["some text"], dtype=object)}
    first = (await manager.infer("enc", text)).outputs["embedding"]
    old = manager._loaded[("enc", "1")].pipeline
    assert old is not None and old.overlap is False
    manager.on_snapshot(snapshot(model_spec("enc", {"1": path}, max_batch_size=8,
                                            options={**options, "max_texts": 1}), version=2))
    with pytest.raises(BadRequest, match="at most 1 per request"):
        await manager.infer("enc", {"text": np.array(["a", "b"], dtype=object)})
    new = manager._loaded[("enc", "1")].pipeline
    assert new is not old and new.max_texts == 1 and new.overlap is False
    np.testing.assert_array_equal((await manager.infer("enc", text)).outputs["embedding"], first)
    await until(lambda: old._collector is not None and old._collector.done(),
                "the old pipeline drains and stops")
    await manager.stop()
