"""Registered models through the real CLI, database and standalone gateway: batching is
opt-in, files are what was registered (SHA-256, external data), hostile files are
refused by a capped child process, errors do not show server paths."""

from __future__ import annotations

import json
import shutil
import time
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from litegate.inference.examples import mlp_reference
from tests.fixtures.onnx_models import (
    cumsum_model,
    expand_bomb_model,
    external_data_model,
    loop_forever_model,
    matmul_add_model,
    matmul_add_reference,
    pairs_model,
)
from tests.helpers.cli import create_key, run_cli


def _client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"),
                                            network_timeout=30, concurrency=8)


def _x(model_input: np.ndarray, name: str = "x") -> list:
    inp = httpclient.InferInput(name, list(model_input.shape), "FP32")
    inp.set_data_from_numpy(model_input)
    return [inp]


def _get(server, path: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urlopen(Request(server.url + path, headers=headers), timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_batching_is_opt_in_and_answers_never_mix(tmp_path, home, make_gateway) -> None:
    # CumSum over axis 0: merged into one batch, row i would add every earlier client's row.
    assert run_cli("models", "add", "cumsum", str(cumsum_model(tmp_path / "c.onnx")),
                   home=home)[0] == 0
    key = create_key(home)
    auth = {"Authorization": f"Bearer {key}"}
    server = make_gateway()
    client = _client(server)
    meta = client.get_model_metadata("cumsum", headers=auth)
    assert meta["parameters"]["max_batch_size"] == 0  # before: 8
    assert meta["parameters"]["batching"] is False
    assert client.get_model_config("cumsum", headers=auth)["max_batch_size"] == 0
    # 160 single-row requests in flight 8 at a time (tritonclient's own concurrency).
    rows = [np.full((1, 4), float(i + 1), np.float32) for i in range(160)]
    pending = [client.async_infer("cumsum", _x(row), headers=auth) for row in rows]
    answers = [np.array_equal(p.get_result().as_numpy("y"), row)  # cumsum of 1 row = row
               for p, row in zip(pending, rows)]
    assert all(answers), f"{answers.count(False)} of 160 answers carried another request's data"
    client.close()
    code, out, err = run_cli("models", "update", "cumsum", "--max-batch", "8", home=home)
    assert code == 0 and "max_batch 8" in out, err
    assert json.loads(run_cli("models", "list", "--json", home=home)[1])[0][
        "max_batch_size"] == 8


def test_swapped_file_is_a_503_for_that_model_only(tmp_path, home, make_gateway) -> None:
    assert run_cli("models", "add", "plus1", str(matmul_add_model(tmp_path / "a.onnx",
                                                                   offset=1.0)),
                   "--hot", home=home)[0] == 0
    assert run_cli("models", "add", "other", str(matmul_add_model(tmp_path / "b.onnx")),
                   home=home)[0] == 0
    # Another valid model in place of the stored one (+100 instead of +1).
    stored = home / "models" / "plus1" / "1" / "model.onnx"
    matmul_add_model(stored, offset=100.0)
    key = create_key(home)
    auth = {"Authorization": f"Bearer {key}"}
    server = make_gateway()
    client = _client(server)
    with pytest.raises(InferenceServerException) as info:
        client.infer("plus1", _x(np.ones((1, 4), np.float32)), headers=auth)
    assert info.value.status() == "503"  # before: 200 with the swapped model's answer
    assert "does not match its registered SHA-256" in info.value.message()
    assert str(home) not in info.value.message()
    result = client.infer("other", _x(np.ones((1, 4), np.float32)), headers=auth)
    np.testing.assert_allclose(result.as_numpy("y"),
                               matmul_add_reference(np.ones((1, 4), np.float32)), rtol=1e-5)
    status, ready = _get(server, "/readyz")
    assert status == 503  # a hot model that cannot load keeps this replica out
    assert ready["ready"] is False
    assert "SHA-256" in ready["models"]["models"]["plus1"]["errors"]["1"]
    client.close()


def test_external_data_is_copied_with_the_model(tmp_path, home, make_gateway) -> None:
    src = external_data_model(tmp_path / "src" / "ext.onnx", offset=2.0)
    code, _, err = run_cli("models", "add", "ext", str(src), home=home)
    assert code == 0, err
    shutil.rmtree(tmp_path / "src")  # the registered copy must not need the original
    assert (home / "models" / "ext" / "1" / "ext.onnx.data").is_file()
    key = create_key(home)
    server = make_gateway()
    client = _client(server)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("ext", _x(x), headers={"Authorization": f"Bearer {key}"})
    # Before: registered, then every request failed with 500 (weights not copied).
    np.testing.assert_allclose(result.as_numpy("y"),
                               x @ np.full((4, 3), 0.25, np.float32) + 2.0, rtol=1e-5)
    client.close()


def test_errors_do_not_show_server_paths(tmp_path, home) -> None:
    src = external_data_model(tmp_path / "deep" / "dir" / "ext.onnx")
    (tmp_path / "deep" / "dir" / "ext.onnx.data").unlink()
    for path in (src, tmp_path / "deep" / "nope.onnx"):
        code, out, err = run_cli("models", "add", "m", str(path), home=home)
        assert code == 1 and err.strip()
        assert str(tmp_path) not in err and str(tmp_path) not in out, err
    assert "external data file 'ext.onnx.data' is missing" in run_cli(
        "models", "add", "m", str(src), home=home)[2]


@pytest.mark.parametrize(("maker", "needle"), [
    (expand_bomb_model, "model_check_memory_mb"),
    (loop_forever_model, "model_check_timeout_s"),
])
def test_hostile_models_are_refused_by_a_capped_child(tmp_path, home, monkeypatch, maker,
                                                      needle) -> None:
    # Before: both registered (validation never ran the graph); the bomb's first run
    # allocated 3.6 GB inside the gateway and the loop hung its first request.
    monkeypatch.setenv("LITEGATE_MODEL_CHECK_TIMEOUT_S", "4")
    monkeypatch.setenv("LITEGATE_MODEL_CHECK_MEMORY_MB", "1024")
    code, _, err = run_cli("models", "add", "bad", str(maker(tmp_path / "bad.onnx")), home=home)
    assert code == 1 and needle in err, err
    assert not (home / "models" / "bad").exists()


def test_example_mlp_registers_and_serves_like_the_readme(tmp_path, home, make_gateway) -> None:
    path = tmp_path / "mlp.onnx"
    code, out, err = run_cli("models", "example", "mlp", str(path), home=home)
    assert code == 0 and path.is_file(), err
    code, out, err = run_cli("models", "add", "mlp", str(path), "--json", home=home)
    assert code == 0, err
    assert json.loads(out)["signature"] == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 16]}]}
    key = create_key(home)
    server = make_gateway()
    client = _client(server)
    x = np.ones((2, 256), np.float32)
    result = client.infer("mlp", _x(x), headers={"Authorization": f"Bearer {key}"})
    np.testing.assert_allclose(result.as_numpy("y"), mlp_reference(x), rtol=1e-4, atol=1e-5)
    client.close()


def test_warm_up_on_a_user_sample(tmp_path, home, make_gateway) -> None:
    model = pairs_model(tmp_path / "pairs.onnx")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.ones((2, 2), np.float32))  # wrong rank for the model's input
    code, _, err = run_cli("models", "add", "pairs", str(model), "--warmup-sample", str(bad),
                           home=home)
    assert code == 1 and "warm-up sample: input 'x': shape [2, 2]" in err, err
    odd = tmp_path / "odd.npz"
    np.savez(odd, x=np.ones(3, np.float32))  # the model itself fails on it
    code, _, err = run_cli("models", "add", "pairs", str(model), "--warmup-sample", str(odd),
                           home=home)
    assert code == 1 and "failed on the warm-up sample" in err, err
    good = tmp_path / "good.npz"
    np.savez(good, x=np.arange(4, dtype=np.float32))
    code, _, err = run_cli("models", "add", "pairs", str(model), "--warmup-sample", str(good),
                           "--hot", home=home)
    assert code == 0, err
    assert (home / "models" / "pairs" / "1" / "warmup.npz").is_file()
    key = create_key(home)
    server = make_gateway()
    client = _client(server)
    out = client.infer("pairs", _x(np.arange(6, dtype=np.float32)),
                       headers={"Authorization": f"Bearer {key}"}).as_numpy("y")
    client.close()
    assert out.shape == (3, 2)
    # Minimal zeros ([1]) cannot be reshaped to pairs: without the sample warm-up fails
    # (reported in /readyz); with it, warm-up ran the real shapes.
    loaded = _get(server, "/readyz")[1]["models"]["models"]["pairs"]["loaded"]["1"]
    assert loaded["warm_up_error"] is None, loaded
    (home / "models" / "pairs" / "1" / "warmup.npz").unlink()
    code, _, err = run_cli("models", "add", "pairs", str(model), "--activate", home=home)
    assert code == 0, err  # version 2 without a sample: minimal zeros
    client = _client(server)
    for _ in range(100):
        status = _get(server, "/readyz")[1]["models"]["models"]["pairs"]
        if "2" in status["loaded"]:
            break
        time.sleep(0.05)
    client.close()
    assert "Reshape" in status["loaded"]["2"]["warm_up_error"], status
