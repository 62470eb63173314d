"""``litegate models add --quantize int8``: real ONNX Runtime quantization in the capped
child process, registered like any version and served through ``tritonclient.http``."""

from __future__ import annotations

import asyncio
import json
import re
import resource
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select

from litegate.cli.common import transaction
from litegate.db.models import AuditEntry, ConfigState, Model
from litegate.inference.examples import mlp_reference, write_mlp
from litegate.inference.quantize import QuantizationFailed, quantize_model
from litegate.settings import Settings
from tests.helpers.cli import create_key, run_cli, run_litegate


def _db(home: Path):
    async def read():
        async with transaction(Settings.load(home=home)) as s:
            models = {m.name: m for m in await s.scalars(select(Model))}
            audit = list(await s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
            return models, audit, int(await s.scalar(select(ConfigState.version)) or 0)

    return asyncio.run(read())


PROGRESS = re.compile(r"^[a-z-]+: \d+%")
"""A plain progress line (stderr is not a terminal here); the error is the one other line."""


def _not_progress(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if not PROGRESS.match(line)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_quantized_version_is_served_through_tritonclient_close_to_fp32(
        tmp_path, home, make_gateway) -> None:
    src = write_mlp(tmp_path / "mlp.onnx")  # Gemm + Relu + Gemm, fp32
    code, out, err = run_cli("models", "add", "mlp", str(src), "--version", "2",
                             "--quantize", "int8", "--json", home=home)
    assert code == 0, err
    added = json.loads(out)
    assert (added["version"], added["active_version"]) == ("2", "2")
    report = added["quantization"]
    assert report["method"] == "dynamic"
    assert report["int8"]["file_bytes"] < report["fp32"]["file_bytes"] / 2
    for side in ("fp32", "int8"):
        assert report[side]["memory_bytes"] > 0
        assert set(report[side]["latency_ms"]) == {"1", "64"}
    assert report["accuracy"]["min_cosine"] > 0.999 and report["accuracy"]["rows"] == 8
    # What is stored is really an int8 graph, and the audit entry carries the report.
    stored = onnx.load(str(home / "models" / "mlp" / "2" / "model.onnx"))  # as served
    ops = {n.op_type for n in stored.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops or "DynamicQuantizeMatMul" in ops
    assert "Gemm" not in ops
    assert any(t.data_type == TensorProto.INT8 for t in stored.graph.initializer)
    _, audit, _ = _db(home)
    assert audit[-1].action == "add_version"
    assert audit[-1].after["quantization"]["accuracy"] == report["accuracy"]

    key = create_key(home)
    server = make_gateway()
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"),
                                              network_timeout=30)
    x = np.random.default_rng(7).standard_normal((5, 256)).astype(np.float32)

    def infer(version: str) -> np.ndarray:
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("mlp", [inp], model_version=version,
                              headers={"Authorization": f"Bearer {key}"})
        return result.as_numpy("y")

    int8 = infer("2")
    client.close()
    fp32 = mlp_reference(x)  # what the fp32 file computes (numpy, float32)
    assert not np.allclose(int8, fp32, rtol=0, atol=1e-5)  # really the int8 model answering
    assert np.max(np.abs(int8 - fp32)) < 0.1
    assert _cosines(int8, fp32).min() > 0.999


def test_drift_threshold_refuses_the_version_and_writes_nothing(tmp_path, home) -> None:
    src = write_mlp(tmp_path / "mlp.onnx")
    assert run_cli("models", "add", "mlp", str(src), home=home)[0] == 0
    _, audit_before, version_before = _db(home)
    code, out, err = run_cli("models", "add", "mlp", str(src), "--quantize", "int8",
                             "--max-error", "1e-6", "--activate", home=home)
    assert code == 1 and out == ""
    lines = _not_progress(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: quantized model drifts too far from fp32: max abs error")
    assert "> 1e-06 (max error)" in lines[0] and "nothing registered" in lines[0]
    code, _, err = run_cli("models", "add", "mlp", str(src), "--quantize", "int8",
                           "--min-cosine", "1.0000001", home=home)
    assert code == 1 and "cosine similarity" in err and "< 1 (min cosine)" in err
    assert sorted(p.name for p in (home / "models" / "mlp").iterdir()) == ["1"]
    models, audit, version = _db(home)
    assert [v.version for v in models["mlp"].versions] == ["1"]
    assert models["mlp"].active_version == "1"
    assert len(audit) == len(audit_before) and version == version_before


def _bad_calibration(kind: str, tmp: Path) -> Path:
    path = tmp / "cal.npz"
    if kind == "not_npz":
        path.write_text("x,y\n1,2\n")
    elif kind == "wrong_input":
        np.savez(path, z=np.ones((4, 256), np.float32))
    elif kind == "wrong_shape":
        np.savez(path, x=np.ones((4, 3), np.float32))
    elif kind == "npy":
        path = tmp / "cal.npy"
        np.save(path, np.ones((4, 256), np.float32))
    return path


@pytest.mark.parametrize("kind,expected", [
    ("not_npz", "cal.npz: the calibration file is not a .npz of arrays"),
    ("wrong_input", "cal.npz: calibration file: unexpected input 'z'"),
    ("wrong_shape", "cal.npz: calibration file:"),
    ("npy", "cal.npy: the calibration file must be a .npz"),
    ("missing", "nope.npz: no such calibration file"),
])
def test_broken_calibration_file_is_a_one_line_error(tmp_path, home, kind, expected) -> None:
    src = write_mlp(tmp_path / "mlp.onnx")
    cal = tmp_path / "nope.npz" if kind == "missing" else _bad_calibration(kind, tmp_path)
    code, out, err = run_cli("models", "add", "mlp", str(src), "--quantize", "int8",
                             "--calibration", str(cal), home=home)
    assert code == 1 and out == ""
    lines = _not_progress(err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), err
    assert str(tmp_path) not in err  # file names only, never the directory
    assert not (home / "models" / "mlp").exists()


def test_broken_calibration_as_the_user_sees_it(tmp_path, home) -> None:
    """The installed command in a child process: exit 1, one line, no traceback."""
    src = write_mlp(tmp_path / "mlp.onnx")
    cal = _bad_calibration("wrong_input", tmp_path)
    proc = run_litegate("models", "add", "mlp", str(src), "--quantize", "int8",
                        "--calibration", str(cal), home=home)
    assert proc.returncode == 1, proc.stderr
    assert _not_progress(proc.stderr) == [
        "error: cal.npz: calibration file: unexpected input 'z'; the model expects x"]
    code, _, err = run_cli("models", "add", "mlp", str(src), "--max-error", "0.1", home=home)
    assert code == 1 and "--max-error only applies with --quantize int8" in err


def test_static_quantization_with_a_calibration_file(tmp_path, home) -> None:
    src = write_mlp(tmp_path / "mlp.onnx")
    cal = tmp_path / "cal.npz"
    x = np.random.default_rng(3).standard_normal((32, 256)).astype(np.float32)
    np.savez(cal, x=x)
    code, out, err = run_cli("models", "add", "mlp", str(src), "--quantize", "int8",
                             "--calibration", str(cal), "--min-cosine", "0.99", home=home)
    assert code == 0, err
    assert "quantization: int8 static (accuracy on 32 calibration row(s))" in out
    assert "loaded memory" in out and "latency batch 64" in out
    assert "added mlp version 1" in out
    ops = {n.op_type for n in onnx.load(
        str(home / "models" / "mlp" / "1" / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def _wide_matmul(path: Path) -> Path:
    """x FP32 [-1, 1024] -> y = x @ W, W 1024 x 8192 (32 MB of weights)."""
    w = (np.random.default_rng(0).standard_normal((1024, 8192)) / 32).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8192])],
        initializer=[numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), str(path))
    return path


def test_quantization_runs_in_the_capped_child(tmp_path) -> None:
    """A memory cap too small for the model fails the quantization cleanly; the cap is
    the child's: this process keeps its own limit and goes on."""
    src = _wide_matmul(tmp_path / "wide.onnx")
    limit_before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(QuantizationFailed) as info:
        quantize_model(src, tmp_path / "out", Settings(model_check_memory_mb=250))
    assert "250 MB (model_check_memory_mb)" in info.value.detail
    assert info.value.status_code == 400
    assert resource.getrlimit(resource.RLIMIT_AS) == limit_before
    assert not (tmp_path / "out" / "model.onnx").exists()
    big = np.ones(64 * 2**20 // 8)  # the caller can still allocate beyond that cap
    assert big.sum() == big.size
    # ... and so is the time limit: the child is killed, the caller gets one line.
    with pytest.raises(QuantizationFailed) as info:
        quantize_model(src, tmp_path / "out2", Settings(model_check_timeout_s=0.3))
    assert info.value.detail == ("wide.onnx: quantization did not finish within 0.3 s "
                                 "(model_check_timeout_s)")


def test_gemm_rewrite_keeps_the_fp32_answer(tmp_path) -> None:
    """Gemm (transB, bias) becomes MatMul + Add before dynamic quantization; the rewritten
    fp32 graph answers exactly like the original."""
    import onnxruntime as ort

    from litegate.inference.quantize import gemm_as_matmul

    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 6)).astype(np.float32)  # [out, in]: transB=1
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1),
         helper.make_node("Gemm", ["h", "W2"], ["y"], alpha=0.5)],  # alpha != 1: kept
        "gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
                     numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32),
                                             "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    before = model.SerializeToString()
    assert gemm_as_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Gemm"]
    onnx.checker.check_model(model)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (before, model.SerializeToString())]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-6)
