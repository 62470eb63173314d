"""Open Inference Protocol v2 request/response codec, JSON and binary-tensor extension.

Binary extension (Triton): the request body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, in input order,
for every input whose parameters carry ``binary_data_size``. Outputs go back binary
when the output asks for ``binary_data: true`` or the request sets
``binary_data_output: true`` (what ``tritonclient`` does when no outputs are named).
BYTES tensors travel as one 4-byte little-endian length plus the bytes per element
(binary) or as a list of strings (JSON). Non-finite floats use Triton's JSON tokens
``NaN``, ``Infinity`` and ``-Infinity``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from litegate.errors import BadRequest
from litegate.inference.dtypes import BYTES, NUMPY_TO_V2, V2_TO_NUMPY, DType, Tensor
from litegate.jsonbody import parse_json

HEADER_LENGTH = "inference-header-content-length"
MAX_DIMS = 32
MAX_DIM = 2**31 - 1  # ORT and numpy index with int64; this keeps every product in range
_CHUNK = 65536  # elements encoded per step, so the size bound is checked as we go
_LENGTH = struct.Struct("<I")

_encoder = msgspec.json.Encoder()


class ResponseTooLarge(BadRequest):
    """The answer would exceed ``max_infer_response_bytes``."""

    code = "response_too_large"


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's binary_data_output


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool
    parameters: dict[str, Any]


def _params(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return params


def _flag(value: object, what: str) -> bool:
    """A boolean parameter; clients sometimes send ``"false"`` as a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{what} must be true or false, got {value!r}")


def _shape(raw: object, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(raw) > MAX_DIMS or any(d > MAX_DIM for d in raw):
        raise BadRequest(
            f"input {name!r}: shape {raw} is too large (at most {MAX_DIMS} dimensions of at "
            f"most {MAX_DIM})")
    return tuple(raw)


def _decode_bytes_elements(raw: memoryview, count: int, name: str) -> Tensor:
    """Length-prefixed BYTES elements -> object array of ``str`` (ONNX strings are text)."""
    items: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"input {name!r}: truncated BYTES length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(f"input {name!r}: BYTES element {len(items)} claims {length} "
                             "bytes past the end of its data")
        items.append(_text(bytes(raw[offset:offset + length]), name))
        offset += length
        if len(items) > count:
            break
    if len(items) != count:
        raise BadRequest(f"input {name!r}: {len(items)} BYTES elements for {count} in the shape")
    return np.array(items, dtype=object) if items else np.empty(0, dtype=object)


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"input {name!r}: BYTES elements must be UTF-8 text") from exc


def _flatten_strings(data: object, count: int, name: str) -> Tensor:
    items: list[str] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        elif isinstance(item, str):
            items.append(item)
            if len(items) > count:
                break
        else:
            raise BadRequest(f"input {name!r}: BYTES data must be strings")
    if len(items) != count:
        raise BadRequest(f"input {name!r}: {len(items)} elements of data for {count} in the shape")
    return np.array(items, dtype=object) if items else np.empty(0, dtype=object)


_END = object()


_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
"""The largest finite value of each float type (the fast path of the range check)."""


def _numeric(data: Any, dtype: DType, datatype: str, name: str) -> Tensor:
    try:
        if dtype.kind == "f":
            # Parse wide first so a value out of FP16/FP32 range is an error, not a silent inf.
            wide = np.asarray(data, dtype=np.float64).reshape(-1)
            limit = _FLOAT_MAX.get(dtype)
            if limit is not None and (not wide.size or np.abs(wide).max() <= limit):
                return wide.astype(dtype, copy=False)  # finite and in range: nothing overflows
            with np.errstate(over="ignore"):
                array = wide.astype(dtype)
            overflow = np.isinf(array) & np.isfinite(wide)
            if overflow.any():
                bad = float(wide[int(np.argmax(overflow))])
                raise BadRequest(f"input {name!r}: {bad!r} is out of the {datatype} range")
            return array
        if dtype.kind in "iu":
            probe = np.asarray(data)  # numpy would truncate 1.5 and parse "1" silently
            if probe.dtype.kind in "US" or (
                    probe.dtype.kind == "f" and not np.array_equal(probe, np.trunc(probe))):
                raise BadRequest(f"input {name!r}: {datatype} data must be integers")
        return np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data is not a {datatype} tensor: {exc}") from exc


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
    doc = parse_json(header, what="JSON in inference request", code=None)
    if not isinstance(doc, dict):
        raise BadRequest("the inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the inference request needs a non-empty 'inputs' list")

    inputs: dict[str, Tensor] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest("every input needs a 'name'")
        name = raw["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        datatype = raw.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: unsupported datatype {datatype!r}")
        dtype = V2_TO_NUMPY[datatype]
        shape = _shape(raw.get("shape"), name)
        count = math.prod(shape)
        params = _params(raw, f"input {name!r}")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be an integer")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} goes past the end of the body")
            chunk = binary[offset:offset + size]
            offset += size
            if datatype == BYTES:
                flat = _decode_bytes_elements(chunk, count, name)
            else:
                expected = count * dtype.itemsize
                if size != expected:
                    raise BadRequest(
                        f"input {name!r}: {size} bytes of binary data, expected {expected} for "
                        f"{datatype} shape {list(shape)}")
                flat = np.frombuffer(chunk, dtype=dtype)
        else:
            if "data" not in raw:
                raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
            if datatype == BYTES:
                flat = _flatten_strings(raw["data"], count, name)
            else:
                flat = _numeric(raw["data"], dtype, datatype, name)
            if flat.size != count:
                raise BadRequest(
                    f"input {name!r}: {flat.size} elements of data for shape {list(shape)} "
                    f"(expected {count})")
        inputs[name] = flat.reshape(shape)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input")

    params = _params(doc, "request")
    binary_output = _flag(params.get("binary_data_output", False), "binary_data_output")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    raw_outputs = doc.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise BadRequest("'outputs' must be a list")
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest("every requested output needs a 'name'")
        if raw["name"] in seen:
            raise BadRequest(f"output {raw['name']!r} is requested twice")
        seen.add(raw["name"])
        oparams = _params(raw, f"output {raw['name']!r}")
        flag = oparams.get("binary_data")
        outputs.append(RequestedOutput(
            raw["name"], None if flag is None else _flag(flag, "binary_data")))
    request_id = doc.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=tuple(outputs),
        binary_output=binary_output,
        parameters=params,
    )


def _datatype(array: Tensor) -> str:
    return NUMPY_TO_V2.get(array.dtype, BYTES)


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _binary_chunks(array: Tensor) -> Iterator[bytes]:
    if _datatype(array) != BYTES:
        yield array.tobytes()
        return
    for item in array.reshape(-1):
        raw = _as_bytes(item)
        yield _LENGTH.pack(len(raw))
        yield raw


def _json_chunks(array: Tensor) -> Iterator[bytes]:
    """``[...]`` of the flattened tensor, a slice at a time."""
    flat = array.reshape(-1)
    if flat.size <= _CHUNK:
        yield _json_array(flat)
        return
    yield b"["
    for start in range(0, flat.size, _CHUNK):
        yield (b"," if start else b"") + _json_array(flat[start:start + _CHUNK])[1:-1]
    yield b"]"


def _json_array(flat: Tensor) -> bytes:
    """``[...]`` of a flat tensor's values."""
    if _datatype(flat) == BYTES:
        return _encoder.encode([_as_bytes(v).decode("utf-8", "replace") for v in flat])
    values = flat.tolist()
    encoded = _encoder.encode(values)
    if flat.dtype.kind == "f" and b"null" in encoded:
        # msgspec writes NaN and ±inf as null: Triton's NaN / Infinity tokens instead
        encoded = json.dumps(values, allow_nan=True).encode()
    return encoded


def _minimum_size(array: Tensor, binary: bool) -> int:
    """A lower bound of the encoded size, known before encoding anything."""
    if not binary:
        return 2 * array.size  # one digit and a comma per element, at least
    if _datatype(array) == BYTES:
        return 4 * array.size
    return array.nbytes


def _too_large(limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the response would exceed {limit} bytes (max_infer_response_bytes); request "
        "binary outputs (binary_data) or send a smaller batch")


def encode_response(
    *,
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, Tensor],
    requested: Sequence[RequestedOutput] = (),
    binary_output: bool = False,
    max_bytes: int = 0,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Body and headers (content-type, and the header length when binary).

    With ``max_bytes`` the body is never built past the bound: a cheap lower bound is
    checked first, then the running size while encoding slice by slice.
    """
    order = [(r.name, binary_output if r.binary is None else r.binary) for r in requested] or [
        (name, binary_output) for name in outputs
    ]
    limit = max_bytes if max_bytes > 0 else math.inf
    if sum(_minimum_size(outputs[n], b) for n, b in order) > limit:
        raise _too_large(max_bytes)
    parts: list[bytes] = []
    chunks: list[bytes] = []
    size = 0
    for name, binary in order:
        array = np.ascontiguousarray(outputs[name])
        doc: dict[str, Any] = {"name": name, "datatype": _datatype(array),
                               "shape": list(array.shape)}
        pieces = _binary_chunks(array) if binary else _json_chunks(array)
        encoded: list[bytes] = []
        for piece in pieces:
            size += len(piece)
            if size > limit:
                raise _too_large(max_bytes)
            encoded.append(piece)
        if binary:
            doc["parameters"] = {"binary_data_size": sum(len(p) for p in encoded)}
            chunks.extend(encoded)
            parts.append(_encoder.encode(doc))
        else:
            parts.append(_encoder.encode(doc)[:-1] + b',"data":' + b"".join(encoded) + b"}")
    head: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        head["id"] = request_id
    header = _encoder.encode(head)[:-1] + b',"outputs":[' + b",".join(parts) + b"]}"
    if len(header) + sum(len(c) for c in chunks) > limit:
        raise _too_large(max_bytes)
    if not chunks:
        return header, [(b"content-type", b"application/json")]
    return header + b"".join(chunks), [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH.encode(), str(len(header)).encode()),
    ]
