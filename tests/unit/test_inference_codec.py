"""v2 codec: JSON and binary tensors, and 400s that name the input."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from litegate.errors import BadRequest
from litegate.inference.codec import RequestedOutput, decode_request, encode_response
from litegate.inference.signature import Signature, validate_inputs

SIG = Signature.from_dict({
    "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
               {"name": "b", "datatype": "INT64", "shape": [-1, 2]}],
    "outputs": [{"name": "total", "datatype": "FP32", "shape": [-1, 2]}],
})


def _json(doc: object) -> bytes:
    return msgspec.json.encode(doc)


def test_json_request_decodes_to_typed_arrays() -> None:
    req = decode_request(_json({
        "id": "r1",
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                   {"name": "b", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "total", "parameters": {"binary_data": True}}],
    }))
    assert req.id == "r1"
    assert req.inputs["a"].dtype == np.float32 and req.inputs["a"].shape == (2, 2)
    assert req.inputs["b"].tolist() == [[1, 2], [3, 4]]
    assert req.outputs == (RequestedOutput("total", True),)
    validate_inputs(SIG, req.inputs)


def test_binary_request_splits_tensors_in_input_order() -> None:
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.arange(4, dtype=np.int64).reshape(2, 2) * 7
    header = _json({
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 2],
             "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "datatype": "INT64", "shape": [2, 2],
             "parameters": {"binary_data_size": b.nbytes}},
        ],
        "parameters": {"binary_data_output": True},
    })
    req = decode_request(header + a.tobytes() + b.tobytes(), len(header))
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    assert req.binary_output is True


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]},
         "input 'a': 3 elements"),
        ({"inputs": [{"name": "a", "datatype": "FLOAT", "shape": [1], "data": [1]}]},
         "input 'a': unsupported datatype"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": ["x"]}]},
         "input 'a': data is not a FP32 tensor"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1], "data": [1]}]},
         "input 'a': 'shape'"),
        ({"inputs": []}, "non-empty 'inputs'"),
    ],
)
def test_malformed_tensors_are_bad_requests_naming_the_input(doc: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_request(_json(doc))


def test_binary_size_mismatch_and_unclaimed_bytes() -> None:
    header = _json({"inputs": [{"name": "a", "datatype": "FP32", "shape": [2],
                                "parameters": {"binary_data_size": 4}}]})
    with pytest.raises(BadRequest, match="input 'a': 4 bytes of binary data, expected 8"):
        decode_request(header + b"\0" * 4, len(header))
    header = _json({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1],
                                "parameters": {"binary_data_size": 4}}]})
    with pytest.raises(BadRequest, match="not claimed"):
        decode_request(header + b"\0" * 12, len(header))
    with pytest.raises(BadRequest, match="malformed JSON"):
        decode_request(b"{nope")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"a": np.zeros((1, 2), np.float32)}, "missing input 'b'"),
        ({"a": np.zeros((1, 2), np.float64), "b": np.zeros((1, 2), np.int64)},
         "input 'a': datatype FP64 does not match the model's FP32"),
        ({"a": np.zeros((1, 3), np.float32), "b": np.zeros((1, 2), np.int64)},
         r"input 'a': shape \[1, 3\] does not match"),
        ({"a": np.zeros((1, 2), np.float32), "b": np.zeros((1, 2), np.int64),
          "c": np.zeros(1, np.float32)}, "unexpected input 'c'"),
        ({"a": np.zeros((2, 2), np.float32), "b": np.zeros((1, 2), np.int64)},
         "batch"),
    ],
)
def test_signature_validation_names_the_input(inputs: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        validate_inputs(SIG, inputs)


def test_encode_json_and_binary_outputs() -> None:
    outputs = {"y": np.array([[1.5, 2.5]], np.float32), "z": np.array([7], np.int64)}
    body, headers = encode_response(model="m", version="1", request_id="r", outputs=outputs)
    doc = msgspec.json.decode(body)
    assert dict(headers)[b"content-type"] == b"application/json"
    assert doc["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 2],
                                 "data": [1.5, 2.5]}
    assert doc["id"] == "r" and doc["model_version"] == "1"

    body, headers = encode_response(
        model="m", version="1", request_id=None, outputs=outputs,
        requested=[RequestedOutput("z", None), RequestedOutput("y", False)], binary_output=True)
    length = int(dict(headers)[b"inference-header-content-length"])
    doc = msgspec.json.decode(body[:length])
    assert [o["name"] for o in doc["outputs"]] == ["z", "y"]
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert doc["outputs"][1]["data"] == [1.5, 2.5]
    assert np.frombuffer(body[length:], np.int64).tolist() == [7]
