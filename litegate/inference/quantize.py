"""INT8 quantization at registration (``litegate models add --quantize int8``).

:func:`quantize_model` runs ``python -m litegate.inference.quantize`` in a child process
under the registration check's limits (``model_check_memory_mb`` of address space,
``model_check_timeout_s``), so a model whose quantization needs too much memory or time
fails cleanly and the serving (or calling) process never runs it. The child:

1. validates the fp32 file (ONNX checker + a real session), loads it the way the engine
   does (:func:`~litegate.inference.session.load_session`: heap measured around the load
   and warm-up, which is what the memory budget counts) and runs it on the sample rows;
2. quantizes with ONNX Runtime: ``quantize_dynamic`` (int8 weights, activations
   quantized at run time, one scale per output channel; ``Gemm`` with constant weights is first rewritten as
   ``MatMul`` + ``Add``, which the dynamic quantizer covers) or, given a calibration
   file, ``quantize_static`` (activation ranges from those inputs, QDQ format);
3. validates and loads the result the same way and compares it with the fp32 outputs.

It prints the report (sizes, loaded memory, latency at batch 1 and 64, max abs error and
cosine similarity) as JSON, or ``{"error": ...}``. The caller decides about thresholds
and registers the file like any other version.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from litegate.errors import BadRequest, LitegateError
from litegate.inference.check import out_of_memory
from litegate.inference.dtypes import BYTES, V2_TO_NUMPY, Tensor
from litegate.inference.progress import child_result, run_child
from litegate.inference.progress import report as report_progress
from litegate.inference.session import InvalidModel
from litegate.progress import Progress
from litegate.settings import Settings

MODES = ("int8",)
OUTPUT_FILE = "model.onnx"
GENERATED_ROWS = 8
GENERATED_DIM = 16  # every other dynamic dimension of generated inputs (e.g. a sequence)
LATENCY_BATCHES = (1, 64)
CALIBRATION_CHUNK = 16
STEPS = ("validate fp32", "measure fp32", "quantize", "validate int8", "measure int8")
"""What the child reports, in order, as the ``quantize`` task's steps."""


class InvalidCalibration(BadRequest):
    """The calibration file is not usable for this model."""


class QuantizationFailed(BadRequest):
    """ONNX Runtime could not quantize this model (or the result does not load)."""


class QuantizationDrift(BadRequest):
    """The quantized model's outputs are too far from the fp32 model's."""


# ---------------------------------------------------------------- caller side


def quantize_model(source: Path, out_dir: Path, settings: Settings | None, *,
                   calibration: Path | None = None, sample: Path | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Quantize ``source`` into ``out_dir/model.onnx`` in a capped child; the report.

    ``calibration`` (``.npz``, one array per input, rows along the first dimension) selects
    static quantization and is also what accuracy is measured on; else ``sample`` (the
    warm-up sample), else generated inputs. Raises a :class:`BadRequest` with the reason.
    ``progress`` hears of the child's steps (``quantize``, :data:`STEPS` of them).
    """
    source = Path(source)
    if not source.is_file():
        raise InvalidModel(f"{source.name}: no such file")
    if calibration is not None and not Path(calibration).is_file():
        raise InvalidCalibration(f"{Path(calibration).name}: no such calibration file")
    settings = settings if settings is not None else Settings()
    limit_mb = int(settings.model_check_memory_mb or 2048)
    timeout = float(settings.model_check_timeout_s or 60.0)
    engine = {"providers": settings.providers, "intra_op_threads": settings.intra_op_threads,
              "inter_op_threads": settings.inter_op_threads,
              "model_load_timeout_s": timeout * 0.5}
    argv = [sys.executable, "-m", "litegate.inference.quantize", str(source), str(out_dir),
            "--limit", str(limit_mb * 2**20), "--engine", json.dumps(engine)]
    if calibration is not None:
        argv += ["--calibration", str(calibration)]
    if sample is not None:
        argv += ["--sample", str(sample)]
    try:
        returncode, lines = run_child(argv, timeout=timeout, progress=progress,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as exc:
        raise QuantizationFailed(
            f"{source.name}: quantization did not finish within {timeout:g} s "
            "(model_check_timeout_s)") from exc
    result = child_result(lines)
    if returncode == 0 and "signature" in result:
        return result
    if "error" in result:
        kind = {"calibration": InvalidCalibration, "model": InvalidModel}.get(
            str(result.get("kind")), QuantizationFailed)
        raise kind(str(result["error"]))
    raise QuantizationFailed(
        f"{source.name}: quantization needed more than {limit_mb} MB (model_check_memory_mb) "
        f"or crashed (exit status {returncode})")


def check_drift(report: Mapping[str, Any], *, max_error: float | None = None,
                min_cosine: float | None = None) -> None:
    """Refuse (:class:`QuantizationDrift`) a report beyond the user's thresholds."""
    acc = report["accuracy"]
    if max_error is not None and acc["max_abs_error"] > max_error:
        raise QuantizationDrift(
            f"quantized model drifts too far from fp32: max abs error "
            f"{acc['max_abs_error']:.6g} > {max_error:g} (max error) on {acc['rows']} sample "
            "row(s); nothing registered")
    if min_cosine is not None and acc["min_cosine"] < min_cosine:
        raise QuantizationDrift(
            f"quantized model drifts too far from fp32: cosine similarity "
            f"{acc['min_cosine']:.6f} < {min_cosine:g} (min cosine) on {acc['rows']} sample "
            "row(s); nothing registered")


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def _ms(n: float | None) -> str:
    return "-" if n is None else f"{n:.3f} ms"


def format_report(report: Mapping[str, Any]) -> list[str]:
    """The report as aligned text lines (what the CLI prints)."""
    f, q = report["fp32"], report["int8"]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{b / a:.2f}x" if a and b is not None else "-"

    rows = [("file size", _mb(f["file_bytes"]), _mb(q["file_bytes"]),
             ratio(f["file_bytes"], q["file_bytes"])),
            ("loaded memory", _mb(f["memory_bytes"]), _mb(q["memory_bytes"]),
             ratio(f["memory_bytes"], q["memory_bytes"]))]
    for b in LATENCY_BATCHES:
        a, c = f["latency_ms"].get(str(b)), q["latency_ms"].get(str(b))
        rows.append((f"latency batch {b}", _ms(a), _ms(c), ratio(a, c)))
    acc = report["accuracy"]
    lines = [(f"quantization: int8 {report['method']} "
              f"(accuracy on {acc['rows']} {acc['inputs']} row(s))"),
             f"  {'':<17}{'fp32':>12}{'int8':>12}{'int8/fp32':>11}"]
    lines += [f"  {n:<17}{a:>12}{b:>12}{r:>11}" for n, a, b, r in rows]
    lines.append(f"  accuracy: max abs error {acc['max_abs_error']:.6g}, cosine similarity "
                 f"min {acc['min_cosine']:.6f} mean {acc['mean_cosine']:.6f}")
    return lines


# ---------------------------------------------------------------- child side


def _fail(message: str, kind: str = "quantize") -> int:
    print(json.dumps({"error": message, "kind": kind}))
    return 2


def load_calibration(path: Path, signature: Any) -> dict[str, Tensor]:
    """A ``.npz`` with one array per model input, checked against the signature."""
    from litegate.inference.signature import validate_inputs

    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidCalibration(
            f"{path.name}: the calibration file is not a .npz of arrays (numpy.savez, one "
            "array per model input, rows along the first dimension)") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy is one array
        raise InvalidCalibration(
            f"{path.name}: the calibration file must be a .npz (numpy.savez, one array per "
            "model input), not a single array")
    try:
        with loaded as npz:
            arrays: dict[str, Tensor] = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidCalibration(
            f"{path.name}: the calibration file is not a .npz of arrays (numpy.savez, one "
            "array per model input, rows along the first dimension)") from exc
    if not arrays:
        raise InvalidCalibration(f"{path.name}: the calibration file holds no arrays")
    try:
        validate_inputs(signature, arrays)
    except BadRequest as exc:
        raise InvalidCalibration(f"{path.name}: calibration file: {exc.detail}") from exc
    return arrays


def generated_inputs(signature: Any, rows: int = GENERATED_ROWS) -> dict[str, Tensor]:
    """Seeded inputs: N(0, 1) floats, integer 1s, ``rows`` along a dynamic first dimension
    and ``GENERATED_DIM`` along other dynamic ones."""
    rng = np.random.default_rng(0)
    result: dict[str, Tensor] = {}
    for spec in signature.inputs:
        shape = [(rows if i == 0 else GENERATED_DIM) if d == -1 else d
                 for i, d in enumerate(spec.shape)]
        if spec.datatype == BYTES:
            raise InvalidCalibration(
                f"input {spec.name!r} is a string tensor: give sample inputs "
                "(--calibration FILE.npz) to compare the quantized model")
        dtype = V2_TO_NUMPY.get(spec.datatype, np.dtype(np.float32))
        if dtype.kind == "f":
            result[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            result[spec.name] = np.ones(shape, dtype=dtype)
    return result


def _batched(signature: Any) -> bool:
    return all(spec.shape and spec.shape[0] == -1 for spec in signature.inputs)


def _rows(inputs: Mapping[str, Tensor], n: int) -> dict[str, Tensor]:
    """``n`` rows taken (repeating) from the sample's first dimension."""
    return {k: np.take(v, np.arange(n) % max(len(v), 1), axis=0) for k, v in inputs.items()}


def _latency(session: Any, inputs: Mapping[str, Tensor], budget_s: float = 0.2) -> float:
    """Median milliseconds of ``session.run`` (one warm run, then 3..30 timed runs within
    about ``budget_s``)."""
    session.run(None, dict(inputs))
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or (len(times) < 30 and time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        session.run(None, dict(inputs))
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _measure(path: Path, settings: Settings, inputs: Mapping[str, Tensor], batched: bool
             ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Load like the engine (memory measured the same way), run, time."""
    from litegate.inference.memory import release_memory
    from litegate.inference.session import load_session

    loaded = load_session(path, settings, name=path.name, version="", options={})
    try:
        if loaded.warm_up_error:
            raise QuantizationFailed(f"{path.name}: warm-up failed: {loaded.warm_up_error}")
        outputs = loaded.run(inputs)
        latency: dict[str, float] = {}
        if batched:
            for b in LATENCY_BATCHES:
                latency[str(b)] = round(_latency(loaded.session, _rows(inputs, b)), 4)
        else:  # no batch dimension: only the sample's own shape
            latency["1"] = round(_latency(loaded.session, inputs), 4)
        info = {"file_bytes": path.stat().st_size, "memory_bytes": loaded.size_bytes,
                "latency_ms": latency, "providers": list(loaded.providers)}
    finally:
        del loaded
        gc.collect()
        release_memory()
    return info, outputs


def compare(reference: Mapping[str, Tensor], candidate: Mapping[str, Tensor], rows: int,
            batched: bool) -> dict[str, Any]:
    """Max abs error and per-row cosine similarity over every output."""
    max_err, cosines = 0.0, []
    for name, ref in reference.items():
        a = np.asarray(ref, dtype=np.float64)
        b = np.asarray(candidate[name], dtype=np.float64)
        if a.shape != b.shape:
            raise QuantizationFailed(
                f"output {name!r}: quantized shape {list(b.shape)} != fp32 {list(a.shape)}")
        if a.size == 0:
            continue
        max_err = max(max_err, float(np.max(np.abs(a - b))))
        split = rows if batched and a.ndim and a.shape[0] == rows else 1
        a2, b2 = a.reshape(split, -1), b.reshape(split, -1)
        na, nb = np.linalg.norm(a2, axis=1), np.linalg.norm(b2, axis=1)
        dot = np.sum(a2 * b2, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where((na == 0) & (nb == 0), 1.0, dot / (na * nb))
        cosines.extend(np.nan_to_num(cos, nan=0.0).tolist())
    return {"max_abs_error": max_err, "min_cosine": float(min(cosines, default=1.0)),
            "mean_cosine": float(np.mean(cosines)) if cosines else 1.0, "rows": rows,
            "outputs": sorted(reference)}


def gemm_as_matmul(model: Any) -> int:
    """Rewrite ``Gemm(x, W, b)`` with constant ``W`` (no transA, alpha = beta = 1) as
    ``MatMul`` + ``Add`` in place: ONNX Runtime's dynamic quantizer covers MatMul, not
    Gemm. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    rewritten = 0
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.domain not in ("", "ai.onnx")
                or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[weight]).T.copy()
            weight = f"{weight}_t_{rewritten}"
            model.graph.initializer.append(numpy_helper.from_array(w, weight))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mm_out],
                                      name=f"{node.name or 'gemm'}_matmul_{rewritten}"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                          name=f"{node.name or 'gemm'}_add_{rewritten}"))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


class _Reader:
    """``CalibrationDataReader`` over the calibration rows, a chunk at a time."""

    def __init__(self, inputs: Mapping[str, Tensor], batched: bool) -> None:
        self._chunks: Iterator[dict[str, Tensor]]
        n = len(next(iter(inputs.values())))
        if batched:
            self._chunks = iter([{k: v[i:i + CALIBRATION_CHUNK] for k, v in inputs.items()}
                                 for i in range(0, n, CALIBRATION_CHUNK)])
        else:
            self._chunks = iter([dict(inputs)])

    def get_next(self) -> dict[str, Tensor] | None:
        return next(self._chunks, None)

    def rewind(self) -> None:  # called by some ORT versions; one pass is enough
        return None


def _quantize(source: Path, target: Path, calibration: Mapping[str, Tensor] | None,
              batched: bool) -> str:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if calibration is not None:
        reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration, batched)
        quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return "static"
    model = onnx.load(str(source))
    gemm_as_matmul(model)
    # Per-channel weight scales: on all-MiniLM-L6-v2 the per-tensor default kept a cosine
    # of 0.92 between pooled fp32 and int8 embeddings, per-channel 0.99 (bench/quantize.py).
    quantize_dynamic(model, str(target), weight_type=QuantType.QInt8, per_channel=True)
    del model
    return "dynamic"


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from litegate.inference.session import WARMUP_SAMPLE, load_sample, validate_model_file

    source, out_dir = Path(args.source), Path(args.out_dir)
    engine = json.loads(args.engine)
    settings = Settings(providers=str(engine.get("providers", "auto")),
                        intra_op_threads=int(engine.get("intra_op_threads", 0)),
                        inter_op_threads=int(engine.get("inter_op_threads", 0)),
                        model_load_timeout_s=float(engine.get("model_load_timeout_s", 30)))
    step = iter(range(len(STEPS) + 1))

    def advance() -> None:
        i = next(step)
        report_progress("quantize", i, len(STEPS), STEPS[i] if i < len(STEPS) else "done")

    advance()
    signature = validate_model_file(source)
    batched = _batched(signature)
    if args.calibration:
        inputs, origin = load_calibration(Path(args.calibration), signature), "calibration"
    elif args.sample:
        inputs, origin = load_sample(Path(args.sample), signature), "warm-up sample"
    else:
        inputs, origin = generated_inputs(signature), "generated"
    rows = len(next(iter(inputs.values()))) if batched and inputs else 1

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / OUTPUT_FILE
    with tempfile.TemporaryDirectory(prefix="fp32-", dir=out_dir) as tmp:
        # The engine warms a version on its stored sample (beside the file): so do we.
        fp32 = Path(tmp) / OUTPUT_FILE
        os.symlink(source.resolve(), fp32)
        from litegate.inference.files import external_data

        for loc in external_data(source):
            (Path(tmp) / loc).parent.mkdir(parents=True, exist_ok=True)
            os.symlink((source.parent / loc).resolve(), Path(tmp) / loc)
        if args.sample:
            shutil.copyfile(args.sample, Path(tmp) / WARMUP_SAMPLE)
        advance()
        fp32_info, reference = _measure(fp32, settings, inputs, batched)
        fp32_info["file_bytes"] = source.stat().st_size + sum(
            (source.parent / loc).stat().st_size for loc in external_data(source))
    advance()
    try:
        method = _quantize(source, target, inputs if args.calibration else None, batched)
    except MemoryError:
        raise
    except LitegateError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        if out_of_memory(text):
            raise MemoryError from exc
        raise QuantizationFailed(
            f"{source.name}: onnxruntime could not quantize the model: {text}") from exc
    gc.collect()
    advance()
    try:
        q_signature = validate_model_file(target)
    except InvalidModel as exc:
        raise QuantizationFailed(f"the quantized model does not load: {exc.detail}") from exc
    if q_signature.to_dict() != signature.to_dict():
        raise QuantizationFailed("the quantized model's signature differs from the fp32 model's")
    if args.sample:
        shutil.copyfile(args.sample, out_dir / WARMUP_SAMPLE)
    advance()
    int8_info, candidate = _measure(target, settings, inputs, batched)
    advance()
    (out_dir / WARMUP_SAMPLE).unlink(missing_ok=True)
    accuracy = compare(reference, candidate, rows, batched) | {"inputs": origin}
    return {"method": method, "fp32": fp32_info, "int8": int8_info, "accuracy": accuracy,
            "signature": q_signature.to_dict()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m litegate.inference.quantize")
    parser.add_argument("source")
    parser.add_argument("out_dir")
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--engine", default="{}")
    parser.add_argument("--calibration")
    parser.add_argument("--sample")
    args = parser.parse_args(argv)
    # Set here rather than in a preexec_fn: the parent is multi-threaded.
    resource.setrlimit(resource.RLIMIT_AS, (args.limit, args.limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    name = Path(args.source).name
    too_big = (f"{name}: quantization needs more than {args.limit // 2**20} MB "
               "(model_check_memory_mb)")
    try:
        report = _run(args)
    except MemoryError:
        return _fail(too_big)
    except LitegateError as exc:  # ORT reports a refused allocation as a load failure
        if out_of_memory(exc.detail):
            return _fail(too_big)
        kind = ("calibration" if isinstance(exc, InvalidCalibration)
                else "model" if isinstance(exc, InvalidModel) else "quantize")
        return _fail(exc.detail, kind)
    except Exception as exc:  # noqa: BLE001 - anything else: one line, details on stderr
        import traceback

        traceback.print_exc()
        text = " ".join(str(exc).split()).replace(
            str(Path(args.source).resolve().parent) + os.sep, "")[:300]
        if out_of_memory(text):
            return _fail(too_big)
        return _fail(f"{name}: quantization failed: {type(exc).__name__}: {text}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
