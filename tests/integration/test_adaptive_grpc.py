"""Adaptive A/B over gRPC (``tritonclient.grpc``): the calls are split by the bandit's
shares and teach it, like REST requests. One variant's model file is corrupt (every
call to it fails with UNAVAILABLE), so the shares move to the other."""

from __future__ import annotations

import re
from collections import Counter

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, create_key, run_cli
from tests.helpers.servers import free_port


def grpc_gateway(home, make_gateway):  # type: ignore[no-untyped-def]
    """A key, a gateway with gRPC on, a client to it and one (1, 4) FP32 input of ones."""
    key = create_key(home)
    port = free_port()
    server = make_gateway(grpc_port=port)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    x = grpcclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return key, server, client, x


def test_grpc_calls_follow_and_feed_the_bandit(tmp_path, home, make_gateway) -> None:
    for name in ("add", "broken"):
        src = matmul_add_model(tmp_path / f"{name}.onnx")
        assert run_cli("models", "add", name, str(src), home=home)[0] == 0
    for stored in (home / "models").rglob("*.onnx"):
        if "broken" in stored.parts:
            stored.write_bytes(b"not onnx any more")  # the load fails: 503 on every call
    code, _, err = apply_config(home, {
        "upstreams": [{"name": "local", "kind": "onnx"}],
        "routes": [{"name": "ab", "sticky": "none",
                    "variants": [{"upstream": "local", "model": "add", "name": "good"},
                                 {"upstream": "local", "model": "broken", "name": "bad"}],
                    "adaptive": {"metric": "errors", "min_share": 0.1, "cooldown_s": 0,
                                 "min_samples": 10}}]})
    assert code == 0, err
    key, server, client, x = grpc_gateway(home, make_gateway)

    outcomes = []
    for _ in range(80):
        try:
            client.infer("ab", [x], headers={"authorization": f"Bearer {key}"})
            outcomes.append("ok")
        except InferenceServerException as exc:
            assert exc.status() == "StatusCode.UNAVAILABLE", exc
            outcomes.append("failed")
    assert "failed" in outcomes[:20]  # the bad variant got traffic before it lost it
    assert Counter(outcomes[-40:])["ok"] >= 32, outcomes

    text = httpx.get(server.url + "/metrics").text
    shares = dict(re.findall(r'^litegate_variant_share\{route="ab",variant="(\w+)"\} (\S+)$',
                             text, re.MULTILINE))
    assert float(shares["good"]) >= 0.85 and float(shares["bad"]) >= 0.1 - 1e-9, shares


def test_grpc_calls_of_a_feedback_route_can_be_scored(tmp_path, home, make_gateway) -> None:
    """A ``metric: feedback`` route remembers each call for ``/v1/feedback`` on gRPC as on
    REST (by its ``x-request-id``). gRPC calls used to be chosen by the bandit but never
    remembered, so their scores were refused as unknown (404) and never taught it."""
    src = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    code, _, err = apply_config(home, {
        "upstreams": [{"name": "local", "kind": "onnx"}],
        "routes": [{"name": "ab", "sticky": "none",
                    "variants": [{"upstream": "local", "model": "add", "name": "one"},
                                 {"upstream": "local", "model": "add", "name": "two"}],
                    "adaptive": {"metric": "feedback"}}]})
    assert code == 0, err
    key, server, client, x = grpc_gateway(home, make_gateway)
    auth = {"authorization": f"Bearer {key}"}
    client.infer("ab", [x], headers={**auth, "x-request-id": "grpc-scored-1"})
    r = httpx.post(server.url + "/v1/feedback", headers=auth,
                   json={"request_id": "grpc-scored-1", "score": 1.0})
    assert r.status_code == 200, r.text
    assert r.json()["route"] == "ab" and r.json()["variant"] in ("one", "two")
    again = httpx.post(server.url + "/v1/feedback", headers=auth,
                       json={"request_id": "grpc-scored-1", "score": 1.0})
    assert again.status_code == 404  # scored once, as on REST
