"""Open Inference Protocol v2 request/response codec, JSON and binary-tensor extension.

Binary extension (Triton): the request body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, in input order,
for every input whose parameters carry ``binary_data_size``. Outputs go back binary
when the output asks for ``binary_data: true`` or the request sets
``binary_data_output: true`` (what ``tritonclient`` does when no outputs are named).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from litegate.errors import BadRequest
from litegate.inference.dtypes import NUMPY_TO_V2, V2_TO_NUMPY

HEADER_LENGTH = "inference-header-content-length"

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's binary_data_output


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool
    parameters: dict[str, Any]


def _params(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return params


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    return tuple(raw)


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse a v2 infer request (JSON, or JSON header + binary tensors)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length} is outside the body "
                f"({len(body)} bytes)")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = _decoder.decode(header)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON in inference request: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest("the inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the inference request needs a non-empty 'inputs' list")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest("every input needs a 'name'")
        name = raw["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        datatype = raw.get("datatype")
        dtype = V2_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
        shape = _shape(raw.get("shape"), name)
        count = math.prod(shape)
        params = _params(raw, f"input {name!r}")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be an integer")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} goes past the end of the body")
            expected = count * dtype.itemsize
            if size != expected:
                raise BadRequest(
                    f"input {name!r}: {size} bytes of binary data, expected {expected} for "
                    f"{datatype} shape {list(shape)}")
            array = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            if "data" not in raw:
                raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
            try:
                array = np.asarray(raw["data"], dtype=dtype).reshape(-1)
            except (ValueError, TypeError, OverflowError) as exc:
                raise BadRequest(f"input {name!r}: data is not a {datatype} tensor: {exc}"
                                 ) from exc
            if array.size != count:
                raise BadRequest(
                    f"input {name!r}: {array.size} elements of data for shape {list(shape)} "
                    f"(expected {count})")
            array = array.reshape(shape)
        inputs[name] = array
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input")

    params = _params(doc, "request")
    binary_output = bool(params.get("binary_data_output", False))
    outputs: list[RequestedOutput] = []
    for raw in doc.get("outputs") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest("every requested output needs a 'name'")
        oparams = _params(raw, f"output {raw['name']!r}")
        flag = oparams.get("binary_data")
        outputs.append(RequestedOutput(raw["name"], None if flag is None else bool(flag)))
    request_id = doc.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=tuple(outputs),
        binary_output=binary_output,
        parameters=params,
    )


def _datatype(array: np.ndarray) -> str:
    return NUMPY_TO_V2.get(array.dtype, "BYTES")


def encode_response(
    *,
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput] = (),
    binary_output: bool = False,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Body and headers (content-type, and the header length when binary)."""
    order = [(r.name, binary_output if r.binary is None else r.binary) for r in requested] or [
        (name, binary_output) for name in outputs
    ]
    docs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in order:
        array = np.ascontiguousarray(outputs[name])
        doc: dict[str, Any] = {"name": name, "datatype": _datatype(array),
                               "shape": list(array.shape)}
        if binary:
            raw = array.tobytes()
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = array.reshape(-1).tolist()
        docs.append(doc)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": docs}
    if request_id is not None:
        response["id"] = request_id
    header = _encoder.encode(response)
    if not chunks:
        return header, [(b"content-type", b"application/json")]
    return header + b"".join(chunks), [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH.encode(), str(len(header)).encode()),
    ]
