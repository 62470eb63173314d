"""Open Inference Protocol gRPC tensors <-> numpy, with the REST codec's checks.

Inputs arrive either as typed ``contents`` (``fp32_contents``, ``int64_contents``,
``bytes_contents``...) or, as ``tritonclient.grpc`` sends them, as one
``raw_input_contents`` entry per input (little-endian values; BYTES as a 4-byte length
plus the bytes per element, like the REST binary extension). Outputs always go back as
``raw_output_contents``. Shapes, datatypes, element counts and BYTES framing are checked
by the same helpers as ``/v2`` REST (``litegate.inference.codec``), so a bad tensor is
the same ``BadRequest`` message on both surfaces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from litegate.errors import BadRequest
from litegate.inference.codec import (
    _binary_chunks,
    _datatype,
    _decode_bytes_elements,
    _minimum_size,
    _numeric,
    _shape,
    _text,
    _too_large,
)
from litegate.inference.dtypes import BYTES, V2_TO_NUMPY, Tensor

# The typed field of InferTensorContents that carries each datatype (FP16 has none:
# it travels raw only, as in Triton).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def decode_inputs(request: Any) -> dict[str, Tensor]:
    """The named input tensors of a ``ModelInferRequest``; ``BadRequest`` naming the
    input for anything malformed."""
    raw = request.raw_input_contents
    if not request.inputs:
        raise BadRequest("the inference request needs at least one input")
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: with raw "
            "contents, every input is sent raw, in input order")
    inputs: dict[str, Tensor] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise BadRequest("every input needs a 'name'")
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        datatype = tensor.datatype
        if datatype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
        dtype = V2_TO_NUMPY[datatype]
        shape = _shape(list(tensor.shape), name)
        count = math.prod(shape)
        if raw:
            chunk = memoryview(raw[i])
            if datatype == BYTES:
                flat = _decode_bytes_elements(chunk, count, name)
            else:
                expected = count * dtype.itemsize
                if len(chunk) != expected:
                    raise BadRequest(
                        f"input {name!r}: {len(chunk)} bytes of raw contents, expected "
                        f"{expected} for {datatype} shape {list(shape)}")
                flat = np.frombuffer(chunk, dtype=dtype.newbyteorder("<"))
        else:
            flat = _typed(tensor, datatype, count, name)
        inputs[name] = flat.reshape(shape)
    return inputs


def _typed(tensor: Any, datatype: str, count: int, name: str) -> Tensor:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {datatype} has no typed contents; send it in "
                         "raw_input_contents")
    if not tensor.HasField("contents"):
        raise BadRequest(f"input {name!r} has neither contents nor raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: {len(values)} elements of {field} for {count} in the shape")
    if datatype == BYTES:
        items = [_text(bytes(v), name) for v in values]
        return np.array(items, dtype=object) if items else np.empty(0, dtype=object)
    return _numeric(list(values), V2_TO_NUMPY[datatype], datatype, name)


def requested_outputs(request: Any) -> list[str]:
    names: list[str] = []
    for out in request.outputs:
        if not out.name:
            raise BadRequest("every requested output needs a 'name'")
        if out.name in names:
            raise BadRequest(f"output {out.name!r} is requested twice")
        names.append(out.name)
    return names


def encode_outputs(
    response: Any, outputs: Mapping[str, Tensor], order: Sequence[str], max_bytes: int
) -> None:
    """Fill ``response.outputs`` and ``raw_output_contents``; refuse (``BadRequest``)
    before building more than ``max_bytes`` of tensor data."""
    limit = max_bytes if max_bytes > 0 else math.inf
    names = list(order) or list(outputs)
    if sum(_minimum_size(outputs[n], True) for n in names) > limit:  # known before encoding
        raise _too_large(max_bytes)
    size = 0
    for name in names:
        array = np.ascontiguousarray(outputs[name])
        data = b"".join(_binary_chunks(array))
        size += len(data)
        if size > limit:
            raise _too_large(max_bytes)
        out = response.outputs.add()
        out.name = name
        out.datatype = _datatype(array)
        out.shape.extend(array.shape)
        response.raw_output_contents.append(data)


def encode_for_rest(inputs: Mapping[str, Tensor], outputs: Sequence[str],
                    request_id: str) -> tuple[bytes, int]:
    """A REST v2 binary-extension request body for a ``kind: v2`` upstream: (body,
    Inference-Header-Content-Length). Every output is asked for in binary."""
    import msgspec

    chunks: list[bytes] = []
    docs = []
    for name, array in inputs.items():
        data = b"".join(_binary_chunks(np.ascontiguousarray(array)))
        chunks.append(data)
        docs.append({"name": name, "datatype": _datatype(array), "shape": list(array.shape),
                     "parameters": {"binary_data_size": len(data)}})
    head: dict[str, Any] = {"id": request_id, "inputs": docs,
                            "parameters": {"binary_data_output": True}}
    if outputs:
        head["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    header = msgspec.json.encode(head)
    return header + b"".join(chunks), len(header)
