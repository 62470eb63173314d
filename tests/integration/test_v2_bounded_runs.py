"""Runs are bounded: a deadline (ONNX Runtime's RunOptions.terminate), cancellation when
the client leaves, threads of its own per model, shutdown that ends in-flight runs,
readiness that stays red while a hot model cannot load. Through uvicorn and
``tritonclient.http``; the shutdown case runs the server in a child process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from litegate.inference.manager import ModelManager
from tests.fixtures.inference_env import (
    LifespanApp,
    ServerThread,
    model_spec,
    settings,
    snapshot,
    v2_app,
)
from tests.fixtures.onnx_models import (
    loop_forever_model,
    loop_input_model,
    matmul_add_model,
    matmul_add_reference,
)

FOREVER = 2**62


def _serve(tmp: Path, *specs, **overrides):
    st = settings(tmp, **overrides)
    manager = ModelManager(st, CollectorRegistry(), workers=2)
    snap = snapshot(*specs)
    return ServerThread(LifespanApp(v2_app(manager, snap), manager, snap)), manager


def _loop_request(n: int) -> list:
    inp = httpclient.InferInput("n", [1], "INT64")
    inp.set_data_from_numpy(np.array([n], np.int64))
    return [inp]


def _add_request() -> list:
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    return [inp]


def _client(srv, timeout: float = 20) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=srv.url, network_timeout=timeout,
                                            connection_timeout=timeout)


def _hang(url: str, n: int = FOREVER) -> socket.socket:
    """Send an infer request that never finishes by itself; keep the socket open."""
    body = json.dumps({"inputs": [{"name": "n", "datatype": "INT64", "shape": [1],
                                   "data": [n]}]}).encode()
    host, port = url.split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v2/models/loop/infer HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    return sock


def _wait_running(manager: ModelManager, n: int = 1, *, exactly: bool = False) -> None:
    """Until at least ``n`` runs are in flight (``exactly``: until exactly ``n`` are)."""
    deadline = time.monotonic() + 10
    while True:
        running = sum(len(e.batcher._active) for e in manager._loaded.values())
        if running == n or (running > n and not exactly):
            return
        assert time.monotonic() < deadline, f"{running} runs in flight, waiting for {n}"
        time.sleep(0.02)


def test_deadline_terminates_the_run_and_frees_the_model(tmp_path) -> None:
    srv, _ = _serve(tmp_path, model_spec("loop", {"1": loop_input_model(tmp_path / "l.onnx")},
                                         options={"instances": 1}), infer_timeout_s=1.0)
    with srv:
        client = _client(srv)
        with pytest.raises(InferenceServerException) as info:
            client.infer("loop", _loop_request(FOREVER))  # before: never answered
        assert info.value.status() == "504"
        assert "infer_timeout_s" in info.value.message()
        # Its only thread is free again: the same model answers the next request.
        assert client.infer("loop", _loop_request(3)).as_numpy("v").tolist() == [3.0]
        client.close()


def test_a_client_that_leaves_stops_its_run_and_threads_stay_per_model(tmp_path) -> None:
    srv, manager = _serve(
        tmp_path,
        model_spec("loop", {"1": loop_input_model(tmp_path / "l.onnx")}),
        model_spec("add", {"1": matmul_add_model(tmp_path / "a.onnx")}),
        infer_timeout_s=600.0)
    with srv:
        client = _client(srv)
        client.infer("loop", _loop_request(1))  # load it
        socks = [_hang(srv.url), _hang(srv.url)]  # as many runs as the loop model has threads
        _wait_running(manager, 2)
        # Another model still answers: it has threads of its own (before: both shared
        # executor threads were pinned and every model froze).
        result = client.infer("add", _add_request())
        np.testing.assert_allclose(result.as_numpy("y"),
                                   matmul_add_reference(np.ones((1, 4), np.float32)),
                                   rtol=1e-5)
        for s in socks:
            s.close()  # the clients leave: their runs are terminated, not left to loop
        assert client.infer("loop", _loop_request(2)).as_numpy("v").tolist() == [2.0]
        # Each request notices its client from WATCH_AFTER_S after it began: the second
        # may still be running when the first one's freed thread has answered.
        _wait_running(manager, 0, exactly=True)
        client.close()


def test_hot_model_that_cannot_load_keeps_readiness_red(tmp_path) -> None:
    srv, manager = _serve(
        tmp_path,
        model_spec("stuck", {"1": loop_forever_model(tmp_path / "f.onnx")}, hot=True),
        model_spec("add", {"1": matmul_add_model(tmp_path / "a.onnx")}, hot=True),
        model_load_timeout_s=1.0)
    with srv:
        client = _client(srv)
        deadline = time.monotonic() + 15
        while manager.is_loaded("add", "1") is False or not manager.status()["models"][
                "stuck"]["errors"]:
            assert time.monotonic() < deadline, manager.status()
            time.sleep(0.05)
        # Before: ready turned green once warm-up gave up, with "stuck" never loaded.
        assert client.is_server_ready() is False
        assert client.is_model_ready("stuck") is False
        assert client.is_model_ready("add") is True
        error = manager.status()["models"]["stuck"]["errors"]["1"]
        assert "warm-up did not finish within 1 s" in error
        with pytest.raises(InferenceServerException) as info:
            inp = httpclient.InferInput("x", [1], "FP32")
            inp.set_data_from_numpy(np.ones(1, np.float32))
            client.infer("stuck", [inp])
        assert info.value.status() == "503"  # that model only; "add" keeps serving
        assert client.infer("add", _add_request()).as_numpy("y").shape == (1, 3)
        client.close()


SERVER = textwrap.dedent("""
    import contextlib, signal, sys, uvicorn
    from pathlib import Path
    from prometheus_client import CollectorRegistry
    from litegate.inference.manager import ModelManager
    from tests.fixtures.inference_env import (LifespanApp, model_spec, settings, snapshot,
                                              v2_app)

    class Server(uvicorn.Server):
        # Like an application that embeds the gateway: SIGTERM asks for a normal exit
        # (uvicorn would re-raise it and let the kernel kill the process instead).
        @contextlib.contextmanager
        def capture_signals(self):
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "should_exit", True))
            yield

    tmp, port = Path(sys.argv[1]), int(sys.argv[2])
    manager = ModelManager(settings(tmp, infer_timeout_s=600.0), CollectorRegistry())
    snap = snapshot(model_spec("loop", {"1": tmp / "l.onnx"}))
    app = LifespanApp(v2_app(manager, snap), manager, snap)
    Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                          timeout_graceful_shutdown=1)).run()
    print("exited normally", flush=True)
""")


def test_sigterm_ends_in_flight_runs_and_the_process(tmp_path) -> None:
    loop_input_model(tmp_path / "l.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path), str(port)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urlopen(f"http://{url}/v2/health/live", timeout=1):
                    break
            except (OSError, HTTPError):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        with _hang(url, 1) as warm:  # loads the model; answers at once
            assert b"200 OK" in warm.recv(65536)
        hung = _hang(url)
        time.sleep(0.5)  # let the run start looping
        proc.send_signal(signal.SIGTERM)
        # Before: the executor thread kept looping, the interpreter waited for it at exit
        # and only SIGKILL ended the process.
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "exited normally" in out
        hung.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
