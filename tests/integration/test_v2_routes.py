"""/v2 through routes: A/B between local models and forwarding to a remote v2 server
(here another litegate, which is what a chain of gateways looks like)."""

from __future__ import annotations

import collections

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference
from tests.helpers.cli import apply_config, create_key, run_cli
from tests.helpers.servers import remote_litegate


def _infer(server, key: str, model: str, x: np.ndarray, binary: bool = True):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return client.infer(model, [inp], headers={"Authorization": f"Bearer {key}"})


def test_v2_route_ab_between_local_models(tmp_path, home, make_gateway):
    for name, offset in (("add-a", 0.0), ("add-b", 10.0)):
        src = matmul_add_model(tmp_path / f"{name}.onnx", offset=offset)
        assert run_cli("models", "add", name, str(src), home=home)[0] == 0
    apply_config(home, {
        "upstreams": [{"name": "local", "kind": "onnx"}],
        "routes": [{"name": "add", "sticky": "none", "variants": [
            {"upstream": "local", "model": "add-a", "weight": 50},
            {"upstream": "local", "model": "add-b", "weight": 50}]}],
    })
    key = create_key(home)
    server = make_gateway()
    x = np.ones((1, 4), np.float32)
    seen = collections.Counter()
    for _ in range(40):
        y = _infer(server, key, "add", x).as_numpy("y")
        if np.allclose(y, matmul_add_reference(x)):
            seen["a"] += 1
        else:
            np.testing.assert_allclose(y, matmul_add_reference(x, offset=10.0), rtol=1e-5)
            seen["b"] += 1
    assert seen["a"] > 5 and seen["b"] > 5, seen


def test_v2_route_forwards_to_a_remote_v2_server(tmp_path, home, make_gateway, monkeypatch):
    # The remote: another litegate serving model "add" on its own home and key.
    with remote_litegate(tmp_path, offset=3.0) as (remote_url, remote_key):
        monkeypatch.setenv("LG_REMOTE_KEY", remote_key)
        apply_config(home, {
            "upstreams": [{"name": "triton", "kind": "v2", "base_url": remote_url,
                           "api_key_env": "LG_REMOTE_KEY"}],
            "routes": [{"name": "remote-add", "variants": [{"upstream": "triton", "model": "add"}]}],
        })
        key = create_key(home)
        server = make_gateway()
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        for binary in (True, False):
            y = _infer(server, key, "remote-add", x, binary=binary).as_numpy("y")
            np.testing.assert_allclose(y, matmul_add_reference(x, offset=3.0), rtol=1e-5)
        client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        meta = client.get_model_metadata("remote-add", headers={"Authorization": f"Bearer {key}"})
        assert meta["inputs"][0]["name"] == "x"
        # The remote's own checks still apply: a bad tensor is its 400, passed through.
        bad = httpclient.InferInput("x", [1, 3], "FP32")
        bad.set_data_from_numpy(np.ones((1, 3), np.float32))
        try:
            client.infer("remote-add", [bad], headers={"Authorization": f"Bearer {key}"})
        except InferenceServerException as exc:
            assert "x" in str(exc) and exc.status() == "400"
        else:
            raise AssertionError("a bad tensor must be refused")
    # The remote is gone: 502 in the v2 error shape, not a 500.
    try:
        client.infer("remote-add", [bad], headers={"Authorization": f"Bearer {key}"})
    except InferenceServerException as exc:
        assert exc.status() == "502"
    else:
        raise AssertionError("expected 502")
