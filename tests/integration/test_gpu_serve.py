"""The GPU settings through ``litegate serve``, and a CUDA request that ONNX Runtime could
not honour reported where an operator looks: the log, ``/readyz``, the v2 model metadata
and the console's provider table (onnxruntime-gpu is installed here; there is no GPU)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from litegate.admin.dashboard import model_status
from litegate.cli import build_parser, settings_from_args
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import create_key, one_line_error, run_cli, run_litegate, serving
from tests.helpers.servers import free_port

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def _get(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(["serve", "--devices", "0,1", "--gpu-memory-mb", "512"])
    st = settings_from_args(args)
    assert (st.devices, st.gpu_memory_mb) == ("0,1", 512)


def test_bad_device_list_is_one_line_at_start(tmp_path: Path) -> None:
    out = run_litegate("serve", "--devices", "0,gpu1", "--port", str(free_port()),
                       home=tmp_path / "home")
    line = one_line_error(out.returncode, out.stderr)
    assert "'gpu1' is not a CUDA device id" in line and "--devices / LITEGATE_DEVICES" in line


def test_cuda_fallback_is_reported_in_readyz_metadata_console_and_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = matmul_add_model(tmp_path / "m.onnx")
    code, _, err = run_cli("models", "add", "m", str(model), "--hot", home=home)
    assert code == 0, err
    key = create_key(home)
    port = free_port()
    with serving("--port", str(port), "--devices", "0", "--gpu-memory-mb", "64", home=home,
                 LITEGATE_PROVIDERS="cuda,cpu", LITEGATE_LOG_FORMAT="json") as served:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            status, ready = _get(base + "/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, ready
        loaded = ready["models"]["models"]["m"]["loaded"]["1"]
        assert loaded["providers"] == [CPU] and loaded["fell_back"] == [CUDA]
        assert loaded["device_id"] is None and loaded["io_binding"] is None
        status, meta = _get(base + "/v2/models/m", key)
        assert status == 200 and meta["parameters"]["providers"] == CPU

        class Manager:  # the console reads the same status the gateway serves
            def status(self) -> dict[str, Any]:
                return {"models": ready["models"]["models"]}

        [row] = model_status(Manager())
        assert row["providers"] == CPU
        assert row["state"] == f"loaded (fell back from {CUDA})"
    logs = [json.loads(line) for line in (served.stdout + served.stderr).splitlines()
            if line.startswith("{")]
    fallback = [e for e in logs if e.get("event") == "onnx_provider_fallback"]
    assert fallback and fallback[0]["model"] == "m" and fallback[0]["actual"] == [CPU]
