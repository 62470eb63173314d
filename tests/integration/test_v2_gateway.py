"""v2 through the full standalone gateway (auth, hot reload) with ``tritonclient.http``."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.onnx_models import matmul_add_model, matmul_add_reference
from tests.helpers.cli import create_key, run_cli


def _client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"),
                                            network_timeout=30)


def _infer(client, key: str, x: np.ndarray):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("add", [inp], headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def gateway(tmp_path, home, make_gateway):
    for offset in (0.0, 10.0):
        src = matmul_add_model(tmp_path / f"add{offset}.onnx", offset=offset)
        code, _, err = run_cli("models", "add", "add", str(src), "--max-batch", "8", home=home)
        assert code == 0, err
    key = create_key(home)
    admin = create_key(home, "ops", "--admin")
    return make_gateway(), key, admin


def test_v2_needs_a_key_and_serves_with_one(gateway) -> None:
    server, key, _ = gateway
    client = _client(server)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "lg-wrong", x)
    assert info.value.status() == "401"
    result = _infer(client, key, x)
    np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x), rtol=1e-5)
    meta = client.get_model_metadata("add", headers={"Authorization": f"Bearer {key}"})
    assert meta["versions"] == ["1", "2"]
    assert meta["parameters"]["providers"]  # loaded by the request above: real providers
    client.close()


def test_repository_control_is_admin_only(gateway) -> None:
    server, key, admin = gateway
    client = _client(server)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("add", headers={"Authorization": f"Bearer {key}"})
    assert info.value.status() == "403"
    client.load_model("add", headers={"Authorization": f"Bearer {admin}"})
    index = client.get_model_repository_index(headers={"Authorization": f"Bearer {admin}"})
    assert {(m["name"], m["version"], m["state"]) for m in index} >= {("add", "1", "READY")}
    client.close()


def test_activate_and_rollback_under_load_zero_failed_requests(gateway, home) -> None:
    server, key, _ = gateway
    x = np.ones((1, 4), np.float32)
    refs = {"1": matmul_add_reference(x), "2": matmul_add_reference(x, offset=10.0)}
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def load() -> None:
        client = _client(server)
        while not stop.is_set():
            try:
                result = _infer(client, key, x)
                version = result.get_response()["model_version"]
                np.testing.assert_allclose(result.as_numpy("y"), refs[version], rtol=1e-5)
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                with lock:
                    failures.append(exc)
            else:
                with lock:
                    seen.append(version)
        client.close()

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        assert run_cli("models", "activate", "add", "2", home=home)[0] == 0
        deadline = time.monotonic() + 5
        while "2" not in seen[-5:] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_cli("models", "rollback", "add", home=home)[0] == 0
        time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert {"1", "2"} <= set(seen)
    assert seen[-1] == "1"
    assert len(seen) > 50


def test_oversized_v2_body_is_413_not_unbounded_memory(tmp_path, home, make_gateway) -> None:
    import httpx

    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    key = create_key(home)
    server = make_gateway(max_infer_body_bytes=4096)
    headers = {"Authorization": f"Bearer {key}"}
    x = np.ones((2, 4), np.float32)
    ok = _infer(_client(server), key, x)
    np.testing.assert_allclose(ok.as_numpy("y"), matmul_add_reference(x), rtol=1e-5)
    r = httpx.post(server.url + "/v2/models/add/infer", headers=headers, content=b"x" * 10_000)
    assert r.status_code == 413 and "4096" in r.json()["error"]
